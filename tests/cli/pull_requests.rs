//! Plans in pull requests (contract §2.7, §3, §3.1–3.4): saved plans,
//! `--detailed-exitcode`, markdown, the removal guard, `--actor`, planning
//! against a dump, the JSON Schema, and the workflow script of
//! `examples/github-actions/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::util::{deed_binary, Workspace, NOW};

const TEAM: &str = "\
account: acme
domains: [acme.com]
users:
  alice@acme.com: {role: owner}
  bob@acme.com: {role: admin}
  carol@acme.com: {}
  dave@acme.com: {}
groups:
  analysts:
    members: {bob@acme.com: admin, carol@acme.com: member, dave@acme.com: member}
licenses:
  lic-42: {product: omiq-pro, assignee: carol@acme.com, expires: 2027-03-31}
";

fn applied_team() -> Workspace {
    let workspace = Workspace::with_specs(&[("acme.yaml", TEAM)]);
    workspace.apply().ok();
    workspace
}

#[test]
fn detailed_exitcode_is_0_without_changes_2_with_changes_and_1_on_error() {
    let workspace = Workspace::with_specs(&[("acme.yaml", TEAM)]);
    let run = workspace.deed(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 2, "{run}");
    workspace.apply().ok();
    let run = workspace.deed(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout
            .contains("No changes. The state matches the specs."),
        "{run}"
    );
    // Without the flag, changes still exit 0.
    workspace.write(
        "acme.yaml",
        &TEAM.replace("carol@acme.com: {}", "carol@acme.com: {role: admin}"),
    );
    assert_eq!(workspace.deed(&["plan"]).code, 0);
    assert_eq!(workspace.deed(&["plan", "--detailed-exitcode"]).code, 2);
    workspace.write("broken.yaml", "account: [");
    assert_eq!(workspace.deed(&["plan", "--detailed-exitcode"]).code, 1);
}

#[test]
fn a_saved_plan_applies_exactly_its_changes_and_twice_is_a_no_op() {
    let workspace = applied_team();
    workspace.write(
        "acme.yaml",
        &TEAM.replace("assignee: carol@acme.com", "assignee: dave@acme.com"),
    );
    let plan_file = workspace.root().join("plan.json");
    let plan_path = plan_file.to_str().unwrap();
    workspace.deed(&["plan", "--out", plan_path]).ok();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    assert_eq!(saved["format_version"], 1);
    assert_eq!(saved["summary"]["transfer"], 1);
    // The specs change again after the plan was saved: apply FILE ignores them.
    workspace.write(
        "acme.yaml",
        &TEAM.replace("carol@acme.com: {}", "carol@acme.com: {role: viewer}"),
    );
    let run = workspace.deed(&["apply", plan_path]).ok();
    assert!(
        run.stdout.contains("Apply complete: 1 change applied."),
        "{run}"
    );
    assert_eq!(workspace.show("lic-42")["assignee"], "dave@acme.com");
    assert_eq!(workspace.show("carol@acme.com")["role"], "member");
    let dump = workspace.dump_bytes();
    let run = workspace.deed(&["apply", plan_path]).ok();
    assert!(
        run.stdout
            .contains("Apply complete: 0 changes applied (1 already applied)."),
        "{run}"
    );
    assert_eq!(
        workspace.dump_bytes(),
        dump,
        "a second apply of the same plan writes nothing"
    );
}

