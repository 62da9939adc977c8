//! The reads the pages and the API ask for, named, so that handlers never
//! hold a connection or assemble store calls themselves.

use super::search::filters::{self, LeadFilter, StatusCounts};
use super::search::{self, Cursor, Hit, Query};
use super::view::{self, Found, LeadCard, LeadView};
use super::{Db, DbError, leads};

impl Db {
    /// The lead `id` as the API shows it (or where it was merged into).
    pub async fn lead(&self, id: i64) -> Result<Found, DbError> {
        self.read(move |conn| view::lead(conn, id)).await
    }

    /// The lead `id` for its page, and `from` when that lead really was
    /// folded into this one (the page then says so).
    pub async fn lead_page(
        &self,
        id: i64,
        from: Option<i64>,
    ) -> Result<(Found, Option<i64>), DbError> {
        self.read(move |conn| {
            let found = view::lead(conn, id)?;
            let folded = match from {
                Some(from) if from != id && leads::survivor(conn, from)? == id => Some(from),
                _ => None,
            };
            Ok((found, folded))
        })
        .await
    }

    /// The leads a search finds, whole, and the cursor of the next page.
    pub async fn search_leads(
        &self,
        query: Query,
        region: phonenumber::country::Id,
    ) -> Result<(Vec<Box<LeadView>>, Option<Cursor>), DbError> {
        self.read(move |conn| {
            let (hits, next) = search::search(conn, &query, region)?;
            let mut leads = Vec::with_capacity(hits.len());
            for hit in hits {
                if let Found::Lead(lead) = view::lead(conn, hit.id)? {
                    leads.push(lead);
                }
            }
            Ok((leads, next))
        })
        .await
    }

    /// What a search finds, each hit with its lead's card, and the cursor
    /// of the next page.
    pub async fn search_cards(
        &self,
        query: Query,
        region: phonenumber::country::Id,
    ) -> Result<(Vec<(Hit, LeadCard)>, Option<Cursor>), DbError> {
        self.read(move |conn| {
            let (hits, next) = search::search(conn, &query, region)?;
            let mut rows = Vec::with_capacity(hits.len());
            for hit in hits {
                let card = view::card(conn, hit.id, None)?;
                rows.push((hit, card));
            }
            Ok((rows, next))
        })
        .await
    }

    /// The leads a filtered list (and search) shows, whole, the cursor of
    /// the next page, and the counts per status under the same filters but
    /// the status.
    pub async fn list_leads(
        &self,
        filter: LeadFilter,
        region: phonenumber::country::Id,
    ) -> Result<(Vec<Box<LeadView>>, Option<Cursor>, StatusCounts), DbError> {
        self.read(move |conn| {
            let (hits, next, counts) = filters::list(conn, &filter, region)?;
            let mut leads = Vec::with_capacity(hits.len());
            for hit in hits {
                if let Found::Lead(lead) = view::lead(conn, hit.id)? {
                    leads.push(lead);
                }
            }
            Ok((leads, next, counts))
        })
        .await
    }

    /// [`Db::list_leads`] for the list page: each hit with its lead's card.
    pub async fn list_cards(
        &self,
        filter: LeadFilter,
        region: phonenumber::country::Id,
    ) -> Result<(Vec<(Hit, LeadCard)>, Option<Cursor>, StatusCounts), DbError> {
        self.read(move |conn| {
            let (hits, next, counts) = filters::list(conn, &filter, region)?;
            let mut rows = Vec::with_capacity(hits.len());
            for hit in hits {
                let card = view::card(conn, hit.id, None)?;
                rows.push((hit, card));
            }
            Ok((rows, next, counts))
        })
        .await
    }
}
