//! `deed daemon` (contract §4): the real binary as a child process on a free
//! port, over a temporary workspace, driven by editing its spec files and
//! read through its HTTP API and `deed state show`. Every wait is bounded.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::util::{actions, wait_until, Daemon, Run, Workspace, DAEMON_WAIT};

const ACME: &str = "\
account: acme
domains: [acme.com]
users:
  alice@acme.com: {role: owner}
  carol@acme.com: {}
";

const ACME_WITH_BOB: &str = "\
account: acme
domains: [acme.com]
users:
  alice@acme.com: {role: owner}
  carol@acme.com: {}
  bob@acme.com: {role: admin}
";

/// This file's waits on the shared [`Daemon`] harness.
impl Daemon {
    /// How many reconciles ended with `result`, as `/status` counts them.
    #[track_caller]
    fn count(&self, result: &str) -> u64 {
        self.status()["reconciles"][result]
            .as_u64()
            .expect("a count")
    }

    /// Waits (bounded) until `check` gives something, failing with the
    /// daemon's log otherwise.
    #[track_caller]
    fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&Daemon) -> Option<T>) -> T {
        wait_until(what, &[self], || check(self))
    }

    /// Waits until `/status` counts `at_least` reconciles with `result`, and
    /// returns the status.
    #[track_caller]
    fn wait_for_result(&self, result: &str, at_least: u64) -> Value {
        self.wait_for(&format!("{at_least} reconcile(s) {result}"), |daemon| {
            let status = daemon.status();
            (status["reconciles"][result].as_u64() >= Some(at_least)).then_some(status)
        })
    }
}

