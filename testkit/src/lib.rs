//! Fakes for the tests and benchmarks of outreach, kept out of the service's binary: local
//! stand-ins for the message providers that check what the real ones check.

pub mod jasmin;
pub mod standin;
