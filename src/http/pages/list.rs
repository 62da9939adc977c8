//! `GET /leads`: the list of leads, searched and filtered (status, owner,
//! platform, created since) as `GET /api/leads` is, with how many leads
//! each status holds under the same filters and a "next page" link that
//! keeps them. The filters are links and a GET form, so a list is a URL
//! one can bookmark or send.

use std::sync::Arc;

use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response;

use super::model::{Account, title};
use super::{error_page, rejection_page, render};
use crate::audit::{Entry, action};
use crate::http::AppState;
use crate::http::api::SearchParams;
use crate::http::error::ApiError;
use crate::http::session::{PageUser, encode_component};
use crate::store::search::{Hit, Tier};
use crate::store::view::LeadCard;

/// The platforms a lead can come from, as `source_platform` holds them.
const PLATFORMS: [(&str, &str); 4] = [
    ("jivo", "Jivo"),
    ("rocketchat", "Rocket.Chat"),
    ("livechat", "LiveChat"),
    ("import", "Import"),
];

/// `GET /leads?…`.
#[derive(Template)]
#[template(path = "search.html")]
pub struct ListPage {
    /// The search box's text, trimmed.
    q: String,
    /// Who is signed in.
    account: Option<Account>,
    /// The filters as given (empty: not narrowing).
    status: String,
    owner: String,
    platform: String,
    channel: String,
    campaign: String,
    since: String,
    /// The choices of the filter form.
    statuses: Vec<String>,
    users: Vec<String>,
    platforms: &'static [(&'static str, &'static str)],
    /// `(status, leads, link filtering by it)`, in pipeline order.
    counts: Vec<(String, u64, String)>,
    /// Leads under every status, and the link without a status.
    total: u64,
    all_link: String,
    rows: Vec<ResultRow>,
    /// The next page's link, filters kept.
    next: Option<String>,
    /// Whether any filter narrows the list.
    filtered: bool,
}

/// One lead in the results.
struct ResultRow {
    id: i64,
    title: String,
    status: String,
    email: Option<String>,
    phone: Option<String>,
    chats: i64,
    /// What matched (empty when listing).
    why: String,
}

/// The filters of a list as the page's links repeat them.
struct Given {
    q: String,
    status: String,
    owner: String,
    platform: String,
    channel: String,
    campaign: String,
    since: String,
    open: String,
}

impl Given {
    /// `/leads?…` with these filters, `status` in place of the given one.
    fn link(&self, status: &str, cursor: Option<&str>) -> String {
        let mut parts = Vec::new();
        for (key, value) in [
            ("q", self.q.as_str()),
            ("status", status),
            ("owner", &self.owner),
            ("platform", &self.platform),
            ("channel", &self.channel),
            ("campaign", &self.campaign),
            ("created_since", &self.since),
            ("open", &self.open),
            ("cursor", cursor.unwrap_or_default()),
        ] {
            if !value.is_empty() {
                parts.push(format!("{key}={}", encode_component(value)));
            }
        }
        if parts.is_empty() {
            "/leads".to_owned()
        } else {
            format!("/leads?{}", parts.join("&"))
        }
    }
}

/// Answers `GET /leads` for `user`.
pub async fn show(
    user: Result<(Arc<AppState>, PageUser), Response>,
    params: SearchParams,
) -> Response {
    let (state, user) = match user {
        Ok(user) => user,
        Err(page) => return page,
    };
    let trimmed = |v: &Option<String>| v.as_deref().unwrap_or_default().trim().to_owned();
    let given = Given {
        q: trimmed(&params.q),
        status: trimmed(&params.status),
        owner: trimmed(&params.owner),
        platform: trimmed(&params.platform),
        channel: trimmed(&params.channel),
        campaign: trimmed(&params.campaign),
        since: trimmed(&params.created_since),
        open: trimmed(&params.open),
    };
    let config = state.config();
    let asked = params.for_audit();
    let filter = match params.filter(user.staff.user_name(), &config.pipeline.statuses) {
        Ok(filter) => filter,
        Err(rejection) => return rejection_page(&rejection),
    };
    let listed = state
        .db
        .list_cards(filter, config.merge.default_region)
        .await;
    let (rows, next, found) = match listed {
        Ok(listed) => listed,
        Err(e) => return error_page(&ApiError::from(e)),
    };
    let ids: Vec<i64> = rows.iter().map(|(_, card)| card.id).collect();
    let entry = Entry::by(
        &user.staff,
        action::SEARCH,
        Some(asked.audit_target(&ids)),
        user.client,
    );
    if let Err(e) = state.db.audit(entry).await {
        return error_page(&ApiError::from(e));
    }
    let counts: Vec<(String, u64, String)> = config
        .pipeline
        .statuses
        .iter()
        .map(|status| {
            let n = found
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            (status.clone(), n, given.link(status, None))
        })
        .collect();
    let page = ListPage {
        account: Account::of(&user),
        statuses: config.pipeline.statuses.clone(),
        users: config
            .sales
            .users
            .iter()
            .filter(|u| u.role.can_work())
            .map(|u| u.name.clone())
            .collect(),
        platforms: &PLATFORMS,
        total: counts.iter().map(|(_, n, _)| n).sum(),
        counts,
        all_link: given.link("", None),
        rows: rows.iter().map(row).collect(),
        next: next.map(|n| given.link(&given.status, Some(&n.to_string()))),
        filtered: [
            &given.status,
            &given.owner,
            &given.platform,
            &given.channel,
            &given.campaign,
            &given.since,
            &given.open,
        ]
        .iter()
        .any(|v| !v.is_empty()),
        q: given.q,
        status: given.status,
        owner: given.owner,
        platform: given.platform,
        channel: given.channel,
        campaign: given.campaign,
        since: given.since,
    };
    render(StatusCode::OK, &page)
}

fn row((hit, card): &(Hit, LeadCard)) -> ResultRow {
    ResultRow {
        id: card.id,
        title: title(card.id, card.name.as_deref()),
        status: card.status.clone(),
        email: card.emails.first().map(|e| e.value.clone()),
        phone: card.phones.first().map(|p| p.raw.clone()),
        chats: card.chats,
        why: match hit.tier {
            Tier::Near => format!("{} {:.0}%", hit.why, hit.similarity() * 100.0),
            _ => hit.why.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_filters_and_drop_empty_ones() {
        let given = Given {
            q: "ann lee".into(),
            status: "new".into(),
            owner: "me".into(),
            platform: String::new(),
            channel: String::new(),
            campaign: String::new(),
            since: "2026-01-02".into(),
            open: String::new(),
        };
        assert_eq!(
            given.link("won", Some("12")),
            "/leads?q=ann%20lee&status=won&owner=me&created_since=2026-01-02&cursor=12"
        );
        let none = Given {
            q: String::new(),
            status: String::new(),
            owner: String::new(),
            platform: String::new(),
            channel: String::new(),
            campaign: String::new(),
            since: String::new(),
            open: String::new(),
        };
        assert_eq!(none.link("", None), "/leads");
    }
}
