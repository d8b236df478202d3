//! Several `deed daemon`s on one PostgreSQL state (contract §5, issue 7):
//! exactly one leads and applies, the others stand by, serve `/status`
//! (naming the leader) and `/plan`, and one of them takes over within 10 s
//! when the leader is killed; no change is ever applied twice.
//!
//! They need a server: `DEED_TEST_DATABASE_URL`, or one at
//! `postgres://root@127.0.0.1:5432/test`. Without one each test prints one
//! line saying so and passes. Every wait is bounded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deed::store::postgres::testing::TestDatabase;
use serde_json::Value;

use super::util::{wait_until, Daemon, Workspace};

/// The longest a leader may take to appear after the last one died.
/// (Anything else is waited for at most `DAEMON_WAIT`.)
const TAKEOVER: Duration = Duration::from_secs(10);
const TOKEN: &str = "failover-token";

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

/// Starts `deed daemon --interval 10m` on the state `url`, with the API
/// token, and waits for `/healthz`.
fn start_daemon(workspace: &Workspace, url: &str) -> Daemon {
    Daemon::start_on(
        workspace,
        Path::new(url),
        &["--interval", "10m"],
        Some(TOKEN),
    )
}

/// The role `/status` gives, `None` while the daemon does not answer.
fn role(daemon: &Daemon) -> Option<String> {
    Some(daemon.try_status()?["role"].as_str()?.to_string())
}

/// How many times each `action kind object` is in the history.
fn history_counts(workspace: &Workspace, url: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let run = workspace
        .deed_on(url, &["history", "--format", "json"])
        .ok();
    for line in run.stdout.lines() {
        let entry: Value = serde_json::from_str(line).expect("a JSON line");
        let change = &entry["change"];
        let key = format!(
            "{} {} {}",
            change["action"].as_str().unwrap_or("?"),
            change["kind"].as_str().unwrap_or("?"),
            change["object"].as_str().unwrap_or("?")
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// The leader and the standby of two daemons, once exactly one leads and
/// the other names it.
#[track_caller]
fn leader_and_standby(a: Daemon, b: Daemon) -> (Daemon, Daemon) {
    let a_leads = wait_until("one leader and one standby naming it", &[&a, &b], || {
        let (sa, sb) = (a.try_status()?, b.try_status()?);
        match (sa["role"].as_str()?, sb["role"].as_str()?) {
            ("leader", "standby") if sb["leader"] == sa["id"] => Some(true),
            ("standby", "leader") if sa["leader"] == sb["id"] => Some(false),
            _ => None,
        }
    });
    if a_leads {
        (a, b)
    } else {
        (b, a)
    }
}

#[test]
fn when_the_leader_is_killed_a_standby_applies_the_next_change_within_10_s() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    let url = PathBuf::from(&database.url);
    let (leader, standby) = leader_and_standby(
        start_daemon(&workspace, &database.url),
        start_daemon(&workspace, &database.url),
    );
    let leader_id = leader.try_status().expect("status")["id"].clone();
    assert!(
        leader_id
            .as_str()
            .is_some_and(|id| id.ends_with(&format!("/127.0.0.1:{}", leader.port))),
        "the leader is named by host, pid and address: {leader_id}"
    );
    wait_until("the leader to apply the specs", &[&leader], || {
        let status = leader.try_status()?;
        (status["reconciles"]["applied"].as_u64()? >= 1).then_some(())
    });
    // The standby answers /healthz and /plan, read-only: once it has seen
    // the leader's write, its plan is empty; it applied nothing.
    assert_eq!(
        standby.try_get("/healthz", Some(TOKEN)),
        Some((200, "ok".into()))
    );
    wait_until("the standby's plan to be empty", &[&standby], || {
        let (code, body) = standby.try_get("/plan", Some(TOKEN))?;
        let plan: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && plan["changes"].as_array()?.is_empty()).then_some(())
    });
    let status = standby.try_status().expect("status");
    assert_eq!(status["role"], "standby");
    assert_eq!(status["leader"], leader_id);
    assert_eq!(status["reconciles"]["applied"], 0, "{status:#}");

    leader.kill();
    let killed = Instant::now();
    workspace.write("acme.yaml", ACME_WITH_BOB);
    let status = wait_until("the standby to lead and apply bob", &[&standby], || {
        let status = standby.try_status()?;
        (status["role"] == "leader" && status["reconciles"]["applied"].as_u64()? >= 1)
            .then_some(status)
    });
    let takeover = killed.elapsed();
    eprintln!("takeover and apply after SIGKILL: {takeover:?}");
    assert!(
        takeover < TAKEOVER,
        "took {takeover:?}\n{}",
        standby.log_text()
    );
    assert_eq!(status["applied"], 1, "{status:#}");
    assert!(status["lease_generation"].as_i64() >= Some(2), "{status:#}");
    let bob = workspace
        .deed_on(&url, &["state", "show", "bob@acme.com", "--format", "json"])
        .ok()
        .json();
    assert_eq!(bob["role"], "admin");

    // Every change is in the history exactly once.
    std::thread::sleep(Duration::from_secs(1));
    let counts = history_counts(&workspace, &url);
    assert_eq!(counts.len(), 4, "{counts:#?}");
    assert!(counts.values().all(|count| *count == 1), "{counts:#?}");
    assert_eq!(counts.get("create user bob@acme.com"), Some(&1));
}

#[test]
fn a_leader_stopped_cleanly_hands_over_at_once_and_a_standby_never_applies() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let workspace = Workspace::with_specs(&[("acme.yaml", ACME)]);
    let url = PathBuf::from(&database.url);
    let (leader, standby) = leader_and_standby(
        start_daemon(&workspace, &database.url),
        start_daemon(&workspace, &database.url),
    );
    wait_until("the leader to apply the specs", &[&leader], || {
        let status = leader.try_status()?;
        (status["reconciles"]["applied"].as_u64()? >= 1).then_some(())
    });
    // A change while both run: the leader applies it; the standby plans.
    workspace.write("acme.yaml", ACME_WITH_BOB);
    wait_until("the leader to apply bob", &[&leader], || {
        let status = leader.try_status()?;
        (status["reconciles"]["applied"].as_u64()? >= 2).then_some(())
    });
    assert_eq!(role(&standby).as_deref(), Some("standby"));
    assert_eq!(
        standby.try_status().expect("status")["reconciles"]["applied"],
        0
    );

    // SIGTERM releases the lease: the standby leads well before it would
    // have expired.
    assert_eq!(leader.terminate().0, 0);
    let stopped = Instant::now();
    wait_until("the standby to lead", &[&standby], || {
        (role(&standby)? == "leader").then_some(())
    });
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "took {:?}\n{}",
        stopped.elapsed(),
        standby.log_text()
    );
    // The new leader reconciles at once and finds nothing to do.
    wait_until("the new leader's reconcile", &[&standby], || {
        let status = standby.try_status()?;
        (status["trigger"] == "became the leader").then_some(status)
    });
    let status = standby.try_status().expect("status");
    assert_eq!(status["reconciles"]["applied"], 0, "{status:#}");
    let counts = history_counts(&workspace, &url);
    assert_eq!(counts.len(), 4, "{counts:#?}");
    assert!(counts.values().all(|count| *count == 1), "{counts:#?}");
}
