//! Where things are in a spec file: splits the text into its `---`
//! documents the way libyaml counts them, and indexes the line and column of
//! every block-style key of a document by its path (`users.bob@acme.com`,
//! `groups.analysts.members.bob@acme.com`, `reassign[0]`), written like the
//! paths in serde_yaml's errors.
//!
//! This is a cheap line scan, not a YAML parser: it only has to be right for
//! ordinary block-style specs. Anything it cannot place (flow style, keys
//! inside multi-line scalars) falls back to the nearest enclosing key it did
//! place, then to the document's first line.
//!
//! The index is built for every document and asked about every declared
//! object, so it is kept cheap: the paths of a document are written one
//! after the other into one string, and found through a small open-addressing
//! table of their hashes (hashed ignoring ASCII case, compared exactly), with
//! no allocation per key and none per lookup.
//!
//! Architecture invariant: no I/O.

use std::borrow::Cow;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One indexed path: where its text is in [`KeyIndex::paths`], its hash and
/// its position.
#[derive(Clone, Copy, Debug)]
struct Entry {
    hash: u64,
    start: u32,
    len: u32,
    line: u32,
    column: u32,
}

impl Entry {
    fn position(&self) -> Position {
        Position {
            line: self.line as usize,
            column: self.column as usize,
        }
    }
}

/// The positions of the keys of one document, by lowercase path.
#[derive(Clone, Debug, Default)]
pub struct KeyIndex {
    /// First line of the document's content (1-based).
    pub first_line: usize,
    /// Every indexed path (lowercase), one after the other.
    paths: String,
    entries: Vec<Entry>,
    /// Open addressing: `entry + 1` per slot, 0 for empty; the length is a
    /// power of two at least twice the number of entries.
    slots: Vec<u32>,
    /// Second declarations of a path (a duplicate key), by entry, for
    /// relocating serde's "duplicate field" errors.
    repeated: Vec<(u32, Position)>,
}

impl KeyIndex {
    /// The position of `path`, or of its nearest indexed ancestor, or the
    /// document's first line.
    pub fn locate(&self, path: &str) -> Position {
        let mut current = path;
        loop {
            if let Some(position) = self.get(current) {
                return position;
            }
            match parent_path(current) {
                Some(parent) => current = parent,
                None => {
                    return Position {
                        line: self.first_line.max(1),
                        column: 1,
                    }
                }
            }
        }
    }

    /// The position of exactly `path` (ASCII case ignored), if indexed.
    pub fn get(&self, path: &str) -> Option<Position> {
        self.find(path)
            .map(|entry| self.entries[entry as usize].position())
    }

    /// The position of the second declaration of `path`, if any.
    pub fn repeated(&self, path: &str) -> Option<Position> {
        let entry = self.find(path)?;
        self.repeated
            .iter()
            .find(|(repeated, _)| *repeated == entry)
            .map(|(_, position)| *position)
    }

    /// The number of indexed paths.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no path is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn path_of(&self, entry: &Entry) -> &str {
        &self.paths[entry.start as usize..(entry.start + entry.len) as usize]
    }

    /// The entry holding `path`: stored paths are lowercase, so comparing
    /// while ignoring ASCII case is comparing with `path` lowercased.
    fn find(&self, path: &str) -> Option<u32> {
        self.find_hashed(path, hash_folded(path.as_bytes()))
    }

    fn find_hashed(&self, path: &str, hash: u64) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            let found = self.slots[slot];
            if found == 0 {
                return None;
            }
            let entry = &self.entries[(found - 1) as usize];
            if entry.hash == hash && {
                let stored = self.path_of(entry);
                stored == path || stored.eq_ignore_ascii_case(path)
            } {
                return Some(found - 1);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Indexes `path` (already lowercase) at `position`; a path indexed
    /// before keeps its first position and records this one as repeated.
    fn insert(&mut self, path: &str, position: Position) {
        let hash = hash_folded(path.as_bytes());
        if let Some(existing) = self.find_hashed(path, hash) {
            if !self.repeated.iter().any(|(entry, _)| *entry == existing) {
                self.repeated.push((existing, position));
            }
            return;
        }
        // Positions and offsets beyond u32 cannot occur: files are at most
        // 16 MiB. Saturate rather than wrap, to stay correct regardless.
        let narrow = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
        let entry = Entry {
            hash,
            start: narrow(self.paths.len()),
            len: narrow(path.len()),
            line: narrow(position.line),
            column: narrow(position.column),
        };
        self.paths.push_str(path);
        self.entries.push(entry);
        if self.entries.len() * 2 > self.slots.len() {
            self.grow();
        } else {
            self.place(self.entries.len() - 1);
        }
    }

    /// An empty index with room for about `keys` paths.
    fn with_capacity(first_line: usize, keys: usize) -> KeyIndex {
        KeyIndex {
            first_line,
            paths: String::with_capacity(keys * 24),
            entries: Vec::with_capacity(keys),
            slots: vec![0; (keys * 2).next_power_of_two().max(16)],
            repeated: Vec::new(),
        }
    }

    fn grow(&mut self) {
        let size = (self.entries.len() * 2).next_power_of_two().max(16);
        self.slots = vec![0; size];
        for entry in 0..self.entries.len() {
            self.place(entry);
        }
    }

    fn place(&mut self, entry: usize) {
        let mask = self.slots.len() - 1;
        let mut slot = self.entries[entry].hash as usize & mask;
        while self.slots[slot] != 0 {
            slot = (slot + 1) & mask;
        }
        self.slots[slot] = entry as u32 + 1;
    }
}

