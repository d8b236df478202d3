//! The PostgreSQL backend: the state in a database (`--state postgres://…`),
//! for when one machine is not enough — the state must survive the loss of
//! its host, or many jobs read the live state (contract §5).
//!
//! Layout, in the first schema of the connection's `search_path` (`public`
//! unless the URL says otherwise, e.g. `?options=-csearch_path%3Ddeed`):
//! `deed_objects(kind, id, value jsonb)`, `deed_invoices(id, value jsonb)`,
//! `deed_history(seq, entry jsonb)`, `deed_outbox(id, entry jsonb,
//! delivered)`, the one-row `deed_meta(version)` and
//! `deed_schema_migrations(version, name, applied_at)`. Values are the JSON
//! of the same typed structs the sled backend stores ([`super::codec`]);
//! they are always decoded straight into those structs, so a dump of this
//! backend is byte-identical to a dump of a sled state holding the same
//! data. Ids are `text COLLATE "C"`, so `ORDER BY id` is byte order, as
//! sled's keys are.
//!
//! **Migrations** are a short list of numbered SQL steps in this file
//! ([`MIGRATIONS`]), applied in one transaction by a writer (never by a
//! reader) and recorded in `deed_schema_migrations`. We did not take
//! `refinery`: its sync runner creates its history table even when only
//! asked what is applied (a read-only role cannot), does not lock against a
//! second migrator, ties versions to file names rather than to a number we
//! can refuse when it is newer ([`StoreError::NewerSchema`]), and brings a
//! dependency tree (toml, regex, time, walkdir) for forty lines of logic.
//! Here a writer migrates while holding the writer's lock, and DDL in
//! PostgreSQL is transactional, so a reader sees the old schema or the new
//! one, never half of it.
//!
//! **One writer at a time:** [`PostgresStore::open_for_writing`] takes a
//! session-level advisory lock, `pg_try_advisory_lock(0x64656564,
//! hashtext(current_schema()))`, and keeps it for the store's lifetime (the
//! connection's): a second writer gets [`StoreError::InUse`] at once, or
//! waits with `--wait`, as on sled. Readers take no lock: plans in pull
//! requests read the live database with a read-only role while a daemon
//! runs, each read in one `REPEATABLE READ READ ONLY` transaction, so a
//! load or a dump is a consistent snapshot.
//!
//! **Compare-and-set:** `deed_meta.version` is bumped by every write. The
//! store remembers the version it last loaded (or wrote, or found when it
//! opened); [`Store::commit`] locks the meta row (`FOR UPDATE`) in its
//! transaction and refuses with [`StoreError::Conflict`] when the version
//! moved, so a commit never overwrites changes it did not see, even if the
//! advisory lock were lost with its connection. The per-object decisions
//! stay in [`crate::apply::prepare`], made against that loaded state.
//!
//! **Leadership** (migration 2): several daemons on one database elect one
//! leader through the lease row `deed_leases(name, holder, generation,
//! expires_at)` ([`lease`]): acquired and renewed by single statements
//! against the database's clock, each takeover incrementing the generation.
//! A daemon sets its lease as a [`Fence`] on the store; [`Store::commit`]
//! then reads the lease row `FOR SHARE` in the same transaction that locks
//! `deed_meta` and refuses ([`StoreError::Fenced`]) when the generation
//! moved or the lease expired. `FOR SHARE` also makes a takeover wait until
//! that commit is over, so a commit either sees the new generation or
//! finishes before the new leader exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Client, IsolationLevel, NoTls, Transaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::{kind_named, Object};
use super::dump::{read_dump, DumpWriter, Record};
use super::{Commit, Fence, HistoryEntry, Notification, Store, StoreError};
use crate::model::{Invoice, Kind, State};

pub mod lease;

/// The version of the PostgreSQL layout: the number of the last migration.
/// A database migrated further by a newer deed is refused.
pub const POSTGRES_SCHEMA_VERSION: u32 = 2;

/// The first key of deed's advisory locks ("deed" in ASCII); the second is
/// the hash of the schema, so states in different schemas do not collide.
const LOCK_CLASS: i32 = 0x6465_6564;

/// How often `--wait` retries a busy lock.
const WAIT_INTERVAL: Duration = Duration::from_millis(100);

/// Used when the URL gives no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows per statement when writing many.
const CHUNK: usize = 5_000;

