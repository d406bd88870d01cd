//! The background workers: they lease work the flows left in the database and carry it out.
//! `dispatch` sends the outbox's messages through the providers and records what happened.

pub mod dispatch;
