//! Integration tests: each test spawns the real application on port 0 against a database of
//! its own (a temp SQLite file, or a fresh PostgreSQL database when `TEST_DATABASE_URL` is set).

mod appointments;
mod areas;
mod audit;
mod auth;
mod backup;
mod campaigns;
mod cli;
mod cloud_sms;
mod contact;
mod demo;
mod email;
mod errors;
mod exams;
mod health;
mod helpers;
mod hostile_files;
mod http_hardening;
mod link;
mod messaging;
mod metrics;
mod openapi;
mod ops_pages;
mod pages;
mod refusals;
mod reports;
mod residents;
mod scope_matrix;
mod sms_gateway;
mod storage;
mod templates;
mod users;
mod webhooks;
