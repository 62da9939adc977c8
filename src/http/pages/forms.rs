//! The lead page's forms: `POST /leads/{id}/…`, the same operations the
//! JSON write API does (`store::edits`), for a browser without script.
//!
//! Every form carries the session's CSRF token (`check_form`: 403 and
//! nothing changed without it, or from another site), the lead's `version`
//! and, for each field it edits, the value the page showed (`was_FIELD`).
//! The check is per field: a field someone else changed since the page was
//! loaded is refused (409, the page again with the current value and a
//! message), while a note added meanwhile does not block a status change.
//! Success answers `303 See Other` to the lead page (Post/Redirect/Get), so
//! reloading it never posts twice.

use std::collections::HashMap;
use std::sync::Arc;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::model::{ErasedPage, Problem};
use super::{error_page, lead_page};
use crate::crm::merge::ContactKind;
use crate::http::error::ApiError;
use crate::http::session::{
    PageUser, check_form, encode_component, page_staff, require, see_other,
};
use crate::http::{AppState, raw_header};
use crate::staff::Role;
use crate::store::edits::{EditError, Expect, Field};

/// Largest form accepted: a description or a note is at most 20 000
/// characters, up to four bytes each, percent-encoded.
const MAX_FORM_BYTES: u64 = 256 * 1024;

/// A form's fields by name (the last of a repeated one).
pub(super) type Form = HashMap<String, String>;

/// `POST /leads/{id}/{action}` and `POST /leads/{id}/{emails|phones}/{remove|primary}`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path("leads")
        .and(warp::path::param::<String>())
        .and(warp::path::tail())
        .and(warp::post())
        .and(page_staff(state))
        .and(raw_header("origin"))
        .and(
            warp::body::content_length_limit(MAX_FORM_BYTES)
                .and(warp::body::form::<Form>())
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .then(
            |id: String,
             tail: warp::path::Tail,
             user: Result<(Arc<AppState>, PageUser), Response>,
             origin: Option<String>,
             form: Option<Form>| async move {
                submit(id, tail.as_str().to_owned(), user, origin, form).await
            },
        )
}

/// What a form asks for.
enum Action {
    /// Set the fields the form holds (`name`, `description`, `status`, `owner`).
    Edit,
    /// Become the owner.
    Take,
    /// Add a staff note.
    Note,
    /// Add an email or phone.
    Add(ContactKind),
    /// Remove one.
    Remove(ContactKind),
    /// Make one primary.
    Primary(ContactKind),
    /// Erase the person (admins, with the confirmation box ticked).
    Erase,
    /// Merge another lead into this one (`duplicates.rs`).
    Merge,
    /// Undo the merge of another lead into this one.
    Unmerge,
    /// Dismiss the pair this lead makes with another.
    Dismiss(i64),
}

impl Action {
    fn parse(tail: &str) -> Option<Action> {
        let kind = |k: &str| match k {
            "emails" => Some(ContactKind::Email),
            "phones" => Some(ContactKind::Phone),
            _ => None,
        };
        Some(match tail.split_once('/') {
            None => match tail {
                "edit" => Action::Edit,
                "take" => Action::Take,
                "notes" => Action::Note,
                "erase" => Action::Erase,
                "merge" => Action::Merge,
                "unmerge" => Action::Unmerge,
                other => Action::Add(kind(other)?),
            },
            Some(("duplicates", rest)) => match rest.split_once('/') {
                Some((other, "dismiss")) => Action::Dismiss(other.parse().ok()?),
                _ => return None,
            },
            Some((k, "remove")) => Action::Remove(kind(k)?),
            Some((k, "primary")) => Action::Primary(kind(k)?),
            Some(_) => return None,
        })
    }
}