/// One numbered step of the layout.
struct Migration {
    version: u32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order. Append only; never edit one that shipped.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "objects, invoices, history, outbox, meta",
        sql: r#"
CREATE TABLE deed_meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version bigint NOT NULL
);
INSERT INTO deed_meta (singleton, version) VALUES (true, 0);
CREATE TABLE deed_objects (
    kind text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE deed_invoices (
    id text COLLATE "C" PRIMARY KEY,
    value jsonb NOT NULL
);
CREATE TABLE deed_history (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    entry jsonb NOT NULL
);
CREATE TABLE deed_outbox (
    id text COLLATE "C" PRIMARY KEY,
    entry jsonb NOT NULL,
    delivered boolean NOT NULL
);
CREATE INDEX deed_outbox_undelivered ON deed_outbox (id) WHERE NOT delivered;
"#,
    },
    Migration {
        version: 2,
        name: "leases of daemons",
        sql: r#"
CREATE TABLE deed_leases (
    name text COLLATE "C" PRIMARY KEY,
    holder text NOT NULL,
    generation bigint NOT NULL CHECK (generation > 0),
    expires_at timestamptz NOT NULL
);
"#,
    },
];

/// The table that records applied migrations.
const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS deed_schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// The state in a PostgreSQL database.
pub struct PostgresStore {
    /// The URL with its password hidden, for messages.
    location: PathBuf,
    writable: bool,
    inner: Mutex<Inner>,
}

struct Inner {
    client: Client,
    /// `deed_meta.version` as this store last loaded, wrote or found it.
    seen_version: i64,
    /// The lease every commit is fenced by ([`Store::set_fence`]).
    fence: Option<Fence>,
}

impl PostgresStore {
    /// Checks and encodes the records of one part of a commit; the last
    /// write of a key in the part wins, as in a sled batch (later parts
    /// are written after it, so theirs win over it).
    fn encode_part(
        &self,
        objects_in: Vec<(Kind, String, Option<crate::model::Fields>)>,
        invoices_in: Vec<(String, Option<Invoice>)>,
        notifications: &[Notification],
    ) -> Result<Rows, StoreError> {
        let mut objects: BTreeMap<(Kind, String), Option<String>> = BTreeMap::new();
        for (kind, id, fields) in objects_in {
            let value = match fields {
                None => None,
                Some(fields) => {
                    let invalid = |message: String| StoreError::InvalidObject {
                        path: self.location.clone(),
                        kind,
                        id: id.clone(),
                        message,
                    };
                    let object = Object::from_fields(kind, &fields)
                        .map_err(|error| invalid(error.to_string()))?;
                    Some(
                        serde_json::to_string(&object)
                            .map_err(|error| invalid(error.to_string()))?,
                    )
                }
            };
            objects.insert((kind, id), value);
        }
        let mut invoices: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (id, invoice) in invoices_in {
            let value = match invoice {
                None => None,
                Some(invoice) => Some(encode(&self.location, &invoice)?),
            };
            invoices.insert(id, value);
        }
        let mut outbox: BTreeMap<String, (String, bool)> = BTreeMap::new();
        for notification in notifications {
            let value = encode(&self.location, notification)?;
            outbox.insert(notification.id.clone(), (value, notification.delivered));
        }
        Ok(Rows {
            objects: objects
                .into_iter()
                .map(|((kind, id), value)| (kind.as_str(), id, value))
                .collect(),
            invoices: invoices.into_iter().collect(),
            history: Vec::new(),
            outbox: outbox
                .into_iter()
                .map(|(id, (value, delivered))| (id, value, delivered))
                .collect(),
        })
    }

    /// Connects to `url`, takes the writer's lock (at once, or waiting with
    /// `wait`), and creates or migrates deed's tables.
    pub fn open_for_writing(url: &str, wait: bool) -> Result<PostgresStore, StoreError> {
        let location = PathBuf::from(redact(url));
        let mut client = connect(url, &location)?;
        take_lock(&mut client, &location, wait)?;
        migrate(&mut client, &location)?;
        let row = client
            .query_one("SELECT version FROM deed_meta", &[])
            .map_err(|error| db_error(&location, &error))?;
        let seen_version: i64 = row
            .try_get(0)
            .map_err(|error| db_error(&location, &error))?;
        Ok(PostgresStore {
            location,
            writable: true,
            inner: Mutex::new(Inner {
                client,
                seen_version,
                fence: None,
            }),
        })
    }

