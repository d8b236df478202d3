//! The state in PostgreSQL (contract §5, issue 7): the core flows of the
//! other modules re-run with the state in a fresh database, `state migrate`
//! between the backends, and concurrent applies from two processes.
//!
//! They need a server: `DEED_TEST_DATABASE_URL`, or one at
//! `postgres://root@127.0.0.1:5432/test`. Without one each test prints one
//! line saying so and passes.

use std::process::{Command, Stdio};

use deed::store::postgres::testing::{self, TestDatabase};

use super::util::{deed_binary, Workspace, BACKEND_VARIABLE, NOW, NO_CHANGES};

/// The modules of the core suite, re-run whole with the state in
/// PostgreSQL: everything a user does through the command line must behave
/// the same on both backends.
const CORE_MODULES: &[&str] = &[
    "cli::validation::",
    "cli::plan::",
    "cli::apply::",
    "cli::state::",
    "cli::inventory::",
    "cli::commands::",
    "cli::pull_requests::",
    "cli::flows::",
    "cli::examples::",
    "cli::properties::",
];

/// Tests of those modules that are about sled itself (they write sled's
/// keys directly), with the reason.
const SLED_ONLY: &[&str] = &[
    // Writes sled's schema-version key; PostgreSQL's own newer-schema refusal
    // is tested in src/store/postgres/tests.rs.
    "cli::apply::a_state_of_a_newer_schema_is_refused_naming_both_versions",
    // Rewrites sled's history records as an older deed wrote them; the
    // PostgreSQL history is one row per entry and did not change.
    "cli::apply::a_state_of_an_older_layout_keeps_its_history_and_continues_it",
    // Damages a packed sled history record; PostgreSQL keeps one row per
    // entry, not packed.
    "cli::apply::a_damaged_history_record_is_reported_as_corrupt_by_what_reads_it",
    // Damages a packed sled asset record; PostgreSQL keeps assets as JSON.
    "cli::apply::a_damaged_asset_page_is_reported_as_corrupt_by_what_loads_it",
];

/// Fewer tests than this means a filter matched nothing (a module renamed).
const AT_LEAST: usize = 120;

#[test]
fn the_core_flows_behave_the_same_with_the_state_in_postgresql() {
    let Some(server) = testing::server() else {
        return;
    };
    if std::env::var(BACKEND_VARIABLE).as_deref() == Ok("postgres") {
        return; // Already the PostgreSQL run: do not recurse.
    }
    // This test binary again, running those modules.
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command.args(CORE_MODULES);
    for test in SLED_ONLY {
        command.args(["--skip", test]);
    }
    let output = command
        .args(["--test-threads=4"])
        .env(BACKEND_VARIABLE, "postgres")
        .env(testing::URL_VARIABLE, server)
        .output()
        .expect("run the core flows");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the core flows failed on PostgreSQL:\n{stdout}\n{stderr}"
    );
    let passed: usize = stdout
        .lines()
        .find_map(|line| line.strip_prefix("test result: ok. "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= AT_LEAST,
        "expected at least {AT_LEAST} core tests to run on PostgreSQL, ran {passed}:\n{stdout}"
    );
}

const SPECS: &str = "\
account: acme
domains: [acme.com]
users:
  alice@acme.com: {role: owner, name: Alice}
  bob@acme.com: {role: admin}
  carol@acme.com: {}
groups:
  analysts:
    members: {bob@acme.com: admin, carol@acme.com: member}
organizations:
  research:
    products:
      prod-7: {name: kDrive 2TB, access: [carol@acme.com]}
licenses:
  lic-42: {product: prod-7, assignee: carol@acme.com, expires: 2027-03-31}
assets:
  dataset/ds-1: {owner: \"group:analysts\"}
";

const INVENTORY: &str = r#"{"id": "file/f-9", "account": "acme", "owner": "user:bob@acme.com"}
{"type": "invoice", "id": "inv-2026-11", "product": "prod-7", "organization": "research"}
{"type": "credits", "account": "acme", "balance": 5000}
"#;

#[test]
fn state_migrate_copies_sled_to_postgresql_and_back_with_equal_dumps() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let workspace = Workspace::with_specs(&[("acme.yaml", SPECS)]);
    let sled = workspace.root().join("sled");
    workspace.deed_on(&sled, &["apply"]).ok();
    let inventory = workspace.file("inventory.jsonl", INVENTORY);
    workspace
        .deed_on(&sled, &["inventory", "import", inventory.to_str().unwrap()])
        .ok();
    workspace.deed_on(&sled, &["apply"]).ok();
    workspace
        .deed_on(&sled, &["invitations", "accept", "bob@acme.com"])
        .ok();
    let original = workspace.dump_bytes_of(&sled);

    let url = std::path::PathBuf::from(&database.url);
    let run = workspace
        .deed_on(&sled, &["state", "migrate", "--to", &database.url])
        .ok();
    assert!(run.stderr.contains("dumps are identical"), "{run}");
    assert_eq!(workspace.dump_bytes_of(&url), original);
    workspace.deed_on(&url, &["state", "check"]).ok();
    assert_eq!(
        workspace.deed_on(&url, &["plan"]).ok().stdout.trim(),
        NO_CHANGES
    );
    assert_eq!(
        workspace
            .deed_on(&url, &["history", "--format", "json"])
            .ok()
            .stdout,
        workspace
            .deed_on(&sled, &["history", "--format", "json"])
            .ok()
            .stdout
    );

    // Migrating again into the same database is refused: it is not empty.
    let run = workspace
        .deed_on(&sled, &["state", "migrate", "--to", &database.url])
        .fails();
    assert!(run.stderr.contains("not empty"), "{run}");

    let back = workspace.root().join("back");
    workspace
        .deed_on(&url, &["state", "migrate", "--to", back.to_str().unwrap()])
        .ok();
    assert_eq!(workspace.dump_bytes_of(&back), original);
    workspace.deed_on(&back, &["state", "check"]).ok();
}

