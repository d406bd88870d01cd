//! Database tables of the outreach service, one module per table, in the shape sea-orm's
//! code generator writes. Data only: the rules live in the `outreach` crate.

pub mod appointments;
pub mod areas;
pub mod audit_log;
pub mod auth_tokens;
pub mod campaigns;
pub mod enrolments;
pub mod exam_records;
pub mod institution_areas;
pub mod institution_days;
pub mod institutions;
pub mod job_runs;
pub mod resident_tags;
pub mod residents;
pub mod users;
