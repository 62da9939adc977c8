//! Lists of leads narrowed by status, owner, platform, channel, campaign and creation time,
//! alone or with a search, a page at a time, with how many leads each
//! status holds under the same filters (but the status).
//!
//! Every shape reads an index over live leads (migration 0007): `(status,
//! id)`, `(owner, status, id)`, `(source_platform, id)`, `(source_channel,
//! id)`, `(source_campaign, id)`, `(created_at,
//! id)`. Lists go newest first by id, a page being a seek below the last
//! id of the one before, so a lead created meanwhile never shifts or
//! repeats the others. An owner without a status is read status by status
//! from `(owner, status, id)` (the counts say which statuses it has) and
//! merged, rather than every one of the owner's leads sorted for a page.
//! With a search, its candidates (a bounded set) are narrowed instead.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::{Cursor, Hit, Query, listed, page, ranked};
use crate::store::DbError;
use crate::store::sql::{Sql, Value};

/// Whose leads to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerFilter {
    /// Those of this sales user (`me` is resolved by the caller).
    Name(String),
    /// Those nobody owns.
    Nobody,
}

impl OwnerFilter {
    /// `owner=` as a request gives it: a name, `me` (the user `me` names, if
    /// any) or `none`. `Err` when `me` is asked by an actor that is no user.
    pub fn parse(value: &str, me: Option<&str>) -> Result<OwnerFilter, String> {
        match value.trim() {
            "none" => Ok(OwnerFilter::Nobody),
            "me" => me
                .map(|me| OwnerFilter::Name(me.to_owned()))
                .ok_or_else(|| "owner=me needs a signed-in sales user, not a token".to_owned()),
            name => Ok(OwnerFilter::Name(name.to_owned())),
        }
    }
}

/// A list of leads: a search (or none) and the filters narrowing it.
#[derive(Debug, Clone, Default)]
pub struct LeadFilter {
    /// The search, its cursor and page size.
    pub query: Query,
    /// Only leads in this status.
    pub status: Option<String>,
    /// Only leads in one of these statuses (the open ones of the pipeline),
    /// when no single status is asked for.
    pub among: Option<Vec<String>>,
    /// Only leads of this owner (or of none).
    pub owner: Option<OwnerFilter>,
    /// Only leads that came from this platform.
    pub platform: Option<String>,
    /// Only leads that came through this channel (Jivo widget, Rocket.Chat
    /// department, LiveChat group).
    pub channel: Option<String>,
    /// Only leads whose first UTM campaign was this.
    pub campaign: Option<String>,
    /// Only leads created at or after this time (RFC 3339 UTC, as stored).
    pub created_since: Option<String>,
}

impl LeadFilter {
    /// Whether a lead in `status` is listed under the status filters.
    pub fn admits(&self, status: &str) -> bool {
        self.status.as_ref().is_none_or(|s| s == status)
            && self
                .among
                .as_ref()
                .is_none_or(|among| among.iter().any(|s| s == status))
    }
}

/// How many leads each status holds, by status name.
pub type StatusCounts = Vec<(String, u64)>;

/// One page of leads `filter` lists, the cursor of the next page, and the
/// counts per status under the filters but the status.
pub fn list(
    conn: &dyn Sql,
    filter: &LeadFilter,
    region: phonenumber::country::Id,
) -> Result<(Vec<Hit>, Option<Cursor>, StatusCounts), DbError> {
    let limit = filter.query.limit.clamp(1, 100);
    if let Some(hits) = ranked(conn, &filter.query, region)? {
        return narrowed(conn, filter, hits, limit);
    }
    let counts = counts(conn, filter)?;
    let before = filter.query.cursor.map_or(i64::MAX, |c| c.id);
    let ids = match (&filter.status, &filter.owner, &filter.among) {
        // Read status by status (each an index seek) and merged.
        (None, Some(_), _) | (None, None, Some(_)) => {
            let mut ids = Vec::new();
            for (status, _) in counts
                .iter()
                .filter(|(status, n)| *n > 0 && filter.admits(status))
            {
                ids.extend(listing(conn, filter, Some(status), before, limit)?);
            }
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids
        }
        (status, _, _) => listing(conn, filter, status.as_deref(), before, limit)?,
    };
    let (hits, next) = page(ids.into_iter().map(listed).collect(), None, limit);
    Ok((hits, next, counts))
}

