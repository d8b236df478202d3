//! The only I/O of spec loading: finds the spec files under the specs
//! directory and reads them, refusing files that are too large or not UTF-8;
//! and [`load`], which reads and parses them on several threads (one per
//! core, the calling one included) while the calling thread merges them,
//! in path order.
use std::any::Any;
use std::fs;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::desired::Desired;
use crate::diagnostic::Diagnostic;

use super::build::{self, Purpose, SpecCounts};
use super::parse::{self, ParsedFile};
use super::SourceFile;

/// Largest spec file read (16 MiB).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Symbolic links to folders are followed this deep at most (no cycles).
const MAX_DEPTH: usize = 64;

pub(crate) fn read_tree(specs_dir: &Path) -> (Vec<SourceFile>, Vec<Diagnostic>) {
    let (found, mut diagnostics) = list_tree(specs_dir);
    let mut files = Vec::new();
    for relative in found {
        match read_file(specs_dir, &relative) {
            Ok(file) => files.push(file),
            Err(diagnostic) => diagnostics.push(diagnostic),
        }
    }
    (files, diagnostics)
}

/// The relative paths of the spec files under `specs_dir`, sorted, without
/// reading them; problems finding them are diagnostics, as in [`read_tree`].
pub(crate) fn list_tree(specs_dir: &Path) -> (Vec<String>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let shown = specs_dir.display().to_string();
    match fs::metadata(specs_dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            diagnostics.push(Diagnostic::in_file(
                shown,
                "the specs directory is not a directory",
            ));
            return (Vec::new(), diagnostics);
        }
        Err(error) => {
            diagnostics.push(Diagnostic::in_file(
                shown,
                format!("cannot read the specs directory: {error}"),
            ));
            return (Vec::new(), diagnostics);
        }
    }
    let mut found = Vec::new();
    walk(specs_dir, "", 0, &mut found, &mut diagnostics);
    found.sort();
    (found, diagnostics)
}

/// Reads the spec file `relative` (as [`list_tree`] names it) under
/// `specs_dir`, with the checks of [`read_tree`].
pub(crate) fn read_file(specs_dir: &Path, relative: &str) -> Result<SourceFile, Diagnostic> {
    let full = specs_dir.join(relative);
    match read_one(&full) {
        Ok(text) => Ok(SourceFile {
            path: relative.to_string(),
            text,
        }),
        Err((line, message)) => Err(match line {
            Some((line, column)) => Diagnostic::at(relative, line, column, message),
            None => Diagnostic::in_file(relative, message),
        }),
    }
}

/// Whether a file or folder name is skipped: hidden, or an editor leftover.
pub fn is_skipped(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".tmp")
}

/// Whether a file name is a spec file.
pub fn is_spec_file(name: &str) -> bool {
    !is_skipped(name) && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    found: &mut Vec<String>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let shown = if prefix.is_empty() {
        ".".to_string()
    } else {
        prefix.to_string()
    };
    if depth > MAX_DEPTH {
        diagnostics.push(Diagnostic::in_file(
            shown,
            format!(
                "folders nested deeper than {MAX_DEPTH} levels (a symbolic link loop?): skipped"
            ),
        ));
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            diagnostics.push(Diagnostic::in_file(
                shown,
                format!("cannot read folder: {error}"),
            ));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                diagnostics.push(Diagnostic::in_file(
                    shown.clone(),
                    format!("cannot read folder: {error}"),
                ));
                continue;
            }
        };
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            diagnostics.push(Diagnostic::in_file(
                shown.clone(),
                format!(
                    "file name {:?} is not valid UTF-8: rename it",
                    entry.file_name()
                ),
            ));
            continue;
        };
        if is_skipped(&name) {
            continue;
        }
        let relative = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        // Follows symbolic links; a broken link is reported if it looks like a spec.
        let metadata = match fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) => {
                if is_spec_file(&name) {
                    diagnostics.push(Diagnostic::in_file(
                        relative,
                        format!("cannot read file: {error}"),
                    ));
                }
                continue;
            }
        };
        if metadata.is_dir() {
            walk(&path, &relative, depth + 1, found, diagnostics);
        } else if metadata.is_file() && is_spec_file(&name) {
            found.push(relative);
        }
    }
}

/// Reads one file: size checked before reading, never more than the limit.
fn read_one(path: &Path) -> Result<String, (Option<(usize, usize)>, String)> {
    let too_large = |size: u64| {
        (
            None,
            format!(
                "file is {:.1} MiB, over the {} MiB limit for a spec file: split it into several files",
                size as f64 / (1024.0 * 1024.0),
                MAX_FILE_BYTES / (1024 * 1024)
            ),
        )
    };
    let file =
        fs::File::open(path).map_err(|error| (None, format!("cannot read file: {error}")))?;
    let size = file
        .metadata()
        .map_err(|error| (None, format!("cannot read file: {error}")))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| (None, format!("cannot read file: {error}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid
            .iter()
            .rposition(|b| *b == b'\n')
            .map(|at| at + 1)
            .unwrap_or(0);
        let column = valid.len() - line_start + 1;
        (
            Some((line, column)),
            "file is not valid UTF-8: save it as UTF-8".to_string(),
        )
    })
}