#[test]
fn a_drifted_object_is_a_conflict_listed_by_id_and_nothing_is_written() {
    let workspace = applied_team();
    let changed = TEAM
        .replace("assignee: carol@acme.com", "assignee: dave@acme.com")
        .replace(
            "bob@acme.com: {role: admin}",
            "bob@acme.com: {role: member}",
        );
    workspace.write("acme.yaml", &changed);
    let plan_file = workspace.root().join("plan.json");
    let plan_path = plan_file.to_str().unwrap();
    workspace.deed(&["plan", "--out", plan_path]).ok();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    let license_change = saved["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["object"] == "lic-42")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Someone else moves the license elsewhere first.
    workspace.write(
        "acme.yaml",
        &TEAM.replace("assignee: carol@acme.com", "assignee: bob@acme.com"),
    );
    workspace.apply().ok();
    let before = workspace.dump_bytes();
    let run = workspace.deed(&["apply", plan_path]).fails();
    assert!(run.stderr.contains("conflict"), "{run}");
    assert!(run.stderr.contains(&license_change), "{run}");
    assert!(run.stderr.contains("lic-42"), "{run}");
    assert_eq!(
        workspace.dump_bytes(),
        before,
        "nothing was written, not even bob's role"
    );
}

#[test]
fn an_unknown_plan_format_version_is_refused() {
    let workspace = applied_team();
    let plan_file = workspace.file(
        "plan.json",
        r#"{"format_version": 2, "summary": {}, "changes": [], "pending": []}"#,
    );
    let run = workspace
        .deed(&["apply", plan_file.to_str().unwrap()])
        .fails();
    assert!(
        run.stderr.contains("format_version 2 is not supported"),
        "{run}"
    );
}

#[test]
fn an_edited_saved_plan_is_refused() {
    let workspace = applied_team();
    workspace.write(
        "acme.yaml",
        &TEAM.replace("assignee: carol@acme.com", "assignee: dave@acme.com"),
    );
    let plan_file = workspace.root().join("plan.json");
    workspace
        .deed(&["plan", "--out", plan_file.to_str().unwrap()])
        .ok();
    let text = std::fs::read_to_string(&plan_file)
        .unwrap()
        .replace("dave@acme.com", "bob@acme.com");
    std::fs::write(&plan_file, text).unwrap();
    let run = workspace
        .deed(&["apply", plan_file.to_str().unwrap()])
        .fails();
    assert!(
        run.stderr.contains("was edited after the plan was made"),
        "{run}"
    );
    // An id deed never makes (ids are kept as the hash they show) gets
    // the same refusal, naming it, not a parse error.
    workspace
        .deed(&["plan", "--out", plan_file.to_str().unwrap()])
        .ok();
    let text = std::fs::read_to_string(&plan_file).unwrap();
    let id_start = text.find("\"c-").unwrap() + 1;
    let edited = format!(
        "{}c-NOT-A-HASH{}",
        &text[..id_start],
        &text[id_start + 18..]
    );
    std::fs::write(&plan_file, edited).unwrap();
    let run = workspace
        .deed(&["apply", plan_file.to_str().unwrap()])
        .fails();
    assert!(
        run.stderr
            .contains("change c-NOT-A-HASH was edited after the plan was made"),
        "{run}"
    );
    assert_eq!(run.code, 1, "{run}");
}

#[test]
fn the_removal_guard_refuses_plan_and_apply_naming_the_counts() {
    let workspace = applied_team();
    // Remove carol and dave: 2 of 4 users (50%), 2 of 3 memberships.
    let smaller = TEAM
        .replace("  carol@acme.com: {}\n  dave@acme.com: {}\n", "")
        .replace(", carol@acme.com: member, dave@acme.com: member", "")
        .replace("assignee: carol@acme.com", "assignee: bob@acme.com");
    workspace.write("acme.yaml", &smaller);
    let run = workspace.deed(&["plan"]).fails();
    assert!(run.stderr.contains("removal guard: the plan removes 2 of 4 users (50%) and 2 of 3 group memberships (66.7%), more than --max-removal 25%"), "{run}");
    let before = workspace.dump_bytes();
    let run = workspace.deed(&["apply"]).fails();
    assert!(run.stderr.contains("2 of 4 users"), "{run}");
    assert_eq!(workspace.dump_bytes(), before);
    // A higher limit lets it through, and so does --allow-removals.
    workspace.deed(&["plan", "--max-removal", "70"]).ok();
    let run = workspace.deed(&["plan", "--max-removal", "60"]).fails();
    assert!(run.stderr.contains("2 of 3 group memberships"), "{run}");
    assert!(
        !run.stderr.contains("of 4 users"),
        "users are under 60%: {run}"
    );
    workspace.deed(&["apply", "--allow-removals"]).ok();
    assert_eq!(
        workspace.deed(&["plan"]).ok().stdout.lines().last(),
        Some("No changes. The state matches the specs.")
    );
}

#[test]
fn markdown_starts_with_the_summary_then_warns_about_removals() {
    let workspace = applied_team();
    workspace.write("acme.yaml", &TEAM.replace(", dave@acme.com: member", ""));
    let run = workspace
        .deed(&["plan", "--format", "markdown", "--diff", "--allow-removals"])
        .ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "Plan: 0 to create, 0 to update, 0 to transfer, 1 to remove."
    );
    assert!(
        run.stdout
            .contains("> **Warning:** this plan removes 1 object."),
        "{run}"
    );
    assert!(run.stdout.contains("acme/analysts/dave@acme.com"), "{run}");
    assert!(run.stdout.contains("<details>"), "{run}");
    assert!(
        run.stdout.contains("-      dave@acme.com: member"),
        "the diff shows the removed member:\n{run}"
    );
}

