//! Where signature images live: content-addressed by their SHA-256, in the database's
//! `signature_blobs` table by default or in a directory for large deployments. Whatever is
//! read back is checked against its hash, so an altered image is an error, never served.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult};
use tracing::instrument;

use super::image::{SignatureImage, sha256_hex};
use crate::db::Sql;

#[async_trait]
pub trait SignatureStore: Send + Sync {
    /// Stores the image under its hash. Storing the same image again changes nothing.
    async fn put(&self, image: &SignatureImage) -> anyhow::Result<()>;
    /// The stored bytes for `sha256` (64 lowercase hex digits), or `None` when there are none.
    /// Bytes that no longer match their hash are an error.
    async fn get(&self, sha256: &str) -> anyhow::Result<Option<Vec<u8>>>;
}

/// Whether `value` is a SHA-256 in lowercase hex: the only form of key a store accepts, which
/// also keeps anything like a path out of [`DirStore`].
pub fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_key(sha256: &str) -> anyhow::Result<()> {
    if !is_sha256_hex(sha256) {
        bail!("a signature key must be 64 lowercase hex digits");
    }
    Ok(())
}

/// The image's hash must be that of its bytes: a store never files bytes under another name.
fn check_image(image: &SignatureImage) -> anyhow::Result<()> {
    check_key(&image.sha256)?;
    if sha256_hex(&image.png) != image.sha256 {
        bail!("signature {} does not match its bytes", image.sha256);
    }
    Ok(())
}

fn verified(sha256: &str, bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if sha256_hex(&bytes) != sha256 {
        bail!("stored signature {sha256} does not match its hash: it was altered or damaged");
    }
    Ok(bytes)
}

/// The stored bytes of a `signature_blobs` row.
#[derive(FromQueryResult)]
struct Blob {
    content: Vec<u8>,
}

/// Signatures in the `signature_blobs` table.
#[derive(Clone)]
pub struct DbStore {
    db: DatabaseConnection,
}

impl DbStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl SignatureStore for DbStore {
    #[instrument(skip_all, fields(sha256 = %image.sha256), err)]
    async fn put(&self, image: &SignatureImage) -> anyhow::Result<()> {
        put_blob(&self.db, image).await
    }

    #[instrument(skip_all, fields(sha256 = %sha256), err)]
    async fn get(&self, sha256: &str) -> anyhow::Result<Option<Vec<u8>>> {
        check_key(sha256)?;
        let mut sql = Sql::new(self.db.get_database_backend());
        sql.push("SELECT content FROM signature_blobs WHERE sha256 = ")
            .bind(sha256.to_owned());
        let Some(blob) = Blob::find_by_statement(sql.build())
            .one(&self.db)
            .await
            .context("reading a signature")?
        else {
            return Ok(None);
        };
        verified(sha256, blob.content).map(Some)
    }
}

/// Stores `image` in the `signature_blobs` table through `db` — a transaction, so that the
/// image is kept exactly when the record that names it is.
pub async fn put_blob(db: &impl ConnectionTrait, image: &SignatureImage) -> anyhow::Result<()> {
    check_image(image)?;
    let size = i32::try_from(image.png.len()).context("signature too large to store")?;
    let width = i32::try_from(image.width).context("signature too wide to store")?;
    let height = i32::try_from(image.height).context("signature too tall to store")?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "INSERT INTO signature_blobs (sha256, content, width, height, size, created_at) \
         VALUES (",
    )
    .bind(image.sha256.clone())
    .push(", ")
    .bind(image.png.clone())
    .push(", ")
    .bind(width)
    .push(", ")
    .bind(height)
    .push(", ")
    .bind(size)
    .push(", ")
    .bind(chrono::Utc::now())
    .push(") ON CONFLICT (sha256) DO NOTHING");
    db.execute_raw(sql.build())
        .await
        .context("storing a signature")?;
    Ok(())
}

