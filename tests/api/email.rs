//! The e-mail channel against a real SMTP server (aiosmtpd, started here), the message read
//! back from its mailbox with Python's own e-mail parser.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outreach::outreach::channel::{SmtpSecurity, SmtpSettings};
use outreach::outreach::{
    Channel, EmailChannel, Locale, MessageContext, MessageKind, Outgoing, Recipient, SendError,
    Templates,
};

/// A local SMTP server (aiosmtpd) writing what it receives into a Maildir.
pub struct Smtp {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(dir.path().join("Maildir"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (installed by .ci/run)");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "aiosmtpd did not start (pip install aiosmtpd)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Smtp { child, port, dir }
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

/// Subject, Message-ID and the plain-text body of the one message in the mailbox.
fn read_mailbox(smtp: &Smtp) -> (String, String, String, String) {
    let new = smtp.dir.path().join("Maildir/new");
    let started = Instant::now();
    let file = loop {
        let files: Vec<_> = std::fs::read_dir(&new)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        if let Some(file) = files.into_iter().next() {
            break file;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no mail arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let script = "import email, email.policy, sys\n\
                  m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)\n\
                  print(m['subject']); print(m['message-id']); print(m['to'])\n\
                  print(m.get_body(('plain',)).get_content().strip())";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines();
    let subject = lines.next().unwrap().to_owned();
    let id = lines.next().unwrap().to_owned();
    let to = lines.next().unwrap().to_owned();
    let body = lines.collect::<Vec<_>>().join("\n");
    (subject, id, to, body)
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
