//! `deed daemon` (contract §4): keeps the state equal to the specs as they
//! change. One loop plans and applies with [`crate::reconcile`] — what
//! `deed apply` runs — at start, after a debounced change of the specs
//! ([`watch`]), every `--interval`, and after a failure once its backoff
//! expires or the specs or the state change. The reconcile is
//! level-triggered: it is never told why it runs.
//!
//! - Specs are reloaded incrementally ([`specs_cache`]) and planned
//!   incrementally ([`incremental`]): an edited file re-plans only the
//!   accounts it concerns, against the state kept from the last reconcile
//!   ([`state_cache`]). A tree that does not validate is never applied: its
//!   errors are logged and published on `/status`, and the state keeps what
//!   was last applied.
//! - The store is opened for each reconcile that needs it (a sled state no
//!   other process opened since is planned without opening it) and closed
//!   after it, so `deed inventory import`, `deed invitations accept` and
//!   `deed plan` work while the daemon runs (a command that finds the state in use fails at once,
//!   or waits with `--wait`).
//! - A failed reconcile (invalid specs, a broken rule, the removal guard, an
//!   error) is not retried with the same specs and the same state until a
//!   backoff expires: 1 s, doubling, capped at the interval.
//! - SIGINT/SIGTERM: the watcher stops, a reconcile in progress finishes
//!   (its commit is one atomic batch) or, while it waits for the state's
//!   lock, is abandoned before writing; then the HTTP server stops and the
//!   process exits 0.
//!
//! - On a PostgreSQL state several daemons may run: [`leadership`] elects
//!   one through a lease; the others are standbys that plan read-only (as
//!   `--dry-run` does) and name the leader on `/status`, and the leader's
//!   commits are fenced by its lease generation. A standby that becomes the
//!   leader reconciles at once; a standby re-plans whenever the state
//!   changes. A sled daemon always leads.
//!
//! Results are published for [`http`] in [`Shared`]; [`metrics`] holds the
//! Prometheus counters.

mod http;
mod incremental;
mod leadership;
mod metrics;
mod specs_cache;
mod state_cache;
mod watch;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch as channel};

use crate::diagnostic::Diagnostic;
use crate::model::{State, Timestamp};
use crate::plan::Plan;
use crate::reconcile::{self, ReconcileError, ReconcileOptions};
use crate::store::{self, Access, Store, StoreError};
use leadership::{Election, Leadership, Role};

use incremental::{Made, PlanFailure, Planner};
pub use metrics::Metrics;
pub use specs_cache::{Loaded, SpecsCache};
use state_cache::{CachingStore, Snapshot, StateCache};

/// The first wait after a failed reconcile; it doubles up to the interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How long the watcher's batches must be quiet before a reconcile starts
/// (on top of the watcher's own debounce).
const SETTLE: Duration = Duration::from_millis(100);
/// The longest time batches are gathered before a reconcile starts anyway.
const SETTLE_LIMIT: Duration = Duration::from_millis(250);
/// While backing off, how often the state is checked for a change.
const STATE_POLL: Duration = Duration::from_millis(500);
/// How long a reconcile waits for another process to release the state.
const LOCK_WAIT_LIMIT: Duration = Duration::from_secs(30);
/// How long the first reconcile waits to learn whether this daemon leads.
const FIRST_ELECTION_LIMIT: Duration = Duration::from_secs(15);

/// The resolved options of `deed daemon`.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub specs: PathBuf,
    /// `--state` as given.
    pub state: String,
    pub interval: Duration,
    /// `--listen`: an address and port (a host name is resolved).
    pub listen: String,
    pub dry_run: bool,
    /// The removal guard's limit, in percent.
    pub max_removal: f64,
    pub allow_removals: bool,
    pub clock: Clock,
    /// `DEED_API_TOKEN`: `/plan` and `/state` need it (403 without).
    pub api_token: Option<String>,
}

/// The daemon's clock. Unlike a command, a daemon needs time to advance:
/// with `DEED_NOW` set, time starts there and advances with the wall clock
/// (so invitations expire during a test); otherwise it is the system clock.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    System,
    StartingAt { start: Timestamp, at: Instant },
}

impl Clock {
    /// Time starting at `start`, now.
    pub fn starting_at(start: Timestamp) -> Clock {
        Clock::StartingAt {
            start,
            at: Instant::now(),
        }
    }

    /// The time, in whole seconds (as commands use it).
    pub fn now(&self) -> Timestamp {
        let now = match self {
            Clock::System => Timestamp::now(),
            Clock::StartingAt { start, at } => {
                let elapsed = jiff::SignedDuration::try_from(at.elapsed())
                    .unwrap_or(jiff::SignedDuration::ZERO);
                start.checked_add(elapsed).unwrap_or(*start)
            }
        };
        now.round(jiff::Unit::Second).unwrap_or(now)
    }
}