    /// Connects to `url` without locking or creating anything. `None` when
    /// the database holds no deed schema (an empty state).
    pub fn open_for_reading(url: &str) -> Result<Option<PostgresStore>, StoreError> {
        let location = PathBuf::from(redact(url));
        let mut client = connect(url, &location)?;
        let Some(found) = installed_version(&mut client, &location)? else {
            return Ok(None);
        };
        if found > POSTGRES_SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: location,
                found,
                supported: POSTGRES_SCHEMA_VERSION,
            });
        }
        if found < POSTGRES_SCHEMA_VERSION {
            return Err(StoreError::Postgres {
                location: location.display().to_string(),
                message: format!(
                    "schema version {found} is older than this deed's ({POSTGRES_SCHEMA_VERSION}): \
                     run a writing command (such as `deed apply`) once, with a role that may \
                     create tables, to migrate it"
                ),
            });
        }
        Ok(Some(PostgresStore {
            location,
            writable: false,
            inner: Mutex::new(Inner {
                client,
                seen_version: 0,
                fence: None,
            }),
        }))
    }

    /// The URL of this state, password hidden.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// Restores the dump at `dump_path` into this state, which must be empty
    /// ([`StoreError::NotEmpty`] otherwise), in one transaction: a bad line
    /// ([`StoreError::BadDump`]) leaves nothing written.
    pub fn restore(&self, dump_path: &Path) -> Result<(), StoreError> {
        self.check_writable()?;
        let mut inner = self.lock_inner();
        let Inner {
            client,
            seen_version,
            ..
        } = &mut *inner;
        let mut tx = client.transaction().map_err(|e| self.db(&e))?;
        let version = lock_meta(&mut tx, &self.location)?;
        if version != *seen_version {
            return Err(self.conflict());
        }
        let row = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM deed_objects) OR EXISTS (SELECT 1 FROM deed_invoices) \
                 OR EXISTS (SELECT 1 FROM deed_history) OR EXISTS (SELECT 1 FROM deed_outbox)",
                &[],
            )
            .map_err(|e| self.db(&e))?;
        if row.try_get::<_, bool>(0).map_err(|e| self.db(&e))? {
            return Err(StoreError::NotEmpty {
                path: self.location.clone(),
            });
        }
        let mut rows = Rows::default();
        read_dump(dump_path, |record| {
            match record {
                Record::Object { id, object } => {
                    let value = encode(&self.location, &object)?;
                    rows.objects.push((object.kind().as_str(), id, Some(value)));
                }
                Record::Invoice { id, invoice } => {
                    let value = encode(&self.location, &invoice)?;
                    rows.invoices.push((id, Some(value)));
                }
                Record::History(entry) => {
                    let value = encode(&self.location, &entry)?;
                    rows.history.push((to_i64(entry.seq), value));
                }
                Record::Notification(notification) => {
                    let value = encode(&self.location, &notification)?;
                    rows.outbox
                        .push((notification.id, value, notification.delivered));
                }
            }
            if rows.len() >= CHUNK {
                std::mem::take(&mut rows).write(&mut tx, &self.location)?;
            }
            Ok(())
        })?;
        rows.write(&mut tx, &self.location)?;
        let version = bump_version(&mut tx, &self.location)?;
        tx.commit().map_err(|e| self.db(&e))?;
        *seen_version = version;
        Ok(())
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.writable {
            Ok(())
        } else {
            Err(StoreError::OpenedForReading {
                path: self.location.clone(),
            })
        }
    }

    fn db(&self, error: &::postgres::Error) -> StoreError {
        db_error(&self.location, error)
    }

    fn conflict(&self) -> StoreError {
        StoreError::Conflict {
            path: self.location.clone(),
        }
    }

    fn corrupt(&self, key: String, message: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.location.clone(),
            key,
            message: message.to_string(),
        }
    }

    fn decode<T: DeserializeOwned>(
        &self,
        key: impl FnOnce() -> String,
        text: &str,
    ) -> Result<T, StoreError> {
        serde_json::from_str(text).map_err(|error| self.corrupt(key(), error))
    }

    fn decode_object(&self, kind: &str, id: &str, value: &str) -> Result<Object, StoreError> {
        let key = || format!("deed_objects {kind} {id}");
        let kind = kind_named(kind).ok_or_else(|| self.corrupt(key(), "unknown kind"))?;
        Object::decode(kind, value.as_bytes()).map_err(|error| self.corrupt(key(), error))
    }

    /// A consistent read-only snapshot, for loads and dumps.
    /// Every invoice, in id order, decoded, handed to `each`.
    fn each_invoice(
        &self,
        tx: &mut Transaction<'_>,
        mut each: impl FnMut(&str, Invoice) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut rows = tx
            .query_raw(
                "SELECT id, value::text FROM deed_invoices ORDER BY id",
                std::iter::empty::<&str>(),
            )
            .map_err(|e| self.db(&e))?;
        while let Some(row) = rows.next().map_err(|e| self.db(&e))? {
            let id: &str = row.try_get(0).map_err(|e| self.db(&e))?;
            let value: &str = row.try_get(1).map_err(|e| self.db(&e))?;
            let invoice: Invoice = self.decode(|| format!("deed_invoices {id}"), value)?;
            each(id, invoice)?;
        }
        Ok(())
    }

    fn snapshot<'c>(&self, client: &'c mut Client) -> Result<Transaction<'c>, StoreError> {
        client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(|e| self.db(&e))
    }
}

