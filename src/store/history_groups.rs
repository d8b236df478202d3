//! How the sled backend keeps the history: consecutive entries grouped in
//! one record, packed with LZ4.
//!
//! The contract keeps one history entry per applied change, so a commit of
//! a million transfers adds a million entries. As one sled record each
//! they cost sled more than the transfers themselves (BENCHMARKS.md,
//! session 10). Since layout 2 ([`super::sled_store::SLED_SCHEMA_VERSION`])
//! a commit stores its entries in groups of consecutive entries, each
//! closed once its JSON reaches [`GROUP_BYTES`]: key
//! `h\0<seq of the first entry, 20 digits>`, its JSON an array of what
//! the entries share (time, plan id, actor, revision: the head), then each
//! entry's change; the seqs count on from the key's. A group never spans
//! two commits, so a commit still only adds records.
//!
//! Since layout 3 the value is that JSON packed: the byte [`PACKED`], the
//! JSON's length (little-endian u32), then the JSON compressed with LZ4's
//! block format. The history is most of what a large commit writes, and its
//! entries repeat their field names, actions and reasons: packed, a group
//! takes about a fifth of the bytes (BENCHMARKS.md, session 12). A group
//! whose JSON is past [`PACKED_MAX`] (one huge entry) stays plain JSON.
//!
//! [`decode_group`] reads every layout: packed groups, plain JSON groups
//! (layout 2) and single entries (layout 1, the JSON object of the entry),
//! so a state written by an older deed keeps its history, and new groups
//! simply follow its records in key order.
//!
//! Groups stay far below sled's blob threshold (about 128 KiB per page
//! write with the default segment size), past which each value would be a
//! file of its own.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::codec::keys;
use super::HistoryEntry;
use crate::model::Timestamp;
use crate::plan::Change;

/// A group is closed once its JSON reaches this many bytes: about twenty
/// five entries of a transfer. On Workload L's reassign apply, groups of
/// 8 KiB took the commit from 15–17.5 s to 12.5–13.4 s in the same peak
/// memory; larger groups were no faster within the noise, and from 32 KiB
/// on sled held so much more memory that the 1 GB target was at risk, then
/// lost (BENCHMARKS.md, session 11).
pub(crate) const GROUP_BYTES: usize = 8 << 10;

/// The first byte of a packed group. A JSON value never starts with it.
pub(crate) const PACKED: u8 = 0x01;

/// The largest JSON a group is packed with, and the most a packed group
/// may say it unpacks to: a damaged length is refused before anything is
/// allocated for it.
pub(crate) const PACKED_MAX: usize = 1 << 20;

/// One record of grouped history: its key and its value.
pub(crate) type GroupRecord = (Vec<u8>, Vec<u8>);

/// What the entries of a group share, written once at its head.
#[derive(Serialize, Deserialize, PartialEq)]
struct Head {
    time: Timestamp,
    plan_id: String,
    actor: Option<String>,
    revision: Option<String>,
}

impl Head {
    fn of(entry: &HistoryEntry) -> Head {
        Head {
            time: entry.time,
            plan_id: entry.plan_id.clone(),
            actor: entry.actor.clone(),
            revision: entry.revision.clone(),
        }
    }

    fn heads(&self, entry: &HistoryEntry) -> bool {
        self.time == entry.time
            && self.plan_id == entry.plan_id
            && self.actor == entry.actor
            && self.revision == entry.revision
    }
}

/// Collects the entries of one commit, in seq order, into group records.
#[derive(Default)]
pub(crate) struct GroupWriter {
    first_seq: u64,
    head: Option<Head>,
    json: Vec<u8>,
}

impl GroupWriter {
    /// Adds `entry` (whose seq follows the previous entry's); returns the
    /// groups it closes: the one it fills, or the one before it when it
    /// does not share that group's head (one commit's entries all do).
    pub(crate) fn push(
        &mut self,
        entry: &HistoryEntry,
    ) -> Result<Vec<GroupRecord>, serde_json::Error> {
        self.push_with(entry, None)
    }

