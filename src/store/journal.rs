//! The write-ahead journal of the sled backend: how a commit too large for
//! one sled batch is still written all or nothing, in bounded memory.
//!
//! A commit's records (set a key to a value, or remove a key) are collected
//! by a [`Writer`]. While they are few they stay in memory and become one
//! sled batch, as every commit used to. Past [`SMALL_RECORDS`] records or
//! [`SMALL_BYTES`] bytes they go, as they are produced, to
//! `<state>/journal.partial`; once the last one is written the file is
//! synced and renamed to `<state>/journal` (and the folder synced): that
//! rename is the commit point. The journal is then [`replay`]ed into the
//! sled tree one record at a time (by two writer threads, each key always
//! by the same one), sled is flushed, and the journal removed, the folder
//! synced again (so that a later commit can never be overwritten by a
//! replay of an old journal).
//!
//! On open, before anything is read, [`recover`] removes a
//! `journal.partial` (a commit that never reached its commit point: nothing
//! of it was written) and replays a `journal` (a commit killed after its
//! commit point). Replaying is idempotent — each record sets or removes one
//! key, in order — so a replay killed halfway is simply run again. Every
//! reader therefore sees all of a commit or nothing of it.
//!
//! Format: the magic `DEEDJ002`, then the records — tag `I` (insert): key
//! length (u32 LE), key, value length (u32 LE), value; tag `R` (remove): key
//! length, key — then the trailer: tag `E`, the record count (u64 LE) and
//! the CRC-32 (IEEE, `crc32fast`) of every byte before the trailer, as a
//! u64 LE. A journal whose trailer does not check out is refused, never
//! half replayed. A journal of `DEEDJ001`, which an older deed may have
//! left behind when it was killed, is the same but for its checksum, the
//! FNV-1a 64 hash of those bytes (byte by byte: it took 1.7 s of the
//! Workload L reassign's commit, writing and reading, where CRC-32 takes
//! a tenth of a second).

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::StoreError;

/// The journal of a commit past its commit point.
pub const JOURNAL: &str = "journal";
/// The journal of a commit being written.
pub const PARTIAL: &str = "journal.partial";

/// A commit with at most this many records is one sled batch, no journal.
pub const SMALL_RECORDS: usize = 10_000;
/// ... and at most this many bytes of keys and values.
pub const SMALL_BYTES: usize = 16 << 20;
/// How many records a replay writes between two reports of its progress.
/// (Until session 12 a replay wrote sled batches of this many records:
/// 250 was the fastest batch, and sled 0.34 holds on to what batches of
/// over about a thousand records leave behind; BENCHMARKS.md, sessions 7
/// and 13.)
pub const REPLAY_RECORDS: usize = 250;

/// The magic of the journals this deed writes.
const MAGIC: &[u8; 8] = b"DEEDJ002";
/// The magic of the journals of an older deed (FNV-1a checksum).
const MAGIC_FNV: &[u8; 8] = b"DEEDJ001";
const INSERT: u8 = b'I';
const REMOVE: u8 = b'R';
const END: u8 = b'E';

/// One record: a key and its new value, `None` to remove it.
type Record = (Vec<u8>, Option<Vec<u8>>);

/// Collects the records of one commit (see the module documentation).
/// Dropped before [`Writer::finish`], it removes its partial journal.
pub struct Writer {
    folder: PathBuf,
    buffered: Vec<Record>,
    buffered_bytes: usize,
    file: Option<JournalFile>,
    records: u64,
}

/// What a finished [`Writer`] holds.
pub enum Finished {
    /// A small commit: one batch to apply.
    Batch(sled::Batch),
    /// A large commit, past its commit point: a journal of this many
    /// records, to [`replay`].
    Journal { records: u64 },
}

impl Writer {
    /// A writer for the state in `folder`.
    pub fn new(folder: &Path) -> Writer {
        Writer {
            folder: folder.to_path_buf(),
            buffered: Vec::new(),
            buffered_bytes: 0,
            file: None,
            records: 0,
        }
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        self.push((key, Some(value)))
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: Vec<u8>) -> Result<(), StoreError> {
        self.push((key, None))
    }

