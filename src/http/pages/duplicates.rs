//! Clearing the duplicates queue from the pages: `GET /duplicates` (pairs
//! side by side, strongest first), `GET /leads/{id}/merge?other=B` (the
//! preview, with the choices), and the forms that merge, dismiss and
//! unmerge (posted through `forms.rs`, which checks CSRF and the role).

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::forms::Form;
use super::model::{Account, title, when};
use super::{error_page, render};
use crate::http::AppState;
use crate::http::api::{CHOICES, dismissed_entry, keep_of, merged_entry, unmerged_entry};
use crate::http::error::ApiError;
use crate::http::session::{PageUser, page_staff, see_other};
use crate::staff::Role;
use crate::store::merges::{Pair, Preview, Side};
use crate::store::view::{LeadCard, LeadView};

/// `GET /duplicates` and `GET /leads/{id}/merge`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let queue = warp::path!("duplicates")
        .and(warp::get())
        .and(page_staff(state.clone()))
        .and(warp::query::<HashMap<String, String>>())
        .then(show_queue);
    let preview = warp::path!("leads" / String / "merge")
        .and(warp::get())
        .and(page_staff(state))
        .and(warp::query::<HashMap<String, String>>())
        .then(show_preview);
    queue.or(preview).unify()
}

/// One lead of a pair, as the queue shows it.
struct PairSide {
    id: i64,
    title: String,
    status: String,
    owner: String,
    emails: Vec<String>,
    phones: Vec<String>,
    last_chat: String,
}

impl PairSide {
    fn of(card: &LeadCard) -> PairSide {
        PairSide {
            id: card.id,
            title: title(card.id, card.name.as_deref()),
            status: card.status.clone(),
            owner: card.owner.clone().unwrap_or_else(|| "nobody".into()),
            emails: card.emails.iter().map(|c| c.value.clone()).collect(),
            phones: card.phones.iter().map(|c| c.value.clone()).collect(),
            last_chat: match &card.last_chat {
                Some((platform, chat, at)) => format!("{platform} chat {chat}, {}", when(at)),
                None => "none".into(),
            },
        }
    }
}

/// A pair on the queue page.
struct Row {
    lead: i64,
    other: i64,
    /// The older lead, then the newer.
    sides: [PairSide; 2],
    percent: u32,
    reason: String,
}

/// `GET /duplicates`.
#[derive(Template)]
#[template(path = "duplicates.html")]
struct QueuePage {
    q: &'static str,
    account: Option<Account>,
    rows: Vec<Row>,
    next: Option<String>,
    /// The CSRF token, when the user may act.
    csrf: Option<String>,
}

async fn show_queue(
    user: Result<(Arc<AppState>, PageUser), Response>,
    params: HashMap<String, String>,
) -> Response {
    let (state, user) = match user {
        Ok(user) => user,
        Err(page) => return page,
    };
    let after = params.get("cursor").and_then(|c| {
        let mut parts = c.split(':');
        Some((
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
        ))
    });
    let (pairs, next) = match state.db.duplicate_pairs(after, 20).await {
        Ok(found) => found,
        Err(e) => return error_page(&ApiError::from(e)),
    };
    let rows = pairs
        .iter()
        .map(|p: &Pair| Row {
            lead: p.lead,
            other: p.other,
            sides: [PairSide::of(&p.lead_card), PairSide::of(&p.other_card)],
            percent: (p.score * 100.0).round().clamp(0.0, 100.0) as u32,
            reason: p.reason.clone(),
        })
        .collect();
    let page = QueuePage {
        q: "",
        account: Account::of(&user),
        rows,
        next: next.map(|(s, a, b)| format!("{s}:{a}:{b}")),
        csrf: Role::can_work(user.staff.role).then(|| user.csrf.clone()),
    };
    render(StatusCode::OK, &page)
}

/// One value a merge chooses, on the preview page.
struct Choice {
    field: &'static str,
    this: String,
    other: String,
    value: String,
    from_other: bool,
}

