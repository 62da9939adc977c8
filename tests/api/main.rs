//! Black-box tests: the real service on a real socket with a real database: a
//! SQLite file, or PostgreSQL when `CRM_TEST_POSTGRES` names a server.

mod audit;
mod browser;
mod clients;
mod crash;
mod cross_platform;
mod duplicates;
mod errors;
mod faults;
mod helpers;
mod hostile;
mod import;
mod instances;
mod jivo;
mod leads_api;
mod livechat;
mod merge;
mod metrics;
mod migrate_store;
mod ops;
mod outbound;
mod pages;
mod pipelining;
mod privacy;
mod reload;
mod retention;
mod rocketchat;
mod secrets;
mod signin;
mod tokens;
mod whatif;
mod working;
mod working_pages;
