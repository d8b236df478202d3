//! Crash safety (issue 6, items 4 and 5): the real binary, killed with
//! SIGKILL at random moments of an apply of 100,000 changes, never leaves a
//! state that breaks an invariant or loses an object, and one more apply
//! reaches exactly the state an uninterrupted apply gives; two applies at
//! once never both write.
//!
//! The workload: one account whose user dave owns 100,000 imported assets,
//! and a `reassign` rule moving them all to a group (100,000 transfers).
//! The kill moments are seeded (`DEED_CRASH_SEED`); `DEED_CRASH_KILLS` sets
//! how many kills (default 20; BENCHMARKS.md records a longer run).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::util::{deed_binary, Workspace, NOW};

const ASSETS: usize = 100_000;
/// Kills per round: each round starts again from a copy of the pre-state
/// and ends with an apply to completion.
const KILLS_PER_ROUND: usize = 10;

const SPECS: &str = "\
account: acme
domains: [acme.com]
users:
  alice@acme.com: {role: owner}
  dave@acme.com: {}
groups:
  analysts:
    members: {alice@acme.com: admin}
";

const RULE: &str = "\
reassign:
  - {from: user:dave@acme.com, to: group:analysts, tag: {moved: \"yes\"}}
";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// SplitMix64, for seeded kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A workspace holding `pre/`: the state before the reassign (100,000
/// assets owned by dave), with the rule already in the specs.
struct Fixture {
    workspace: Workspace,
    objects: usize,
}

impl Fixture {
    fn new() -> Fixture {
        let workspace = Workspace::with_specs(&[("acme.yaml", SPECS)]);
        let pre = workspace.root().join("pre");
        workspace.deed_on(&pre, &["apply"]).ok();
        let mut inventory = String::with_capacity(ASSETS * 110);
        for n in 0..ASSETS {
            let kind = ["file", "dataset", "workflow", "view"][n % 4];
            inventory.push_str(&format!(
                "{{\"id\":\"{kind}/x-{n:06}\",\"account\":\"acme\",\"owner\":\"user:dave@acme.com\",\"tags\":{{\"n\":\"{}\"}}}}\n",
                n % 7
            ));
        }
        let file = workspace.file("inventory.jsonl", inventory);
        workspace
            .deed_on(
                &pre,
                &["inventory", "import", file.to_str().expect("utf-8")],
            )
            .ok();
        workspace.write("acme.yaml", &format!("{SPECS}{RULE}"));
        let objects = checked_objects(&workspace, &pre);
        assert_eq!(objects, ASSETS + 5, "objects before the reassign");
        Fixture { workspace, objects }
    }

    fn pre(&self) -> PathBuf {
        self.workspace.root().join("pre")
    }

    /// A fresh copy of the pre-state at `name`.
    fn copy(&self, name: &str) -> PathBuf {
        let to = self.workspace.root().join(name);
        let _ = std::fs::remove_dir_all(&to);
        copy_dir(&self.pre(), &to);
        to
    }

    fn spawn_apply(&self, state: &Path, extra: &[&str]) -> Child {
        let mut command = Command::new(deed_binary());
        command
            .current_dir(self.workspace.root())
            .env("DEED_NOW", NOW)
            .env("NO_COLOR", "1")
            .env_remove("DEED_SPECS")
            .env_remove("DEED_STATE")
            .env_remove("DEED_LOG")
            .arg("--specs")
            .arg(self.workspace.specs())
            .arg("--state")
            .arg(state)
            .arg("apply")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().expect("spawn deed apply")
    }

    /// The state after an uninterrupted apply, and how long it took.
    fn reference(&self) -> (serde_json::Value, Duration) {
        let state = self.copy("reference");
        let started = Instant::now();
        self.workspace.deed_on(&state, &["apply"]).ok();
        let took = started.elapsed();
        let shown = self.workspace.show_all(&state);
        assert_eq!(checked_objects(&self.workspace, &state), self.objects);
        let _ = std::fs::remove_dir_all(&state);
        (shown, took)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read state") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy state file");
        }
    }
}

/// Runs `state check`, which must pass, and returns how many objects it
/// checked.
#[track_caller]
fn checked_objects(workspace: &Workspace, state: &Path) -> usize {
    let run = workspace.deed_on(state, &["state", "check"]);
    assert_eq!(run.code, 0, "state check fails:\n{run}");
    let text = format!("{}{}", run.stdout, run.stderr);
    text.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|pair| pair[1].starts_with("objects"))
        .and_then(|pair| pair[0].replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no object count in:\n{run}"))
}

