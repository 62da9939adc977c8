//! The review queue of possible duplicates, dismissing a pair, and the
//! preview of a merge.

use serde::Serialize;

use super::{Keep, MergeError, Side, Values, absorb, live, refused, staff_source, values};
use crate::args;
use crate::store::leads;
use crate::store::sql::Sql;
use crate::store::view::{self, Found, LeadCard, LeadView};
use crate::store::{Db, DbError};

/// A pair awaiting a decision, both leads as cards.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    /// The older lead (the default survivor).
    pub lead: i64,
    /// The newer one.
    pub other: i64,
    /// How alike, 0..1.
    pub score: f64,
    /// Why they were flagged.
    pub reason: String,
    /// The older lead's card.
    #[serde(skip)]
    pub lead_card: LeadCard,
    /// The newer lead's card.
    #[serde(skip)]
    pub other_card: LeadCard,
}

/// Where the page's cursor stands: the last pair shown.
pub type Cursor = (f64, i64, i64);

/// Pairs of the queue, strongest first (then by lead ids), after `after`.
fn pairs(conn: &dyn Sql, after: Option<Cursor>, limit: usize) -> Result<Vec<Pair>, DbError> {
    let rows: Vec<(i64, i64, f64, String)> = match after {
        None => conn.query_all(
            "SELECT lead_a, lead_b, score, reason FROM duplicate_links
             ORDER BY score DESC, lead_a, lead_b LIMIT ?1",
            args![limit as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?,
        // After the cursor: the rest of its lead's pairs at its score, the
        // next leads at that score, then weaker pairs. Each part is a seek
        // on `duplicate_links_queue` (an OR of them reads every link before
        // the cursor).
        Some((score, a, b)) => conn.query_all(
            "SELECT lead_a, lead_b, score, reason FROM (
                 SELECT * FROM (SELECT lead_a, lead_b, score, reason FROM duplicate_links
                                WHERE score = ?1 AND lead_a = ?2 AND lead_b > ?3
                                ORDER BY lead_b LIMIT ?4) AS same_lead
                 UNION ALL
                 SELECT * FROM (SELECT lead_a, lead_b, score, reason FROM duplicate_links
                                WHERE score = ?1 AND lead_a > ?2
                                ORDER BY lead_a, lead_b LIMIT ?4) AS same_score
                 UNION ALL
                 SELECT * FROM (SELECT lead_a, lead_b, score, reason FROM duplicate_links
                                WHERE score < ?1
                                ORDER BY score DESC, lead_a, lead_b LIMIT ?4) AS weaker
             ) AS page
             ORDER BY score DESC, lead_a, lead_b LIMIT ?4",
            args![score, a, b, limit as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?,
    };
    rows.into_iter()
        .map(|(lead, other, score, reason)| {
            Ok(Pair {
                lead,
                other,
                score,
                reason,
                lead_card: view::card(conn, lead, None)?,
                other_card: view::card(conn, other, None)?,
            })
        })
        .collect()
}

/// Dismisses the pair (see [`Db::dismiss_duplicate`]).
fn dismiss(conn: &dyn Sql, a: i64, b: i64, by: &str) -> Result<(), MergeError> {
    if a == b {
        return Err(MergeError::Invalid(
            "a lead is not a duplicate of itself".into(),
        ));
    }
    live(conn, a)?;
    live(conn, b)?;
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let source = staff_source(by);
    let new = conn.execute(
        "INSERT INTO dismissed_duplicates (lead_a, lead_b, dismissed_by, dismissed_at)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        args![lo, hi, source.label, source.at],
    )? > 0;
    let linked = conn.exists(
        "SELECT 1 FROM duplicate_links WHERE lead_a = ?1 AND lead_b = ?2",
        args![lo, hi],
    )?;
    super::unlink(conn, lo, hi)?;
    if new || linked {
        for (lead, other) in [(a, b), (b, a)] {
            let other = other.to_string();
            leads::history(
                conn,
                lead,
                "duplicate dismissed",
                Some(&other),
                Some("not the same person"),
                &source,
                None,
            )?;
            leads::touch(conn, lead, &source.at)?;
        }
    }
    Ok(())
}

/// One of the values a merge chooses, each side's and the one kept.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    /// `name`, `description`, `status`, `owner`, `primary_email`, `primary_phone`.
    pub field: &'static str,
    /// The survivor's value.
    pub this: Option<String>,
    /// The absorbed lead's value.
    pub other: Option<String>,
    /// What the merged lead holds.
    pub value: Option<String>,
    /// Where that comes from: `this`, `other` (or `this` when both agree).
    pub from: Side,
}

/// What a merge would make, written nowhere.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// The lead that stays.
    pub survivor: i64,
    /// The lead merged into it.
    pub absorbed: i64,
    /// The merged lead as it would be.
    pub lead: Box<LeadView>,
    /// Each chosen value and where it comes from.
    pub fields: Vec<Provenance>,
    /// Everything that moves: the absorbed lead as it is now.
    pub moves: Box<LeadView>,
    /// The survivor as it is now.
    #[serde(skip)]
    pub this: Box<LeadView>,
}

/// The provenance of each chosen value.
fn provenance(this: &Values, other: &Values, kept: &Values) -> Vec<Provenance> {
    let rows = [
        ("name", &this.name, &other.name, &kept.name),
        (
            "description",
            &this.description,
            &other.description,
            &kept.description,
        ),
        (
            "status",
            &Some(this.status.clone()),
            &Some(other.status.clone()),
            &Some(kept.status.clone()),
        ),
        ("owner", &this.owner, &other.owner, &kept.owner),
        (
            "primary_email",
            &this.primary_email,
            &other.primary_email,
            &kept.primary_email,
        ),
        (
            "primary_phone",
            &this.primary_phone,
            &other.primary_phone,
            &kept.primary_phone,
        ),
    ];
    rows.into_iter()
        .map(|(field, this, other, value)| Provenance {
            field,
            this: this.clone(),
            other: other.clone(),
            value: value.clone(),
            from: if value == this {
                Side::This
            } else {
                Side::Other
            },
        })
        .collect()
}

/// The merge done and read back inside a savepoint that is rolled back.
fn preview(
    conn: &dyn Sql,
    survivor: i64,
    absorbed: i64,
    keep: &Keep,
) -> Result<Preview, MergeError> {
    if survivor == absorbed {
        return Err(MergeError::Invalid(
            "a lead cannot be merged with itself".into(),
        ));
    }
    live(conn, survivor)?;
    live(conn, absorbed)?;
    let lead_view = |id| -> Result<Box<LeadView>, MergeError> {
        match view::lead(conn, id)? {
            Found::Lead(lead) => Ok(lead),
            _ => Err(MergeError::NotFound),
        }
    };
    let this = lead_view(survivor)?;
    let moves = lead_view(absorbed)?;
    let (before, other) = (values(conn, survivor)?, values(conn, absorbed)?);
    conn.batch("SAVEPOINT merge_preview")?;
    let merged = (|| {
        let source = staff_source("preview");
        absorb(conn, survivor, absorbed, keep, super::Kind::Merge, &source)?;
        leads::touch(conn, survivor, &source.at)?;
        lead_view(survivor)
    })();
    conn.batch("ROLLBACK TO merge_preview; RELEASE merge_preview")?;
    let lead = merged?;
    let kept = super::chosen(&before, &other, keep);
    Ok(Preview {
        survivor,
        absorbed,
        fields: provenance(&before, &other, &kept),
        lead,
        moves,
        this,
    })
}

impl Db {
    /// A page of the review queue, strongest pairs first, and the cursor
    /// of the next page.
    pub async fn duplicate_pairs(
        &self,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<Pair>, Option<Cursor>), DbError> {
        let limit = limit.clamp(1, 100);
        self.read(move |conn| {
            let pairs = pairs(conn, after, limit)?;
            let next = (pairs.len() == limit)
                .then(|| pairs.last().map(|p| (p.score, p.lead, p.other)))
                .flatten();
            Ok((pairs, next))
        })
        .await
    }

    /// "Not the same person": removes the link between `a` and `b` and
    /// records the pair, so that no webhook, import or replay links it
    /// again. History rows on both; dismissing twice changes nothing.
    pub async fn dismiss_duplicate(
        &self,
        a: i64,
        b: i64,
        by: String,
        audit: crate::store::audit::Entry,
    ) -> Result<(), MergeError> {
        self.write(move |conn| {
            let dismissed = dismiss(conn, a, b, &by);
            if dismissed.is_ok() {
                crate::store::audit::record(conn, &audit)?;
            }
            refused(dismissed)
        })
        .await?
    }

    /// What merging `absorbed` into `survivor` keeping `keep` would make:
    /// the merge runs in the writer's transaction inside a savepoint that
    /// is rolled back, so the preview is exactly the merge, and nothing is
    /// written.
    pub async fn merge_preview(
        &self,
        survivor: i64,
        absorbed: i64,
        keep: Keep,
    ) -> Result<Preview, MergeError> {
        self.write(move |conn| refused(preview(conn, survivor, absorbed, &keep)))
            .await?
    }
}
