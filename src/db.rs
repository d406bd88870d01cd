//! The database: connecting (SQLite with WAL, busy timeout and foreign keys; or PostgreSQL)
//! and applying migrations. Every other module takes `&impl ConnectionTrait`.

use std::path::Path;
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
                // Every commit by one connection empties the others' page caches (WAL), so
                // under cadres' writes each read would copy its pages in again with `pread`;
                // mapped, the database file's pages are read in place (measured with
                // `outreach-bench load`, see BENCHMARKS.md).
                .pragma("mmap_size", "1073741824")
                .pragma("temp_store", "memory")
        });
    }
    if let Some(port) = postgres_tcp_port(url.expose()) {
        options.map_sqlx_postgres_pool_opts(move |pool| {
            pool.after_connect(move |_connection, _meta| {
                Box::pin(async move {
                    nodelay::set_on_sockets_to(port);
                    Ok(())
                })
            })
        });
    }
    Database::connect(options)
        .await
        .with_context(|| format!("cannot open the database at {url}"))
}

/// The server port of a PostgreSQL URL that connects over TCP (not a Unix socket), read as
/// sqlx reads it (`?port=`, `?host=/dir`, an encoded socket path, `PGPORT`).
fn postgres_tcp_port(url: &str) -> Option<u16> {
    use std::str::FromStr;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let options = sea_orm::sqlx::postgres::PgConnectOptions::from_str(url).ok()?;
    options.get_socket().is_none().then(|| options.get_port())
}

/// sqlx 0.9.0 opens its PostgreSQL TCP connections without `TCP_NODELAY` (0.8 set it; the
/// fix is upstream but not released). Without it, a statement with a large bind message —
/// the dispatcher's grouped `UPDATE` with each message's text — waits about 40 ms for a
/// delayed acknowledgement: measured, 48 ms a statement instead of 7, and the dispatcher at
/// 1,168 instead of 2,863 messages/s. sqlx gives no access to its socket, so each new
/// connection sets the option on every TCP socket of this process whose peer has the
/// database server's port — the pools' connections, and any other connection to that port,
/// which loses nothing by it; setting it again is harmless. Remove once sqlx sets it.
mod nodelay {
    #[cfg(target_os = "linux")]
    pub fn set_on_sockets_to(port: u16) {
        use std::os::fd::{BorrowedFd, RawFd};
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<RawFd>().ok())
            else {
                continue;
            };
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            if !is_socket {
                continue;
            }
            // SAFETY: a deliberate, benign exception to I/O safety. `borrow_raw` wants the
            // descriptor open for the borrow, which this loop cannot promise while other
            // threads open and close theirs. It is only passed to `getpeername`,
            // `getsockopt` and `setsockopt(TCP_NODELAY)`, which neither read nor write data
            // nor close anything: if the descriptor was closed meanwhile they fail (EBADF)
            // and it is skipped; if its number was reused, the new descriptor is examined
            // the same way and changed only if it too is a socket to the server's port.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&fd);
            let to_server = socket
                .peer_addr()
                .ok()
                .and_then(|addr| addr.as_socket())
                .is_some_and(|addr| addr.port() == port);
            if to_server
                && socket.tcp_nodelay().is_ok_and(|on| !on)
                && let Err(e) = socket.set_tcp_nodelay(true)
            {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a database connection");
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn set_on_sockets_to(_port: u16) {}
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

/// The connection pool as it is now: its maximum size, the connections open and those idle.
pub struct PoolUsage {
    pub max: u32,
    pub open: u32,
    pub idle: usize,
}

/// [`PoolUsage`] of `db`'s pool, read from the pool itself (no query).
pub fn pool_usage(db: &DatabaseConnection) -> Option<PoolUsage> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            Some(PoolUsage {
                max: pool.options().get_max_connections(),
                open: pool.size(),
                idle: pool.num_idle(),
            })
        }
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            Some(PoolUsage {
                max: pool.options().get_max_connections(),
                open: pool.size(),
                idle: pool.num_idle(),
            })
        }
        _ => None,
    }
}

/// A write of at least this many rows refreshes the table's planner statistics at once.
pub const BULK_WRITE_ROWS: u64 = 10_000;

