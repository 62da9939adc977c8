//! crm-responder: the webhook that JivoChat, Rocket.Chat and LiveChat call,
//! and the small CRM behind it.
//!
//! Data flows one way: platform payload → internal [`event::Event`] → CRM
//! decision ([`crm`]) → storage ([`store`]) → platform answer.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`serve`, `check-config`, `hash-password`, and the
//!   operator commands of [`ops`]).
//! - [`config`]: typed `config.toml`, checked once; secrets redacted.
//! - [`app`]: the service, bound on any port, run until a shutdown signal.
//! - [`http`]: routes (one file per endpoint family), auth, sign-in and
//!   sessions (`session.rs`: who is asking, CSRF, role checks), errors, the
//!   serving loop.
//! - [`ingest`]: one delivery from bytes to answer: translate, store and
//!   apply (or spool), answer in the platform's terms.
//! - [`platforms`]: one module per chat platform: wire types → [`event::Event`].
//! - [`event`]: the internal event model every platform translates into.
//! - [`crm`]: identity, normalisation, merge policy, duplicate scoring, and the
//!   explanation of each decision; pure.
//! - [`store`]: SQL written once over [`store::sql::Sql`] for SQLite and
//!   PostgreSQL, and the one async gateway, [`store::Db`], whose named
//!   operations are the reads, staff edits ([`store::edits`]), filtered
//!   lists ([`store::search::filters`]), and merges, folds, dismissals and
//!   unmerges ([`store::merges`], recorded in `merges` so any can be undone).
//! - [`outbound`]: signed outbound webhooks (`[[outbound]]`): signing and
//!   the sending worker; the outbox itself is [`store::outbox`].
//! - [`metrics`]: counters for `/metrics`.
//! - [`password`]: argon2 hashes of `[[sales.users]]`.
//! - [`staff`]: who acts (a sales user or an API token) and what each role may do.
//! - [`ops`]: `import`, `export`, `replay`, `backup`, `explain`, `preview`,
//!   `token`, `migrate-store`, `outbound`, one file each.
//! - [`spool`]: deliveries acknowledged during a storage fault, applied when it ends.
//! - [`privacy`]: who a person is (identifiers), tombstones of erased people
//!   and matching old data against them; the erasure itself is
//!   [`store::erase`], run by [`ops::erase`].
//! - [`audit`]: the audit log: who did what, when, from where (append-only).
//! - [`retention`]: the job that deletes what `[retention]` says is too old.

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod crm;
pub mod event;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod ops;
pub mod outbound;
pub mod password;
pub mod platforms;
pub mod privacy;
pub mod retention;
pub mod spool;
pub mod staff;
pub mod store;
