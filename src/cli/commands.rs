//! One function per command. Each reads what it needs (specs, state, files),
//! calls the pure core, writes through the store, and prints.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::args::{
    ApplyArgs, Command, HistoryArgs, HistoryFormat, InventoryCommand, InvitationsCommand,
    OutboxArgs, PlanArgs, PlanFormat, Shell, ShowFormat, StateCommand,
};
use super::{Config, Outcome};
use crate::apply::{self, ApplyContext};
use crate::desired::Desired;
use crate::diagnostic::Diagnostic;
use crate::model::{to_fields, FieldValue, Fields, Kind, State, UserStatus};
use crate::plan::{self, Action, Change, Plan, PlanConfig};
use crate::reconcile::{self, ReconcileError, ReconcileOptions};
use crate::render;
use crate::store::{self, Access, Commit, HistoryEntry, Store};

/// Largest plan or inventory file read.
const MAX_INPUT_BYTES: u64 = 1 << 30;

pub fn run(command: &Command, config: &Config) -> Result<Outcome> {
    match command {
        Command::Validate => validate(config),
        Command::Plan(args) => plan_command(args, config),
        Command::Apply(args) => apply_command(args, config),
        Command::Daemon(args) => daemon_command(args, config),
        Command::State(command) => state_command(command, config),
        Command::Inventory(InventoryCommand::Import { file, wait }) => {
            inventory_import(file, *wait, config)
        }
        Command::Invitations(InvitationsCommand::Accept { email, wait }) => {
            accept_invitation(email, *wait, config)
        }
        Command::History(args) => history(args, config),
        Command::Outbox(args) => outbox(args, config),
        Command::Schema => {
            let schema = crate::spec::fragment_schema();
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(Outcome::Success)
        }
        Command::Completions { shell } => {
            let mut command = <super::Cli as clap::CommandFactory>::command();
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut command, "deed", &mut std::io::stdout());
            Ok(Outcome::Success)
        }
    }
}

