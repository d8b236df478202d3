//! Specs: files -> fragments -> one validated [`Desired`].
//!
//! - [`read_tree`] finds and reads the spec files (the only I/O here);
//! - [`parse_file`] deserializes each `---` document of a file into a typed
//!   [`Fragment`], reporting syntax errors, unknown fields, wrong types,
//!   duplicate keys and bad ids at their line and column;
//! - [`build_desired`] merges the fragments of each account and checks
//!   everything that needs more than one value (a missing user, two owners,
//!   the same object declared twice), each at the line of the object;
//! - [`load`] does all three and reports every problem at once: threads
//!   read and parse the files while the calling thread merges them in path
//!   order; [`check`] does the same checks for `deed validate` without
//!   keeping the model (users and memberships are counted, not stored).
//!
//! Architecture invariant: everything but reading is pure, and the same
//! files give the same `Desired` and the same diagnostics in the same order,
//! whatever the number of threads.

mod build;
mod fragment;
mod keys;
mod parse;
mod read;

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::desired::Desired;
use crate::diagnostic::Diagnostic;

pub use build::SpecCounts;
pub use fragment::{
    AccountId, AssetId, AssetSpec, DomainName, Email, Fragment, GroupName, GroupSpec, LicenseSpec,
    MoveSpec, ObjectId, OrganizationSpec, ProductSpec, ReassignSpec, Sku, SpecDate, SpecDuration,
    SpecOwner, SpecText, TagKey, UniqueMap, UserSpec,
};
pub use keys::{KeyHasher, KeyIndex, Position};
pub use parse::{ParsedFile, MAX_FLOW_DEPTH};
pub use read::{git_revision, is_skipped, is_spec_file, MAX_FILE_BYTES};

/// One spec file: its path relative to the specs directory ('/'-separated)
/// and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// Walks `specs_dir` recursively and reads every `*.yaml` / `*.yml` file, in
/// sorted path order, skipping hidden files and folders and editor leftovers
/// (`*~`, `*.swp`, `*.tmp`). A file over 16 MiB (checked before reading), a
/// non-UTF-8 file or a missing directory is a diagnostic.
pub fn read_tree(specs_dir: &Path) -> (Vec<SourceFile>, Vec<Diagnostic>) {
    read::read_tree(specs_dir)
}

/// Parses one file into its account fragments (empty documents are
/// ignored). Pure.
pub fn parse_file(file: &SourceFile) -> (Vec<Fragment>, Vec<Diagnostic>) {
    let parsed = parse::parse(file);
    (parsed.fragments, parsed.diagnostics)
}

/// Merges fragments per account and validates them. Every problem is
/// reported, sorted by path, line and column. Pure.
pub fn build_desired(fragments: &[Fragment]) -> Result<Desired, Vec<Diagnostic>> {
    build::build(fragments, &build::Taint::default())
}

/// [`read_tree`] + [`parse_file`] + [`build_desired`], with all the
/// diagnostics together, sorted by path, line and column.
///
/// When a document fails to parse, what its account is missing is not
/// reported (it may be in the broken document); when the account of a
/// broken document cannot be told, only the parse errors are.
///
/// Files are read and parsed on several threads (see [`load_with_threads`]);
/// the result does not depend on how many.
pub fn load(specs_dir: &Path) -> Result<Desired, Vec<Diagnostic>> {
    load_with_threads(specs_dir, None)
}

/// [`load`] with `threads` threads reading and parsing (`None`: one per
/// core, at most 8), the calling thread among them: it merges what they
/// parsed, in order, and parses too while the next file is not ready;
/// `Some(1)`: everything on the calling thread, one step after the other.
/// The same result whatever the number.
pub fn load_with_threads(
    specs_dir: &Path,
    threads: Option<usize>,
) -> Result<Desired, Vec<Diagnostic>> {
    read::load(specs_dir, threads, build::Purpose::Model).map(|(desired, _)| desired)
}