impl Store for PostgresStore {
    fn load(&self) -> Result<State, StoreError> {
        let mut inner = self.lock_inner();
        let Inner {
            client,
            seen_version,
            ..
        } = &mut *inner;
        let mut tx = self.snapshot(client)?;
        let version = meta_version(&mut tx, &self.location)?;
        let mut state = State::default();
        {
            let mut rows = tx
                .query_raw(
                    "SELECT kind, id, value::text FROM deed_objects",
                    std::iter::empty::<&str>(),
                )
                .map_err(|e| self.db(&e))?;
            while let Some(row) = rows.next().map_err(|e| self.db(&e))? {
                let kind: &str = row.try_get(0).map_err(|e| self.db(&e))?;
                let id: &str = row.try_get(1).map_err(|e| self.db(&e))?;
                let value: &str = row.try_get(2).map_err(|e| self.db(&e))?;
                self.decode_object(kind, id, value)?
                    .insert_into(&mut state, id.to_string());
            }
        }
        self.each_invoice(&mut tx, |id, invoice| {
            state.invoices.insert(id.to_string(), invoice);
            Ok(())
        })?;
        tx.commit().map_err(|e| self.db(&e))?;
        *seen_version = version;
        Ok(state)
    }

    fn commit(&self, commit: Commit<'_>) -> Result<(), StoreError> {
        if commit.is_empty() {
            return Ok(());
        }
        self.check_writable()?;
        let mut inner = self.lock_inner();
        let Inner {
            client,
            seen_version,
            fence,
        } = &mut *inner;
        let mut tx = client.transaction().map_err(|e| self.db(&e))?;
        let version = lock_meta(&mut tx, &self.location)?;
        if let Some(fence) = fence {
            check_fence(&mut tx, &self.location, fence)?;
        }
        if version != *seen_version {
            return Err(self.conflict());
        }
        // One transaction; the parts of a large commit are made, checked,
        // encoded and written one after the other inside it, so a commit
        // of a million records is never held whole. Any error drops the
        // transaction: nothing is written.
        let mut last_seq: Option<i64> = None;
        let mut wrote = false;
        for part in commit.into_parts() {
            let part = part?;
            if part.is_empty() {
                continue;
            }
            let mut objects = part.objects;
            objects.extend(super::assets_as_objects(part.packed_assets)?);
            let mut rows = self.encode_part(objects, part.invoices, &part.notifications)?;
            if !part.history.is_empty() {
                let mut seq = match last_seq {
                    Some(seq) => seq,
                    None => {
                        let row = tx
                            .query_one(
                                "SELECT coalesce(max(seq), 0)::bigint FROM deed_history",
                                &[],
                            )
                            .map_err(|e| self.db(&e))?;
                        row.try_get(0).map_err(|e| self.db(&e))?
                    }
                };
                for mut entry in part.history {
                    seq += 1;
                    entry.seq = u64::try_from(seq).unwrap_or_default();
                    rows.history.push((seq, encode(&self.location, &entry)?));
                }
                last_seq = Some(seq);
            }
            rows.write(&mut tx, &self.location)?;
            wrote = true;
        }
        if !wrote {
            return Ok(());
        }
        let version = bump_version(&mut tx, &self.location)?;
        tx.commit().map_err(|e| self.db(&e))?;
        *seen_version = version;
        Ok(())
    }

