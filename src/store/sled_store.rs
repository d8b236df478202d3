//! The sled backend: the embedded default state, one folder on one machine.
//!
//! Layout: one sled tree. Keys carry a prefix per record type (see
//! `codec::keys`): objects `o\0<kind>\0<id>`, except assets, which are
//! kept in pages of a few kilobytes, `o\0assets\0<first id>` (see
//! [`super::asset_pages`]; a state of an older layout holds one record per
//! asset, which the first commit moves into pages), invoices `i\0<id>`, history
//! `h\0<seq, 20 digits>`, outbox `n\0<id>`, meta `m\0schema_version` and
//! `m\0history_seq`. Values are the serde_json bytes of the typed structs;
//! a history record holds a group of consecutive entries, packed with LZ4
//! (see [`super::history_groups`]); a state written by an older deed may
//! also hold plain JSON groups (layout 2) or one entry per record (layout
//! 1).
//!
//! A small commit is one atomic `apply_batch`. A large one (past
//! `journal::SMALL_RECORDS` records) is encoded part by part, as the
//! [`Commit`] produces its parts (a commit made in parts makes the next on
//! a second thread while this one encodes the last), into a write-ahead
//! journal file, which is then replayed into the tree in batches (see
//! [`super::journal`]); opening a state finishes or discards a commit a
//! crash interrupted, before anything is read. Either way a reader sees
//! all of a commit or nothing.
//!
//! One writer at a time: [`SledStore::open`] takes an exclusive OS lock on
//! `<folder>/deed.lock` (std `File::try_lock`, an `flock` on Unix) and keeps
//! it for the store's lifetime. sled itself also `flock`s its `db` file, but
//! reports a busy lock only as an `Other` I/O error with a message; our own
//! lock gives a clean [`StoreError::InUse`] and is taken first.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::asset_pages::{decode_page, PageRewriter};
use super::codec::{join_states, keys, Object, StateBuilder};
use super::history_groups::{self, ChangesJson, GroupWriter};
use super::{journal, CommitProgress};
use super::{Commit, HistoryEntry, Notification, Store, StoreError};
use crate::model::{Kind, PackedAsset, State};

/// The lock file inside the state folder.
pub const LOCK_FILE: &str = "deed.lock";

/// The version of the sled layout (`m\0schema_version`). 1: one history
/// entry per record. 2: history entries in groups of plain JSON. 3: the
/// groups packed with LZ4. 4: assets packed (see `codec::PACKED_ASSET`).
/// 5: assets in pages (see `asset_pages`). A state of an older layout is
/// read as it is, and marked with this version by the first commit that
/// writes an object or a history group, so an older deed refuses it
/// instead of misreading it; that commit first moves its asset records
/// into pages. A state with a newer version is refused.
pub const SLED_SCHEMA_VERSION: u32 = 5;

/// sled's page cache. Left alone, sled 0.34 caches up to 1 GiB, and its
/// memory grows well past that with a million small keys. At 128 MiB the
/// Workload L reassign apply peaked at 3.69 GB, at 32 MiB at 3.27 GB, in
/// the same time (loads read the tree once, in order, and gain nothing
/// from a larger cache); 8 MiB gave no further saving.
const CACHE_CAPACITY: u64 = 32 * 1024 * 1024;

/// How long an open without `--wait` retries a busy lock before it reports
/// the state in use. A child process that this process is starting holds
/// a copy of the lock's file descriptor from its fork to its exec, so a
/// store this process has just dropped can stay locked for that moment
/// (seen in the tests, which start processes on other threads).
const LOCK_GRACE: Duration = Duration::from_millis(250);

/// How often `--wait` retries a busy lock.
const WAIT_INTERVAL: Duration = Duration::from_millis(100);

/// The state in a sled folder, locked for this process while it is open.
pub struct SledStore {
    path: PathBuf,
    /// Dropped before `_lock_file`, so sled has closed when the lock goes.
    db: sled::Db,
    /// Serializes commits against reads inside this process, so a load or a
    /// dump never sees half a commit and history seqs are assigned once.
    guard: RwLock<()>,
    /// Told how the following commits progress ([`Store::set_progress`]).
    progress: Mutex<Option<Arc<dyn CommitProgress>>>,
    _lock_file: File,
}