/// The git revision (`HEAD`) of the repository holding the specs folder, if
/// it is in one: recorded with every applied change.
pub fn git_revision(specs_dir: &Path) -> Option<String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(specs_dir)
        .args(["rev-parse", "HEAD"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let revision = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!revision.is_empty()).then_some(revision)
}

/// What a reading thread left for a file.
enum Slot {
    Parsed(ParsedFile),
    Unread(Diagnostic),
    /// Parsing it panicked (a bug): the panic is raised again by the caller.
    Panicked,
}

/// [`crate::spec::load_with_threads`]: `threads` threads, the calling one
/// included, read and parse the files, each taking the next one as it
/// finishes one; the calling thread also merges the parsed files in path
/// order, and parses the next untaken file whenever the one to merge is
/// not parsed yet. One thread: every file read and parsed, then merged, on
/// the calling thread. The model is built for `purpose`.
pub(crate) fn load(
    specs_dir: &Path,
    threads: Option<usize>,
    purpose: Purpose,
) -> Result<(Desired, SpecCounts), Vec<Diagnostic>> {
    let (found, mut diagnostics) = list_tree(specs_dir);
    let threads = threads.unwrap_or_else(|| parse::default_threads(found.len()));
    if threads <= 1 || found.len() <= 1 {
        let mut parsed = Vec::with_capacity(found.len());
        for relative in &found {
            match read_file(specs_dir, relative) {
                Ok(file) => parsed.push(parse::parse(&file)),
                Err(diagnostic) => diagnostics.push(diagnostic),
            }
        }
        let parsed: Vec<&ParsedFile> = parsed.iter().collect();
        return build::build_parsed_for(&parsed, diagnostics, purpose);
    }
    let slots: Vec<OnceLock<Slot>> = found.iter().map(|_| OnceLock::new()).collect();
    let panic: Mutex<Option<Box<dyn Any + Send>>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    // Reads and parses the next file nobody has taken; false when none is left.
    let parse_next = || {
        let at = next.fetch_add(1, Ordering::Relaxed);
        let (Some(relative), Some(slot)) = (found.get(at), slots.get(at)) else {
            return false;
        };
        let read = catch_unwind(AssertUnwindSafe(|| {
            read_file(specs_dir, relative).map(|file| parse::parse(&file))
        }));
        let _ = slot.set(match read {
            Ok(Ok(parsed)) => Slot::Parsed(parsed),
            Ok(Err(diagnostic)) => Slot::Unread(diagnostic),
            Err(payload) => {
                if let Ok(mut first) = panic.lock() {
                    first.get_or_insert(payload);
                }
                Slot::Panicked
            }
        });
        true
    };
    let result = std::thread::scope(|scope| {
        // One thread fewer than asked: the calling thread parses too
        // whenever the next file to merge is not parsed yet, instead of
        // waiting (merging is a fifth of the work; a thread more than
        // there are cores only switches).
        for _ in 1..threads.min(found.len()) {
            scope.spawn(|| while parse_next() {});
        }
        let mut builder = build::Builder::for_purpose(0, purpose);
        let mut files: Vec<&ParsedFile> = Vec::with_capacity(found.len());
        let sample = found.len().min(8);
        for (at, slot) in slots.iter().enumerate() {
            if at == sample {
                builder.reserve_like_first_files(sample, found.len());
            }
            let slot = loop {
                if let Some(slot) = slot.get() {
                    break slot;
                }
                if !parse_next() {
                    break slot.wait();
                }
            };
            match slot {
                Slot::Parsed(parsed) => {
                    for fragment in &parsed.fragments {
                        builder.add(fragment);
                    }
                    files.push(parsed);
                }
                Slot::Unread(diagnostic) => diagnostics.push(diagnostic.clone()),
                Slot::Panicked => return None,
            }
        }
        Some(build::finish_parsed(builder, &files, diagnostics))
    });
    // A large tree's parsed files are a million small allocations: free
    // them on a thread of their own rather than before returning (the
    // command line exits before that thread is done).
    if found.len() > 64 {
        std::thread::spawn(move || drop(slots));
    }
    match result {
        Some(result) => result,
        None => {
            let payload = panic
                .into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Box::new("parsing a spec file panicked"));
            std::panic::resume_unwind(payload)
        }
    }
}
