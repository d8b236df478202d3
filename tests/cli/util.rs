//! Helpers shared by the tests: a [`Workspace`] (a temporary folder with a
//! `specs/` folder and a sled state in `state/`), [`Run`], the outcome of
//! one run of the real `deed` binary, and [`Daemon`], `deed daemon` running
//! in the background.

use std::cell::RefCell;
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use deed::store::postgres::testing::TestDatabase;
use serde_json::Value;

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

    /// The sled folder of a test that writes sled's keys itself. Such a test
    /// belongs in `SLED_ONLY` (tests/cli/postgres.rs): on the PostgreSQL run
    /// the state is a URL, and sled would make a folder of that name in the
    /// working directory instead.
    #[track_caller]
    pub fn sled_folder(&self) -> PathBuf {
        assert!(
            self.database.is_none(),
            "this test writes sled's keys directly: list it in SLED_ONLY (tests/cli/postgres.rs)"
        );
        self.state()
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

/// The longest the daemon harness waits for anything: a condition of
/// [`wait_until`], an exit after SIGTERM.
pub const DAEMON_WAIT: Duration = Duration::from_secs(20);

/// A running `deed daemon` (the real binary, a child process) on a free
/// port, killed when dropped.
pub struct Daemon {
    /// Behind a `RefCell` so that [`wait_until`] can notice an exit through
    /// the shared references its checks also hold.
    child: RefCell<Child>,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// Its standard error, in the workspace.
    log: PathBuf,
}

impl Daemon {
    /// Starts `deed daemon ARGS` on the workspace's specs and state; see
    /// [`Daemon::start_on`].
    pub fn start(workspace: &Workspace, args: &[&str], token: Option<&str>) -> Daemon {
        Daemon::start_on(workspace, &workspace.state(), args, token)
    }

    /// Starts `deed --specs SPECS --state STATE daemon --listen
    /// 127.0.0.1:PORT ARGS` in the workspace on a free port, with the test
    /// environment of [`deed_command`] and `DEED_API_TOKEN` set to `token`
    /// when given, and waits for `/healthz` to answer `ok`.
    pub fn start_on(
        workspace: &Workspace,
        state: &Path,
        args: &[&str],
        token: Option<&str>,
    ) -> Daemon {
        let port = free_port();
        let log = workspace.root().join(format!("daemon-{port}.log"));
        let stderr = std::fs::File::create(&log).expect("create the daemon log");
        let mut command = std::process::Command::new(deed_binary());
        command
            .current_dir(workspace.root())
            .arg("--specs")
            .arg(workspace.specs())
            .arg("--state")
            .arg(state)
            .arg("daemon")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("DEED_NOW", NOW)
            .env("NO_COLOR", "1")
            .env_remove("DEED_SPECS")
            .env_remove("DEED_STATE")
            .env_remove("DEED_LOG")
            .env_remove("DEED_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(token) = token {
            command.env("DEED_API_TOKEN", token);
        }
        let child = command.spawn().expect("start deed daemon");
        let daemon = Daemon {
            child: RefCell::new(child),
            port,
            log,
        };
        wait_until("/healthz to answer", &[&daemon], || {
            let (code, body) = daemon.try_get("/healthz", None)?;
            (code == 200 && body == "ok").then_some(())
        });
        daemon
    }

    /// `GET path`, with `Authorization: Bearer TOKEN` when `token` is given:
    /// `(status code, body)`, `None` when the daemon does not answer.
    pub fn try_get(&self, path: &str, token: Option<&str>) -> Option<(u16, String)> {
        let port = self.port;
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let authorization = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{authorization}Connection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).ok()?;
        let response = String::from_utf8(response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    }

    /// `GET path`, failing with the daemon's log when it does not answer.
    #[track_caller]
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        self.try_get(path, token)
            .unwrap_or_else(|| panic!("GET {path}: no answer\n{}", self.log_text()))
    }

    /// `/status`, `None` while the daemon does not answer it with 200.
    pub fn try_status(&self) -> Option<Value> {
        let (code, body) = self.try_get("/status", None)?;
        (code == 200).then(|| serde_json::from_str(&body).expect("/status is JSON"))
    }

    /// `/status`, which must answer 200.
    #[track_caller]
    pub fn status(&self) -> Value {
        let (code, body) = self.get("/status", None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("/status is JSON")
    }

    /// Its log (standard error) under one header line.
    pub fn log_text(&self) -> String {
        format!(
            "--- log of the daemon on port {}\n{}",
            self.port,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// SIGKILL: no goodbye (a PostgreSQL lease is left to expire).
    pub fn kill(self) {
        let mut child = self.child.borrow_mut();
        child.kill().expect("SIGKILL the daemon");
        child.wait().expect("reap the daemon");
    }

    /// Sends SIGTERM and waits (at most [`DAEMON_WAIT`]) for the exit code;
    /// gives it with the log.
    #[track_caller]
    pub fn terminate(self) -> (i32, String) {
        let sent = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.borrow().id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success());
        let started = Instant::now();
        loop {
            let exited = self.child.borrow_mut().try_wait().expect("wait for deed");
            if let Some(status) = exited {
                return (status.code().unwrap_or(-1), self.log_text());
            }
            if started.elapsed() > DAEMON_WAIT {
                panic!(
                    "deed daemon did not stop after SIGTERM\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Polls `check` every 50 ms until it gives something; fails with the logs
/// of `daemons` as soon as one of them exits, or after [`DAEMON_WAIT`].
#[track_caller]
pub fn wait_until<T>(what: &str, daemons: &[&Daemon], mut check: impl FnMut() -> Option<T>) -> T {
    let logs = || -> String {
        let logs: Vec<String> = daemons.iter().map(|daemon| daemon.log_text()).collect();
        logs.join("\n")
    };
    let started = Instant::now();
    loop {
        if let Some(found) = check() {
            return found;
        }
        for daemon in daemons {
            let exited = daemon.child.borrow_mut().try_wait();
            if let Ok(Some(status)) = exited {
                panic!(
                    "deed daemon on port {} exited ({status}) while waiting for {what}\n{}",
                    daemon.port,
                    logs()
                );
            }
        }
        if started.elapsed() > DAEMON_WAIT {
            panic!("timed out waiting for {what}\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Opens the sled database of a state folder directly, as the tests that
/// write sled's keys do. A handle this process has just dropped can keep
/// sled's file lock for a moment (its flusher thread ends after the drop,
/// as `SLED_LOCK_GRACE` in the store says), so a busy lock is retried for
/// up to ten seconds.
#[track_caller]
pub fn open_sled(folder: &Path) -> sled::Db {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(folder).open() {
            Ok(db) => return db,
            Err(error)
                if error.to_string().contains("could not acquire lock")
                    && started.elapsed() < Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => panic!("open sled at {}: {error}", folder.display()),
        }
    }
}