    /// Sets `key` to `value`, or removes it (`None`).
    pub fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        self.push((key, value))
    }

    fn push(&mut self, record: Record) -> Result<(), StoreError> {
        self.records += 1;
        if let Some(file) = &mut self.file {
            return file.write(&record);
        }
        self.buffered_bytes += record.0.len() + record.1.as_ref().map_or(0, Vec::len);
        self.buffered.push(record);
        if self.buffered.len() > SMALL_RECORDS || self.buffered_bytes > SMALL_BYTES {
            let mut file = JournalFile::create(&self.folder)?;
            for record in self.buffered.drain(..) {
                file.write(&record)?;
            }
            self.buffered = Vec::new();
            self.file = Some(file);
        }
        Ok(())
    }

    /// Ends the commit: a batch for a small one; for a large one, the
    /// journal is sealed — synced and renamed into place, the commit point.
    pub fn finish(mut self) -> Result<Finished, StoreError> {
        match self.file.take() {
            None => {
                let mut batch = sled::Batch::default();
                for (key, value) in std::mem::take(&mut self.buffered) {
                    match value {
                        Some(value) => batch.insert(key, value),
                        None => batch.remove(key),
                    }
                }
                Ok(Finished::Batch(batch))
            }
            Some(file) => {
                file.seal(&self.folder)?;
                Ok(Finished::Journal {
                    records: self.records,
                })
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            drop(file.out);
            let _ = fs::remove_file(&file.path);
        }
    }
}

/// A `journal.partial` being written.
struct JournalFile {
    path: PathBuf,
    out: BufWriter<File>,
    hash: Checksum,
    records: u64,
}

impl JournalFile {
    fn create(folder: &Path) -> Result<JournalFile, StoreError> {
        let path = folder.join(PARTIAL);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|source| io_error(&path, source))?;
        let mut journal = JournalFile {
            path,
            out: BufWriter::with_capacity(1 << 20, file),
            hash: Checksum::Crc(crc32fast::Hasher::new()),
            records: 0,
        };
        journal.bytes(MAGIC)?;
        Ok(journal)
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hash.update(bytes);
        self.out
            .write_all(bytes)
            .map_err(|source| io_error(&self.path, source))
    }

    fn write(&mut self, (key, value): &Record) -> Result<(), StoreError> {
        self.records += 1;
        match value {
            Some(value) => {
                self.bytes(&[INSERT])?;
                self.bytes(&length(key, &self.path)?)?;
                self.bytes(key)?;
                self.bytes(&length(value, &self.path)?)?;
                self.bytes(value)
            }
            None => {
                self.bytes(&[REMOVE])?;
                self.bytes(&length(key, &self.path)?)?;
                self.bytes(key)
            }
        }
    }

    /// Writes the trailer, syncs, and renames the journal into place.
    fn seal(mut self, folder: &Path) -> Result<(), StoreError> {
        let hash = self.hash.finish();
        let mut trailer = vec![END];
        trailer.extend_from_slice(&self.records.to_le_bytes());
        trailer.extend_from_slice(&hash.to_le_bytes());
        self.out
            .write_all(&trailer)
            .map_err(|source| io_error(&self.path, source))?;
        let file = self
            .out
            .into_inner()
            .map_err(|error| io_error(&self.path, error.into_error()))?;
        file.sync_all()
            .map_err(|source| io_error(&self.path, source))?;
        drop(file);
        let journal = folder.join(JOURNAL);
        fs::rename(&self.path, &journal).map_err(|source| io_error(&journal, source))?;
        sync_folder(folder)
    }
}