#[test]
fn an_apply_killed_at_random_moments_loses_nothing_and_resumes_to_the_same_state() {
    let fixture = Fixture::new();
    let (reference, took) = fixture.reference();
    let plan_total = fixture
        .workspace
        .deed_on(&fixture.pre(), &["plan", "--format", "json"]);
    let plan = plan_total.ok().json();
    let changes = plan["changes"].as_array().expect("changes");
    assert!(
        changes.len() >= 100_000,
        "the plan has at least 100,000 changes"
    );
    // Every asset once, found in the state (a transfer, not a creation),
    // from dave to the group: the diff splits this many assets in two
    // halves at an id and makes them on two threads.
    let objects: std::collections::BTreeSet<&str> = changes
        .iter()
        .map(|change| change["object"].as_str().expect("object"))
        .collect();
    assert_eq!((changes.len(), objects.len()), (ASSETS, ASSETS));
    for change in changes {
        assert_eq!(
            (
                change["action"].as_str(),
                change["before"]["owner"].as_str(),
                change["after"]["owner"].as_str()
            ),
            (
                Some("transfer"),
                Some("user:dave@acme.com"),
                Some("group:analysts")
            ),
            "{change}"
        );
    }

    let kills_wanted = env_number("DEED_CRASH_KILLS", 20) as usize;
    let mut rng = Rng(env_number("DEED_CRASH_SEED", 6));
    let (mut kills, mut finished_early, mut round) = (0, 0, 0);
    while kills < kills_wanted {
        round += 1;
        let state = fixture.copy("work");
        let mut in_round = 0;
        while in_round < KILLS_PER_ROUND && kills < kills_wanted {
            // Any moment of the apply, start-up and planning included.
            let delay = took.mul_f64(0.05 + 0.85 * rng.unit());
            let mut child = fixture.spawn_apply(&state, &[]);
            std::thread::sleep(delay);
            let exited = child.try_wait().expect("try_wait").is_some();
            if !exited {
                child.kill().expect("SIGKILL");
            }
            let status = child.wait().expect("wait");
            if exited {
                // It finished before the kill: the round is over.
                assert!(status.success(), "apply failed on its own: {status}");
                finished_early += 1;
                break;
            }
            kills += 1;
            in_round += 1;
            assert_eq!(
                checked_objects(&fixture.workspace, &state),
                fixture.objects,
                "kill {kills} (round {round}, after {delay:?}) lost or added objects"
            );
        }
        fixture.workspace.deed_on(&state, &["apply"]).ok();
        let shown = fixture.workspace.show_all(&state);
        assert!(
            shown == reference,
            "round {round}: the state after the kills and one more apply differs from an uninterrupted apply"
        );
        fixture
            .workspace
            .deed_on(&state, &["plan"])
            .ok()
            .stdout
            .contains("No changes")
            .then_some(())
            .expect("no changes after the final apply");
    }
    eprintln!(
        "crash injection: {kills} kills in {round} rounds ({finished_early} applies finished before their kill), uninterrupted apply {took:?}"
    );
}

#[test]
fn a_second_apply_is_refused_while_one_runs_and_waits_with_wait() {
    let fixture = Fixture::new();
    let (reference, _) = fixture.reference();
    // The first apply takes about a second; a loaded machine may still let
    // it finish before the second starts, or start the second first.
    // Then the two did not overlap: tried again, the first given less (or
    // more) of a head start. Whatever happened, the state is that of one
    // apply.
    let mut head_start = Duration::from_millis(300);
    let mut attempts = 0;
    let (state, first) = loop {
        attempts += 1;
        let state = fixture.copy("busy");
        let first = fixture.spawn_apply(&state, &[]);
        std::thread::sleep(head_start);
        let started = Instant::now();
        let second = fixture.workspace.deed_on(&state, &["apply"]);
        let took = started.elapsed();
        if second.code == 1 && second.stderr.contains("in use") {
            assert!(
                took < Duration::from_secs(5),
                "refused at once, not after {took:?}"
            );
            break (state, first);
        }
        let first = first.wait_with_output().expect("first apply");
        let first_refused = String::from_utf8_lossy(&first.stderr).contains("in use");
        assert_eq!(checked_objects(&fixture.workspace, &state), fixture.objects);
        assert!(
            fixture.workspace.show_all(&state) == reference,
            "two applies give the state of one"
        );
        match (first.status.success(), second.code) {
            // The first was done before the second asked.
            (true, 0) => head_start /= 3,
            // The second got there first: the first was refused.
            (false, 0) if first_refused => head_start = head_start * 2 + Duration::from_millis(50),
            _ => panic!("the second apply:\n{second}\nthe first: {first:?}"),
        }
        assert!(
            attempts < 8 && head_start < Duration::from_secs(5),
            "no two applies overlapped in {attempts} attempts"
        );
    };
    let waiting = fixture.spawn_apply(&state, &["--wait"]);
    let first = first.wait_with_output().expect("first apply");
    assert!(first.status.success(), "first apply: {first:?}");
    let waiting = waiting.wait_with_output().expect("waiting apply");
    assert!(
        waiting.status.success(),
        "the apply with --wait succeeds once the state is free: {}",
        String::from_utf8_lossy(&waiting.stderr)
    );
    assert_eq!(checked_objects(&fixture.workspace, &state), fixture.objects);
    assert!(
        fixture.workspace.show_all(&state) == reference,
        "two applies give the state of one"
    );
}
