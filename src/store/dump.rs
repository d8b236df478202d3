//! Dumps: the full-fidelity, deterministic backup of a state (`deed state
//! dump` / `deed state restore`), and [`DumpStore`], a dump opened read-only
//! as a state (`--state FILE`).
//!
//! A dump is JSON lines. The first line is the header
//! `{"deed_dump":1,"schema_version":1}`; then every object, in
//! [`Kind::ALL`] order then id order, as
//! `{"kind":"user","id":"bob@acme.com","value":{...}}`; then the invoices
//! (`{"kind":"invoice","id":...,"value":{...}}`) by id; then
//! `{"history":{...}}` by seq; then `{"notification":{...}}` by id. The same
//! state always gives the same bytes. Reading a dump checks that order (so a
//! repeated record is caught), that history seqs run from 1 without gaps, and
//! decodes every value into its typed struct; an error names the line.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::asset_pages::{decode_page, PageEncoder};
use super::codec::{keys, kind_named, Object};
use super::history_groups::GroupWriter;
use super::sled_store::{encode, encode_error, layout_version, SledStore};
use super::{Commit, HistoryEntry, Notification, Store, StoreError, SCHEMA_VERSION};
use crate::model::{Invoice, Kind, PackedAsset, State};

/// The version of the dump format (the `deed_dump` of the header).
pub const DUMP_FORMAT: u32 = 1;

/// A dump file opened as a read-only state, held in memory. Also the empty
/// state of a `--state` that does not exist yet ([`DumpStore::empty`]).
#[derive(Debug)]
pub struct DumpStore {
    path: PathBuf,
    state: State,
    history: Vec<HistoryEntry>,
    notifications: BTreeMap<String, Notification>,
}

