//! Black-box tests: the real service on a real socket with a real SQLite file.

mod browser;
mod clients;
mod crash;
mod cross_platform;
mod errors;
mod faults;
mod helpers;
mod hostile;
mod import;
mod jivo;
mod leads_api;
mod livechat;
mod merge;
mod metrics;
mod ops;
mod pages;
mod reload;
mod rocketchat;
mod secrets;
mod whatif;
