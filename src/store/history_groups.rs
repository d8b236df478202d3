//! How the sled backend keeps the history: consecutive entries grouped in
//! one record.
//!
//! The contract keeps one history entry per applied change, so a commit of
//! a million transfers adds a million entries. As one sled record each
//! they cost sled more than the transfers themselves (BENCHMARKS.md,
//! session 10). Since layout 2 ([`super::sled_store::SLED_SCHEMA_VERSION`])
//! a commit stores its entries in groups of consecutive entries, each
//! closed once its JSON reaches [`GROUP_BYTES`]: key
//! `h\0<seq of the first entry, 20 digits>`, value the JSON array of the
//! entries. A group never spans two commits, so a commit still only adds
//! records. Layout 1 kept one entry per record, its value the JSON object
//! of the entry; [`decode_group`] reads both, so a state written by an
//! older deed keeps its history, and new groups simply follow its records
//! in key order.
//!
//! Groups stay far below sled's blob threshold (about 128 KiB per page
//! write with the default segment size), past which each value would be a
//! file of its own.

use super::codec::keys;
use super::HistoryEntry;

/// A group is closed once its JSON reaches this many bytes: about twenty
/// entries of a transfer. On Workload L's reassign apply, groups of 8 KiB
/// took the commit from 15–17.5 s to 12.5–13.4 s in the same peak memory;
/// larger groups were no faster within the noise, and from 32 KiB on sled
/// held so much more memory that the 1 GB target was at risk, then lost
/// (BENCHMARKS.md, session 11).
pub(crate) const GROUP_BYTES: usize = 8 << 10;

/// One record of grouped history: its key and its value.
pub(crate) type GroupRecord = (Vec<u8>, Vec<u8>);

/// Collects the entries of one commit, in seq order, into group records.
#[derive(Default)]
pub(crate) struct GroupWriter {
    first_seq: u64,
    entries: usize,
    json: Vec<u8>,
}

impl GroupWriter {
    /// Adds `entry` (whose seq follows the previous entry's); returns the
    /// group it closes, if this entry fills it.
    pub(crate) fn push(
        &mut self,
        entry: &HistoryEntry,
    ) -> Result<Option<GroupRecord>, serde_json::Error> {
        if self.entries == 0 {
            self.first_seq = entry.seq;
            self.json.push(b'[');
        } else {
            self.json.push(b',');
        }
        serde_json::to_writer(&mut self.json, entry)?;
        self.entries += 1;
        if self.json.len() >= GROUP_BYTES {
            return Ok(self.finish());
        }
        Ok(None)
    }

    /// Closes the group being filled, if it holds an entry.
    pub(crate) fn finish(&mut self) -> Option<GroupRecord> {
        if self.entries == 0 {
            return None;
        }
        let mut json = std::mem::take(&mut self.json);
        json.push(b']');
        self.entries = 0;
        Some((keys::history(self.first_seq), json))
    }
}

/// The entries of one history record: a group (a JSON array) or, as
/// layout 1 wrote it, a single entry (a JSON object). The entries' seqs
/// must run on without a gap from the seq in the key.
pub(crate) fn decode_group(key: &[u8], value: &[u8]) -> Result<Vec<HistoryEntry>, String> {
    let first_seq = keys::parse_history(key).ok_or("the key is not a history seq")?;
    let entries = if value.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice::<Vec<HistoryEntry>>(value).map_err(|error| error.to_string())?
    } else {
        vec![serde_json::from_slice::<HistoryEntry>(value).map_err(|error| error.to_string())?]
    };
    if entries.is_empty() {
        return Err("an empty history group".into());
    }
    for (offset, entry) in (0..).zip(&entries) {
        let expected = first_seq + offset;
        if entry.seq != expected {
            return Err(format!(
                "history entry with seq {} where seq {expected} was expected",
                entry.seq
            ));
        }
    }
    Ok(entries)
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
            if index + 1 < records.len() {
                assert!(value.len() >= GROUP_BYTES && value.len() < GROUP_BYTES + 2 * entry_bytes);
            }
            next_seq += group.len() as u64;
        }
        let read: Vec<_> = records
            .iter()
            .flat_map(|(key, value)| decode_group(key, value).expect("decode"))
            .collect();
        assert_eq!(read, entries);
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
    fn seqs_that_do_not_follow_the_key_are_refused() {
        let (key, value) = write(&[entry(5, "a"), entry(6, "b")]).remove(0);
        let error = decode_group(&keys::history(4), &value).expect_err("wrong key");
        assert!(error.contains("seq 5 where seq 4"), "{error}");
        let gap = write(&[entry(5, "a"), entry(7, "b")]).remove(0).1;
        let error = decode_group(&key, &gap).expect_err("gap");
        assert!(error.contains("seq 7 where seq 6"), "{error}");
        assert!(decode_group(&key, b"[]").is_err());
        assert!(decode_group(b"h\0nope", &value).is_err());
    }
}