impl DumpStore {
    /// Reads the dump at `path`.
    pub fn open(path: &Path) -> Result<DumpStore, StoreError> {
        let mut store = DumpStore::empty(path);
        read_dump(path, |record| {
            match record {
                Record::Object { id, object } => object.insert_into(&mut store.state, id),
                Record::Invoice { id, invoice } => {
                    store.state.invoices.insert(id, invoice);
                }
                Record::History(entry) => store.history.push(entry),
                Record::Notification(notification) => {
                    store
                        .notifications
                        .insert(notification.id.clone(), notification);
                }
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// An empty state at `path`, for a state that does not exist yet:
    /// plan and validate against it without creating anything.
    pub fn empty(path: &Path) -> DumpStore {
        DumpStore {
            path: path.to_path_buf(),
            state: State::default(),
            history: Vec::new(),
            notifications: BTreeMap::new(),
        }
    }

    /// The file this store was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_only(&self) -> StoreError {
        StoreError::ReadOnly {
            path: self.path.clone(),
        }
    }
}

impl Store for DumpStore {
    fn load(&self) -> Result<State, StoreError> {
        Ok(self.state.clone())
    }

    fn commit(&self, _commit: Commit) -> Result<(), StoreError> {
        Err(self.read_only())
    }

    fn history(&self, limit: Option<usize>) -> Result<Vec<HistoryEntry>, StoreError> {
        let skip = limit.map_or(0, |limit| self.history.len().saturating_sub(limit));
        Ok(self.history[skip..].to_vec())
    }

    fn outbox(&self) -> Result<Vec<Notification>, StoreError> {
        let mut notifications: Vec<Notification> = self.notifications.values().cloned().collect();
        notifications.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(notifications)
    }

    fn mark_delivered(&self, _ids: &[String]) -> Result<(), StoreError> {
        Err(self.read_only())
    }

    fn dump(&self, out: &mut dyn Write) -> Result<(), StoreError> {
        let mut writer = DumpWriter::new(out)?;
        let state = &self.state;
        for kind in Kind::ALL {
            match kind {
                Kind::Account => writer.objects(kind, &state.accounts)?,
                Kind::User => writer.objects(kind, &state.users)?,
                Kind::Group => writer.objects(kind, &state.groups)?,
                Kind::Membership => writer.objects(kind, &state.memberships)?,
                Kind::Organization => writer.objects(kind, &state.organizations)?,
                Kind::Product => writer.objects(kind, &state.products)?,
                Kind::License => writer.objects(kind, &state.licenses)?,
                Kind::Asset => {
                    for (id, asset) in state.assets.iter() {
                        writer.object(kind.as_str(), id, &asset)?;
                    }
                }
                Kind::Grant => writer.objects(kind, &state.grants)?,
            }
        }
        for (id, invoice) in &state.invoices {
            writer.invoice(id, invoice)?;
        }
        for entry in &self.history {
            writer.history(entry)?;
        }
        for notification in self.notifications.values() {
            writer.notification(notification)?;
        }
        writer.finish()
    }
}

/// Restores the dump at `dump_path` into `store`, which must be empty
/// ([`StoreError::NotEmpty`] otherwise). The whole dump is checked first: a
/// bad line is [`StoreError::BadDump`] with its line number, and nothing is
/// written. A marker is written (and flushed) first, then each record on
/// its own (sled 0.34 writes single keys faster than batches), then the
/// marker removed in the last batch: a restore interrupted midway leaves
/// the marker, which makes the state refuse to open.
pub fn restore(store: &SledStore, dump_path: &Path) -> Result<(), StoreError> {
    let _exclusive = store.exclusive();
    if !store.holds_nothing()? {
        return Err(StoreError::NotEmpty {
            path: store.path().to_path_buf(),
        });
    }
    read_dump(dump_path, |_| Ok(()))?;

    let mut marker = sled::Batch::default();
    marker.insert(keys::RESTORE_INCOMPLETE, b"1".as_slice());
    store.apply_raw(marker, true)?;
    let mut last_seq = 0;
    let mut history = GroupWriter::default();
    let path = store.path();
    let put = |key: Vec<u8>, bytes: Vec<u8>| store.insert_raw(key, bytes);
    // Assets come in id order (`Order`), straight into pages.
    let mut pages = PageEncoder::default();
    let mut put_page = |key: Vec<u8>, page: Option<Vec<u8>>| match page {
        Some(page) => put(key, page),
        None => Ok(()),
    };
    read_dump(dump_path, |record| match record {
        Record::Object {
            id,
            object: Object::Asset(asset),
        } => pages.push(&id, PackedAsset::pack(&asset).as_bytes(), &mut put_page),
        Record::Object { id, object } => {
            let bytes = object.encode().map_err(|error| StoreError::InvalidObject {
                path: path.to_path_buf(),
                kind: object.kind(),
                id: id.clone(),
                message: error.to_string(),
            })?;
            put(keys::object(object.kind(), &id), bytes)
        }
        Record::Invoice { id, invoice } => put(keys::invoice(&id), encode(path, &invoice)?),
        Record::History(entry) => {
            last_seq = entry.seq;
            for (key, bytes) in history.push(&entry).map_err(encode_error(path))? {
                put(key, bytes)?;
            }
            Ok(())
        }
        Record::Notification(notification) => put(
            keys::notification(&notification.id),
            encode(path, &notification)?,
        ),
    })?;
    pages.finish(&mut put_page)?;
    let mut batch = sled::Batch::default();
    if let Some((key, value)) = history.finish() {
        batch.insert(key, value);
    }
    if last_seq > 0 {
        batch.insert(keys::HISTORY_SEQ, last_seq.to_string().as_bytes());
    }
    // What was written is of this layout, whatever the empty state was
    // marked with when it was made.
    batch.insert(keys::SCHEMA_VERSION, layout_version());
    batch.remove(keys::RESTORE_INCOMPLETE);
    store.apply_raw(batch, true)
}

/// Writes the dump of a sled state, streaming it record by record. The
/// caller holds the store's read guard.
pub(crate) fn write_sled(store: &SledStore, out: &mut dyn Write) -> Result<(), StoreError> {
    let mut writer = DumpWriter::new(out)?;
    for kind in Kind::ALL {
        for item in store.scan(&keys::kind_prefix(kind)) {
            let (key, value) = item?;
            let (_, id, object) = store.decode_object(&key, &value)?;
            writer.object(kind.as_str(), id, &object)?;
        }
        if kind != Kind::Asset {
            continue;
        }
        // A state holds asset records of an older layout or pages, never
        // both: the first commit to an older state moves them all.
        for item in store.scan(keys::ASSET_PAGES) {
            let (key, value) = item?;
            let assets = decode_page(&key, &value).map_err(|error| store.corrupt(&key, error))?;
            for (id, asset) in assets {
                let asset = asset
                    .unpack()
                    .ok_or_else(|| store.corrupt(&key, format!("asset {id} cannot be read")))?;
                writer.object(kind.as_str(), &id, &Object::Asset(asset))?;
            }
        }
    }
    for item in store.scan(keys::INVOICES) {
        let (key, value) = item?;
        let id = store.decode_id(&key, keys::INVOICES)?;
        let invoice: Invoice = store.decode(&key, &value)?;
        writer.invoice(id, &invoice)?;
    }
    for item in store.scan(keys::HISTORY) {
        let (key, value) = item?;
        for entry in store.decode_history(&key, &value)? {
            writer.history(&entry)?;
        }
    }
    for item in store.scan(keys::OUTBOX) {
        let (key, value) = item?;
        let notification: Notification = store.decode(&key, &value)?;
        writer.notification(&notification)?;
    }
    writer.finish()
}

/// Writes the lines of a dump, in the order the caller gives them.
pub(crate) struct DumpWriter<'a> {
    out: BufWriter<&'a mut dyn Write>,
}

#[derive(Serialize)]
struct HeaderLine {
    deed_dump: u32,
    schema_version: u32,
}

#[derive(Serialize)]
struct ObjectLine<'a, T> {
    kind: &'a str,
    id: &'a str,
    value: &'a T,
}

#[derive(Serialize)]
struct HistoryLine<'a> {
    history: &'a HistoryEntry,
}

