//! Message templates at start-up: a county's own folder is used, and a broken template stops
//! the service with its file and line.

use outreach::config::{DatabaseUrl, Settings};
use outreach::startup::Application;

use crate::helpers::TestDb;

async fn settings_with(dir: &std::path::Path, db: &TestDb) -> Settings {
    let mut settings = Settings {
        bind: "127.0.0.1:0".parse().unwrap(),
        database_url: DatabaseUrl::new(db.url.clone()),
        ..Settings::default()
    };
    settings.privacy.key = Some(outreach::config::Secret::new(
        outreach::privacy::new_key_base64(),
    ));
    settings.scheduler.enabled = false;
    settings.messaging.templates_dir = Some(dir.to_owned());
    settings.messaging.sms_signature = "新源县卫健委".into();
    settings
}

fn copy_built_in(to: &std::path::Path) {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("message-templates");
    for kind in std::fs::read_dir(&from).unwrap() {
        let kind = kind.unwrap().path();
        if !kind.is_dir() {
            continue;
        }
        let target = to.join(kind.file_name().unwrap());
        std::fs::create_dir_all(&target).unwrap();
        for file in std::fs::read_dir(&kind).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, target.join(file.file_name().unwrap())).unwrap();
        }
    }
}

#[tokio::test]
async fn a_countys_own_templates_are_loaded_and_a_broken_one_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    copy_built_in(dir.path());
    let db = TestDb::new().await;
    let app = Application::build(settings_with(dir.path(), &db).await)
        .await
        .expect("the built-in templates copied to a folder load");
    let sms = app
        .state()
        .templates
        .render_sms(
            outreach::outreach::MessageKind::SameDayReminder,
            outreach::outreach::Locale::ZhCn,
            &outreach::outreach::MessageContext::sample(),
        )
        .unwrap();
    assert!(sms.text.starts_with("【新源县卫健委】"), "{}", sms.text);
    drop(app);

    std::fs::write(
        dir.path().join("appointment_notice/zh-CN.txt"),
        "{{ resident_name }}您好，\n请于{{ dya }}体检。",
    )
    .unwrap();
    let err = Application::build(settings_with(dir.path(), &db).await)
        .await
        .err()
        .expect("a misspelt variable stops start-up")
        .to_string();
    assert!(err.contains("appointment_notice/zh-CN.txt"), "{err}");
    assert!(err.contains("dya"), "{err}");
}
