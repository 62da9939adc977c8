//! The CRM core: identity, normalisation, merge policy and duplicate scoring.
//! Pure logic, no I/O; storage calls it inside its transactions.

pub mod card;
pub mod duplicates;
pub mod explain;
pub mod identity;
pub mod merge;
pub mod resolve;