#[derive(Serialize)]
struct NotificationLine<'a> {
    notification: &'a Notification,
}

impl<'a> DumpWriter<'a> {
    /// Starts a dump: writes the header.
    pub(crate) fn new(out: &'a mut dyn Write) -> Result<DumpWriter<'a>, StoreError> {
        let mut writer = DumpWriter {
            out: BufWriter::with_capacity(64 * 1024, out),
        };
        writer.line(&HeaderLine {
            deed_dump: DUMP_FORMAT,
            schema_version: SCHEMA_VERSION,
        })?;
        Ok(writer)
    }

    fn line<T: Serialize>(&mut self, line: &T) -> Result<(), StoreError> {
        serde_json::to_writer(&mut self.out, line)
            .map_err(|error| StoreError::DumpWrite(error.into()))?;
        self.out.write_all(b"\n").map_err(StoreError::DumpWrite)
    }

    pub(crate) fn object<T: Serialize>(
        &mut self,
        kind: &str,
        id: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.line(&ObjectLine { kind, id, value })
    }

    fn objects<T: Serialize>(
        &mut self,
        kind: Kind,
        objects: &BTreeMap<String, T>,
    ) -> Result<(), StoreError> {
        for (id, object) in objects {
            self.object(kind.as_str(), id, object)?;
        }
        Ok(())
    }

    pub(crate) fn invoice(&mut self, id: &str, invoice: &Invoice) -> Result<(), StoreError> {
        self.object(INVOICE, id, invoice)
    }

    pub(crate) fn history(&mut self, entry: &HistoryEntry) -> Result<(), StoreError> {
        self.line(&HistoryLine { history: entry })
    }

    pub(crate) fn notification(&mut self, notification: &Notification) -> Result<(), StoreError> {
        self.line(&NotificationLine { notification })
    }

    pub(crate) fn finish(mut self) -> Result<(), StoreError> {
        self.out.flush().map_err(StoreError::DumpWrite)
    }
}

/// The `kind` of invoice lines.
const INVOICE: &str = "invoice";

/// One record of a dump, decoded.
pub(crate) enum Record {
    Object { id: String, object: Object },
    Invoice { id: String, invoice: Invoice },
    History(HistoryEntry),
    Notification(Notification),
}

/// Reads the dump at `path`, checking every line, and hands each record to
/// `each` in file order. Stops at the first bad line.
pub(crate) fn read_dump(
    path: &Path,
    mut each: impl FnMut(Record) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let file = File::open(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, message: String| StoreError::BadDump {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut order = Order::default();
    let mut header_seen = false;
    let mut number = 0;
    for line in BufReader::new(file).lines() {
        number += 1;
        let line = line.map_err(|error| bad(number, error.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line =
            serde_json::from_str(&line).map_err(|error| bad(number, json_message(&error)))?;
        match parsed {
            Line::Header {
                format,
                schema_version,
            } => {
                if header_seen {
                    return Err(bad(number, "a second header".to_string()));
                }
                if format != DUMP_FORMAT {
                    return Err(bad(
                        number,
                        format!("dump format {format} is not one this deed reads ({DUMP_FORMAT})"),
                    ));
                }
                if schema_version > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path: path.to_path_buf(),
                        found: schema_version,
                        supported: SCHEMA_VERSION,
                    });
                }
                header_seen = true;
            }
            Line::Record(record) => {
                if !header_seen {
                    return Err(bad(
                        number,
                        format!("missing header: a dump starts with {{\"deed_dump\":{DUMP_FORMAT},\"schema_version\":{SCHEMA_VERSION}}}"),
                    ));
                }
                order
                    .check(&record)
                    .map_err(|message| bad(number, message))?;
                each(record)?;
            }
        }
    }
    if !header_seen {
        return Err(bad(number.max(1), "empty dump: missing header".to_string()));
    }
    Ok(())
}

/// serde_json's message without its position, which is always "line 1".
fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&position) {
        Some(message) => format!("{message} (column {})", error.column()),
        None => text,
    }
}

