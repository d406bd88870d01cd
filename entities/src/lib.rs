//! Database tables of the outreach service, one module per table, in the shape sea-orm's
//! code generator writes. Data only: the rules live in the `outreach` crate.

pub mod areas;
pub mod audit_log;
pub mod auth_tokens;
pub mod job_runs;
pub mod residents;
pub mod users;
