//! The state store: where deed keeps objects, inventory, history and outbox.
//!
//! [`Store`] is the narrow interface every backend implements: load the whole
//! [`State`], commit a [`Commit`] atomically, read the history and the outbox,
//! dump. sled is the embedded default ([`sled_store`]); a `postgres://` URL
//! keeps the state in PostgreSQL ([`postgres`]); a dump file opened with
//! `--state FILE` is a read-only store ([`dump`]). `state migrate` copies a
//! state between any two of them through a dump ([`migrate`]). A large
//! [`Commit`] is produced in [`Parts`] while it is written; sled writes it
//! through a write-ahead journal (`journal`), PostgreSQL in one transaction.
//!
//! Architecture invariant: the store knows nothing of specs or plans beyond
//! the records it keeps; compare-and-set decisions are made by
//! [`crate::apply`] against the state this module loaded while holding the
//! writer's lock.

mod asset_pages;
pub(crate) mod codec;
pub mod dump;
mod history_groups;
mod journal;
pub mod postgres;
pub mod sled_store;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Fields, Invoice, Kind, PackedAsset, State, Timestamp};
use crate::plan::Change;

/// The version of the records' schema in a dump (the `schema_version` of
/// its header); a dump with a newer one is refused. The sled layout has its
/// own version ([`sled_store::SLED_SCHEMA_VERSION`]), PostgreSQL's its own
/// too ([`postgres::POSTGRES_SCHEMA_VERSION`]).
pub const SCHEMA_VERSION: u32 = 1;

/// One applied change, as the history keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Position in the history, from 1, without gaps.
    pub seq: u64,
    pub time: Timestamp,
    pub plan_id: String,
    pub actor: Option<String>,
    /// The git revision of the specs, when they are in a git repository.
    pub revision: Option<String>,
    pub change: Change,
}

/// A queued notification (contract 2.8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable: the same event for the same recipient has the same id.
    pub id: String,
    pub time: Timestamp,
    /// Recipient email.
    pub to: String,
    /// `invitation`, `transfer`, `move`, `removal`.
    pub event: String,
    pub kind: Kind,
    pub object: String,
    pub message: String,
    pub change_id: String,
    pub delivered: bool,
}

/// Everything one apply (or import, or accept) writes, committed at once:
/// the records in its fields, then, in order, those of every part `rest`
/// produces. Within one commit the last write of a key wins.
///
/// A large commit (an apply of a million transfers, an import of a million
/// assets) keeps only its first records in the fields and produces the rest
/// part by part while the store writes them ([`Parts`]), so that deed never
/// holds the whole commit in memory; the store still writes all of it or
/// nothing.
#[derive(Default)]
pub struct Commit<'a> {
    /// Objects to write (`Some`) or delete (`None`), as their full fields.
    pub objects: Vec<(Kind, String, Option<Fields>)>,
    /// Assets to write, packed, after `objects` (none of them also in
    /// `objects`): what an apply's transfers make of the state's assets,
    /// which a store that keeps them packed writes as they are (a million
    /// of them are never turned into fields and back). A store that keeps
    /// fields takes them from [`assets_as_objects`].
    pub packed_assets: Vec<(String, PackedAsset)>,
    /// Invoices to write or delete.
    pub invoices: Vec<(String, Option<Invoice>)>,
    /// History entries to append; the store assigns `seq`.
    pub history: Vec<HistoryEntry>,
    /// Notifications to add (or replace, by id).
    pub notifications: Vec<Notification>,
    /// The rest of the commit, produced on demand after the records above.
    pub rest: Option<Parts<'a>>,
}

/// The rest of a [`Commit`], produced part by part while the store writes
/// it. The parts are made by a [`MakeParts`] from what the commit was
/// prepared from — the plan's changes (none for an import) and the state
/// loaded under the writer's lock — which the commit borrows and the caller
/// keeps. An error from a part abandons the whole commit: nothing of it is
/// written.
pub struct Parts<'a> {
    /// How many records (objects, invoices, history entries, notifications)
    /// the parts are expected to hold, for progress; an estimate.
    records: usize,
    changes: &'a [Change],
    state: &'a State,
    maker: Box<dyn MakeParts + Send>,
}

/// Makes the parts of a large commit, one at a time (see [`Parts`]).
pub trait MakeParts {
    /// The next part (a commit whose own `rest` is written before the
    /// next part), `None` once all are made. `changes` and `state` are the
    /// ones given to [`Parts::new`].
    fn next_part(
        &mut self,
        changes: &[Change],
        state: &State,
    ) -> Option<Result<Commit<'static>, StoreError>>;
}