/// Checks that records come in dump order, each once, and that history
/// seqs run from 1 without gaps.
#[derive(Default)]
struct Order {
    /// (section, kind, id) of the last record; history entries share one key.
    last: Option<(u8, usize, String)>,
    last_seq: u64,
}

impl Order {
    fn check(&mut self, record: &Record) -> Result<(), String> {
        let (key, what) = match record {
            Record::Object { id, object } => {
                let kind = object.kind();
                let index = Kind::ALL
                    .iter()
                    .position(|other| *other == kind)
                    .unwrap_or(0);
                ((0, index, id.clone()), format!("{kind} {id}"))
            }
            Record::Invoice { id, .. } => ((1, 0, id.clone()), format!("invoice {id}")),
            Record::History(entry) => {
                if entry.seq != self.last_seq + 1 {
                    return Err(format!(
                        "history seq {} where {} was expected (seqs run from 1 without gaps)",
                        entry.seq,
                        self.last_seq + 1
                    ));
                }
                self.last_seq = entry.seq;
                ((2, 0, String::new()), format!("history {}", entry.seq))
            }
            Record::Notification(notification) => (
                (3, 0, notification.id.clone()),
                format!("notification {}", notification.id),
            ),
        };
        if let Some(last) = &self.last {
            let repeated = key == *last && key.0 != 2;
            if key < *last || repeated {
                return Err(format!(
                    "{what} is out of order or repeated: a dump lists objects by kind then id, \
                     then invoices by id, history by seq and notifications by id"
                ));
            }
        }
        self.last = Some(key);
        Ok(())
    }
}