/// A fast, deterministic hasher for maps keyed by spec text (emails, ids)
/// while merging: [`hash_folded`] of what is written.
#[derive(Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = self.0.rotate_left(5) ^ hash_folded(bytes);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash of the bytes with ASCII letters lowercased, eight bytes at a time
/// (the FxHash step), then mixed so that the low bits (the slot) depend on
/// every byte.
fn hash_folded(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut hash = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = (hash.rotate_left(5) ^ fold_word(u64::from_le_bytes(word))).wrapping_mul(K);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        hash = (hash.rotate_left(5) ^ fold_word(u64::from_le_bytes(word))).wrapping_mul(K);
    }
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^ (hash >> 32)
}

/// Lowercases the ASCII letters among eight bytes; other bytes (UTF-8
/// included) are left alone.
fn fold_word(word: u64) -> u64 {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = word & !HIGH;
    // The high bit of a byte is set when its low 7 bits are >= 'A' (0x41),
    // and when they are > 'Z' (0x5a); no carry crosses bytes.
    let at_least_a = low7.wrapping_add(0x3f3f_3f3f_3f3f_3f3f);
    let above_z = low7.wrapping_add(0x2525_2525_2525_2525);
    let upper = at_least_a & !above_z & !word & HIGH;
    word | (upper >> 2)
}

/// The parent of a path: `a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> none.
/// Keys may contain dots (emails), so this can cut inside a key; that only
/// makes the fallback coarser.
fn parent_path(path: &str) -> Option<&str> {
    if path.ends_with(']') {
        return path.rfind('[').map(|at| &path[..at]);
    }
    path.rfind('.').map(|at| &path[..at])
}

/// Joins a child key to a path, as serde_yaml writes paths.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// One document of a file: its lines (0-based indexes into the file's lines).
#[derive(Clone, Debug)]
pub struct Segment {
    pub start: usize,
    pub end: usize,
}

/// Splits the file into documents, in the order serde_yaml yields them:
/// the text before the first `---` is a document only when it holds
/// content (or when there is no `---` at all); every `---` starts one.
pub fn segments(lines: &[&str]) -> Vec<Segment> {
    let mut markers = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if is_marker(line, "---") {
            markers.push(index);
        }
    }
    let mut result = Vec::new();
    let first_end = markers.first().copied().unwrap_or(lines.len());
    if markers.is_empty() || lines[..first_end].iter().any(|line| has_content(line)) {
        result.push(Segment {
            start: 0,
            end: first_end,
        });
    }
    for (n, start) in markers.iter().enumerate() {
        let end = markers.get(n + 1).copied().unwrap_or(lines.len());
        result.push(Segment { start: *start, end });
    }
    result
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

fn has_content(line: &str) -> bool {
    let trimmed = line.trim();
    !(trimmed.is_empty()
        || trimmed.starts_with('#')
        || trimmed.starts_with('%')
        || is_marker(line, "..."))
}

