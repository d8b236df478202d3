//! Helpers shared by the tests: a [`Workspace`] (a temporary folder with a
//! `specs/` folder and a sled state in `state/`) and [`Run`], the outcome of
//! one run of the real `deed` binary.

use std::fmt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use deed::store::postgres::testing::TestDatabase;

/// The clock of every run, so that plans (invitation expiries) are stable.
pub const NOW: &str = "2026-11-23T12:00:00Z";

/// A temporary folder holding `specs/` and (once something writes it)
/// `state/`. Removed when dropped.
pub struct Workspace {
    dir: tempfile::TempDir,
    /// With `DEED_TEST_BACKEND=postgres`: the fresh database that holds the
    /// state instead of `state/` (see [`Workspace::state`]).
    database: Option<TestDatabase>,
}

/// What one run of `deed` gave.
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deed {}\n--- exit code {}\n--- stdout\n{}--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl Run {
    /// Asserts exit code 0.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success:\n{self}");
        self
    }

    /// Asserts exit code 1 (any error, contract §3).
    #[track_caller]
    pub fn fails(self) -> Run {
        assert_eq!(self.code, 1, "expected exit code 1:\n{self}");
        self
    }

    /// The lines of standard error that are diagnostics: all but the final
    /// `error: ...` summary.
    pub fn diagnostics(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|line| !line.starts_with("error:") && !line.trim().is_empty())
            .collect()
    }

    /// Standard output parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}):\n{self}"))
    }
}

/// Runs `deed` with `--specs` and `--state` set, the clock fixed, colour off,
/// and no `DEED_*` variable inherited from the environment.
pub fn run_deed(cwd: &Path, specs: &Path, state: &Path, args: &[&str]) -> Run {
    let mut full: Vec<String> = vec![
        "--specs".into(),
        specs.display().to_string(),
        "--state".into(),
        state.display().to_string(),
    ];
    full.extend(args.iter().map(|arg| arg.to_string()));
    let output = deed_command(cwd).args(&full).output().expect("run deed");
    Run {
        args: full,
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The `deed` binary with the test environment, without arguments.
pub fn deed_command(cwd: &Path) -> Command {
    let mut command = Command::cargo_bin("deed").expect("the deed binary");
    command
        .current_dir(cwd)
        .env("DEED_NOW", NOW)
        .env("NO_COLOR", "1")
        .env_remove("DEED_SPECS")
        .env_remove("DEED_STATE")
        .env_remove("DEED_LOG")
        .env_remove("DEED_API_TOKEN");
    command
}

/// The path of the `deed` binary, for tests that spawn it in the background.
pub fn deed_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deed"))
}

impl Workspace {
    /// An empty workspace: `specs/` exists and is empty, `state/` does not.
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("specs")).expect("create specs");
        Workspace {
            dir,
            database: postgres_backend(),
        }
    }

    /// A workspace whose specs are `files` (path under `specs/`, YAML).
    pub fn with_specs(files: &[(&str, &str)]) -> Workspace {
        let workspace = Workspace::new();
        for (path, yaml) in files {
            workspace.write(path, yaml);
        }
        workspace
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn specs(&self) -> PathBuf {
        self.root().join("specs")
    }

    pub fn state(&self) -> PathBuf {
        match &self.database {
            Some(database) => PathBuf::from(&database.url),
            None => self.root().join("state"),
        }
    }

    /// Writes `text` to `path` under `specs/`, creating folders.
    pub fn write(&self, path: &str, text: &str) {
        let path = self.specs().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create folders");
        std::fs::write(path, text).expect("write spec");
    }

    /// Removes `path` under `specs/`.
    pub fn remove(&self, path: &str) {
        std::fs::remove_file(self.specs().join(path)).expect("remove spec");
    }

    /// Writes a file outside the specs (an inventory, a dump) and returns
    /// its path.
    pub fn file(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.root().join(name);
        std::fs::write(&path, content).expect("write file");
        path
    }

    /// `deed --specs specs --state state ARGS`.
    pub fn deed(&self, args: &[&str]) -> Run {
        run_deed(self.root(), &self.specs(), &self.state(), args)
    }

    /// `deed` on another state (a dump file, another folder).
    pub fn deed_on(&self, state: &Path, args: &[&str]) -> Run {
        run_deed(self.root(), &self.specs(), state, args)
    }

    /// `deed` on other specs and another state.
    pub fn deed_with(&self, specs: &Path, state: &Path, args: &[&str]) -> Run {
        run_deed(self.root(), specs, state, args)
    }

    /// `deed apply`, which must succeed.
    #[track_caller]
    pub fn apply(&self) -> Run {
        self.deed(&["apply"]).ok()
    }

    /// `deed plan --format json`, parsed.
    #[track_caller]
    pub fn plan_json(&self) -> serde_json::Value {
        self.deed(&["plan", "--format", "json"]).ok().json()
    }

    /// The bytes `deed state dump FILE` writes for the workspace state.
    #[track_caller]
    pub fn dump_bytes(&self) -> Vec<u8> {
        self.dump_bytes_of(&self.state())
    }

    /// The bytes `deed state dump FILE` writes for `state`.
    #[track_caller]
    pub fn dump_bytes_of(&self, state: &Path) -> Vec<u8> {
        let file = self.root().join("dump-for-test.jsonl");
        let _ = std::fs::remove_file(&file);
        self.deed_on(state, &["state", "dump", file.to_str().expect("utf-8")])
            .ok();
        let bytes = std::fs::read(&file).expect("read dump");
        std::fs::remove_file(&file).expect("remove dump");
        bytes
    }

    /// The whole state as `deed state show --format json` prints it.
    #[track_caller]
    pub fn show_all(&self, state: &Path) -> serde_json::Value {
        self.deed_on(state, &["state", "show", "--format", "json"])
            .ok()
            .json()
    }

    /// One object as `deed state show ID --format json` prints it.
    #[track_caller]
    pub fn show(&self, id: &str) -> serde_json::Value {
        self.deed(&["state", "show", id, "--format", "json"])
            .ok()
            .json()
    }
}

