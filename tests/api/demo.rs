//! `outreach demo` as a newcomer runs it: built on an empty directory, then served again from
//! it, with every stage of the campaign, the closed days, the refusal review queue and the
//! waves filled, and every printed login working. (The demo keeps its own SQLite database.)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn demo(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_outreach"));
    command
        .arg("demo")
        .arg("--dir")
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env_remove("OUTREACH_PRIVACY__KEY")
        .env_remove("RUST_LOG");
    command
}

/// The (role, username, password) lines the demo prints under its logins header.
fn logins(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("登录账户"))
        .skip(1)
        .map_while(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (l.starts_with("  ") && fields.len() == 4).then(|| {
                (
                    fields[0].to_owned(),
                    fields[1].to_owned(),
                    fields[2].to_owned(),
                )
            })
        })
        .collect()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> Value {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_demo_fills_every_stage_and_its_logins_work() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("outreach-demo");
    let built = demo(&dir)
        .args(["--residents", "2000", "--seed", "7", "--no-serve"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&built.stdout).to_string();
    assert!(
        built.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let printed = logins(&stdout);
    let roles: Vec<&str> = printed.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(
        roles,
        ["office", "township", "cadre", "institution", "auditor"],
        "{stdout}"
    );
    for (_, _, password) in &printed {
        assert!(password.len() >= 12, "{password}");
        assert!(password.bytes().any(|b| b.is_ascii_digit()), "{password}");
        assert!(
            password.bytes().any(|b| b.is_ascii_lowercase()),
            "{password}"
        );
        assert!(
            password.bytes().any(|b| b.is_ascii_uppercase()),
            "{password}"
        );
    }
    assert!(dir.join("outreach.db").exists());
    assert!(dir.join("outreach.key").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("logins.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Started again on the same directory, it reuses the data and serves it.
    let mut child = demo(&dir)
        .args(["--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut served = String::new();
    let base = loop {
        let line = receiver
            .recv_timeout(Duration::from_secs(60).saturating_sub(started.elapsed()))
            .expect("the demo prints the address it serves on");
        served.push_str(&line);
        served.push('\n');
        if let Some(at) = line.find("http://") {
            break line[at..].trim().to_owned();
        }
    };
    // The logins follow the address.
    while logins(&served).len() < 5 {
        let line = receiver.recv_timeout(Duration::from_secs(10)).unwrap();
        served.push_str(&line);
        served.push('\n');
    }
    assert_eq!(logins(&served), printed);

    let client = outreach::outreach::http_client::builder().build().unwrap();
    let mut tokens = Vec::new();
    for (role, username, password) in &printed {
        let response = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{role} {username}");
        let body: Value = response.json().await.unwrap();
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }
    let office = &tokens[0];

    let campaigns = get(&client, &format!("{base}/api/v1/campaigns"), office).await;
    let campaign = &campaigns["campaigns"][0];
    assert_eq!(campaign["status"], "open", "{campaigns}");
    let id = campaign["id"].as_i64().unwrap();
    let api = format!("{base}/api/v1/campaigns/{id}");

    let progress = get(&client, &format!("{api}/reports/progress?by=none"), office).await;
    let total = &progress["total"];
    for stage in [
        "notified",
        "reached",
        "appointed",
        "examined",
        "examined_elsewhere",
        "refused",
        "exempt",
    ] {
        assert!(total[stage].as_i64().unwrap() > 0, "{stage} in {total}");
    }
    assert!(total["examined"].as_i64().unwrap() > 500, "{total}");

    // Several weeks of closed days, the exams growing over them.
    let series = get(&client, &format!("{api}/reports/series?days=30"), office).await;
    let points = series["points"].as_array().unwrap();
    assert!(points.len() >= 30, "{series}");
    let examined = |p: &Value| p["examined"].as_i64().unwrap();
    assert!(examined(&points[0]) > 0, "{series}");
    assert!(
        examined(&points[0]) < examined(&points[points.len() - 2]),
        "{series}"
    );
    assert!(series["pending_days"].as_array().unwrap().is_empty());

    // The refusal review queue: pending, confirmed and returned registrations.
    let register = get(&client, &format!("{api}/refusals"), office).await;
    for status in ["pending", "confirmed", "returned"] {
        assert!(
            register["by_status"][status].as_u64().unwrap_or(0) > 0,
            "{status} in {}",
            register["by_status"]
        );
    }

    // Waves in each state: sent (their messages delivered through the log channel), one
    // sending (held in part by the daily cap until tomorrow), one waiting, one cancelled —
    // whatever the hour the demo was built at.
    let waves = get(&client, &format!("{api}/waves"), office).await;
    let waves = waves.as_array().unwrap();
    assert_eq!(waves.len(), 6, "{waves:?}");
    for status in ["done", "sending", "planned", "cancelled"] {
        assert!(
            waves.iter().any(|w| w["status"] == status),
            "{status} in {waves:?}"
        );
    }
    let contacts = get(&client, &format!("{api}/reports/contacts"), office).await;
    assert!(
        contacts.to_string().contains("\"log\""),
        "messages delivered through the log channel: {contacts}"
    );

    // Every role sees its own part: the cadre her village, the clinic its appointments.
    let cadre = get(
        &client,
        &format!("{api}/reports/progress?by=none"),
        &tokens[2],
    )
    .await;
    let village = cadre["total"]["population"].as_i64().unwrap();
    assert!(village > 0 && village < total["population"].as_i64().unwrap());
    // The county hospital's staff see today's appointments, some already attended.
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let clinic = get(
        &client,
        &format!("{api}/appointments?day={today}&limit=500"),
        &tokens[3],
    )
    .await;
    let statuses: Vec<&str> = clinic["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"booked"), "{clinic}");
    assert!(statuses.contains(&"attended"), "{clinic}");
    drop(server);
}
