//! The HTTP/1.1 server loop: accepts connections and serves the router on each, with what
//! `axum::serve` cannot be told — a deadline for a request head (a client that sends its
//! request line or headers slowly is cut off) and one for an idle kept-alive connection —
//! and a graceful stop that lets requests in flight finish.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::HttpSettings;

/// Serves `app` on `listener` until `shutdown` is cancelled, then waits (at most
/// `drain`) for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &HttpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let head = Duration::from_secs(settings.header_read_timeout_secs);
    let idle = Duration::from_secs(settings.keep_alive_timeout_secs);
    let drain = Duration::from_secs(settings.request_timeout_secs.saturating_add(5));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let served = Arc::new(AtomicBool::new(false));
        let timer = PhaseTimer {
            served: served.clone(),
            head,
            idle,
        };
        let service = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                served.store(true, Ordering::Relaxed);
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(timer)
            .header_read_timeout(head)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running at shutdown were cut off");
    }
    Ok(())
}

/// Errors of one connection (reset before it was accepted) are nothing; others (out of file
/// descriptors) are logged and waited out a little so the loop does not spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// hyper's only deadline on a server connection is the one for a request head, started
/// whenever the connection waits for one: when it opens and after each response. This
/// timer stretches that deadline to the idle keep-alive one once the connection has served
/// a request, so both settings hold.
#[derive(Clone)]
struct PhaseTimer {
    served: Arc<AtomicBool>,
    head: Duration,
    idle: Duration,
}

impl PhaseTimer {
    fn deadline(&self, deadline: Instant) -> Instant {
        if !self.served.load(Ordering::Relaxed) {
            return deadline;
        }
        deadline
            .checked_sub(self.head)
            .and_then(|start| start.checked_add(self.idle))
            .unwrap_or(deadline)
    }
}

impl Timer for PhaseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        TokioTimer::new().sleep_until(self.deadline(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        TokioTimer::new().reset(sleep, self.deadline(new_deadline));
    }
}