impl<'a> Parts<'a> {
    /// Parts made by `maker` from `changes` and `state`, about `records`
    /// records in all.
    pub fn new(
        records: usize,
        changes: &'a [Change],
        state: &'a State,
        maker: impl MakeParts + Send + 'static,
    ) -> Parts<'a> {
        Parts {
            records,
            changes,
            state,
            maker: Box::new(maker),
        }
    }

    fn next_part(&mut self) -> Option<Result<Commit<'static>, StoreError>> {
        self.maker.next_part(self.changes, self.state)
    }
}

/// Packed assets of a commit as objects of fields, for a store (or a
/// cache) that keeps fields.
pub(crate) fn assets_as_objects(
    packed: Vec<(String, PackedAsset)>,
) -> Result<Vec<(Kind, String, Option<Fields>)>, StoreError> {
    packed
        .into_iter()
        .map(|(id, asset)| match asset.fields() {
            Some(fields) => Ok((Kind::Asset, id, Some(fields))),
            // Only `PackedAsset`'s own constructors make its bytes.
            None => Err(StoreError::Unsupported {
                location: format!("asset {id}"),
                message: "a packed asset that cannot be read".into(),
            }),
        })
        .collect()
}

impl std::fmt::Debug for Commit<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Commit")
            .field("objects", &self.objects)
            .field("packed_assets", &self.packed_assets.len())
            .field("invoices", &self.invoices)
            .field("history", &self.history)
            .field("notifications", &self.notifications)
            .field("rest", &self.rest.as_ref().map(|rest| rest.records))
            .finish()
    }
}

impl<'a> Commit<'a> {
    /// Whether the commit writes nothing. A commit with a `rest` is not
    /// empty, even if its parts turn out to hold nothing.
    pub fn is_empty(&self) -> bool {
        self.own_records() == 0 && self.rest.is_none()
    }

    /// How many records the commit holds, or is expected to hold with its
    /// rest (for progress).
    pub fn records_hint(&self) -> usize {
        self.own_records() + self.rest.as_ref().map_or(0, |rest| rest.records)
    }

    /// The records in the fields, without the rest.
    fn own_records(&self) -> usize {
        self.objects.len()
            + self.packed_assets.len()
            + self.invoices.len()
            + self.history.len()
            + self.notifications.len()
    }

    /// The commit as a sequence of parts without a rest, in the order their
    /// records are written: this commit's own records first, then each
    /// part's (depth first).
    pub fn into_parts(self) -> impl Iterator<Item = Result<Commit<'static>, StoreError>> + 'a {
        let mut pending: Vec<Commit<'a>> = vec![self];
        let mut stack: Vec<Parts<'a>> = Vec::new();
        std::iter::from_fn(move || loop {
            if let Some(mut commit) = pending.pop() {
                if let Some(rest) = commit.rest.take() {
                    stack.push(rest);
                }
                return Some(Ok(Commit {
                    objects: commit.objects,
                    packed_assets: commit.packed_assets,
                    invoices: commit.invoices,
                    history: commit.history,
                    notifications: commit.notifications,
                    rest: None,
                }));
            }
            let parts = stack.last_mut()?;
            match parts.next_part() {
                Some(Ok(part)) => pending.push(part),
                Some(Err(error)) => {
                    stack.clear();
                    return Some(Err(error));
                }
                None => {
                    stack.pop();
                }
            }
        })
    }

    /// The whole commit in memory, its rest produced and appended: for a
    /// backend that writes a commit in one go.
    pub fn into_whole(self) -> Result<Commit<'static>, StoreError> {
        let mut whole = Commit::default();
        for part in self.into_parts() {
            let part = part?;
            whole.objects.extend(part.objects);
            whole.objects.extend(assets_as_objects(part.packed_assets)?);
            whole.invoices.extend(part.invoices);
            whole.history.extend(part.history);
            whole.notifications.extend(part.notifications);
        }
        Ok(whole)
    }
}

