//! SQLite storage: handled updates with each bot's offset, the outbox of
//! replies, the mood and the bored entries. WAL mode, versioned migrations.
//!
//! The one rule that makes restarts safe: an update is recorded as handled,
//! its effects applied, its replies queued and the bot's offset advanced in
//! one transaction. A `kill -9` before the commit leaves the update unconfirmed
//! (Telegram sends it again and it is handled then); after it, the update is
//! never handled again, and its queued replies are sent by whoever runs next.
//!
//! A reply is marked as attempted (committed) just before its request goes on
//! the wire, and right after its answer the mark is cleared (the reply waits
//! for a retry) or the reply leaves the outbox: a mark means "this request
//! was in flight". A reply
//! found marked at startup was in flight when the process died: it may or may
//! not have arrived, and Telegram offers no way to ask or to send
//! idempotently, so the bot's delivery policy decides (`sender`): drop it, or
//! send it again.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension as _, Transaction, params};

/// Schema changes, applied in order; `PRAGMA user_version` counts how many ran.
/// Append only: never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE bot_state (
         bot TEXT PRIMARY KEY,
         next_offset INTEGER NOT NULL DEFAULT 0,
         mode TEXT NOT NULL DEFAULT 'polling'
     );
     CREATE TABLE handled_update (
         bot TEXT NOT NULL,
         update_id INTEGER NOT NULL,
         handled_at INTEGER NOT NULL,
         PRIMARY KEY (bot, update_id)
     ) WITHOUT ROWID;
     CREATE TABLE outbox (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         bot TEXT NOT NULL,
         chat_id INTEGER NOT NULL,
         text TEXT NOT NULL,
         reply_to INTEGER,
         created_at INTEGER NOT NULL,
         attempted_at INTEGER
     );
     CREATE INDEX outbox_by_bot ON outbox (bot, id);
     CREATE TABLE bored (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         bot TEXT NOT NULL,
         user_id INTEGER NOT NULL,
         user_name TEXT NOT NULL,
         chat_id INTEGER NOT NULL,
         at INTEGER NOT NULL
     );
     CREATE TABLE mood (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         text TEXT NOT NULL,
         set_by TEXT NOT NULL,
         at INTEGER NOT NULL
     );",
    // 2: "N bored so far today" from a counter kept in the same transaction,
    // instead of counting the day's rows on every /bored.
    "CREATE TABLE bored_daily (
         day INTEGER PRIMARY KEY,
         count INTEGER NOT NULL
     );
     INSERT INTO bored_daily (day, count) SELECT at / 86400, count(*) FROM bored GROUP BY at / 86400;",
];

/// A reply waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub(crate) id: i64,
    pub(crate) chat_id: i64,
    pub(crate) text: String,
    pub(crate) reply_to: Option<i64>,
}

/// A reply a handler wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) chat_id: i64,
    pub(crate) text: String,
    pub(crate) reply_to: Option<i64>,
}

/// Outbox changes `Store::settle` commits together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) done: Vec<i64>,
    pub(crate) unmark: Vec<i64>,
    pub(crate) mark: Vec<i64>,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        self.done.is_empty() && self.unmark.is_empty() && self.mark.is_empty()
    }
}

/// The current mood.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Mood {
    pub(crate) text: String,
    pub(crate) set_by: String,
    pub(crate) at: i64,
}

/// One "I'm bored".
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Bored {
    pub(crate) bot: String,
    pub(crate) user_name: String,
    pub(crate) at: i64,
}