/// Runs `deed ARGS` on the workspace while the daemon may hold the state
/// for a moment: retries (bounded) while the state is in use.
#[track_caller]
fn deed_beside_daemon(workspace: &Workspace, args: &[&str]) -> Run {
    let started = Instant::now();
    loop {
        let run = workspace.deed(args);
        if !run.stderr.contains("in use by another deed process") || started.elapsed() > DAEMON_WAIT
        {
            return run;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `text` to `path` under `specs/` the way editors save: a hidden
/// temporary file, then a rename over the old one.
fn save_by_rename(specs: &Path, path: &str, text: &str) {
    let temporary = specs.join(format!(".{path}.tmp"));
    std::fs::write(&temporary, text).expect("write temporary");
    std::fs::rename(&temporary, specs.join(path)).expect("rename");
}

#[test]
fn daemon_applies_at_start_then_applies_an_edited_file() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    let daemon = Daemon::start(&workspace, &["--interval", "1m"], None);
    let status = daemon.wait_for_result("applied", 1);
    assert_eq!(status["role"], "leader");
    assert_eq!(status["result"], "applied");
    assert_eq!(status["last_error"], Value::Null);

    workspace.write("acme.yaml", ACME_WITH_BOB);
    let status = daemon.wait_for_result("applied", 2);
    assert_eq!(status["result"], "applied", "{status:#}");
    assert_eq!(status["applied"], 1, "{status:#}");
    assert_eq!(status["planned"], "part", "{status:#}");
    let bob = deed_beside_daemon(
        &workspace,
        &["state", "show", "bob@acme.com", "--format", "json"],
    )
    .ok()
    .json();
    assert_eq!(bob["role"], "admin");
    assert_eq!(bob["status"], "invited");

    // Commands that need the state work while the daemon runs.
    let plan = deed_beside_daemon(&workspace, &["plan"]).ok();
    assert!(plan.stdout.contains(super::util::NO_CHANGES), "{plan}");

    let (code, metrics) = daemon.get("/metrics", None);
    assert_eq!(code, 200);
    for line in [
        "deed_reconcile_total{result=\"applied\"} 2",
        "deed_reconcile_total{result=\"unchanged\"} 0",
        "deed_reconcile_total{result=\"invalid\"} 0",
        "deed_reconcile_total{result=\"refused\"} 0",
        "deed_reconcile_total{result=\"error\"} 0",
        "deed_reconcile_duration_seconds_count 2",
        "deed_pending_changes 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    assert!(metrics.contains("deed_last_success_timestamp_seconds "));
}

#[test]
fn daemon_replans_only_the_accounts_an_edit_concerns() {
    const GLOBEX: &str = "\
account: globex
domains: [globex.com]
users:
  hank@globex.com: {role: owner}
";
    const INITECH: &str =
        "account: initech\ndomains: [initech.com]\nusers:\n  bill@initech.com: {role: owner}\n";
    let workspace = Workspace::with_specs(&[
        ("acme.yaml", ACME),
        ("globex.yaml", GLOBEX),
        ("initech.yaml", INITECH),
    ]);
    let daemon = Daemon::start(&workspace, &["--interval", "1m"], None);
    let status = daemon.wait_for_result("applied", 1);
    assert_eq!(status["planned"], "full", "{status:#}");

    // The first edit re-plans what the start's apply touched (all three
    // accounts) once; from then on, one account's file re-plans only that
    // account (the daemon's own commits are followed in memory).
    workspace.write(
        "initech.yaml",
        &format!("{INITECH}  peter@initech.com: {{}}\n"),
    );
    let status = daemon.wait_for_result("applied", 2);
    assert_eq!(status["planned"], "part", "{status:#}");
    assert_eq!(status["applied"], 1, "{status:#}");
    workspace.write(
        "initech.yaml",
        &format!("{INITECH}  peter@initech.com: {{}}\n  joan@initech.com: {{}}\n"),
    );
    let status = daemon.wait_for_result("applied", 3);
    assert_eq!(status["planned"], "part", "{status:#}");
    assert_eq!(status["planned_accounts"], 1, "{status:#}");
    assert_eq!(status["applied"], 1, "{status:#}");

    // A connection pulls the other account in (initech, which the last
    // apply touched, is planned again once; the two files may be read by
    // one reconcile or two).
    workspace.write("globex.yaml", &format!("{GLOBEX}connections: [acme]\n"));
    workspace.write("acme.yaml", &format!("{ACME}connections: [globex]\n"));
    let status = daemon.wait_for_result("applied", 4);
    assert_eq!(status["planned"], "part", "{status:#}");
    let accounts = status["planned_accounts"].as_u64().unwrap_or(0);
    assert!((2..=3).contains(&accounts), "{status:#}");

    // Another process writes the state: the next plan is full.
    let inventory = workspace.root().join("inventory.jsonl");
    std::fs::write(
        &inventory,
        "{\"id\": \"dataset/d1\", \"account\": \"initech\", \"owner\": \"user:bill@initech.com\"}\n",
    )
    .expect("write inventory");
    let inventory = inventory.to_string_lossy().into_owned();
    deed_beside_daemon(&workspace, &["inventory", "import", &inventory]).ok();
    workspace.write(
        "globex.yaml",
        &format!("{GLOBEX}  mindy@globex.com: {{}}\n"),
    );
    let status = daemon.wait_for_result("applied", 5);
    assert_eq!(status["planned"], "full", "{status:#}");

    // What was applied, part by part, is what a full plan asks for.
    let plan = deed_beside_daemon(&workspace, &["plan"]).ok();
    assert!(plan.stdout.contains(super::util::NO_CHANGES), "{plan}");
    deed_beside_daemon(&workspace, &["state", "check"]).ok();
}

#[test]
fn daemon_applies_an_editor_save_by_atomic_rename_once() {
    let workspace = Workspace::with_specs(&[("team/acme.yaml", ACME)]);
    let daemon = Daemon::start(&workspace, &["--interval", "1m"], None);
    daemon.wait_for_result("applied", 1);

    save_by_rename(&workspace.specs().join("team"), "acme.yaml", ACME_WITH_BOB);
    daemon.wait_for_result("applied", 2);
    deed_beside_daemon(&workspace, &["state", "show", "bob@acme.com"]).ok();
    // The temporary file and the rename made one reconcile, not one each.
    std::thread::sleep(Duration::from_millis(700));
    let status = daemon.status();
    let total: u64 = ["applied", "unchanged", "invalid", "refused", "error"]
        .iter()
        .map(|result| status["reconciles"][result].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 2, "{status:#}");
}

#[test]
fn daemon_never_applies_invalid_specs_and_applies_them_once_fixed() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    let daemon = Daemon::start(&workspace, &["--interval", "1m"], None);
    daemon.wait_for_result("applied", 1);

    // A half-written file: bob is there, the file is truncated mid-line.
    let truncated = &ACME_WITH_BOB[..ACME_WITH_BOB.len() - 9];
    workspace.write("acme.yaml", truncated);
    let status = daemon.wait_for_result("invalid", 1);
    assert_eq!(status["result"], "invalid");
    let errors = status["errors"].as_array().expect("errors");
    assert!(!errors.is_empty(), "{status:#}");
    assert!(
        errors
            .iter()
            .all(|error| error.as_str().is_some_and(|e| e.starts_with("acme.yaml:"))),
        "errors name the file: {status:#}"
    );
    assert!(status["last_error"].is_string());
    deed_beside_daemon(&workspace, &["state", "show", "bob@acme.com"]).fails();
    deed_beside_daemon(&workspace, &["state", "show", "alice@acme.com"]).ok();

    // A file that was never valid YAML is refused the same way.
    workspace.write("globex.yaml", "account: globex\ndomains: [globex.com\n");
    daemon.wait_for_result("invalid", 2);

    workspace.remove("globex.yaml");
    workspace.write("acme.yaml", ACME_WITH_BOB);
    let status = daemon.wait_for_result("applied", 2);
    assert_eq!(status["errors"], serde_json::json!([]));
    assert_eq!(status["last_error"], Value::Null);
    deed_beside_daemon(&workspace, &["state", "show", "bob@acme.com"]).ok();
}

#[test]
fn daemon_obeys_the_removal_guard_and_counts_the_refusal() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME_WITH_BOB)]);
    let daemon = Daemon::start(&workspace, &["--interval", "1m"], None);
    daemon.wait_for_result("applied", 1);

    // Removing bob and carol is 2 of 3 users: over the 25% guard.
    workspace.write(
        "acme.yaml",
        "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n",
    );
    let status = daemon.wait_for_result("refused", 1);
    assert_eq!(status["result"], "refused");
    assert!(status["last_error"].is_string(), "{status:#}");
    assert!(status["pending_changes"].as_u64() >= Some(2), "{status:#}");
    deed_beside_daemon(&workspace, &["state", "show", "bob@acme.com"]).ok();
    deed_beside_daemon(&workspace, &["state", "show", "carol@acme.com"]).ok();
    let (_, metrics) = daemon.get("/metrics", None);
    assert!(
        metrics.contains("deed_reconcile_total{result=\"refused\"} 1"),
        "{metrics}"
    );

    // The same specs against the same state are not retried in a loop: the
    // backoff (1 s, doubling) allows at most one more try in 1.5 s.
    let refused = daemon.count("refused");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        daemon.count("refused") <= refused + 1,
        "{:#}",
        daemon.status()
    );
}

