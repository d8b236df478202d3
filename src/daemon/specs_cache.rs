//! The daemon's incremental spec loading: it keeps each file's parsed
//! fragments and, on a reload, re-reads only the files whose size, time or
//! inode changed (or that a file event named), re-parses only those whose
//! text changed, and rebuilds the [`Desired`] model only when some file did.
//!
//! The result is the same as [`crate::spec::load`] on the same files: the
//! same functions read, parse and build, only fewer times.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::desired::Desired;
use crate::diagnostic::Diagnostic;
use crate::spec::{self, Fragment, ParsedFile};

/// What a reload gave.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Names the content of every spec file: equal fingerprints, equal specs.
    pub fingerprint: [u8; 32],
    /// Spec files found.
    pub files: usize,
    /// Files parsed again by this reload.
    pub parsed: usize,
    /// Whether a file could not be read or parsed: only a full build can
    /// tell what is wrong.
    pub broken: bool,
}

/// The accounts whose declarations changed since
/// [`SpecsCache::take_changed`]; `None`: cannot be told (a document whose
/// account is unknown changed).
pub type Changed = Option<BTreeSet<String>>;

/// Parsed spec files, by path relative to the specs directory.
pub struct SpecsCache {
    specs_dir: PathBuf,
    files: BTreeMap<String, CachedFile>,
    /// The last full build, by fingerprint.
    last: Option<([u8; 32], Built)>,
    /// The fingerprint of the last reload.
    fingerprint: [u8; 32],
    /// Diagnostics of reading the tree at the last reload.
    read_diagnostics: Vec<Diagnostic>,
    changed: Changed,
}

/// The validated model, or every problem with the specs.
pub type Built = Result<Arc<Desired>, Arc<Vec<Diagnostic>>>;

/// One file as last read.
struct CachedFile {
    stamp: Option<Stamp>,
    /// SHA-256 of the text, or of the read error.
    digest: [u8; 32],
    content: Result<ParsedFile, Diagnostic>,
}

/// What `stat` says of a file; a change means it must be read again.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
    changed: i64,
    changed_nanos: i64,
}

impl SpecsCache {
    pub fn new(specs_dir: &Path) -> SpecsCache {
        SpecsCache {
            specs_dir: specs_dir.to_path_buf(),
            files: BTreeMap::new(),
            last: None,
            fingerprint: [0; 32],
            read_diagnostics: Vec::new(),
            changed: Some(BTreeSet::new()),
        }
    }

    /// Reloads the specs. `dirty` names files (relative, as
    /// [`spec::list_tree`] does) that must be read again whatever their
    /// stamp says; with `full`, every file is read again (parsing still
    /// happens only where the text changed).
    pub fn reload(&mut self, dirty: &BTreeSet<String>, full: bool) -> Loaded {
        let (listed, read_diagnostics) = spec::list_tree(&self.specs_dir);
        let listed_set: BTreeSet<&String> = listed.iter().collect();
        let mut changed = std::mem::take(&mut self.changed);
        self.files.retain(|path, file| {
            let kept = listed_set.contains(path);
            if !kept {
                note_accounts(&mut changed, file);
            }
            kept
        });
        let mut parsed = 0;
        for relative in &listed {
            let stamp = stamp_of(&self.specs_dir.join(relative));
            let known = self.files.get(relative);
            let fresh = known.is_some_and(|file| {
                !full && !dirty.contains(relative) && stamp.is_some() && file.stamp == stamp
            });
            if fresh {
                continue;
            }
            let read = spec::read_source(&self.specs_dir, relative);
            let digest = match &read {
                Ok(file) => digest_of(file.text.as_bytes()),
                Err(diagnostic) => digest_of(diagnostic.to_string().as_bytes()),
            };
            if let Some(file) = self.files.get_mut(relative) {
                if file.digest == digest {
                    file.stamp = stamp;
                    continue;
                }
            }
            let content = read.map(|file| spec::parse_source(&file));
            parsed += 1;
            if let Some(old) = self.files.get(relative) {
                note_accounts(&mut changed, old);
            }
            match &content {
                Ok(parsed_file) => note_parsed(&mut changed, parsed_file),
                Err(_) => changed = None,
            }
            self.files.insert(
                relative.clone(),
                CachedFile {
                    stamp,
                    digest,
                    content,
                },
            );
        }

        let mut hasher = Sha256::new();
        for (path, file) in &self.files {
            hasher.update(path.as_bytes());
            hasher.update([0]);
            hasher.update(file.digest);
        }
        for diagnostic in &read_diagnostics {
            hasher.update(diagnostic.to_string().as_bytes());
            hasher.update([0]);
        }
        let fingerprint: [u8; 32] = hasher.finalize().into();
        self.changed = changed;
        self.fingerprint = fingerprint;
        let broken = !read_diagnostics.is_empty()
            || self.files.values().any(|file| match &file.content {
                Ok(parsed_file) => !parsed_file.diagnostics.is_empty(),
                Err(_) => true,
            });
        self.read_diagnostics = read_diagnostics;
        Loaded {
            fingerprint,
            files: self.files.len(),
            parsed,
            broken,
        }
    }

