//! Serde helpers for what platforms really send: ids that are strings in one
//! event and numbers in the next, `null` where an object was documented,
//! fields of the wrong type. A field that cannot be read is treated as
//! missing rather than failing the whole delivery.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A string, number or boolean as a string; anything else (null, objects,
/// arrays) as `None`. Empty strings are `None` too.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(as_string(&Value::deserialize(d)?))
}

/// The value as a string, if it is a scalar.
pub fn as_string(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!s.trim().is_empty()).then_some(s)
}

/// Any `T`, or `None` when the value does not have T's shape.
pub fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(T::deserialize(v).ok())
}

/// A list of `T`, skipping items that do not have T's shape; a non-list is empty.
pub fn list<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| T::deserialize(v).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// A Unix time in seconds (number or numeric string); milliseconds are
/// recognised by their size.
pub fn unix_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    let n = match &v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    Ok(n.map(|n| if n > 100_000_000_000 { n / 1000 } else { n }))
}

/// Parses a body into a JSON object, with a message fit for a 400.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not valid UTF-8".to_owned())?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("body is not a JSON object".to_owned()),
        Err(e) => Err(format!("body is not valid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "string")]
        id: Option<String>,
        #[serde(default, deserialize_with = "list")]
        tags: Vec<String>,
    }

    #[test]
    fn ids_are_read_from_strings_and_numbers() {
        let t: T = serde_json::from_str(r#"{"id": 1665399500726, "tags": ["a", 3, "b"]}"#).unwrap();
        assert_eq!(t.id.as_deref(), Some("1665399500726"));
        assert_eq!(t.tags, ["a", "b"]);
        let t: T = serde_json::from_str(r#"{"id": "42", "tags": null}"#).unwrap();
        assert_eq!(t.id.as_deref(), Some("42"));
        assert!(t.tags.is_empty());
        let t: T = serde_json::from_str(r#"{"id": {"x": 1}}"#).unwrap();
        assert_eq!(t.id, None);
    }

    #[test]
    fn huge_ids_keep_every_digit() {
        let t: T = serde_json::from_str(r#"{"id": 123456789012345678901234567890}"#).unwrap();
        assert_eq!(t.id.as_deref(), Some("123456789012345678901234567890"));
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused() {
        assert!(json_object(b"[1,2]").is_err());
        assert!(json_object(b"42").is_err());
        assert!(json_object(b"{").is_err());
        assert!(json_object(b"\xff\xfe").is_err());
        let deep = "[".repeat(10_000);
        assert!(json_object(deep.as_bytes()).is_err());
        assert!(json_object(br#"{"a":1}"#).is_ok());
    }
}
