//! Typed configuration, read from `config.toml` and checked once at startup.
//!
//! Every key of the contract is here. Unknown keys are refused (serde's
//! `deny_unknown_fields`), and every semantic check names the key it is about,
//! so an operator can fix the file from the message alone.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod outbound;
pub use outbound::OutboundConfig;

/// A configuration problem, naming the key and why it is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TOML is malformed, a key is unknown or a value has the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// A value parsed but makes no sense.
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `merge.phone`.
        key: String,
        /// Why the value was refused.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// A secret string: compared by the HTTP layer in constant time, never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for comparison and hashing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listening and limits.
    pub server: ServerConfig,
    /// `[database]`: which store, and where.
    pub database: DatabaseConfig,
    /// `[jivo]`: the Jivo webhook.
    pub jivo: JivoConfig,
    /// `[rocketchat]`: absent means the endpoint answers 404.
    #[serde(default)]
    pub rocketchat: Option<RocketChatConfig>,
    /// `[livechat]`: absent means the endpoint answers 404.
    #[serde(default)]
    pub livechat: Option<LiveChatConfig>,
    /// `[merge]`: the identity and merge policy.
    pub merge: MergePolicy,
    /// `[duplicates]`: possible-duplicate detection.
    pub duplicates: DuplicatesConfig,
    /// `[sales]`: who may read lead pages and the JSON API.
    pub sales: SalesConfig,
    /// `[pipeline]`: the statuses a lead moves through.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// `[sessions]`: how long a sign-in lasts.
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// `[privacy]`: the key of erasure tombstones.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// `[[outbound]]`: endpoints that receive signed lead events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<OutboundConfig>,
    /// `[retention]`: how long data is kept (absent: for ever).
    #[serde(default)]
    pub retention: RetentionConfig,
    /// `[audit]`: how long the audit log is kept.
    #[serde(default)]
    pub audit: AuditConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Base of every `crm_link`, without a trailing slash.
    pub public_url: String,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Longest time a client may take to send its request headers.
    #[serde(default = "defaults::header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Longest time a whole request may take (body upload and answer).
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Most connections open at once; further clients wait in the kernel backlog.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Path of the SQLite file; created (with its directory) if missing.
    #[serde(default = "defaults::database_path")]
    pub path: PathBuf,
    /// `postgres://…` selects PostgreSQL (`sqlite:PATH` names the SQLite
    /// file); the environment variable `CRM_DATABASE_URL` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<DatabaseUrl>,
    /// How long a write waits for a lock held by another process.
    #[serde(default = "defaults::busy_timeout_ms")]
    pub busy_timeout_ms: u64,
    /// Where deliveries acknowledged during a storage fault wait to be
    /// applied; default: `spool/` beside the database file.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// PostgreSQL: most connections one instance opens (one of them writes).
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// PostgreSQL: longest wait for a new connection, or for a free one.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// PostgreSQL: longest one statement may run before the server cancels it.
    #[serde(default = "defaults::statement_timeout_ms")]
    pub statement_timeout_ms: u64,
}

/// Which store the service uses, as `[database]` and the environment say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// The embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server, by its connection URL.
    Postgres(DatabaseUrl),
}

/// A database URL; its password never reaches a log or `check-config`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }
    /// The URL itself, to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with its password replaced by `[redacted]`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return url.clone();
        };
        let rest = &url[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let user = userinfo.split(':').next().unwrap_or_default();
                let hidden = if userinfo.contains(':') {
                    format!("{user}:[redacted]")
                } else {
                    user.to_owned()
                };
                format!("{}{hidden}{}", &url[..scheme_end], &rest[at..])
            }
            None => url.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl DatabaseConfig {
    /// The spool directory in force.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| match self.store() {
                Store::Sqlite(path) => path
                    .parent()
                    .map(|p| p.join("spool"))
                    .unwrap_or_else(|| PathBuf::from("spool")),
                Store::Postgres(_) => PathBuf::from("data/spool"),
            })
    }

    /// The store in force: `url` when set, else the SQLite file at `path`.
    pub fn store(&self) -> Store {
        match &self.url {
            Some(url) => match url.expose().strip_prefix("sqlite:") {
                Some(path) => Store::Sqlite(PathBuf::from(path.trim_start_matches("//"))),
                None => Store::Postgres(url.clone()),
            },
            None => Store::Sqlite(self.path.clone()),
        }
    }

    /// What `check-config` and logs say of the store, password redacted.
    pub fn describe(&self) -> String {
        match self.store() {
            Store::Sqlite(path) => format!("SQLite file {}", path.display()),
            Store::Postgres(url) => format!("PostgreSQL {}", url.redacted()),
        }
    }
}