    /// The full build of the specs of the last reload (kept, by
    /// fingerprint).
    pub fn desired(&mut self) -> Built {
        if let Some((fingerprint, built)) = &self.last {
            if *fingerprint == self.fingerprint {
                return built.clone();
            }
        }
        let mut diagnostics = self.read_diagnostics.clone();
        let mut parsed_files = Vec::with_capacity(self.files.len());
        for file in self.files.values() {
            match &file.content {
                Ok(parsed_file) => parsed_files.push(parsed_file),
                Err(diagnostic) => diagnostics.push(diagnostic.clone()),
            }
        }
        let built: Built = spec::build_parsed(parsed_files, diagnostics)
            .map(Arc::new)
            .map_err(Arc::new);
        self.last = Some((self.fingerprint, built.clone()));
        built
    }

    /// The accounts whose declarations changed since the last call.
    pub fn take_changed(&mut self) -> Changed {
        self.changed.replace(BTreeSet::new())
    }

    /// Every fragment of `accounts`, in path and document order.
    pub fn fragments_of<'a>(&'a self, accounts: &'a BTreeSet<String>) -> Vec<&'a Fragment> {
        self.files
            .values()
            .filter_map(|file| file.content.as_ref().ok())
            .flat_map(|parsed| parsed.fragments.iter())
            .filter(|fragment| accounts.contains(fragment.account.as_str()))
            .collect()
    }
}

/// Adds the accounts a cached file declares to `changed`.
fn note_accounts(changed: &mut Changed, file: &CachedFile) {
    match &file.content {
        Ok(parsed) => note_parsed(changed, parsed),
        Err(_) => *changed = None,
    }
}

fn note_parsed(changed: &mut Changed, parsed: &ParsedFile) {
    let Some(accounts) = changed else { return };
    for fragment in &parsed.fragments {
        accounts.insert(fragment.account.as_str().to_string());
    }
    for broken in &parsed.broken {
        match broken {
            Some(account) => {
                accounts.insert(account.clone());
            }
            None => {
                *changed = None;
                return;
            }
        }
    }
}

fn digest_of(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (inode, changed, changed_nanos) = {
        use std::os::unix::fs::MetadataExt;
        (metadata.ino(), metadata.ctime(), metadata.ctime_nsec())
    };
    #[cfg(not(unix))]
    let (inode, changed, changed_nanos) = (0, 0, 0);
    Some(Stamp {
        len: metadata.len(),
        modified: metadata.modified().ok(),
        inode,
        changed,
        changed_nanos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACME: &str =
        "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n";

    fn write(dir: &Path, path: &str, text: &str) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn reload_parses_only_the_files_that_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "acme.yaml", ACME);
        write(
            dir.path(),
            "globex/globex.yaml",
            "account: globex\ndomains: [globex.com]\nusers:\n  gary@globex.com: {role: owner}\n",
        );
        let mut cache = SpecsCache::new(dir.path());
        let first = cache.reload(&BTreeSet::new(), false);
        assert_eq!((first.files, first.parsed), (2, 2));
        assert!(cache.desired().is_ok());
        assert_eq!(
            cache.take_changed(),
            Some(BTreeSet::from(["acme".to_string(), "globex".to_string()]))
        );

        let again = cache.reload(&BTreeSet::new(), true);
        assert_eq!(again.parsed, 0, "same text is not parsed again");
        assert_eq!(again.fingerprint, first.fingerprint);

        write(
            dir.path(),
            "acme.yaml",
            &format!("{ACME}  bob@acme.com: {{}}\n"),
        );
        let dirty = BTreeSet::from(["acme.yaml".to_string()]);
        let edited = cache.reload(&dirty, false);
        assert_eq!(edited.parsed, 1);
        assert_ne!(edited.fingerprint, first.fingerprint);
        assert_eq!(
            cache.take_changed(),
            Some(BTreeSet::from(["acme".to_string()]))
        );
        let desired = cache.desired().expect("valid");
        assert!(desired.users.contains_key("bob@acme.com"));
    }

    #[test]
    fn reload_gives_the_diagnostics_of_a_full_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "acme.yaml", ACME);
        let mut cache = SpecsCache::new(dir.path());
        cache.reload(&BTreeSet::new(), false);
        assert!(cache.desired().is_ok());

        write(dir.path(), "broken.yaml", "account: acme\nusers: [\n");
        let loaded = cache.reload(&BTreeSet::new(), false);
        assert!(loaded.broken);
        let diagnostics = cache.desired().expect_err("invalid");
        let full = spec::load(dir.path()).expect_err("invalid");
        assert_eq!(*diagnostics, full);

        std::fs::remove_file(dir.path().join("broken.yaml")).expect("remove");
        let fixed = cache.reload(&BTreeSet::new(), false);
        assert!(!fixed.broken);
        assert!(cache.desired().is_ok());
        assert_eq!(fixed.files, 1);
    }
}