/// Watches a long commit, for a progress bar: the store says what it
/// starts, then how many records it has done.
pub trait CommitProgress: Send + Sync {
    /// A phase of the commit starts (`preparing`, `writing`), with about
    /// `records` records to go.
    fn start(&self, phase: &'static str, records: u64);
    /// `records` more records are done.
    fn advance(&self, records: u64);
    /// The commit ended (written or not).
    fn finish(&self);
}

/// The lease a daemon leads by (contract §5): a store given a fence
/// refuses every commit once the lease has moved to another generation or
/// expired ([`StoreError::Fenced`]), checked in the commit's own transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The lease's name (one per state).
    pub lease: String,
    /// Who holds it: this daemon.
    pub holder: String,
    /// The generation this daemon acquired; every takeover increments it.
    pub generation: i64,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another deed process holds the state.
    #[error("state {path} is in use by another deed process (use --wait to wait for it)")]
    InUse { path: PathBuf },
    /// The state was written by a newer deed.
    #[error("state {path} has schema version {found}, newer than this deed understands ({supported}); upgrade deed")]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A write to a read-only store (a dump opened with `--state FILE`).
    #[error("state {path} is a dump, opened read-only: it cannot be changed")]
    ReadOnly { path: PathBuf },
    /// A record that does not decode.
    #[error("state {path}: corrupt record {key}: {message}")]
    Corrupt {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// `state restore` into a state that already holds objects.
    #[error("state {path} is not empty: restore only into an empty state")]
    NotEmpty { path: PathBuf },
    /// A dump file that cannot be read.
    #[error("{path}:{line}: {message}")]
    BadDump {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A commit whose fields do not make an object of their kind; nothing
    /// of the commit was written.
    #[error("state {path}: cannot write {kind} {id}: {message}")]
    InvalidObject {
        path: PathBuf,
        kind: Kind,
        id: String,
        message: String,
    },
    /// A location this build cannot use that way (`state migrate` onto
    /// itself).
    #[error("state {location}: {message}")]
    Unsupported { location: String, message: String },
    /// Another process wrote the state between this one's load and its
    /// commit (PostgreSQL); nothing of the commit was written.
    #[error("state {path} changed while this apply ran; nothing was written: run it again")]
    Conflict { path: PathBuf },
    /// A commit fenced by a daemon's lease after the lease moved on (another
    /// daemon took over) or expired; nothing of the commit was written.
    #[error("state {path}: {message}; nothing was written")]
    Fenced { path: PathBuf, message: String },
    /// A write through a store opened for reading (PostgreSQL readers take
    /// no lock, so they may not write).
    #[error("state {path} was opened for reading: it cannot be changed")]
    OpenedForReading { path: PathBuf },
    /// The PostgreSQL server refused or failed (connection, permission,
    /// query); the location has its password hidden.
    #[error("state {location}: {message}")]
    Postgres { location: String, message: String },
    /// `state migrate` wrote a copy that does not dump as its source did.
    #[error(
        "state {to} does not dump the same as {from} after the copy; it was left for inspection"
    )]
    MigrationMismatch { from: String, to: String },
    /// Writing a dump to its output failed.
    #[error("cannot write the dump: {0}")]
    DumpWrite(#[source] std::io::Error),
    #[error("state {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The interface every backend implements.
pub trait Store {
    /// Everything: objects and invoices.
    fn load(&self) -> Result<State, StoreError>;
    /// Writes a commit atomically: all of it or nothing, its rest included.
    fn commit(&self, commit: Commit<'_>) -> Result<(), StoreError>;
    /// The last `limit` history entries (all without a limit), oldest first.
    fn history(&self, limit: Option<usize>) -> Result<Vec<HistoryEntry>, StoreError>;
    /// All notifications, delivered or not, sorted by time then id.
    fn outbox(&self) -> Result<Vec<Notification>, StoreError>;
    /// Marks notifications delivered, atomically.
    fn mark_delivered(&self, ids: &[String]) -> Result<(), StoreError>;
    /// Writes a full-fidelity dump (see [`dump`]).
    fn dump(&self, out: &mut dyn std::io::Write) -> Result<(), StoreError>;
    /// Fences the following commits by a daemon's lease (`None` lifts the
    /// fence). Only PostgreSQL, where several daemons share a state, keeps
    /// it; a sled state has one process at a time, and a dump is read-only.
    fn set_fence(&self, fence: Option<Fence>) {
        let _ = fence;
    }
    /// Reports the progress of the following commits to `progress` (`None`
    /// stops). Only sled, which writes a large commit in several steps,
    /// reports; elsewhere it is a no-op.
    fn set_progress(&self, progress: Option<std::sync::Arc<dyn CommitProgress>>) {
        let _ = progress;
    }
}

/// How a command uses the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `validate`, `plan`, `state show`: never creates anything; a dump file
    /// is accepted.
    Read,
    /// Everything that writes. With `wait`, a state in use by another
    /// process is waited for instead of refused.
    Write { wait: bool },
}

/// Opens the state at `location` (the value of `--state`).
///
/// - `postgres://` / `postgresql://` URLs ([`postgres::PostgresStore`]):
///   [`Access::Read`] connects without locking or creating anything (a
///   database without deed's tables is an empty state); [`Access::Write`]
///   takes the writer's lock and creates or migrates the tables.
/// - [`Access::Read`]: a missing path, or a folder that holds no sled
///   database, is an empty read-only store (nothing is created); a file is
///   a dump ([`dump::DumpStore`]); a sled folder is opened as for writing,
///   which takes the lock ([`StoreError::InUse`] when another process has it).
/// - [`Access::Write`]: a file is [`StoreError::ReadOnly`]; anything else is
///   [`sled_store::SledStore::open`]ed, creating it if needed.
pub fn open(location: &str, access: Access) -> Result<Box<dyn Store>, StoreError> {
    if is_postgres_url(location) {
        return match access {
            Access::Read => match postgres::PostgresStore::open_for_reading(location)? {
                Some(store) => Ok(Box::new(store)),
                None => Ok(Box::new(dump::DumpStore::empty(Path::new(
                    &postgres::redact(location),
                )))),
            },
            Access::Write { wait } => Ok(Box::new(postgres::PostgresStore::open_for_writing(
                location, wait,
            )?)),
        };
    }
    let path = Path::new(location);
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => Some(metadata),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let is_file = metadata.as_ref().is_some_and(|metadata| !metadata.is_dir());
    match access {
        Access::Read if is_file => Ok(Box::new(dump::DumpStore::open(path)?)),
        Access::Read if metadata.is_none() || !sled_store::SledStore::exists(path) => {
            Ok(Box::new(dump::DumpStore::empty(path)))
        }
        Access::Read => Ok(Box::new(sled_store::SledStore::open(path, false)?)),
        Access::Write { .. } if is_file => Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
        }),
        Access::Write { wait } => Ok(Box::new(sled_store::SledStore::open(path, wait)?)),
    }
}

