//! Fuzzing of the spec loader and the inventory importer (issue 6, item 8),
//! with proptest (cargo-fuzz needs a nightly toolchain and is not part of
//! the build). The loader (`deed::spec::load_files`: parse, then merge and
//! validate) and the importer (`deed::inventory::parse_import`) run in this
//! process on arbitrary bytes and on mutations of valid specs and
//! inventories; a case must return (no panic) within a few seconds and in
//! bounded memory. A watchdog thread aborts the process on a hang or when
//! memory passes the limit.
//!
//! By default each target runs `DEED_FUZZ_CASES` cases (default 500) from a
//! fixed seed. `DEED_FUZZ_SECONDS=600` runs every target round after round
//! from fresh random seeds for that long (the documented 10-minute run, see
//! BENCHMARKS.md):
//!
//! ```text
//! DEED_FUZZ_SECONDS=600 cargo test --release --test tests cli::fuzz -- --nocapture
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use deed::model::State;
use deed::spec::SourceFile;

/// A case that takes longer than this is a hang.
const CASE_LIMIT: Duration = Duration::from_secs(10);
/// Resident memory above this is unbounded growth.
const MEMORY_LIMIT_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Milliseconds since the epoch at which the running case started (0: none).
static CASE_STARTED: AtomicU64 = AtomicU64::new(0);
static WATCHDOG: Once = Once::new();

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn start_watchdog() {
    WATCHDOG.call_once(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(200));
            let started = CASE_STARTED.load(Ordering::SeqCst);
            if started != 0 && now_ms().saturating_sub(started) > CASE_LIMIT.as_millis() as u64 {
                eprintln!("fuzz: a case ran for over {CASE_LIMIT:?}: a hang");
                std::process::abort();
            }
            let resident = resident_bytes();
            if resident > MEMORY_LIMIT_BYTES {
                eprintln!("fuzz: resident memory {resident} bytes: unbounded growth");
                std::process::abort();
            }
        });
    });
}

/// Panics already reported (issue 6), by a substring of their message:
/// counted and printed, not failed, unless `DEED_FUZZ_STRICT=1`. Remove an
/// entry once its bug is fixed.
const KNOWN_PANICS: &[&str] = &[
    // None known: the three found here (a backslash escape before a
    // non-ASCII character in a quoted key; aliases to undefined anchors) are
    // fixed, and their corpus cases (59, 66, 67) now pass strictly.
];

static KNOWN_PANICS_SEEN: AtomicU64 = AtomicU64::new(0);
static QUIET_HOOK: Once = Once::new();

/// Runs `case` under the watchdog. A known panic gives `None`; any other
/// panic is a failure.
fn guarded<T>(case: impl FnOnce() -> T) -> Option<T> {
    start_watchdog();
    QUIET_HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.to_string();
            if !KNOWN_PANICS.iter().any(|known| message.contains(known)) {
                default(info);
            }
        }));
    });
    CASE_STARTED.store(now_ms(), Ordering::SeqCst);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(case));
    CASE_STARTED.store(0, Ordering::SeqCst);
    match result {
        Ok(value) => Some(value),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let strict = std::env::var("DEED_FUZZ_STRICT").is_ok_and(|v| v == "1");
            if !strict && KNOWN_PANICS.iter().any(|known| message.contains(known)) {
                KNOWN_PANICS_SEEN.fetch_add(1, Ordering::SeqCst);
                None
            } else {
                std::panic::resume_unwind(payload)
            }
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// Runs `test` over `strategy`: a fixed seed and `DEED_FUZZ_CASES` cases, or
/// fresh seeds round after round for `DEED_FUZZ_SECONDS`.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let cases = env_number("DEED_FUZZ_CASES").unwrap_or(500) as u32;
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let deadline = env_number("DEED_FUZZ_SECONDS").map(|s| Instant::now() + Duration::from_secs(s));
    let started = Instant::now();
    let mut rounds = 0u64;
    loop {
        let mut runner = match deadline {
            None => TestRunner::new_with_rng(
                config.clone(),
                TestRng::deterministic_rng(RngAlgorithm::ChaCha),
            ),
            Some(_) => TestRunner::new(config.clone()),
        };
        if let Err(error) = runner.run(&strategy, &test) {
            panic!("fuzz target {name}: {error}");
        }
        rounds += 1;
        match deadline {
            Some(deadline) if Instant::now() < deadline => continue,
            _ => break,
        }
    }
    eprintln!(
        "fuzz target {name}: {} cases in {rounds} rounds, {:?}, no new panic, hang or runaway memory ({} known panics so far in this process)",
        rounds * u64::from(cases),
        started.elapsed(),
        KNOWN_PANICS_SEEN.load(Ordering::SeqCst)
    );
}

