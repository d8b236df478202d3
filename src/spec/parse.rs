//! One spec file -> its account fragments: runs serde_yaml over every `---`
//! document, turns its errors into `PATH:LINE:COL: message` diagnostics, and
//! attaches to each fragment the index of where its keys are.
//!
//! Hostile input is refused before or while parsing: flow nesting deeper
//! than [`MAX_FLOW_DEPTH`] is rejected by a byte scan before libyaml sees it;
//! serde_yaml's own recursion and alias-repetition limits cover the rest.
//!
//! Architecture invariant: no I/O.

use serde::Deserialize;

use crate::diagnostic::Diagnostic;

use super::fragment::Fragment;
use super::keys::{self, KeyIndex, Segment};
use super::SourceFile;

/// Deepest `[`/`{` nesting accepted in a spec file.
pub const MAX_FLOW_DEPTH: usize = 64;

/// What parsing one file gave.
#[derive(Clone, Debug, Default)]
pub struct ParsedFile {
    pub fragments: Vec<Fragment>,
    pub diagnostics: Vec<Diagnostic>,
    /// Documents that failed to parse, by the account they name (`None`:
    /// it could not be told). Their account's declarations are incomplete.
    pub broken: Vec<Option<String>>,
}

pub(crate) fn parse(file: &SourceFile) -> ParsedFile {
    let lines: Vec<&str> = file.text.split('\n').collect();
    let segments = keys::segments(&lines);
    let mut parsed = ParsedFile::default();
    let broken_from = |parsed: &mut ParsedFile, first: usize| {
        for segment in segments.iter().skip(first) {
            parsed.broken.push(keys::scan_account(&lines, segment));
        }
        if first >= segments.len() && parsed.broken.is_empty() {
            parsed.broken.push(None);
        }
    };

    if let Some((line, column)) = first_alias(&file.text) {
        parsed.diagnostics.push(Diagnostic::at(
            &file.path,
            line,
            column,
            "YAML anchors and aliases (&name, *name) are not accepted in specs: write the value out (quote it if it starts with & or *)",
        ));
        broken_from(&mut parsed, 0);
        return parsed;
    }

    if let Some((line, column)) = too_deep(&file.text) {
        parsed.diagnostics.push(Diagnostic::at(
            &file.path,
            line,
            column,
            format!("nesting deeper than {MAX_FLOW_DEPTH} levels: refusing this file"),
        ));
        broken_from(&mut parsed, 0);
        return parsed;
    }

    let mut last_error: Option<Option<usize>> = None;
    let limit = lines.len() + 2;
    for (number, document) in serde_yaml::Deserializer::from_str(&file.text).enumerate() {
        if number > limit {
            break;
        }
        let segment = segments.get(number);
        match Option::<Fragment>::deserialize(document) {
            Ok(None) => {}
            Ok(Some(mut fragment)) => {
                fragment.path = file.path.clone();
                fragment.document = number;
                fragment.keys = segment
                    .map(|segment| keys::index(&lines, segment))
                    .unwrap_or_default();
                parsed.fragments.push(fragment);
            }
            Err(error) => {
                let at = error.location().map(|location| location.index());
                if let Some(previous) = last_error {
                    if at <= previous {
                        // libyaml repeats a syntax error for every later
                        // document: the rest of the file is lost.
                        broken_from(&mut parsed, number);
                        break;
                    }
                }
                last_error = Some(at);
                let index = segment
                    .map(|segment| keys::index(&lines, segment))
                    .unwrap_or_default();
                parsed.diagnostics.push(diagnostic_of(
                    &file.path, &file.text, &error, &index, segment,
                ));
                parsed
                    .broken
                    .push(segment.and_then(|segment| keys::scan_account(&lines, segment)));
            }
        }
    }
    parsed
}