/// Runs the daemon until SIGINT or SIGTERM. Errors only when it cannot start
/// (the address is in use, the state cannot be opened at all).
pub fn run(config: DaemonConfig) -> anyhow::Result<()> {
    if !(0.0..=100.0).contains(&config.max_removal) {
        bail!(
            "--max-removal {}: give a percentage from 0 to 100",
            config.max_removal
        );
    }
    if config.interval.is_zero() {
        bail!("--interval must be at least 1s");
    }
    if !config.dry_run && Path::new(&config.state).is_file() {
        bail!(
            "state {} is a dump, opened read-only: run the daemon on it with --dry-run, or on a state folder",
            config.state
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("deed-daemon")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(config))
}

async fn run_async(config: DaemonConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener
        .local_addr()
        .map(|address| address.to_string())
        .unwrap_or_else(|_| config.listen.clone());

    let id = leadership::holder_id(&address);
    let shared_database = store::is_postgres_url(&config.state);
    let (leadership_sender, leadership) = channel::channel(if shared_database {
        Leadership::unknown()
    } else {
        Leadership::alone()
    });

    let shared = Arc::new(Shared {
        report: Mutex::new(Report::new(config.dry_run)),
        api_token: config.api_token.clone().filter(|token| !token.is_empty()),
        state_location: config.state.clone(),
        store_gate: Mutex::new(()),
        cancel: AtomicBool::new(false),
        leadership: leadership.clone(),
        id: id.clone(),
    });

    let (shutdown_sender, shutdown) = channel::channel(false);
    tokio::spawn(signals(Signals::new(), shutdown_sender));

    let mut server_shutdown = shutdown.clone();
    let server = axum::serve(listener, http::router(Arc::clone(&shared))).with_graceful_shutdown(
        async move {
            let _ = server_shutdown.wait_for(|stop| *stop).await;
        },
    );
    let server = tokio::spawn(async move { server.await });
    tracing::info!(
        listen = %address,
        specs = %config.specs.display(),
        state = %config.state,
        interval_seconds = config.interval.as_secs_f64(),
        dry_run = config.dry_run,
        "deed daemon listening on {address}"
    );
    if shared.api_token.is_none() {
        tracing::info!("DEED_API_TOKEN is not set: /plan and /state answer 403");
    }

    // On PostgreSQL, learn whether this daemon leads before the first
    // reconcile, so that it does not plan as a standby first.
    let election = if shared_database {
        let election = Election::start(&config.state, &id, !config.dry_run, leadership_sender)
            .context("cannot start the election thread")?;
        tracing::info!(
            id = id.as_str(),
            "several daemons may share this state: competing for its lease as {id}"
        );
        let mut first = leadership.clone();
        let mut stop = shutdown.clone();
        tokio::select! {
            _ = tokio::time::timeout(FIRST_ELECTION_LIMIT, first.changed()) => {}
            _ = stop.wait_for(|stop| *stop) => {}
        }
        Some(election)
    } else {
        drop(leadership_sender);
        None
    };

    Loop::new(config, Arc::clone(&shared), shutdown).run().await;

    if let Some(election) = election {
        // After the loop: no reconcile runs, so the lease can go.
        let stopping = tokio::task::spawn_blocking(move || election.stop());
        if tokio::time::timeout(Duration::from_secs(10), stopping)
            .await
            .is_err()
        {
            tracing::warn!("the lease was not released within 10 s: it expires by itself");
        }
    }

    shared.cancel.store(true, Ordering::SeqCst);
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!("the HTTP server failed: {error}"),
        Ok(Err(error)) => tracing::warn!("the HTTP server failed: {error}"),
        Err(_) => tracing::warn!("the HTTP server did not stop within 5 s"),
    }
    tracing::info!("deed daemon stopped");
    Ok(())
}

/// Waits for SIGINT or SIGTERM and tells everyone to stop; a second signal,
/// a second or more later, ends the process at once (exit 130).
async fn signals(mut signals: Signals, shutdown: channel::Sender<bool>) {
    let first = signals.next().await;
    tracing::info!("{first} received: stopping (a reconcile in progress finishes first)");
    let _ = shutdown.send(true);
    // Some supervisors signal the process and then its group: a repeat
    // within a second is the same request.
    let first_at = Instant::now();
    loop {
        let second = signals.next().await;
        if first_at.elapsed() >= Duration::from_secs(1) {
            tracing::warn!("{second} received again: exiting now");
            std::process::exit(130);
        }
    }
}

/// The stop signals, listened to from the start.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!("cannot listen for {name}: {error}");
                None
            }
        };
        Signals {
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    #[cfg(not(unix))]
    fn new() -> Signals {
        Signals {}
    }

    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.interrupt) => "SIGINT",
            _ = recv(&mut self.terminate) => "SIGTERM",
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// What the loop publishes for the HTTP handlers.
pub(crate) struct Shared {
    report: Mutex<Report>,
    api_token: Option<String>,
    state_location: String,
    /// Held while this process has the store open: the loop and `/state`
    /// take turns.
    store_gate: Mutex<()>,
    /// Set on shutdown: a wait for the state's lock is abandoned.
    cancel: AtomicBool,
    /// Whether this daemon leads (always, on sled).
    leadership: channel::Receiver<Leadership>,
    /// This daemon's name in the lease: host, pid, listen address.
    id: String,
}

