//! The answer cache (`[cache]`): one SQLite file shared by every run and
//! every agent process, each answer of an LLM backend stored under the
//! [`CacheKey`] of its request. What is stored is the provider's raw
//! answer (its JSON body), not the record made of it: a cached answer goes
//! through the same reading and checks as a fresh one, so a changed
//! validator or json check applies to it.
//!
//! Many agent processes read and write at once: WAL (readers never wait for
//! the writer), a busy timeout instead of failing on a lock, and one
//! statement per transaction so no lock is held for long.

mod key;

pub use key::CacheKey;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

/// The variable that tells an agent the cache file (set by the supervisor
/// for a job with `[cache]`, unless `--no-cache`).
pub const CACHE_VAR: &str = "NIGHTSHIFT_CACHE";

/// How long a writer waits for another process's write to finish: writes
/// are single short statements, so only a stuck process makes this wait.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause between tries of a set-up another process holds up.
const SET_UP_PAUSE: Duration = Duration::from_millis(20);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS answers (
    key BLOB PRIMARY KEY,
    model TEXT NOT NULL,
    answer TEXT NOT NULL,
    saved_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hits (
    model TEXT PRIMARY KEY,
    hits INTEGER NOT NULL
) WITHOUT ROWID";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("answer cache {}: cannot create its folder: {source}", .path.display())]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("answer cache {}: {source}", .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("answer cache {}: the file is read-only; make it writable or remove [cache] (or run with --no-cache)", .path.display())]
    ReadOnly { path: PathBuf },
}

/// One process's connection to the cache file.
#[derive(Debug)]
pub struct AnswerCache {
    path: PathBuf,
    /// rusqlite connections are not Sync; the agent's workers take turns
    /// (each statement is short).
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    /// Hits not yet written, per model. A lookup stays a pure read:
    /// writing each hit at once (or a last-used time per answer) would
    /// serialise every agent's lookups behind the one writer and grow the
    /// WAL by a page a hit. Hits are statistics (`cache stats`), so they
    /// are counted per model and written in batches, at the latest when
    /// the cache is dropped.
    hits: HashMap<String, u64>,
    pending: u64,
}

/// Hits kept in memory before they are written, in one transaction.
const HITS_PER_WRITE: u64 = 256;

/// What `nightshift cache stats` shows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CacheStats {
    pub path: PathBuf,
    pub entries: u64,
    /// The file with its WAL and shared-memory files.
    pub bytes: u64,
    pub hits: u64,
    pub models: Vec<ModelStats>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelStats {
    pub model: String,
    pub entries: u64,
    pub hits: u64,
}