/// A serde_yaml error as a diagnostic at the file line and column it names.
fn diagnostic_of(
    path: &str,
    text: &str,
    error: &serde_yaml::Error,
    index: &KeyIndex,
    segment: Option<&Segment>,
) -> Diagnostic {
    let mut message = error.to_string();
    let (mut line, mut column) = match error.location() {
        Some(location) => {
            let suffix = format!(" at line {} column {}", location.line(), location.column());
            if let Some(at) = message.find(&suffix) {
                message.replace_range(at..at + suffix.len(), "");
            }
            (location.line(), location.column())
        }
        None => (segment.map(|segment| segment.start + 1).unwrap_or(1), 1),
    };
    // Some scanner errors give a byte offset ("at position N") instead of a
    // line and column: turn it into one.
    if let Some((at, offset)) = byte_position(&message) {
        if let Some((offset_line, offset_column)) = line_and_column(text, offset) {
            line = offset_line;
            column = offset_column;
            message.truncate(at);
        }
    }
    if message.ends_with("recursion limit exceeded") {
        message = "nesting is too deep (over 128 levels): refusing this document".to_string();
    } else if message.ends_with("repetition limit exceeded") {
        message = "too many alias expansions (an alias bomb?): refusing this document".to_string();
    } else if let Some((prefix, field)) =
        duplicate_field(&message).map(|(p, f)| (p.to_string(), f.to_string()))
    {
        // serde reports a repeated struct field at the start of the mapping;
        // point at the second declaration instead.
        let field_path = keys::join(&prefix, &field);
        if let Some(position) = index.repeated(&field_path) {
            line = position.line;
            column = position.column;
        }
        message = format!("duplicate key `{field}`: it is already declared in this mapping");
        if !prefix.is_empty() {
            message = format!("{prefix}: {message}");
        }
    }
    Diagnostic::at(path, line, column, message)
}

/// `(path, field)` of serde's `PATH: duplicate field `F`` message.
fn duplicate_field(message: &str) -> Option<(&str, &str)> {
    let (prefix, rest) = match message.find("duplicate field `") {
        Some(0) => ("", &message["duplicate field `".len()..]),
        Some(at) => (
            message[..at].strip_suffix(": ")?,
            &message[at + "duplicate field `".len()..],
        ),
        None => return None,
    };
    let field = &rest[..rest.find('`')?];
    Some((prefix, field))
}

/// `(where " at position " starts, N)` for a message ending in
/// `at position N`.
fn byte_position(message: &str) -> Option<(usize, usize)> {
    let at = message.rfind(" at position ")?;
    let number = message[at + " at position ".len()..].trim();
    Some((at, number.parse().ok()?))
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    Some((line, before[line_start..].chars().count() + 1))
}

/// The line and column of the first YAML anchor (`&name`) or alias
/// (`*name`): a node that starts with `&` or `*`. Specs never need them, and
/// refusing them up front is what keeps alias bombs (and aliases to missing
/// anchors, which the YAML library does not survive) out, in one linear pass.
/// Quoted text and comments are skipped; a block scalar line that starts
/// with `&` or `*` is refused too (quote it).
fn first_alias(text: &str) -> Option<(usize, usize)> {
    // Most specs hold neither character: no need to follow the syntax.
    if !text.contains('&') && !text.contains('*') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut line = 1;
    let mut line_start = 0;
    let mut at = 0;
    // Whether the next non-blank character starts a node.
    let mut node_start = true;
    while at < bytes.len() {
        let byte = bytes[at];
        match byte {
            b'\n' => {
                line += 1;
                line_start = at + 1;
                node_start = true;
            }
            b' ' | b'\t' | b'\r' => {}
            b'#' if at == line_start || matches!(bytes[at - 1], b' ' | b'\t') => {
                while at < bytes.len() && bytes[at] != b'\n' {
                    at += 1;
                }
                continue;
            }
            b'&' | b'*' if node_start => return Some((line, at - line_start + 1)),
            b'"' | b'\'' if node_start => {
                at += 1;
                while at < bytes.len() && bytes[at] != byte {
                    if bytes[at] == b'\\' && byte == b'"' {
                        at += 1;
                    } else if bytes[at] == b'\n' {
                        line += 1;
                        line_start = at + 1;
                    }
                    at += 1;
                }
                node_start = false;
            }
            b'[' | b'{' | b',' => node_start = true,
            b':' | b'-' | b'?'
                if matches!(bytes.get(at + 1), None | Some(b' ' | b'\t' | b'\n' | b'\r')) =>
            {
                node_start = true
            }
            _ => node_start = false,
        }
        at += 1;
    }
    None
}