#[test]
fn daemon_reissues_an_expired_invitation_on_the_interval() {
    let workspace = Workspace::with_specs(&[(
        "acme.yaml",
        "account: acme\ndomains: [acme.com]\ninvite_ttl: 1s\nusers:\n  alice@acme.com: {role: owner}\n  bob@acme.com: {}\n",
    )]);
    let daemon = Daemon::start(&workspace, &["--interval", "1s"], None);
    daemon.wait_for_result("applied", 1);
    let first = deed_beside_daemon(
        &workspace,
        &["state", "show", "bob@acme.com", "--format", "json"],
    )
    .ok()
    .json()["invitation_expires"]
        .clone();
    assert!(first.is_string(), "{first}");
    // No file changes: only the interval runs, against a clock that starts
    // at DEED_NOW and advances.
    let reissued = daemon.wait_for("the invitation to be re-issued", |_| {
        let bob = deed_beside_daemon(
            &workspace,
            &["state", "show", "bob@acme.com", "--format", "json"],
        )
        .ok()
        .json();
        (bob["invitation_expires"] != first).then_some(bob)
    });
    assert_eq!(reissued["status"], "invited");
    let status = daemon.status();
    assert_eq!(status["trigger"], "interval", "{status:#}");
}

#[test]
fn daemon_plans_but_never_applies_with_dry_run() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    let daemon = Daemon::start(&workspace, &["--dry-run"], Some("s3cret"));
    let status = daemon.wait_for_result("unchanged", 1);
    assert_eq!(status["dry_run"], true);
    let (code, body) = daemon.get("/plan", Some("s3cret"));
    assert_eq!(code, 200, "{body}");
    let plan: Value = serde_json::from_str(&body).expect("/plan is JSON");
    assert_eq!(plan["format_version"], 1);
    assert_eq!(plan["summary"]["create"], 3, "{plan:#}");
    // `/plan` is what `deed plan --format json` prints (the daemon's clock
    // has moved on from DEED_NOW, so expiry times may differ).
    let printed = deed_beside_daemon(&workspace, &["plan", "--format", "json"])
        .ok()
        .json();
    assert_eq!(actions(&plan), actions(&printed));
    assert_eq!(plan["summary"], printed["summary"]);
    assert!(body.ends_with("}\n"));
    let (_, metrics) = daemon.get("/metrics", None);
    assert!(metrics.contains("deed_pending_changes 3"), "{metrics}");
    deed_beside_daemon(&workspace, &["state", "show", "acme"]).fails();
}