/// Replays the journal of the state in `folder` into `db`, flushes sled and
/// removes the journal. `done` is told, every [`REPLAY_RECORDS`] records,
/// how many were handed to the writers. With `verify`, the whole journal is
/// checked (trailer, hash) before anything is written.
///
/// Each record is written on its own, not in sled batches: the journal
/// already makes the commit all or nothing (a replay cut short is run
/// again whole), and sled 0.34 writes single keys faster than batches
/// (Workload L's reassign, a million records: about 3.3 s against 5.5 s
/// in batches of 250, the fastest batch; BENCHMARKS.md, session 13).
///
/// This thread reads the journal and [`REPLAY_WRITERS`] threads write it:
/// each record goes to the writer its key's hash picks ([`writer_of`]), so
/// all the records of one key are written by one thread in journal order
/// and the tree ends as a replay one record at a time leaves it. sled takes
/// writes from several threads at once; on two cores the L reassign's
/// replay took 4.1–5.0 s instead of 5.9–6.4 s (BENCHMARKS.md, session 15).
pub fn replay(
    folder: &Path,
    db: &sled::Db,
    verify: bool,
    done: &mut dyn FnMut(u64),
) -> Result<(), StoreError> {
    let path = folder.join(JOURNAL);
    if verify {
        check(&path)?;
    }
    let mut reader = JournalReader::open(&path)?;
    let sled_error = |source| StoreError::Sled {
        path: folder.to_path_buf(),
        source,
    };
    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(REPLAY_WRITERS);
        let mut writers = Vec::with_capacity(REPLAY_WRITERS);
        for _ in 0..REPLAY_WRITERS {
            // A few chunks in flight per writer: memory stays bounded.
            let (sender, chunks) = std::sync::mpsc::sync_channel::<Vec<Record>>(4);
            senders.push(sender);
            writers.push(scope.spawn(move || write_chunks(db, chunks)));
        }
        let read = read_into(&mut reader, &senders, done);
        // Closing the channels lets the writers finish what they were sent.
        drop(senders);
        let mut written = Ok(());
        for writer in writers {
            let result = writer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            if written.is_ok() {
                written = result.map_err(sled_error);
            }
        }
        // A writer's error stops the reader (its channel closes): report
        // the writer's error rather than the closed channel.
        written.and(read)
    })?;
    db.flush().map_err(sled_error)?;
    fs::remove_file(&path).map_err(|source| io_error(&path, source))?;
    sync_folder(folder)
}

/// How many threads write a replayed journal into sled.
const REPLAY_WRITERS: usize = 2;

/// Which of the [`REPLAY_WRITERS`] writes the records of `key`.
fn writer_of(key: &[u8]) -> usize {
    crc32fast::hash(key) as usize % REPLAY_WRITERS
}

/// Reads the journal's records and sends them, in chunks of
/// [`REPLAY_RECORDS`], to the writer of each key. Stops early, without an
/// error of its own, when a writer has stopped (its error is the one to
/// report).
fn read_into(
    reader: &mut JournalReader,
    senders: &[std::sync::mpsc::SyncSender<Vec<Record>>],
    done: &mut dyn FnMut(u64),
) -> Result<(), StoreError> {
    let mut chunks: Vec<Vec<Record>> = (0..senders.len())
        .map(|_| Vec::with_capacity(REPLAY_RECORDS))
        .collect();
    while let Some(record) = reader.next_record()? {
        let writer = writer_of(&record.0);
        chunks[writer].push(record);
        if chunks[writer].len() >= REPLAY_RECORDS {
            let chunk = std::mem::replace(&mut chunks[writer], Vec::with_capacity(REPLAY_RECORDS));
            if senders[writer].send(chunk).is_err() {
                return Ok(());
            }
            done(REPLAY_RECORDS as u64);
        }
    }
    for (writer, chunk) in chunks.into_iter().enumerate() {
        let records = chunk.len() as u64;
        if records > 0 {
            if senders[writer].send(chunk).is_err() {
                return Ok(());
            }
            done(records);
        }
    }
    Ok(())
}

