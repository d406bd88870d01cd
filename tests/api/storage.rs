use entities::audit_log;
use outreach::config::{DatabaseUrl, Settings};
use outreach::db;
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, Statement};

use crate::helpers::{TestDb, spawn_app};

#[tokio::test]
async fn the_audit_log_refuses_updates_and_deletes_at_the_database() {
    let app = spawn_app().await;
    app.admin_token().await;
    let before = audit_log::Entity::find().count(&app.db).await.unwrap();
    assert!(before > 0);
    for sql in [
        "UPDATE audit_log SET actor_name = 'someone else'",
        "DELETE FROM audit_log",
    ] {
        let err = app.db.execute_unprepared(sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(
        audit_log::Entity::find().count(&app.db).await.unwrap(),
        before
    );
    let rows = audit_log::Entity::find().all(&app.db).await.unwrap();
    assert!(rows.iter().all(|r| r.actor_name != "someone else"));
}

#[tokio::test]
async fn migrating_twice_is_harmless_and_sqlite_runs_with_wal_and_foreign_keys() {
    let test_db = TestDb::new().await;
    let settings = Settings {
        database_url: DatabaseUrl::new(test_db.url.clone()),
        ..Settings::default()
    };
    let conn = db::connect_and_migrate(&settings).await.unwrap();
    db::migrate(&conn).await.unwrap();
    if conn.get_database_backend() == DbBackend::Sqlite {
        for (pragma, expected) in [
            ("journal_mode", "wal"),
            ("foreign_keys", "1"),
            ("busy_timeout", "5000"),
        ] {
            let row = conn
                .query_one_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    format!("PRAGMA {pragma}"),
                ))
                .await
                .unwrap()
                .unwrap();
            let value: String = row
                .try_get_by_index::<String>(0)
                .or_else(|_| row.try_get_by_index::<i64>(0).map(|v| v.to_string()))
                .unwrap();
            assert_eq!(value, expected, "PRAGMA {pragma}");
        }
    }
    // A user pointing at an area that does not exist is refused by the foreign key.
    let err = conn
        .execute_unprepared(
            "INSERT INTO users (username, password_hash, role, area_code, active, created_at, updated_at) \
             VALUES ('x', 'x', 'cadre', '999999999999', true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        )
        .await;
    assert!(err.is_err(), "foreign key enforced");
}

#[tokio::test]
async fn a_write_blocked_by_a_long_sqlite_transaction_is_a_503_with_retry_after() {
    if crate::helpers::postgres_admin_url().is_some() {
        return; // SQLite's single-writer lock; PostgreSQL writers do not wait on each other here.
    }
    let app = crate::helpers::spawn_app_with(|s| s.database.busy_timeout_ms = 200).await;
    app.seed_areas().await;
    let (id, office) = app
        .user(
            "office.busy",
            entities::users::Role::Office,
            crate::helpers::COUNTY,
        )
        .await;
    // An import in progress holds the write lock for its whole transaction.
    let txn = sea_orm::TransactionTrait::begin(&app.db).await.unwrap();
    txn.execute_unprepared("UPDATE areas SET name = name WHERE code = '654025000000'")
        .await
        .unwrap();
    let response = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &office,
            serde_json::json!({"display_name": "忙"}),
        )
        .await;
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(
        crate::helpers::error_code(response, reqwest::StatusCode::SERVICE_UNAVAILABLE).await,
        "busy"
    );
    sea_orm::TransactionSession::rollback(txn).await.unwrap();
}