#[test]
fn plan_and_state_answer_403_without_the_api_token() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    let without = Daemon::start(&workspace, &["--interval", "1m"], None);
    without.wait_for_result("applied", 1);
    for path in ["/plan", "/state"] {
        assert_eq!(without.get(path, None).0, 403, "{path}");
        assert_eq!(without.get(path, Some("anything")).0, 403, "{path}");
    }
    assert_eq!(without.get("/status", None).0, 200);
    let (code, _) = without.terminate();
    assert_eq!(code, 0);

    let with = Daemon::start(&workspace, &["--interval", "1m"], Some("s3cret"));
    with.wait_for_result("unchanged", 1);
    for path in ["/plan", "/state"] {
        assert_eq!(with.get(path, None).0, 403, "{path}");
        assert_eq!(with.get(path, Some("wrong")).0, 403, "{path}");
    }
    let (code, plan) = with.get("/plan", Some("s3cret"));
    assert_eq!(code, 200, "{plan}");
    assert_eq!(
        serde_json::from_str::<Value>(&plan).expect("JSON")["summary"]["create"],
        0
    );
    let (code, dump) = with.get("/state", Some("s3cret"));
    assert_eq!(code, 200, "{dump}");
    let dumped = workspace.file("from-http.jsonl", &dump);
    // The dump restores into a state that holds what the daemon applied.
    let restored = workspace.root().join("restored");
    workspace
        .deed_on(
            &restored,
            &["state", "restore", dumped.to_str().expect("utf-8")],
        )
        .ok();
    assert_eq!(
        workspace
            .deed_on(&restored, &["state", "show", "acme", "--format", "json"])
            .ok()
            .json()["owner"],
        "alice@acme.com"
    );
}

#[test]
fn sigterm_stops_the_daemon_with_exit_0_and_a_consistent_state() {
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    let daemon = Daemon::start(
        &workspace,
        &["--interval", "1s", "--log-format", "json"],
        None,
    );
    daemon.wait_for_result("applied", 1);
    workspace.write("acme.yaml", ACME_WITH_BOB);
    daemon.wait_for_result("applied", 2);
    let (code, log) = daemon.terminate();
    assert_eq!(code, 0, "{log}");
    let lines: Vec<&str> = log
        .lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(entry["level"].is_string(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|line| line.contains("\"result\":\"applied\"")),
        "{log}"
    );
    workspace.deed(&["state", "check"]).ok();
    workspace.deed(&["state", "show", "bob@acme.com"]).ok();
}