/// A store opened for writing, loaded, and resting until its commit: the
/// state `apply` plans against stays this process's all along, but a sled
/// state is closed meanwhile, so that what sled cached while loading is
/// free for the plan ([`sled_store::SledStore::rest`]). Other backends stay
/// open.
pub enum Resting {
    Sled(sled_store::SledResting),
    Open(Box<dyn Store>),
}

impl Resting {
    /// The store, open again for the commit.
    pub fn wake(self) -> Result<Box<dyn Store>, StoreError> {
        match self {
            Resting::Sled(resting) => Ok(Box::new(resting.wake()?)),
            Resting::Open(store) => Ok(store),
        }
    }
}

/// Opens the state at `location` for writing ([`open`] with
/// [`Access::Write`]), reports the progress of its commits to `progress`,
/// loads it and lets it rest ([`Resting`]).
pub fn load_and_rest(
    location: &str,
    wait: bool,
    progress: Option<std::sync::Arc<dyn CommitProgress>>,
) -> Result<(State, Resting), StoreError> {
    let path = Path::new(location);
    if !is_postgres_url(location) && !path.is_file() {
        let store = sled_store::SledStore::open(path, wait)?;
        store.set_progress(progress);
        let state = store.load()?;
        return Ok((state, Resting::Sled(store.rest())));
    }
    let store = open(location, Access::Write { wait })?;
    store.set_progress(progress);
    let state = store.load()?;
    Ok((state, Resting::Open(store)))
}

/// Whether `location` names a PostgreSQL database rather than a path.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// `deed state restore`: restores the dump `dump_path` into the state at
/// `location`, which must be empty or missing (it is then created). With
/// `wait`, waits for a state in use. A state this call created is removed
/// again when the restore fails.
pub fn restore(location: &str, dump_path: &Path, wait: bool) -> Result<(), StoreError> {
    if is_postgres_url(location) {
        return postgres::PostgresStore::open_for_writing(location, wait)?.restore(dump_path);
    }
    let path = Path::new(location);
    if path.is_file() {
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
        });
    }
    let created = !path.exists();
    let store = sled_store::SledStore::open(path, wait)?;
    let result = dump::restore(&store, dump_path);
    drop(store);
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(path);
    }
    result
}

/// What [`migrate`] copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// Records of the dump: objects, invoices, history entries, notifications.
    pub records: usize,
}