/// `[jivo]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JivoConfig {
    /// The secret last path segment of the webhook URL.
    pub token: Secret,
    /// Sent back as `enable_assign` in every full answer.
    pub enable_assign: bool,
    /// How long the agent may wait for `chat_accepted`/`chat_updated`: past
    /// it, the answer is built from the payload and the delivery is spooled.
    #[serde(default = "defaults::answer_deadline_ms")]
    pub answer_deadline_ms: u64,
    /// Rows of `custom_data` shown to the agent, in order (at most 10).
    #[serde(default = "defaults::custom_data")]
    pub custom_data: Vec<CustomDataRow>,
}

/// One configured row of Jivo's `custom_data`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CustomDataRow {
    /// The label the agent sees.
    pub title: String,
    /// What the row shows: see [`RowSource`].
    pub source: RowSource,
}

/// What a `custom_data` row shows. Rows with nothing to show are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowSource {
    /// `lead`: the lead number, linked to its page.
    Lead,
    /// `status`: the lead's status.
    Status,
    /// `owner`: the sales user who owns the lead (left out when none does).
    Owner,
    /// `chats`: how many conversations the lead has had.
    Chats,
    /// `last_chat`: when and where the previous conversation was.
    LastChat,
    /// `other_emails`: the lead's non-primary emails.
    OtherEmails,
    /// `other_phones`: the lead's non-primary phones.
    OtherPhones,
    /// `duplicates`: one linked row per possible duplicate (up to three).
    Duplicates,
    /// `description`: the lead's description.
    Description,
    /// `tags`: the lead's tags.
    Tags,
    /// `field:NAME`: a custom field of the lead.
    Field(String),
}

impl RowSource {
    fn parse(s: &str) -> Option<RowSource> {
        Some(match s {
            "lead" => RowSource::Lead,
            "status" => RowSource::Status,
            "owner" => RowSource::Owner,
            "chats" => RowSource::Chats,
            "last_chat" => RowSource::LastChat,
            "other_emails" => RowSource::OtherEmails,
            "other_phones" => RowSource::OtherPhones,
            "duplicates" => RowSource::Duplicates,
            "description" => RowSource::Description,
            "tags" => RowSource::Tags,
            _ => match s.strip_prefix("field:") {
                Some(name) if !name.trim().is_empty() => RowSource::Field(name.trim().to_owned()),
                _ => return None,
            },
        })
    }

    fn as_string(&self) -> String {
        match self {
            RowSource::Lead => "lead".into(),
            RowSource::Status => "status".into(),
            RowSource::Owner => "owner".into(),
            RowSource::Chats => "chats".into(),
            RowSource::LastChat => "last_chat".into(),
            RowSource::OtherEmails => "other_emails".into(),
            RowSource::OtherPhones => "other_phones".into(),
            RowSource::Duplicates => "duplicates".into(),
            RowSource::Description => "description".into(),
            RowSource::Tags => "tags".into(),
            RowSource::Field(name) => format!("field:{name}"),
        }
    }
}

impl<'de> Deserialize<'de> for RowSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RowSource::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown source {s:?}: expected lead, status, owner, chats, last_chat, other_emails, \
                 other_phones, duplicates, description, tags or field:NAME"
            ))
        })
    }
}

impl Serialize for RowSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

/// `[rocketchat]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RocketChatConfig {
    /// Must equal the `X-RocketChat-Livechat-Token` header.
    pub token: Secret,
}

/// `[livechat]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LiveChatConfig {
    /// v2: HTTP Basic user name put in the webhook URL.
    pub username: String,
    /// v2: HTTP Basic password.
    pub password: Secret,
    /// v3: the `secret_key` LiveChat sends inside every body.
    pub secret_key: Secret,
}

/// Which identifier decides when email and phone point at different leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Identifier {
    /// The visitor's email.
    Email,
    /// The visitor's phone.
    Phone,
}

/// Policy for emails and phones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactPolicy {
    /// The lead keeps what it had; the incoming value is dropped.
    KeepExisting,
    /// The incoming value replaces the primary one (the old one stays in the history).
    TakeIncoming,
    /// The incoming value is added; `merge.primary` says which is primary.
    KeepBoth,
}