/// [`analyze_after_bulk_write`] when `rows` rows were written, at least [`BULK_WRITE_ROWS`].
pub async fn analyze_if_bulk(db: &impl ConnectionTrait, table: &'static str, rows: u64) {
    if rows >= BULK_WRITE_ROWS {
        analyze_after_bulk_write(db, table).await;
    }
}

/// After a bulk write (a day of report figures, a campaign's enrolment, a wave's messages, a
/// registry import) on PostgreSQL, refreshes the planner's statistics of `table` at once
/// instead of waiting for autovacuum (which may be off). With the statistics of an empty
/// table the reports' sorts spill to disk, and the dispatcher's lookups by campaign and
/// resident scan every progress row of the campaign (measured: 73 ms instead of about 2 ms
/// for 500 residents, slowing a 200,000-message run to 300 messages/s). Best effort; SQLite
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

    /// Appends SQL text as it is. Only text written into the program is accepted (a
    /// `&'static str`: a literal, a constant, a `match` of them), so nothing read or computed
    /// at run time can become part of a statement; values go in through [`Sql::bind`].
    pub fn push(&mut self, text: &'static str) -> &mut Self {
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

/// Writes a consistent copy of the SQLite database behind `db` to `target`, while the service
/// keeps writing. `VACUUM INTO` reads one snapshot — in WAL mode writers carry on meanwhile —
/// and writes it out compacted, holding every transaction committed before it began. The copy
/// goes to a new file beside `target` (mode 0600 on Unix: it holds personal data) and is moved into
/// place only when complete, so a failed run leaves no half-written backup. An existing
/// `target` is replaced only when `replace` is set. Returns the backup's size in bytes.
pub async fn backup_sqlite(
    db: &DatabaseConnection,
    target: &Path,
    replace: bool,
) -> anyhow::Result<u64> {
    anyhow::ensure!(
        db.get_database_backend() == DbBackend::Sqlite,
        "VACUUM INTO copies SQLite databases only"
    );
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // An empty file is what VACUUM INTO accepts as its target; tempfile makes it mode 0600.
    let partial = tempfile::Builder::new()
        .prefix(".outreach-backup-")
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?
        .into_temp_path();
    let partial_text = partial
        .to_str()
        .context("the backup's path is not valid UTF-8")?
        .to_owned();
    let mut sql = Sql::new(DbBackend::Sqlite);
    sql.push("VACUUM INTO ").bind(partial_text);
    db.execute_raw(sql.build())
        .await
        .context("copying the database (VACUUM INTO) failed")?;
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .context("flushing the backup to disk")?;
    let size = std::fs::metadata(&partial)?.len();
    if replace {
        partial
            .persist(target)
            .with_context(|| format!("cannot write {}", target.display()))?;
    } else {
        // A hard link fails when `target` exists, so a file made since the caller looked is
        // not overwritten either.
        std::fs::hard_link(&partial, target)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(size)
}

/// What a file offered for restore holds, read without changing it.
#[derive(Debug)]
pub struct SqliteBackup {
    /// Migrations applied in the backup.
    pub migrations: usize,
    /// Migrations of the backup that this program does not know (it came from a newer one).
    pub unknown_migrations: Vec<String>,
}

/// Opens the SQLite database `file` read-only, for looking into a backup before it is
/// restored; refused when the file does not start with the SQLite header.
pub async fn open_sqlite_read_only(file: &Path) -> anyhow::Result<DatabaseConnection> {
    use std::io::Read;
    let mut header = [0u8; 16];
    std::fs::File::open(file)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|_| anyhow::anyhow!("{} is not an SQLite database", file.display()))?;
    anyhow::ensure!(
        &header == b"SQLite format 3\0",
        "{} is not an SQLite database",
        file.display()
    );
    let options = sea_orm::sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .read_only(true);
    let pool = sea_orm::sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    Ok(sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

/// Checks that the SQLite database `db` (read from `file`) is one of this service: an intact
/// structure (`PRAGMA quick_check`), the migrations table with only migrations this program
/// knows, and the service's tables.
pub async fn inspect_sqlite_backup(
    db: &DatabaseConnection,
    file: &Path,
) -> anyhow::Result<SqliteBackup> {
    let check = db
        .query_one_raw(sea_orm::Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA quick_check",
        ))
        .await
        .with_context(|| format!("{} cannot be read as a database", file.display()))?
        .and_then(|row| row.try_get_by_index::<String>(0).ok());
    anyhow::ensure!(
        check.as_deref() == Some("ok"),
        "{} is damaged: {}",
        file.display(),
        check.unwrap_or_default()
    );
    let tables: Vec<String> = db
        .query_all_raw(sea_orm::Statement::from_string(
            DbBackend::Sqlite,
            "SELECT name FROM sqlite_master WHERE type = 'table'",
        ))
        .await?
        .iter()
        .filter_map(|row| row.try_get_by_index::<String>(0).ok())
        .collect();
    for table in ["seaql_migrations", "residents", "refusal_records"] {
        anyhow::ensure!(
            tables.iter().any(|t| t == table),
            "{} is an SQLite database but not one of this service (no table {table})",
            file.display()
        );
    }
    let applied: Vec<String> = db
        .query_all_raw(sea_orm::Statement::from_string(
            DbBackend::Sqlite,
            "SELECT version FROM seaql_migrations",
        ))
        .await?
        .iter()
        .filter_map(|row| row.try_get_by_index::<String>(0).ok())
        .collect();
    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    Ok(SqliteBackup {
        migrations: applied.len(),
        unknown_migrations: applied.into_iter().filter(|m| !known.contains(m)).collect(),
    })
}

/// Puts the SQLite database `backup` in place as `target`: copied beside it, flushed, then
/// moved over it in one rename, with the old database's `-wal` and `-shm` files removed (a
/// journal of the old database must never be replayed into the restored one). The service
/// must be stopped.
pub fn restore_sqlite(backup: &Path, target: &Path) -> anyhow::Result<()> {
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut partial = tempfile::Builder::new()
        .prefix(".outreach-restore-")
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let mut source =
        std::fs::File::open(backup).with_context(|| format!("reading {}", backup.display()))?;
    std::io::copy(&mut source, partial.as_file_mut())
        .with_context(|| format!("copying {}", backup.display()))?;
    partial.as_file().sync_all()?;
    for suffix in ["-wal", "-shm"] {
        let mut name = target.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing {}", Path::new(&name).display()));
            }
        }
    }
    partial
        .persist(target)
        .with_context(|| format!("cannot write {}", target.display()))?;
    Ok(())
}