impl SledStore {
    /// Opens (creating if needed) the state in folder `path`. Fails with
    /// [`StoreError::InUse`] at once when another process has it open,
    /// unless `wait`, which retries every 100 ms until it is free.
    pub fn open(path: &Path, wait: bool) -> Result<SledStore, StoreError> {
        fs::create_dir_all(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let lock_path = path.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| StoreError::Io {
                path: lock_path.clone(),
                source,
            })?;
        let started = std::time::Instant::now();
        loop {
            match lock_file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if wait => std::thread::sleep(WAIT_INTERVAL),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_GRACE => {
                    std::thread::sleep(LOCK_GRACE / 25)
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::InUse {
                        path: path.to_path_buf(),
                    })
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(StoreError::Io {
                        path: lock_path,
                        source,
                    })
                }
            }
        }
        SledStore::open_locked(path, lock_file, wait)
    }

    /// [`SledStore::open`], once our lock on `path` is held (`lock_file`).
    fn open_locked(path: &Path, lock_file: File, wait: bool) -> Result<SledStore, StoreError> {
        let db = open_sled(path, wait)?;
        let store = SledStore {
            path: path.to_path_buf(),
            db,
            guard: RwLock::new(()),
            progress: Mutex::new(None),
            _lock_file: lock_file,
        };
        store.check_schema()?;
        // Finish or discard a commit a crash interrupted, before any read.
        let recovered = journal::recover(path, &store.db)?;
        if recovered != journal::Recovered::Nothing {
            tracing::info!(state = %path.display(), ?recovered, "interrupted commit recovered");
        }
        Ok(store)
    }

    /// Closes sled but keeps this process's lock on the state, until
    /// [`SledResting::wake`]. sled keeps what a load read in its cache
    /// (140 MB after loading Workload L, whatever its cache size says);
    /// `apply` rests the store while it plans, so that this memory is free
    /// for the plan, and no other process can write in between.
    pub fn rest(self) -> SledResting {
        let SledStore {
            path,
            db,
            progress,
            _lock_file,
            ..
        } = self;
        drop(db);
        SledResting {
            path,
            progress,
            lock_file: _lock_file,
        }
    }

    /// Whether folder `path` holds a sled database (without opening it).
    pub fn exists(path: &Path) -> bool {
        path.join("db").is_file()
    }

    /// The folder of this state.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the state holds no objects, invoices, history or outbox.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let _read = self.read();
        self.holds_nothing()
    }

    /// [`SledStore::is_empty`], for a caller that holds the guard.
    pub(crate) fn holds_nothing(&self) -> Result<bool, StoreError> {
        for prefix in [keys::OBJECTS, keys::INVOICES, keys::HISTORY, keys::OUTBOX] {
            if let Some(item) = self.db.scan_prefix(prefix).next() {
                item.map_err(|source| self.sled_error(source))?;
                return Ok(false);
            }
        }
        Ok(!self.contains_key(keys::RESTORE_INCOMPLETE)?)
    }

    /// Applies a raw batch and, when `durable`, flushes. For restores.
    pub(crate) fn apply_raw(&self, batch: sled::Batch, durable: bool) -> Result<(), StoreError> {
        self.db
            .apply_batch(batch)
            .map_err(|source| self.sled_error(source))?;
        if durable {
            self.flush()?;
        }
        Ok(())
    }

    /// Sets one key, with no batch (a restore, whose marker makes it all
    /// or nothing).
    pub(crate) fn insert_raw(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        self.db
            .insert(key, value)
            .map_err(|source| self.sled_error(source))?;
        Ok(())
    }

    /// Holds off every other commit, load and dump of this store in this
    /// process, for a multi-batch write (a restore).
    pub(crate) fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.guard
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, ()> {
        self.guard
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(drop)
            .map_err(|source| self.sled_error(source))
    }

    pub(crate) fn sled_error(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn corrupt(&self, key: &[u8], message: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            key: keys::display(key),
            message: message.to_string(),
        }
    }

    /// The sled tree, for the asset pages' reads (`asset_pages`).
    pub(crate) fn tree(&self) -> &sled::Db {
        &self.db
    }

    pub(crate) fn contains_key(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.db
            .contains_key(key)
            .map_err(|source| self.sled_error(source))
    }

    /// Writes the schema version into a new state; refuses a newer one.
    fn check_schema(&self) -> Result<(), StoreError> {
        let stored = self
            .db
            .get(keys::SCHEMA_VERSION)
            .map_err(|source| self.sled_error(source))?;
        match stored {
            None => {
                if self.db.iter().next().is_some() {
                    return Err(self.corrupt(keys::SCHEMA_VERSION, "missing schema version"));
                }
                self.db
                    .insert(
                        keys::SCHEMA_VERSION,
                        SLED_SCHEMA_VERSION.to_string().as_bytes(),
                    )
                    .map_err(|source| self.sled_error(source))?;
                self.flush()?;
            }
            Some(bytes) => {
                let found: u32 = parse_decimal(&bytes)
                    .ok_or_else(|| self.corrupt(keys::SCHEMA_VERSION, "not a number"))?;
                if found > SLED_SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path: self.path.clone(),
                        found,
                        supported: SLED_SCHEMA_VERSION,
                    });
                }
            }
        }
        if self.contains_key(keys::RESTORE_INCOMPLETE)? {
            return Err(self.corrupt(
                keys::RESTORE_INCOMPLETE,
                "a restore into this state was interrupted: delete the folder and restore again",
            ));
        }
        Ok(())
    }

    /// The last history seq, 0 for an empty history.
    fn last_seq(&self) -> Result<u64, StoreError> {
        let stored = self
            .db
            .get(keys::HISTORY_SEQ)
            .map_err(|source| self.sled_error(source))?;
        match stored {
            None => Ok(0),
            Some(bytes) => {
                parse_decimal(&bytes).ok_or_else(|| self.corrupt(keys::HISTORY_SEQ, "not a number"))
            }
        }
    }

    /// Every record under `prefix`, in key order, as (key, value).
    pub(crate) fn scan(
        &self,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + '_ {
        self.db
            .scan_prefix(prefix)
            .map(move |item| item.map_err(|source| self.sled_error(source)))
    }

    /// Decodes the value at `key` as a `T`.
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(value).map_err(|error| self.corrupt(key, error))
    }

    /// Decodes a history record into its entries (see
    /// [`history_groups::decode_group`]).
    pub(crate) fn decode_history(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        history_groups::decode_group(key, value).map_err(|message| self.corrupt(key, message))
    }

    /// Decodes an object record into its kind, id and typed object.
    pub(crate) fn decode_object<'k>(
        &self,
        key: &'k [u8],
        value: &[u8],
    ) -> Result<(crate::model::Kind, &'k str, Object), StoreError> {
        let (kind, id) =
            keys::parse_object(key).ok_or_else(|| self.corrupt(key, "unknown kind"))?;
        let object = Object::decode(kind, value).map_err(|error| self.corrupt(key, error))?;
        Ok((kind, id, object))
    }

    /// Decodes an `i\0` or `n\0` key's id.
    pub(crate) fn decode_id<'k>(
        &self,
        key: &'k [u8],
        prefix: &[u8],
    ) -> Result<&'k str, StoreError> {
        keys::parse_id(key, prefix).ok_or_else(|| self.corrupt(key, "key is not UTF-8"))
    }

    /// Encodes `commit`, part by part, into a [`journal::Writer`], then
    /// writes it: one batch when small, through the journal when large. An
    /// invalid object, or an error from a part, writes nothing. The caller
    /// holds the guard.
    fn write_commit(
        &self,
        commit: Commit<'_>,
        progress: Option<&dyn CommitProgress>,
    ) -> Result<(), StoreError> {
        if let Some(progress) = progress {
            progress.start("preparing", commit.records_hint() as u64);
        }
        let started = std::time::Instant::now();
        self.convert_asset_records()?;
        let mut writer = journal::Writer::new(&self.path);
        let mut seq: Option<u64> = None;
        let mut wrote_object = false;
        let mut history = GroupWriter::default();
        let mut pages = PageRewriter::new(self);
        let mut write_part =
            |part: Commit<'static>, changes_json: Option<ChangesJson>| -> Result<(), StoreError> {
                let records = part.own_records() as u64;
                let mut assets: Vec<(String, Option<PackedAsset>)> =
                    Vec::with_capacity(part.packed_assets.len());
                for (kind, id, fields) in part.objects {
                    let key = keys::object(kind, &id);
                    match fields {
                        None if kind == Kind::Asset => assets.push((id, None)),
                        None => writer.remove(key)?,
                        Some(fields) => {
                            let invalid = |message: String| StoreError::InvalidObject {
                                path: self.path.clone(),
                                kind,
                                id: id.clone(),
                                message,
                            };
                            let object = Object::from_fields(kind, &fields)
                                .map_err(|error| invalid(error.to_string()))?;
                            wrote_object = true;
                            if let Object::Asset(asset) = &object {
                                assets.push((id, Some(PackedAsset::pack(asset))));
                                continue;
                            }
                            let bytes = object
                                .encode()
                                .map_err(|error| invalid(error.to_string()))?;
                            writer.insert(key, bytes)?;
                        }
                    }
                }
                wrote_object |= !part.packed_assets.is_empty();
                let mut sink = |key, value| writer.put(key, value);
                for (id, asset) in in_id_order(assets, part.packed_assets) {
                    pages.put(&id, asset.as_ref().map(PackedAsset::as_bytes), &mut sink)?;
                }
                for (id, invoice) in part.invoices {
                    let key = keys::invoice(&id);
                    match invoice {
                        None => writer.remove(key)?,
                        Some(invoice) => writer.insert(key, encode(&self.path, &invoice)?)?,
                    }
                }
                for (index, mut entry) in part.history.into_iter().enumerate() {
                    let next = match seq {
                        Some(seq) => seq + 1,
                        None => self.last_seq()? + 1,
                    };
                    seq = Some(next);
                    entry.seq = next;
                    let json = changes_json.as_ref().and_then(|made| made.get(index));
                    let closed = history
                        .push_with(&entry, json)
                        .map_err(encode_error(&self.path))?;
                    for (key, value) in closed {
                        writer.insert(key, value)?;
                    }
                }
                for notification in part.notifications {
                    let key = keys::notification(&notification.id);
                    writer.insert(key, encode(&self.path, &notification)?)?;
                }
                if let Some(progress) = progress {
                    progress.advance(records);
                }
                Ok(())
            };
        if commit.rest.is_none() {
            for part in commit.into_parts() {
                write_part(part?, None)?;
            }
        } else {
            // A commit made part by part: the next part is made on a thread
            // of its own while this one encodes and writes the last. The
            // maker also makes the JSON of every other part of history
            // entries, the writer's largest work: the writer was busy all
            // along and the maker a third idle (Workload L's reassign).
            std::thread::scope(|scope| {
                let (sender, parts) = std::sync::mpsc::sync_channel(1);
                let maker = scope.spawn(move || {
                    let mut history_parts = 0usize;
                    for part in commit.into_parts() {
                        let part = part.and_then(|part| {
                            if part.history.is_empty() {
                                return Ok((part, None));
                            }
                            history_parts += 1;
                            if history_parts % 2 == 1 {
                                return Ok((part, None));
                            }
                            let json =
                                ChangesJson::of(&part.history).map_err(encode_error(&self.path))?;
                            Ok((part, Some(json)))
                        });
                        // The writer stopped at an error: so does the maker.
                        if sender.send(part).is_err() {
                            break;
                        }
                    }
                });
                let written = parts.iter().try_for_each(|part| {
                    let (part, json) = part?;
                    write_part(part, json)
                });
                drop(parts);
                if let Err(panic) = maker.join() {
                    std::panic::resume_unwind(panic);
                }
                written
            })?;
        }
        pages.finish(&mut |key, value| writer.put(key, value))?;
        if let Some((key, value)) = history.finish() {
            writer.insert(key, value)?;
        }
        if let Some(seq) = seq {
            writer.insert(keys::HISTORY_SEQ.to_vec(), seq.to_string().into_bytes())?;
        }
        if seq.is_some() || wrote_object {
            writer.insert(keys::SCHEMA_VERSION.to_vec(), layout_version())?;
        }
        match writer.finish()? {
            journal::Finished::Batch(batch) => self.apply_raw(batch, true),
            journal::Finished::Journal { records } => {
                let mut advance = |done: u64| {
                    if let Some(progress) = progress {
                        progress.advance(done);
                    }
                };
                if let Some(progress) = progress {
                    progress.start("writing", records);
                }
                let prepare_ms = started.elapsed().as_millis();
                journal::replay(&self.path, &self.db, false, &mut advance)?;
                tracing::debug!(
                    records,
                    prepare_ms,
                    replay_ms = started.elapsed().as_millis() - prepare_ms,
                    "committed through the journal"
                );
                Ok(())
            }
        }
    }

    /// Moves the asset records of a state of an older layout (one record
    /// per asset, `o\0asset\0<id>`) into pages (layout 5, see
    /// `asset_pages`), in a commit of its own that changes no asset: the
    /// first commit to such a state makes it first. A state of layout 5
    /// holds no such record, and this is one lookup.
    fn convert_asset_records(&self) -> Result<(), StoreError> {
        let prefix = keys::kind_prefix(Kind::Asset);
        if self.scan(&prefix).next().is_none() {
            return Ok(());
        }
        let mut writer = journal::Writer::new(&self.path);
        let mut sink = |key, value| writer.put(key, value);
        let mut pages = PageRewriter::new(self);
        for item in self.scan(&prefix) {
            let (key, value) = item?;
            let (_, id, object) = self.decode_object(&key, &value)?;
            let Object::Asset(asset) = object else {
                return Err(self.corrupt(&key, "not an asset"));
            };
            pages.put(id, Some(PackedAsset::pack(&asset).as_bytes()), &mut sink)?;
            sink(key.to_vec(), None)?;
        }
        pages.finish(&mut sink)?;
        sink(keys::SCHEMA_VERSION.to_vec(), Some(layout_version()))?;
        match writer.finish()? {
            journal::Finished::Batch(batch) => self.apply_raw(batch, true),
            journal::Finished::Journal { .. } => {
                journal::replay(&self.path, &self.db, false, &mut |_| {})
            }
        }
    }

    fn read_outbox(&self) -> Result<Vec<Notification>, StoreError> {
        self.scan(keys::OUTBOX)
            .map(|item| {
                let (key, value) = item?;
                self.decode(&key, &value)
            })
            .collect()
    }
}