/// With `keep_both`, which value is primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Primary {
    /// The value the lead already had.
    Existing,
    /// The value the chat just brought.
    Incoming,
}

/// Policy for the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldPolicy {
    /// Keep what the lead has.
    KeepExisting,
    /// Replace with what the chat says.
    TakeIncoming,
}

/// Policy for the description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DescriptionPolicy {
    /// Keep what the lead has.
    KeepExisting,
    /// Replace with what the chat says.
    TakeIncoming,
    /// Add the incoming text on a new line, unless it is already there.
    Append,
}

/// A `[merge]` section for unit tests: email then phone, US numbers,
/// `keep_both` for contacts with `primary` as given, `keep_existing` for
/// name and description.
#[cfg(test)]
pub fn test_merge_policy(primary: &str) -> MergePolicy {
    toml::from_str(&format!(
        r#"
        match_order = ["email", "phone"]
        default_region = "US"
        phone = "keep_both"
        email = "keep_both"
        primary = "{primary}"
        name = "keep_existing"
        description = "keep_existing"
        "#
    ))
    .expect("a valid [merge] section")
}

/// `[merge]`: how conflicting contact data is resolved.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MergePolicy {
    /// Which identifier decides when email and phone point at different leads.
    pub match_order: Vec<Identifier>,
    /// ISO 3166 region for phone numbers written without a country code.
    #[serde(with = "region")]
    pub default_region: phonenumber::country::Id,
    /// Policy for phones.
    pub phone: ContactPolicy,
    /// Policy for emails.
    pub email: ContactPolicy,
    /// With `keep_both`, which value becomes primary.
    pub primary: Primary,
    /// Policy for the name.
    pub name: FieldPolicy,
    /// Policy for the description.
    pub description: DescriptionPolicy,
}

mod region {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::str::FromStr;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<phonenumber::country::Id, D::Error> {
        let s = String::deserialize(d)?;
        phonenumber::country::Id::from_str(&s.to_ascii_uppercase()).map_err(|_| {
            serde::de::Error::custom(format!(
                "{s:?} is not an ISO 3166-1 region code such as \"US\""
            ))
        })
    }

    pub fn serialize<S: Serializer>(
        id: &phonenumber::country::Id,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.as_ref())
    }
}

/// `[duplicates]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DuplicatesConfig {
    /// Whether new leads are compared with existing ones at all.
    pub enabled: bool,
    /// Similarity (0..1) above which two leads are flagged.
    pub threshold: f64,
}

/// `[sales]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SalesConfig {
    /// `[[sales.users]]`
    #[serde(default)]
    pub users: Vec<SalesUser>,
}

/// One `[[sales.users]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SalesUser {
    /// Login name.
    pub name: String,
    /// PHC string from `crm-responder hash-password`.
    pub password_hash: Secret,
    /// What the user may do: `viewer`, `sales` (the default) or `admin`.
    #[serde(default)]
    pub role: crate::staff::Role,
}

/// `[pipeline]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The statuses, in order; new leads start in the first. Renaming or
    /// removing one that leads still have is refused (see
    /// [`PipelineConfig::check_in_use`]).
    #[serde(default = "defaults::statuses")]
    pub statuses: Vec<String>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            statuses: defaults::statuses(),
        }
    }
}

impl PipelineConfig {
    /// The status of a new lead.
    pub fn first(&self) -> &str {
        self.statuses.first().map_or("new", String::as_str)
    }

    /// Refuses a pipeline that lacks a status leads still have (`in_use`:
    /// each status of live leads with how many have it), naming it: leads
    /// would be left in a status no page or API call could set again.
    pub fn check_in_use(&self, in_use: &[(String, u64)]) -> Result<(), ConfigError> {
        match in_use
            .iter()
            .find(|(status, n)| *n > 0 && !self.statuses.contains(status))
        {
            Some((status, n)) => Err(invalid(
                "pipeline.statuses",
                format!(
                    "{status:?} is used by {n} lead{}; keep it in the list (or move those leads first)",
                    if *n == 1 { "" } else { "s" }
                ),
            )),
            None => Ok(()),
        }
    }
}

/// `[sessions]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// A session unused this long ends.
    #[serde(default = "defaults::idle_minutes")]
    pub idle_minutes: u64,
    /// A session ends this long after sign-in, however busy.
    #[serde(default = "defaults::absolute_hours")]
    pub absolute_hours: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            idle_minutes: defaults::idle_minutes(),
            absolute_hours: defaults::absolute_hours(),
        }
    }
}

