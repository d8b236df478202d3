//! Reconcile: the steps that make the state match the specs — a checked plan
//! ([`checked_plan`]: rules, `--actor`, the removal guard) and its atomic
//! apply ([`apply_checked`]). `deed apply` runs them once; the daemon on
//! every file change and every tick. It is level-triggered: it is never
//! told why it runs, it reads the desired model and the state and converges.

use crate::apply::{self, ApplyContext, ApplyError};
use crate::desired::Desired;
use crate::diagnostic::Diagnostic;
use crate::model::{State, Timestamp};
use crate::plan::{self, Plan, PlanConfig};
use crate::store::{Store, StoreError};

/// How a reconcile runs.
#[derive(Clone, Debug)]
pub struct ReconcileOptions {
    pub now: Timestamp,
    /// Checked against the state's roles, and recorded in the history.
    pub actor: Option<String>,
    /// The specs' revision, recorded in the history.
    pub revision: Option<String>,
    /// The removal guard's limit, in percent.
    pub max_removal: f64,
    pub allow_removals: bool,
    /// Plan only; write nothing.
    pub dry_run: bool,
}

impl ReconcileOptions {
    pub fn new(now: Timestamp) -> Self {
        ReconcileOptions {
            now,
            actor: None,
            revision: None,
            max_removal: 25.0,
            allow_removals: false,
            dry_run: false,
        }
    }
}

/// Why a reconcile stopped; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The specs break a rule that needs the state to see.
    #[error("{} problem(s) with the plan:\n{}", .0.len(), crate::diagnostic::Diagnostics(.0.clone()))]
    Rules(Vec<Diagnostic>),
    /// `--actor` may not make some changes.
    #[error("{} change(s) refused:\n{}", .0.len(), .0.join("\n"))]
    Unauthorized(Vec<String>),
    /// The removal guard refused the plan.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies a plan already checked (see [`check_plan`]) against `state`, the
/// state now in `store`, unless a dry run: (applied, skipped) changes.
pub fn apply_checked(
    plan: &Plan,
    state: &State,
    store: &dyn Store,
    options: &ReconcileOptions,
) -> Result<(usize, usize), ReconcileError> {
    apply_with(apply::prepare, plan, state, store, options)
}

/// [`apply_checked`] for a plan this process has just made from `state`,
/// which it loaded under the writer's lock it still holds (`deed apply`):
/// its changes are not compared with the state again
/// ([`apply::prepare_own_plan`]).
pub fn apply_own_plan(
    plan: &Plan,
    state: &State,
    store: &dyn Store,
    options: &ReconcileOptions,
) -> Result<(usize, usize), ReconcileError> {
    apply_with(apply::prepare_own_plan, plan, state, store, options)
}

type Prepare =
    for<'a> fn(&'a Plan, &'a State, &ApplyContext) -> Result<apply::ApplyOutcome<'a>, ApplyError>;

fn apply_with(
    prepare: Prepare,
    plan: &Plan,
    state: &State,
    store: &dyn Store,
    options: &ReconcileOptions,
) -> Result<(usize, usize), ReconcileError> {
    if options.dry_run || plan.is_empty() {
        return Ok((0, 0));
    }
    let context = ApplyContext {
        now: Some(options.now),
        actor: options.actor.clone(),
        revision: options.revision.clone(),
    };
    let outcome = prepare(plan, state, &context)?;
    let (applied, skipped) = (outcome.applied, outcome.skipped);
    if !outcome.commit.is_empty() {
        store.commit(outcome.commit)?;
    }
    Ok((applied, skipped))
}

/// The plan of `desired` against `state`, refused when it breaks a rule, when
/// the actor may not make it, or when the removal guard stops it.
pub fn checked_plan(
    desired: &Desired,
    state: &State,
    options: &ReconcileOptions,
) -> Result<Plan, ReconcileError> {
    let plan = plan::plan(desired, state, &PlanConfig { now: options.now })
        .map_err(ReconcileError::Rules)?;
    check_plan(&plan, state, options)?;
    Ok(plan)
}

/// Authorization and the removal guard for a plan already made (a saved
/// plan, or one just planned).
pub fn check_plan(
    plan: &Plan,
    state: &State,
    options: &ReconcileOptions,
) -> Result<(), ReconcileError> {
    if let Some(actor) = &options.actor {
        let refused = plan::authorize(plan, state, actor);
        if !refused.is_empty() {
            return Err(ReconcileError::Unauthorized(refused));
        }
    }
    if !options.allow_removals {
        plan::RemovalCount::of(plan, state)
            .check(options.max_removal)
            .map_err(ReconcileError::Refused)?;
    }
    Ok(())
}