/// `(action, kind, object)` of every change of a JSON plan, in order.
pub fn actions(plan: &serde_json::Value) -> Vec<(String, String, String)> {
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|change| {
            (
                change["action"].as_str().expect("action").to_string(),
                change["kind"].as_str().expect("kind").to_string(),
                change["object"].as_str().expect("object").to_string(),
            )
        })
        .collect()
}

/// `[("transfer", "license", "lic-42"), ...]` as owned strings.
pub fn owned(expected: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    expected
        .iter()
        .map(|(a, k, o)| (a.to_string(), k.to_string(), o.to_string()))
        .collect()
}

/// The change of `plan` on `object`, which must be there exactly once.
#[track_caller]
pub fn change_of<'a>(plan: &'a serde_json::Value, object: &str) -> &'a serde_json::Value {
    let found: Vec<&serde_json::Value> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|change| change["object"] == object)
        .collect();
    assert_eq!(found.len(), 1, "one change of {object} in {plan:#}");
    found[0]
}

/// The text every test of a converged state expects from `deed plan`.
pub const NO_CHANGES: &str = "No changes. The state matches the specs.";

/// The variable that runs the workspace tests on PostgreSQL: with
/// `DEED_TEST_BACKEND=postgres`, [`Workspace::state`] is the URL of a fresh
/// database (on `DEED_TEST_DATABASE_URL`'s server) instead of a sled folder.
/// `tests/cli/postgres.rs` re-runs the core flows that way.
pub const BACKEND_VARIABLE: &str = "DEED_TEST_BACKEND";

fn postgres_backend() -> Option<TestDatabase> {
    match std::env::var(BACKEND_VARIABLE).as_deref() {
        Ok("postgres") => Some(TestDatabase::create().unwrap_or_else(|| {
            panic!(
                "{BACKEND_VARIABLE}=postgres needs a PostgreSQL server: set DEED_TEST_DATABASE_URL"
            )
        })),
        Ok("sled") | Ok("") | Err(_) => None,
        Ok(other) => panic!("{BACKEND_VARIABLE}={other}: expected sled or postgres"),
    }
}
