//! What the user typed: the clap definition of every command and option
//! (contract §3). [`super::Config`] is what the rest of the program takes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Plans and applies transfers of tenant ownership declared in YAML specs.
#[derive(Debug, Parser)]
#[command(
    name = "deed",
    version,
    about,
    after_help = "Examples:\n  deed validate\n  deed plan --format json --out plan.json\n  deed apply plan.json --actor alice@acme.com\n\nEnvironment: DEED_SPECS, DEED_STATE, DEED_NOW (RFC 3339, overrides the clock), NO_COLOR, DEED_LOG (log filter)."
)]
pub struct Cli {
    /// Folder of spec files (*.yaml, *.yml), read recursively.
    #[arg(
        long,
        global = true,
        env = "DEED_SPECS",
        default_value = "./specs",
        value_name = "DIR"
    )]
    pub specs: PathBuf,

    /// The state: a sled folder, a dump file (read-only), or a postgres:// URL.
    #[arg(
        long,
        global = true,
        env = "DEED_STATE",
        default_value = "./.deed",
        value_name = "STATE"
    )]
    pub state: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check the specs; print errors; change nothing.
    #[command(after_help = "Example:\n  deed validate --specs ./specs")]
    Validate,

    /// Show what apply would change (a dry run); change nothing.
    #[command(
        after_help = "Examples:\n  deed plan\n  deed plan --format json --out plan.json\n  deed plan --diff --expand\n  deed plan --detailed-exitcode   # exit 2 when there are changes"
    )]
    Plan(PlanArgs),

    /// Apply the specs, or exactly a saved plan.
    #[command(
        after_help = "Examples:\n  deed apply\n  deed apply plan.json --actor alice@acme.com\n  deed apply --wait"
    )]
    Apply(ApplyArgs),

    /// Watch the specs and reconcile on change and on schedule; serve HTTP.
    #[command(
        after_help = "Examples:\n  deed daemon\n  deed daemon --interval 1m --listen 0.0.0.0:9477 --log-format json\n  deed daemon --dry-run   # plan only, serve /plan\n\nEndpoints: /healthz, /metrics, /status; /plan and /state need Authorization: Bearer $DEED_API_TOKEN.\nWith DEED_NOW set, the daemon's clock starts there and advances with the wall clock."
    )]
    Daemon(DaemonArgs),

    /// Inspect, export, back up and check the state.
    #[command(
        subcommand,
        after_help = "Examples:\n  deed state show acme\n  deed state dump backup.jsonl\n  deed state check"
    )]
    State(StateCommand),

    /// Record observed assets, invoices and credits.
    #[command(
        subcommand,
        after_help = "Example:\n  deed inventory import inventory.jsonl"
    )]
    Inventory(InventoryCommand),

    /// Manage invitations.
    #[command(
        subcommand,
        after_help = "Example:\n  deed invitations accept frank@acme.com"
    )]
    Invitations(InvitationsCommand),

    /// The audit log of applied changes.
    #[command(after_help = "Examples:\n  deed history --limit 20\n  deed history --format json")]
    History(HistoryArgs),

    /// Queued notifications.
    #[command(
        after_help = "Examples:\n  deed outbox\n  deed outbox --drain > notifications.jsonl"
    )]
    Outbox(OutboxArgs),

    /// Print the JSON Schema of a spec fragment, for editors.
    #[command(
        after_help = "Example:\n  deed schema > deed.schema.json\n  # then, first line of a spec file:\n  # yaml-language-server: $schema=./deed.schema.json"
    )]
    Schema,

    /// Print shell completions.
    #[command(
        after_help = "Examples:\n  deed completions bash > /etc/bash_completion.d/deed\n  deed completions zsh > \"${fpath[1]}/_deed\"\n  deed completions fish > ~/.config/fish/completions/deed.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PlanFormat {
    #[default]
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Also write the JSON plan to FILE, for `deed apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 2 when the plan has changes (0: none, 1: error).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Add a unified diff of each changed account, as YAML.
    #[arg(long)]
    pub diff: bool,
    /// List folded changes one by one.
    #[arg(long)]
    pub expand: bool,
    /// Check that EMAIL may make every change (roles are read from the state).
    #[arg(long, value_name = "EMAIL")]
    pub actor: Option<String>,
    /// Refuse a plan that removes more than PCT percent of all users or of all group memberships.
    #[arg(long, value_name = "PCT", default_value_t = 25.0)]
    pub max_removal: f64,
    /// Allow a plan past the removal guard.
    #[arg(long)]
    pub allow_removals: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `deed plan --out`; without it, plan and apply the specs.
    pub plan_file: Option<PathBuf>,
    /// Who applies: checked like `plan --actor`, and recorded in the history.
    #[arg(long, value_name = "EMAIL")]
    pub actor: Option<String>,
    /// Refuse a plan that removes more than PCT percent of all users or of all group memberships.
    #[arg(long, value_name = "PCT", default_value_t = 25.0)]
    pub max_removal: f64,
    /// Allow a plan past the removal guard.
    #[arg(long)]
    pub allow_removals: bool,
    /// Wait for another deed process to release the state instead of failing.
    #[arg(long)]
    pub wait: bool,
    /// The specs' revision for the history (default: git HEAD of the specs folder).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Reconcile this often even without changes (e.g. 30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_interval)]
    pub interval: std::time::Duration,
    /// Address and port of the HTTP API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9477")]
    pub listen: String,
    /// Plan and serve /plan; never apply.
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse a plan that removes more than PCT percent of all users or of all group memberships.
    #[arg(long, value_name = "PCT", default_value_t = 25.0)]
    pub max_removal: f64,
    /// Allow plans past the removal guard.
    #[arg(long)]
    pub allow_removals: bool,
    /// Log lines as text for people, or JSON for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `30s`, `5m`, `1h30m`, as `invite_ttl` is written; at least one second.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let duration: crate::model::Duration = text.parse()?;
    if duration.seconds == 0 {
        return Err("the interval must be at least 1s".to_string());
    }
    Ok(std::time::Duration::from_secs(duration.seconds))
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Show the state, or one object by id, as YAML or JSON.
    #[command(
        after_help = "Examples:\n  deed state show acme\n  deed state show bob@acme.com --format json\n  deed state show dataset/ds-1"
    )]
    Show {
        /// An object id: account, email, group (acme/analysts), membership, organization, product, license, asset (dataset/ds-1), grant.
        id: Option<String>,
        #[arg(long, value_enum, default_value_t = ShowFormat::Yaml)]
        format: ShowFormat,
    },
    /// Write specs equivalent to the state (bootstraps a repository).
    #[command(
        after_help = "Examples:\n  deed state export --out ./specs\n  deed state export > all.yaml"
    )]
    Export {
        /// Folder to write one <account>.yaml per account into; without it, print.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write a full-fidelity backup (inventory, history, outbox included).
    #[command(after_help = "Example:\n  deed state dump backup.jsonl")]
    Dump {
        /// The dump file to write (`-` for standard output).
        file: PathBuf,
    },
    /// Restore a dump into an empty state.
    #[command(after_help = "Example:\n  deed --state ./.deed-new state restore backup.jsonl")]
    Restore {
        file: PathBuf,
        #[arg(long)]
        wait: bool,
    },
    /// Copy the whole state into another, empty one (sled folder or postgres:// URL).
    #[command(
        after_help = "Examples:\n  deed --state ./.deed state migrate --to postgres://deed@db.internal/deed\n  deed --state postgres://deed@db.internal/deed state migrate --to ./.deed-copy"
    )]
    Migrate {
        /// The target: a sled folder (missing or empty) or a postgres:// URL (without deed's data).
        #[arg(long, value_name = "STATE")]
        to: String,
        /// Wait for a target in use instead of failing.
        #[arg(long)]
        wait: bool,
    },
    /// Verify the invariants of the state; exit 1 naming each violation.
    #[command(after_help = "Example:\n  deed state check")]
    Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Add or update assets, invoices and credits (JSON lines or a YAML list).
    #[command(
        after_help = "Example:\n  deed inventory import inventory.jsonl\n\nA record per line:\n  {\"type\": \"asset\", \"id\": \"file/f-9\", \"account\": \"acme\", \"owner\": \"user:bob@acme.com\"}\n  {\"type\": \"invoice\", \"id\": \"inv-2026-11\", \"product\": \"prod-7\", \"organization\": \"research\"}\n  {\"type\": \"credits\", \"account\": \"acme\", \"balance\": 5000}"
    )]
    Import {
        file: PathBuf,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum InvitationsCommand {
    /// Mark an invitation accepted: the user becomes active.
    #[command(after_help = "Example:\n  deed invitations accept frank@acme.com")]
    Accept {
        email: String,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only the last N entries.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value_t = HistoryFormat::Text)]
    pub format: HistoryFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct OutboxArgs {
    /// Print undelivered notifications as JSON lines and mark them delivered.
    #[arg(long)]
    pub drain: bool,
    #[arg(long)]
    pub wait: bool,
}
