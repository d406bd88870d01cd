//! `outreach backup` and `outreach restore` as an operator runs them: a copy taken while the
//! service keeps writing holds what was committed before it began, restores, migrates and
//! keeps its refusal chains intact; each refuses what it must; on PostgreSQL both point to
//! `pg_dump` / `pg_restore` instead.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use entities::users::Role;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use outreach::auth::Actor;
use outreach::contact::Outcome;

use crate::campaigns::add_resident;
use crate::helpers::{TestApp, TestDb, VILLAGE, postgres_admin_url, resident_id, spawn_app_with};
use crate::refusals::{attempt, enough_contact, strokes};

/// The data key the service and the commands share in these tests.
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// Another valid key: not the one the backup was written with.
const OTHER_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

fn outreach(database_url: &str, key: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_outreach"));
    command
        .env("DATABASE_URL", database_url)
        .env("OUTREACH_LOG__FILTER", "warn")
        .env("OUTREACH_PRIVACY__KEY", key)
        .env_remove("OUTREACH_CONFIG")
        .env_remove("RUST_LOG");
    command
}

fn sqlite_url(file: &Path) -> String {
    format!("sqlite://{}?mode=rwc", file.display())
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn count(db: &impl ConnectionTrait, table: &'static str) -> i64 {
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        format!("SELECT COUNT(*) AS n FROM {table}"),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get::<i64>("", "n")
    .unwrap()
}

/// `VACUUM INTO` is SQLite's; a PostgreSQL database is backed up by `pg_dump`, which the
/// PostgreSQL test below checks the command points to. So this one runs on SQLite only.
#[tokio::test]
async fn a_backup_taken_while_attempts_are_written_restores_with_its_refusal_chains() {
    if postgres_admin_url().is_some() {
        return;
    }
    let app = spawn_app_with(|s| s.privacy.key = Some(outreach::config::Secret::new(KEY))).await;
    app.seed_areas().await;
    let campaign = app.open_campaign().await;
    let (_, cadre) = app.user("cadre.backup", Role::Cadre, VILLAGE).await;
    for n in 1..=3 {
        let resident = add_resident(&app, resident_id(n, "19600101"), VILLAGE, None, None).await;
        enough_contact(&app, campaign, resident).await;
        let mut body = json!({
            "reason": "unwilling",
            "signer_name": "王某某",
            "signer_relation": "self",
            "signature_strokes": strokes(),
        });
        body["location"] = json!({"latitude": 43.43, "longitude": 83.26});
        let registered = app
            .post(
                &format!("/api/v1/campaigns/{campaign}/residents/{resident}/refusals"),
                &cadre,
                body,
            )
            .await;
        assert_eq!(registered.status(), StatusCode::CREATED);
    }
    assert_eq!(count(&app.db, "refusal_records").await, 3);
    let busy = add_resident(&app, resident_id(9, "19700101"), VILLAGE, None, None).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outreach-backup.db");
    // A cadre keeps logging calls while the backup runs; it stops only once the backup is
    // done and a few more calls were recorded after it began.
    let done = AtomicBool::new(false);
    let after_start = AtomicU32::new(0);
    let started = AtomicBool::new(false);
    let writer = async {
        let mut written = 0u32;
        while !done.load(Ordering::SeqCst) || after_start.load(Ordering::SeqCst) < 3 {
            attempt(&app, &Actor::cli(), campaign, busy, 0, Outcome::NoAnswer).await;
            written += 1;
            if started.load(Ordering::SeqCst) {
                after_start.fetch_add(1, Ordering::SeqCst);
            }
        }
        written
    };
    let backup = async {
        while count(&app.db, "contact_attempts").await < 9 + 5 {
            tokio::task::yield_now().await;
        }
        let committed_before = count(&app.db, "contact_attempts").await;
        started.store(true, Ordering::SeqCst);
        let (url, file) = (app_url(&app), file.clone());
        let output = tokio::task::spawn_blocking(move || {
            outreach(&url, KEY)
                .arg("backup")
                .arg(&file)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        done.store(true, Ordering::SeqCst);
        (committed_before, output)
    };
    let (_, (committed_before, output)) = tokio::join!(writer, backup);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("backup written") && said.contains("outreach-backup.db"),
        "{said}"
    );
    assert!(
        said.contains("the data key is NOT inside the backup")
            && said.contains("OUTREACH_PRIVACY__KEY")
            && said.contains("A backup without its key cannot be read"),
        "{said}"
    );
    assert!(!said.contains(KEY), "the key itself is never printed");
    let committed_after = count(&app.db, "contact_attempts").await;
    assert!(committed_after > committed_before);

    // The backup is never overwritten unless asked.
    let again = outreach(&app_url(&app), KEY)
        .arg("backup")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("--force"));

    // Restored elsewhere: with another key it is refused and nothing is written …
    let restored = dir.path().join("restored").join("outreach.db");
    let wrong = outreach(&sqlite_url(&restored), OTHER_KEY)
        .arg("restore")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("not this backup's key"),
        "{}",
        text(&wrong)
    );
    assert!(!restored.exists());
    // … with its key it is put in place, migrated and its chains checked.
    let restore = outreach(&sqlite_url(&restored), KEY)
        .arg("restore")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(restore.status.code(), Some(0), "{}", text(&restore));
    let said = String::from_utf8_lossy(&restore.stdout);
    assert!(
        said.contains("checked 3 records of 3 residents: intact"),
        "{said}"
    );
    let migrate = outreach(&sqlite_url(&restored), KEY)
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(migrate.status.code(), Some(0), "{}", text(&migrate));
    let verify = outreach(&sqlite_url(&restored), KEY)
        .args(["refusals", "verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    let report: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], 3);

    let copy = sea_orm::Database::connect(sqlite_url(&restored))
        .await
        .unwrap();
    let held = count(&copy, "contact_attempts").await;
    assert!(
        (committed_before..=committed_after).contains(&held),
        "the backup holds {held} attempts; {committed_before} were committed before it began, \
         {committed_after} after it ended"
    );
    assert_eq!(count(&copy, "refusal_records").await, 3);
    copy.close().await.unwrap();

    // A second restore over the database is refused without --force.
    let over = outreach(&sqlite_url(&restored), KEY)
        .arg("restore")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(over.status.code(), Some(2), "{}", text(&over));
    assert!(text(&over).contains("--force"));
    // With --force, a newer backup replaces both: the backup file and the restored database.
    let newer = outreach(&app_url(&app), KEY)
        .args(["backup", "--force"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(newer.status.code(), Some(0), "{}", text(&newer));
    let replaced = outreach(&sqlite_url(&restored), KEY)
        .args(["restore", "--force"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(replaced.status.code(), Some(0), "{}", text(&replaced));
    let copy = sea_orm::Database::connect(sqlite_url(&restored))
        .await
        .unwrap();
    assert_eq!(
        count(&copy, "contact_attempts").await,
        count(&app.db, "contact_attempts").await,
        "the newer backup, taken with nothing writing, holds every attempt"
    );
    copy.close().await.unwrap();
}

fn app_url(app: &TestApp) -> String {
    app.state.settings.database_url.expose().to_owned()
}

#[tokio::test]
async fn restore_refuses_a_file_that_is_not_a_database_of_this_service() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"PK\x03\x04 not a database").unwrap();
    let target = dir.path().join("target.db");
    let url = if postgres_admin_url().is_some() {
        db.url.clone()
    } else {
        sqlite_url(&target)
    };
    let output = outreach(&url, KEY)
        .args(["restore", "--force"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    if postgres_admin_url().is_some() {
        assert!(text(&output).contains("pg_restore"), "{}", text(&output));
    } else {
        assert!(
            text(&output).contains("is not an SQLite database"),
            "{}",
            text(&output)
        );
        assert!(!target.exists());
    }
}

/// Nothing is connected to: the command explains, so a made-up server does, on either database.
#[test]
fn backup_and_restore_on_postgresql_give_the_pg_commands_and_write_nothing() {
    let url = "postgres://outreach:s3cret-pw@db.example:5432/outreach";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outreach.dump");
    let output = outreach(url, KEY)
        .arg("backup")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("pg_dump --format=custom")
            && said.contains("outreach.dump")
            && said.contains("postgres://outreach@db.example:5432/outreach"),
        "{said}"
    );
    assert!(
        said.contains("the data key is NOT inside the backup"),
        "{said}"
    );
    assert!(!said.contains("s3cret-pw") && !said.contains(KEY), "{said}");
    assert!(!file.exists());

    std::fs::write(&file, b"PGDMP").unwrap();
    let output = outreach(url, KEY)
        .arg("restore")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("pg_restore") && !said.contains("s3cret-pw"),
        "{said}"
    );
}