/// The assets of a commit's part, set or removed, in strictly ascending id
/// order, as [`PageRewriter::put`] takes them: those among its objects and
/// its packed ones (no asset is in both), merged. A part that lists an
/// asset twice keeps the last, as a journal would.
fn in_id_order(
    mut assets: Vec<(String, Option<PackedAsset>)>,
    packed: Vec<(String, PackedAsset)>,
) -> Vec<(String, Option<PackedAsset>)> {
    assets.extend(packed.into_iter().map(|(id, asset)| (id, Some(asset))));
    if assets.windows(2).all(|pair| pair[0].0 < pair[1].0) {
        return assets;
    }
    // Stable: of equal ids, the last stays last.
    assets.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ordered: Vec<(String, Option<PackedAsset>)> = Vec::with_capacity(assets.len());
    for asset in assets {
        if ordered.last().is_some_and(|last| last.0 == asset.0) {
            ordered.pop();
        }
        ordered.push(asset);
    }
    ordered
}

/// Records a half of a load reads before it claims them.
const LOAD_CHUNK: usize = 512;

/// How far each half of a load has claimed the object keys: the forward
/// half every key up to `forward`, the backward half every key from
/// `backward`. A half claims only keys the other has not, so the two meet
/// without a gap or an overlap.
#[derive(Default)]
struct Claims {
    forward: Option<sled::IVec>,
    backward: Option<sled::IVec>,
    /// A half failed: the other stops too.
    failed: bool,
}

impl SledStore {
    /// Decodes the objects one half of a load claims (the forward half
    /// also decodes the invoices), reading `LOAD_CHUNK` records at a time.
    fn load_half(&self, claims: &Mutex<Claims>, forward: bool) -> Result<State, StoreError> {
        let result = self.load_claimed(claims, forward);
        if result.is_err() {
            lock(claims).failed = true;
        }
        result
    }

    fn load_claimed(&self, claims: &Mutex<Claims>, forward: bool) -> Result<State, StoreError> {
        let mut builder = StateBuilder::default();
        let mut records = self.scan(keys::OBJECTS);
        let mut chunk = Vec::with_capacity(LOAD_CHUNK);
        let mut done = false;
        while !done {
            chunk.clear();
            while chunk.len() < LOAD_CHUNK {
                let item = if forward {
                    records.next()
                } else {
                    records.next_back()
                };
                match item {
                    Some(item) => chunk.push(item?),
                    None => {
                        done = true;
                        break;
                    }
                }
            }
            match claim(&mut lock(claims), &mut chunk, forward) {
                Claimed::All => {}
                Claimed::UpToTheOtherHalf => done = true,
                // The load is read again in one pass.
                Claimed::Nothing => return Ok(State::default()),
            }
            for (key, value) in &chunk {
                self.decode_record(&mut builder, key, value, forward)?;
            }
        }
        if forward {
            self.decode_invoices(&mut builder)?;
        }
        Ok(builder.build())
    }

