//! Schema migrations, in order. Each step runs on SQLite and PostgreSQL (a few parts, said
//! where, on one of them only).
//! A landed step is never edited; a change is a new step.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_areas;
mod m20261122_000002_create_users;
mod m20261122_000003_create_audit_log;
mod m20261122_000004_create_job_runs;
mod m20261122_000005_create_residents;
mod m20261123_000006_create_campaigns;
mod m20261123_000007_create_institutions;
mod m20261123_000008_create_appointments;
mod m20261129_000009_create_outbox;
mod m20261129_000010_create_contact_attempts;
mod m20261129_000011_create_refusals;
mod m20261129_000012_create_reports;
mod m20261129_000013_outbox_bulk_planning;
mod m20261207_000030_recount_report_days;
mod m20261207_041601_email_channel_is_smtp;
mod m20261207_041602_create_webhook_nonces;
mod m20261207_050000_attempt_client_keys;
mod m20261207_070000_create_resident_links;
mod m20261207_080000_enrolments_by_village;
mod m20261207_090000_create_client_keys;
mod m20261207_100000_messages_handed_over;
mod m20261207_100100_unconfirmed_messages;
mod m20261207_110000_pending_receipt_keys;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_areas::Migration),
            Box::new(m20261122_000002_create_users::Migration),
            Box::new(m20261122_000003_create_audit_log::Migration),
            Box::new(m20261122_000004_create_job_runs::Migration),
            Box::new(m20261122_000005_create_residents::Migration),
            Box::new(m20261123_000006_create_campaigns::Migration),
            Box::new(m20261123_000007_create_institutions::Migration),
            Box::new(m20261123_000008_create_appointments::Migration),
            Box::new(m20261129_000009_create_outbox::Migration),
            Box::new(m20261129_000010_create_contact_attempts::Migration),
            Box::new(m20261129_000011_create_refusals::Migration),
            Box::new(m20261129_000012_create_reports::Migration),
            Box::new(m20261129_000013_outbox_bulk_planning::Migration),
            Box::new(m20261207_000030_recount_report_days::Migration),
            Box::new(m20261207_041601_email_channel_is_smtp::Migration),
            Box::new(m20261207_041602_create_webhook_nonces::Migration),
            Box::new(m20261207_050000_attempt_client_keys::Migration),
            Box::new(m20261207_070000_create_resident_links::Migration),
            Box::new(m20261207_080000_enrolments_by_village::Migration),
            Box::new(m20261207_090000_create_client_keys::Migration),
            Box::new(m20261207_100000_messages_handed_over::Migration),
            Box::new(m20261207_100100_unconfirmed_messages::Migration),
            Box::new(m20261207_110000_pending_receipt_keys::Migration),
        ]
    }
}