/// One line of a dump. Not boxed: there is one per line, used at once.
#[allow(clippy::large_enum_variant)]
enum Line {
    Header { format: u32, schema_version: u32 },
    Record(Record),
}

const LINE_FIELDS: &[&str] = &[
    "deed_dump",
    "schema_version",
    "kind",
    "id",
    "value",
    "history",
    "notification",
];

impl<'de> Deserialize<'de> for Line {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Line, D::Error> {
        deserializer.deserialize_map(LineVisitor)
    }
}

/// What a `kind` names: an object kind, or invoices.
#[derive(Clone, Copy)]
enum Target {
    Object(Kind),
    Invoice,
}

impl Target {
    fn named(name: &str) -> Option<Target> {
        if name == INVOICE {
            Some(Target::Invoice)
        } else {
            kind_named(name).map(Target::Object)
        }
    }
}

/// A `value`, typed by its `kind`.
enum Typed {
    Object(Object),
    Invoice(Invoice),
}

impl<'de> DeserializeSeed<'de> for Target {
    type Value = Typed;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Typed, D::Error> {
        match self {
            Target::Object(kind) => Object::deserialize_kind(kind, deserializer).map(Typed::Object),
            Target::Invoice => Invoice::deserialize(deserializer).map(Typed::Invoice),
        }
    }
}

/// A `value` read before its `kind` is buffered, then typed.
enum Payload {
    Typed(Typed),
    Raw(serde_json::Value),
}

struct LineVisitor;

