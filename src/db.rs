//! The database: connecting (SQLite with WAL, busy timeout and foreign keys; or PostgreSQL)
//! and applying migrations. Every other module takes `&impl ConnectionTrait`.

use std::time::Duration;

use anyhow::Context;
use migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

use crate::config::Settings;

/// Opens the pool for `settings.database_url`. An SQLite file is created when missing.
pub async fn connect(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    let url = &settings.database_url;
    let mut options = ConnectOptions::new(url.expose().to_owned());
    options
        .max_connections(settings.database.max_connections)
        .connect_timeout(Duration::from_secs(settings.database.connect_timeout_secs))
        .acquire_timeout(Duration::from_secs(settings.database.connect_timeout_secs))
        .sqlx_logging(false);
    if url.is_sqlite() {
        let busy = Duration::from_millis(settings.database.busy_timeout_ms);
        options.map_sqlx_sqlite_opts(move |opts| {
            opts.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(busy)
                .foreign_keys(true)
                // The default 2 MB page cache thrashes on random inserts into the blind-index
                // B-tree of a large registry; 64 MB per connection keeps it in memory.
                .pragma("cache_size", "-65536")
                .pragma("temp_store", "memory")
        });
    }
    Database::connect(options)
        .await
        .with_context(|| format!("cannot open the database at {url}"))
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None)
        .await
        .context("applying database migrations failed")
}

/// Opens and migrates: what `serve` and every command that touches data do first.
pub async fn connect_and_migrate(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    let db = connect(settings).await?;
    migrate(&db).await?;
    Ok(db)
}

pub fn backend_name(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "postgresql",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    }
}
