//! SMS through a Jasmin gateway's HTTP API, against a local stand-in that checks what the
//! gateway checks (credentials, `coding=8`, UTF-16BE hex content, receipt fields) and can be
//! told to fail or to answer slowly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::routing::post;
use outreach::config::Secret;
use outreach::outreach::channel::JasminSettings;
use outreach::outreach::{
    Channel, JasminChannel, MessageContext, MessageKind, Outgoing, Recipient, SendError,
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    Busy,
    Slow,
}

/// A stand-in for a Jasmin gateway's HTTP API: checks the credentials and the UCS-2 content
/// as the gateway does, keeps what it accepted, and can be told to be busy or slow.
#[derive(Clone)]
pub struct Gateway {
    pub mode: Arc<Mutex<Mode>>,
    pub received: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

fn decode_ucs2_hex(hex: &str) -> Option<String> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| Some(u16::from_be_bytes([c[0], *c.get(1)?])))
        .collect::<Option<_>>()?;
    String::from_utf16(&units).ok()
}

async fn send(
    State(gateway): State<Gateway>,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, String) {
    let mode = *gateway.mode.lock().unwrap();
    if mode == Mode::Slow {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if mode == Mode::Busy {
        return (StatusCode::SERVICE_UNAVAILABLE, "Error \"busy\"".into());
    }
    if form.get("username").map(String::as_str) != Some("county")
        || form.get("password").map(String::as_str) != Some("s3cret")
    {
        return (
            StatusCode::FORBIDDEN,
            "Error \"Authentication failure\"".into(),
        );
    }
    let to_ok = form.get("to").is_some_and(|to| {
        to.len() == 13 && to.starts_with("861") && to.bytes().all(|b| b.is_ascii_digit())
    });
    let text = form.get("hex-content").and_then(|h| decode_ucs2_hex(h));
    if !to_ok || form.get("coding").map(String::as_str) != Some("8") || text.is_none() {
        return (StatusCode::BAD_REQUEST, "Error \"bad request\"".into());
    }
    let id = format!("gw-{}", gateway.received.lock().unwrap().len() + 1);
    let mut stored = form.clone();
    stored.insert("text".into(), text.unwrap());
    gateway.received.lock().unwrap().push(stored);
    (StatusCode::OK, format!("Success \"{id}\""))
}

pub async fn start_gateway() -> (String, Gateway) {
    let gateway = Gateway {
        mode: Arc::new(Mutex::new(Mode::Accept)),
        received: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/send", post(send))
        .with_state(gateway.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, gateway)
}

pub fn settings(url: &str, password: &str) -> JasminSettings {
    JasminSettings {
        url: url.to_owned(),
        username: "county".into(),
        password: Secret::new(password),
        dlr_url: Some("http://outreach.example/webhooks/jasmin/dlr".into()),
        timeout_secs: 1,
    }
}

fn message() -> Outgoing {
    Outgoing {
        idempotency_key: "same_day_reminder.a7.2026-12-31".into(),
        kind: MessageKind::SameDayReminder,
        recipient: Recipient::Phone("13812345678".into()),
        title: "今日体检提醒".into(),
        text:
            "【新源县卫健委】阿依古丽您好，今天上午9:30请到卫生院体检，请空腹并带身份证。回TD退订"
                .into(),
        context: MessageContext::sample(),
    }
}

#[tokio::test]
async fn a_chinese_sms_reaches_the_gateway_as_ucs2_with_receipts_requested() {
    let (url, gateway) = start_gateway().await;
    let channel = JasminChannel::new(&settings(&url, "s3cret")).unwrap();
    assert!(channel.reaches(&Recipient::Phone("13812345678".into())));
    assert!(!channel.reaches(&Recipient::Email("a@b.cn".into())));
    let sent = channel.send(&message()).await.expect("accepted");
    assert_eq!(sent.provider, "jasmin");
    assert_eq!(sent.provider_message_id, "gw-1");
    let received = gateway.received.lock().unwrap();
    let form = &received[0];
    assert_eq!(form["text"], message().text);
    assert_eq!(form["to"], "8613812345678");
    assert_eq!(form["dlr"], "yes");
    assert_eq!(form["dlr-level"], "3");
    assert_eq!(
        form["dlr-url"],
        "http://outreach.example/webhooks/jasmin/dlr"
    );
    assert!(!form.contains_key("content"), "no raw UTF-8 content");
}

#[tokio::test]
async fn gateway_refusals_busy_answers_and_timeouts_are_told_apart() {
    let (url, gateway) = start_gateway().await;
    let wrong = JasminChannel::new(&settings(&url, "guess")).unwrap();
    assert!(matches!(
        wrong.send(&message()).await,
        Err(SendError::Permanent(reason)) if reason.contains("403")
    ));
    let channel = JasminChannel::new(&settings(&url, "s3cret")).unwrap();
    *gateway.mode.lock().unwrap() = Mode::Busy;
    assert!(matches!(
        channel.send(&message()).await,
        Err(SendError::Transient(reason)) if reason.contains("503")
    ));
    // A gateway that takes the request and never answers: it may have the message.
    *gateway.mode.lock().unwrap() = Mode::Slow;
    assert!(matches!(
        channel.send(&message()).await,
        Err(SendError::Unknown(_))
    ));
    assert!(gateway.received.lock().unwrap().is_empty());
    let nowhere = JasminChannel::new(&settings("http://127.0.0.1:9", "s3cret")).unwrap();
    assert!(matches!(
        nowhere.send(&message()).await,
        Err(SendError::Transient(_))
    ));
}

/// A gateway that reads the whole request and then drops the connection without a word (it
/// crashed, or a proxy in front of it was restarted): it may have taken the message, so the
/// send is an unknown outcome — a transient error would send it again and could reach the
/// resident twice.
#[tokio::test]
async fn a_gateway_that_drops_the_connection_after_the_request_is_an_unknown_outcome() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let took = Arc::new(Mutex::new(Vec::<String>::new()));
    let kept = took.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            // Headers and the form body, then the connection is dropped unanswered.
            while let Ok(n) = socket.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            kept.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&request).into_owned());
            drop(socket);
        }
    });
    let channel = JasminChannel::new(&settings(&url, "s3cret")).unwrap();
    let sent = channel.send(&message()).await;
    assert!(
        matches!(&sent, Err(SendError::Unknown(_))),
        "a dropped connection after the request: {sent:?}"
    );
    let took = took.lock().unwrap();
    assert_eq!(took.len(), 1, "the request reached the gateway once");
    assert!(took[0].contains("hex-content="), "with the message");
}
