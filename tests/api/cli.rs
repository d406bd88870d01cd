//! The real binary, as an operator runs it: `migrate`, `import areas`, `user add`, `serve`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{AREAS_CSV, TestDb, VILLAGE, resident_id};

fn outreach(db: &TestDb) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_outreach"));
    command
        .env("DATABASE_URL", &db.url)
        .env("OUTREACH_LOG__FILTER", "warn")
        // PostgreSQL needs the data key given; SQLite would generate one beside the database.
        .env(
            "OUTREACH_PRIVACY__KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .env_remove("RUST_LOG");
    command
}

fn terminate(child: &Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

#[tokio::test]
async fn import_areas_prints_the_json_summary_and_is_idempotent() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("areas.csv");
    let mut content = AREAS_CSV.to_owned();
    content.push_str("65402510020X,坏代码\n654025199201,无上级\n");
    std::fs::write(&file, &content).unwrap();

    let migrate = outreach(&db).arg("migrate").output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let first = outreach(&db)
        .args(["import", "areas"])
        .arg(&file)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let summary: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        summary,
        json!({"imported": 9, "updated": 0, "unchanged": 0, "rejected": 2})
    );
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("区划代码应为 12 位数字"), "{stderr}");

    let rejected = std::fs::read_to_string(dir.path().join("areas.csv.rejected.csv")).unwrap();
    let lines: Vec<&str> = rejected.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(lines[0], "line,区划代码,名称,reason,reason_code");
    assert!(
        lines[1].starts_with("11,65402510020X,坏代码,") && lines[1].ends_with(",invalid_code"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("12,654025199201,无上级,") && lines[2].ends_with(",unknown_parent"),
        "{}",
        lines[2]
    );

    let again = outreach(&db)
        .args(["import", "areas"])
        .arg(&file)
        .arg("--json")
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        summary,
        json!({"imported": 0, "updated": 0, "unchanged": 9, "rejected": 2})
    );
}

