//! Black-box tests: the real service on a real socket with a real SQLite file.

mod errors;
mod helpers;
mod jivo;
mod leads_api;
mod merge;
mod metrics;
mod ops;
mod reload;
