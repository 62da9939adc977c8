//! The raw delivery inbox: every authenticated delivery, stored before it is
//! applied, keyed so that a redelivery is recognised.

use super::DbError;
use super::sql::Sql;
use crate::args;
use crate::event::Platform;
use crate::platforms;

/// A delivery as it arrived.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// `jivo`, `rocketchat`, `livechat`.
    pub platform: &'static str,
    /// The platform's event name, or `unknown` when the body did not say.
    pub event: String,
    /// What makes a redelivery recognisable.
    pub idem_key: String,
    /// The body, byte for byte.
    pub body: bytes::Bytes,
    /// When it arrived.
    pub received_at: String,
}

impl NewDelivery {
    /// A body of `platform` that translated into an event named `event`
    /// with idempotency key `key` (as [`platforms::translate`] gives it).
    pub fn parsed(
        platform: Platform,
        event: &str,
        key: &str,
        body: bytes::Bytes,
        received_at: String,
    ) -> NewDelivery {
        NewDelivery {
            platform: platform.as_str(),
            event: event.to_owned(),
            idem_key: format!("{platform}:{key}"),
            body,
            received_at,
        }
    }

    /// A body of `platform` that did not translate, to be kept as failed;
    /// the same body is stored once.
    pub fn failed(platform: Platform, body: bytes::Bytes, received_at: String) -> NewDelivery {
        NewDelivery {
            platform: platform.as_str(),
            event: platforms::event_name(platform, &body),
            idem_key: format!("{platform}:failed:{}", platforms::body_hash(&body)),
            body,
            received_at,
        }
    }
}

/// What the inbox knew of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// First time: stored with this id, to be applied now.
    New(i64),
    /// Seen and applied before; the lead it was applied to, if any.
    Applied(Option<i64>),
    /// Seen before and failed; stored with this id, to be applied now.
    Retry(i64),
}

/// Stores a delivery about to be applied.
pub fn insert(conn: &dyn Sql, d: &NewDelivery) -> Result<Inserted, DbError> {
    let args = args![d.platform, d.event, d.idem_key, d.received_at, d.body];
    let new = conn.insert_id(
        "INSERT INTO deliveries (platform, event, idem_key, received_at, body, status)
         VALUES (?1, ?2, ?3, ?4, ?5, 'applied')
         ON CONFLICT (idem_key) DO NOTHING",
        args,
    )?;
    if let Some(id) = new {
        return Ok(Inserted::New(id));
    }
    let (id, status, lead): (i64, String, Option<i64>) = conn.query_row(
        "SELECT id, status, lead_id FROM deliveries WHERE idem_key = ?1",
        args![d.idem_key],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if status == "failed" {
        conn.execute(
            "UPDATE deliveries SET status = 'applied', error = NULL, event = ?2 WHERE id = ?1",
            args![id, d.event],
        )?;
        return Ok(Inserted::Retry(id));
    }
    Ok(Inserted::Applied(lead))
}

/// Records which lead a delivery was applied to.
pub fn set_lead(conn: &dyn Sql, id: i64, lead: Option<i64>) -> Result<(), DbError> {
    conn.execute_later(
        "UPDATE deliveries SET lead_id = ?2 WHERE id = ?1",
        args![id, lead],
    )?;
    Ok(())
}

/// Stores an authenticated delivery that could not be parsed, so that a
/// fixed version can replay it. A repeat of the same body is stored once.
pub fn insert_failed(conn: &dyn Sql, d: &NewDelivery, error: &str) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO deliveries (platform, event, idem_key, received_at, body, status, error)
         VALUES (?1, ?2, ?3, ?4, ?5, 'failed', ?6) ON CONFLICT (idem_key) DO NOTHING",
        args![
            d.platform,
            d.event,
            d.idem_key,
            d.received_at,
            d.body,
            error
        ],
    )?;
    Ok(())
}