#[test]
fn markdown_of_a_plan_refused_by_the_guard_carries_the_warning_and_exits_1() {
    let workspace = applied_team();
    let smaller = TEAM
        .replace("  carol@acme.com: {}\n  dave@acme.com: {}\n", "")
        .replace(", carol@acme.com: member, dave@acme.com: member", "")
        .replace("assignee: carol@acme.com", "assignee: bob@acme.com");
    workspace.write("acme.yaml", &smaller);
    let run = workspace.deed(&["plan", "--format", "markdown"]).fails();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "Plan: 0 to create, 0 to update, 1 to transfer, 4 to remove."
    );
    assert!(
        run.stdout
            .contains("> **Warning:** refused: removal guard: the plan removes 2 of 4 users"),
        "{run}"
    );
}

#[test]
fn markdown_of_a_huge_plan_stays_under_65000_characters_and_keeps_the_summary() {
    let mut users =
        String::from("account: big\ndomains: [big.com]\nusers:\n  owner@big.com: {role: owner}\n");
    for index in 0..3000 {
        users.push_str(&format!(
            "  user-{index:05}@big.com: {{name: User Number {index}}}\n"
        ));
    }
    let workspace = Workspace::with_specs(&[("big.yaml", &users)]);
    let run = workspace
        .deed(&["plan", "--format", "markdown", "--diff", "--expand"])
        .ok();
    assert!(run.stdout.len() < 65_000, "{} characters", run.stdout.len());
    assert!(
        run.stdout
            .starts_with("Plan: 3002 to create, 0 to update, 0 to transfer, 0 to remove.\n"),
        "{}",
        &run.stdout[..200]
    );
    assert!(run.stdout.contains("not shown"), "says what was cut");
}

