//! Several `deed daemon`s on one PostgreSQL state (contract §5, issue 7):
//! exactly one leads and applies, the others stand by, serve `/status`
//! (naming the leader) and `/plan`, and one of them takes over within 10 s
//! when the leader is killed; no change is ever applied twice.
//!
//! They need a server: `DEED_TEST_DATABASE_URL`, or one at
//! `postgres://root@127.0.0.1:5432/test`. Without one each test prints one
//! line saying so and passes. Every wait is bounded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deed::store::postgres::testing::TestDatabase;
use serde_json::Value;

use super::util::{deed_binary, Workspace, NOW};

/// The longest a leader may take to appear after the last one died.
const TAKEOVER: Duration = Duration::from_secs(10);
/// The longest anything else is waited for.
const WAIT: Duration = Duration::from_secs(20);
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

/// A `deed daemon` on a free port, killed when dropped.
struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    /// Starts `deed daemon` on the state `url` and waits for `/healthz`.
    fn start(workspace: &Workspace, url: &str) -> Daemon {
        let port = free_port();
        let log = workspace.root().join(format!("daemon-{port}.log"));
        let stderr = std::fs::File::create(&log).expect("create the daemon log");
        let child = Command::new(deed_binary())
            .current_dir(workspace.root())
            .arg("--specs")
            .arg(workspace.specs())
            .arg("--state")
            .arg(url)
            .args(["daemon", "--interval", "10m", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("DEED_NOW", NOW)
            .env("NO_COLOR", "1")
            .env("DEED_API_TOKEN", TOKEN)
            .env_remove("DEED_SPECS")
            .env_remove("DEED_STATE")
            .env_remove("DEED_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start deed daemon");
        let daemon = Daemon { child, port, log };
        wait_for("/healthz to answer", &[&daemon], || {
            http_get(port, "/healthz").filter(|(code, _)| *code == 200)
        });
        daemon
    }

    /// `/status`, `None` while the daemon does not answer.
    fn status(&self) -> Option<Value> {
        let (code, body) = http_get(self.port, "/status")?;
        (code == 200).then(|| serde_json::from_str(&body).expect("/status is JSON"))
    }

    fn role(&self) -> Option<String> {
        Some(self.status()?["role"].as_str()?.to_string())
    }

    fn log_text(&self) -> String {
        format!(
            "--- log of the daemon on port {}\n{}",
            self.port,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// SIGKILL: no goodbye, the lease is left to expire.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL the daemon");
        self.child.wait().expect("reap the daemon");
    }

    /// SIGTERM, and its exit code (bounded wait).
    fn terminate(mut self) -> i32 {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for deed") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < WAIT,
                "the daemon did not stop after SIGTERM\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it gives something; fails after [`WAIT`]
/// with the daemons' logs.
#[track_caller]
fn wait_for<T>(what: &str, daemons: &[&Daemon], mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = check() {
            return found;
        }
        if started.elapsed() > WAIT {
            let logs: Vec<String> = daemons.iter().map(|daemon| daemon.log_text()).collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// `GET path` with the API token: `(status code, body)`, `None` when
/// nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8(response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
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
    let a_leads = wait_for("one leader and one standby naming it", &[&a, &b], || {
        let (sa, sb) = (a.status()?, b.status()?);
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
        Daemon::start(&workspace, &database.url),
        Daemon::start(&workspace, &database.url),
    );
    let leader_id = leader.status().expect("status")["id"].clone();
    assert!(
        leader_id
            .as_str()
            .is_some_and(|id| id.ends_with(&format!("/127.0.0.1:{}", leader.port))),
        "the leader is named by host, pid and address: {leader_id}"
    );
    wait_for("the leader to apply the specs", &[&leader], || {
        let status = leader.status()?;
        (status["reconciles"]["applied"].as_u64()? >= 1).then_some(())
    });
    // The standby answers /healthz and /plan, read-only: once it has seen
    // the leader's write, its plan is empty; it applied nothing.
    assert_eq!(http_get(standby.port, "/healthz"), Some((200, "ok".into())));
    wait_for("the standby's plan to be empty", &[&standby], || {
        let (code, body) = http_get(standby.port, "/plan")?;
        let plan: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && plan["changes"].as_array()?.is_empty()).then_some(())
    });
    let status = standby.status().expect("status");
    assert_eq!(status["role"], "standby");
    assert_eq!(status["leader"], leader_id);
    assert_eq!(status["reconciles"]["applied"], 0, "{status:#}");

    leader.kill();
    let killed = Instant::now();
    workspace.write("acme.yaml", ACME_WITH_BOB);
    let status = wait_for("the standby to lead and apply bob", &[&standby], || {
        let status = standby.status()?;
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
        Daemon::start(&workspace, &database.url),
        Daemon::start(&workspace, &database.url),
    );
    wait_for("the leader to apply the specs", &[&leader], || {
        let status = leader.status()?;
        (status["reconciles"]["applied"].as_u64()? >= 1).then_some(())
    });
    // A change while both run: the leader applies it; the standby plans.
    workspace.write("acme.yaml", ACME_WITH_BOB);
    wait_for("the leader to apply bob", &[&leader], || {
        let status = leader.status()?;
        (status["reconciles"]["applied"].as_u64()? >= 2).then_some(())
    });
    assert_eq!(standby.role().as_deref(), Some("standby"));
    assert_eq!(
        standby.status().expect("status")["reconciles"]["applied"],
        0
    );

    // SIGTERM releases the lease: the standby leads well before it would
    // have expired.
    assert_eq!(leader.terminate(), 0);
    let stopped = Instant::now();
    wait_for("the standby to lead", &[&standby], || {
        (standby.role()? == "leader").then_some(())
    });
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "took {:?}\n{}",
        stopped.elapsed(),
        standby.log_text()
    );
    // The new leader reconciles at once and finds nothing to do.
    wait_for("the new leader's reconcile", &[&standby], || {
        let status = standby.status()?;
        (status["trigger"] == "became the leader").then_some(status)
    });
    let status = standby.status().expect("status");
    assert_eq!(status["reconciles"]["applied"], 0, "{status:#}");
    let counts = history_counts(&workspace, &url);
    assert_eq!(counts.len(), 4, "{counts:#?}");
    assert!(counts.values().all(|count| *count == 1), "{counts:#?}");
}