    fn history(&self, limit: Option<usize>) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut inner = self.lock_inner();
        let rows = match limit {
            None => inner.client.query(
                "SELECT seq, entry::text FROM deed_history ORDER BY seq",
                &[],
            ),
            Some(limit) => inner.client.query(
                "SELECT seq, entry::text FROM deed_history ORDER BY seq DESC LIMIT $1",
                &[&i64::try_from(limit).unwrap_or(i64::MAX)],
            ),
        }
        .map_err(|e| self.db(&e))?;
        let mut entries = rows
            .iter()
            .map(|row| {
                let seq: i64 = row.try_get(0).map_err(|e| self.db(&e))?;
                let entry: &str = row.try_get(1).map_err(|e| self.db(&e))?;
                self.decode(|| format!("deed_history {seq}"), entry)
            })
            .collect::<Result<Vec<HistoryEntry>, _>>()?;
        if limit.is_some() {
            entries.reverse();
        }
        Ok(entries)
    }

    fn outbox(&self) -> Result<Vec<Notification>, StoreError> {
        let mut inner = self.lock_inner();
        let rows = inner
            .client
            .query("SELECT id, entry::text FROM deed_outbox", &[])
            .map_err(|e| self.db(&e))?;
        let mut notifications = rows
            .iter()
            .map(|row| {
                let id: &str = row.try_get(0).map_err(|e| self.db(&e))?;
                let entry: &str = row.try_get(1).map_err(|e| self.db(&e))?;
                self.decode(|| format!("deed_outbox {id}"), entry)
            })
            .collect::<Result<Vec<Notification>, _>>()?;
        notifications.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(notifications)
    }

    /// Unknown ids and notifications already delivered are left alone.
    fn mark_delivered(&self, ids: &[String]) -> Result<(), StoreError> {
        self.check_writable()?;
        if ids.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock_inner();
        let Inner {
            client,
            seen_version,
            fence,
        } = &mut *inner;
        let mut tx = client.transaction().map_err(|e| self.db(&e))?;
        let version = lock_meta(&mut tx, &self.location)?;
        if let Some(fence) = fence {
            check_fence(&mut tx, &self.location, fence)?;
        }
        let changed = tx
            .execute(
                "UPDATE deed_outbox SET delivered = true, \
                 entry = jsonb_set(entry, '{delivered}', 'true'::jsonb) \
                 WHERE id = ANY($1::text[]) AND NOT delivered",
                &[&ids],
            )
            .map_err(|e| self.db(&e))?;
        if changed == 0 {
            return tx.commit().map_err(|e| self.db(&e));
        }
        let new_version = bump_version(&mut tx, &self.location)?;
        tx.commit().map_err(|e| self.db(&e))?;
        // Delivery is not a change a later commit must have seen; but a
        // change by someone else before it still is.
        if *seen_version == version {
            *seen_version = new_version;
        }
        Ok(())
    }

    fn dump(&self, out: &mut dyn std::io::Write) -> Result<(), StoreError> {
        let mut inner = self.lock_inner();
        let mut tx = self.snapshot(&mut inner.client)?;
        let mut writer = DumpWriter::new(out)?;
        for kind in Kind::ALL {
            let mut rows = tx
                .query_raw(
                    "SELECT id, value::text FROM deed_objects WHERE kind = $1 ORDER BY id",
                    [kind.as_str()],
                )
                .map_err(|e| self.db(&e))?;
            while let Some(row) = rows.next().map_err(|e| self.db(&e))? {
                let id: &str = row.try_get(0).map_err(|e| self.db(&e))?;
                let value: &str = row.try_get(1).map_err(|e| self.db(&e))?;
                let object = self.decode_object(kind.as_str(), id, value)?;
                writer.object(kind.as_str(), id, &object)?;
            }
        }
        self.each_invoice(&mut tx, |id, invoice| writer.invoice(id, &invoice))?;
        {
            let mut rows = tx
                .query_raw(
                    "SELECT seq, entry::text FROM deed_history ORDER BY seq",
                    std::iter::empty::<&str>(),
                )
                .map_err(|e| self.db(&e))?;
            let mut expected: u64 = 1;
            while let Some(row) = rows.next().map_err(|e| self.db(&e))? {
                let seq: i64 = row.try_get(0).map_err(|e| self.db(&e))?;
                let value: &str = row.try_get(1).map_err(|e| self.db(&e))?;
                let key = || format!("deed_history {seq}");
                let entry: HistoryEntry = self.decode(key, value)?;
                if entry.seq != expected || u64::try_from(seq).ok() != Some(expected) {
                    return Err(self.corrupt(
                        key(),
                        format!("history seq {} where {expected} was expected", entry.seq),
                    ));
                }
                expected += 1;
                writer.history(&entry)?;
            }
        }
        {
            let mut rows = tx
                .query_raw(
                    "SELECT id, entry::text FROM deed_outbox ORDER BY id",
                    std::iter::empty::<&str>(),
                )
                .map_err(|e| self.db(&e))?;
            while let Some(row) = rows.next().map_err(|e| self.db(&e))? {
                let id: &str = row.try_get(0).map_err(|e| self.db(&e))?;
                let value: &str = row.try_get(1).map_err(|e| self.db(&e))?;
                let notification: Notification =
                    self.decode(|| format!("deed_outbox {id}"), value)?;
                writer.notification(&notification)?;
            }
        }
        writer.finish()?;
        tx.commit().map_err(|e| self.db(&e))
    }

    fn set_fence(&self, fence: Option<Fence>) {
        self.lock_inner().fence = fence;
    }
}

/// Rows to write in one transaction: `None` values delete.
#[derive(Default)]
struct Rows {
    objects: Vec<(&'static str, String, Option<String>)>,
    invoices: Vec<(String, Option<String>)>,
    history: Vec<(i64, String)>,
    outbox: Vec<(String, String, bool)>,
}

impl Rows {
    fn len(&self) -> usize {
        self.objects.len() + self.invoices.len() + self.history.len() + self.outbox.len()
    }

