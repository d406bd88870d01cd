//! Reaching residents: message templates and the channels that carry them; the outbox,
//! planner and dispatch workers build on these.

pub mod callbacks;
pub mod channel;
pub mod cloud;
pub mod http_client;
pub mod inbound;
pub mod links;
pub mod outbox;
pub mod signing;
pub mod tasks;
pub mod templates;
pub mod waves;
pub mod webhooks;

pub use channel::{
    Channel, EmailChannel, JasminChannel, LogChannel, Outgoing, Recipient, SendError, Sent,
};
pub use templates::{Locale, MessageContext, MessageKind, Sms, TemplateError, Templates};
