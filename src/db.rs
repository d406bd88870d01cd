//! The database: connecting (SQLite with WAL, busy timeout and foreign keys; or PostgreSQL)
//! and applying migrations. Every other module takes `&impl ConnectionTrait`.

use std::time::Duration;

use anyhow::Context;
use migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

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

/// After a bulk write (a day of report figures) on PostgreSQL, refreshes the planner's
/// statistics of `table` at once instead of waiting for autovacuum (which may be off): with
/// the statistics of an empty table, the reports' sorts spill to disk. Best effort; SQLite
/// plans by its indexes without statistics.
pub async fn analyze_after_bulk_write(db: &impl ConnectionTrait, table: &'static str) {
    if db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    if let Err(e) = db.execute_unprepared(&format!("ANALYZE {table}")).await {
        tracing::warn!(table, error = %e, "cannot refresh the planner statistics");
    }
}

/// A hand-written statement with values bound in the placeholder style of the backend
/// (`?` on SQLite, `$n` on PostgreSQL), for the set-based statements sea-query cannot say.
pub struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<sea_orm::Value>,
}

impl Sql {
    pub fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            text: String::new(),
            values: Vec::new(),
        }
    }

    /// Appends SQL text as it is (never user input).
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn bind(&mut self, value: impl Into<sea_orm::Value>) -> &mut Self {
        self.values.push(value.into());
        if self.backend == DbBackend::Postgres {
            self.text.push('$');
            self.text.push_str(&self.values.len().to_string());
        } else {
            self.text.push('?');
        }
        self
    }

    /// Appends `(?, ?, …)` for a list of values (which must not be empty).
    pub fn bind_list<V: Into<sea_orm::Value>>(
        &mut self,
        values: impl IntoIterator<Item = V>,
    ) -> &mut Self {
        self.text.push('(');
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(value);
        }
        self.text.push(')');
        self
    }

    pub fn build(&self) -> sea_orm::Statement {
        sea_orm::Statement::from_sql_and_values(self.backend, &self.text, self.values.clone())
    }
}

/// Begins a transaction that writes. On SQLite it takes the write lock at `BEGIN`
/// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes waits its turn under the
/// busy timeout instead of failing when another writer commits in between; PostgreSQL
/// ignores the option.
pub async fn begin_write<C: sea_orm::TransactionTrait>(
    db: &C,
) -> Result<C::Transaction, sea_orm::DbErr> {
    db.begin_with_options(sea_orm::TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}