impl Shared {
    fn report(&self) -> MutexGuard<'_, Report> {
        self.report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This daemon's role now.
    fn role(&self) -> Role {
        self.leadership.borrow().current()
    }

    /// `/status`: the last results, and who leads.
    fn status_json(&self) -> serde_json::Value {
        let role = self.role();
        let mut status = self.report().status_json();
        let (name, leader, generation) = match &role {
            Role::Leader { fence, .. } => (
                "leader",
                Some(self.id.clone()),
                fence.as_ref().map(|fence| fence.generation),
            ),
            Role::Standby { leader } => ("standby", leader.clone(), None),
        };
        if let Some(object) = status.as_object_mut() {
            object.insert("role".to_string(), json!(name));
            object.insert("leader".to_string(), json!(leader));
            object.insert("id".to_string(), json!(self.id));
            object.insert("lease_generation".to_string(), json!(generation));
        }
        status
    }

    /// The state as `deed state dump` writes it (blocking).
    fn dump_state(&self) -> Result<Vec<u8>, String> {
        let _gate = self
            .store_gate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let store = open_store(
            &self.state_location,
            Access::Read,
            &self.cancel,
            Duration::from_secs(10),
        )
        .map_err(|error| error.to_string())?;
        let mut bytes = Vec::new();
        store.dump(&mut bytes).map_err(|error| error.to_string())?;
        Ok(bytes)
    }
}

/// The outcome of the last reconciles, as `/status`, `/metrics` and `/plan`
/// show them.
struct Report {
    dry_run: bool,
    /// `None` until the first reconcile ends.
    result: Option<&'static str>,
    last_error: Option<String>,
    /// The problems of the last invalid reconcile, as `PATH:LINE:COL: message`.
    errors: Vec<String>,
    time: Option<Timestamp>,
    last_success: Option<Timestamp>,
    revision: Option<String>,
    trigger: Option<&'static str>,
    duration_seconds: f64,
    /// Changes of the last plan, applied, already in place, pending items.
    changes: usize,
    applied: usize,
    skipped: usize,
    pending: usize,
    spec_files: usize,
    /// The next retry after a failure, when backing off.
    retry_in_seconds: Option<f64>,
    metrics: Metrics,
    /// The last plan, rendered as `deed plan --format json` prints it.
    plan: Option<Arc<String>>,
    /// How the last plan was made, and how long after the start of its
    /// reconcile it was ready.
    planned: Option<(Made, f64)>,
}

impl Report {
    fn new(dry_run: bool) -> Report {
        Report {
            dry_run,
            result: None,
            last_error: None,
            errors: Vec::new(),
            time: None,
            last_success: None,
            revision: None,
            trigger: None,
            duration_seconds: 0.0,
            changes: 0,
            applied: 0,
            skipped: 0,
            pending: 0,
            spec_files: 0,
            retry_in_seconds: None,
            metrics: Metrics::default(),
            plan: None,
            planned: None,
        }
    }

    fn status_json(&self) -> serde_json::Value {
        let reconciles: serde_json::Map<String, serde_json::Value> = metrics::RESULTS
            .iter()
            .map(|result| (result.to_string(), json!(self.metrics.total(result))))
            .collect();
        json!({
            "result": self.result,
            "last_error": self.last_error,
            "time": self.time.map(|time| time.to_string()),
            "revision": self.revision,
            "dry_run": self.dry_run,
            "errors": self.errors,
            "trigger": self.trigger,
            "duration_seconds": self.duration_seconds,
            "last_success": self.last_success.map(|time| time.to_string()),
            "changes": self.changes,
            "applied": self.applied,
            "skipped": self.skipped,
            "pending_changes": self.metrics.pending_changes(),
            "pending": self.pending,
            "spec_files": self.spec_files,
            "plan_seconds": self.planned.as_ref().map(|(_, seconds)| *seconds),
            "planned": self.planned.as_ref().map(|(made, _)| made.name()),
            "planned_accounts": self.planned.as_ref().and_then(|(made, _)| made.accounts()),
            "retry_in_seconds": self.retry_in_seconds,
            "reconciles": reconciles,
        })
    }
}

/// Why a reconcile runs (for the logs and `/status` only: the reconcile
/// itself is level-triggered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Start,
    Specs,
    Interval,
    Retry,
    State,
    Rescan,
    Leadership,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Specs => "specs changed",
            Trigger::Interval => "interval",
            Trigger::Retry => "retry after backoff",
            Trigger::State => "state changed",
            Trigger::Rescan => "rescan",
            Trigger::Leadership => "became the leader",
        }
    }
}

/// After a failure: the inputs that failed, and when to try them again.
#[derive(Clone, Debug)]
struct Backoff {
    specs: [u8; 32],
    state: [u8; 32],
    until: Instant,
    /// The wait that was chosen (doubles on each failure of the same inputs).
    delay: Duration,
}