/// The value of the document's top-level `account:` key, if a plain line
/// declares it (used to name the account of a document that failed to parse).
pub fn scan_account(lines: &[&str], segment: &Segment) -> Option<String> {
    for line in lines.get(segment.start..segment.end)? {
        let Some(rest) = line.strip_prefix("account:") else {
            continue;
        };
        let value = match rest.find(" #") {
            Some(at) => &rest[..at],
            None => rest,
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        return crate::model::validate_account_id(value)
            .ok()
            .map(|()| value.to_string());
    }
    None
}

struct Level {
    indent: usize,
    /// The length of the level's path in the path being built.
    path_len: usize,
    is_item: bool,
    items: usize,
}

/// Indexes the block-style keys of one document.
pub fn index(lines: &[&str], segment: &Segment) -> KeyIndex {
    let end = segment.end.min(lines.len());
    // At most a key and a sequence item per line.
    let mut result = KeyIndex::with_capacity(segment.start + 1, end.saturating_sub(segment.start));
    let mut found_first = false;
    let mut stack: Vec<Level> = Vec::new();
    // The path of the key being indexed: the top of the stack's path, then
    // the key.
    let mut path = String::new();
    // Lines more indented than this belong to a block scalar (`|`, `>`).
    let mut scalar_indent: Option<usize> = None;
    for (index, line) in lines.iter().enumerate().take(end).skip(segment.start) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line_number = index + 1;
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        if let Some(limit) = scalar_indent {
            if indent > limit {
                continue;
            }
            scalar_indent = None;
        }
        if is_marker(line, "---")
            || is_marker(line, "...")
            || (indent == 0 && rest.starts_with('%'))
        {
            continue;
        }
        if !found_first {
            found_first = true;
            result.first_line = line_number;
        }
        let mut indent = indent;
        let mut rest = rest;
        if rest == "-" || rest.starts_with("- ") {
            while stack
                .last()
                .is_some_and(|top| top.indent > indent || (top.indent == indent && top.is_item))
            {
                stack.pop();
            }
            let number = match stack.last_mut() {
                Some(top) => {
                    top.items += 1;
                    path.truncate(top.path_len);
                    top.items - 1
                }
                None => {
                    path.clear();
                    0
                }
            };
            path.push('[');
            push_number(&mut path, number);
            path.push(']');
            result.insert(
                &path,
                Position {
                    line: line_number,
                    column: indent + 1,
                },
            );
            stack.push(Level {
                indent,
                path_len: path.len(),
                is_item: true,
                items: 0,
            });
            let after = &rest[1..];
            let inner = after.trim_start_matches(' ');
            indent += 1 + (after.len() - inner.len());
            rest = inner;
            if rest.is_empty() || rest.starts_with('#') || rest.starts_with('-') {
                continue;
            }
        }
        let Some((key, value)) = split_key(rest) else {
            continue;
        };
        while stack.last().is_some_and(|top| top.indent >= indent) {
            stack.pop();
        }
        match stack.last() {
            Some(top) => {
                path.truncate(top.path_len);
                if top.path_len > 0 {
                    path.push('.');
                }
            }
            None => path.clear(),
        }
        let key_start = path.len();
        path.push_str(&key);
        path[key_start..].make_ascii_lowercase();
        result.insert(
            &path,
            Position {
                line: line_number,
                column: indent + 1,
            },
        );
        let value = value.trim_start();
        if value.starts_with('|') || value.starts_with('>') {
            scalar_indent = Some(indent);
        }
        stack.push(Level {
            indent,
            path_len: path.len(),
            is_item: false,
            items: 0,
        });
    }
    result
}

/// Appends a number in decimal, without going through `fmt`.
fn push_number(path: &mut String, number: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = number;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for digit in &digits[at..] {
        path.push(char::from(*digit));
    }
}