/// Writes the chunks of records one writer is sent, each record on its own
/// and in order, until the channel closes or sled fails.
fn write_chunks(
    db: &sled::Db,
    chunks: std::sync::mpsc::Receiver<Vec<Record>>,
) -> Result<(), sled::Error> {
    for chunk in chunks {
        for (key, value) in chunk {
            match value {
                Some(value) => db.insert(key, value)?,
                None => db.remove(key)?,
            };
        }
    }
    Ok(())
}

/// What [`recover`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// No journal: the last commit ended normally.
    Nothing,
    /// A commit killed before its commit point: discarded.
    Discarded,
    /// A commit killed after its commit point: written.
    Replayed,
}

/// Finishes or discards a commit that a crash interrupted (see the module
/// documentation). Called on open, with the writer's lock held, before
/// anything is read.
pub fn recover(folder: &Path, db: &sled::Db) -> Result<Recovered, StoreError> {
    let partial = folder.join(PARTIAL);
    let discarded = match fs::remove_file(&partial) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => return Err(io_error(&partial, source)),
    };
    if folder.join(JOURNAL).is_file() {
        replay(folder, db, true, &mut |_| {})?;
        return Ok(Recovered::Replayed);
    }
    if discarded {
        sync_folder(folder)?;
        return Ok(Recovered::Discarded);
    }
    Ok(Recovered::Nothing)
}

/// Reads a journal's records, in order, checking its structure.
struct JournalReader {
    path: PathBuf,
    input: BufReader<File>,
    hash: Checksum,
    records: u64,
}

impl JournalReader {
    fn open(path: &Path) -> Result<JournalReader, StoreError> {
        let file = File::open(path).map_err(|source| io_error(path, source))?;
        let mut reader = JournalReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(1 << 20, file),
            hash: Checksum::Crc(crc32fast::Hasher::new()),
            records: 0,
        };
        let mut magic = [0u8; 8];
        reader.exact(&mut magic)?;
        if &magic == MAGIC_FNV {
            let mut hash = Fnv::new();
            hash.update(MAGIC_FNV);
            reader.hash = Checksum::Fnv(hash);
        } else if &magic != MAGIC {
            return Err(reader.corrupt("not a deed journal"));
        }
        Ok(reader)
    }

    fn corrupt(&self, message: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            key: String::new(),
            message: format!("the journal of an interrupted commit is damaged: {message}"),
        }
    }

    fn exact(&mut self, buffer: &mut [u8]) -> Result<(), StoreError> {
        match self.input.read_exact(buffer) {
            Ok(()) => {
                self.hash.update(buffer);
                Ok(())
            }
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.corrupt("it ends early"))
            }
            Err(source) => Err(io_error(&self.path, source)),
        }
    }

    fn chunk(&mut self) -> Result<Vec<u8>, StoreError> {
        let mut length = [0u8; 4];
        self.exact(&mut length)?;
        let length = u64::from(u32::from_le_bytes(length));
        // Read through `take`: a damaged length must not allocate gigabytes.
        let mut bytes = Vec::new();
        (&mut self.input)
            .take(length)
            .read_to_end(&mut bytes)
            .map_err(|source| io_error(&self.path, source))?;
        if bytes.len() as u64 != length {
            return Err(self.corrupt("it ends early"));
        }
        self.hash.update(&bytes);
        Ok(bytes)
    }

    /// The next record; `None` at the trailer, which is checked.
    fn next_record(&mut self) -> Result<Option<Record>, StoreError> {
        let hash_before = self.hash.finish();
        let mut tag = [0u8; 1];
        self.exact(&mut tag)?;
        match tag[0] {
            INSERT => {
                let key = self.chunk()?;
                let value = self.chunk()?;
                self.records += 1;
                Ok(Some((key, Some(value))))
            }
            REMOVE => {
                let key = self.chunk()?;
                self.records += 1;
                Ok(Some((key, None)))
            }
            END => {
                let mut trailer = [0u8; 16];
                self.exact(&mut trailer)?;
                let mut count = [0u8; 8];
                count.copy_from_slice(&trailer[..8]);
                let mut hash = [0u8; 8];
                hash.copy_from_slice(&trailer[8..]);
                if u64::from_le_bytes(count) != self.records {
                    return Err(self.corrupt("its record count does not match"));
                }
                if u64::from_le_bytes(hash) != hash_before {
                    return Err(self.corrupt("its checksum does not match"));
                }
                Ok(None)
            }
            _ => Err(self.corrupt("unknown record tag")),
        }
    }
}

