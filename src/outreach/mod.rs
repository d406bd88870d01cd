//! Reaching residents: the message templates now; the outbox, planner, dispatch workers and
//! channels build on them.

pub mod templates;

pub use templates::{Locale, MessageContext, MessageKind, Sms, TemplateError, Templates};