/// What a reconcile job needs.
struct Job {
    trigger: Trigger,
    dirty: BTreeSet<String>,
    full: bool,
    backoff: Option<Backoff>,
    /// This daemon's role when the job starts: a standby plans read-only.
    role: Role,
}

/// What a job did.
struct Done {
    trigger: Trigger,
    outcome: Outcome,
    specs: [u8; 32],
    /// The state's fingerprint once the store was closed again.
    state: [u8; 32],
    duration: Duration,
    now: Timestamp,
    revision: Option<String>,
    spec_files: usize,
    parsed_files: usize,
    /// How long reading and building the specs took.
    specs_duration: Duration,
    /// Planned read-only as a standby.
    standby: bool,
    /// How the plan was made (full, part of the accounts), if one was.
    made: Option<Made>,
    /// From the start of the job to the plan being ready.
    plan_duration: Option<Duration>,
}

enum Outcome {
    /// Same specs, same state, still backing off: nothing was run.
    Skipped,
    /// Shutdown while waiting for the state: nothing was written.
    Abandoned,
    Invalid(Arc<Vec<Diagnostic>>),
    Reconciled {
        plan: Plan,
        applied: usize,
        skipped: usize,
    },
    Refused {
        message: String,
        plan: Option<Plan>,
    },
    Error(String),
}

impl Outcome {
    fn result(&self, dry_run: bool) -> &'static str {
        match self {
            Outcome::Reconciled { applied, .. } if *applied > 0 && !dry_run => "applied",
            Outcome::Reconciled { .. } => "unchanged",
            Outcome::Invalid(_) => "invalid",
            Outcome::Refused { .. } => "refused",
            Outcome::Error(_) | Outcome::Skipped | Outcome::Abandoned => "error",
        }
    }
}

/// The reconcile loop: one job at a time.
struct Loop {
    config: DaemonConfig,
    shared: Arc<Shared>,
    shutdown: channel::Receiver<bool>,
    cache: Option<Caches>,
    backoff: Option<Backoff>,
    /// The diagnostics last logged, so a retry does not log them again.
    logged_errors: Option<Arc<Vec<Diagnostic>>>,
}

impl Loop {
    fn new(config: DaemonConfig, shared: Arc<Shared>, shutdown: channel::Receiver<bool>) -> Loop {
        let cache = Some(Caches::new(&config.specs));
        Loop {
            config,
            shared,
            shutdown,
            cache,
            backoff: None,
            logged_errors: None,
        }
    }