/// The database. Calls block: run them on `spawn_blocking`.
#[derive(Debug)]
pub(crate) struct Store {
    conn: Mutex<Connection>,
    /// A second connection for the dashboard's reads and for checkpoints, so
    /// neither waits behind (or stalls) the writer. WAL lets it read while the
    /// writer writes. `None` for in-memory test databases.
    side: Option<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) `<dir>/app.sqlite3` and migrates it.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Store> {
        use anyhow::Context as _;
        let path = dir.join("app.sqlite3");
        let conn = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut store = Store::init(conn).with_context(|| format!("preparing {}", path.display()))?;
        let side = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        side.busy_timeout(std::time::Duration::from_secs(5))?;
        store.side = Some(Mutex::new(side));
        Ok(store)
    }

    /// An in-memory database, for tests.
    #[cfg(test)]
    pub(crate) fn memory() -> Store {
        Store::init(Connection::open_in_memory().unwrap()).unwrap()
    }

    fn init(conn: Connection) -> anyhow::Result<Store> {
        // WAL: readers (the dashboard) never block the writer. synchronous =
        // NORMAL keeps every committed transaction across a process crash
        // (kill -9); only a power loss can drop the last few.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints (the only fsyncs in this mode) run from `checkpoint`, on
        // the side connection, not inside whichever commit crosses the limit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Store { conn: Mutex::new(conn), side: None };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.lock();
        let done: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if done > MIGRATIONS.len() {
            anyhow::bail!(
                "the database has schema version {done}, newer than this build knows ({}); run a newer app",
                MIGRATIONS.len()
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (an open
        // transaction rolls back on drop), so a poisoned lock is safe to use.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The side connection when there is one, else the writer's.
    fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        match &self.side {
            Some(side) => side.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            None => self.lock(),
        }
    }

    /// Copies the write-ahead log into the database (PASSIVE: never waits for
    /// the writer), keeping the log small.
    pub(crate) fn checkpoint(&self) -> rusqlite::Result<()> {
        self.read().query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
    }

    /// The offset to ask getUpdates for next.
    pub(crate) fn next_offset(&self, bot: &str) -> rusqlite::Result<i64> {
        self.lock()
            .query_row("SELECT next_offset FROM bot_state WHERE bot = ?1", [bot], |r| r.get(0))
            .optional()
            .map(Option::unwrap_or_default)
    }

    /// The mode a bot last ran in (to know when it goes back to polling).
    pub(crate) fn last_mode(&self, bot: &str) -> rusqlite::Result<Option<String>> {
        self.lock().query_row("SELECT mode FROM bot_state WHERE bot = ?1", [bot], |r| r.get(0)).optional()
    }

    /// Records the mode a bot runs in now.
    pub(crate) fn set_mode(&self, bot: &str, mode: &str) -> rusqlite::Result<()> {
        self.lock().execute(
            "INSERT INTO bot_state (bot, mode) VALUES (?1, ?2) ON CONFLICT (bot) DO UPDATE SET mode = ?2",
            params![bot, mode],
        )?;
        Ok(())
    }

    /// Handles a batch of updates in one transaction: skips any already
    /// handled, runs `handle` on the others (it may read and write through the
    /// transaction), queues their replies and, when `advance_offset`, moves the
    /// bot's offset past the last one. Returns the queued replies and how many
    /// updates were new.
    pub(crate) fn handle_batch<U>(
        &self,
        bot: &str,
        updates: &[U],
        update_id: impl Fn(&U) -> i64,
        advance_offset: bool,
        now: i64,
        mut handle: impl FnMut(&Transaction<'_>, &U) -> rusqlite::Result<Vec<Reply>>,
    ) -> rusqlite::Result<(Vec<Outgoing>, usize)> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut queued = Vec::new();
        let mut new = 0;
        for update in updates {
            let id = update_id(update);
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO handled_update (bot, update_id, handled_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![bot, id, now])?;
            if inserted == 0 {
                continue;
            }
            new += 1;
            for reply in handle(&tx, update)? {
                tx.prepare_cached(
                    "INSERT INTO outbox (bot, chat_id, text, reply_to, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![bot, reply.chat_id, reply.text, reply.reply_to, now])?;
                queued.push(Outgoing {
                    id: tx.last_insert_rowid(),
                    chat_id: reply.chat_id,
                    text: reply.text,
                    reply_to: reply.reply_to,
                });
            }
        }
        if advance_offset && let Some(last) = updates.iter().map(&update_id).max() {
            tx.execute(
                "INSERT INTO bot_state (bot, next_offset) VALUES (?1, ?2)
                     ON CONFLICT (bot) DO UPDATE SET next_offset = max(next_offset, ?2)",
                params![bot, last + 1],
            )?;
        }
        tx.commit()?;
        Ok((queued, new))
    }

    /// At startup, for at-most-once bots: forgets the replies a previous run
    /// had in flight when it stopped (see the module docs). Returns how many.
    pub(crate) fn drop_in_flight(&self, bot: &str) -> rusqlite::Result<usize> {
        self.lock().execute("DELETE FROM outbox WHERE bot = ?1 AND attempted_at IS NOT NULL", [bot])
    }

    /// At startup, for at-least-once bots: clears the marks of the replies a
    /// previous run had in flight, so they are sent again. Returns how many.
    pub(crate) fn unmark_in_flight(&self, bot: &str) -> rusqlite::Result<usize> {
        self.lock().execute("UPDATE outbox SET attempted_at = NULL WHERE bot = ?1 AND attempted_at IS NOT NULL", [bot])
    }

    /// Replies not in flight, oldest first.
    pub(crate) fn pending(&self, bot: &str) -> rusqlite::Result<Vec<Outgoing>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, chat_id, text, reply_to FROM outbox WHERE bot = ?1 AND attempted_at IS NULL ORDER BY id",
        )?;
        stmt.query_map([bot], |r| {
            Ok(Outgoing { id: r.get(0)?, chat_id: r.get(1)?, text: r.get(2)?, reply_to: r.get(3)? })
        })?
        .collect()
    }

    /// Records what the sender learnt and is about to do, in one
    /// transaction: `done` replies leave the outbox (delivered, refused for
    /// good, or given up), `unmark` ones are no longer in flight (an answer
    /// said they were not delivered, or they are to be sent again), and
    /// `mark` ones are about to go on the wire.
    pub(crate) fn settle(&self, changes: &Changes, now: i64) -> rusqlite::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut done = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            for id in &changes.done {
                done.execute([id])?;
            }
            let mut unmark = tx.prepare_cached("UPDATE outbox SET attempted_at = NULL WHERE id = ?1")?;
            for id in &changes.unmark {
                unmark.execute([id])?;
            }
            let mut mark = tx.prepare_cached("UPDATE outbox SET attempted_at = ?2 WHERE id = ?1")?;
            for id in &changes.mark {
                mark.execute(params![id, now])?;
            }
        }
        tx.commit()
    }

    /// Forgets handled update ids older than `before` (Telegram keeps updates
    /// about 24 hours, so older ids can never come back).
    pub(crate) fn prune(&self, before: i64) -> rusqlite::Result<usize> {
        self.lock().execute("DELETE FROM handled_update WHERE handled_at < ?1", [before])
    }

    /// The current mood.
    pub(crate) fn mood(&self) -> rusqlite::Result<Option<Mood>> {
        mood(&self.read())
    }

    /// The most recent bored entries, newest first.
    pub(crate) fn recent_bored(&self, limit: usize) -> rusqlite::Result<Vec<Bored>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached("SELECT bot, user_name, at FROM bored ORDER BY id DESC LIMIT ?1")?;
        stmt.query_map([limit as i64], |r| Ok(Bored { bot: r.get(0)?, user_name: r.get(1)?, at: r.get(2)? }))?.collect()
    }
}