#[test]
fn actor_without_a_role_is_refused_naming_actor_change_and_role() {
    let workspace = applied_team();
    workspace.write(
        "acme.yaml",
        &TEAM.replace("carol@acme.com: {}", "carol@acme.com: {role: admin}"),
    );
    let run = workspace
        .deed(&["plan", "--actor", "dave@acme.com"])
        .fails();
    assert!(
        run.stderr
            .contains("dave@acme.com may not update user carol@acme.com")
            && run
                .stderr
                .contains("needs an owner or admin of account acme"),
        "{run}"
    );
    let before = workspace.dump_bytes();
    workspace
        .deed(&["apply", "--actor", "dave@acme.com"])
        .fails();
    assert_eq!(workspace.dump_bytes(), before);
    workspace.deed(&["plan", "--actor", "bob@acme.com"]).ok();
    workspace.deed(&["apply", "--actor", "bob@acme.com"]).ok();
    let history = workspace
        .deed(&["history", "--format", "json", "--limit", "1"])
        .ok();
    let entry: serde_json::Value =
        serde_json::from_str(history.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(entry["actor"], "bob@acme.com");
}

#[test]
fn only_the_current_owner_may_transfer_an_account() {
    let workspace = applied_team();
    workspace
        .deed(&["invitations", "accept", "bob@acme.com"])
        .ok();
    let moved = TEAM
        .replace(
            "alice@acme.com: {role: owner}",
            "alice@acme.com: {role: admin}",
        )
        .replace("bob@acme.com: {role: admin}", "bob@acme.com: {role: owner}");
    workspace.write("acme.yaml", &moved);
    let run = workspace.deed(&["plan", "--actor", "bob@acme.com"]).fails();
    assert!(
        run.stderr.contains(
            "an ownership transfer of account acme needs its current owner (alice@acme.com)"
        ),
        "{run}"
    );
    workspace.deed(&["plan", "--actor", "alice@acme.com"]).ok();
}

#[test]
fn plan_reads_a_dump_read_only_and_apply_refuses_it() {
    let workspace = applied_team();
    let dump = workspace.root().join("state.jsonl");
    workspace
        .deed(&["state", "dump", dump.to_str().unwrap()])
        .ok();
    let dump_text = std::fs::read(&dump).unwrap();
    workspace.write(
        "acme.yaml",
        &TEAM.replace("carol@acme.com: {}", "carol@acme.com: {role: admin}"),
    );
    let run = workspace.deed_on(&dump, &["plan"]).ok();
    assert!(run.stdout.contains("role: member -> admin"), "{run}");
    workspace.deed_on(&dump, &["validate"]).ok();
    assert_eq!(
        workspace
            .deed_on(
                &dump,
                &["state", "show", "carol@acme.com", "--format", "json"]
            )
            .ok()
            .json()["role"],
        "member"
    );
    let run = workspace.deed_on(&dump, &["apply"]).fails();
    assert!(run.stderr.contains("read-only"), "{run}");
    assert_eq!(std::fs::read(&dump).unwrap(), dump_text);
}

#[test]
fn history_records_the_git_revision_of_the_specs_or_the_given_one() {
    let workspace = Workspace::with_specs(&[("acme.yaml", TEAM)]);
    let specs = workspace.specs();
    git(&specs, &["init", "-q", "-b", "main"]);
    git(&specs, &["add", "."]);
    git(&specs, &["commit", "-q", "-m", "acme"]);
    let head = git(&specs, &["rev-parse", "HEAD"]);
    workspace.apply().ok();
    let entry = last_history_entry(&workspace);
    assert_eq!(entry["revision"], head.trim());
    workspace.write(
        "acme.yaml",
        &TEAM.replace("carol@acme.com: {}", "carol@acme.com: {role: admin}"),
    );
    workspace.deed(&["apply", "--revision", "v1.2.3"]).ok();
    assert_eq!(last_history_entry(&workspace)["revision"], "v1.2.3");
}

fn last_history_entry(workspace: &Workspace) -> serde_json::Value {
    let run = workspace
        .deed(&["history", "--format", "json", "--limit", "1"])
        .ok();
    serde_json::from_str(run.stdout.lines().next().expect("one history entry")).unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document under `dir`, with its file.
fn yaml_documents(dir: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    let mut documents = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                for document in serde_yaml::Deserializer::from_str(&text) {
                    let value: Option<serde_json::Value> =
                        serde::Deserialize::deserialize(document)
                            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    if let Some(value) = value {
                        documents.push((path.clone(), value));
                    }
                }
            }
        }
    }
    documents
}

#[test]
fn the_bundled_specs_and_every_example_validate_against_the_schema() {
    let workspace = Workspace::new();
    let schema: serde_json::Value = workspace.deed(&["schema"]).ok().json();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let validator = jsonschema::draft7::new(&schema).expect("a valid draft-07 schema");
    let mut documents = yaml_documents(&repository_root().join("specs"));
    let spec_documents = documents.len();
    assert!(spec_documents >= 4, "the bundled specs have documents");
    let examples = repository_root().join("examples");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        for side in ["before", "after"] {
            if path.join(side).is_dir() {
                documents.extend(yaml_documents(&path.join(side)));
            }
        }
    }
    for (path, document) in &documents {
        let errors: Vec<String> = validator
            .iter_errors(document)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }
    // The schema can fail: an unknown field and a bad role are refused.
    let bad: serde_json::Value = serde_json::json!({"account": "acme", "colour": "red", "users": {"a@acme.com": {"role": "boss"}}});
    assert!(validator.iter_errors(&bad).count() >= 2);
}