    /// [`GroupWriter::push`], with the JSON of the entry's change already
    /// made (by [`ChangesJson`]) when `change_json` is given.
    pub(crate) fn push_with(
        &mut self,
        entry: &HistoryEntry,
        change_json: Option<&[u8]>,
    ) -> Result<Vec<GroupRecord>, serde_json::Error> {
        let mut closed = Vec::new();
        if self.head.as_ref().is_some_and(|head| !head.heads(entry)) {
            closed.extend(self.finish());
        }
        if self.head.is_none() {
            let head = Head::of(entry);
            self.first_seq = entry.seq;
            self.json.push(b'[');
            serde_json::to_writer(&mut self.json, &head)?;
            self.head = Some(head);
        }
        self.json.push(b',');
        match change_json {
            Some(json) => self.json.extend_from_slice(json),
            None => serde_json::to_writer(&mut self.json, &entry.change)?,
        }
        if self.json.len() >= GROUP_BYTES {
            closed.extend(self.finish());
        }
        Ok(closed)
    }

    /// Closes the group being filled, if it holds an entry.
    pub(crate) fn finish(&mut self) -> Option<GroupRecord> {
        self.head.take()?;
        let mut json = std::mem::take(&mut self.json);
        json.push(b']');
        Some((keys::history(self.first_seq), pack(json)))
    }
}

/// The JSON of the changes of a run of history entries, made in one
/// buffer, as [`GroupWriter::push`] would write each: a thread that makes a
/// commit's parts can take that work off the thread that writes them.
#[derive(Default)]
pub(crate) struct ChangesJson {
    json: Vec<u8>,
    /// Where each change's JSON ends in `json`.
    ends: Vec<usize>,
}

impl ChangesJson {
    pub(crate) fn of(entries: &[HistoryEntry]) -> Result<ChangesJson, serde_json::Error> {
        let mut made = ChangesJson {
            json: Vec::with_capacity(entries.len() * 384),
            ends: Vec::with_capacity(entries.len()),
        };
        for entry in entries {
            serde_json::to_writer(&mut made.json, &entry.change)?;
            made.ends.push(made.json.len());
        }
        Ok(made)
    }

    /// The JSON of the `index`th entry's change.
    pub(crate) fn get(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)?;
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        self.json.get(start..end)
    }
}

/// A group's value: its JSON packed, or the JSON itself past
/// [`PACKED_MAX`].
fn pack(json: Vec<u8>) -> Vec<u8> {
    if json.len() > PACKED_MAX {
        return json;
    }
    let start = 1 + 4;
    let mut packed = vec![0; start + lz4_flex::block::get_maximum_output_size(json.len())];
    packed[0] = PACKED;
    // PACKED_MAX fits a u32.
    packed[1..start].copy_from_slice(&(json.len() as u32).to_le_bytes());
    match lz4_flex::block::compress_into(&json, &mut packed[start..]) {
        Ok(length) => {
            packed.truncate(start + length);
            packed
        }
        // The output was sized for the worst case; should LZ4 still refuse,
        // the plain JSON is a valid group.
        Err(_) => json,
    }
}

/// The JSON of a record's value: unpacked when packed, as it is otherwise.
fn unpack(value: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let Some((&PACKED, rest)) = value.split_first() else {
        return Ok(Cow::Borrowed(value));
    };
    let (length, compressed) = rest
        .split_first_chunk::<4>()
        .ok_or("a packed history group without its length")?;
    let length = u32::from_le_bytes(*length) as usize;
    if length > PACKED_MAX {
        return Err(format!(
            "a packed history group says it holds {length} bytes, more than the {PACKED_MAX} a group may"
        ));
    }
    let json = lz4_flex::block::decompress(compressed, length)
        .map_err(|error| format!("a packed history group does not unpack: {error}"))?;
    if json.len() != length {
        return Err(format!(
            "a packed history group unpacks to {} bytes where it says {length}",
            json.len()
        ));
    }
    Ok(Cow::Owned(json))
}