impl AnswerCache {
    /// Opens (creating it and its folder if need be) the cache at `path`,
    /// and makes sure it is a cache this process can write.
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|source| CacheError::Folder {
                path: path.to_owned(),
                source,
            })?;
        }
        let sqlite = |source| CacheError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(sqlite)? {
            return Err(CacheError::ReadOnly {
                path: path.to_owned(),
            });
        }
        // Two processes creating the cache at once, or switching it to WAL,
        // get SQLITE_BUSY without the busy handler being asked (SQLite
        // cannot wait there without risking a deadlock): try again.
        let deadline = Instant::now() + BUSY_TIMEOUT;
        loop {
            match set_up(&conn) {
                Ok(()) => break,
                Err(error) if is_busy(&error) && Instant::now() < deadline => {
                    std::thread::sleep(SET_UP_PAUSE);
                }
                Err(error) => return Err(sqlite(error)),
            }
        }
        Ok(Self {
            path: path.to_owned(),
            inner: Mutex::new(Inner {
                conn,
                hits: HashMap::new(),
                pending: 0,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, source: rusqlite::Error) -> CacheError {
        CacheError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A worker that panicked mid-statement left nothing half-done that
        // SQLite itself did not roll back.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer stored under `key`, counted as a hit.
    pub fn get(&self, key: &CacheKey) -> Result<Option<String>, CacheError> {
        let mut inner = self.inner();
        let found: Option<(String, String)> = inner
            .conn
            .query_row(
                "SELECT answer, model FROM answers WHERE key = ?1",
                params![&key.0[..]],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| self.sqlite(e))?;
        let Some((answer, model)) = found else {
            return Ok(None);
        };
        *inner.hits.entry(model).or_insert(0) += 1;
        inner.pending += 1;
        if inner.pending >= HITS_PER_WRITE {
            // Counts that cannot be written now are kept for the next try:
            // the answer itself is good.
            let _ = inner.write_hits();
        }
        Ok(Some(answer))
    }

    /// Writes the hits counted so far.
    pub fn flush_hits(&self) -> Result<(), CacheError> {
        self.inner().write_hits().map_err(|e| self.sqlite(e))
    }

    /// Stores (or replaces: a fresher answer after a cached one was
    /// refused) the answer of `key`.
    pub fn put(&self, key: &CacheKey, model: &str, answer: &str) -> Result<(), CacheError> {
        let now = now();
        self.inner()
            .conn
            .execute(
                "INSERT INTO answers (key, model, answer, saved_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET model = ?2, answer = ?3, saved_at = ?4",
                params![&key.0[..], model, answer, now],
            )
            .map(drop)
            .map_err(|e| self.sqlite(e))
    }

    pub fn stats(&self) -> Result<CacheStats, CacheError> {
        self.flush_hits()?;
        let inner = self.inner();
        let mut statement = inner
            .conn
            .prepare(
                "SELECT model, SUM(entries), SUM(hits) FROM (
                    SELECT model, COUNT(*) AS entries, 0 AS hits FROM answers GROUP BY model
                    UNION ALL SELECT model, 0, hits FROM hits
                 ) GROUP BY model ORDER BY model",
            )
            .map_err(|e| self.sqlite(e))?;
        let models = statement
            .query_map([], |row| {
                Ok(ModelStats {
                    model: row.get(0)?,
                    entries: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                    hits: u64::try_from(row.get::<_, Option<i64>>(2)?.unwrap_or(0)).unwrap_or(0),
                })
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| self.sqlite(e))?;
        let bytes = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let mut name = self.path.as_os_str().to_owned();
                name.push(suffix);
                std::fs::metadata(PathBuf::from(name)).ok()
            })
            .map(|meta| meta.len())
            .sum();
        Ok(CacheStats {
            path: self.path.clone(),
            entries: models.iter().map(|m| m.entries).sum(),
            bytes,
            hits: models.iter().map(|m| m.hits).sum(),
            models,
        })
    }

    /// Removes the answers saved longer than `older_than` ago, or every
    /// answer and hit count (None); returns how many answers went. The
    /// file then shrinks.
    pub fn prune(&self, older_than: Option<Duration>) -> Result<u64, CacheError> {
        self.flush_hits()?;
        let inner = self.inner();
        let conn = &inner.conn;
        let removed = match older_than {
            Some(age) => {
                let cutoff = now().saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
                conn.execute("DELETE FROM answers WHERE saved_at < ?1", params![cutoff])
            }
            None => conn
                .execute("DELETE FROM hits", [])
                .and_then(|_| conn.execute("DELETE FROM answers", [])),
        }
        .map_err(|e| self.sqlite(e))?;
        if removed > 0 {
            conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE)")
                .map_err(|e| self.sqlite(e))?;
        }
        Ok(removed as u64)
    }
}

impl Inner {
    fn write_hits(&mut self) -> rusqlite::Result<()> {
        if self.hits.is_empty() {
            return Ok(());
        }
        let transaction = self.conn.transaction()?;
        {
            let mut update = transaction.prepare_cached(
                "INSERT INTO hits (model, hits) VALUES (?1, ?2)
                 ON CONFLICT (model) DO UPDATE SET hits = hits + ?2",
            )?;
            for (model, count) in &self.hits {
                update.execute(params![model, i64::try_from(*count).unwrap_or(i64::MAX)])?;
            }
        }
        transaction.commit()?;
        self.hits.clear();
        self.pending = 0;
        Ok(())
    }
}

impl Drop for AnswerCache {
    /// The last hits; a cache that cannot take them loses only statistics.
    fn drop(&mut self) {
        let _ = self.inner().write_hits();
    }
}

/// WAL, and the table. Reading the journal mode reads the header: a file
/// that is not a database fails here, untouched.
fn set_up(conn: &Connection) -> rusqlite::Result<()> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    }
    // In WAL mode NORMAL survives a crash of any process; a power cut may
    // lose the last answers, which are then asked again.
    conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    conn.execute_batch(SCHEMA)
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Seconds since the epoch (0 for a clock before it).
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