#[test]
fn the_pull_request_workflow_plans_against_a_dump_then_applies_after_merge() {
    let workspace = Workspace::new();
    let repository = workspace.root().join("repo");
    std::fs::create_dir_all(repository.join("specs")).unwrap();
    std::fs::write(repository.join("specs/acme.yaml"), TEAM).unwrap();
    git(&repository, &["init", "-q", "-b", "main"]);
    git(&repository, &["add", "."]);
    git(&repository, &["commit", "-q", "-m", "acme"]);
    let script = repository_root().join("examples/github-actions/deed-ci.sh");
    let state = workspace.root().join("live-state");
    let ci = |args: &[&str], extra: &[(&str, &str)]| {
        let mut command = Command::new("bash");
        command
            .arg(&script)
            .args(args)
            .current_dir(&repository)
            .env("DEED", deed_binary())
            .env("DEED_SPECS", repository.join("specs"))
            .env("DEED_STATE", &state)
            .env("DEED_NOW", NOW)
            .env("NO_COLOR", "1");
        for (key, value) in extra {
            command.env(key, value);
        }
        command.output().expect("run deed-ci.sh")
    };
    // The first merge applies the specs.
    let output = ci(&["apply"], &[("DEED_ACTOR", "alice@acme.com")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A branch changes a license; the job plans it against a dump of the live state.
    git(
        &repository,
        &["checkout", "-q", "-b", "give-lic-42-to-dave"],
    );
    std::fs::write(
        repository.join("specs/acme.yaml"),
        TEAM.replace("assignee: carol@acme.com", "assignee: dave@acme.com"),
    )
    .unwrap();
    git(&repository, &["commit", "-q", "-am", "Give lic-42 to dave"]);
    let dump = workspace.root().join("state.jsonl");
    let run = workspace.deed_on(&state, &["state", "dump", dump.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run}");
    let comment = workspace.root().join("plan.md");
    let output = ci(
        &["plan", dump.to_str().unwrap(), comment.to_str().unwrap()],
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let markdown = std::fs::read_to_string(&comment).unwrap();
    assert!(
        markdown.starts_with("Plan: 0 to create, 0 to update, 1 to transfer, 0 to remove.\n"),
        "{markdown}"
    );
    assert!(markdown.contains("lic-42"), "{markdown}");
    // Merge, and the apply job applies it, recording the merge commit and the actor.
    git(&repository, &["checkout", "-q", "main"]);
    git(
        &repository,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "Merge give-lic-42-to-dave",
            "give-lic-42-to-dave",
        ],
    );
    let merge_commit = git(&repository, &["rev-parse", "HEAD"]);
    let output = ci(&["apply"], &[("DEED_ACTOR", "alice@acme.com")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = workspace.deed_on(&state, &["history", "--format", "json", "--limit", "1"]);
    let entry: serde_json::Value =
        serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(entry["change"]["object"], "lic-42");
    assert_eq!(entry["actor"], "alice@acme.com");
    assert_eq!(entry["revision"], merge_commit.trim());
    // A branch that breaks the specs fails the check, with the reason in the comment.
    git(&repository, &["checkout", "-q", "-b", "broken"]);
    std::fs::write(
        repository.join("specs/acme.yaml"),
        TEAM.replace("role: owner", "role: boss"),
    )
    .unwrap();
    let output = ci(
        &["plan", dump.to_str().unwrap(), comment.to_str().unwrap()],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let markdown = std::fs::read_to_string(&comment).unwrap();
    assert!(
        markdown.contains("deed plan failed") && markdown.contains("acme.yaml:4:"),
        "{markdown}"
    );
}
