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
//! Architecture invariant: no I/O.

use std::collections::HashMap;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// The positions of the keys of one document, by lowercase path.
#[derive(Clone, Debug, Default)]
pub struct KeyIndex {
    /// First line of the document's content (1-based).
    pub first_line: usize,
    keys: HashMap<String, Position>,
    /// Second declarations of a path (a duplicate key), for relocating
    /// serde's "duplicate field" errors.
    repeated: HashMap<String, Position>,
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

    /// The position of exactly `path`, if indexed.
    pub fn get(&self, path: &str) -> Option<Position> {
        if let Some(position) = self.keys.get(path) {
            return Some(*position);
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.keys.get(&path.to_ascii_lowercase()).copied();
        }
        None
    }

    /// The position of the second declaration of `path`, if any.
    pub fn repeated(&self, path: &str) -> Option<Position> {
        self.repeated.get(&path.to_ascii_lowercase()).copied()
    }
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
    path: String,
    is_item: bool,
    items: usize,
}

/// Indexes the block-style keys of one document.
pub fn index(lines: &[&str], segment: &Segment) -> KeyIndex {
    let mut result = KeyIndex {
        first_line: segment.start + 1,
        ..KeyIndex::default()
    };
    let mut found_first = false;
    let mut stack: Vec<Level> = Vec::new();
    // Lines more indented than this belong to a block scalar (`|`, `>`).
    let mut scalar_indent: Option<usize> = None;
    let end = segment.end.min(lines.len());
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
            let (parent, number) = match stack.last_mut() {
                Some(top) => {
                    top.items += 1;
                    (top.path.clone(), top.items - 1)
                }
                None => (String::new(), 0),
            };
            let path = format!("{parent}[{number}]");
            insert(
                &mut result,
                path.clone(),
                Position {
                    line: line_number,
                    column: indent + 1,
                },
            );
            stack.push(Level {
                indent,
                path,
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
        let parent = stack.last().map(|top| top.path.as_str()).unwrap_or("");
        let path = join(parent, &key.to_ascii_lowercase());
        insert(
            &mut result,
            path.clone(),
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
            path,
            is_item: false,
            items: 0,
        });
    }
    result
}

fn insert(index: &mut KeyIndex, path: String, position: Position) {
    match index.keys.entry(path) {
        std::collections::hash_map::Entry::Occupied(entry) => {
            index
                .repeated
                .entry(entry.key().clone())
                .or_insert(position);
        }
        std::collections::hash_map::Entry::Vacant(entry) => {
            entry.insert(position);
        }
    }
}

/// Splits `key: value` (the key plain or quoted) into key and value text.
fn split_key(rest: &str) -> Option<(String, &str)> {
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
            (key, &rest[at + 1..])
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
            (rest[..end].trim_end().to_string(), &rest[end..])
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
