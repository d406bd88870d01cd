//! A local stand-in for the Jasmin SMS gateway's HTTP API (`POST /send`), for the
//! benchmark's `dispatch` scenario: it checks the credentials, the UCS-2 content and the
//! number as Jasmin does, and counts the messages it received, refused, and received twice
//! for one number (the benchmark sends each number one message).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::http::StatusCode;
use tokio_util::sync::CancellationToken;

/// The credentials the stand-in accepts.
pub const SINK_USER: &str = "bench";
pub const SINK_PASSWORD: &str = "bench-sink-password";

/// What the stand-in gateway saw.
#[derive(Default)]
struct SinkCounts {
    received: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    seen: Mutex<HashSet<u64>>,
}

impl SinkCounts {
    fn reset(&self) {
        self.received.store(0, Ordering::SeqCst);
        self.duplicates.store(0, Ordering::SeqCst);
        self.rejected.store(0, Ordering::SeqCst);
        self.seen.lock().expect("sink lock").clear();
    }
}

/// A local HTTP server answering like Jasmin's `POST /send` on its own runtime and threads,
/// stopped when dropped.
pub struct Sink {
    addr: SocketAddr,
    counts: Arc<SinkCounts>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    pub fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(SinkCounts::default());
        let stop = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sink")
            .enable_all()
            .build()?;
        let app = axum::Router::new()
            .route("/send", axum::routing::post(sink_send))
            .with_state(counts.clone());
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a bound listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stopped.cancelled().await })
                    .await;
            });
        });
        Ok(Self {
            addr,
            counts,
            stop,
            thread: Some(thread),
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:40123` (the gateway URL to configure).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> u64 {
        self.counts.received.load(Ordering::SeqCst)
    }

    pub fn duplicates(&self) -> u64 {
        self.counts.duplicates.load(Ordering::SeqCst)
    }

    pub fn rejected(&self) -> u64 {
        self.counts.rejected.load(Ordering::SeqCst)
    }

    /// Forgets what it saw, for the next run.
    pub fn reset(&self) {
        self.counts.reset();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// UTF-16BE from hex, as Jasmin reads `hex-content` with `coding=8`; `None` for anything
/// that is not whole, valid UTF-16.
fn utf16be_from_hex(hex: &str) -> Option<String> {
    if hex.is_empty() || !hex.len().is_multiple_of(4) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    let units = hex
        .as_bytes()
        .chunks(4)
        .map(|c| {
            c.iter()
                .try_fold(0u32, |acc, b| Some(acc * 16 + digit(*b)?))
                .map(|u| u as u16)
        })
        .collect::<Option<Vec<u16>>>()?;
    String::from_utf16(&units).ok()
}

/// `86` and a mainland mobile number.
fn mobile_of(to: &str) -> Option<u64> {
    let digits = to.strip_prefix("86")?;
    let valid = digits.len() == 11
        && digits.starts_with('1')
        && matches!(digits.as_bytes()[1], b'3'..=b'9')
        && digits.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| digits.parse().ok()).flatten()
}

async fn sink_send(
    State(counts): State<Arc<SinkCounts>>,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, String) {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let refuse = |status, why: &str| {
        counts.rejected.fetch_add(1, Ordering::Relaxed);
        (status, format!("Error \"{why}\""))
    };
    if field("username") != SINK_USER || field("password") != SINK_PASSWORD {
        return refuse(StatusCode::FORBIDDEN, "Authentication failure");
    }
    if field("coding") != "8" {
        return refuse(StatusCode::BAD_REQUEST, "coding must be 8 (UCS2)");
    }
    if utf16be_from_hex(field("hex-content")).is_none_or(|text| text.trim().is_empty()) {
        return refuse(StatusCode::BAD_REQUEST, "hex-content is not UTF-16BE");
    }
    let Some(to) = mobile_of(field("to")) else {
        return refuse(StatusCode::BAD_REQUEST, "to is not a mobile number");
    };
    counts.received.fetch_add(1, Ordering::Relaxed);
    if !counts.seen.lock().expect("sink lock").insert(to) {
        counts.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    (
        StatusCode::OK,
        format!("Success \"{}\"", uuid::Uuid::new_v4()),
    )
}

#[cfg(test)]
mod tests {
    use outreach::outreach::channel::ucs2_hex;

    use super::*;

    #[test]
    fn the_sink_reads_what_the_channel_writes() {
        let text = "【全民健康体检】居民您好，𠀀回TD退订";
        assert_eq!(utf16be_from_hex(&ucs2_hex(text)).as_deref(), Some(text));
        assert_eq!(utf16be_from_hex(""), None);
        assert_eq!(utf16be_from_hex("4f5"), None);
        assert_eq!(utf16be_from_hex("zz53"), None);
        // A lone high surrogate is not text.
        assert_eq!(utf16be_from_hex("d840"), None);
        assert_eq!(mobile_of("8613900000001"), Some(13_900_000_001));
        assert_eq!(mobile_of("13900000001"), None);
        assert_eq!(mobile_of("8612900000001"), None);
    }
}