/// What [`load`] checks, with the same diagnostics in the same order, for
/// `deed validate`: on success, only how many objects of each kind the
/// specs declare. Users and memberships (most of a large tenant's objects)
/// are counted rather than stored, so it takes about a quarter less time
/// and half the memory of [`load`] at scale.
pub fn check(specs_dir: &Path) -> Result<SpecCounts, Vec<Diagnostic>> {
    check_with_threads(specs_dir, None)
}

/// From this many users, groups and licenses on, [`check`] frees what it
/// built on a thread of its own.
const FREE_ON_A_THREAD: usize = 1_000;

/// [`check`] with `threads` threads, as in [`load_with_threads`].
pub fn check_with_threads(
    specs_dir: &Path,
    threads: Option<usize>,
) -> Result<SpecCounts, Vec<Diagnostic>> {
    let (model, counts) = read::load(specs_dir, threads, build::Purpose::Check)?;
    // The partial model is of no use: unless it is tiny, it is freed on a
    // thread of its own (the command line exits before that thread is done).
    if counts.users + counts.groups + counts.licenses > FREE_ON_A_THREAD {
        std::thread::spawn(move || drop(model));
    }
    Ok(counts)
}

/// Parses and builds already-read files, after `diagnostics` from reading.
pub fn load_files(
    files: &[SourceFile],
    diagnostics: Vec<Diagnostic>,
) -> Result<Desired, Vec<Diagnostic>> {
    build_parsed(&parse_all(files), diagnostics)
}

/// Every file parsed, one thread per core, in the order of `files`.
fn parse_all(files: &[SourceFile]) -> Vec<ParsedFile> {
    let threads = parse::default_threads(files.len());
    parse::map_in_parallel(files, threads, parse_source)
}

/// [`check`] of already-read files, as [`load_files`] loads them: the
/// same diagnostics as [`load_files`], or the counts of what they declare.
pub fn check_files(
    files: &[SourceFile],
    diagnostics: Vec<Diagnostic>,
) -> Result<SpecCounts, Vec<Diagnostic>> {
    let parsed = parse_all(files);
    let parsed: Vec<&ParsedFile> = parsed.iter().collect();
    build::build_parsed_for(&parsed, diagnostics, build::Purpose::Check).map(|(_, counts)| counts)
}

/// The spec files under `specs_dir` (relative, '/'-separated, sorted), as
/// [`read_tree`] finds them, without reading them.
pub fn list_tree(specs_dir: &Path) -> (Vec<String>, Vec<Diagnostic>) {
    read::list_tree(specs_dir)
}

/// Reads one spec file named by [`list_tree`], with the checks of
/// [`read_tree`].
pub fn read_source(specs_dir: &Path, relative: &str) -> Result<SourceFile, Diagnostic> {
    read::read_file(specs_dir, relative)
}

/// Parses one file, keeping what [`build_parsed`] needs: its fragments, its
/// diagnostics and the accounts of its broken documents. Pure. The daemon
/// keeps one per file and re-parses only the files that change.
pub fn parse_source(file: &SourceFile) -> ParsedFile {
    parse::parse(file)
}

/// Builds already-parsed files (in any order), after `diagnostics` from
/// reading: the second half of [`load_files`], with the same result.
pub fn build_parsed<'a>(
    files: impl IntoIterator<Item = &'a ParsedFile>,
    diagnostics: Vec<Diagnostic>,
) -> Result<Desired, Vec<Diagnostic>> {
    let files: Vec<&ParsedFile> = files.into_iter().collect();
    build::build_parsed(&files, diagnostics)
}

/// Builds the model of some accounts from their fragments alone (every
/// fragment of each of them, in path and document order), for the daemon's
/// re-planning of part of the accounts. Its checks are those of a full
/// build over those fragments: a reference to an account outside them is
/// reported as undeclared. Pure.
pub fn build_fragments<'a>(
    fragments: impl IntoIterator<Item = &'a Fragment>,
) -> Result<Desired, Vec<Diagnostic>> {
    build::build(fragments, &build::Taint::default())
}

/// JSON Schema (draft-07) of one fragment, for editors.
pub fn fragment_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Fragment>();
    schema.to_value()
}