async fn submit(
    id: String,
    tail: String,
    user: Result<(Arc<AppState>, PageUser), Response>,
    origin: Option<String>,
    form: Option<Form>,
) -> Response {
    let Some(id) = id.parse::<i64>().ok().filter(|id| *id > 0) else {
        return error_page(&ApiError::NotFound);
    };
    let (state, user) = match user {
        Ok(user) => user,
        // Signed out meanwhile: after signing in, back to the lead page
        // (the form's own URL answers no GET).
        Err(page) if page.status() == StatusCode::SEE_OTHER => {
            let lead = format!("/leads/{id}");
            return see_other(&format!("/login?next={}", encode_component(&lead)));
        }
        Err(page) => return page,
    };
    let Some(action) = Action::parse(&tail) else {
        return error_page(&ApiError::NotFound);
    };
    let config = state.config();
    let form = form.unwrap_or_default();
    let allowed = check_form(
        &user,
        form.get("csrf").map(String::as_str),
        origin.as_deref(),
        &config,
    )
    .and_then(|()| require(&user.staff, Role::can_work));
    if let Err(e) = allowed {
        return error_page(&e);
    }
    match action {
        Action::Erase => return erase(&state, &user, id, &form).await,
        Action::Merge => return super::duplicates::merge(&state, &user, id, &form).await,
        Action::Unmerge => return super::duplicates::unmerge(&state, &user, id, &form).await,
        Action::Dismiss(other) => {
            return super::duplicates::dismiss(&state, &user, id, other, &form).await;
        }
        _ => {}
    }
    let by = user.staff.label();
    let text = |key: &str| form.get(key).cloned().unwrap_or_default();
    let db = &state.db;
    let done = match action {
        Action::Edit => {
            let (changes, expect) = edits(&form);
            if changes.is_empty() {
                return see_other(&format!("/leads/{id}"));
            }
            let users = config
                .sales
                .users
                .iter()
                .filter(|u| u.role.can_work())
                .map(|u| u.name.clone())
                .collect();
            let pipeline = config.pipeline.statuses.clone();
            db.edit_lead(id, by, changes, expect, pipeline, users).await
        }
        Action::Take => {
            let expect = Expect {
                version: None,
                was: vec![(Field::Owner, shown(form.get("was_owner")))],
            };
            let users = vec![user.staff.name.clone()];
            let changes = vec![(Field::Owner, Some(user.staff.name.clone()))];
            let pipeline = config.pipeline.statuses.clone();
            db.edit_lead(id, by, changes, expect, pipeline, users).await
        }
        Action::Note => {
            db.add_staff_note(id, by, text("text"), Expect::nothing())
                .await
        }
        Action::Add(kind) => {
            let primary = form.contains_key("primary");
            let region = config.merge.default_region;
            db.add_contact(
                id,
                kind,
                text("value"),
                primary,
                by,
                region,
                Expect::nothing(),
            )
            .await
        }
        Action::Remove(kind) => {
            db.remove_contact(id, kind, text("value"), by, Expect::nothing())
                .await
        }
        Action::Primary(kind) => {
            db.make_primary(id, kind, text("value"), by, Expect::nothing())
                .await
        }
        Action::Erase | Action::Merge | Action::Unmerge | Action::Dismiss(_) => {
            unreachable!("answered above")
        }
    };
    let (status, problem) = match done {
        Ok(()) => return see_other(&format!("/leads/{id}")),
        Err(EditError::Changed { field, current }) => (
            StatusCode::CONFLICT,
            Problem {
                message: format!(
                    "Not saved: someone else changed the {field} while you had this page open; it is now {}. The form shows the current value.",
                    match current {
                        Some(v) => format!("“{v}”"),
                        None => "empty".into(),
                    }
                ),
                lead: None,
            },
        ),
        Err(EditError::OwnedElsewhere { lead }) => (
            StatusCode::CONFLICT,
            Problem {
                message: format!("Not added: that value belongs to lead #{lead}."),
                lead: Some(lead),
            },
        ),
        Err(EditError::Invalid(message)) => (
            StatusCode::BAD_REQUEST,
            Problem {
                message: format!("Not saved: {message}."),
                lead: None,
            },
        ),
        Err(other) => return error_page(&ApiError::from(other)),
    };
    lead_page(&state, &user, id, None, status, Some(problem)).await
}

/// `POST /leads/{id}/erase`: an admin erases the person, once the form's
/// box saying it cannot be undone is ticked (the confirmation step; a
/// browser also insists on it before sending).
async fn erase(state: &AppState, user: &PageUser, id: i64, form: &Form) -> Response {
    if let Err(e) = require(&user.staff, Role::can_admin) {
        return error_page(&e);
    }
    if form.get("confirm").map(String::as_str) != Some("erase") {
        let problem = Problem {
            message: "Not erased: tick the box to confirm that the person is erased for good."
                .into(),
            lead: None,
        };
        return lead_page(
            state,
            user,
            id,
            None,
            StatusCode::BAD_REQUEST,
            Some(problem),
        )
        .await;
    }
    let audit =
        crate::audit::Entry::by(&user.staff, crate::audit::action::ERASE, None, user.client);
    match crate::http::api::privacy::erase_lead(state, id, audit).await {
        Ok(Some(erased)) => super::render(StatusCode::OK, &ErasedPage::new(user, &erased)),
        Ok(None) => error_page(&ApiError::NotFound),
        Err(e) => error_page(&e),
    }
}

/// A value the page showed: empty is none (a field without a value is
/// shown as an empty input).
fn shown(value: Option<&String>) -> Option<String> {
    value.filter(|v| !v.is_empty()).cloned()
}

/// The fields an edit form changes and what the page showed of them. A
/// field whose value is the one shown was not touched, and is neither
/// written nor checked: someone else's change to it stands.
fn edits(form: &Form) -> (Vec<(Field, Option<String>)>, Expect) {
    let mut changes = Vec::new();
    let mut was = Vec::new();
    for field in [Field::Name, Field::Description, Field::Status, Field::Owner] {
        let Some(value) = form.get(field.as_str()) else {
            continue;
        };
        let before = shown(form.get(&format!("was_{field}")));
        // Browsers send a textarea's line ends as CRLF.
        let value = value.replace("\r\n", "\n");
        let after = Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        if after
            == before
                .as_deref()
                .map(|b| b.replace("\r\n", "\n").trim().to_owned())
        {
            continue;
        }
        changes.push((field, after));
        was.push((field, before));
    }
    (changes, Expect { version: None, was })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_fields_the_user_changed_are_written_and_checked() {
        let (changes, expect) = edits(&form(&[
            ("name", "Ann Lee"),
            ("was_name", "Ann Lee"),
            ("description", "calls back\r\ntomorrow "),
            ("was_description", "calls back\r\ntomorrow"),
            ("status", "won"),
            ("was_status", "new"),
            ("owner", ""),
            ("was_owner", "sales"),
        ]));
        assert_eq!(
            changes,
            [(Field::Status, Some("won".into())), (Field::Owner, None)]
        );
        assert_eq!(
            expect.was,
            [
                (Field::Status, Some("new".into())),
                (Field::Owner, Some("sales".into()))
            ]
        );
        assert_eq!(expect.version, None);
    }

    #[test]
    fn form_paths_name_their_action() {
        assert!(matches!(Action::parse("edit"), Some(Action::Edit)));
        assert!(matches!(
            Action::parse("phones/remove"),
            Some(Action::Remove(ContactKind::Phone))
        ));
        assert!(matches!(
            Action::parse("emails"),
            Some(Action::Add(ContactKind::Email))
        ));
        assert!(Action::parse("notes/x").is_none());
        assert!(Action::parse("").is_none());
    }
}