/// Valid specs to mutate: the corpus baseline and a generated account.
fn seeds() -> Vec<String> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut seeds: Vec<String> = ["acme.yaml", "acme-eu.yaml", "globex.yaml"]
        .iter()
        .filter_map(|name| {
            std::fs::read_to_string(root.join("tests/corpus/baseline").join(name)).ok()
        })
        .collect();
    seeds.push(
        "account: zeta\ndomains: [zeta.com]\nhub: acme\ninvite_ttl: 72h\nsuccessor: bob@zeta.com\nusers:\n  ann@zeta.com: {role: owner, name: Ann}\n  bob@zeta.com:\n    role: admin\n    move: {successor: ann@zeta.com, bring: [proof, file], folder: From acme}\ngroups:\n  ops:\n    members: {ann@zeta.com: admin, bob@zeta.com: member}\nlicenses:\n  lic-1: {product: omiq-pro, assignee: bob@zeta.com, expires: 2027-03-31}\nassets:\n  file/f-1: {owner: \"group:ops\", tags: {a: b}}\nreassign:\n  - from: user:bob@zeta.com\n    to: group:ops\n    kinds: [file]\n    tag: {moved: \"yes\"}\n---\naccount: zeta\norganizations:\n  zorg:\n    products:\n      zprod: {name: Z, access: [ann@zeta.com]}\n"
            .to_string(),
    );
    seeds
}

/// YAML fragments that tend to break parsers.
const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "*b",
    "<<: ",
    "!!binary ",
    "!tag ",
    "[",
    "]",
    "{",
    "}",
    ": ",
    ", ",
    "- ",
    "---\n",
    "...\n",
    "\t",
    "\n",
    "  ",
    "\"",
    "'",
    "#",
    "|\n",
    ">-\n",
    "?",
    "%YAML 1.2\n",
    "\u{feff}",
    "\0",
    "~",
    "null",
    "true",
    "1e999",
    "-0",
    "0x10",
    "2027-02-30",
    "@",
    "user:",
    "group:",
    "é",
    "\r\n",
    "account: ",
    "users: ",
    "groups: ",
    "reassign: ",
    "members: ",
];

#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, usize),
    Delete(usize, usize),
    Replace(usize, u8),
    Duplicate(usize, usize),
}

fn apply_edits(seed: &str, edits: &[Edit]) -> String {
    let mut bytes = seed.as_bytes().to_vec();
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Insert(at, token) => {
                let at = at % (bytes.len() + 1);
                let token = TOKENS[token % TOKENS.len()].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n % 16).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Edit::Replace(at, byte) => {
                if !bytes.is_empty() {
                    bytes[at % len] = byte;
                }
            }
            Edit::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n % 200).min(bytes.len());
                let copy: Vec<u8> = bytes[at..end].to_vec();
                bytes.splice(end..end, copy);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(a, t)| Edit::Insert(a, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Replace(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Edit::Duplicate(a, n)),
    ]
}