/// Splits `key: value` (the key plain or quoted) into key and value text.
fn split_key(rest: &str) -> Option<(Cow<'_, str>, &str)> {
    let bytes = rest.as_bytes();
    let (key, after) = match bytes.first()? {
        b'"' | b'\'' => {
            let quote = bytes[0];
            let mut at = 1;
            let mut key = String::new();
            loop {
                let byte = *bytes.get(at)?;
                if quote == b'"' && byte == b'\\' {
                    // The escaped character may be more than one byte long.
                    let next = rest.get(at + 1..)?.chars().next()?;
                    key.push(next);
                    at += 1 + next.len_utf8();
                    continue;
                }
                if byte == quote {
                    if quote == b'\'' && bytes.get(at + 1) == Some(&b'\'') {
                        key.push('\'');
                        at += 2;
                        continue;
                    }
                    break;
                }
                let end = rest[at..].chars().next()?;
                key.push(end);
                at += end.len_utf8();
            }
            (Cow::Owned(key), &rest[at + 1..])
        }
        b'[' | b'{' | b'&' | b'*' | b'!' | b'|' | b'>' | b'?' | b'#' => return None,
        _ => {
            let mut end = None;
            for (at, byte) in bytes.iter().enumerate() {
                if *byte == b':' && matches!(bytes.get(at + 1), None | Some(b' ') | Some(b'\t')) {
                    end = Some(at);
                    break;
                }
                if *byte == b'#' && at > 0 && matches!(bytes[at - 1], b' ' | b'\t') {
                    return None;
                }
            }
            let end = end?;
            (Cow::Borrowed(rest[..end].trim_end()), &rest[end..])
        }
    };
    let after = after.trim_start_matches([' ', '\t']);
    let value = after.strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with([' ', '\t'])) {
        return None;
    }
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.split('\n').collect()
    }

    #[test]
    fn the_hash_ignores_ascii_case_only() {
        let all: Vec<u8> = (0..=255u8).collect();
        let lower: Vec<u8> = all.iter().map(u8::to_ascii_lowercase).collect();
        for start in 0..all.len() {
            for len in [1, 7, 8, 9, 17] {
                let end = (start + len).min(all.len());
                assert_eq!(
                    fold_word_bytes(&all[start..end]),
                    lower[start..end].to_vec()
                );
            }
        }
        assert_eq!(
            hash_folded(b"Users.Bob@Acme.COM"),
            hash_folded(b"users.bob@acme.com")
        );
        assert_ne!(hash_folded(b"users.bob"), hash_folded(b"users.bob\0"));
    }

    /// The bytes as `fold_word` lowercases them, a word at a time.
    fn fold_word_bytes(bytes: &[u8]) -> Vec<u8> {
        let mut word = [0u8; 8];
        let mut out = Vec::new();
        for chunk in bytes.chunks(8) {
            word.fill(0);
            word[..chunk.len()].copy_from_slice(chunk);
            let folded = fold_word(u64::from_le_bytes(word)).to_le_bytes();
            out.extend_from_slice(&folded[..chunk.len()]);
        }
        out
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_records_the_second() {
        let text =
            "account: a\nusers:\n  b@a.com: {}\n  B@a.com: {}\n  c@a.com: {}\n  b@a.com: {}\n";
        let all = lines(text);
        let index = index(
            &all,
            &Segment {
                start: 0,
                end: all.len(),
            },
        );
        assert_eq!(
            index.get("users.b@a.com"),
            Some(Position { line: 3, column: 3 })
        );
        assert_eq!(
            index.get("USERS.B@A.COM"),
            Some(Position { line: 3, column: 3 })
        );
        assert_eq!(
            index.repeated("users.b@a.com"),
            Some(Position { line: 4, column: 3 })
        );
        assert_eq!(index.repeated("users.c@a.com"), None);
        assert_eq!(index.get("users.c@a.co"), None);
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn segments_match_how_serde_yaml_counts_documents() {
        let count = |text: &str| segments(&lines(text)).len();
        assert_eq!(count("account: a\n"), 1);
        assert_eq!(count(""), 1);
        assert_eq!(count("---\naccount: a\n"), 1);
        assert_eq!(count("# c\n---\naccount: a\n---\n"), 2);
        assert_eq!(count("account: a\n---\naccount: b\n"), 2);
        assert_eq!(count("account: a\n...\n---\naccount: b\n"), 2);
    }

    #[test]
    fn index_finds_nested_block_keys_and_sequence_items() {
        let text = "account: acme\nusers:\n  Bob@Acme.com: {}\n  \"carol@acme.com\":\n    role: admin\ngroups:\n  analysts:\n    members:\n      bob@acme.com: admin\nnotes: |\n  x: y\nreassign:\n- from: a\n  to: b\n-   from: c\n";
        let all = lines(text);
        let index = index(
            &all,
            &Segment {
                start: 0,
                end: all.len(),
            },
        );
        assert_eq!(
            index.get("users.bob@acme.com"),
            Some(Position { line: 3, column: 3 })
        );
        assert_eq!(
            index.get("users.carol@acme.com.role"),
            Some(Position { line: 5, column: 5 })
        );
        assert_eq!(
            index.get("groups.analysts.members.bob@acme.com"),
            Some(Position { line: 9, column: 7 })
        );
        assert_eq!(index.get("notes.x"), None);
        assert_eq!(
            index.get("reassign[0]"),
            Some(Position {
                line: 13,
                column: 1
            })
        );
        assert_eq!(
            index.get("reassign[0].to"),
            Some(Position {
                line: 14,
                column: 3
            })
        );
        assert_eq!(
            index.get("reassign[1].from"),
            Some(Position {
                line: 15,
                column: 5
            })
        );
        assert_eq!(
            index.locate("users.zed@acme.com"),
            Position { line: 2, column: 1 }
        );
    }
}
