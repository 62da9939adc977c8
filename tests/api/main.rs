//! Black-box tests: the real service on a real socket with a real SQLite file.

mod clients;
mod crash;
mod errors;
mod faults;
mod helpers;
mod jivo;
mod leads_api;
mod merge;