/// The current mood, inside a transaction or not.
pub(crate) fn mood(conn: &Connection) -> rusqlite::Result<Option<Mood>> {
    conn.query_row("SELECT text, set_by, at FROM mood WHERE id = 1", [], |r| {
        Ok(Mood { text: r.get(0)?, set_by: r.get(1)?, at: r.get(2)? })
    })
    .optional()
}

/// Sets the mood.
pub(crate) fn set_mood(conn: &Connection, text: &str, set_by: &str, at: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO mood (id, text, set_by, at) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET text = ?1, set_by = ?2, at = ?3",
        params![text, set_by, at],
    )?;
    Ok(())
}

/// Records an "I'm bored" and returns how many there were on its (UTC) day.
pub(crate) fn add_bored(
    conn: &Connection,
    bot: &str,
    user_id: i64,
    user_name: &str,
    chat_id: i64,
    at: i64,
) -> rusqlite::Result<i64> {
    conn.prepare_cached("INSERT INTO bored (bot, user_id, user_name, chat_id, at) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![bot, user_id, user_name, chat_id, at])?;
    conn.prepare_cached(
        "INSERT INTO bored_daily (day, count) VALUES (?1, 1)
         ON CONFLICT (day) DO UPDATE SET count = count + 1 RETURNING count",
    )?
    .query_row([at.div_euclid(86_400)], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_handled_once_and_advance_the_offset() {
        let store = Store::memory();
        let reply =
            |_: &Transaction<'_>, id: &i64| Ok(vec![Reply { chat_id: 7, text: format!("re {id}"), reply_to: None }]);
        let (out, new) = store.handle_batch("b", &[10, 11], |u| *u, true, 0, reply).unwrap();
        assert_eq!((out.len(), new), (2, 2));
        assert_eq!(store.next_offset("b").unwrap(), 12);
        // Telegram sends 11 again (its confirmation was lost), and 12.
        let (out, new) = store.handle_batch("b", &[11, 12], |u| *u, true, 0, reply).unwrap();
        assert_eq!((out.len(), new), (1, 1));
        assert_eq!(out[0].text, "re 12");
        assert_eq!(store.pending("b").unwrap().len(), 3);
        store.settle(&Changes { done: vec![out[0].id], ..Changes::default() }, 0).unwrap();
        assert_eq!(store.pending("b").unwrap().len(), 2);
        assert_eq!(store.next_offset("other").unwrap(), 0);
    }

    #[test]
    fn marks_say_what_was_in_flight() {
        let store = Store::memory();
        let reply =
            |_: &Transaction<'_>, id: &i64| Ok(vec![Reply { chat_id: *id, text: "hi".to_owned(), reply_to: None }]);
        let (out, _) = store.handle_batch("b", &[1, 2, 3, 4], |u| *u, true, 0, reply).unwrap();
        let ids: Vec<i64> = out.iter().map(|o| o.id).collect();
        // Two go on the wire; one of them is answered 502 and waits for a retry.
        store.settle(&Changes { mark: vec![ids[0], ids[1]], ..Changes::default() }, 0).unwrap();
        assert_eq!(store.pending("b").unwrap().len(), 2);
        store.settle(&Changes { unmark: vec![ids[1]], mark: vec![ids[2]], ..Changes::default() }, 0).unwrap();
        let pending: Vec<i64> = store.pending("b").unwrap().iter().map(|o| o.id).collect();
        assert_eq!(pending, [ids[1], ids[3]]);
        // The process dies with ids[0] and ids[2] in flight. At-least-once
        // sends them again; at-most-once forgets them. Neither touches the rest.
        assert_eq!(store.unmark_in_flight("b").unwrap(), 2);
        assert_eq!(store.pending("b").unwrap().len(), 4);
        store.settle(&Changes { mark: vec![ids[0], ids[2]], ..Changes::default() }, 0).unwrap();
        assert_eq!(store.drop_in_flight("other").unwrap(), 0);
        assert_eq!(store.drop_in_flight("b").unwrap(), 2);
        assert_eq!(store.drop_in_flight("b").unwrap(), 0);
        let pending: Vec<i64> = store.pending("b").unwrap().iter().map(|o| o.id).collect();
        assert_eq!(pending, [ids[1], ids[3]]);
    }

    #[test]
    fn a_failed_handler_changes_nothing() {
        let store = Store::memory();
        let fail = |_: &Transaction<'_>, _: &i64| Err(rusqlite::Error::InvalidQuery);
        assert!(store.handle_batch("b", &[1], |u| *u, true, 0, fail).is_err());
        assert_eq!(store.next_offset("b").unwrap(), 0);
        assert!(store.pending("b").unwrap().is_empty());
    }

    #[test]
    fn migrations_are_idempotent_and_refuse_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let store = Store::open(dir.path()).unwrap();
        store.lock().pragma_update(None, "user_version", 99).unwrap();
        drop(store);
        let err = Store::open(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("schema version 99"), "{err:#}");
    }
}
