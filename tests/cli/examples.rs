//! Every folder of `examples/` with `before/` and `after/` specs is run the
//! way its README says: apply `before/`, accept the invitations listed in
//! `accept.txt`, import `inventory.jsonl`, plan `after/` and compare the text
//! plan with `plan.txt` byte for byte; then apply `after/`, and the next plan
//! has no changes and the state checks out. The README must show `plan.txt`,
//! so the examples never rot.
//!
//! `DEED_BLESS_EXAMPLES=1 cargo test examples` rewrites the `plan.txt` files
//! (review the diff, and update the READMEs to match).

use std::path::{Path, PathBuf};

use super::util::{run_deed, Run, NO_CHANGES};

fn example_folders() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("examples/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.join("before").is_dir() && path.join("after").is_dir())
        .collect();
    folders.sort();
    folders
}

#[track_caller]
fn ok(run: Run) -> Run {
    run.ok()
}

fn run_example(folder: &Path) -> Result<(), String> {
    let name = folder.file_name().unwrap().to_string_lossy().to_string();
    let temp = tempfile::tempdir().expect("tempdir");
    let state = temp.path().join("state");
    let before = folder.join("before");
    let after = folder.join("after");
    let deed = |specs: &Path, args: &[&str]| run_deed(folder, specs, &state, args);
    ok(deed(&before, &["apply"]));
    if let Ok(emails) = std::fs::read_to_string(folder.join("accept.txt")) {
        for email in emails.split_whitespace() {
            ok(deed(&before, &["invitations", "accept", email]));
        }
    }
    if folder.join("inventory.jsonl").exists() {
        ok(deed(&before, &["inventory", "import", "inventory.jsonl"]));
    }
    let plan = ok(deed(&after, &["plan"])).stdout;
    let expected_path = folder.join("plan.txt");
    if std::env::var_os("DEED_BLESS_EXAMPLES").is_some() {
        std::fs::write(&expected_path, &plan).expect("write plan.txt");
    }
    let expected = std::fs::read_to_string(&expected_path)
        .map_err(|error| format!("{name}: cannot read plan.txt: {error}"))?;
    if plan != expected {
        return Err(format!(
            "{name}: the plan differs from plan.txt\n--- plan.txt\n{expected}--- deed plan\n{plan}"
        ));
    }
    let readme = std::fs::read_to_string(folder.join("README.md"))
        .map_err(|error| format!("{name}: cannot read README.md: {error}"))?;
    if !readme.contains(&expected) {
        return Err(format!("{name}: README.md does not show plan.txt"));
    }
    ok(deed(&after, &["apply"]));
    let again = ok(deed(&after, &["plan"])).stdout;
    if !again.ends_with(&format!("{NO_CHANGES}\n")) {
        return Err(format!(
            "{name}: a plan after apply still has changes:\n{again}"
        ));
    }
    ok(deed(&after, &["state", "check"]));
    Ok(())
}

#[test]
fn every_example_prints_the_plan_its_readme_shows_and_converges() {
    let folders = example_folders();
    assert!(folders.len() >= 8, "examples: {folders:?}");
    let failures: Vec<String> = folders
        .iter()
        .filter_map(|folder| run_example(folder).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn examples_hold_no_rust_files_cargo_would_build() {
    for folder in example_folders() {
        for entry in walk(&folder) {
            assert!(
                entry.extension().is_none_or(|ext| ext != "rs"),
                "{} is in an example folder",
                entry.display()
            );
        }
    }
}

fn walk(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