/// Parses and validates `texts` as a spec tree; must not panic.
fn load(texts: Vec<String>) -> Result<(), TestCaseError> {
    let files: Vec<SourceFile> = texts
        .into_iter()
        .enumerate()
        .map(|(n, text)| SourceFile {
            path: format!("f{n}.yaml"),
            text,
        })
        .collect();
    let started = Instant::now();
    let result = guarded(|| deed::spec::load_files(&files, Vec::new()));
    if let Some(Err(diagnostics)) = &result {
        for diagnostic in diagnostics {
            let shown = diagnostic.to_string();
            prop_assert!(!shown.is_empty(), "an empty diagnostic");
        }
    }
    // `deed validate`'s check, which does not keep the model, says exactly
    // what the full load says.
    let checked = guarded(|| deed::spec::check_files(&files, Vec::new()));
    match (&result, &checked) {
        (Some(Ok(desired)), Some(Ok(counts))) => {
            prop_assert_eq!(*counts, deed::spec::SpecCounts::of(desired));
        }
        (Some(Err(loaded)), Some(Err(checked))) => prop_assert_eq!(loaded, checked),
        (None, None) => {}
        _ => prop_assert!(false, "load and check disagree: {result:?} / {checked:?}"),
    }
    prop_assert!(
        started.elapsed() < Duration::from_secs(5),
        "loading took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn the_spec_loader_survives_arbitrary_bytes() {
    fuzz(
        "spec loader, arbitrary bytes",
        proptest::collection::vec(any::<u8>(), 0..2_000),
        |bytes| load(vec![String::from_utf8_lossy(&bytes).into_owned()]),
    );
}

#[test]
fn the_spec_loader_survives_mutated_valid_specs() {
    let seeds = seeds();
    let count = seeds.len();
    fuzz(
        "spec loader, mutated specs",
        (proptest::collection::vec(
            (0..count, proptest::collection::vec(edit(), 1..12)),
            1..4,
        ),),
        move |(files,)| {
            let texts = files
                .iter()
                .map(|(seed, edits)| apply_edits(&seeds[*seed], edits))
                .collect();
            load(texts)
        },
    );
}

fn inventory_state() -> State {
    let mut state = State::default();
    let account = serde_json::json!({"owner": "alice@acme.com", "domains": ["acme.com"], "hub": null,
        "connections": [], "credits": 0, "merged_into": null, "invite_ttl": "48h", "successor": null});
    state.accounts.insert(
        "acme".into(),
        serde_json::from_value(account).expect("an account"),
    );
    state.organizations.insert(
        "research".into(),
        serde_json::from_value(serde_json::json!({"account": "acme"})).expect("an organization"),
    );
    state
}

const INVENTORY_SEED: &str = r#"{"type": "asset", "id": "file/f-9", "account": "acme", "owner": "user:bob@acme.com", "creator": "bob@acme.com", "folder": "folder/fo-1", "tags": {"project": "x"}}
{"type": "asset", "id": "proof/p-3", "account": "acme", "owner": "user:bob@acme.com", "versions": ["bob@acme.com", "carol@acme.com"]}
{"type": "invoice", "id": "inv-2026-11", "product": "prod-7", "organization": "research"}
{"type": "credits", "account": "acme", "balance": 5000}
"#;

const INVENTORY_YAML_SEED: &str = "- {id: file/f-1, account: acme, owner: \"group:analysts\"}\n- type: credits\n  account: acme\n  balance: 7\n";

fn import(text: &str, state: &State) -> Result<(), TestCaseError> {
    let now: deed::model::Timestamp = super::util::NOW.parse().expect("timestamp");
    let started = Instant::now();
    let result = guarded(|| deed::inventory::parse_import("inventory.jsonl", text, state, now));
    if let Some(Err(diagnostics)) = result {
        prop_assert!(!diagnostics.is_empty(), "an error without a diagnostic");
    }
    prop_assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[test]
fn the_inventory_importer_survives_arbitrary_lines() {
    let state = inventory_state();
    fuzz(
        "inventory importer, arbitrary bytes",
        proptest::collection::vec(any::<u8>(), 0..2_000),
        |bytes| import(&String::from_utf8_lossy(&bytes), &state),
    );
}

#[test]
fn the_inventory_importer_survives_mutated_records() {
    let state = inventory_state();
    fuzz(
        "inventory importer, mutated records",
        (any::<bool>(), proptest::collection::vec(edit(), 1..12)),
        |(yaml, edits)| {
            let seed = if yaml {
                INVENTORY_YAML_SEED
            } else {
                INVENTORY_SEED
            };
            import(&apply_edits(seed, &edits), &state)
        },
    );
}