/// `deed state migrate --to TO`: copies the whole state at `from` (any
/// location [`open`] reads: sled folder, `postgres://` URL, dump file) into
/// the empty or missing state `to` (sled folder or URL), then checks that
/// the copy dumps byte for byte as the source did. The copy goes through a
/// dump in a temporary file: the source is read in one consistent pass
/// (a sled source is locked, a PostgreSQL source read in one snapshot), and
/// the target is written as [`restore`] writes it. With `wait`, waits for a
/// target in use.
pub fn migrate(from: &str, to: &str, wait: bool) -> Result<Migrated, StoreError> {
    let same = if is_postgres_url(from) || is_postgres_url(to) {
        from == to
    } else {
        Path::new(from) == Path::new(to)
            || std::fs::canonicalize(from)
                .ok()
                .zip(std::fs::canonicalize(to).ok())
                .is_some_and(|(a, b)| a == b)
    };
    if same {
        return Err(StoreError::Unsupported {
            location: display_location(to),
            message: "--to names the state being migrated: give another state".to_string(),
        });
    }
    let temporary = TemporaryDump::new()?;
    let source_digest = {
        let source = open(from, Access::Read)?;
        let file = std::fs::File::create(&temporary.path).map_err(|source| StoreError::Io {
            path: temporary.path.clone(),
            source,
        })?;
        let mut out = DigestWriter::new(std::io::BufWriter::new(file));
        source.dump(&mut out)?;
        std::io::Write::flush(&mut out).map_err(StoreError::DumpWrite)?;
        out.finish()
    };
    restore(to, &temporary.path, wait)?;
    let target_digest = {
        let target = open(to, Access::Read)?;
        let mut out = DigestWriter::new(std::io::sink());
        target.dump(&mut out)?;
        out.finish()
    };
    if source_digest != target_digest {
        return Err(StoreError::MigrationMismatch {
            from: display_location(from),
            to: display_location(to),
        });
    }
    Ok(Migrated {
        records: source_digest.1.saturating_sub(1),
    })
}

/// A location for messages: a URL with its password hidden.
pub fn display_location(location: &str) -> String {
    if is_postgres_url(location) {
        postgres::redact(location)
    } else {
        location.to_string()
    }
}

/// A dump file in the temporary folder, removed when dropped.
struct TemporaryDump {
    path: PathBuf,
}

impl TemporaryDump {
    fn new() -> Result<TemporaryDump, StoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
        let path =
            std::env::temp_dir().join(format!("deed-migrate-{}-{nanos}.jsonl", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(TemporaryDump { path })
    }
}

impl Drop for TemporaryDump {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Passes bytes through, hashing them (SHA-256) and counting lines.
struct DigestWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    lines: usize,
}

impl<W: std::io::Write> DigestWriter<W> {
    fn new(inner: W) -> DigestWriter<W> {
        DigestWriter {
            inner,
            hasher: sha2::Digest::new(),
            lines: 0,
        }
    }

    /// The digest and the number of lines written.
    fn finish(self) -> (Vec<u8>, usize) {
        (sha2::Digest::finalize(self.hasher).to_vec(), self.lines)
    }
}

impl<W: std::io::Write> std::io::Write for DigestWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        sha2::Digest::update(&mut self.hasher, &bytes[..written]);
        self.lines += bytes[..written]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count();
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one object of a commit (its full fields, or `None` to delete it)
/// into an in-memory `state`, as the store writes it: for the daemon's
/// cache, which follows its own commits instead of loading the state again.
pub(crate) fn write_object(
    state: &mut crate::model::State,
    kind: Kind,
    id: &str,
    fields: Option<&crate::model::Fields>,
) -> Result<(), String> {
    match fields {
        Some(fields) => {
            let object = codec::Object::from_fields(kind, fields)
                .map_err(|error| format!("{kind} {id}: {error}"))?;
            object.insert_into(state, id.to_string());
        }
        None => {
            match kind {
                Kind::Account => state.accounts.remove(id).map(drop),
                Kind::User => state.users.remove(id).map(drop),
                Kind::Group => state.groups.remove(id).map(drop),
                Kind::Membership => state.memberships.remove(id).map(drop),
                Kind::Organization => state.organizations.remove(id).map(drop),
                Kind::Product => state.products.remove(id).map(drop),
                Kind::License => state.licenses.remove(id).map(drop),
                Kind::Asset => state.assets.remove(id).map(drop),
                Kind::Grant => state.grants.remove(id).map(drop),
            };
        }
    }
    Ok(())
}
