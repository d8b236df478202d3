//! Specs: files -> fragments -> one validated [`Desired`].
//!
//! - [`read_tree`] finds and reads the spec files (the only I/O here);
//! - [`parse_file`] deserializes each `---` document of a file into a typed
//!   [`Fragment`], reporting syntax errors, unknown fields, wrong types,
//!   duplicate keys and bad ids at their line and column;
//! - [`build_desired`] merges the fragments of each account and checks
//!   everything that needs more than one value (a missing user, two owners,
//!   the same object declared twice), each at the line of the object;
//! - [`load`] does all three and reports every problem at once.
//!
//! Architecture invariant: everything but `read_tree` is pure, and the same
//! files give the same `Desired` and the same diagnostics in the same order.

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

pub use fragment::{
    AccountId, AssetId, AssetSpec, DomainName, Email, Fragment, GroupName, GroupSpec, LicenseSpec,
    MoveSpec, ObjectId, OrganizationSpec, ProductSpec, ReassignSpec, Sku, SpecDate, SpecDuration,
    SpecOwner, SpecText, TagKey, UniqueMap, UserSpec,
};
pub use keys::{KeyIndex, Position};
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
pub fn load(specs_dir: &Path) -> Result<Desired, Vec<Diagnostic>> {
    let (files, diagnostics) = read_tree(specs_dir);
    load_files(&files, diagnostics)
}

/// Parses and builds already-read files, after `diagnostics` from reading.
pub fn load_files(
    files: &[SourceFile],
    diagnostics: Vec<Diagnostic>,
) -> Result<Desired, Vec<Diagnostic>> {
    let parsed: Vec<ParsedFile> = files.iter().map(parse_source).collect();
    build_parsed(&parsed, diagnostics)
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
    mut diagnostics: Vec<Diagnostic>,
) -> Result<Desired, Vec<Diagnostic>> {
    // A file that could not be read may have held any account.
    let mut taint = build::Taint {
        unknown: !diagnostics.is_empty(),
        ..build::Taint::default()
    };
    let mut fragments: Vec<&Fragment> = Vec::new();
    for parsed in files {
        fragments.extend(parsed.fragments.iter());
        diagnostics.extend(parsed.diagnostics.iter().cloned());
        for account in &parsed.broken {
            match account {
                Some(account) => {
                    taint.accounts.insert(account.clone());
                }
                None => taint.unknown = true,
            }
        }
    }
    match build::build(fragments, &taint) {
        Ok(desired) if diagnostics.is_empty() => Ok(desired),
        Ok(_) => {
            build::sort_diagnostics(&mut diagnostics);
            Err(diagnostics)
        }
        Err(more) => {
            diagnostics.extend(more);
            build::sort_diagnostics(&mut diagnostics);
            Err(diagnostics)
        }
    }
}

/// JSON Schema (draft-07) of one fragment, for editors.
pub fn fragment_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Fragment>();
    schema.to_value()
}
