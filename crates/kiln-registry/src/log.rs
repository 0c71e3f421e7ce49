//! The event log in SQL: one table, `kiln_events`, shared by all projects in a database and
//! keyed by (project, seq).

use std::path::Path;
use std::sync::Once;

use kiln_core::time::now_micros;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, Row, Transaction};

use crate::{Event, EventRecord, RegistryError, State};

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS kiln_events (
    project TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at_us BIGINT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (project, seq)
)";

static INSTALL_DRIVERS: Once = Once::new();

/// A project's registry in a SQLite or PostgreSQL database.
#[derive(Debug, Clone)]
pub struct Registry {
    pool: AnyPool,
    project: String,
    url: String,
}

impl Registry {
    /// Opens (creating if needed) the registry at `url` (`sqlite://path/registry.db` or
    /// `postgres://...`) for `project`.
    pub async fn open(url: &str, project: &str) -> Result<Registry, RegistryError> {
        INSTALL_DRIVERS.call_once(sqlx::any::install_default_drivers);
        let open_err = |source| RegistryError::Open {
            url: redact(url),
            source,
        };
        let connect_url = if let Some(path) = url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or(path);
            if let Some(dir) = Path::new(file)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| open_err(sqlx::Error::Io(e)))?;
            }
            if path.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            }
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .connect(&connect_url)
            .await
            .map_err(open_err)?;
        sqlx::query(CREATE_TABLE)
            .execute(&pool)
            .await
            .map_err(open_err)?;
        Ok(Registry {
            pool,
            project: project.to_string(),
            url: redact(url),
        })
    }

    /// The URL with any password removed, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// The sequence number of the last event (0 for an empty registry).
    pub async fn last_seq(&self) -> Result<i64, RegistryError> {
        let row =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM kiln_events WHERE project = $1")
                .bind(&self.project)
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get::<i64, _>("last")?)
    }

    /// Events with `seq > after`, oldest first, at most `limit` of them.
    pub async fn events_after(
        &self,
        after: i64,
        limit: Option<i64>,
    ) -> Result<Vec<EventRecord>, RegistryError> {
        let rows = sqlx::query(
            "SELECT seq, at_us, payload FROM kiln_events WHERE project = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(&self.project)
        .bind(after)
        .bind(limit.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq")?;
                let at: i64 = row.try_get("at_us")?;
                let payload: String = row.try_get("payload")?;
                let event =
                    serde_json::from_str(&payload).map_err(|e| RegistryError::CorruptEvent {
                        seq,
                        reason: e.to_string(),
                    })?;
                Ok(EventRecord { seq, at, event })
            })
            .collect()
    }

    /// The whole log, oldest first.
    pub async fn events(&self) -> Result<Vec<EventRecord>, RegistryError> {
        self.events_after(0, None).await
    }

    /// The current state, replayed from the log.
    pub async fn state(&self) -> Result<State, RegistryError> {
        State::replay(&self.events().await?)
    }

    /// Brings `state` up to date by replaying only the events it has not seen yet.
    pub async fn refresh(&self, state: &mut State) -> Result<bool, RegistryError> {
        let new = self.events_after(state.last_seq, None).await?;
        for r in &new {
            state.apply(r)?;
        }
        Ok(!new.is_empty())
    }

    /// Appends `events` atomically, if and only if the log still ends at `expected_last_seq`.
    /// Returns the new last sequence number.
    pub async fn append(
        &self,
        expected_last_seq: i64,
        events: &[Event],
    ) -> Result<i64, RegistryError> {
        if events.is_empty() {
            return Ok(expected_last_seq);
        }
        let conflict = |found| RegistryError::Conflict {
            expected: expected_last_seq,
            found,
        };
        let mut tx: Transaction<'static, Any> = self.pool.begin().await?;
        let found: i64 =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM kiln_events WHERE project = $1")
                .bind(&self.project)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| concurrent(e, || conflict(expected_last_seq)))?
                .try_get("last")?;
        if found != expected_last_seq {
            return Err(conflict(found));
        }
        let at = now_micros();
        let mut seq = expected_last_seq;
        for event in events {
            seq += 1;
            // Serialising our own event types to JSON cannot fail: they hold only strings,
            // numbers, maps with string keys and vectors.
            let payload =
                serde_json::to_string(event).map_err(|e| RegistryError::CorruptEvent {
                    seq,
                    reason: e.to_string(),
                })?;
            sqlx::query(
                "INSERT INTO kiln_events (project, seq, at_us, kind, subject, payload) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&self.project)
            .bind(seq)
            .bind(at)
            .bind(event.kind())
            .bind(event.subject())
            .bind(payload)
            .execute(&mut *tx)
            .await
            .map_err(|e| concurrent(e, || conflict(seq)))?;
        }
        tx.commit()
            .await
            .map_err(|e| concurrent(e, || conflict(seq)))?;
        Ok(seq)
    }

    /// Closes the connection pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Maps the ways a concurrent writer shows up to `Conflict`: a duplicate sequence number
/// (PostgreSQL under READ COMMITTED), or SQLite refusing the write lock because another
/// connection holds it (`SQLITE_BUSY` / `SQLITE_LOCKED` and their extended codes).
fn concurrent(e: sqlx::Error, conflict: impl FnOnce() -> RegistryError) -> RegistryError {
    if let sqlx::Error::Database(db) = &e {
        // SQLite codes are decimal numbers (extended codes keep the primary code in the low
        // byte); PostgreSQL's SQLSTATEs are always five characters.
        let sqlite_code = db
            .code()
            .filter(|c| c.len() < 5)
            .and_then(|c| c.parse::<i64>().ok());
        if db.is_unique_violation() || matches!(sqlite_code.map(|c| c & 0xff), Some(5 | 6)) {
            return conflict();
        }
    }
    RegistryError::Database(e)
}

/// Removes a password from a database URL (`postgres://user:secret@host` -> `user:***@host`).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((auth, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://.kiln/r.db"), "sqlite://.kiln/r.db");
    }
}