/// `GET /leads/{id}/merge?other=B`.
#[derive(Template)]
#[template(path = "merge.html")]
struct PreviewPage<'a> {
    q: &'static str,
    account: Option<Account>,
    survivor: i64,
    absorbed: i64,
    this_title: String,
    other_title: String,
    merged_title: String,
    choices: Vec<Choice>,
    moves: &'a LeadView,
    merged: &'a LeadView,
    csrf: Option<String>,
}

fn shown(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

async fn show_preview(
    id: String,
    user: Result<(Arc<AppState>, PageUser), Response>,
    params: HashMap<String, String>,
) -> Response {
    let (state, user) = match user {
        Ok(user) => user,
        Err(page) => return page,
    };
    let (Some(id), Some(other)) = (
        id.parse::<i64>().ok().filter(|id| *id > 0),
        params
            .get("other")
            .and_then(|o| o.parse::<i64>().ok())
            .filter(|o| *o > 0),
    ) else {
        return error_page(&ApiError::NotFound);
    };
    let keep = match keep_of(|k| params.get(k).cloned()) {
        Ok(keep) => keep,
        Err(e) => return error_page(&ApiError::BadRequest(e)),
    };
    let preview: Preview = match state.db.merge_preview(id, other, keep).await {
        Ok(preview) => preview,
        Err(e) => return error_page(&ApiError::from(e)),
    };
    let choices = preview
        .fields
        .iter()
        .map(|f| Choice {
            field: f.field,
            this: shown(&f.this),
            other: shown(&f.other),
            value: shown(&f.value),
            from_other: f.from == Side::Other,
        })
        .collect();
    let page = PreviewPage {
        q: "",
        account: Account::of(&user),
        survivor: id,
        absorbed: other,
        this_title: title(id, preview.this.name.as_deref()),
        other_title: title(other, preview.moves.name.as_deref()),
        merged_title: title(id, preview.lead.name.as_deref()),
        choices,
        moves: &preview.moves,
        merged: &preview.lead,
        csrf: Role::can_work(user.staff.role).then(|| user.csrf.clone()),
    };
    render(StatusCode::OK, &page)
}

/// POST /leads/{id}/merge (`other`, the choices): 303 to the survivor.
pub(super) async fn merge(state: &AppState, user: &PageUser, id: i64, form: &Form) -> Response {
    let Some(other) = form.get("other").and_then(|o| o.parse::<i64>().ok()) else {
        return error_page(&ApiError::BadRequest(
            "other: which lead to merge in".into(),
        ));
    };
    let keep = match keep_of(|k| CHOICES.contains(&k).then(|| form.get(k).cloned()).flatten()) {
        Ok(keep) => keep,
        Err(e) => return error_page(&ApiError::BadRequest(e)),
    };
    match state
        .db
        .merge_leads(
            id,
            other,
            keep,
            user.staff.label(),
            merged_entry(&user.staff, id, other, user.client),
        )
        .await
    {
        Ok(_) => see_other(&format!("/leads/{id}")),
        Err(e) => error_page(&ApiError::from(e)),
    }
}

/// POST /leads/{id}/unmerge (`lead`): 303 to the restored lead.
pub(super) async fn unmerge(state: &AppState, user: &PageUser, id: i64, form: &Form) -> Response {
    let Some(lead) = form.get("lead").and_then(|o| o.parse::<i64>().ok()) else {
        return error_page(&ApiError::BadRequest("lead: which lead to restore".into()));
    };
    let region = state.config().merge.default_region;
    match state
        .db
        .unmerge_lead(
            id,
            lead,
            user.staff.label(),
            region,
            unmerged_entry(&user.staff, id, lead, user.client),
        )
        .await
    {
        Ok(_) => see_other(&format!("/leads/{lead}")),
        Err(e) => error_page(&ApiError::from(e)),
    }
}

/// POST /leads/{id}/duplicates/{other}/dismiss: 303 back to the queue.
pub(super) async fn dismiss(
    state: &AppState,
    user: &PageUser,
    id: i64,
    other: i64,
    _form: &Form,
) -> Response {
    match state
        .db
        .dismiss_duplicate(
            id,
            other,
            user.staff.label(),
            dismissed_entry(&user.staff, id, other, user.client),
        )
        .await
    {
        Ok(()) => see_other("/duplicates"),
        Err(e) => error_page(&ApiError::from(e)),
    }
}