/// Whether the database answers (the health check's question).
pub async fn ping(db: &impl ConnectionTrait) -> Result<(), sea_orm::DbErr> {
    db.execute_unprepared("SELECT 1").await.map(|_| ())
}

/// A savepoint inside the transaction a caller gave, for work that may fail on its own without
/// losing the rest (one row of an import). Domain code takes savepoints; only flows, workers,
/// the scheduler and the command line begin transactions.
pub async fn savepoint(
    txn: &sea_orm::DatabaseTransaction,
) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
    sea_orm::TransactionTrait::begin(txn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_nodelay_is_set_for_postgresql_over_tcp_only() {
        assert_eq!(
            postgres_tcp_port("postgres://app@db.example:6432/outreach"),
            Some(6432)
        );
        assert_eq!(
            postgres_tcp_port("postgresql://app@127.0.0.1/outreach"),
            Some(5432)
        );
        assert_eq!(
            postgres_tcp_port("postgres://app@localhost/outreach?port=6543"),
            Some(6543)
        );
        assert_eq!(
            postgres_tcp_port("postgres://app@localhost/outreach?host=/var/run/postgresql"),
            None
        );
        assert_eq!(
            postgres_tcp_port("postgres://app@%2Fvar%2Frun%2Fpostgresql/outreach"),
            None
        );
        assert_eq!(
            postgres_tcp_port("sqlite://data/outreach.db?mode=rwc"),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn tcp_nodelay_is_set_on_sockets_to_the_servers_port() {
        use std::net::{TcpListener, TcpStream};
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let to_server = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let to_other = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        nodelay::set_on_sockets_to(server.local_addr().unwrap().port());
        assert!(to_server.nodelay().unwrap());
        assert!(!to_other.nodelay().unwrap());
    }
}
