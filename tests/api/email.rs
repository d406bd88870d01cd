//! The e-mail channel against a real SMTP server run in the test process (mailin-embedded),
//! the message read back as the server received it and parsed with a MIME parser.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mail_parser::{Message, MessageParser};
use outreach::outreach::channel::{SmtpSecurity, SmtpSettings};
use outreach::outreach::{
    Channel, EmailChannel, Locale, MessageContext, MessageKind, Outgoing, Recipient, SendError,
    Templates,
};

/// A local SMTP server keeping every message it accepts, in the order they arrived. It runs
/// on its own threads until the test process ends.
pub struct Smtp {
    pub port: u16,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Smtp {
    /// The messages accepted so far, as the server received them (headers and body).
    pub fn mails(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `count` messages have arrived and returns them all.
    pub fn wait_for(&self, count: usize) -> Vec<Vec<u8>> {
        let started = Instant::now();
        loop {
            let mails = self.mails();
            if mails.len() >= count {
                return mails;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{} of {count} mails arrived",
                mails.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One SMTP session's message being received; the server clones it for each connection.
#[derive(Clone)]
struct Mailbox {
    data: Vec<u8>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl mailin_embedded::Handler for Mailbox {
    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> mailin_embedded::Response {
        self.data.clear();
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        let message = std::mem::take(&mut self.data);
        self.received.lock().unwrap().push(message);
        mailin_embedded::response::OK
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn start_smtp() -> Smtp {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut server = mailin_embedded::Server::new(Mailbox {
        data: Vec::new(),
        received: received.clone(),
    });
    server
        .with_name("smtp.test")
        .with_num_threads(2)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        if let Err(error) = server.serve() {
            panic!("the SMTP server stopped: {error}");
        }
    });
    Smtp { port, received }
}

/// A received message parsed as a mail client would read it.
pub fn parse(raw: &[u8]) -> Message<'_> {
    MessageParser::default()
        .parse(raw)
        .expect("a well-formed message")
}

/// The `To` header as written, addresses joined by ", ".
pub fn to_header(message: &Message<'_>) -> String {
    message
        .to()
        .map(|to| {
            to.iter()
                .filter_map(|a| a.address())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Plain SMTP to the local server, sending as the county office.
pub fn settings(port: u16) -> SmtpSettings {
    SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "新源县卫健委 <tijian@xinyuan.example>".into(),
        timeout_secs: 5,
    }
}

/// Subject, Message-ID, recipients and the plain-text body of the one message received.
fn read_mailbox(smtp: &Smtp) -> (String, String, String, String) {
    let mails = smtp.wait_for(1);
    assert_eq!(mails.len(), 1);
    let message = parse(&mails[0]);
    (
        message.subject().unwrap_or_default().to_owned(),
        format!("<{}>", message.message_id().unwrap_or_default()),
        to_header(&message),
        message.body_text(0).unwrap_or_default().trim().to_owned(),
    )
}

#[tokio::test]
async fn a_notice_reaches_a_real_smtp_server_with_its_key_as_message_id() {
    let smtp = start_smtp();
    let channel = EmailChannel::new(&settings(smtp.port)).unwrap();
    let templates = Templates::embedded("新源县卫健委").unwrap();
    let text = templates
        .render(
            MessageKind::AppointmentNotice,
            Locale::ZhCn,
            &MessageContext::sample(),
        )
        .unwrap();
    let recipient = Recipient::Email("zhangsan@example.org".into());
    assert!(channel.reaches(&recipient));
    assert!(!channel.reaches(&Recipient::Phone("13812345678".into())));
    let sent = channel
        .send(&Outgoing {
            idempotency_key: "appointment_notice.a42.2026-12-31".into(),
            kind: MessageKind::AppointmentNotice,
            recipient,
            title: MessageKind::AppointmentNotice.title().into(),
            text: text.clone(),
            context: MessageContext::sample(),
        })
        .await
        .expect("the server takes it");
    assert_eq!(sent.provider, "smtp");
    let (subject, id, to, body) = read_mailbox(&smtp);
    assert_eq!(subject, "体检预约通知");
    assert_eq!(id, "<appointment_notice.a42.2026-12-31@xinyuan.example>");
    assert_eq!(sent.provider_message_id, id);
    assert_eq!(to, "zhangsan@example.org");
    assert_eq!(body, text);
    assert!(body.contains("禁食"));
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_failure_and_a_bad_address_a_permanent_one() {
    let channel = EmailChannel::new(&settings(free_port())).unwrap();
    let message = |to: &str| Outgoing {
        idempotency_key: "k1".into(),
        kind: MessageKind::SameDayReminder,
        recipient: Recipient::Email(to.into()),
        title: "今日体检提醒".into(),
        text: "今天请来体检".into(),
        context: MessageContext::sample(),
    };
    match channel.send(&message("lisi@example.org")).await {
        Err(SendError::Transient(_)) => {}
        other => panic!("expected a transient failure, got {other:?}"),
    }
    match channel.send(&message("not an address")).await {
        Err(SendError::Permanent(_)) => {}
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

/// A key with colons (a wave's) still gives a Message-ID a strict parser reads whole: the
/// colons are written `=3A`, the key can still be read from it.
#[tokio::test]
async fn a_waves_key_becomes_a_valid_message_id() {
    let smtp = start_smtp();
    let channel = EmailChannel::new(&settings(smtp.port)).unwrap();
    let sent = channel
        .send(&Outgoing {
            idempotency_key: "migrant_wave:r1487:w1:2026-12-07".into(),
            kind: MessageKind::MigrantWave,
            recipient: Recipient::Email("wangwu@example.org".into()),
            title: MessageKind::MigrantWave.title().into(),
            text: "回乡体检通知".into(),
            context: MessageContext::sample(),
        })
        .await
        .expect("the server takes it");
    let (_, id, _, _) = read_mailbox(&smtp);
    assert_eq!(
        id,
        "<migrant_wave=3Ar1487=3Aw1=3A2026-12-07@xinyuan.example>"
    );
    assert_eq!(sent.provider_message_id, id);
    assert_eq!(sent.provider, "smtp");
}
