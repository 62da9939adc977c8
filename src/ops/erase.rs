//! `erase` and `export-person`: a person's erasure (database and spool)
//! and everything held on them, for the command line, the API and the
//! lead page alike.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};

use phonenumber::country;

use crate::crm::identity::{Email, Phone};
use crate::privacy::{self, Key};
use crate::spool::Spool;
use crate::store::erase::{Erased, Subject};
use crate::store::{Db, DbError};

/// The subject named by exactly one of `--lead`, `--email`, `--phone`,
/// normalised as the store keys it.
pub fn subject(
    lead: Option<i64>,
    email: Option<&str>,
    phone: Option<&str>,
    region: country::Id,
) -> Result<Subject, String> {
    match (lead, email, phone) {
        (Some(id), None, None) if id > 0 => Ok(Subject::Lead(id)),
        (Some(id), None, None) => Err(format!("--lead {id}: not a lead id")),
        (None, Some(email), None) => Email::parse(email)
            .map(|e| Subject::Email(e.normalized))
            .ok_or_else(|| format!("--email {email:?}: not an email address")),
        (None, None, Some(phone)) => Phone::parse(phone, region)
            .map(|p| Subject::Phone(p.normalized))
            .ok_or_else(|| format!("--phone {phone:?}: not a phone number")),
        _ => Err("name the person with exactly one of --lead, --email, --phone".into()),
    }
}

/// Erases `subject`: first the spooled deliveries that carry their
/// identifiers (so that a drain cannot apply one after the database is
/// clean), then the database in one transaction ([`Db::erase_person`]).
/// `None`: nothing of theirs was held.
pub async fn erase(
    db: &Db,
    spool: &Spool,
    key: Key,
    region: country::Id,
    subject: Subject,
    audit: crate::audit::Entry,
) -> Result<Option<Erased>, DbError> {
    let person = db.person(subject.clone()).await?;
    let spooled = {
        let spool = spool.clone();
        tokio::task::spawn_blocking(move || {
            spool.remove_matching(|platform, body| {
                privacy::carries(platform, body, region, &person.ids, &person.plain)
            })
        })
        .await
        .map_err(|e| DbError::Internal(format!("spool task failed: {e}")))?
        .map_err(|e| DbError::Unavailable(format!("spool: {e}")))?
    };
    let erased = db.erase_person(subject, key, region, audit).await?;
    Ok(match erased {
        Some(mut erased) => {
            erased.removed.insert("spooled", spooled);
            Some(erased)
        }
        None if spooled > 0 => Some(Erased {
            removed: [("spooled", spooled)].into(),
            erased_at: crate::event::now_rfc3339(),
            ..Erased::default()
        }),
        None => None,
    })
}

/// `crm-responder erase`: shows whom it will erase, asks on a terminal
/// (unless `yes`), erases, and prints what was removed. Refuses without a
/// terminal and without `--yes`: a script must say it means it.
pub async fn command(
    db: &Db,
    spool: &Spool,
    key: Key,
    region: country::Id,
    subject: Subject,
    yes: bool,
) -> Result<std::process::ExitCode, String> {
    let person = db
        .person(subject.clone())
        .await
        .map_err(|e| e.to_string())?;
    let who = match person.leads.split_first() {
        Some((first, [])) => format!("lead {first}"),
        Some((first, rest)) => {
            format!("lead {first} and the leads folded into it ({})", list(rest))
        }
        None => "no lead (raw deliveries, spooled deliveries and a tombstone only)".into(),
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(format!(
                "this erases {who} for good; add --yes to confirm from a script"
            ));
        }
        eprint!(
            "This erases {who}, with {} identifiers, every conversation, note, history and raw \
             delivery of theirs, for good.\nType \"erase\" to confirm: ",
            person.ids.len()
        );
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        if line.trim() != "erase" {
            println!("nothing erased");
            return Ok(std::process::ExitCode::from(1));
        }
    }
    let audit = crate::audit::Entry::by_cli(crate::audit::action::ERASE, None);
    match erase(db, spool, key, region, subject, audit)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(erased) => {
            println!("{}", report(&erased));
            Ok(std::process::ExitCode::SUCCESS)
        }
        None => {
            println!("nothing held on that person: nothing erased");
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// What an erasure removed, in one line an operator can keep.
pub fn report(erased: &Erased) -> String {
    let removed: Vec<String> = erased
        .removed
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
    let leads = if erased.lead_ids.is_empty() {
        "no lead".to_owned()
    } else {
        format!("lead(s) {}", list(&erased.lead_ids))
    };
    format!(
        "erased {leads} at {}: removed {}; {} tombstones kept (keyed hashes, no values)",
        erased.erased_at,
        if removed.is_empty() {
            "nothing".to_owned()
        } else {
            removed.join(", ")
        },
        erased.tombstones
    )
}

fn list(ids: &[i64]) -> String {
    let ids: BTreeSet<i64> = ids.iter().copied().collect();
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