/// The `WHERE` of a filter's statements, and its parameters in order.
struct Conditions<'a> {
    sql: String,
    args: Vec<Value<'a>>,
}

impl<'a> Conditions<'a> {
    /// `filter`'s conditions, with `status` in place of the filter's own.
    fn of(filter: &'a LeadFilter, status: Option<&'a str>) -> Conditions<'a> {
        let mut c = Conditions {
            sql: "merged_into IS NULL".into(),
            args: Vec::new(),
        };
        if let Some(status) = status {
            c.and("status =", Value::Text(status));
        }
        match &filter.owner {
            Some(OwnerFilter::Name(name)) => c.and("owner =", Value::Text(name)),
            Some(OwnerFilter::Nobody) => c.sql.push_str(" AND owner IS NULL"),
            None => {}
        }
        if let Some(platform) = &filter.platform {
            c.and("source_platform =", Value::Text(platform));
        }
        if let Some(channel) = &filter.channel {
            c.and("source_channel =", Value::Text(channel));
        }
        if let Some(campaign) = &filter.campaign {
            c.and("source_campaign =", Value::Text(campaign));
        }
        if let Some(since) = &filter.created_since {
            c.and("created_at >=", Value::Text(since));
        }
        c
    }

    /// Adds `column op ?n` for `value`.
    fn and(&mut self, column_op: &str, value: Value<'a>) {
        self.args.push(value);
        let _ = write!(self.sql, " AND {column_op} ?{}", self.args.len());
    }
}

/// The ids of one page (and one more, to know a next one follows) of
/// `filter` with `status`, below id `before`, newest first.
fn listing(
    conn: &dyn Sql,
    filter: &LeadFilter,
    status: Option<&str>,
    before: i64,
    limit: usize,
) -> Result<Vec<i64>, DbError> {
    let (sql, args) = listing_sql(filter, status, before, limit);
    conn.query_all(&sql, &args, |r| r.get(0))
}

/// The statement of [`listing`] and its parameters.
fn listing_sql<'a>(
    filter: &'a LeadFilter,
    status: Option<&'a str>,
    before: i64,
    limit: usize,
) -> (String, Vec<Value<'a>>) {
    let mut c = Conditions::of(filter, status);
    // When only the creation time narrows, its index is the one to seek:
    // `+id` keeps the id bound from drawing the planner to walk every
    // lead down the primary key.
    let only_since = status.is_none()
        && filter.owner.is_none()
        && filter.platform.is_none()
        && filter.channel.is_none()
        && filter.campaign.is_none()
        && filter.created_since.is_some();
    c.and(
        if only_since { "+id <" } else { "id <" },
        Value::Int(before),
    );
    c.args.push(Value::Int(limit as i64 + 1));
    let sql = format!(
        "SELECT id FROM leads WHERE {} ORDER BY id DESC LIMIT ?{}",
        c.sql,
        c.args.len()
    );
    (sql, c.args)
}

/// Leads per status under `filter` but its status, by status name.
fn counts(conn: &dyn Sql, filter: &LeadFilter) -> Result<StatusCounts, DbError> {
    let (sql, args) = counts_sql(filter);
    conn.query_all(&sql, &args, |r| Ok((r.get(0)?, r.get(1)?)))
}

/// The statement of [`counts`] and its parameters.
fn counts_sql(filter: &LeadFilter) -> (String, Vec<Value<'_>>) {
    let c = Conditions::of(filter, None);
    // Narrowed by the creation time but by no owner, SQLite would rather
    // walk `(status, id)` whole for its order than seek the creation
    // time's index and sort the few leads it finds (a twentieth of the time
    // for a recent day): grouping by an expression leaves it no order to
    // gain. With an owner, `(owner, status, id)` gives both.
    let key = if filter.created_since.is_some() && filter.owner.is_none() {
        "status || ''"
    } else {
        "status"
    };
    let sql = format!(
        "SELECT {key}, count(*) FROM leads WHERE {} GROUP BY 1 ORDER BY 1",
        c.sql
    );
    (sql, c.args)
}