/// Reads the whole journal at `path`, checking it, without writing.
fn check(path: &Path) -> Result<(), StoreError> {
    let mut reader = JournalReader::open(path)?;
    while reader.next_record()?.is_some() {}
    Ok(())
}

fn length(bytes: &[u8], path: &Path) -> Result<[u8; 4], StoreError> {
    u32::try_from(bytes.len())
        .map(u32::to_le_bytes)
        .map_err(|_| StoreError::Corrupt {
            path: path.to_path_buf(),
            key: String::new(),
            message: "a record larger than 4 GiB cannot be journaled".into(),
        })
}

/// Makes a rename or a removal in `folder` durable.
fn sync_folder(folder: &Path) -> Result<(), StoreError> {
    File::open(folder)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| io_error(folder, source))
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The checksum of a journal: CRC-32, or FNV-1a in an older deed's.
enum Checksum {
    Crc(crc32fast::Hasher),
    Fnv(Fnv),
}

impl Checksum {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Checksum::Crc(hasher) => hasher.update(bytes),
            Checksum::Fnv(hash) => hash.update(bytes),
        }
    }

    fn finish(&self) -> u64 {
        match self {
            Checksum::Crc(hasher) => u64::from(hasher.clone().finalize()),
            Checksum::Fnv(hash) => hash.finish(),
        }
    }
}