    async fn run(mut self) {
        let mut leadership = self.shared.leadership.clone();
        let (mut leading, mut state_version) = {
            let seen = leadership.borrow_and_update();
            (
                matches!(seen.current(), Role::Leader { .. }),
                seen.state_version,
            )
        };
        let mut elections_open = true;
        let (sender, mut events) = mpsc::unbounded_channel();
        let mut watcher = start_watching(&self.config.specs, &sender, true);
        let mut next: Option<Trigger> = Some(Trigger::Start);
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut full = true;
        let mut next_interval = tokio::time::Instant::now() + self.config.interval;
        let mut state_poll = tokio::time::interval(STATE_POLL);
        state_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            if *self.shutdown.borrow() {
                break;
            }
            if let Some(trigger) = next.take() {
                let role = self.shared.role();
                leading = matches!(role, Role::Leader { .. });
                let job = Job {
                    trigger,
                    dirty: std::mem::take(&mut dirty),
                    full: std::mem::replace(&mut full, false),
                    backoff: self.backoff.clone(),
                    role,
                };
                let Some(done) = self.run_job(job).await else {
                    break;
                };
                if matches!(done.outcome, Outcome::Abandoned) {
                    break;
                }
                if !matches!(done.outcome, Outcome::Skipped) {
                    next_interval = tokio::time::Instant::now() + self.config.interval;
                }
                self.publish(done);
                if watcher.is_none() {
                    watcher = start_watching(&self.config.specs, &sender, false);
                }
                continue;
            }

            let retry_at = self
                .backoff
                .as_ref()
                .map(|backoff| tokio::time::Instant::from_std(backoff.until));
            tokio::select! {
                _ = self.shutdown.changed() => {}
                event = events.recv() => {
                    let Some(event) = event else { continue };
                    let mut trigger = absorb(event, &mut dirty, &mut full);
                    // Let a burst (a `git pull`, a save that writes then
                    // renames) settle into one reconcile.
                    let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
                    loop {
                        let wait = SETTLE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                        match tokio::time::timeout(wait, events.recv()).await {
                            Ok(Some(event)) => {
                                if absorb(event, &mut dirty, &mut full) == Trigger::Rescan {
                                    trigger = Trigger::Rescan;
                                }
                            }
                            Ok(None) | Err(_) => break,
                        }
                    }
                    next = Some(trigger);
                }
                _ = tokio::time::sleep_until(next_interval) => {
                    full = true;
                    next = Some(Trigger::Interval);
                }
                _ = sleep_until_some(retry_at), if retry_at.is_some() => {
                    next = Some(Trigger::Retry);
                }
                changed = leadership.changed(), if elections_open => {
                    if changed.is_err() {
                        elections_open = false;
                        continue;
                    }
                    let (now_leading, version) = {
                        let seen = leadership.borrow_and_update();
                        (matches!(seen.current(), Role::Leader { .. }), seen.state_version)
                    };
                    let moved = version != state_version;
                    state_version = version;
                    if now_leading && !leading {
                        // The standby's failures were a standby's: start over.
                        self.backoff = None;
                        full = true;
                        next = Some(Trigger::Leadership);
                    } else if moved && (!now_leading || self.backoff.is_some()) {
                        // Another process wrote the state: a standby's plan
                        // (or a leader's failed one) is out of date.
                        next = Some(Trigger::State);
                    }
                    leading = now_leading;
                }
                _ = state_poll.tick(), if self.backoff.is_some() => {
                    let changed = self
                        .backoff
                        .as_ref()
                        .is_some_and(|backoff| state_fingerprint(&self.config.state) != backoff.state);
                    if changed {
                        next = Some(Trigger::State);
                    }
                }
            }
        }
        drop(watcher);
        tracing::debug!("stopped watching {}", self.config.specs.display());
    }

    /// Runs one job on a blocking thread; on shutdown, a wait for the
    /// state's lock is abandoned and anything else finishes.
    async fn run_job(&mut self, job: Job) -> Option<Done> {
        let mut cache = self
            .cache
            .take()
            .unwrap_or_else(|| Caches::new(&self.config.specs));
        let config = self.config.clone();
        let shared = Arc::clone(&self.shared);
        let mut handle = tokio::task::spawn_blocking(move || {
            let done = reconcile_job(&config, &shared, &mut cache, job);
            (cache, done)
        });
        let joined = tokio::select! {
            joined = &mut handle => joined,
            _ = self.shutdown.wait_for(|stop| *stop) => {
                self.shared.cancel.store(true, Ordering::SeqCst);
                handle.await
            }
        };
        match joined {
            Ok((cache, done)) => {
                self.cache = Some(cache);
                Some(done)
            }
            Err(error) => {
                // A panic in the job: the cache is rebuilt on the next run,
                // and the failure is counted and backed off like any other.
                Some(Done {
                    trigger: Trigger::Rescan,
                    outcome: Outcome::Error(format!("the reconcile failed unexpectedly: {error}")),
                    specs: [0; 32],
                    state: state_fingerprint(&self.config.state),
                    duration: Duration::ZERO,
                    now: self.config.clock.now(),
                    revision: None,
                    spec_files: 0,
                    parsed_files: 0,
                    specs_duration: Duration::ZERO,
                    standby: false,
                    made: None,
                    plan_duration: None,
                })
            }
        }
    }

    /// Records a failure of these inputs: back off, doubling the wait while
    /// the same specs keep failing. (A change of the state retries at once
    /// but does not reset the wait: any process that opens the state changes
    /// its files.)
    fn fail(&mut self, specs: [u8; 32], state: [u8; 32]) {
        let delay = match &self.backoff {
            Some(previous) if previous.specs == specs => {
                (previous.delay * 2).min(self.config.interval)
            }
            _ => FIRST_BACKOFF.min(self.config.interval),
        };
        self.backoff = Some(Backoff {
            specs,
            state,
            until: Instant::now() + delay,
            delay,
        });
    }

    /// Logs a finished job, updates the backoff and publishes the result.
    fn publish(&mut self, done: Done) {
        if matches!(done.outcome, Outcome::Skipped | Outcome::Abandoned) {
            tracing::debug!(
                trigger = done.trigger.name(),
                "specs and state unchanged since the last failure: still backing off"
            );
            return;
        }
        let dry_run = self.config.dry_run || done.standby;
        let result = done.outcome.result(dry_run);
        let seconds = done.duration.as_secs_f64();
        let duration_ms = (seconds * 1000.0 * 10.0).round() / 10.0;
        let trigger = done.trigger.name();
        let revision = done.revision.as_deref().unwrap_or("-");
        let failed = matches!(result, "invalid" | "refused" | "error");
        if failed {
            self.fail(done.specs, done.state);
        } else {
            self.backoff = None;
            self.logged_errors = None;
        }
        let retry_in = self.backoff.as_ref().map(|backoff| backoff.delay);
        let retry_text = retry_in
            .map(|delay| {
                format!(
                    "; retrying in {} s unless the specs or the state change",
                    delay.as_secs_f64()
                )
            })
            .unwrap_or_default();

        let mut report = self.shared.report();
        report.metrics.record(result, seconds);
        report.result = Some(result);
        report.time = Some(done.now);
        report.revision = done.revision.clone();
        report.trigger = Some(trigger);
        report.duration_seconds = seconds;
        report.spec_files = done.spec_files;
        if let (Some(made), Some(ready)) = (&done.made, done.plan_duration) {
            report.planned = Some((made.clone(), ready.as_secs_f64()));
        }
        report.retry_in_seconds = retry_in.map(|delay| delay.as_secs_f64());
        if !failed {
            report.last_success = Some(done.now);
            report.last_error = None;
            report.errors.clear();
            report
                .metrics
                .set_last_success(done.now.as_millisecond() as f64 / 1000.0);
        }
        match done.outcome {
            Outcome::Reconciled {
                plan,
                applied,
                skipped,
            } => {
                let pending = if dry_run {
                    plan.changes.len()
                } else {
                    plan.changes.len().saturating_sub(applied + skipped)
                };
                report.changes = plan.changes.len();
                report.applied = applied;
                report.skipped = skipped;
                report.pending = plan.pending.len();
                report.metrics.set_pending_changes(pending as u64);
                report.plan = Some(Arc::new(crate::render::json::render_json(&plan)));
                let summary = &plan.summary;
                let what = if done.standby && !self.config.dry_run {
                    format!(
                        "standby: {} change(s) planned; the leader applies",
                        plan.changes.len()
                    )
                } else if dry_run {
                    format!(
                        "dry run: {} change(s) planned, none applied",
                        plan.changes.len()
                    )
                } else if applied > 0 {
                    format!("{applied} change(s) applied")
                } else {
                    "no changes: the state matches the specs".to_string()
                };
                tracing::info!(
                    result,
                    trigger,
                    changes = plan.changes.len(),
                    create = summary.create,
                    update = summary.update,
                    transfer = summary.transfer,
                    remove = summary.remove,
                    applied,
                    skipped,
                    pending = plan.pending.len(),
                    files = done.spec_files,
                    parsed = done.parsed_files,
                    specs_ms = done.specs_duration.as_millis() as u64,
                    plan_ms = done
                        .plan_duration
                        .map_or(0, |ready| ready.as_millis() as u64),
                    planned = done.made.as_ref().map_or("-", Made::name),
                    duration_ms,
                    revision,
                    "reconcile {result}: {what} ({trigger}, {duration_ms} ms)"
                );
            }
            Outcome::Invalid(diagnostics) => {
                let messages: Vec<String> = diagnostics
                    .iter()
                    .map(|diagnostic| diagnostic.to_string())
                    .collect();
                let again = self
                    .logged_errors
                    .as_ref()
                    .is_some_and(|logged| **logged == *diagnostics);
                if !again {
                    for message in &messages {
                        tracing::warn!("{message}");
                    }
                }
                report.last_error = Some(format!(
                    "{} problem(s) with the specs; nothing was applied",
                    messages.len()
                ));
                report.errors = messages;
                tracing::warn!(
                    result,
                    trigger,
                    errors = diagnostics.len(),
                    files = done.spec_files,
                    parsed = done.parsed_files,
                    specs_ms = done.specs_duration.as_millis() as u64,
                    duration_ms,
                    revision,
                    "reconcile invalid: {} problem(s){}; nothing applied, the last applied state is kept{retry_text}",
                    diagnostics.len(),
                    if again { " (as logged before)" } else { "" }
                );
                self.logged_errors = Some(diagnostics);
            }
            Outcome::Refused { message, plan } => {
                if let Some(plan) = plan {
                    report.changes = plan.changes.len();
                    report.pending = plan.pending.len();
                    report
                        .metrics
                        .set_pending_changes(plan.changes.len() as u64);
                    report.plan = Some(Arc::new(crate::render::json::render_json(&plan)));
                }
                report.applied = 0;
                report.skipped = 0;
                report.errors = vec![message.clone()];
                report.last_error = Some(message.clone());
                tracing::warn!(
                    result,
                    trigger,
                    duration_ms,
                    revision,
                    "reconcile refused: {message}; nothing applied{retry_text}"
                );
            }
            Outcome::Error(message) => {
                report.errors = vec![message.clone()];
                report.last_error = Some(message.clone());
                tracing::error!(
                    result,
                    trigger,
                    duration_ms,
                    revision,
                    "reconcile error: {message}{retry_text}"
                );
            }
            Outcome::Skipped | Outcome::Abandoned => {}
        }
    }
}