/// The line and column where `[`/`{` nesting first exceeds the limit.
/// Approximate (quotes and comments are skipped, block scalars are not),
/// which only matters for text nobody writes in a spec.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut line = 1;
    let mut line_start = 0;
    let mut at = 0;
    while at < bytes.len() {
        // Only these bytes matter; the ones between are skipped in a
        // tight loop.
        if !matches!(
            bytes[at],
            b'\n' | b'#' | b'"' | b'\'' | b'[' | b'{' | b']' | b'}'
        ) {
            at += 1;
            continue;
        }
        let byte = bytes[at];
        // The byte before: what was skipped, the closing quote of a string,
        // or the end of the previous line.
        let previous = if at == 0 { b'\n' } else { bytes[at - 1] };
        match byte {
            b'\n' => {
                line += 1;
                line_start = at + 1;
            }
            b'#' if matches!(previous, b' ' | b'\t' | b'\n') => {
                while at < bytes.len() && bytes[at] != b'\n' {
                    at += 1;
                }
                continue;
            }
            b'"' | b'\''
                if matches!(previous, b' ' | b'\t' | b'\n' | b'[' | b'{' | b',' | b':') =>
            {
                at += 1;
                while at < bytes.len() && bytes[at] != byte {
                    if bytes[at] == b'\\' && byte == b'"' {
                        at += 1;
                    } else if bytes[at] == b'\n' {
                        line += 1;
                        line_start = at + 1;
                    }
                    at += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some((line, at - line_start + 1));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    None
}

/// How many threads parse spec files: the cores available, at most
/// [`MAX_THREADS`], never more than there are files.
pub(crate) fn default_threads(files: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.clamp(1, MAX_THREADS).min(files.max(1))
}

/// Most threads used to parse spec files.
const MAX_THREADS: usize = 8;

/// `work` over every item, on `threads` threads (the calling one included),
/// the results in the order of `items` whatever thread computed them.
/// Items are handed out one at a time, so a large file does not hold up a
/// thread's share of small ones.
pub(crate) fn map_in_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() <= 1 {
        return items.iter().map(work).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let run = || {
        let mut done = Vec::new();
        loop {
            let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(at) else {
                return done;
            };
            done.push((at, work(item)));
        }
    };
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.min(items.len()))
            .map(|_| scope.spawn(run))
            .collect();
        let mut results = run();
        for helper in helpers {
            match helper.join() {
                Ok(done) => results.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    });
    results.sort_unstable_by_key(|(at, _)| *at);
    results.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_in_parallel_keeps_the_order_of_the_items() {
        let items: Vec<usize> = (0..1000).collect();
        for threads in [1, 2, 3, 16] {
            let squares = map_in_parallel(&items, threads, |n| n * n);
            assert_eq!(squares, items.iter().map(|n| n * n).collect::<Vec<_>>());
        }
        assert!(map_in_parallel(&[] as &[usize], 4, |n| *n).is_empty());
    }

    #[test]
    fn the_nesting_scan_skips_quotes_and_comments() {
        let deep = "[".repeat(MAX_FLOW_DEPTH + 1);
        assert_eq!(too_deep(&deep), Some((1, MAX_FLOW_DEPTH + 1)));
        assert_eq!(
            too_deep(&format!("a: 1\nb: {deep}")),
            Some((2, MAX_FLOW_DEPTH + 4))
        );
        assert_eq!(too_deep(&format!("a: '{deep}'")), None);
        assert_eq!(too_deep(&format!("a: \"x\\\"{deep}\"")), None);
        assert_eq!(too_deep(&format!("a: 1 # {deep}")), None);
        assert_eq!(
            too_deep(&format!("a: b#{deep}")),
            Some((1, MAX_FLOW_DEPTH + 6))
        );
        assert_eq!(
            too_deep(&format!("a: b'{deep}")),
            Some((1, MAX_FLOW_DEPTH + 6))
        );
        assert_eq!(first_alias("a: b\nc: [x, *y]\n"), Some((2, 8)));
        assert_eq!(first_alias("a: b&c\nd: 'e*'\n"), None);
    }
}