    /// Writes every row, [`CHUNK`] rows per statement.
    fn write(self, tx: &mut Transaction<'_>, location: &Path) -> Result<(), StoreError> {
        let db = |error: ::postgres::Error| db_error(location, &error);
        let (deleted, written): (Vec<_>, Vec<_>) = self
            .objects
            .iter()
            .partition(|(_, _, value)| value.is_none());
        for chunk in deleted.chunks(CHUNK) {
            let kinds: Vec<&str> = chunk.iter().map(|row| row.0).collect();
            let ids: Vec<&str> = chunk.iter().map(|row| row.1.as_str()).collect();
            tx.execute(
                "DELETE FROM deed_objects o USING unnest($1::text[], $2::text[]) AS d(kind, id) \
                 WHERE o.kind = d.kind AND o.id = d.id",
                &[&kinds, &ids],
            )
            .map_err(db)?;
        }
        for chunk in written.chunks(CHUNK) {
            let kinds: Vec<&str> = chunk.iter().map(|row| row.0).collect();
            let ids: Vec<&str> = chunk.iter().map(|row| row.1.as_str()).collect();
            let values: Vec<&str> = chunk
                .iter()
                .map(|row| row.2.as_deref().unwrap_or_default())
                .collect();
            tx.execute(
                "INSERT INTO deed_objects (kind, id, value) \
                 SELECT kind, id, value::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) AS r(kind, id, value) \
                 ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value",
                &[&kinds, &ids, &values],
            )
            .map_err(db)?;
        }
        let (deleted, written): (Vec<_>, Vec<_>) =
            self.invoices.iter().partition(|(_, value)| value.is_none());
        for chunk in deleted.chunks(CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|row| row.0.as_str()).collect();
            tx.execute(
                "DELETE FROM deed_invoices WHERE id = ANY($1::text[])",
                &[&ids],
            )
            .map_err(db)?;
        }
        for chunk in written.chunks(CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|row| row.0.as_str()).collect();
            let values: Vec<&str> = chunk
                .iter()
                .map(|row| row.1.as_deref().unwrap_or_default())
                .collect();
            tx.execute(
                "INSERT INTO deed_invoices (id, value) \
                 SELECT id, value::jsonb FROM unnest($1::text[], $2::text[]) AS r(id, value) \
                 ON CONFLICT (id) DO UPDATE SET value = excluded.value",
                &[&ids, &values],
            )
            .map_err(db)?;
        }
        for chunk in self.history.chunks(CHUNK) {
            let seqs: Vec<i64> = chunk.iter().map(|row| row.0).collect();
            let entries: Vec<&str> = chunk.iter().map(|row| row.1.as_str()).collect();
            tx.execute(
                "INSERT INTO deed_history (seq, entry) \
                 SELECT seq, entry::jsonb FROM unnest($1::bigint[], $2::text[]) AS r(seq, entry)",
                &[&seqs, &entries],
            )
            .map_err(db)?;
        }
        for chunk in self.outbox.chunks(CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|row| row.0.as_str()).collect();
            let entries: Vec<&str> = chunk.iter().map(|row| row.1.as_str()).collect();
            let delivered: Vec<bool> = chunk.iter().map(|row| row.2).collect();
            tx.execute(
                "INSERT INTO deed_outbox (id, entry, delivered) \
                 SELECT id, entry::jsonb, delivered \
                 FROM unnest($1::text[], $2::text[], $3::boolean[]) AS r(id, entry, delivered) \
                 ON CONFLICT (id) DO UPDATE SET entry = excluded.entry, delivered = excluded.delivered",
                &[&ids, &entries, &delivered],
            )
            .map_err(db)?;
        }
        Ok(())
    }
}

/// Connects, with a default connect timeout and application name.
fn connect(url: &str, location: &Path) -> Result<Client, StoreError> {
    let mut config: ::postgres::Config =
        url.parse()
            .map_err(|error: ::postgres::Error| StoreError::Postgres {
                location: location.display().to_string(),
                message: format!("not a valid PostgreSQL URL: {}", describe(&error)),
            })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("deed");
    }
    // The driver's `connect_timeout` bounds the TCP connect only: a server
    // (or proxy) that accepts the connection and then says nothing would
    // hang the command for ever. As with libpq, the timeout bounds the whole
    // connection here: startup and authentication included. The attempt
    // goes on on its own thread and ends with the process, or when the
    // server finally answers or closes (then the client is dropped).
    let timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let (sender, receiver) = std::sync::mpsc::channel();
    let attempt = std::thread::Builder::new()
        .name("deed-postgres-connect".into())
        .spawn(move || {
            let _ = sender.send(config.connect(NoTls));
        });
    let failed = |message: String| StoreError::Postgres {
        location: location.display().to_string(),
        message,
    };
    if let Err(error) = attempt {
        return Err(failed(format!("cannot start connecting: {error}")));
    }
    match receiver.recv_timeout(timeout) {
        Ok(connected) => {
            connected.map_err(|error| failed(format!("cannot connect: {}", describe(&error))))
        }
        Err(_) => Err(failed(format!(
            "cannot connect: the server did not complete the connection within {} s (connect_timeout in the URL sets this)",
            timeout.as_secs_f64()
        ))),
    }
}