impl SessionsConfig {
    /// The idle lifetime.
    pub fn idle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.idle_minutes.saturating_mul(60))
    }

    /// The absolute lifetime.
    pub fn absolute(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.absolute_hours.saturating_mul(3600))
    }
}

/// `[privacy]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Key of the HMAC that turns an erased person's identifiers into
    /// tombstones. Absent: `erase` refuses. Changing it makes existing
    /// tombstones unrecognisable, so `replay` and `import` refuse then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
}

/// `[retention]`: each kind of data is deleted once older than its days;
/// a kind left out is kept for ever.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw deliveries, by the time they were received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_deliveries_days: Option<u32>,
    /// Conversations (their messages), by their last message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcripts_days: Option<u32>,
    /// Whole leads with no activity (see `store::retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_leads_days: Option<u32>,
}

impl RetentionConfig {
    /// The longest of the days set, if any is.
    pub fn longest_days(&self) -> Option<u32> {
        [
            self.raw_deliveries_days,
            self.transcripts_days,
            self.inactive_leads_days,
        ]
        .into_iter()
        .flatten()
        .max()
    }
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Audit entries older than this are deleted by the retention job.
    #[serde(default = "defaults::audit_keep_days")]
    pub keep_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            keep_days: defaults::audit_keep_days(),
        }
    }
}

mod defaults {
    use std::path::PathBuf;

    use super::{CustomDataRow, RowSource};

    pub fn header_timeout_ms() -> u64 {
        10_000
    }
    pub fn request_timeout_ms() -> u64 {
        30_000
    }
    pub fn max_connections() -> usize {
        1024
    }
    pub fn busy_timeout_ms() -> u64 {
        5_000
    }
    pub fn database_path() -> PathBuf {
        PathBuf::from("data/crm.sqlite3")
    }
    pub fn pool_size() -> usize {
        16
    }
    pub fn connect_timeout_ms() -> u64 {
        3_000
    }
    pub fn statement_timeout_ms() -> u64 {
        5_000
    }
    pub fn answer_deadline_ms() -> u64 {
        2_000
    }
    pub fn statuses() -> Vec<String> {
        ["new", "contacted", "qualified", "won", "lost"]
            .map(String::from)
            .to_vec()
    }
    pub fn idle_minutes() -> u64 {
        480
    }
    pub fn absolute_hours() -> u64 {
        72
    }
    pub fn audit_keep_days() -> u32 {
        730
    }
    pub fn custom_data() -> Vec<CustomDataRow> {
        let row = |title: &str, source| CustomDataRow {
            title: title.into(),
            source,
        };
        vec![
            row("Lead", RowSource::Lead),
            row("Status", RowSource::Status),
            row("Owner", RowSource::Owner),
            row("Chats", RowSource::Chats),
            row("Last chat", RowSource::LastChat),
            row("Other emails", RowSource::OtherEmails),
            row("Other phones", RowSource::OtherPhones),
            row("Possible duplicate", RowSource::Duplicates),
        ]
    }
}