/// The entries of one history record: a group, packed or not (a JSON
/// array of the head, then each entry's change, the seqs counting on from
/// the key's) or, as layout 1 wrote it, a single entry (a JSON object, its
/// seq the key's).
pub(crate) fn decode_group(key: &[u8], value: &[u8]) -> Result<Vec<HistoryEntry>, String> {
    let first_seq = keys::parse_history(key).ok_or("the key is not a history seq")?;
    let value = unpack(value)?;
    let value = value.as_ref();
    if value.trim_ascii_start().starts_with(b"[") {
        let mut reader = serde_json::Deserializer::from_slice(value);
        let entries = reader
            .deserialize_seq(GroupVisitor { first_seq })
            .and_then(|entries| reader.end().map(|()| entries))
            .map_err(|error| error.to_string())?;
        return Ok(entries);
    }
    let entry = serde_json::from_slice::<HistoryEntry>(value).map_err(|error| error.to_string())?;
    if entry.seq != first_seq {
        return Err(format!(
            "history entry with seq {} where seq {first_seq} was expected",
            entry.seq
        ));
    }
    Ok(vec![entry])
}

/// Reads a group's head, then its changes into entries.
struct GroupVisitor {
    first_seq: u64,
}

impl<'de> Visitor<'de> for GroupVisitor {
    type Value = Vec<HistoryEntry>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a history group: its head, then at least one change")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        let head: Head = items
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let mut entries = Vec::with_capacity(items.size_hint().unwrap_or(0));
        let mut seq = self.first_seq;
        while let Some(change) = items.next_element::<Change>()? {
            entries.push(HistoryEntry {
                seq,
                time: head.time,
                plan_id: head.plan_id.clone(),
                actor: head.actor.clone(),
                revision: head.revision.clone(),
                change,
            });
            seq += 1;
        }
        if entries.is_empty() {
            return Err(de::Error::invalid_length(1, &self));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, object: &str) -> HistoryEntry {
        HistoryEntry {
            seq,
            ..crate::store::sled_store::tests::entry(object)
        }
    }

    fn write(entries: &[HistoryEntry]) -> Vec<GroupRecord> {
        let mut writer = GroupWriter::default();
        let mut records = Vec::new();
        for entry in entries {
            records.extend(writer.push(entry).expect("encode"));
        }
        records.extend(writer.finish());
        records
    }

    /// Every entry of `records`, in order.
    fn read(records: &[GroupRecord]) -> Vec<HistoryEntry> {
        records
            .iter()
            .flat_map(|(key, value)| decode_group(key, value).expect("decode"))
            .collect()
    }

    #[test]
    fn a_commit_is_grouped_by_size_and_read_back_in_order() {
        let entries: Vec<_> = (7..507)
            .map(|seq| entry(seq, &format!("org-{seq}")))
            .collect();
        let records = write(&entries);
        let entry_bytes = serde_json::to_vec(&entries[0]).expect("encode").len();
        assert!(records.len() > 1 && records.len() < entries.len() / 10);
        let mut next_seq = 7;
        for (index, (key, value)) in records.iter().enumerate() {
            assert_eq!(key, &keys::history(next_seq));
            let group = decode_group(key, value).expect("decode");
            let json = unpack(value).expect("unpack");
            if index + 1 < records.len() {
                assert!(json.len() >= GROUP_BYTES && json.len() < GROUP_BYTES + 2 * entry_bytes);
            }
            assert_eq!(value[0], PACKED);
            assert!(
                value.len() < json.len() / 2,
                "packed: {} bytes for {} of JSON",
                value.len(),
                json.len()
            );
            next_seq += group.len() as u64;
        }
        assert_eq!(read(&records), entries);
    }

    #[test]
    fn an_entry_larger_than_a_group_is_a_group_of_its_own() {
        let long = "x".repeat(GROUP_BYTES);
        let entries = [entry(1, "a"), entry(2, &long), entry(3, "b")];
        let records = write(&entries);
        let sizes: Vec<_> = records
            .iter()
            .map(|(key, value)| decode_group(key, value).expect("decode").len())
            .collect();
        assert_eq!(sizes, vec![2, 1]);
        assert_eq!(records[1].0, keys::history(3));
    }

    #[test]
    fn a_single_entry_record_of_layout_1_is_still_read() {
        let single = entry(42, "lab");
        let value = serde_json::to_vec(&single).expect("encode");
        assert_eq!(
            decode_group(&keys::history(42), &value).expect("decode"),
            vec![single]
        );
        assert!(write(&[]).is_empty());
    }