/// Specs with many users, so that an apply takes long enough to overlap.
fn many_users(count: usize, role: &str) -> String {
    let mut yaml =
        String::from("account: big\ndomains: [big.com]\nusers:\n  owner@big.com: {role: owner}\n");
    for n in 0..count {
        yaml.push_str(&format!("  user-{n:05}@big.com: {{role: {role}}}\n"));
    }
    yaml
}

fn spawn_apply(workspace: &Workspace, state: &str, extra: &[&str]) -> std::process::Child {
    Command::new(deed_binary())
        .current_dir(workspace.root())
        .env("DEED_NOW", NOW)
        .env("NO_COLOR", "1")
        .env_remove("DEED_SPECS")
        .env_remove("DEED_STATE")
        .arg("--specs")
        .arg(workspace.specs())
        .arg("--state")
        .arg(state)
        .arg("apply")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deed apply")
}

fn history_len(workspace: &Workspace, state: &std::path::Path) -> usize {
    workspace
        .deed_on(state, &["history", "--format", "json"])
        .ok()
        .stdout
        .lines()
        .count()
}

#[test]
fn two_concurrent_applies_on_one_database_never_both_commit() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let workspace = Workspace::with_specs(&[("big.yaml", &many_users(1500, "member"))]);
    let url = std::path::PathBuf::from(&database.url);
    let changes = 1502; // the account, its owner and 1500 users

    // Without --wait: one commits, the other is refused as in use, or
    // comes second and finds nothing left to do.
    let children = [
        spawn_apply(&workspace, &database.url, &[]),
        spawn_apply(&workspace, &database.url, &[]),
    ];
    let outputs: Vec<_> = children
        .into_iter()
        .map(|child| child.wait_with_output().expect("wait"))
        .collect();
    let mut committed = 0;
    for output in &outputs {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            if stdout.contains(&format!("Apply complete: {changes} changes applied")) {
                committed += 1;
            } else {
                assert!(
                    stdout.contains("Apply complete: 0 changes applied"),
                    "{stdout}{stderr}"
                );
            }
        } else {
            assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
            assert!(
                stderr.contains("in use by another deed process"),
                "{stderr}"
            );
        }
    }
    assert_eq!(committed, 1, "exactly one apply commits: {outputs:?}");
    assert_eq!(history_len(&workspace, &url), changes);
    workspace.deed_on(&url, &["state", "check"]).ok();

    // With --wait: both succeed, one after the other; the changes are
    // written once.
    workspace.write("big.yaml", &many_users(1500, "viewer"));
    let children = [
        spawn_apply(&workspace, &database.url, &["--wait"]),
        spawn_apply(&workspace, &database.url, &["--wait"]),
    ];
    let mut applied = Vec::new();
    for child in children {
        let output = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        applied.push(stdout.lines().last().unwrap_or_default().to_string());
    }
    applied.sort();
    assert_eq!(
        applied,
        vec![
            "Apply complete: 0 changes applied.".to_string(),
            "Apply complete: 1500 changes applied.".to_string()
        ]
    );
    assert_eq!(history_len(&workspace, &url), changes + 1500);
    workspace.deed_on(&url, &["state", "check"]).ok();
    assert_eq!(
        workspace.deed_on(&url, &["plan"]).ok().stdout.trim(),
        NO_CHANGES
    );
}

#[test]
fn plans_read_the_live_database_while_a_writer_holds_it() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let workspace = Workspace::with_specs(&[("acme.yaml", SPECS)]);
    let url = std::path::PathBuf::from(&database.url);
    workspace.deed_on(&url, &["apply"]).ok();
    // A writer holds the state (as a daemon would).
    let holder = deed::store::open(&database.url, deed::store::Access::Write { wait: false })
        .expect("hold the state");
    let run = workspace.deed_on(&url, &["apply"]).fails();
    assert!(run.stderr.contains("in use"), "{run}");
    assert_eq!(
        workspace.deed_on(&url, &["plan"]).ok().stdout.trim(),
        NO_CHANGES
    );
    workspace.deed_on(&url, &["state", "check"]).ok();
    drop(holder);
}

/// A server that accepts the connection and then says nothing (a hung
/// server, a proxy whose backend is gone) makes `deed` fail after the
/// connect timeout, naming it, instead of hanging: the driver's own
/// timeout covers the TCP connect only. Needs no database.
#[test]
fn a_server_that_accepts_and_never_answers_fails_after_the_connect_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let address = silent.local_addr().expect("the local address");
    let url = format!("postgres://deed@{address}/deed?connect_timeout=1");
    let workspace = Workspace::with_specs(&[(
        "acme.yaml",
        "account: acme\ndomains: [acme.com]\nusers:\n  ann@acme.com: {role: owner}\n",
    )]);
    let specs = workspace.specs().display().to_string();
    let started = std::time::Instant::now();
    let output = super::util::deed_command(workspace.root())
        .args(["--specs", &specs, "--state", &url, "plan"])
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .expect("run deed");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not complete the connection within 1 s"),
        "{stderr}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(15),
        "took {elapsed:?}: {stderr}"
    );
    drop(silent);
}