impl Drop for PostgresStore {
    /// Releases the writer's lock explicitly: the server frees a session's
    /// locks only when it has processed the disconnect, which can come after
    /// the next `deed` command has already asked for the lock.
    fn drop(&mut self) {
        if !self.writable {
            return;
        }
        if let Ok(inner) = self.inner.get_mut() {
            let _ = inner
                .client
                .batch_execute("SELECT pg_advisory_unlock_all()");
        }
    }
}

/// Takes the writer's advisory lock for the session.
fn take_lock(client: &mut Client, location: &Path, wait: bool) -> Result<(), StoreError> {
    loop {
        let row = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext(coalesce(current_schema(), '')))",
                &[&LOCK_CLASS],
            )
            .map_err(|error| db_error(location, &error))?;
        if row
            .try_get::<_, bool>(0)
            .map_err(|error| db_error(location, &error))?
        {
            return Ok(());
        }
        if !wait {
            return Err(StoreError::InUse {
                path: location.to_path_buf(),
            });
        }
        std::thread::sleep(WAIT_INTERVAL);
    }
}

/// The last applied migration, or `None` without a deed schema.
fn installed_version(client: &mut Client, location: &Path) -> Result<Option<u32>, StoreError> {
    let db = |error: ::postgres::Error| db_error(location, &error);
    let row = client
        .query_one(
            "SELECT to_regclass('deed_schema_migrations') IS NOT NULL",
            &[],
        )
        .map_err(db)?;
    if !row.try_get::<_, bool>(0).map_err(db)? {
        return Ok(None);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM deed_schema_migrations",
            &[],
        )
        .map_err(db)?;
    let version: i32 = row.try_get(0).map_err(db)?;
    Ok(Some(u32::try_from(version).unwrap_or_default()))
}

/// Applies the missing migrations in one transaction; refuses a database
/// migrated by a newer deed. The caller holds the writer's lock.
fn migrate(client: &mut Client, location: &Path) -> Result<(), StoreError> {
    let found = installed_version(client, location)?.unwrap_or(0);
    if found > POSTGRES_SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: location.to_path_buf(),
            found,
            supported: POSTGRES_SCHEMA_VERSION,
        });
    }
    if found == POSTGRES_SCHEMA_VERSION {
        return Ok(());
    }
    let db = |error: ::postgres::Error| db_error(location, &error);
    let mut tx = client.transaction().map_err(db)?;
    tx.batch_execute(MIGRATIONS_TABLE).map_err(db)?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(migration.sql)
            .map_err(|error| StoreError::Postgres {
                location: location.display().to_string(),
                message: format!(
                    "migration {} ({}) failed: {}",
                    migration.version,
                    migration.name,
                    describe(&error)
                ),
            })?;
        tx.execute(
            "INSERT INTO deed_schema_migrations (version, name) VALUES ($1, $2)",
            &[
                &i32::try_from(migration.version).unwrap_or(i32::MAX),
                &migration.name,
            ],
        )
        .map_err(db)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "migrated the PostgreSQL schema"
        );
    }
    tx.commit().map_err(db)
}

fn meta_version(tx: &mut Transaction<'_>, location: &Path) -> Result<i64, StoreError> {
    let row = tx
        .query_one("SELECT version FROM deed_meta", &[])
        .map_err(|error| db_error(location, &error))?;
    row.try_get(0).map_err(|error| db_error(location, &error))
}

/// Locks the meta row for the rest of `tx` and returns its version.
fn lock_meta(tx: &mut Transaction<'_>, location: &Path) -> Result<i64, StoreError> {
    let row = tx
        .query_one("SELECT version FROM deed_meta FOR UPDATE", &[])
        .map_err(|error| db_error(location, &error))?;
    row.try_get(0).map_err(|error| db_error(location, &error))
}

/// Refuses, inside a commit's transaction, when `fence` no longer holds:
/// the lease moved to another generation (another daemon took over) or
/// expired. Reading the lease row `FOR SHARE` makes a takeover wait for
/// the end of this transaction.
fn check_fence(tx: &mut Transaction<'_>, location: &Path, fence: &Fence) -> Result<(), StoreError> {
    let db = |error: ::postgres::Error| db_error(location, &error);
    let fenced = |message: String| StoreError::Fenced {
        path: location.to_path_buf(),
        message,
    };
    let row = tx
        .query_opt(
            "SELECT holder, generation, expires_at > clock_timestamp() \
             FROM deed_leases WHERE name = $1 FOR SHARE",
            &[&fence.lease],
        )
        .map_err(db)?;
    let Some(row) = row else {
        return Err(fenced(format!(
            "lease {:?} does not exist: this daemon does not lead",
            fence.lease
        )));
    };
    let holder: String = row.try_get(0).map_err(db)?;
    let generation: i64 = row.try_get(1).map_err(db)?;
    let live: bool = row.try_get(2).map_err(db)?;
    if generation != fence.generation || holder != fence.holder {
        return Err(fenced(format!(
            "lease {:?} moved from generation {} to {generation}, held by {holder}: \
             another daemon leads now",
            fence.lease, fence.generation
        )));
    }
    if !live {
        return Err(fenced(format!(
            "lease {:?} (generation {generation}) expired before this commit: \
             this daemon no longer leads",
            fence.lease
        )));
    }
    Ok(())
}