    /// Every object, then every invoice, on this thread: reports the first
    /// record in key order that cannot be read or decoded.
    fn load_in_one_pass(&self) -> Result<State, StoreError> {
        let mut builder = StateBuilder::default();
        for item in self.scan(keys::OBJECTS) {
            let (key, value) = item?;
            self.decode_record(&mut builder, &key, &value, true)?;
        }
        self.decode_invoices(&mut builder)?;
        Ok(builder.build())
    }

    /// Decodes an object record, or a page of assets, into `builder`; a
    /// page's assets in the order the load reads (`forward` or not).
    fn decode_record(
        &self,
        builder: &mut StateBuilder,
        key: &[u8],
        value: &[u8],
        forward: bool,
    ) -> Result<(), StoreError> {
        if key.starts_with(keys::ASSET_PAGES) {
            let mut assets = decode_page(key, value).map_err(|error| self.corrupt(key, error))?;
            if !forward {
                assets.reverse();
            }
            for (id, asset) in assets {
                builder.keep_packed_asset(id, asset);
            }
            return Ok(());
        }
        let (kind, id) =
            keys::parse_object(key).ok_or_else(|| self.corrupt(key, "unknown kind"))?;
        builder
            .decode(kind, id, value)
            .map_err(|error| self.corrupt(key, error))
    }

    fn decode_invoices(&self, builder: &mut StateBuilder) -> Result<(), StoreError> {
        for item in self.scan(keys::INVOICES) {
            let (key, value) = item?;
            let id = self.decode_id(&key, keys::INVOICES)?;
            builder
                .decode_invoice(id, &value)
                .map_err(|error| self.corrupt(&key, error))?;
        }
        Ok(())
    }
}

/// What a half of a load may decode of the records it read.
enum Claimed {
    All,
    /// The records before the other half's: the halves have met.
    UpToTheOtherHalf,
    /// Nothing: the other half failed.
    Nothing,
}

/// Claims the records of `chunk` (read in the half's direction) that the
/// other half has not claimed, and drops the others.
fn claim(claims: &mut Claims, chunk: &mut Vec<(sled::IVec, sled::IVec)>, forward: bool) -> Claimed {
    if claims.failed {
        return Claimed::Nothing;
    }
    let (mine, other) = if forward {
        (&mut claims.forward, &claims.backward)
    } else {
        (&mut claims.backward, &claims.forward)
    };
    let mut claimed = Claimed::All;
    if let Some(other) = other {
        let taken = |key: &sled::IVec| if forward { key >= other } else { key <= other };
        if let Some(first_taken) = chunk.iter().position(|(key, _)| taken(key)) {
            chunk.truncate(first_taken);
            claimed = Claimed::UpToTheOtherHalf;
        }
    }
    if let Some((key, _)) = chunk.last() {
        *mine = Some(key.clone());
    }
    claimed
}