/// Prints diagnostics to standard error and makes the error that ends the run.
fn report(diagnostics: &[Diagnostic], what: &str) -> anyhow::Error {
    let mut stderr = std::io::stderr().lock();
    for diagnostic in diagnostics {
        let _ = writeln!(stderr, "{diagnostic}");
    }
    anyhow!(
        "{} {what}; nothing was changed",
        plural(diagnostics.len(), "problem")
    )
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

fn load_specs(config: &Config) -> Result<Desired> {
    crate::spec::load(&config.specs).map_err(|diagnostics| report(&diagnostics, "in the specs"))
}

/// The state, loaded on a thread of its own while this one reads the specs;
/// the thread then closes the store while this one plans. Dropping the
/// loader waits for the thread: the store is closed (and its lock released)
/// before the command returns.
struct StateLoader {
    state: std::sync::mpsc::Receiver<Result<State>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StateLoader {
    /// Starts opening the state for reading and loading it.
    fn start(config: &Config) -> StateLoader {
        let location = config.state.clone();
        let (sender, state) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || match store::open(&location, Access::Read) {
            Ok(store) => {
                let _ = sender.send(store.load().map_err(anyhow::Error::from));
                // Closed here, while the command plans.
                drop(store);
            }
            Err(error) => {
                let _ = sender.send(Err(error.into()));
            }
        });
        StateLoader {
            state,
            thread: Some(thread),
        }
    }

    /// Leaves the thread to itself: the command ends without waiting for
    /// it (the process exits right after, which closes what it opened; it
    /// only reads).
    fn abandon(mut self) {
        self.thread = None;
    }

    /// The loaded state, once it is there.
    fn state(&mut self) -> Result<State> {
        match self.state.recv() {
            Ok(state) => state,
            // The thread ended without sending: its panic goes on here.
            Err(_) => {
                if let Some(Err(panic)) = self.thread.take().map(|thread| thread.join()) {
                    std::panic::resume_unwind(panic);
                }
                bail!("the state could not be loaded")
            }
        }
    }
}

impl Drop for StateLoader {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if let Err(panic) = thread.join() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

fn open(config: &Config, access: Access) -> Result<Box<dyn Store>> {
    Ok(store::open(&config.state, access)?)
}

fn validate(config: &Config) -> Result<Outcome> {
    let counts = crate::spec::check(&config.specs)
        .map_err(|diagnostics| report(&diagnostics, "in the specs"))?;
    println!(
        "The specs are valid: {}, {}, {}, {}, {}, {}.",
        plural(counts.accounts, "account"),
        plural(counts.users, "user"),
        plural(counts.groups, "group"),
        plural(counts.organizations, "organization"),
        plural(counts.products, "product"),
        plural(counts.licenses, "license")
    );
    Ok(Outcome::Success)
}

fn make_plan(desired: &Desired, state: &State, config: &Config) -> Result<Plan> {
    plan::plan(desired, state, &PlanConfig { now: config.now })
        .map_err(|diagnostics| report(&diagnostics, "with the plan"))
}

/// The state as it will be once `plan` is applied (for `--diff`).
fn state_after(plan: &Plan, state: &State) -> State {
    let mut after = state.clone();
    for change in &plan.changes {
        let next = match change.action {
            Action::Remove => None,
            _ => {
                let mut fields: Fields = after
                    .fields(change.kind, &change.object)
                    .unwrap_or_default();
                for (name, value) in change.after_fields().into_iter().flatten() {
                    fields.insert(name, value);
                }
                Some(fields)
            }
        };
        let _ = after.put_fields(change.kind, &change.object, next);
    }
    after
}

fn check_max_removal(max_removal: f64) -> Result<()> {
    if !(0.0..=100.0).contains(&max_removal) {
        bail!("--max-removal {max_removal}: give a percentage from 0 to 100");
    }
    Ok(())
}

/// The accounts whose YAML a plan changes: where each change lands and,
/// for moves, where it leaves from. Sorted.
fn changed_accounts(plan: &Plan) -> Vec<String> {
    let mut accounts: Vec<String> = plan
        .changes
        .iter()
        .flat_map(|change| {
            let from = change
                .before()
                .and_then(|f| f.text("account"))
                .map(str::to_string);
            std::iter::once(change.account.to_string()).chain(from)
        })
        .collect();
    accounts.sort();
    accounts.dedup();
    accounts
}

fn plan_command(args: &PlanArgs, config: &Config) -> Result<Outcome> {
    check_max_removal(args.max_removal)?;
    let started = std::time::Instant::now();
    let mut state_loader = StateLoader::start(config);
    // The specs are read on this thread meanwhile; their errors come first,
    // and at once: the command does not wait for a state that may be slow
    // to answer (a PostgreSQL server that does not respond).
    let desired = match load_specs(config) {
        Ok(desired) => desired,
        Err(error) => {
            state_loader.abandon();
            return Err(error);
        }
    };
    let specs_loaded = started.elapsed();
    let state = state_loader.state()?;
    let state_loaded = started.elapsed();
    let plan = make_plan(&desired, &state, config)?;
    // Both loads start at once: each time is from the start.
    tracing::debug!(
        specs_ms = specs_loaded.as_millis() as u64,
        state_ms = state_loaded.as_millis() as u64,
        plan_ms = (started.elapsed() - state_loaded).as_millis() as u64,
        changes = plan.changes.len(),
        "planned"
    );
    let options = ReconcileOptions {
        actor: args.actor.clone(),
        max_removal: args.max_removal,
        allow_removals: args.allow_removals,
        ..ReconcileOptions::new(config.now)
    };
    // A plan refused by the removal guard is still shown (with the warning),
    // then exits 1; any other refusal ends the run here.
    let refusal = match reconcile::check_plan(&plan, &state, &options) {
        Ok(()) => None,
        Err(ReconcileError::Refused(message)) => Some(message),
        Err(error) => return Err(error.into()),
    };
    if let Some(out) = &args.out {
        if refusal.is_none() {
            std::fs::File::create(out)
                .and_then(|file| render::json::write_json(&plan, file))
                .with_context(|| format!("cannot write the plan to {}", out.display()))?;
        }
    }
    let diff = if args.diff {
        let after = state_after(&plan, &state);
        let color = config.color && args.format == PlanFormat::Text;
        Some(render::diff::render_diff(
            &state,
            &after,
            &changed_accounts(&plan),
            color,
        ))
    } else {
        None
    };
    let mut stdout = std::io::stdout().lock();
    match args.format {
        PlanFormat::Json => render::json::write_json(&plan, &mut stdout)?,
        PlanFormat::Markdown => stdout.write_all(
            render::markdown::render_markdown(&plan, diff.as_deref(), refusal.as_deref())
                .as_bytes(),
        )?,
        PlanFormat::Text => {
            let options = render::text::TextOptions {
                color: config.color,
                expand: args.expand,
            };
            if let Some(diff) = &diff {
                stdout.write_all(diff.as_bytes())?;
                if !diff.is_empty() {
                    stdout.write_all(b"\n")?;
                }
            }
            stdout.write_all(render::text::render_text(&plan, &options).as_bytes())?;
        }
    }
    stdout.flush()?;
    // The process ends with this command: leave the specs and the state to
    // it rather than free their hundreds of thousands of objects one by one.
    std::mem::forget(desired);
    std::mem::forget(state);
    if let Some(refusal) = refusal {
        bail!("{refusal}");
    }
    let outcome = if args.detailed_exitcode && !plan.is_empty() {
        Outcome::Changes
    } else {
        Outcome::Success
    };
    // The plan too (a million changes: a tenth of a second to free).
    std::mem::forget(plan);
    Ok(outcome)
}

/// Reads a saved plan, streaming: a plan of a million transfers is half a
/// gigabyte of JSON, which as a `serde_json::Value` would take several.
/// A first pass reads only `format_version` (so that a plan of another
/// version is named as such, whatever else changed); the second reads the
/// plan itself. Every change's id must match its content, and an id deed
/// never makes is refused the same way, as an edit.
fn read_plan_file(path: &Path) -> Result<Plan> {
    #[derive(serde::Deserialize)]
    struct Header {
        format_version: Option<serde_json::Value>,
    }
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read plan {}", path.display()))?
        .len();
    if size > MAX_INPUT_BYTES {
        bail!("plan {} is larger than 1 GiB", path.display());
    }
    let open = || -> Result<_> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read plan {}", path.display()))?;
        Ok(std::io::BufReader::with_capacity(1 << 16, file))
    };
    let header: Header = serde_json::from_reader(open()?)
        .with_context(|| format!("{}: not a JSON plan", path.display()))?;
    match header.format_version.as_ref().and_then(|v| v.as_u64()) {
        Some(version) if version == u64::from(plan::FORMAT_VERSION) => {}
        Some(version) => bail!(
            "{}: plan format_version {version} is not supported (this deed reads version {})",
            path.display(),
            plan::FORMAT_VERSION
        ),
        None => bail!("{}: not a deed plan (no format_version)", path.display()),
    }
    let plan: Plan = serde_json::from_reader(open()?)
        .with_context(|| format!("{}: not a valid deed plan", path.display()))?;
    for change in &plan.changes {
        if change.content_id() != change.id {
            bail!("{}: change {} was edited after the plan was made (its id does not match its content)", path.display(), change.id);
        }
    }
    Ok(plan)
}

fn apply_command(args: &ApplyArgs, config: &Config) -> Result<Outcome> {
    check_max_removal(args.max_removal)?;
    let options = ReconcileOptions {
        actor: args.actor.clone(),
        revision: args
            .revision
            .clone()
            .or_else(|| crate::spec::git_revision(&config.specs)),
        max_removal: args.max_removal,
        allow_removals: args.allow_removals,
        ..ReconcileOptions::new(config.now)
    };
    // Read the specs (or the plan file) before taking the lock.
    let (applied, skipped) = match &args.plan_file {
        Some(path) => {
            let plan = read_plan_file(path)?;
            let store = open(config, Access::Write { wait: args.wait })?;
            store.set_progress(Some(CommitBar::shared()));
            let state = store.load()?;
            reconcile::check_plan(&plan, &state, &options)?;
            let context = ApplyContext {
                now: Some(config.now),
                actor: options.actor.clone(),
                revision: options.revision.clone(),
            };
            let outcome = apply::prepare(&plan, &state, &context)?;
            if !outcome.commit.is_empty() {
                store.commit(outcome.commit)?;
            }
            (outcome.applied, outcome.skipped)
        }
        None => {
            let started = std::time::Instant::now();
            let desired = load_specs(config)?;
            let specs_loaded = started.elapsed();
            // The state stays this process's from the load to the commit;
            // a sled state is closed while the plan is made, which frees
            // what sled cached while loading (0.14 GB for Workload L).
            let (state, resting) =
                store::load_and_rest(&config.state, args.wait, Some(CommitBar::shared()))?;
            let state_loaded = started.elapsed();
            let plan = reconcile::checked_plan(&desired, &state, &options)?;
            let planned = started.elapsed();
            // The specs are not needed past the plan: freed before the
            // commit (0.3 GB for Workload L).
            drop(desired);
            let store = resting.wake()?;
            let text_options = render::text::TextOptions {
                color: config.color,
                expand: false,
            };
            // The plan's text is made on a thread of its own while the
            // commit is prepared, which leaves a core partly idle (0.2 s
            // of Workload L's reassign); it is printed once applied.
            let (text, done) = std::thread::scope(|scope| {
                let text = scope.spawn(|| render::text::render_text(&plan, &text_options));
                let done = reconcile::apply_own_plan(&plan, &state, store.as_ref(), &options);
                match text.join() {
                    Ok(text) => (text, done),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            });
            let done = done?;
            // One after the other here: each time is its step's own.
            tracing::debug!(
                specs_ms = specs_loaded.as_millis() as u64,
                state_ms = (state_loaded - specs_loaded).as_millis() as u64,
                plan_ms = (planned - state_loaded).as_millis() as u64,
                commit_ms = (started.elapsed() - planned).as_millis() as u64,
                changes = plan.changes.len(),
                "applied"
            );
            print!("{text}");
            // The process ends with this command: leave the state and the
            // plan to it rather than free them one by one.
            std::mem::forget(plan);
            std::mem::forget(state);
            done
        }
    };
    let skipped = if skipped > 0 {
        format!(" ({skipped} already applied)")
    } else {
        String::new()
    };
    println!(
        "Apply complete: {} applied{skipped}.",
        plural(applied, "change")
    );
    Ok(Outcome::Success)
}

/// The progress bar of a long commit (`apply`, `inventory import`), over
/// the records the store writes. It is drawn on standard error only once
/// the commit has taken more than a second, and never when standard error
/// is not a terminal (indicatif hides it then), so pipes, logs and tests see
/// nothing of it.
struct CommitBar {
    bar: indicatif::ProgressBar,
    started: std::sync::Mutex<Option<std::time::Instant>>,
    /// Whether the bar was given standard error to draw on.
    shown: std::sync::atomic::AtomicBool,
}

impl CommitBar {
    /// How long a commit runs before its bar is drawn.
    const DELAY: std::time::Duration = std::time::Duration::from_secs(1);

    fn shared() -> std::sync::Arc<dyn store::CommitProgress> {
        let bar = indicatif::ProgressBar::hidden();
        let style = indicatif::ProgressStyle::with_template(
            "{msg:>9} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        std::sync::Arc::new(CommitBar {
            bar,
            started: std::sync::Mutex::new(None),
            shown: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn started(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        self.started
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl store::CommitProgress for CommitBar {
    fn start(&self, phase: &'static str, records: u64) {
        // The clock (of the delay, and the elapsed time shown) starts with
        // the commit's first phase.
        let mut started = self.started();
        if started.is_none() {
            *started = Some(std::time::Instant::now());
            self.bar.reset_elapsed();
        }
        drop(started);
        self.bar.set_message(phase);
        self.bar.set_length(records);
        self.bar.set_position(0);
        self.bar.reset_eta();
    }

    fn advance(&self, records: u64) {
        self.bar.inc(records);
        if self
            .bar
            .length()
            .is_some_and(|length| self.bar.position() > length)
        {
            self.bar.set_length(self.bar.position());
        }
        let due = || {
            self.started()
                .is_some_and(|started| started.elapsed() >= Self::DELAY)
        };
        if !self.shown.load(std::sync::atomic::Ordering::Relaxed) && due() {
            self.shown.store(true, std::sync::atomic::Ordering::Relaxed);
            self.bar
                .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
        *self.started() = None;
    }
}

fn daemon_command(args: &super::args::DaemonArgs, config: &Config) -> Result<Outcome> {
    let fixed_clock = std::env::var("DEED_NOW").is_ok_and(|text| !text.trim().is_empty());
    crate::daemon::run(crate::daemon::DaemonConfig {
        specs: config.specs.clone(),
        state: config.state.clone(),
        interval: args.interval,
        listen: args.listen.clone(),
        dry_run: args.dry_run,
        max_removal: args.max_removal,
        allow_removals: args.allow_removals,
        clock: if fixed_clock {
            crate::daemon::Clock::starting_at(config.now)
        } else {
            crate::daemon::Clock::System
        },
        api_token: std::env::var("DEED_API_TOKEN").ok(),
    })?;
    Ok(Outcome::Success)
}

fn state_command(command: &StateCommand, config: &Config) -> Result<Outcome> {
    match command {
        StateCommand::Show { id, format } => state_show(id.as_deref(), *format, config),
        StateCommand::Export { out } => {
            let state = open(config, Access::Read)?.load()?;
            let files = crate::export::export_files(&state);
            match out {
                Some(dir) => {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    for (name, text) in &files {
                        let path = dir.join(name);
                        std::fs::write(&path, text)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                    eprintln!(
                        "Wrote {} to {}.",
                        plural(files.len(), "spec file"),
                        dir.display()
                    );
                }
                None => {
                    let documents: Vec<&str> =
                        files.iter().map(|(_, text)| text.as_str()).collect();
                    print!("{}", documents.join("---\n"));
                }
            }
            Ok(Outcome::Success)
        }
        StateCommand::Dump { file } => {
            let store = open(config, Access::Read)?;
            if file.as_os_str() == "-" {
                let mut stdout = std::io::stdout().lock();
                store.dump(&mut stdout)?;
                stdout.flush()?;
            } else {
                // Write next to the target, then rename: a dump is whole or absent.
                let temporary = file.with_extension("partial");
                {
                    let handle = std::fs::File::create(&temporary)
                        .with_context(|| format!("cannot write {}", temporary.display()))?;
                    let mut writer = std::io::BufWriter::new(handle);
                    store.dump(&mut writer)?;
                    writer.flush()?;
                    writer.get_ref().sync_all()?;
                }
                std::fs::rename(&temporary, file)
                    .with_context(|| format!("cannot write {}", file.display()))?;
            }
            Ok(Outcome::Success)
        }
        StateCommand::Restore { file, wait } => {
            store::restore(&config.state, file, *wait)?;
            eprintln!(
                "Restored {} into {}.",
                file.display(),
                store::display_location(&config.state)
            );
            Ok(Outcome::Success)
        }
        StateCommand::Migrate { to, wait } => {
            let migrated = store::migrate(&config.state, to, *wait)?;
            eprintln!(
                "Copied {} from {} to {}; their dumps are identical.",
                plural(migrated.records, "record"),
                store::display_location(&config.state),
                store::display_location(to)
            );
            Ok(Outcome::Success)
        }
        StateCommand::Check => {
            let state = open(config, Access::Read)?.load()?;
            let violations = crate::check::check_state(&state);
            if violations.is_empty() {
                let objects: usize = Kind::ALL.iter().map(|kind| state.count(*kind)).sum();
                println!(
                    "The state is consistent: {} checked.",
                    plural(objects, "object")
                );
                Ok(Outcome::Success)
            } else {
                for violation in &violations {
                    eprintln!("violation: {violation}");
                }
                bail!("the state breaks {}", plural(violations.len(), "invariant"))
            }
        }
    }
}

/// One object's fields as `state show` prints them (a product with its
/// invoices).
fn object_fields(state: &State, kind: Kind, id: &str) -> Option<serde_json::Value> {
    let mut fields = state.fields(kind, id)?;
    if kind == Kind::Product {
        fields.insert(
            "invoices".into(),
            FieldValue::of(&state.invoices_of_product(id)),
        );
    }
    Some(serde_json::Value::from(fields))
}

/// The object `id`, looked up kind by kind in dependency order (emails
/// case-insensitively).
fn find_object(state: &State, id: &str) -> Option<serde_json::Value> {
    let email = id.to_ascii_lowercase();
    Kind::ALL.into_iter().find_map(|kind| {
        let key = if kind == Kind::User {
            email.as_str()
        } else {
            id
        };
        object_fields(state, kind, key)
    })
}

fn state_show(id: Option<&str>, format: ShowFormat, config: &Config) -> Result<Outcome> {
    let state = open(config, Access::Read)?.load()?;
    let value = match id {
        Some(id) => find_object(&state, id)
            .ok_or_else(|| anyhow!("no object with id `{id}` in the state"))?,
        None => {
            let mut all = serde_json::Map::new();
            for kind in Kind::ALL {
                let objects: serde_json::Map<String, serde_json::Value> = state
                    .ids(kind)
                    .into_iter()
                    .filter_map(|id| object_fields(&state, kind, &id).map(|fields| (id, fields)))
                    .collect();
                all.insert(
                    kind.plural().to_string(),
                    serde_json::Value::Object(objects),
                );
            }
            let invoices: serde_json::Map<String, serde_json::Value> = state
                .invoices
                .iter()
                .map(|(id, invoice)| (id.clone(), serde_json::Value::from(to_fields(invoice))))
                .collect();
            all.insert("invoices".into(), serde_json::Value::Object(invoices));
            serde_json::Value::Object(all)
        }
    };
    match format {
        ShowFormat::Json => println!("{}", serde_json::to_string_pretty(&value)?),
        ShowFormat::Yaml => print!("{}", serde_yaml::to_string(&value)?),
    }
    Ok(Outcome::Success)
}

fn read_input(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_INPUT_BYTES {
        bail!("{} is larger than 1 GiB", path.display());
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn inventory_import(file: &Path, wait: bool, config: &Config) -> Result<Outcome> {
    let text = read_input(file)?;
    let store = open(config, Access::Write { wait })?;
    store.set_progress(Some(CommitBar::shared()));
    let state = store.load()?;
    let path = file.display().to_string();
    let import = crate::inventory::parse_import(&path, &text, &state, config.now)
        .map_err(|diagnostics| report(&diagnostics, "in the inventory"))?;
    let written = import.changed;
    if !import.commit.is_empty() {
        store.commit(import.commit)?;
    }
    println!(
        "Imported {}, {}, {} ({written} changed).",
        plural(import.assets, "asset"),
        plural(import.invoices, "invoice"),
        plural(import.credits, "credit balance")
    );
    Ok(Outcome::Success)
}

fn accept_invitation(email: &str, wait: bool, config: &Config) -> Result<Outcome> {
    let email = email.to_ascii_lowercase();
    let store = open(config, Access::Write { wait })?;
    let state = store.load()?;
    let user = state
        .users
        .get(&email)
        .ok_or_else(|| anyhow!("no user {email} in the state"))?;
    if user.status == UserStatus::Active {
        println!("{email} is already active.");
        return Ok(Outcome::Success);
    }
    let mut accepted = user.clone();
    accepted.status = UserStatus::Active;
    accepted.invitation_expires = None;
    let mut before = Fields::new();
    before.insert("status".into(), "invited".into());
    before.insert(
        "invitation_expires".into(),
        FieldValue::of(&user.invitation_expires),
    );
    let mut after = Fields::new();
    after.insert("status".into(), "active".into());
    after.insert("invitation_expires".into(), FieldValue::Null);
    let change = Change::new(
        Action::Update,
        Kind::User,
        email.clone(),
        user.account.clone(),
        Some(before),
        Some(after),
        "invitation accepted",
    );
    let entry = HistoryEntry {
        seq: 0,
        time: config.now,
        plan_id: "invitation-accept".into(),
        actor: Some(email.clone()),
        revision: None,
        change,
    };
    store.commit(Commit {
        objects: vec![(Kind::User, email.clone(), Some(to_fields(&accepted)))],
        history: vec![entry],
        ..Commit::default()
    })?;
    println!(
        "{email} accepted the invitation to account {} and is now active.",
        user.account
    );
    Ok(Outcome::Success)
}

fn history(args: &HistoryArgs, config: &Config) -> Result<Outcome> {
    let entries = open(config, Access::Read)?.history(args.limit)?;
    let mut stdout = std::io::stdout().lock();
    for entry in &entries {
        match args.format {
            HistoryFormat::Json => writeln!(stdout, "{}", serde_json::to_string(entry)?)?,
            HistoryFormat::Text => {
                let change = &entry.change;
                writeln!(
                    stdout,
                    "{:>6}  {}  {}  {}  {} {} {}  ({}){}{}",
                    entry.seq,
                    entry.time,
                    entry.plan_id,
                    change.id,
                    change.action.as_str(),
                    change.kind,
                    change.object,
                    change.reason,
                    entry
                        .actor
                        .as_ref()
                        .map(|a| format!("  by {a}"))
                        .unwrap_or_default(),
                    entry
                        .revision
                        .as_ref()
                        .map(|r| format!("  at {}", &r[..r.len().min(12)]))
                        .unwrap_or_default(),
                )?;
            }
        }
    }
    Ok(Outcome::Success)
}

fn outbox(args: &OutboxArgs, config: &Config) -> Result<Outcome> {
    let access = if args.drain {
        Access::Write { wait: args.wait }
    } else {
        Access::Read
    };
    let store = open(config, access)?;
    let pending: Vec<_> = store
        .outbox()?
        .into_iter()
        .filter(|n| !n.delivered)
        .collect();
    let mut stdout = std::io::stdout().lock();
    if args.drain {
        for notification in &pending {
            writeln!(stdout, "{}", serde_json::to_string(notification)?)?;
        }
        stdout.flush()?;
        let ids: Vec<String> = pending.iter().map(|n| n.id.clone()).collect();
        if !ids.is_empty() {
            store.mark_delivered(&ids)?;
        }
    } else {
        for n in &pending {
            writeln!(
                stdout,
                "{}  {}  {:<10}  {}  {}",
                n.id, n.time, n.event, n.to, n.message
            )?;
        }
        if pending.is_empty() {
            writeln!(stdout, "The outbox is empty.")?;
        }
    }
    Ok(Outcome::Success)
}