fn bump_version(tx: &mut Transaction<'_>, location: &Path) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            "UPDATE deed_meta SET version = version + 1 RETURNING version",
            &[],
        )
        .map_err(|error| db_error(location, &error))?;
    row.try_get(0).map_err(|error| db_error(location, &error))
}

fn encode<T: Serialize>(location: &Path, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| StoreError::Corrupt {
        path: location.to_path_buf(),
        key: String::new(),
        message: format!("cannot encode a record: {error}"),
    })
}

fn to_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn db_error(location: &Path, error: &::postgres::Error) -> StoreError {
    StoreError::Postgres {
        location: location.display().to_string(),
        message: describe(error),
    }
}

/// The server's message (with detail and hint) or the client's, with its
/// causes.
fn describe(error: &::postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut message = db.message().to_string();
        if let Some(detail) = db.detail() {
            message.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            message.push_str(&format!("; hint: {hint}"));
        }
        return message;
    }
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// `url` with its password replaced by `***` (in the user info and in a
/// `password=` parameter), for messages and logs.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some(parts) => parts,
        None => return url.to_string(),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key == "password" => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Throw-away databases for tests, shared by the unit tests and the
/// integration tests (`tests/cli`). Not part of deed's interface.
#[doc(hidden)]
pub mod testing {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    /// The variable that names the test server.
    pub const URL_VARIABLE: &str = "DEED_TEST_DATABASE_URL";
    /// Used when the variable is not set, if a server answers there.
    pub const DEFAULT_URL: &str = "postgres://root@127.0.0.1:5432/test";

    /// A database created for one test, dropped when this is dropped.
    pub struct TestDatabase {
        /// The URL of the new database.
        pub url: String,
        admin_url: String,
        name: String,
    }

    /// The server to use, probed once per process: `DEED_TEST_DATABASE_URL`
    /// (which must answer: a configured server that does not is a failure),
    /// else [`DEFAULT_URL`] if it answers within 2 s. `None`, after one line
    /// on standard error saying how to enable them, when there is none.
    pub fn server() -> Option<&'static str> {
        static SERVER: OnceLock<Option<String>> = OnceLock::new();
        SERVER
            .get_or_init(|| {
                let configured = std::env::var(URL_VARIABLE).ok().filter(|url| !url.is_empty());
                let url = configured.clone().unwrap_or_else(|| DEFAULT_URL.to_string());
                match admin_client(&url) {
                    Ok(_) => Some(url),
                    Err(error) if configured.is_some() => {
                        panic!("{URL_VARIABLE}={}: {error}", super::redact(&url))
                    }
                    Err(_) => {
                        eprintln!(
                            "skipping PostgreSQL tests: no server at {} (set {URL_VARIABLE} to enable)",
                            super::redact(&url)
                        );
                        None
                    }
                }
            })
            .as_deref()
    }

    fn admin_client(url: &str) -> Result<::postgres::Client, ::postgres::Error> {
        let mut config: ::postgres::Config = url.parse()?;
        config.connect_timeout(Duration::from_secs(2));
        config.connect(::postgres::NoTls)
    }

    impl TestDatabase {
        /// A fresh, empty database on [`server`], or `None` without one.
        pub fn create() -> Option<TestDatabase> {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let admin_url = server()?.to_string();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.subsec_nanos())
                .unwrap_or_default();
            let name = format!(
                "deed_t_{}_{}_{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let mut client = admin_client(&admin_url).expect("connect to the test server");
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("create a test database");
            Some(TestDatabase {
                url: with_database(&admin_url, &name),
                admin_url,
                name,
            })
        }

        /// A client connected to this database.
        pub fn client(&self) -> ::postgres::Client {
            admin_client(&self.url).expect("connect to the test database")
        }
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            if let Ok(mut client) = admin_client(&self.admin_url) {
                let _ = client.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    /// `url` with its database name replaced by `name`.
    pub fn with_database(url: &str, name: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_string();
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let query = tail.split_once('?').map(|(_, query)| query);
        match query {
            Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
            None => format!("{scheme}://{authority}/{name}"),
        }
    }
}

#[cfg(test)]
mod tests;