fn lock(claims: &Mutex<Claims>) -> std::sync::MutexGuard<'_, Claims> {
    claims
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store for SledStore {
    /// Reads the objects from both ends of the key range at once, on this
    /// thread and a second one, each decoding straight into the typed
    /// structs what it read; each kind's map is built in bulk. When a
    /// record cannot be read or decoded, the state is read again in one
    /// pass, to report the first such record in key order.
    fn load(&self) -> Result<State, StoreError> {
        let _read = self.read();
        let claims = Mutex::new(Claims::default());
        let (forward, backward) = std::thread::scope(|scope| {
            let backward = scope.spawn(|| self.load_half(&claims, false));
            let forward = self.load_half(&claims, true);
            match backward.join() {
                Ok(backward) => (forward, backward),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        match (forward, backward) {
            (Ok(forward), Ok(backward)) => Ok(join_states(forward, backward)),
            _ => self.load_in_one_pass(),
        }
    }

    fn commit(&self, commit: Commit<'_>) -> Result<(), StoreError> {
        if commit.is_empty() {
            return Ok(());
        }
        let _write = self.exclusive();
        let progress = self
            .progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let result = self.write_commit(commit, progress.as_deref());
        if let Some(progress) = &progress {
            progress.finish();
        }
        result
    }

    fn history(&self, limit: Option<usize>) -> Result<Vec<HistoryEntry>, StoreError> {
        let _read = self.read();
        let mut groups = Vec::new();
        let mut entries = 0;
        let wanted = limit.unwrap_or(usize::MAX);
        // The last groups, newest first, until they hold `limit` entries.
        let mut records = self.scan(keys::HISTORY);
        while entries < wanted {
            let Some(item) = (if limit.is_some() {
                records.next_back()
            } else {
                records.next()
            }) else {
                break;
            };
            let (key, value) = item?;
            let group = self.decode_history(&key, &value)?;
            entries += group.len();
            groups.push(group);
        }
        if limit.is_some() {
            groups.reverse();
        }
        let skip = entries.saturating_sub(wanted);
        Ok(groups.into_iter().flatten().skip(skip).collect())
    }

    fn outbox(&self) -> Result<Vec<Notification>, StoreError> {
        let _read = self.read();
        let mut notifications = self.read_outbox()?;
        notifications.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(notifications)
    }

    /// Unknown ids and notifications already delivered are left alone.
    fn mark_delivered(&self, ids: &[String]) -> Result<(), StoreError> {
        let _write = self.exclusive();
        let mut batch = sled::Batch::default();
        let mut changed = false;
        for id in ids {
            let key = keys::notification(id);
            let stored = self
                .db
                .get(&key)
                .map_err(|source| self.sled_error(source))?;
            let Some(value) = stored else { continue };
            let mut notification: Notification = self.decode(&key, &value)?;
            if !notification.delivered {
                notification.delivered = true;
                batch.insert(key, encode(&self.path, &notification)?);
                changed = true;
            }
        }
        if changed {
            self.apply_raw(batch, true)?;
        }
        Ok(())
    }

    fn dump(&self, out: &mut dyn std::io::Write) -> Result<(), StoreError> {
        let _read = self.read();
        super::dump::write_sled(self, out)
    }

    fn set_progress(&self, progress: Option<Arc<dyn CommitProgress>>) {
        *self
            .progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = progress;
    }
}

/// How long an open without `wait` retries sled's own `flock` while ours is
/// held. sled closes its files on background threads after its `Db` is
/// dropped, which on a loaded machine has been seen to take over 500 ms.
const SLED_LOCK_GRACE: Duration = Duration::from_secs(10);

/// A sled state closed by [`SledStore::rest`]: only its lock is held.
pub struct SledResting {
    path: PathBuf,
    progress: Mutex<Option<Arc<dyn CommitProgress>>>,
    lock_file: File,
}

impl SledResting {
    /// Opens the state again, under the lock held all along.
    pub fn wake(self) -> Result<SledStore, StoreError> {
        let progress = self
            .progress
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let store = SledStore::open_locked(&self.path, self.lock_file, false)?;
        store.set_progress(progress);
        Ok(store)
    }
}

/// Opens the sled database in `path` (our lock already held). sled's own
/// `flock` can still be busy for a while when this process has just dropped
/// a store of the same folder (its background threads close the files), or
/// if a process that does not use our lock file holds it; after
/// [`SLED_LOCK_GRACE`] that is reported as in use too.
fn open_sled(path: &Path, wait: bool) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(CACHE_CAPACITY)
        .mode(sled::Mode::LowSpace);
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(error)) if is_sled_lock_error(&error) => {
                if !wait && started.elapsed() >= SLED_LOCK_GRACE {
                    return Err(StoreError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(WAIT_INTERVAL / 4);
            }
            Err(source) => {
                return Err(StoreError::Sled {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// sled 0.34 reports a busy `flock` as `Other` with this message.
fn is_sled_lock_error(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::Other
        && error.to_string().contains("could not acquire lock")
}

pub(crate) fn encode<T: serde::Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(encode_error(path))
}

/// The error of a record that cannot be encoded, in the state at `path`.
pub(crate) fn encode_error(path: &Path) -> impl Fn(serde_json::Error) -> StoreError + '_ {
    move |error| StoreError::Corrupt {
        path: path.to_path_buf(),
        key: String::new(),
        message: format!("cannot encode a record: {error}"),
    }
}

/// The value of `m\0schema_version` in a state holding grouped history.
pub(crate) fn layout_version() -> Vec<u8> {
    SLED_SCHEMA_VERSION.to_string().into_bytes()
}

fn parse_decimal<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {

    use super::*;
    use crate::model::{
        to_fields, Account, Asset, Duration as TtlDuration, Fields, Grant, Group, GroupRole,
        Invoice, Kind, License, Membership, Organization, Owner, Product, Role, User, UserStatus,
    };
    use crate::plan::{Action, Change};

    /// A state with at least one object of every kind, and two invoices.
    pub(crate) fn sample_state() -> State {
        let mut state = State::default();
        state.accounts.insert(
            "acme".into(),
            Account {
                owner: Some("alice@acme.com".into()),
                domains: vec!["acme.com".into()],
                hub: None,
                connections: vec!["globex".into()],
                credits: 5000,
                merged_into: None,
                invite_ttl: TtlDuration::DEFAULT_INVITE_TTL,
                successor: Some("bob@acme.com".into()),
            },
        );
        for (email, role, status) in [
            ("alice@acme.com", Role::Owner, UserStatus::Active),
            ("bob@acme.com", Role::Admin, UserStatus::Invited),
        ] {
            state.users.insert(
                email.into(),
                User {
                    account: "acme".into(),
                    role,
                    name: Some("Some One".into()),
                    status,
                    invitation_expires: (status == UserStatus::Invited)
                        .then(|| "2026-11-25T12:00:00Z".parse().expect("timestamp")),
                },
            );
        }
        state.groups.insert(
            "acme/analysts".into(),
            Group {
                account: "acme".into(),
                name: "analysts".into(),
            },
        );
        state.memberships.insert(
            "acme/analysts/bob@acme.com".into(),
            Membership {
                account: "acme".into(),
                group: "analysts".into(),
                user: "bob@acme.com".into(),
                role: GroupRole::Admin,
            },
        );
        state.organizations.insert(
            "research".into(),
            Organization {
                account: "acme".into(),
            },
        );
        state.products.insert(
            "prod-7".into(),
            Product {
                organization: "research".into(),
                name: Some("kDrive 2TB".into()),
                access: vec!["bob@acme.com".into()],
            },
        );
        state.licenses.insert(
            "lic-42".into(),
            License {
                account: "acme".into(),
                product: "prod-7".into(),
                assignee: Some("bob@acme.com".into()),
                expires: Some("2027-03-31".parse().expect("date")),
            },
        );
        for (id, owner) in [
            ("dataset/ds-1", Owner::Group("analysts".into())),
            ("folder/fo-1", Owner::User("alice@acme.com".into())),
            ("proof/p-3", Owner::User("bob@acme.com".into())),
        ] {
            state.assets.insert(
                id.into(),
                Asset {
                    account: "acme".into(),
                    owner,
                    creator: Some("bob@acme.com".into()),
                    folder: Some("folder/fo-1".into()),
                    versions: vec!["bob@acme.com".into(), "alice@acme.com".into()],
                    tags: crate::model::Tags::from([("project".into(), "x".into())]),
                },
            );
        }
        state.grants.insert(
            "folder/fo-1:bob@acme.com".into(),
            Grant {
                account: "acme".into(),
                asset: "folder/fo-1".into(),
                user: "bob@acme.com".into(),
                level: "read".into(),
            },
        );
        for (id, product) in [("inv-2026-10", "prod-7"), ("inv-2026-11", "prod-7")] {
            state.invoices.insert(
                id.into(),
                Invoice {
                    product: product.into(),
                    organization: "research".into(),
                },
            );
        }
        state
    }

    /// The commit that writes `state` from nothing.
    pub(crate) fn commit_of(state: &State) -> Commit<'static> {
        let mut commit = Commit::default();
        for kind in Kind::ALL {
            for id in state.ids(kind) {
                commit
                    .objects
                    .push((kind, id.clone(), state.fields(kind, &id)));
            }
        }
        for (id, invoice) in &state.invoices {
            commit.invoices.push((id.clone(), Some(invoice.clone())));
        }
        commit
    }

    pub(crate) fn entry(object: &str) -> HistoryEntry {
        let after = to_fields(&Organization {
            account: "acme".into(),
        });
        HistoryEntry {
            seq: 0,
            time: "2026-11-23T12:00:00Z".parse().expect("timestamp"),
            plan_id: "p-1".into(),
            actor: Some("alice@acme.com".into()),
            revision: None,
            change: Change::new(
                Action::Create,
                Kind::Organization,
                object,
                "acme",
                None,
                Some(after),
                "declared in the specs",
            ),
        }
    }

    pub(crate) fn notification(id: &str, time: &str) -> Notification {
        Notification {
            id: id.into(),
            time: time.parse().expect("timestamp"),
            to: "bob@acme.com".into(),
            event: "invitation".into(),
            kind: Kind::User,
            object: "bob@acme.com".into(),
            message: format!("message {id}"),
            change_id: "c-1".into(),
            delivered: false,
        }
    }

    /// A store holding the sample state, two history entries and two
    /// notifications.
    pub(crate) fn filled_store(path: &Path) -> SledStore {
        let store = SledStore::open(path, false).expect("open");
        let mut commit = commit_of(&sample_state());
        commit.history = vec![entry("research"), entry("lab")];
        commit.notifications = vec![
            notification("n-2", "2026-11-23T12:00:00Z"),
            notification("n-1", "2026-11-23T13:00:00Z"),
        ];
        store.commit(commit).expect("commit");
        store
    }

    #[test]
    fn every_kind_and_invoices_round_trip_through_commit_and_load() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(folder.path(), false).expect("open");
        assert_eq!(store.load().expect("load"), State::default());
        let state = sample_state();
        store.commit(commit_of(&state)).expect("commit");
        assert_eq!(store.load().expect("load"), state);
        drop(store);

        let store = SledStore::open(folder.path(), false).expect("reopen");
        assert_eq!(store.load().expect("load after reopen"), state);
    }

    #[test]
    fn packed_assets_of_a_commit_are_written_as_they_are_into_pages_and_load_as_assets() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let mut expected = sample_state();
        let (id, mut moved) = expected.assets.iter().next().expect("an asset");
        let id = id.clone();
        moved.owner = Owner::Group("analysts".into());
        let mut commit = Commit::default();
        for id in [id.clone(), format!("{id}-copy")] {
            commit
                .packed_assets
                .push((id.clone(), crate::model::PackedAsset::pack(&moved)));
            expected.assets.insert(id, moved.clone());
        }
        store.commit(commit).expect("commit");
        assert_eq!(store.load().expect("load"), expected);
        let in_pages: Vec<(String, PackedAsset)> = store
            .scan(keys::ASSET_PAGES)
            .flat_map(|item| {
                let (key, page) = item.expect("read");
                decode_page(&key, &page).expect("a page")
            })
            .collect();
        let kept = in_pages
            .iter()
            .find(|(kept, _)| *kept == id)
            .expect("in a page");
        assert_eq!(kept.1.as_bytes(), PackedAsset::pack(&moved).as_bytes());
        assert_eq!(store.scan(&keys::kind_prefix(Kind::Asset)).count(), 0);
    }

    #[test]
    fn commits_delete_objects_and_invoices() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let mut commit = Commit::default();
        commit
            .objects
            .push((Kind::Grant, "folder/fo-1:bob@acme.com".into(), None));
        commit.invoices.push(("inv-2026-10".into(), None));
        store.commit(commit).expect("commit");
        let mut expected = sample_state();
        expected.grants.clear();
        expected.invoices.remove("inv-2026-10");
        assert_eq!(store.load().expect("load"), expected);
    }

    #[test]
    fn history_seqs_are_contiguous_across_commits_and_limit_keeps_the_last() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(folder.path(), false).expect("open");
        assert!(store.history(None).expect("history").is_empty());
        for round in 0..3 {
            let commit = Commit {
                history: (0..4).map(|n| entry(&format!("org-{round}-{n}"))).collect(),
                ..Commit::default()
            };
            store.commit(commit).expect("commit");
        }
        drop(store);
        let store = SledStore::open(folder.path(), false).expect("reopen");
        store
            .commit(Commit {
                history: vec![entry("last")],
                ..Commit::default()
            })
            .expect("commit after reopen");

        let all = store.history(None).expect("history");
        assert_eq!(
            all.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
            (1..=13).collect::<Vec<_>>()
        );
        assert_eq!(&*all[0].change.object, "org-0-0");
        let last = store.history(Some(3)).expect("history");
        assert_eq!(
            last.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
            vec![11, 12, 13]
        );
        assert_eq!(&*last[2].change.object, "last");
        assert!(store.history(Some(0)).expect("history").is_empty());
        assert_eq!(store.history(Some(100)).expect("history").len(), 13);
    }

    /// A state written with layout 1 (one history entry per record) keeps
    /// its history; the first commit that adds a group marks it with this
    /// deed's layout.
    #[test]
    fn a_layout_1_history_is_read_and_continued_in_groups() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(folder.path(), false).expect("open");
        let mut batch = sled::Batch::default();
        for seq in 1..=3 {
            let single = HistoryEntry {
                seq,
                ..entry(&format!("old-{seq}"))
            };
            batch.insert(
                keys::history(seq),
                encode(&store.path, &single).expect("encode"),
            );
        }
        batch.insert(keys::HISTORY_SEQ, b"3".as_slice());
        batch.insert(keys::SCHEMA_VERSION, b"1".as_slice());
        store.apply_raw(batch, true).expect("layout 1 records");
        drop(store);

        let store = SledStore::open(folder.path(), false).expect("open layout 1");
        assert_eq!(store.history(None).expect("history").len(), 3);
        assert_eq!(
            store.db.get(keys::SCHEMA_VERSION).expect("get").as_deref(),
            Some(b"1".as_slice()),
            "reading leaves the layout alone"
        );
        let added = 300;
        store
            .commit(Commit {
                history: (0..added).map(|n| entry(&format!("new-{n}"))).collect(),
                ..Commit::default()
            })
            .expect("commit");
        assert_eq!(
            store.db.get(keys::SCHEMA_VERSION).expect("get").as_deref(),
            Some(layout_version().as_slice())
        );
        let total = 3 + added as u64;
        let groups = store.scan(keys::HISTORY).count() - 3;
        assert!(
            groups > 1 && groups < added / 10,
            "{groups} groups of {added} entries"
        );
        let all = store.history(None).expect("history");
        assert_eq!(
            all.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>()
        );
        assert_eq!(&*all[2].change.object, "old-3");
        assert_eq!(&*all[3].change.object, "new-0");
        for limit in [1, 9, 10, 11, 260, added, added + 1, added + 3, added + 50] {
            let last = store.history(Some(limit)).expect("history");
            assert_eq!(last.len(), limit.min(total as usize), "limit {limit}");
            assert_eq!(last.last().map(|entry| entry.seq), Some(total));
            assert_eq!(last[..], all[all.len() - last.len()..], "limit {limit}");
        }
    }

    /// A state of layout 4 keeps one record per asset (some packed, some
    /// JSON, as layouts before 4 wrote them): it is read as it is, dumped
    /// the same, and its first commit moves every asset into pages.
    #[test]
    fn asset_records_of_layout_4_are_read_and_moved_into_pages_by_the_first_commit() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(folder.path(), false).expect("open");
        let mut expected = sample_state();
        for n in 0..2_500 {
            let (_, mut asset) = expected.assets.iter().next().expect("an asset");
            asset.folder = Some(format!("folder {n}"));
            expected.assets.insert(format!("old/{n:05}"), asset);
        }
        let mut batch = sled::Batch::default();
        for (n, (id, asset)) in expected.assets.iter().enumerate() {
            let record = match n % 2 {
                0 => super::super::codec::asset_record(&PackedAsset::pack(&asset)),
                _ => encode(&store.path, &asset).expect("json"),
            };
            batch.insert(keys::object(Kind::Asset, id), record);
        }
        batch.insert(keys::SCHEMA_VERSION, b"4".as_slice());
        store.apply_raw(batch, true).expect("layout 4 records");
        let mut others = commit_of(&sample_state());
        others.objects.retain(|(kind, _, _)| *kind != Kind::Asset);
        others.history.clear();
        // The other objects, written as layout 4 did, without a commit.
        let mut batch = sled::Batch::default();
        for (kind, id, fields) in others.objects {
            let object = Object::from_fields(kind, &fields.expect("fields")).expect("object");
            batch.insert(keys::object(kind, &id), object.encode().expect("encode"));
        }
        for (id, invoice) in &expected.invoices {
            batch.insert(
                keys::invoice(id),
                encode(&store.path, invoice).expect("json"),
            );
        }
        store.apply_raw(batch, true).expect("layout 4 objects");
        drop(store);

        let store = SledStore::open(folder.path(), false).expect("open layout 4");
        assert_eq!(store.load().expect("load"), expected);
        assert_eq!(store.load_in_one_pass().expect("one pass"), expected);
        let mut dump_before = Vec::new();
        store.dump(&mut dump_before).expect("dump");
        assert_eq!(store.scan(keys::ASSET_PAGES).count(), 0);

        let user = expected.users.keys().next().expect("a user").clone();
        store
            .commit(Commit {
                objects: vec![(Kind::User, user.clone(), None)],
                ..Commit::default()
            })
            .expect("commit");
        expected.users.remove(&user);
        assert_eq!(store.scan(&keys::kind_prefix(Kind::Asset)).count(), 0);
        assert!(store.scan(keys::ASSET_PAGES).count() > 10);
        assert_eq!(
            store.db.get(keys::SCHEMA_VERSION).expect("get").as_deref(),
            Some(layout_version().as_slice())
        );
        assert_eq!(store.load().expect("load"), expected);
        let mut dump_after = Vec::new();
        store.dump(&mut dump_after).expect("dump");
        let assets = |dump: &[u8]| -> Vec<String> {
            String::from_utf8_lossy(dump)
                .lines()
                .filter(|line| line.starts_with("{\"kind\":\"asset\""))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(assets(&dump_after), assets(&dump_before));
        assert_eq!(assets(&dump_after).len(), expected.assets.len());
    }

    #[test]
    fn notifications_are_upserted_by_id_and_marked_delivered() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let ids = |store: &SledStore| {
            store
                .outbox()
                .expect("outbox")
                .into_iter()
                .map(|n| (n.id, n.delivered))
                .collect::<Vec<_>>()
        };
        // Sorted by time, then id.
        assert_eq!(
            ids(&store),
            vec![("n-2".to_string(), false), ("n-1".to_string(), false)]
        );

        let mut replaced = notification("n-2", "2026-11-24T12:00:00Z");
        replaced.message = "replaced".into();
        store
            .commit(Commit {
                notifications: vec![replaced],
                ..Commit::default()
            })
            .expect("commit");
        let outbox = store.outbox().expect("outbox");
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox[1].id, "n-2");
        assert_eq!(outbox[1].message, "replaced");

        store
            .mark_delivered(&["n-1".to_string(), "unknown".to_string()])
            .expect("mark");
        assert_eq!(
            ids(&store),
            vec![("n-1".to_string(), true), ("n-2".to_string(), false)]
        );
        store.mark_delivered(&["n-1".to_string()]).expect("again");
        drop(store);
        let store = SledStore::open(folder.path(), false).expect("reopen");
        assert_eq!(
            ids(&store),
            vec![("n-1".to_string(), true), ("n-2".to_string(), false)]
        );
    }

    #[test]
    fn a_commit_with_an_invalid_object_writes_nothing() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let before_history = store.history(None).expect("history");
        let mut bad = Fields::new();
        bad.insert("account".into(), "acme".into());
        bad.insert("owner".into(), "nobody at all".into());
        let commit = Commit {
            objects: vec![
                (Kind::User, "alice@acme.com".into(), None),
                (
                    Kind::Organization,
                    "lab".into(),
                    state_fields(Kind::Organization),
                ),
                (Kind::Asset, "dataset/ds-9".into(), Some(bad)),
            ],
            // A valid asset, packed, is not written either.
            packed_assets: sample_state()
                .assets
                .packed_iter()
                .map(|(id, asset)| (format!("{id}-copy"), asset.clone()))
                .collect(),
            invoices: vec![("inv-2026-10".into(), None)],
            history: vec![entry("lab")],
            notifications: vec![notification("n-3", "2026-11-23T12:00:00Z")],
            rest: None,
        };
        match store.commit(commit) {
            Err(StoreError::InvalidObject { kind, id, .. }) => {
                assert_eq!((kind, id.as_str()), (Kind::Asset, "dataset/ds-9"))
            }
            other => panic!("expected InvalidObject, got {other:?}"),
        }
        assert_eq!(store.load().expect("load"), sample_state());
        assert_eq!(store.history(None).expect("history"), before_history);
        assert_eq!(store.outbox().expect("outbox").len(), 2);
        // The seq counter did not move either.
        store
            .commit(Commit {
                history: vec![entry("next")],
                ..Commit::default()
            })
            .expect("commit");
        assert_eq!(store.history(Some(1)).expect("history")[0].seq, 3);
    }

    fn state_fields(kind: Kind) -> Option<Fields> {
        let state = sample_state();
        let id = state.ids(kind).into_iter().next()?;
        state.fields(kind, &id)
    }

    #[test]
    fn a_state_with_a_newer_schema_is_refused() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(folder.path(), false).expect("open");
        assert_eq!(
            store.db.get(keys::SCHEMA_VERSION).expect("get").as_deref(),
            Some(SLED_SCHEMA_VERSION.to_string().as_bytes())
        );
        let newer = (SLED_SCHEMA_VERSION + 1).to_string();
        store
            .db
            .insert(keys::SCHEMA_VERSION, newer.as_bytes())
            .expect("insert");
        store.db.flush().expect("flush");
        drop(store);
        match SledStore::open(folder.path(), false) {
            Err(StoreError::NewerSchema {
                found, supported, ..
            }) => assert_eq!(
                (found, supported),
                (SLED_SCHEMA_VERSION + 1, SLED_SCHEMA_VERSION)
            ),
            other => panic!("expected NewerSchema, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_second_open_of_the_same_state_is_in_use_at_once() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(folder.path(), false).expect("open");
        let started = std::time::Instant::now();
        match SledStore::open(folder.path(), false) {
            Err(StoreError::InUse { path }) => assert_eq!(path, folder.path()),
            other => panic!("expected InUse, got {:?}", other.map(|_| ())),
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        match crate::store::open(
            folder.path().to_str().expect("utf-8"),
            crate::store::Access::Read,
        ) {
            Err(StoreError::InUse { .. }) => {}
            other => panic!("expected InUse for a read, got {:?}", other.map(|_| ())),
        }
        drop(store);
        SledStore::open(folder.path(), false).expect("free again after drop");
    }

    /// `apply` loads, rests the store while it plans, then commits: the
    /// lock is held all along, and the woken store is the same state.
    #[test]
    fn a_resting_store_keeps_its_lock_and_wakes_to_the_same_state() {
        let folder = tempfile::tempdir().expect("tempdir");
        let location = folder.path().to_str().expect("utf-8");
        SledStore::open(folder.path(), false)
            .expect("open")
            .commit(commit_of(&sample_state()))
            .expect("commit");
        let (state, resting) = crate::store::load_and_rest(location, false, None).expect("rest");
        assert_eq!(state, sample_state());
        assert!(matches!(resting, crate::store::Resting::Sled(_)));
        match SledStore::open(folder.path(), false) {
            Err(StoreError::InUse { .. }) => {}
            other => panic!("expected InUse while resting, got {:?}", other.map(|_| ())),
        }
        let store = resting.wake().expect("wake");
        assert_eq!(store.load().expect("load"), sample_state());
        let mut commit = Commit::default();
        commit.invoices.push(("inv-2026-10".into(), None));
        store.commit(commit).expect("commit after waking");
        let mut expected = sample_state();
        expected.invoices.remove("inv-2026-10");
        assert_eq!(store.load().expect("load"), expected);
        drop(store);
        SledStore::open(folder.path(), false).expect("free again after drop");
    }

    #[test]
    fn wait_retries_until_the_state_is_free() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(folder.path(), false).expect("open");
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(store);
        });
        let started = std::time::Instant::now();
        let store = SledStore::open(folder.path(), true).expect("open with wait");
        assert!(started.elapsed() >= Duration::from_millis(250));
        holder.join().expect("holder");
        drop(store);
    }

    #[test]
    fn open_reads_missing_paths_without_creating_and_refuses_writes_to_dumps() {
        use crate::store::{open, Access};
        let folder = tempfile::tempdir().expect("tempdir");
        let missing = folder.path().join("missing");
        let location = missing.to_str().expect("utf-8");
        let store = open(location, Access::Read).expect("read missing");
        assert_eq!(store.load().expect("load"), State::default());
        assert!(matches!(
            store.commit(commit_of(&sample_state())),
            Err(StoreError::ReadOnly { .. })
        ));
        assert!(!missing.exists());

        // An existing folder without a database is empty too, and untouched.
        let empty = folder.path().join("empty");
        fs::create_dir(&empty).expect("mkdir");
        let store = open(empty.to_str().expect("utf-8"), Access::Read).expect("read empty");
        assert_eq!(store.load().expect("load"), State::default());
        assert_eq!(fs::read_dir(&empty).expect("read_dir").count(), 0);

        let store = open(location, Access::Write { wait: false }).expect("create");
        store.commit(commit_of(&sample_state())).expect("commit");
        drop(store);
        let store = open(location, Access::Read).expect("read folder");
        assert_eq!(store.load().expect("load"), sample_state());
        drop(store);

        let file = folder.path().join("state.dump");
        fs::write(&file, "{\"deed_dump\":1,\"schema_version\":1}\n").expect("write");
        let file = file.to_str().expect("utf-8");
        assert!(matches!(
            open(file, Access::Write { wait: false }),
            Err(StoreError::ReadOnly { .. })
        ));
        assert_eq!(
            open(file, Access::Read)
                .expect("dump")
                .load()
                .expect("load"),
            State::default()
        );
        // A URL is PostgreSQL, never a path: here, a server that is not there.
        assert!(matches!(
            open("postgres://deed@127.0.0.1:1/deed", Access::Read),
            Err(StoreError::Postgres { .. })
        ));
    }

    /// Run in a child process by the next test: holds the state given in
    /// `DEED_TEST_HOLD_STATE` for a moment.
    #[test]
    #[ignore = "helper run in a child process by another_process_holding_the_state_is_in_use"]
    fn hold_state_in_this_process() {
        let Some(path) = std::env::var_os("DEED_TEST_HOLD_STATE") else {
            return;
        };
        let _store = SledStore::open(Path::new(&path), false).expect("open in child");
        println!("holding");
        std::thread::sleep(Duration::from_millis(1500));
    }

    #[test]
    fn another_process_holding_the_state_is_in_use() {
        use std::io::BufRead;
        let folder = tempfile::tempdir().expect("tempdir");
        drop(SledStore::open(folder.path(), false).expect("create"));
        let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "store::sled_store::tests::hold_state_in_this_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DEED_TEST_HOLD_STATE", folder.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        assert!(
            lines.any(|line| line.is_ok_and(|line| line.contains("holding"))),
            "the child never held the state"
        );
        let started = std::time::Instant::now();
        match SledStore::open(folder.path(), false) {
            Err(StoreError::InUse { .. }) => {}
            other => panic!("expected InUse, got {:?}", other.map(|_| ())),
        }
        assert!(started.elapsed() < Duration::from_millis(500));
        let store = SledStore::open(folder.path(), true).expect("open with wait");
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert!(child.wait().expect("child").success());
        drop(store);
    }

    /// `cargo test --release --lib scale -- --ignored --nocapture`: commits,
    /// loads and dumps a million assets, printing times and peak memory.
    #[test]
    #[ignore = "slow: a million assets"]
    fn scale_a_million_assets() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(folder.path(), false).expect("open");
        let asset = to_fields(&Asset {
            account: "acme".into(),
            owner: Owner::User("dave@acme.com".into()),
            creator: Some("dave@acme.com".into()),
            folder: Some("folder/fo-1".into()),
            versions: Vec::new(),
            tags: crate::model::Tags::from([("project".into(), "x".into())]),
        });
        let started = std::time::Instant::now();
        for chunk in 0..10 {
            let commit = Commit {
                objects: (0..100_000)
                    .map(|n| {
                        let id = format!("file/f-{chunk}-{n:06}");
                        (Kind::Asset, id, Some(asset.clone()))
                    })
                    .collect(),
                ..Commit::default()
            };
            store.commit(commit).expect("commit");
        }
        println!("commit 1M in 10 batches: {:?}", started.elapsed());
        let started = std::time::Instant::now();
        let raw = store.db.scan_prefix(keys::OBJECTS).count();
        println!("raw scan of {raw}: {:?}", started.elapsed());
        let started = std::time::Instant::now();
        let state = store.load().expect("load");
        println!("load: {:?}", started.elapsed());
        assert_eq!(state.assets.len(), 1_000_000);
        drop(state);
        let started = std::time::Instant::now();
        let mut sink = std::io::sink();
        store.dump(&mut sink).expect("dump");
        println!("dump: {:?}", started.elapsed());
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        for line in status
            .lines()
            .filter(|line| line.starts_with("VmHWM") || line.starts_with("VmRSS"))
        {
            println!("{line}");
        }
    }

    #[test]
    fn a_load_read_from_both_ends_equals_one_pass_in_key_order() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let asset = state_fields(Kind::Asset);
        let user = state_fields(Kind::User);
        let mut commit = Commit::default();
        for n in 0..3000 {
            let id = format!("file/f-{n:05}");
            commit.objects.push((Kind::Asset, id, asset.clone()));
        }
        for n in 0..2000 {
            let id = format!("u{n:05}@acme.com");
            commit.objects.push((Kind::User, id, user.clone()));
        }
        store.commit(commit).expect("commit");
        for _ in 0..5 {
            let state = store.load().expect("load");
            assert_eq!(state, store.load_in_one_pass().expect("one pass"));
            assert_eq!(state.assets.len(), 3000 + sample_state().assets.len());
            assert_eq!(state.users.len(), 2000 + sample_state().users.len());
            assert_eq!(state.invoices, sample_state().invoices);
        }
    }

    #[test]
    fn a_load_reports_the_first_bad_record_in_key_order() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let asset = state_fields(Kind::Asset);
        let mut commit = Commit::default();
        for n in 0..2000 {
            let id = format!("file/f-{n:05}");
            commit.objects.push((Kind::Asset, id, asset.clone()));
        }
        store.commit(commit).expect("commit");
        for id in ["file/f-01500", "file/f-00100", "file/f-01999"] {
            store
                .db
                .insert(keys::object(Kind::Asset, id), &b"{\"account\":"[..])
                .expect("insert");
        }
        for _ in 0..5 {
            match store.load() {
                Err(StoreError::Corrupt { key, .. }) => {
                    assert_eq!(
                        key,
                        keys::display(&keys::object(Kind::Asset, "file/f-00100"))
                    )
                }
                other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn stores_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<SledStore>();
        shareable::<crate::store::dump::DumpStore>();
    }
}
