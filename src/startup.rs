//! Building and running the application: one code path for production and for tests.
//! `Application::build` binds (port 0 in tests) and `run_until_stopped` serves the HTTP API
//! and runs the scheduler under one shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::LoginThrottle;
use crate::config::Settings;
use crate::outreach::Templates;
use crate::privacy::Privacy;
use crate::scheduler::Scheduler;
use crate::state::AppState;
use crate::workers::dispatch::{Channels, Dispatcher};
use crate::{db, http};

/// The message templates: built in, or the configured folder; a broken template stops
/// start-up with its file and line.
pub fn load_templates(settings: &crate::config::MessagingSettings) -> anyhow::Result<Templates> {
    let loaded = match &settings.templates_dir {
        Some(dir) => Templates::from_dir(dir, &settings.sms_signature),
        None => Templates::embedded(&settings.sms_signature),
    };
    loaded.map_err(|e| anyhow::anyhow!("message template unusable: {e}"))
}

/// A dispatch worker for `settings` over `db`, without the HTTP side.
pub fn dispatcher_for(settings: &Settings, db: DatabaseConnection) -> anyhow::Result<Dispatcher> {
    let privacy = Arc::new(Privacy::load(settings)?);
    let templates = Arc::new(load_templates(&settings.messaging)?);
    let channels = Arc::new(Channels::from_settings(&settings.messaging, &db, &privacy)?);
    Ok(Dispatcher::new(
        db,
        privacy,
        templates,
        channels,
        settings.messaging.outbox.clone(),
    )
    .with_public_url(settings.http.public_url.clone()))
}

pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    scheduler: Scheduler,
}

/// Installs the metrics recorder when the settings expose the metrics, and binds
/// `metrics.bind` when set.
pub async fn metrics_listener(settings: &Settings) -> anyhow::Result<Option<TcpListener>> {
    if !http::metrics::exposed(&settings.metrics) {
        return Ok(None);
    }
    crate::telemetry::metrics::install();
    let Some(bind) = settings.metrics.bind else {
        return Ok(None);
    };
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (metrics.bind)"))?;
    Ok(Some(listener))
}

impl Application {
    /// Opens and migrates the configured database, then binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.check().map_err(anyhow::Error::msg)?;
        let db = db::connect_and_migrate(&settings).await?;
        Self::build_with_db(settings, db).await
    }

    /// Binds with an already opened and migrated database.
    pub async fn build_with_db(settings: Settings, db: DatabaseConnection) -> anyhow::Result<Self> {
        settings.check().map_err(anyhow::Error::msg)?;
        let scheduler = Scheduler::from_settings(&settings.scheduler)?;
        crate::report::bulletin::check_settings(&settings.reports.bulletins)?;
        let privacy = Arc::new(Privacy::load(&settings)?);
        let templates = Arc::new(load_templates(&settings.messaging)?);
        let channels = Arc::new(Channels::from_settings(&settings.messaging, &db, &privacy)?);
        let listener = TcpListener::bind(settings.bind)
            .await
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        let metrics_listener = metrics_listener(&settings).await?;
        let state = AppState {
            throttle: Arc::new(LoginThrottle::new(&settings.auth)),
            links: Arc::new(crate::auth::LinkThrottle::default()),
            privacy,
            templates,
            channels,
            settings: Arc::new(settings),
            db,
        };
        Ok(Self {
            listener,
            metrics_listener,
            state,
            scheduler,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The port of the metrics listener of its own, when `metrics.bind` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        let addr = self.metrics_listener.as_ref()?.local_addr().ok()?;
        Some(addr.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests. The scheduler
    /// runs beside the server; whichever stops first is logged with its reason and stops
    /// the other.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let app = http::router(self.state.clone(), crate::web::router());
        let http_settings = self.state.settings.http.clone();
        let server_shutdown = shutdown.clone();
        let listener = self.listener;
        let server =
            async move { http::serve::serve(listener, app, &http_settings, server_shutdown).await };
        let scheduler = self.scheduler.run(self.state.clone(), shutdown.clone());
        if http::metrics::exposed(&self.state.settings.metrics) {
            let metrics = http::metrics::run(
                self.metrics_listener,
                self.state.db.clone(),
                self.state.settings.metrics.token.clone(),
                self.state.settings.http.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = metrics.await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        // Dispatch workers run beside the server unless `outreach dispatch` runs them apart.
        let dispatcher = self.state.dispatcher();
        let dispatching = self.state.settings.messaging.outbox.dispatch;
        let dispatch_shutdown = shutdown.clone();
        let dispatch = tokio::spawn(async move {
            if dispatching {
                dispatcher.run(dispatch_shutdown).await;
            }
        });
        tokio::pin!(server, scheduler);
        let mut server_done = false;
        let mut scheduler_done = false;
        while !(server_done && scheduler_done) {
            tokio::select! {
                result = &mut server, if !server_done => {
                    server_done = true;
                    match &result {
                        Ok(()) => tracing::info!("http server stopped"),
                        Err(e) => tracing::error!(error = %e, "http server failed"),
                    }
                    shutdown.cancel();
                    result.context("http server")?;
                }
                () = &mut scheduler, if !scheduler_done => {
                    scheduler_done = true;
                    tracing::info!("scheduler stopped");
                    shutdown.cancel();
                }
            }
        }
        // The round in progress records its sends before the process ends.
        if let Err(e) = dispatch.await {
            tracing::error!(error = %e, "dispatch worker failed");
        }
        Ok(())
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM. The handlers are registered before this returns,
/// so a signal that arrives right after start-up is never lost to the default action.
pub fn shutdown_on_signals(token: CancellationToken) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("Ctrl-C received, shutting down"),
                _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            }
            token.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received, shutting down");
        token.cancel();
    });
    Ok(())
}
