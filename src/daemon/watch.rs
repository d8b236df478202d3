//! Watching the specs folder: a recursive notify watcher behind
//! notify-debouncer-full, which turns an editor's save (write, rename), a
//! deleted file, a new folder or a `git pull` of many files into a few
//! batches of paths. Events that cannot change the specs (reads, hidden
//! files and folders such as `.git`, editor leftovers, files that are not
//! specs) are dropped here; the loop then waits for the batches to settle
//! and runs one reconcile.
//!
//! The watcher only says *that* something changed: what changed is found by
//! [`super::specs_cache`] from the files themselves, and the periodic run
//! catches anything a watcher missed.

use std::path::{Component, Path};
use std::time::Duration;

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc::UnboundedSender;

/// How long a path must be quiet before its events are delivered.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// What the watcher reports.
#[derive(Debug)]
pub enum WatchEvent {
    /// These spec files or folders (relative to the specs folder,
    /// '/'-separated) changed.
    Changed(Vec<String>),
    /// Events were lost or the watcher failed: read everything again.
    Rescan(String),
}

/// A running watcher; dropping it stops watching.
pub struct SpecsWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Starts watching `specs_dir` recursively, sending what changes to `sender`.
pub fn watch(
    specs_dir: &Path,
    sender: UnboundedSender<WatchEvent>,
) -> Result<SpecsWatcher, notify::Error> {
    let root = std::fs::canonicalize(specs_dir).map_err(notify::Error::io)?;
    let handler_root = root.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let event = match result {
            Ok(events) => {
                let mut changed: Vec<String> = Vec::new();
                let mut rescan = false;
                for event in &events {
                    if event.event.need_rescan() {
                        rescan = true;
                    }
                    if matches!(event.event.kind, EventKind::Access(_)) {
                        continue;
                    }
                    for path in &event.event.paths {
                        if let Some(relative) = relevant(&handler_root, path) {
                            changed.push(relative);
                        }
                    }
                }
                if rescan {
                    WatchEvent::Rescan("the watcher lost events".to_string())
                } else if changed.is_empty() {
                    return;
                } else {
                    changed.sort();
                    changed.dedup();
                    WatchEvent::Changed(changed)
                }
            }
            Err(errors) => WatchEvent::Rescan(
                errors
                    .iter()
                    .map(|error| error.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
        // The loop has ended: nothing is listening any more.
        let _ = sender.send(event);
    })?;
    debouncer.watch(&root, RecursiveMode::Recursive)?;
    Ok(SpecsWatcher {
        _debouncer: debouncer,
    })
}

/// `path` relative to `root` when a change there can change the specs: a
/// spec file, a folder, or something deleted (it may have been a folder);
/// never inside a hidden folder, never an editor leftover.
fn relevant(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(name) => {
                let name = name.to_str()?;
                if crate::spec::is_skipped(name) {
                    return None;
                }
                parts.push(name);
            }
            _ => return None,
        }
    }
    let Some(last) = parts.last() else {
        // The specs folder itself.
        return Some(String::new());
    };
    let spec_or_folder = crate::spec::is_spec_file(last) || path.is_dir() || !path.exists();
    spec_or_folder.then(|| parts.join("/"))
}

/// [`relevant`] of `name` under `root`.
#[cfg(test)]
fn relevant_name(root: &Path, name: &str) -> Option<String> {
    relevant(root, &root.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_to_specs_and_folders_are_relevant_and_others_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join("team")).expect("mkdir");
        std::fs::write(root.join("README.md"), "hello").expect("write");
        assert_eq!(
            relevant_name(root, "acme.yaml").as_deref(),
            Some("acme.yaml")
        );
        assert_eq!(relevant_name(root, "team").as_deref(), Some("team"));
        assert_eq!(
            relevant_name(root, "team/a.yml").as_deref(),
            Some("team/a.yml")
        );
        assert_eq!(relevant_name(root, "README.md"), None);
        assert_eq!(relevant_name(root, ".git/index"), None);
        assert_eq!(relevant_name(root, ".acme.yaml.swp"), None);
        assert_eq!(relevant_name(root, "acme.yaml~"), None);
        assert_eq!(relevant_name(root, "acme.yaml.tmp"), None);
    }
}