    #[test]
    fn entries_of_another_plan_or_actor_start_a_group_of_their_own() {
        let mut entries: Vec<_> = (1..=6)
            .map(|seq| entry(seq, &format!("org-{seq}")))
            .collect();
        entries[2].plan_id = "p-2".into();
        entries[3].plan_id = "p-2".into();
        entries[4].plan_id = "p-2".into();
        entries[4].actor = None;
        entries[5].plan_id = "p-2".into();
        entries[5].actor = None;
        entries[5].revision = Some("abc123".into());
        let records = write(&entries);
        let sizes: Vec<_> = records
            .iter()
            .map(|(key, value)| decode_group(key, value).expect("decode").len())
            .collect();
        assert_eq!(sizes, vec![2, 2, 1, 1]);
        assert_eq!(read(&records), entries);
        let one = serde_json::to_vec(&entries[0]).expect("encode").len();
        assert!(
            unpack(&records[0].1).expect("unpack").len() < 2 * one - 60,
            "the head is written once: {} bytes for two entries of {one}",
            unpack(&records[0].1).expect("unpack").len()
        );
    }

    #[test]
    fn broken_records_are_refused() {
        let single = serde_json::to_vec(&entry(5, "a")).expect("encode");
        let error = decode_group(&keys::history(4), &single).expect_err("wrong key");
        assert!(error.contains("seq 5 where seq 4"), "{error}");
        let (key, packed) = write(&[entry(5, "a"), entry(6, "b")]).remove(0);
        let group = unpack(&packed).expect("unpack").into_owned();
        assert_eq!(
            decode_group(&keys::history(9), &group).expect("decode")[1].seq,
            10,
            "a group's seqs count on from its key"
        );
        let head_only = &group[..group.iter().position(|&byte| byte == b'}').expect("head") + 1];
        for broken in [
            b"[]".to_vec(),
            [head_only, b"]"].concat(),
            [&group[..], b" x"].concat(),
            group[..group.len() - 1].to_vec(),
            b"[1, 2]".to_vec(),
            b"{}".to_vec(),
        ] {
            assert!(
                decode_group(&key, &broken).is_err(),
                "{}",
                String::from_utf8_lossy(&broken)
            );
        }
        assert!(decode_group(b"h\0nope", &group).is_err());
    }

    #[test]
    fn a_plain_group_of_layout_2_reads_as_its_packed_form_does() {
        let entries = [entry(3, "a"), entry(4, "b"), entry(5, "c")];
        let (key, packed) = write(&entries).remove(0);
        let plain = unpack(&packed).expect("unpack").into_owned();
        assert_eq!(plain[0], b'[');
        assert_eq!(decode_group(&key, &plain).expect("plain"), entries);
        assert_eq!(decode_group(&key, &packed).expect("packed"), entries);
    }

    #[test]
    fn a_group_past_the_packing_limit_stays_plain_json() {
        let huge = "x".repeat(PACKED_MAX);
        let entries = [entry(1, &huge), entry(2, "a")];
        let records = write(&entries);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].1[0], b'[', "plain JSON");
        assert_eq!(records[1].1[0], PACKED);
        assert_eq!(read(&records), entries);
    }

    #[test]
    fn damaged_packed_records_are_refused_without_allocating_what_they_claim() {
        let (key, packed) = write(&[entry(5, "a"), entry(6, "b")]).remove(0);
        let length = |bytes: u32| [&[PACKED][..], &bytes.to_le_bytes(), &packed[5..]].concat();
        let claimed = u32::from_le_bytes(packed[1..5].try_into().expect("length"));
        let mut flipped = packed.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        for (broken, says) in [
            (vec![PACKED], "without its length"),
            (vec![PACKED, 1, 0], "without its length"),
            (length(u32::MAX), "more than"),
            (length(PACKED_MAX as u32 + 1), "more than"),
            (length(claimed + 7), "unpack"),
            (packed[..packed.len() - 3].to_vec(), "unpack"),
            (flipped, ""),
        ] {
            let error = decode_group(&key, &broken).expect_err("refused");
            assert!(error.contains(says), "{error}");
        }
        let shorter = decode_group(&key, &length(claimed - 1)).expect_err("refused");
        assert!(shorter.contains("unpack"), "{shorter}");
    }
}