/// The statements the first page of a list without a search runs, with
/// their parameters: the counts, then the page (one per status of
/// `statuses` for an owner without a status). What the query-plan test
/// explains: every one must read an index.
pub fn statements<'a>(
    filter: &'a LeadFilter,
    statuses: &'a [String],
) -> Vec<(String, Vec<Value<'a>>)> {
    let limit = filter.query.limit.clamp(1, 100);
    let mut out = vec![counts_sql(filter)];
    match (&filter.status, &filter.owner) {
        (None, Some(_)) => out.extend(
            statuses
                .iter()
                .map(|s| listing_sql(filter, Some(s), i64::MAX, limit)),
        ),
        (status, _) => out.push(listing_sql(filter, status.as_deref(), i64::MAX, limit)),
    }
    out
}

/// What a filter looks at of a lead.
struct Facts {
    status: String,
    owner: Option<String>,
    platform: Option<String>,
    channel: Option<String>,
    campaign: Option<String>,
    created_at: String,
}

impl Facts {
    /// Whether the lead passes `filter`, its status aside.
    fn passes(&self, filter: &LeadFilter) -> bool {
        let owner = match &filter.owner {
            None => true,
            Some(OwnerFilter::Nobody) => self.owner.is_none(),
            Some(OwnerFilter::Name(name)) => self.owner.as_ref() == Some(name),
        };
        owner
            && filter
                .platform
                .as_ref()
                .is_none_or(|p| self.platform.as_ref() == Some(p))
            && (filter.channel.as_ref()).is_none_or(|c| self.channel.as_ref() == Some(c))
            && (filter.campaign.as_ref()).is_none_or(|c| self.campaign.as_ref() == Some(c))
            && filter
                .created_since
                .as_ref()
                .is_none_or(|since| self.created_at >= *since)
    }
}

/// Leads read at once by id: one statement text for every batch (the last
/// one padded with its last id), so it is prepared once.
const FACTS_BATCH: usize = 50;

/// The facts of the live leads among `ids`.
fn facts(conn: &dyn Sql, ids: &[i64]) -> Result<HashMap<i64, Facts>, DbError> {
    let placeholders: Vec<String> = (1..=FACTS_BATCH).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "SELECT id, status, owner, source_platform, created_at, source_channel, source_campaign
         FROM leads
         WHERE id IN ({}) AND merged_into IS NULL",
        placeholders.join(", ")
    );
    let mut out = HashMap::with_capacity(ids.len());
    for batch in ids.chunks(FACTS_BATCH) {
        let last = batch[batch.len() - 1];
        let args: Vec<Value<'_>> = (0..FACTS_BATCH)
            .map(|i| Value::Int(batch.get(i).copied().unwrap_or(last)))
            .collect();
        conn.each_row(&sql, &args, &mut |r| {
            let facts = Facts {
                status: r.get(1)?,
                owner: r.get(2)?,
                platform: r.get(3)?,
                created_at: r.get(4)?,
                channel: r.get(5)?,
                campaign: r.get(6)?,
            };
            out.insert(r.get(0)?, facts);
            Ok(())
        })?;
    }
    Ok(out)
}

/// A search's candidates narrowed by `filter`: the page, the next cursor,
/// and the counts per status of the candidates that pass the rest.
fn narrowed(
    conn: &dyn Sql,
    filter: &LeadFilter,
    hits: Vec<Hit>,
    limit: usize,
) -> Result<(Vec<Hit>, Option<Cursor>, StatusCounts), DbError> {
    let ids: Vec<i64> = hits.iter().map(|h| h.id).collect();
    let facts = facts(conn, &ids)?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut kept = Vec::new();
    for hit in hits {
        let Some(facts) = facts.get(&hit.id).filter(|f| f.passes(filter)) else {
            continue;
        };
        *counts.entry(facts.status.clone()).or_default() += 1;
        if filter.admits(&facts.status) {
            kept.push(hit);
        }
    }
    let (hits, next) = page(kept, filter.query.cursor, limit);
    Ok((hits, next, counts.into_iter().collect()))
}