fn set<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Visitor<'de> for LineVisitor {
    type Value = Line;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a dump line: a header, an object, a history entry or a notification")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line, A::Error> {
        let mut format: Option<u32> = None;
        let mut schema_version: Option<u32> = None;
        let mut target: Option<Target> = None;
        let mut id: Option<String> = None;
        let mut value: Option<Payload> = None;
        let mut history: Option<HistoryEntry> = None;
        let mut notification: Option<Notification> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "deed_dump" => set(&mut format, map.next_value()?, "deed_dump")?,
                "schema_version" => set(&mut schema_version, map.next_value()?, "schema_version")?,
                "kind" => {
                    let name: String = map.next_value()?;
                    let named = Target::named(&name).ok_or_else(|| {
                        de::Error::custom(format!(
                            "unknown kind `{name}` (expected an object kind or invoice)"
                        ))
                    })?;
                    set(&mut target, named, "kind")?
                }
                "id" => set(&mut id, map.next_value()?, "id")?,
                "value" => {
                    let payload = match target {
                        Some(target) => Payload::Typed(map.next_value_seed(target)?),
                        None => Payload::Raw(map.next_value()?),
                    };
                    set(&mut value, payload, "value")?
                }
                "history" => set(&mut history, map.next_value()?, "history")?,
                "notification" => set(&mut notification, map.next_value()?, "notification")?,
                other => return Err(de::Error::unknown_field(other, LINE_FIELDS)),
            }
        }
        let is_header = format.is_some() || schema_version.is_some();
        let is_object = target.is_some() || id.is_some() || value.is_some();
        let shapes = [
            is_header,
            is_object,
            history.is_some(),
            notification.is_some(),
        ];
        if shapes.iter().filter(|shape| **shape).count() != 1 {
            return Err(de::Error::custom(
                "a dump line is exactly one of a header, an object, a history entry or a notification",
            ));
        }
        if is_header {
            return Ok(Line::Header {
                format: format.ok_or_else(|| de::Error::missing_field("deed_dump"))?,
                schema_version: schema_version
                    .ok_or_else(|| de::Error::missing_field("schema_version"))?,
            });
        }
        if let Some(entry) = history {
            return Ok(Line::Record(Record::History(entry)));
        }
        if let Some(notification) = notification {
            return Ok(Line::Record(Record::Notification(notification)));
        }
        let target = target.ok_or_else(|| de::Error::missing_field("kind"))?;
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        let typed = match value.ok_or_else(|| de::Error::missing_field("value"))? {
            Payload::Typed(typed) => typed,
            Payload::Raw(raw) => target.deserialize(raw).map_err(de::Error::custom)?,
        };
        Ok(Line::Record(match typed {
            Typed::Object(object) => Record::Object { id, object },
            Typed::Invoice(invoice) => Record::Invoice { id, invoice },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::tests::{filled_store, sample_state};

    fn dump_bytes(store: &dyn Store) -> Vec<u8> {
        let mut bytes = Vec::new();
        store.dump(&mut bytes).expect("dump");
        bytes
    }

    fn write_file(folder: &Path, name: &str, text: &str) -> PathBuf {
        let path = folder.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_dump_restored_into_a_new_folder_dumps_the_same_bytes() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(&folder.path().join("a"));
        let bytes = dump_bytes(&store);
        assert_eq!(bytes, dump_bytes(&store), "deterministic");
        let dump_path = folder.path().join("state.dump");
        std::fs::write(&dump_path, &bytes).expect("write");

        let restored = SledStore::open(&folder.path().join("b"), false).expect("open");
        restore(&restored, &dump_path).expect("restore");
        assert_eq!(dump_bytes(&restored), bytes);
        assert_eq!(restored.load().expect("load"), store.load().expect("load"));
        assert_eq!(
            restored.history(None).expect("history"),
            store.history(None).expect("history")
        );
        assert_eq!(
            restored.outbox().expect("outbox"),
            store.outbox().expect("outbox")
        );
        // The seq counter continues after the restored history.
        restored
            .commit(Commit {
                history: vec![crate::store::sled_store::tests::entry("next")],
                ..Commit::default()
            })
            .expect("commit");
        assert_eq!(restored.history(Some(1)).expect("history")[0].seq, 3);

        // The same dump opened read-only is the same state and dumps the same.
        let opened = DumpStore::open(&dump_path).expect("open dump");
        assert_eq!(dump_bytes(&opened), bytes);
        assert_eq!(opened.load().expect("load"), sample_state());
        assert_eq!(
            opened.history(Some(1)).expect("history"),
            store.history(Some(1)).expect("history")
        );
        assert_eq!(
            opened.outbox().expect("outbox"),
            store.outbox().expect("outbox")
        );
    }

    #[test]
    fn a_dump_lists_the_header_then_objects_by_kind_then_the_rest() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(folder.path());
        let text = String::from_utf8(dump_bytes(&store)).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"deed_dump":1,"schema_version":1}"#);
        assert!(lines[1].starts_with(r#"{"kind":"account","id":"acme","value":{"#));
        assert!(lines[2].starts_with(r#"{"kind":"user","id":"alice@acme.com","value":{"#));
        let kinds: Vec<&str> = lines[1..]
            .iter()
            .map(|line| {
                line.split('"')
                    .nth(if line.starts_with(r#"{"kind""#) { 3 } else { 1 })
                    .expect("kind")
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "account",
                "user",
                "user",
                "group",
                "membership",
                "organization",
                "product",
                "license",
                "asset",
                "asset",
                "asset",
                "grant",
                "invoice",
                "invoice",
                "history",
                "history",
                "notification",
                "notification",
            ]
        );
        assert!(lines[17].contains(r#""id":"n-1""#));
    }

    #[test]
    fn restoring_into_a_state_that_is_not_empty_is_refused() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(&folder.path().join("a"));
        let dump_path = folder.path().join("state.dump");
        std::fs::write(&dump_path, dump_bytes(&store)).expect("write");
        assert!(matches!(
            restore(&store, &dump_path),
            Err(StoreError::NotEmpty { .. })
        ));
        assert_eq!(store.load().expect("load"), sample_state());
        assert_eq!(store.history(None).expect("history").len(), 2);
    }

    #[test]
    fn a_corrupt_dump_line_is_reported_with_its_number_and_nothing_is_written() {
        let folder = tempfile::tempdir().expect("tempdir");
        let source = filled_store(&folder.path().join("a"));
        let text = String::from_utf8(dump_bytes(&source)).expect("utf-8");
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        // Line 10 is an asset: give it an owner that does not parse.
        assert!(lines[9].starts_with(r#"{"kind":"asset""#));
        lines[9] = lines[9].replace("group:analysts", "nobody");
        let dump_path = write_file(folder.path(), "bad.dump", &(lines.join("\n") + "\n"));

        let target = SledStore::open(&folder.path().join("b"), false).expect("open");
        match restore(&target, &dump_path) {
            Err(StoreError::BadDump { line, message, .. }) => {
                assert_eq!(line, 10);
                assert!(message.contains("bad owner"), "{message}");
            }
            other => panic!("expected BadDump, got {other:?}"),
        }
        assert!(target.is_empty().expect("is_empty"));
        assert!(matches!(
            DumpStore::open(&dump_path),
            Err(StoreError::BadDump { line: 10, .. })
        ));
    }

    #[test]
    fn dumps_with_bad_structure_are_refused_with_the_line() {
        let folder = tempfile::tempdir().expect("tempdir");
        let header = r#"{"deed_dump":1,"schema_version":1}"#;
        let org = |id: &str| {
            format!(r#"{{"kind":"organization","id":"{id}","value":{{"account":"acme"}}}}"#)
        };
        let cases: Vec<(String, usize, &str)> = vec![
            (String::new(), 1, "missing header"),
            (org("a"), 1, "missing header"),
            (
                format!("{header}\n{}\n{}", org("b"), org("a")),
                3,
                "out of order",
            ),
            (
                format!("{header}\n{}\n{}", org("a"), org("a")),
                3,
                "repeated",
            ),
            (
                format!(
                    "{header}\n{}\n{}",
                    org("a"),
                    r#"{"kind":"group","id":"acme/x","value":{"account":"acme","name":"x"}}"#
                ),
                3,
                "out of order",
            ),
            (
                format!("{header}\n{{\"kind\":\"planet\",\"id\":\"x\",\"value\":{{}}}}"),
                2,
                "unknown kind",
            ),
            (format!("{header}\n{{\"extra\":1}}"), 2, "unknown field"),
            (
                format!(
                    "{header}\n{{\"kind\":\"organization\",\"value\":{{\"account\":\"acme\"}}}}"
                ),
                2,
                "missing field `id`",
            ),
            (format!("{header}\nnot json"), 2, "expected"),
            (format!("{header}\n{header}"), 2, "second header"),
            (
                r#"{"deed_dump":2,"schema_version":1}"#.to_string(),
                1,
                "dump format 2",
            ),
        ];
        for (index, (text, line, needle)) in cases.into_iter().enumerate() {
            let path = write_file(folder.path(), &format!("case-{index}.dump"), &text);
            match DumpStore::open(&path) {
                Err(StoreError::BadDump {
                    line: found,
                    message,
                    ..
                }) => {
                    assert_eq!(found, line, "case {index}: {message}");
                    assert!(message.contains(needle), "case {index}: {message}");
                }
                other => panic!("case {index}: expected BadDump, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_history_with_a_gap_is_refused() {
        let folder = tempfile::tempdir().expect("tempdir");
        let store = filled_store(&folder.path().join("a"));
        let text = String::from_utf8(dump_bytes(&store)).expect("utf-8");
        let gap = text.replacen(r#""seq":2"#, r#""seq":3"#, 1);
        let path = write_file(folder.path(), "gap.dump", &gap);
        match DumpStore::open(&path) {
            Err(StoreError::BadDump { line, message, .. }) => {
                assert_eq!(line, 17);
                assert!(
                    message.contains("history seq 3 where 2 was expected"),
                    "{message}"
                );
            }
            other => panic!("expected BadDump, got {other:?}"),
        }
    }

    #[test]
    fn a_dump_of_a_newer_schema_is_refused() {
        let folder = tempfile::tempdir().expect("tempdir");
        let path = write_file(
            folder.path(),
            "new.dump",
            "{\"deed_dump\":1,\"schema_version\":99}\n",
        );
        assert!(matches!(
            DumpStore::open(&path),
            Err(StoreError::NewerSchema { found: 99, .. })
        ));
    }

    #[test]
    fn a_value_written_before_its_kind_is_still_read() {
        let folder = tempfile::tempdir().expect("tempdir");
        let path = write_file(
            folder.path(),
            "reordered.dump",
            "{\"schema_version\":1,\"deed_dump\":1}\n\n{\"value\":{\"account\":\"acme\"},\"id\":\"research\",\"kind\":\"organization\"}\n",
        );
        let store = DumpStore::open(&path).expect("open");
        assert_eq!(
            store.load().expect("load").organizations["research"].account,
            "acme"
        );
    }

    #[test]
    fn a_dump_store_refuses_every_write() {
        let folder = tempfile::tempdir().expect("tempdir");
        let source = filled_store(&folder.path().join("a"));
        let path = write_file(
            folder.path(),
            "state.dump",
            &String::from_utf8(dump_bytes(&source)).expect("utf-8"),
        );
        let store = DumpStore::open(&path).expect("open");
        assert!(matches!(
            store.commit(Commit::default()),
            Err(StoreError::ReadOnly { .. })
        ));
        assert!(matches!(
            store.mark_delivered(&["n-1".to_string()]),
            Err(StoreError::ReadOnly { .. })
        ));
        let empty = DumpStore::empty(&folder.path().join("nothing"));
        assert!(matches!(
            empty.commit(Commit::default()),
            Err(StoreError::ReadOnly { .. })
        ));
        assert_eq!(
            String::from_utf8(dump_bytes(&empty)).expect("utf-8"),
            "{\"deed_dump\":1,\"schema_version\":1}\n"
        );
    }

    #[test]
    fn a_failed_restore_removes_the_state_it_created() {
        let folder = tempfile::tempdir().expect("tempdir");
        let dump_path = write_file(
            folder.path(),
            "bad.dump",
            "{\"deed_dump\":1,\"schema_version\":1}\nnope\n",
        );
        let target = folder.path().join("new-state");
        let location = target.to_str().expect("utf-8");
        assert!(matches!(
            crate::store::restore(location, &dump_path, false),
            Err(StoreError::BadDump { line: 2, .. })
        ));
        assert!(!target.exists());

        let good = write_file(
            folder.path(),
            "good.dump",
            "{\"deed_dump\":1,\"schema_version\":1}\n",
        );
        crate::store::restore(location, &good, false).expect("restore");
        assert!(SledStore::exists(&target));
        // Restoring again into the (now existing, empty) state is fine...
        crate::store::restore(location, &good, false).expect("restore again");
        // ...and a failure does not remove a state it did not create.
        assert!(crate::store::restore(location, &dump_path, false).is_err());
        assert!(SledStore::exists(&target));
    }

    #[test]
    fn large_restores_are_written_whole_and_leave_no_marker() {
        let folder = tempfile::tempdir().expect("tempdir");
        let mut text = String::from("{\"deed_dump\":1,\"schema_version\":1}\n");
        let count = 2_000;
        for n in 0..count {
            text.push_str(&format!(
                "{{\"kind\":\"organization\",\"id\":\"org-{n:06}\",\"value\":{{\"account\":\"acme\"}}}}\n"
            ));
        }
        let dump_path = write_file(folder.path(), "big.dump", &text);
        let store = SledStore::open(&folder.path().join("s"), false).expect("open");
        restore(&store, &dump_path).expect("restore");
        assert_eq!(store.load().expect("load").organizations.len(), count);
        assert!(!store
            .contains_key(keys::RESTORE_INCOMPLETE)
            .expect("marker"));
        assert_eq!(String::from_utf8(dump_bytes(&store)).expect("utf-8"), text);
    }
}