/// FNV-1a, 64 bits: the checksum of `DEEDJ001` journals.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::model::{to_fields, Asset, Kind, Owner, State};
    use crate::plan::Change;
    use crate::store::codec::{keys, Object};
    use crate::store::sled_store::tests::{entry, filled_store, sample_state};
    use crate::store::sled_store::SledStore;
    use crate::store::{Access, Commit, MakeParts, Parts, Store};

    /// More records than one batch takes: these commits use the journal.
    const LARGE: usize = SMALL_RECORDS + 2_345;

    fn asset(n: usize) -> Asset {
        Asset {
            account: "acme".into(),
            owner: Owner::User("alice@acme.com".into()),
            creator: Some("alice@acme.com".into()),
            folder: None,
            versions: Vec::new(),
            tags: crate::model::Tags::from([("n".into(), n.to_string())]),
        }
    }

    fn asset_id(n: usize) -> String {
        format!("file/f-{n:06}")
    }

    /// The sample state with `count` more assets.
    fn state_with_assets(count: usize) -> State {
        let mut state = sample_state();
        for n in 0..count {
            state.assets.insert(asset_id(n), asset(n));
        }
        state
    }

    /// A writer holding `count` new assets, spilled to `journal.partial`.
    fn journal_of_assets(folder: &Path, count: usize) -> Writer {
        let mut writer = Writer::new(folder);
        for n in 0..count {
            let bytes = Object::Asset(asset(n)).encode().expect("encode");
            writer
                .insert(keys::object(Kind::Asset, &asset_id(n)), bytes)
                .expect("journal");
        }
        assert!(folder.join(PARTIAL).is_file(), "the records were spilled");
        writer
    }

    fn journal_files(folder: &Path) -> Vec<bool> {
        vec![folder.join(PARTIAL).exists(), folder.join(JOURNAL).exists()]
    }

    /// Makes `count` assets in parts of 1,000, then fails when `fail`; the
    /// asset `broken`, if any, with fields no asset has.
    struct AssetParts {
        next: usize,
        count: usize,
        fail: bool,
        broken: Option<usize>,
    }

    impl MakeParts for AssetParts {
        fn next_part(
            &mut self,
            _changes: &[Change],
            _state: &State,
        ) -> Option<Result<Commit<'static>, StoreError>> {
            if self.next >= self.count {
                return self.fail.then(|| {
                    self.fail = false;
                    Err(StoreError::Unsupported {
                        location: "test".into(),
                        message: "a part failed".into(),
                    })
                });
            }
            let end = (self.next + 1_000).min(self.count);
            let mut part = Commit::default();
            for n in self.next..end {
                let mut fields = to_fields(&asset(n));
                if self.broken == Some(n) {
                    fields.insert("owner".into(), crate::model::FieldValue::Array(Vec::new()));
                }
                part.objects.push((Kind::Asset, asset_id(n), Some(fields)));
                part.history.push(entry(&asset_id(n)));
            }
            self.next = end;
            Some(Ok(part))
        }
    }

    fn large_commit<'a>(state: &'a State, fail: bool) -> Commit<'a> {
        large_commit_broken_at(state, fail, None)
    }

    fn large_commit_broken_at(state: &State, fail: bool, broken: Option<usize>) -> Commit<'_> {
        let maker = AssetParts {
            next: 0,
            count: LARGE,
            fail,
            broken,
        };
        Commit {
            history: vec![entry("first")],
            rest: Some(Parts::new(2 * LARGE, &[], state, maker)),
            ..Commit::default()
        }
    }

    #[test]
    fn a_large_commit_is_written_whole_through_the_journal_and_leaves_none() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let before = store.load().expect("load");
        store.commit(large_commit(&before, false)).expect("commit");
        assert_eq!(journal_files(folder.path()), [false, false]);
        assert_eq!(store.load().expect("load"), state_with_assets(LARGE));
        let history = store.history(None).expect("history");
        assert_eq!(history.len(), 2 + 1 + LARGE);
        assert_eq!(
            history.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
            (1..=(3 + LARGE) as u64).collect::<Vec<_>>()
        );
        assert_eq!(&*history[2].change.object, "first");
        assert_eq!(&*history[3].change.object, asset_id(0).as_str());
        drop(store);
        let store = SledStore::open(folder.path(), false).expect("reopen");
        assert_eq!(store.load().expect("load"), state_with_assets(LARGE));
    }

    #[test]
    fn a_large_commit_whose_part_fails_writes_nothing() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let before = store.load().expect("load");
        let history = store.history(None).expect("history");
        match store.commit(large_commit(&before, true)) {
            Err(StoreError::Unsupported { message, .. }) => assert_eq!(message, "a part failed"),
            other => panic!("expected the part's error, got {other:?}"),
        }
        assert_eq!(journal_files(folder.path()), [false, false]);
        assert_eq!(store.load().expect("load"), before);
        assert_eq!(store.history(None).expect("history"), history);
        // The seq counter did not move: the next entry follows the last.
        store
            .commit(Commit {
                history: vec![entry("next")],
                ..Commit::default()
            })
            .expect("commit");
        assert_eq!(store.history(Some(1)).expect("history")[0].seq, 3);
    }

    /// The parts are made on a thread of their own: an invalid object in
    /// one stops the maker too, and nothing is written.
    #[test]
    fn a_large_commit_with_an_invalid_object_writes_nothing() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let before = store.load().expect("load");
        let history = store.history(None).expect("history");
        let broken = 2_345;
        match store.commit(large_commit_broken_at(&before, false, Some(broken))) {
            Err(StoreError::InvalidObject { kind, id, .. }) => {
                assert_eq!((kind, id), (Kind::Asset, asset_id(broken)))
            }
            other => panic!("expected the invalid object, got {other:?}"),
        }
        assert_eq!(journal_files(folder.path()), [false, false]);
        assert_eq!(store.load().expect("load"), before);
        assert_eq!(store.history(None).expect("history"), history);
    }

    #[test]
    fn a_commit_killed_before_its_commit_point_is_discarded_on_open() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        // The process dies while writing the journal: half of it on disk,
        // no trailer, never renamed.
        let mut writer = journal_of_assets(folder.path(), LARGE);
        if let Some(file) = &mut writer.file {
            file.out.flush().expect("flush");
        }
        std::mem::forget(writer);
        drop(store);
        assert_eq!(journal_files(folder.path()), [true, false]);

        // Any open, reading or writing, sees nothing of it.
        let location = folder.path().to_str().expect("utf-8");
        let reader = crate::store::open(location, Access::Read).expect("open to read");
        assert_eq!(reader.load().expect("load"), sample_state());
        drop(reader);
        assert_eq!(journal_files(folder.path()), [false, false]);
        let store = SledStore::open(folder.path(), false).expect("reopen");
        assert_eq!(store.load().expect("load"), sample_state());
    }

    #[test]
    fn a_commit_killed_after_its_commit_point_is_replayed_whole_on_open() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        // The journal is sealed (the commit point), then the process dies
        // before the replay.
        let writer = journal_of_assets(folder.path(), LARGE);
        assert!(matches!(
            writer.finish().expect("seal"),
            Finished::Journal { records } if records == LARGE as u64
        ));
        drop(store);
        assert_eq!(journal_files(folder.path()), [false, true]);

        let location = folder.path().to_str().expect("utf-8");
        let reader = crate::store::open(location, Access::Read).expect("open to read");
        assert_eq!(reader.load().expect("load"), state_with_assets(LARGE));
        drop(reader);
        assert_eq!(journal_files(folder.path()), [false, false]);
        let store = SledStore::open(folder.path(), false).expect("reopen");
        assert_eq!(store.load().expect("load"), state_with_assets(LARGE));
    }

    #[test]
    fn a_replay_killed_halfway_is_finished_on_open() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let writer = journal_of_assets(folder.path(), LARGE);
        writer.finish().expect("seal");
        // The first records are in the tree, the rest not yet.
        let mut reader = JournalReader::open(&folder.path().join(JOURNAL)).expect("read");
        let mut first = Commit::default();
        for _ in 0..100 {
            let (key, value) = reader.next_record().expect("record").expect("more");
            let (kind, id) = keys::parse_object(&key).expect("object key");
            let Object::Asset(asset) =
                Object::decode(kind, &value.expect("insert")).expect("asset")
            else {
                panic!("not an asset: {id}");
            };
            first
                .objects
                .push((kind, id.to_string(), Some(to_fields(&asset))));
        }
        store.commit(first).expect("partial replay");
        drop(store);

        let store = SledStore::open(folder.path(), false).expect("reopen");
        assert_eq!(store.load().expect("load"), state_with_assets(LARGE));
        assert_eq!(journal_files(folder.path()), [false, false]);
    }

    #[test]
    fn a_replay_on_several_writers_leaves_each_key_as_its_last_record_says() {
        let folder = tempfile::tempdir().expect("tempdir");
        let db = sled::open(folder.path().join("tree")).expect("sled");
        let mut expected = std::collections::BTreeMap::new();
        // Keys already in the tree, some of which the journal removes.
        for n in 0..50u32 {
            let key = format!("k{n:03}").into_bytes();
            db.insert(key.clone(), b"before".to_vec()).expect("insert");
            expected.insert(key, b"before".to_vec());
        }
        // Each of 400 keys is set, removed and set again many times, far
        // apart in the journal: every writer gets chunks of many keys.
        let mut writer = Writer::new(folder.path());
        let records = SMALL_RECORDS + 2_345;
        for n in 0..records {
            let key = format!("k{:03}", (n * 7) % 400).into_bytes();
            if n % 5 == 0 {
                writer.remove(key.clone()).expect("journal");
                expected.remove(&key);
            } else {
                let value = format!("value {n}").into_bytes();
                writer.insert(key.clone(), value.clone()).expect("journal");
                expected.insert(key, value);
            }
        }
        let Finished::Journal { records: sealed } = writer.finish().expect("seal") else {
            panic!("a journal was expected");
        };
        assert_eq!(sealed, records as u64);
        let mut reported = 0;
        replay(folder.path(), &db, true, &mut |done| reported += done).expect("replay");
        assert_eq!(
            reported, records as u64,
            "progress counts every record once"
        );
        let tree: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = db
            .iter()
            .map(|item| {
                let (key, value) = item.expect("read");
                (key.to_vec(), value.to_vec())
            })
            .collect();
        let keys: std::collections::BTreeSet<&Vec<u8>> =
            tree.keys().chain(expected.keys()).collect();
        let wrong: Vec<String> = keys
            .into_iter()
            .filter(|key| tree.get(*key) != expected.get(*key))
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .collect();
        assert!(
            wrong.is_empty(),
            "{} keys differ from their last record: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
        assert_eq!(journal_files(folder.path()), [false, false]);
    }

    #[test]
    fn a_damaged_journal_is_refused_and_never_half_replayed() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let writer = journal_of_assets(folder.path(), LARGE);
        writer.finish().expect("seal");
        drop(store);
        let path = folder.path().join(JOURNAL);
        let mut bytes = fs::read(&path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x20;
        fs::write(&path, &bytes).expect("write");

        match SledStore::open(folder.path(), false) {
            Err(StoreError::Corrupt { message, .. }) => {
                assert!(message.contains("journal"), "{message}")
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
        }
        // Nothing of it reached the tree.
        fs::rename(&path, folder.path().join("journal.damaged")).expect("move aside");
        let store = SledStore::open(folder.path(), false).expect("open");
        assert_eq!(store.load().expect("load"), sample_state());
    }

    /// Rewrites the journal at `path` as an older deed wrote it: magic
    /// `DEEDJ001`, the FNV-1a checksum in the trailer.
    fn rewrite_as_fnv_journal(path: &Path) {
        let bytes = fs::read(path).expect("read");
        let body = &bytes[MAGIC.len()..bytes.len() - 17];
        let mut old = MAGIC_FNV.to_vec();
        old.extend_from_slice(body);
        let mut hash = Fnv::new();
        hash.update(&old);
        old.push(END);
        old.extend_from_slice(&bytes[bytes.len() - 16..bytes.len() - 8]);
        old.extend_from_slice(&hash.finish().to_le_bytes());
        fs::write(path, old).expect("write");
    }

    #[test]
    fn a_journal_an_older_deed_left_is_replayed_and_checked_too() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let writer = journal_of_assets(folder.path(), LARGE);
        writer.finish().expect("seal");
        drop(store);
        let path = folder.path().join(JOURNAL);
        assert!(fs::read(&path).expect("read").starts_with(MAGIC));
        rewrite_as_fnv_journal(&path);
        let old = fs::read(&path).expect("read");

        // Damaged, it is refused as a current journal would be.
        let mut damaged = old.clone();
        damaged[old.len() / 2] ^= 0x20;
        fs::write(&path, &damaged).expect("write");
        assert!(matches!(
            SledStore::open(folder.path(), false),
            Err(StoreError::Corrupt { .. })
        ));
        fs::write(&path, &old).expect("write");
        let store = SledStore::open(folder.path(), false).expect("open");
        assert_eq!(store.load().expect("load"), state_with_assets(LARGE));
        assert_eq!(journal_files(folder.path()), [false, false]);
    }

    #[test]
    fn a_small_commit_is_one_batch_without_a_journal() {
        let folder = tempfile::tempdir().expect("tempdir");
        let mut writer = Writer::new(folder.path());
        for n in 1..SMALL_RECORDS {
            writer
                .insert(keys::object(Kind::Asset, &asset_id(n)), b"{}".to_vec())
                .expect("insert");
        }
        writer.remove(b"x".to_vec()).expect("remove");
        assert_eq!(journal_files(folder.path()), [false, false]);
        assert!(matches!(
            writer.finish().expect("finish"),
            Finished::Batch(_)
        ));
        assert_eq!(journal_files(folder.path()), [false, false]);
    }
}