/// Signatures as files: `<root>/<first two hex digits>/<sha256>.png`.
#[derive(Clone, Debug)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store in `root`, which is created on the first `put` when missing.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path_of(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(format!("{sha256}.png"))
    }
}

#[async_trait]
impl SignatureStore for DirStore {
    #[instrument(skip_all, fields(sha256 = %image.sha256), err)]
    async fn put(&self, image: &SignatureImage) -> anyhow::Result<()> {
        check_image(image)?;
        let path = self.path_of(&image.sha256);
        let sha256 = image.sha256.clone();
        let bytes = image.png.clone();
        tokio::task::spawn_blocking(move || write_file(&path, &sha256, &bytes))
            .await
            .context("the signature writer stopped")?
    }

    #[instrument(skip_all, fields(sha256 = %sha256), err)]
    async fn get(&self, sha256: &str) -> anyhow::Result<Option<Vec<u8>>> {
        check_key(sha256)?;
        let path = self.path_of(sha256);
        let bytes = tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        })
        .await
        .context("the signature reader stopped")??;
        bytes.map(|bytes| verified(sha256, bytes)).transpose()
    }
}

/// Writes `bytes` to `path` so that the file either is complete or is not there: into a
/// temporary file beside it, flushed to disk, then renamed over. A file already there with
/// the right content is left alone; one that does not match (damaged) is replaced.
fn write_file(path: &Path, sha256: &str, bytes: &[u8]) -> anyhow::Result<()> {
    if let Ok(existing) = std::fs::read(path)
        && sha256_hex(&existing) == sha256
    {
        return Ok(());
    }
    let dir = path.parent().context("a signature path has a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut file = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path)
        .with_context(|| format!("moving a signature into {}", path.display()))?;
    // The rename is durable only once the folder's entry is on disk.
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sea_orm::Database;

    use super::*;
    use crate::signature::image::{Limits, from_strokes};

    fn signature(variant: u32) -> SignatureImage {
        let points: Vec<_> = (0..=40)
            .map(|i| {
                let x = 30.0 + f64::from(i) * 8.0;
                let y = 75.0 + 40.0 * ((f64::from(i) + f64::from(variant)) / 3.0).sin();
                serde_json::json!([x, y])
            })
            .collect();
        let json = serde_json::json!({"width": 400, "height": 150, "strokes": [points]});
        from_strokes(&json.to_string(), &Limits::default()).expect("a valid signature")
    }

    /// Whatever the backing, a store behaves the same way.
    async fn exercise(store: &dyn SignatureStore) {
        let first = signature(0);
        let second = signature(1);
        assert_ne!(first.sha256, second.sha256);

        assert_eq!(store.get(&first.sha256).await.unwrap(), None);
        store.put(&first).await.unwrap();
        store.put(&first).await.unwrap();
        store.put(&second).await.unwrap();
        assert_eq!(store.get(&first.sha256).await.unwrap(), Some(first.png));
        assert_eq!(store.get(&second.sha256).await.unwrap(), Some(second.png));

        for bad in [
            "",
            "../../etc/passwd",
            &first.sha256.to_uppercase(),
            &first.sha256[..63],
            &format!("{}0", first.sha256),
            &format!("../{}", &first.sha256[3..]),
            &format!("{}/..", &first.sha256[..61]),
        ] {
            assert!(store.get(bad).await.is_err(), "accepted key {bad:?}");
        }

        let mut forged = signature(2);
        forged.sha256 = first.sha256.clone();
        assert!(store.put(&forged).await.is_err());
        let mut path_like = signature(2);
        path_like.sha256 = "../../x".into();
        assert!(store.put(&path_like).await.is_err());
    }

    #[tokio::test]
    async fn a_directory_store_keeps_files_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path().join("signatures"));
        exercise(&store).await;

        let image = signature(0);
        let path = dir
            .path()
            .join("signatures")
            .join(&image.sha256[..2])
            .join(format!("{}.png", image.sha256));
        assert_eq!(std::fs::read(&path).unwrap(), image.png);
        // Nothing half-written is left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [format!("{}.png", image.sha256)]);
    }

    #[tokio::test]
    async fn a_directory_store_detects_an_altered_file_and_put_repairs_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path());
        let image = signature(0);
        store.put(&image).await.unwrap();

        let path = store.path_of(&image.sha256);
        let mut altered = image.png.clone();
        let last = altered.len() - 20;
        altered[last] ^= 1;
        std::fs::write(&path, &altered).unwrap();
        let error = store.get(&image.sha256).await.unwrap_err();
        assert!(error.to_string().contains("altered"), "{error:#}");

        store.put(&image).await.unwrap();
        assert_eq!(store.get(&image.sha256).await.unwrap(), Some(image.png));
    }

    const CREATE_TABLE_SQLITE: &str = "CREATE TABLE signature_blobs (
        sha256 VARCHAR(64) PRIMARY KEY NOT NULL,
        content BLOB NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        size INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL)";
    const CREATE_TABLE_POSTGRES: &str = "CREATE TABLE signature_blobs (
        sha256 VARCHAR(64) PRIMARY KEY NOT NULL,
        content BYTEA NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        size INTEGER NOT NULL,
        created_at TIMESTAMPTZ NOT NULL)";

    async fn exercise_db(db: &DatabaseConnection) {
        let store = DbStore::new(db.clone());
        exercise(&store).await;

        let image = signature(0);
        #[derive(FromQueryResult)]
        struct Stored {
            width: i32,
            height: i32,
            size: i32,
        }
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("SELECT width, height, size FROM signature_blobs WHERE sha256 = ")
            .bind(image.sha256.clone());
        let stored = Stored::find_by_statement(sql.build())
            .one(db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.width, 400);
        assert_eq!(stored.height, 150);
        assert_eq!(stored.size as usize, image.png.len());
        #[derive(FromQueryResult)]
        struct Count {
            n: i64,
        }
        let count = Count::find_by_statement(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM signature_blobs",
        ))
        .one(db)
        .await
        .unwrap()
        .unwrap()
        .n;
        assert_eq!(count, 2);

        // Someone swaps the image in the database: reading it is an error, not a forgery.
        let other = signature(5);
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("UPDATE signature_blobs SET content = ")
            .bind(other.png.clone())
            .push(" WHERE sha256 = ")
            .bind(image.sha256.clone());
        db.execute_raw(sql.build()).await.unwrap();
        let error = store.get(&image.sha256).await.unwrap_err();
        assert!(error.to_string().contains("altered"), "{error:#}");
    }

    #[tokio::test]
    async fn a_database_store_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("signatures.db").display()
        );
        let db = Database::connect(&url).await.unwrap();
        db.execute_unprepared(CREATE_TABLE_SQLITE).await.unwrap();
        exercise_db(&db).await;
        db.close().await.unwrap();
    }

    /// Runs against a database of its own, created beside `TEST_DATABASE_URL` and dropped after.
    #[tokio::test]
    async fn a_database_store_on_postgres() {
        let Some(admin_url) = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            return;
        };
        // The prefix the CI sweeps away if a run dies before dropping it.
        let name = format!("outreach_test_sig_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url).await.unwrap();
        // CREATE DATABASE copies template1, which PostgreSQL refuses while another copy of it
        // is under way (another test run on the same server): wait and try again.
        let mut attempts = 0;
        while let Err(e) = admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
        {
            attempts += 1;
            assert!(attempts < 20, "cannot create a test database: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        let db = Database::connect(url.as_str()).await.unwrap();
        db.execute_unprepared(CREATE_TABLE_POSTGRES).await.unwrap();
        exercise_db(&db).await;
        db.close().await.unwrap();
        admin
            .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
            .await
            .unwrap();
    }
}
