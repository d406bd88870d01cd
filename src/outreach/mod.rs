//! Reaching residents: message templates and the channels that carry them; the outbox,
//! planner and dispatch workers build on these.

pub mod channel;
pub mod signing;
pub mod templates;

pub use channel::{
    Channel, EmailChannel, JasminChannel, LogChannel, Outgoing, Recipient, SendError, Sent,
};
pub use templates::{Locale, MessageContext, MessageKind, Sms, TemplateError, Templates};