#[tokio::test]
async fn an_unusable_area_file_exits_non_zero_and_writes_nothing() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("empty.csv", &b""[..]),
        ("header.csv", "区划代码,名称\n".as_bytes()),
        ("junk.csv", b"\x00\x01\x02PK"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, content).unwrap();
        let output = outreach(&db)
            .args(["import", "areas"])
            .arg(&file)
            .arg("--json")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}");
        assert!(output.stdout.is_empty(), "{name}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("错误"),
            "{name}"
        );
        assert!(!dir.path().join(format!("{name}.rejected.csv")).exists());
    }
    let missing = outreach(&db)
        .args(["import", "areas", "/nonexistent/areas.csv"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[tokio::test]
async fn serve_prints_the_admin_password_once_and_a_cli_added_cadre_sees_only_their_village() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("areas.csv");
    std::fs::write(&file, AREAS_CSV).unwrap();

    let mut server = outreach(&db)
        .arg("serve")
        .env("OUTREACH_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let (mut address, mut password) = (None, None);
    let started = Instant::now();
    let mut line = String::new();
    while (address.is_none() || password.is_none()) && started.elapsed() < Duration::from_secs(60) {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line
            .trim()
            .strip_prefix("outreach 正在运行 / listening on ")
        {
            address = Some(rest.to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("密码 password:") {
            password = Some(rest.trim().to_owned());
        }
    }
    let address = address.expect("address printed");
    let password = password.expect("password printed");
    let client = outreach::outreach::http_client::builder().build().unwrap();
    let health = client
        .get(format!("{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let login = |username: &'static str, password: String| {
        let client = client.clone();
        let address = address.clone();
        async move {
            let response = client
                .post(format!("{address}/api/v1/auth/login"))
                .json(&json!({"username": username, "password": password}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "login {username}");
            response.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let admin = login("admin", password.clone()).await;

    let import = outreach(&db)
        .args(["import", "areas"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(import.status.success());
    assert!(String::from_utf8_lossy(&import.stdout).contains("imported 9"));

    let mut add = outreach(&db)
        .args([
            "user",
            "add",
            "--username",
            "cadre.cli",
            "--role",
            "cadre",
            "--area",
            VILLAGE,
        ])
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"village-password-1\n")
        .unwrap();
    let added = add.wait_with_output().unwrap();
    assert!(added.status.success());
    assert!(!String::from_utf8_lossy(&added.stdout).contains("village-password-1"));
    let refused = outreach(&db)
        .args([
            "user",
            "add",
            "--username",
            "cadre.cli",
            "--role",
            "cadre",
            "--area",
            VILLAGE,
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "duplicate username");

    let cadre = login("cadre.cli", "village-password-1".to_owned()).await;
    let tree: Value = client
        .get(format!("{address}/api/v1/areas"))
        .bearer_auth(&cadre)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tree["areas"].as_array().unwrap().len(), 1);
    assert_eq!(tree["areas"][0]["code"], VILLAGE);
    assert!(tree["areas"][0]["children"].as_array().unwrap().is_empty());
    let users = client
        .get(format!("{address}/api/v1/users"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), 200);

    // SIGTERM: the server drains and exits cleanly.
    terminate(&server);
    let status = server.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    let mut logs = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        !logs.contains(&password),
        "the admin password must not reach the logs"
    );

    // A second start prints no password.
    let mut second = outreach(&db)
        .arg("serve")
        .env("OUTREACH_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(second.stdout.take().unwrap());
    let mut first_line = String::new();
    reader.read_line(&mut first_line).unwrap();
    assert!(first_line.contains("listening on"));
    terminate(&second);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(second.wait().unwrap().success());
    assert!(!rest.contains("password"), "{rest}");
}

#[tokio::test]
async fn import_residents_writes_the_summary_and_the_rejected_rows_and_logs_no_numbers() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let areas = dir.path().join("areas.csv");
    std::fs::write(&areas, AREAS_CSV).unwrap();
    assert!(
        outreach(&db)
            .args(["import", "areas"])
            .arg(&areas)
            .output()
            .unwrap()
            .status
            .success()
    );
    let good = resident_id(1, "19800101");
    let file = dir.path().join("居民.csv");
    std::fs::write(
        &file,
        format!(
            "\u{feff}姓名,身份证号,户籍地区划代码,联系电话,备注\n张三,{good},{VILLAGE},13812345678,x\n李四,654025198001010011,{VILLAGE},13900001111,\n"
        ),
    )
    .unwrap();
    let run = || {
        outreach(&db)
            .args(["import", "residents"])
            .arg(&file)
            .arg("--json")
            .env("RUST_LOG", "trace")
            .output()
            .unwrap()
    };
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    let summary: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        summary,
        json!({"imported": 1, "updated": 0, "unchanged": 0, "rejected": 1})
    );
    assert!(stderr.contains("备注"), "unknown column warned about");
    for secret in [
        good.as_str(),
        "13812345678",
        "654025198001010011",
        "13900001111",
    ] {
        assert!(
            !stderr.contains(secret),
            "a full number reached the log: {secret}"
        );
    }
    let rejected = std::fs::read_to_string(dir.path().join("居民.csv.rejected.csv")).unwrap();
    let lines: Vec<&str> = rejected.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(
        lines[0],
        "line,姓名,身份证号,户籍地区划代码,联系电话,备注,reason,reason_code"
    );
    assert!(
        lines[1].starts_with("3,李四,654025198001010011,")
            && lines[1].ends_with(",身份证号校验位错误,id_check_digit"),
        "{}",
        lines[1]
    );
    let again = run();
    let summary: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        summary,
        json!({"imported": 0, "updated": 0, "unchanged": 1, "rejected": 1})
    );

    let too_big = outreach(&db)
        .args(["import", "residents"])
        .arg(&file)
        .env("OUTREACH_IMPORT__MAX_FILE_BYTES", "100")
        .output()
        .unwrap();
    assert_eq!(too_big.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&too_big.stderr).contains("过大"));
    let header_only = dir.path().join("header.csv");
    std::fs::write(&header_only, "姓名,身份证号,户籍地区划代码\n").unwrap();
    let output = outreach(&db)
        .args(["import", "residents"])
        .arg(&header_only)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(!dir.path().join("header.csv.rejected.csv").exists());
}

#[tokio::test]
async fn import_exams_records_the_list_and_writes_duplicates_to_the_rejected_file() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let areas = dir.path().join("areas.csv");
    std::fs::write(&areas, AREAS_CSV).unwrap();
    let people = dir.path().join("people.csv");
    let (a, b) = (resident_id(1, "19600101"), resident_id(2, "19600101"));
    std::fs::write(
        &people,
        format!("姓名,身份证号,户籍地区划代码\n甲,{a},{VILLAGE}\n乙,{b},{VILLAGE}\n"),
    )
    .unwrap();
    for (kind, file) in [("areas", &areas), ("residents", &people)] {
        let output = outreach(&db)
            .args(["import", kind])
            .arg(file)
            .output()
            .unwrap();
        assert!(output.status.success(), "{kind}");
    }
    // The office sets up the campaign and the institution (through the API in real use).
    let database = sea_orm::Database::connect(&db.url).await.unwrap();
    let today = outreach::registry::today();
    let actor = outreach::auth::Actor::cli();
    let campaign =
        outreach::flows::campaigns::create(&database, &actor, crate::helpers::test_campaign(today))
            .await
            .unwrap();
    outreach::flows::campaigns::open(&database, &actor, campaign.id())
        .await
        .unwrap();
    outreach::flows::institutions::create(
        &database,
        &actor,
        outreach::institution::NewInstitution {
            code: "XYZ-WSY".into(),
            name: "新源镇卫生院".into(),
            kind: outreach::institution::Kind::TownshipCentre,
            area_code: "654025100000".into(),
            daily_capacity: 50,
            closed_weekdays: Vec::new(),
            serves: vec!["654025100000".into()],
            address: None,
        },
    )
    .await
    .unwrap();
    database.close().await.unwrap();

    let exams = dir.path().join("exams.csv");
    std::fs::write(
        &exams,
        format!("身份证号,体检日期,体检机构\n{a},{today},XYZ-WSY\n{a},{today},XYZ-WSY\n{b},{today},NOPE\n"),
    )
    .unwrap();
    let year = chrono::Datelike::year(&today).to_string();
    let run = || {
        outreach(&db)
            .args(["import", "exams", "--campaign", &year, "--json"])
            .arg(&exams)
            .output()
            .unwrap()
    };
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    let summary: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        summary,
        json!({"imported": 1, "duplicates": 1, "rejected": 2})
    );
    assert!(
        !stderr.contains(&a),
        "a full ID number reached the terminal"
    );
    let rejected = std::fs::read_to_string(dir.path().join("exams.csv.rejected.csv")).unwrap();
    assert!(rejected.contains("duplicate_exam") && rejected.contains("unknown_institution"));
    let again: Value = serde_json::from_slice(&run().stdout).unwrap();
    assert_eq!(
        again,
        json!({"imported": 0, "duplicates": 2, "rejected": 3})
    );

    // The campaign's id works as well as its year (the same campaign: all duplicates now).
    let by_id = outreach(&db)
        .args(["import", "exams", "--json", "--campaign"])
        .arg(campaign.id().to_string())
        .arg(&exams)
        .output()
        .unwrap();
    assert_eq!(by_id.status.code(), Some(0));
    let by_id: Value = serde_json::from_slice(&by_id.stdout).unwrap();
    assert_eq!(by_id["imported"], 0);
    assert_eq!(by_id["duplicates"], 2);

    let unknown = outreach(&db)
        .args(["import", "exams", "--campaign", "1999"])
        .arg(&exams)
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("没有编号为 1999 的体检工作"));

    let help = outreach(&db)
        .args(["import", "exams", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--campaign <ID>") && help.contains("exactly one campaign is of that year"),
        "{help}"
    );
}

#[tokio::test]
async fn refusals_verify_exits_non_zero_when_a_record_is_gone() {
    let db = TestDb::new().await;
    let migrate = outreach(&db).arg("migrate").output().unwrap();
    assert!(migrate.status.success());
    let intact = outreach(&db)
        .args(["refusals", "verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(intact.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&intact.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], 0);
    let checks = async || {
        let database = sea_orm::Database::connect(&db.url).await.unwrap();
        let page = outreach::audit::list(
            &database,
            &outreach::auth::Scope::All,
            outreach::audit::AuditFilter {
                action: Some("refusal.verify".into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
        database.close().await.unwrap();
        page.entries
    };
    let recorded = checks().await;
    assert_eq!(recorded.len(), 1, "the check is in the audit log");
    assert_eq!(recorded[0].actor_name, "cli");
    assert_eq!(recorded[0].summary["ok"], true);
    assert_eq!(recorded[0].summary["records"], 0);

    // The audit log names a refusal record that is not there any more.
    let database = sea_orm::Database::connect(&db.url).await.unwrap();
    outreach::audit::record(
        &database,
        &outreach::auth::Actor::cli(),
        outreach::audit::AuditEvent {
            action: "refusal.register",
            entity: "refusal_record",
            entity_id: Some("42".into()),
            area_code: None,
            summary: json!({"resident_id": 7}),
        },
    )
    .await
    .unwrap();
    database.close().await.unwrap();
    let broken = outreach(&db).args(["refusals", "verify"]).output().unwrap();
    assert_eq!(broken.status.code(), Some(1));
    let text = String::from_utf8_lossy(&broken.stdout);
    assert!(
        text.contains("BROKEN") && text.contains("record 42: missing"),
        "{text}"
    );
    let recorded = checks().await;
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].summary["ok"], false, "newest first");
    assert_eq!(recorded[0].summary["problems"]["missing"], 1);
}

#[tokio::test]
async fn report_progress_prints_json_and_saves_a_workbook() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let areas = dir.path().join("areas.csv");
    std::fs::write(&areas, AREAS_CSV).unwrap();
    let imported = outreach(&db)
        .args(["import", "areas"])
        .arg(&areas)
        .output()
        .unwrap();
    assert!(imported.status.success());
    let file = dir.path().join("residents.csv");
    std::fs::write(
        &file,
        format!(
            "姓名,身份证号,户籍地区划代码\n张三,{},{VILLAGE}\n李四,{},{VILLAGE}\n",
            resident_id(1, "19800101"),
            resident_id(2, "19800101")
        ),
    )
    .unwrap();
    let imported = outreach(&db)
        .args(["import", "residents"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(imported.status.success());
    let database = sea_orm::Database::connect(&db.url).await.unwrap();
    let cli = outreach::auth::Actor::cli();
    let campaign = outreach::flows::campaigns::create(
        &database,
        &cli,
        crate::helpers::test_campaign(outreach::registry::today()),
    )
    .await
    .unwrap()
    .id();
    outreach::flows::campaigns::open(&database, &cli, campaign)
        .await
        .unwrap();
    database.close().await.unwrap();

    let json = outreach(&db)
        .args(["report", "progress", "--campaign", &campaign.to_string()])
        .args(["--area", crate::helpers::TOWNSHIP, "--json"])
        .output()
        .unwrap();
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["by"], "village");
    assert_eq!(report["total"]["target"], 2);
    assert_eq!(report["total"]["examined"], 0);
    assert_eq!(report["rows"].as_array().unwrap().len(), 2);

    let out = dir.path().join("progress.xlsx");
    let saved = outreach(&db)
        .args([
            "report",
            "progress",
            "--campaign",
            &campaign.to_string(),
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(saved.status.success());
    use calamine::Reader;
    let mut workbook = calamine::open_workbook_auto(&out).unwrap();
    let sheet = workbook.worksheet_range("体检进度").unwrap();
    assert_eq!(
        sheet.get_value((0, 4)),
        Some(&calamine::Data::String("应检人数".into()))
    );

    let unknown = outreach(&db)
        .args(["report", "progress", "--campaign", "999"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("999"));

    // The table, asked for by the campaign's year (no campaign has that id, one has that
    // year): the township 新源镇 and the total 合计 under Chinese headers, columns
    // lined up on a terminal (a Chinese character is two columns wide).
    let year = chrono::Datelike::year(&outreach::registry::today()).to_string();
    let table = outreach(&db)
        .args(["report", "progress", "--campaign", &year])
        .output()
        .unwrap();
    let stdout = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "header, the township, total:\n{stdout}");
    assert!(lines[0].contains("名称") && lines[0].contains("应检人数"));
    assert!(lines[1].contains("新源镇"), "{stdout}");
    assert!(lines[2].contains("合计"), "{stdout}");
    // Every line ends at the same display column (figures are right-aligned), and the
    // figure columns end at the same display columns as their headers.
    let ends = |line: &str| -> Vec<usize> {
        let mut ends = Vec::new();
        let mut column = 0;
        let mut in_token = false;
        for c in line.chars() {
            let blank = c == ' ';
            if in_token && blank {
                ends.push(column);
            }
            in_token = !blank;
            column += unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        }
        if in_token {
            ends.push(column);
        }
        ends
    };
    let header = ends(lines[0]);
    assert_eq!(header.len(), 8);
    for line in &lines[1..] {
        let mine = ends(line);
        let n = mine.len();
        assert_eq!(
            mine[n - 6..],
            header[2..],
            "figures end under their headers:\n{stdout}"
        );
    }
    // The name column starts at the same display column in the header and the townships.
    let name_start = |line: &str| {
        let at = line.find(|c: char| !c.is_ascii()).unwrap();
        unicode_width::UnicodeWidthStr::width(&line[..at])
    };
    assert_eq!(name_start(lines[0]), 0, "区划代码 is the first header");
    let start = |line: &str, name: &str| {
        unicode_width::UnicodeWidthStr::width(&line[..line.find(name).unwrap()])
    };
    assert_eq!(start(lines[1], "新源镇"), start(lines[0], "名称"));
    assert_eq!(start(lines[2], "合计"), start(lines[0], "名称"));

    // A value that is neither an id nor a campaign's year: exit 2, the campaigns listed.
    let neither = outreach(&db)
        .args(["report", "progress", "--campaign", "2001"])
        .output()
        .unwrap();
    assert_eq!(neither.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&neither.stderr);
    assert!(
        stderr.contains("2001") && stderr.contains(&format!("{campaign}（{year} 年）")),
        "{stderr}"
    );
}

#[tokio::test]
async fn import_tags_prints_the_summary_writes_the_rejected_rows_and_refuses_a_hostile_workbook() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let areas = dir.path().join("areas.csv");
    std::fs::write(&areas, AREAS_CSV).unwrap();
    let residents = dir.path().join("居民.csv");
    let id = resident_id(1, "19500101");
    std::fs::write(
        &residents,
        format!("姓名,身份证号,户籍地区划代码\n张三,{id},{VILLAGE}\n"),
    )
    .unwrap();
    for (kind, file) in [("areas", &areas), ("residents", &residents)] {
        let output = outreach(&db)
            .args(["import", kind])
            .arg(file)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    let tags = dir.path().join("重点人群.csv");
    std::fs::write(
        &tags,
        format!("身份证号,标签\n{id},高血压、糖尿病\n{id},头痛\n"),
    )
    .unwrap();
    let run = || {
        outreach(&db)
            .args(["import", "tags"])
            .arg(&tags)
            .arg("--json")
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let summary: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        summary,
        json!({"added": 2, "removed": 0, "unchanged": 0, "rejected": 1})
    );
    let rejected = std::fs::read_to_string(dir.path().join("重点人群.csv.rejected.csv")).unwrap();
    assert!(
        rejected.contains("头痛") && rejected.contains("invalid_tag"),
        "{rejected}"
    );
    let summary: Value = serde_json::from_slice(&run().stdout).unwrap();
    assert_eq!(
        summary,
        json!({"added": 0, "removed": 0, "unchanged": 1, "rejected": 1})
    );

    // A workbook with a cell far beyond any column: refused whole, exit 2, the reason said.
    let mut workbook = rust_xlsxwriter::Workbook::new();
    workbook.add_worksheet().write_string(0, 0, "姓名").unwrap();
    let original = workbook.save_to_buffer().unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(original)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).unwrap();
        let name = entry.name().unwrap().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if name == "xl/worksheets/sheet1.xml" {
            bytes = br#"<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1"><c r="FXSHRXW1" t="inlineStr"><is><t>x</t></is></c></row></sheetData></worksheet>"#.to_vec();
        }
        out.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(&bytes).unwrap();
    }
    let hostile = dir.path().join("hostile.xlsx");
    std::fs::write(&hostile, out.finish().unwrap().into_inner()).unwrap();
    let output = outreach(&db)
        .args(["import", "residents"])
        .arg(&hostile)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("FXSHRXW") && stderr.contains("256"),
        "{stderr}"
    );
}