impl Config {
    /// Reads and validates a file; `CRM_DATABASE_URL`, when set, overrides
    /// `[database]` so that a password need not sit in the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse_unchecked(&text)?;
        if let Some(url) = std::env::var("CRM_DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            config.database.url = Some(DatabaseUrl::new(url.trim()));
        }
        config.validate()?;
        Ok(config)
    }

    fn parse_unchecked(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// Parses and validates the text of a config file.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::parse_unchecked(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let url = self.server.public_url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
            return Err(invalid(
                "server.public_url",
                "must be an absolute http:// or https:// URL",
            ));
        }
        self.server.public_url = url.to_owned();
        if self.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if self.server.max_body_bytes > 64 * 1024 * 1024 {
            return Err(invalid("server.max_body_bytes", "must be at most 64 MiB"));
        }
        if self.server.header_timeout_ms == 0 || self.server.request_timeout_ms == 0 {
            return Err(invalid(
                "server.header_timeout_ms",
                "timeouts must be greater than zero",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(invalid(
                "server.max_connections",
                "must be greater than zero",
            ));
        }
        // `url = "sqlite:PATH"` is `path = "PATH"`: one place names the file.
        if self.database.url.is_some()
            && let Store::Sqlite(path) = self.database.store()
        {
            self.database.path = path;
            self.database.url = None;
        }
        if self.database.path.as_os_str().is_empty() {
            return Err(invalid("database.path", "must not be empty"));
        }
        if let Store::Postgres(url) = self.database.store() {
            let text = url.expose();
            if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
                return Err(invalid(
                    "database.url",
                    "must start with postgres://, postgresql:// or sqlite:",
                ));
            }
            if let Err(e) = text.parse::<tokio_postgres::Config>() {
                return Err(invalid("database.url", format!("is not a valid URL: {e}")));
            }
        }
        if self.database.pool_size < 2 {
            return Err(invalid(
                "database.pool_size",
                "must be at least 2 (one connection writes, the others read)",
            ));
        }
        if self.database.connect_timeout_ms == 0 || self.database.statement_timeout_ms == 0 {
            return Err(invalid(
                "database.connect_timeout_ms",
                "timeouts must be greater than zero",
            ));
        }
        check_secret("jivo.token", &self.jivo.token)?;
        if !self
            .jivo
            .token
            .expose()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
        {
            return Err(invalid(
                "jivo.token",
                "must use only URL-safe characters (letters, digits, - _ . ~)",
            ));
        }
        if !(10..=60_000).contains(&self.jivo.answer_deadline_ms) {
            return Err(invalid(
                "jivo.answer_deadline_ms",
                "must be between 10 and 60000",
            ));
        }
        if self.jivo.custom_data.is_empty() || self.jivo.custom_data.len() > 10 {
            return Err(invalid(
                "jivo.custom_data",
                "must have between 1 and 10 rows",
            ));
        }
        if let Some(rc) = &self.rocketchat {
            check_secret("rocketchat.token", &rc.token)?;
        }
        if let Some(lc) = &self.livechat {
            if lc.username.is_empty() || lc.username.contains(':') {
                return Err(invalid(
                    "livechat.username",
                    "must be non-empty and contain no ':'",
                ));
            }
            check_secret("livechat.password", &lc.password)?;
            check_secret("livechat.secret_key", &lc.secret_key)?;
        }
        if let Some(secret) = &self.privacy.secret {
            check_secret("privacy.secret", secret)?;
        }
        let order = &self.merge.match_order;
        if order.len() != 2 || order[0] == order[1] {
            return Err(invalid(
                "merge.match_order",
                "must list \"email\" and \"phone\" once each, in the order that decides",
            ));
        }
        let t = self.duplicates.threshold;
        if !(t > 0.0 && t <= 1.0) {
            return Err(invalid(
                "duplicates.threshold",
                "must be a number above 0 and at most 1",
            ));
        }
        for (i, user) in self.sales.users.iter().enumerate() {
            if user.name.is_empty() || user.name.contains(':') {
                return Err(invalid(
                    &format!("sales.users[{i}].name"),
                    "must be non-empty and contain no ':'",
                ));
            }
            if crate::password::parse_hash(user.password_hash.expose()).is_err() {
                return Err(invalid(
                    &format!("sales.users[{i}].password_hash"),
                    "is not a password hash from `crm-responder hash-password`",
                ));
            }
            if self.sales.users[..i].iter().any(|u| u.name == user.name) {
                return Err(invalid(
                    &format!("sales.users[{i}].name"),
                    format!("{:?} is listed twice", user.name),
                ));
            }
        }
        let statuses = &self.pipeline.statuses;
        if statuses.is_empty() {
            return Err(invalid(
                "pipeline.statuses",
                "must list at least one status (new leads start in the first)",
            ));
        }
        for (i, status) in statuses.iter().enumerate() {
            if status.trim() != status || !(1..=40).contains(&status.chars().count()) {
                return Err(invalid(
                    &format!("pipeline.statuses[{i}]"),
                    "must be 1 to 40 characters, without spaces around",
                ));
            }
            if statuses[..i].contains(status) {
                return Err(invalid(
                    &format!("pipeline.statuses[{i}]"),
                    format!("{status:?} is listed twice"),
                ));
            }
        }
        if self.sessions.idle_minutes == 0 {
            return Err(invalid(
                "sessions.idle_minutes",
                "must be greater than zero",
            ));
        }
        if self.sessions.absolute_hours == 0 {
            return Err(invalid(
                "sessions.absolute_hours",
                "must be greater than zero",
            ));
        }
        outbound::validate(&self.outbound)?;
        self.check_retention()
    }

    /// Every retention is at least a day, and the audit log outlives
    /// everything it speaks of.
    fn check_retention(&self) -> Result<(), ConfigError> {
        let r = &self.retention;
        for (key, days) in [
            ("retention.raw_deliveries_days", r.raw_deliveries_days),
            ("retention.transcripts_days", r.transcripts_days),
            ("retention.inactive_leads_days", r.inactive_leads_days),
        ] {
            if days == Some(0) {
                return Err(invalid(
                    key,
                    "must be at least 1 (leave it out to keep for ever)",
                ));
            }
        }
        let keep = self.audit.keep_days;
        if keep == 0 {
            return Err(invalid("audit.keep_days", "must be at least 1"));
        }
        if let Some(longest) = r.longest_days().filter(|d| *d > keep) {
            return Err(invalid(
                "audit.keep_days",
                format!(
                    "must be at least the longest retention ({longest} days): the audit log is kept longer than everything else"
                ),
            ));
        }
        Ok(())
    }

    /// The webhook URL to paste into Jivo.
    pub fn jivo_webhook_url(&self) -> String {
        format!(
            "{}/webhooks/jivo/{}",
            self.server.public_url,
            self.jivo.token.expose()
        )
    }

    /// The effective settings as TOML, secrets redacted.
    pub fn redacted(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

/// The secrets `config.toml` ships with: known to anyone who read it.
const SHIPPED_SECRETS: &[&str] = &[
    "change-me-jivo-token",
    "change-me-rocketchat-token",
    "change-me-livechat-password",
    "change-me-livechat-secret",
    "change-me-privacy-secret",
    // The commented-out `[[outbound]]` example's signing secret.
    "whsec_Y2hhbmdlLW1lLWV4YW1wbGUtb3V0Ym91bmQtc2VjcmV0",
    // The shipped user's hash of "change-me-now".
    "$argon2id$v=19$m=19456,t=2,p=1$SM2NyHmir08ExIehJyQhbg$hGmnpmsOc6otx+RJQR70pSERgH/+7NlK6W6pSj3Clpc",
];

impl Config {
    /// The keys whose secret is still the value `config.toml` ships with
    /// (or any placeholder starting with `change-me`).
    pub fn shipped_secrets(&self) -> Vec<String> {
        let shipped = |s: &Secret| {
            let value = s.expose().trim();
            value.starts_with("change-me") || SHIPPED_SECRETS.contains(&value)
        };
        let mut keys = Vec::new();
        if shipped(&self.jivo.token) {
            keys.push("jivo.token".to_owned());
        }
        if let Some(rc) = &self.rocketchat
            && shipped(&rc.token)
        {
            keys.push("rocketchat.token".to_owned());
        }
        if let Some(lc) = &self.livechat {
            if shipped(&lc.password) {
                keys.push("livechat.password".to_owned());
            }
            if shipped(&lc.secret_key) {
                keys.push("livechat.secret_key".to_owned());
            }
        }
        if let Some(secret) = &self.privacy.secret
            && shipped(secret)
        {
            keys.push("privacy.secret".to_owned());
        }
        for (i, user) in self.sales.users.iter().enumerate() {
            if shipped(&user.password_hash) {
                keys.push(format!("sales.users[{i}].password_hash"));
            }
        }
        for (i, endpoint) in self.outbound.iter().enumerate() {
            if shipped(&endpoint.secret) {
                keys.push(format!("outbound[{i}].secret"));
            }
        }
        keys
    }

    /// Refuses to serve on a non-loopback address while any secret still
    /// has its shipped value: such a service would be open to anyone who
    /// read the shipped file. On loopback it only warns (the caller logs).
    pub fn check_shipped_secrets(&self) -> Result<Vec<String>, ConfigError> {
        let keys = self.shipped_secrets();
        if !keys.is_empty() && !self.server.listen.ip().is_loopback() {
            return Err(invalid(
                &keys[0],
                format!(
                    "still has the value config.toml ships with, and server.listen ({}) is not \
                     a loopback address; change {}",
                    self.server.listen,
                    keys.join(", ")
                ),
            ));
        }
        Ok(keys)
    }
}

fn check_secret(key: &str, secret: &Secret) -> Result<(), ConfigError> {
    if secret.expose().trim().len() < 8 {
        return Err(invalid(key, "must be at least 8 characters"));
    }
    Ok(())
}
