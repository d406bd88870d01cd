//! What every handler and job can reach: the database, the settings, the throttles, the
//! keys, the templates and the channels. Built by `startup`, used by the edges (HTTP, pages,
//! scheduler); domain code takes the parts it needs, never the whole.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::auth::{LinkThrottle, LoginThrottle};
use crate::config::Settings;
use crate::outreach::Templates;
use crate::privacy::Privacy;
use crate::workers::dispatch::{Channels, Dispatcher};

/// What every handler and job can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    pub throttle: Arc<LoginThrottle>,
    pub privacy: Arc<Privacy>,
    pub templates: Arc<Templates>,
    pub channels: Arc<Channels>,
    /// Codes of residents' links that opened nothing, per client address.
    pub links: Arc<LinkThrottle>,
}

impl AppState {
    /// A dispatch worker over this state's database, channels and settings.
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher::new(
            self.db.clone(),
            self.privacy.clone(),
            self.templates.clone(),
            self.channels.clone(),
            self.settings.messaging.outbox.clone(),
        )
        .with_public_url(self.settings.http.public_url.clone())
    }
}