/// Adds a watcher event to the pending work; returns its trigger.
fn absorb(event: watch::WatchEvent, dirty: &mut BTreeSet<String>, full: &mut bool) -> Trigger {
    match event {
        watch::WatchEvent::Changed(paths) => {
            dirty.extend(paths);
            Trigger::Specs
        }
        watch::WatchEvent::Rescan(why) => {
            tracing::warn!("watching the specs: {why}; reading every file again");
            *full = true;
            Trigger::Rescan
        }
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn start_watching(
    specs: &Path,
    sender: &mpsc::UnboundedSender<watch::WatchEvent>,
    first: bool,
) -> Option<watch::SpecsWatcher> {
    match watch::watch(specs, sender.clone()) {
        Ok(watcher) => {
            if !first {
                tracing::info!("watching {} again", specs.display());
            }
            Some(watcher)
        }
        Err(error) => {
            if first {
                tracing::warn!(
                    "cannot watch {}: {error}; reconciling every interval only, trying again after each reconcile",
                    specs.display()
                );
            }
            None
        }
    }
}

/// What the loop keeps between reconciles: the parsed specs, the last
/// state loaded and the last plan.
struct Caches {
    specs: SpecsCache,
    state: StateCache,
    planner: Planner,
}

impl Caches {
    fn new(specs: &Path) -> Caches {
        Caches {
            specs: SpecsCache::new(specs),
            state: StateCache::default(),
            planner: Planner::default(),
        }
    }
}

/// A plan made, with how, and when it was ready.
struct Planned {
    plan: Plan,
    made: Made,
    ready: Duration,
}

/// Plans the last reloaded specs against a snapshot of the state.
fn plan_with(
    caches: &mut Caches,
    snapshot: &Snapshot,
    now: Timestamp,
    full: bool,
    started: Instant,
) -> Result<Planned, PlanFailure> {
    let touched = caches.state.take_touched();
    let (plan, made) = caches
        .planner
        .plan(&mut caches.specs, snapshot, touched, now, full)?;
    Ok(Planned {
        plan,
        made,
        ready: started.elapsed(),
    })
}

/// One reconcile, on a blocking thread: reload the specs, plan, and (unless
/// a dry run or a standby) open the store, check that the state is the one
/// planned against, apply, close the store.
///
/// The state of the last reconcile is kept ([`state_cache`]) and the plan
/// is made incrementally ([`incremental`]). A sled state that no other
/// process opened since this daemon closed it (its files are as they were)
/// is planned without opening it; it is opened only to write.
fn reconcile_job(config: &DaemonConfig, shared: &Shared, caches: &mut Caches, job: Job) -> Done {
    let started = Instant::now();
    let loaded = caches.specs.reload(&job.dirty, job.full);
    let specs_duration = started.elapsed();
    let state_before = state_fingerprint(&config.state);
    let now = config.clock.now();
    let (standby, fence) = match &job.role {
        Role::Leader { fence, .. } => (false, fence.clone()),
        Role::Standby { .. } => (true, None),
    };
    let dry_run = config.dry_run || standby;
    let done = |outcome: Outcome,
                revision: Option<String>,
                state: [u8; 32],
                planned: Option<(&Made, Duration)>| Done {
        trigger: job.trigger,
        outcome,
        specs: loaded.fingerprint,
        state,
        duration: started.elapsed(),
        now,
        revision,
        spec_files: loaded.files,
        parsed_files: loaded.parsed,
        specs_duration,
        standby,
        made: planned.map(|(made, _)| made.clone()),
        plan_duration: planned.map(|(_, ready)| ready),
    };
    if let Some(backoff) = &job.backoff {
        if backoff.specs == loaded.fingerprint
            && backoff.state == state_before
            && Instant::now() < backoff.until
        {
            return done(Outcome::Skipped, None, state_before, None);
        }
    }
    let revision = crate::spec::git_revision(&config.specs);
    if loaded.broken {
        if let Err(diagnostics) = caches.specs.desired() {
            return done(Outcome::Invalid(diagnostics), revision, state_before, None);
        }
    }
    let options = ReconcileOptions {
        revision: revision.clone(),
        max_removal: config.max_removal,
        allow_removals: config.allow_removals,
        dry_run,
        ..ReconcileOptions::new(now)
    };
    let failed = |failure: PlanFailure| match failure {
        PlanFailure::Invalid(diagnostics) => Outcome::Invalid(diagnostics),
        PlanFailure::Rules(diagnostics) => Outcome::Invalid(Arc::new(diagnostics)),
    };

    // Nobody opened the state since this daemon closed it: plan at once.
    let untouched = !store::is_postgres_url(&config.state)
        && !job.full
        && caches.state.closed_at == Some(state_before);
    let mut early: Option<(Snapshot, Planned)> = None;
    if untouched {
        if let Some(snapshot) = caches.state.peek() {
            match plan_with(caches, &snapshot, now, false, started) {
                Err(failure) => return done(failed(failure), revision, state_before, None),
                Ok(planned) => {
                    if dry_run || planned.plan.is_empty() {
                        let outcome =
                            finish_without_writing(planned.plan, &snapshot.state, &options);
                        let at = Some((&planned.made, planned.ready));
                        return done(outcome, revision, state_before, at);
                    }
                    early = Some((snapshot, planned));
                }
            }
        }
    }

    let access = if dry_run {
        Access::Read
    } else {
        Access::Write { wait: false }
    };
    let mut planned_at: Option<(Made, Duration)> = None;
    let outcome = {
        let _gate = shared
            .store_gate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let lock_wait = config.interval.min(LOCK_WAIT_LIMIT);
        match open_store(&config.state, access, &shared.cancel, lock_wait) {
            Err(OpenError::Cancelled) => Outcome::Abandoned,
            Err(error) => Outcome::Error(error.to_string()),
            Ok(opened) => {
                // A leader's commit is refused once its lease moved on.
                opened.set_fence(fence);
                let snapshot = CachingStore::new(opened.as_ref(), &mut caches.state).snapshot();
                match snapshot {
                    Err(error) => Outcome::Error(error.to_string()),
                    Ok(snapshot) => {
                        let planned = match early.take() {
                            Some((seen, planned))
                                if seen.generation == snapshot.generation
                                    && Arc::ptr_eq(&seen.state, &snapshot.state) =>
                            {
                                Ok(planned)
                            }
                            _ => plan_with(caches, &snapshot, now, job.full, started),
                        };
                        match planned {
                            Err(failure) => failed(failure),
                            Ok(planned) => {
                                planned_at = Some((planned.made.clone(), planned.ready));
                                let store = CachingStore::new(opened.as_ref(), &mut caches.state);
                                write_plan(planned.plan, &snapshot.state, &store, &options)
                            }
                        }
                    }
                }
            }
        }
        // The store is closed here, before the gate is released.
    };
    let state_after = state_fingerprint(&config.state);
    caches.state.closed_at = match outcome {
        Outcome::Error(_) | Outcome::Abandoned => None,
        _ => Some(state_after),
    };
    let at = planned_at.as_ref().map(|(made, ready)| (made, *ready));
    done(outcome, revision, state_after, at)
}

/// A dry run's (or an empty plan's) outcome: the checks of an apply, no
/// write.
fn finish_without_writing(plan: Plan, state: &State, options: &ReconcileOptions) -> Outcome {
    match reconcile::check_plan(&plan, state, options) {
        Ok(()) => Outcome::Reconciled {
            plan,
            applied: 0,
            skipped: 0,
        },
        Err(ReconcileError::Refused(message)) => Outcome::Refused {
            message,
            plan: Some(plan),
        },
        Err(ReconcileError::Rules(diagnostics)) => Outcome::Invalid(Arc::new(diagnostics)),
        Err(error) => Outcome::Error(error.to_string()),
    }
}

/// Checks and applies a plan made against `state`, the state in `store`.
fn write_plan(plan: Plan, state: &State, store: &dyn Store, options: &ReconcileOptions) -> Outcome {
    if let Err(error) = reconcile::check_plan(&plan, state, options) {
        return match error {
            ReconcileError::Refused(message) => Outcome::Refused {
                message,
                plan: Some(plan),
            },
            ReconcileError::Rules(diagnostics) => Outcome::Invalid(Arc::new(diagnostics)),
            error => Outcome::Error(error.to_string()),
        };
    }
    match reconcile::apply_checked(&plan, state, store, options) {
        Ok((applied, skipped)) => Outcome::Reconciled {
            plan,
            applied,
            skipped,
        },
        Err(error) => Outcome::Error(error.to_string()),
    }
}

#[derive(Debug, thiserror::Error)]
enum OpenError {
    /// Shutdown while waiting for another process to release the state.
    #[error("stopped while waiting for the state")]
    Cancelled,
    /// Another process held the state for the whole wait.
    #[error("state {location} is in use by another deed process for more than {seconds} s")]
    Busy { location: String, seconds: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Opens the store, waiting (up to `limit`) while another process has it;
/// a shutdown abandons the wait.
fn open_store(
    location: &str,
    access: Access,
    cancel: &AtomicBool,
    limit: Duration,
) -> Result<Box<dyn Store>, OpenError> {
    let started = Instant::now();
    let mut told = false;
    loop {
        match store::open(location, access) {
            Ok(store) => return Ok(store),
            Err(StoreError::InUse { .. }) => {
                if cancel.load(Ordering::SeqCst) {
                    return Err(OpenError::Cancelled);
                }
                if started.elapsed() >= limit {
                    return Err(OpenError::Busy {
                        location: location.to_string(),
                        seconds: limit.as_secs(),
                    });
                }
                if !told {
                    tracing::info!("state {location} is in use by another deed process: waiting");
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Names what the state's files look like (sizes, times, inodes): any write
/// by any process changes it. Cheap: no lock, no read of the data.
fn state_fingerprint(location: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut entries = Vec::new();
    collect_stamps(Path::new(location), "", 0, &mut entries);
    entries.sort();
    for entry in entries {
        hasher.update(entry.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().into()
}

fn collect_stamps(path: &Path, relative: &str, depth: usize, out: &mut Vec<String>) {
    let Ok(metadata) = std::fs::metadata(path) else {
        out.push(format!("{relative} missing"));
        return;
    };
    if metadata.is_dir() {
        if depth > 4 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            collect_stamps(&entry.path(), &format!("{relative}/{name}"), depth + 1, out);
        }
        return;
    }
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_nanos())
        .unwrap_or(0);
    #[cfg(unix)]
    let inode = {
        use std::os::unix::fs::MetadataExt;
        metadata.ino()
    };
    #[cfg(not(unix))]
    let inode = 0;
    out.push(format!("{relative} {} {modified} {inode}", metadata.len()));
}
