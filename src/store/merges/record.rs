//! What a `merges` row records, and what staff choose in a merge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which side's value a merge keeps: the survivor's (`this`, the lead the
/// request names) or the absorbed lead's (`other`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The survivor's.
    #[default]
    This,
    /// The absorbed lead's.
    Other,
}

/// What staff keep of each side (each defaults to the survivor's). An
/// empty value is always filled from the other side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Keep {
    /// The name.
    pub name: Side,
    /// The description.
    pub description: Side,
    /// The status.
    pub status: Side,
    /// The owner.
    pub owner: Side,
    /// Which primary email stays primary.
    pub primary_email: Side,
    /// Which primary phone stays primary.
    pub primary_phone: Side,
}

/// Staff's merge, or an anonymous visitor folded by a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Staff merged two leads.
    Merge,
    /// A delivery folded an anonymous lead (the survivor keeps its values).
    Fold,
}

impl Kind {
    /// As `merges.kind` stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Merge => "merge",
            Kind::Fold => "fold",
        }
    }
}

/// The values a merge chooses between.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Values {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Status.
    pub status: String,
    /// Owner.
    pub owner: Option<String>,
    /// The primary email.
    pub primary_email: Option<String>,
    /// The primary phone.
    pub primary_phone: Option<String>,
}

/// A possible-duplicate link as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// The other lead.
    pub other: i64,
    /// Its score (kept as text: a JSON number may not read back the same
    /// double, and the restored link must be the same).
    #[serde(with = "exact")]
    pub score: f64,
    /// Its reason.
    pub reason: String,
}

/// The absorbed lead as it was, and the survivor's values the merge
/// replaced (`snapshot` of a `merges` row).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The absorbed lead's values.
    pub absorbed: Values,
    /// Its custom fields.
    pub fields: BTreeMap<String, String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its possible-duplicate links (the survivor among them, if linked).
    pub links: Vec<Link>,
    /// The survivor's values before.
    pub survivor_before: Values,
    /// The survivor's values as the merge left them.
    pub survivor_after: Values,
    /// The survivor's tags as the merge left them, so that an unmerge can
    /// tell which tags later deliveries added (none in records made before
    /// it was kept: such tags are then listed, not moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivor_tags: Option<Vec<String>>,
}

/// Exactly what moved to the survivor (`moved` of a `merges` row).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Moved {
    /// Normalised emails.
    pub emails: Vec<String>,
    /// Normalised phones.
    pub phones: Vec<String>,
    /// Visitor ids: platform and id.
    pub visitors: Vec<(String, String)>,
    /// Conversation ids.
    pub conversations: Vec<i64>,
    /// Note ids.
    pub notes: Vec<i64>,
    /// Custom fields the survivor did not have.
    pub fields: Vec<(String, String)>,
    /// Tags the survivor did not have.
    pub tags: Vec<String>,
    /// Other leads whose link moved to the survivor.
    pub links: Vec<i64>,
}

/// The highest ids when the merge was made: rows above them arrived later
/// (`marks` of a `merges` row).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Marks {
    /// `deliveries.id`.
    pub delivery: i64,
    /// `conversations.id`.
    pub conversation: i64,
    /// `notes.id`.
    pub note: i64,
    /// `lead_emails.id`.
    pub email: i64,
    /// `lead_phones.id`.
    pub phone: i64,
}

/// A double as its shortest exact text, read back bit for bit.
mod exact {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
