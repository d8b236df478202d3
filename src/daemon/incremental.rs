//! The daemon's planner: keeps the last full plan and, when a few files
//! change (or the daemon's own commit touched a few accounts), plans only
//! the accounts concerned and splices them in ([`crate::plan::partial`]),
//! instead of building the whole model and planning every account again.
//!
//! It falls back to a full build and a full plan whenever the shortcut
//! cannot be sure: on the first reconcile and every interval tick, when the
//! state was loaded again (another process wrote it), when a file does not
//! parse, when the part does not validate or plan on its own (the full
//! build reports the problems exactly as `deed plan` does), and when an id
//! of the part is declared in another account too.
//!
//! A plan made this way lists the same changes as a full plan of the same
//! specs and state, with one difference in time: invitations of accounts
//! that were not planned again keep the expiry of the plan that listed
//! them, and an invitation that expires in the meantime is re-issued by
//! the next full plan (every `--interval`).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::desired::Desired;
use crate::diagnostic::Diagnostic;
use crate::model::{State, Timestamp};
use crate::plan::partial::{self, DesiredIndex, StateIndex};
use crate::plan::{self, Plan, PlanConfig};

use super::specs_cache::SpecsCache;
use super::state_cache::Snapshot;

/// How many times the set of accounts may grow before the part is given up.
const MAX_ROUNDS: usize = 16;
/// A part of more than half the accounts (and more than this) is planned
/// in full.
const MIN_PART_LIMIT: usize = 8;

/// Why there is no plan.
#[derive(Debug)]
pub enum PlanFailure {
    /// The specs do not validate.
    Invalid(Arc<Vec<Diagnostic>>),
    /// The specs break a rule that needs the state to see.
    Rules(Vec<Diagnostic>),
}

/// How a plan was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Made {
    Full,
    /// Only these many accounts were planned again.
    Part(usize),
    /// Nothing changed since the last plan.
    Unchanged,
}

impl Made {
    /// For logs and `/status`: `full`, `part`, `unchanged`.
    pub fn name(&self) -> &'static str {
        match self {
            Made::Full => "full",
            Made::Part(_) => "part",
            Made::Unchanged => "unchanged",
        }
    }

    /// Accounts planned again (`None`: all of them).
    pub fn accounts(&self) -> Option<usize> {
        match self {
            Made::Full => None,
            Made::Part(accounts) => Some(*accounts),
            Made::Unchanged => Some(0),
        }
    }
}

/// The last full plan and what it was made from.
struct Base {
    plan: Plan,
    index: DesiredIndex,
    /// The state generation it was planned against.
    generation: u64,
}

/// See the module documentation.
#[derive(Default)]
pub struct Planner {
    base: Option<Base>,
}

impl Planner {
    /// The plan of the specs of `specs`' last reload against `snapshot`.
    /// `touched`: accounts the daemon's own commits changed since the last
    /// call, in generation `touched_generation`.
    pub fn plan(
        &mut self,
        specs: &mut SpecsCache,
        snapshot: &Snapshot,
        touched: (u64, BTreeSet<String>),
        now: Timestamp,
        full: bool,
    ) -> Result<(Plan, Made), PlanFailure> {
        let changed = specs.take_changed();
        let base_fits = self
            .base
            .as_ref()
            .is_some_and(|base| base.generation == snapshot.generation)
            && touched.0 == snapshot.generation;
        if !full && base_fits && snapshot.index.is_partitionable() {
            if changed.is_none() {
                tracing::debug!("planning in full: a document of an unknown account changed");
            }
            if let Some(mut seeds) = changed {
                seeds.extend(touched.1);
                if seeds.is_empty() {
                    if let Some(base) = &self.base {
                        return Ok((base.plan.clone(), Made::Unchanged));
                    }
                }
                if let Some(result) = self.part(specs, snapshot, seeds, now) {
                    return Ok(result);
                }
            }
        }
        self.full(specs, snapshot, now)
    }

    fn full(
        &mut self,
        specs: &mut SpecsCache,
        snapshot: &Snapshot,
        now: Timestamp,
    ) -> Result<(Plan, Made), PlanFailure> {
        self.base = None;
        let desired = specs.desired().map_err(PlanFailure::Invalid)?;
        let plan = plan::plan(&desired, &snapshot.state, &PlanConfig { now })
            .map_err(PlanFailure::Rules)?;
        self.base = Some(Base {
            plan: plan.clone(),
            index: DesiredIndex::of(&desired),
            generation: snapshot.generation,
        });
        Ok((plan, Made::Full))
    }

    /// Plans the accounts of `seeds` and their neighbourhood; `None` when
    /// a full plan must decide.
    fn part(
        &mut self,
        specs: &SpecsCache,
        snapshot: &Snapshot,
        seeds: BTreeSet<String>,
        now: Timestamp,
    ) -> Option<(Plan, Made)> {
        let base = self.base.as_mut()?;
        let state: &State = &snapshot.state;
        let limit =
            (base.index.accounts().count().max(state.accounts.len()) / 2).max(MIN_PART_LIMIT);
        let (accounts, desired) =
            close_part(specs, &base.index, state, &snapshot.index, seeds, limit)?;
        if let Some(clash) = base.index.clash(&accounts, &desired) {
            tracing::debug!("planning in full: {clash}");
            return None;
        }
        let part_state = partial::restrict_state(state, &snapshot.index, &accounts);
        let part_plan = match plan::plan(&desired, &part_state, &PlanConfig { now }) {
            Ok(plan) => plan,
            Err(problems) => {
                tracing::debug!("planning in full: {} problem(s) in part", problems.len());
                return None;
            }
        };
        // Taken, not copied: the splice replaces it (or a full plan does).
        let previous = std::mem::replace(&mut base.plan, Plan::new(Vec::new(), Vec::new()));
        let Some(spliced) = partial::splice(previous, state, &base.index, &accounts, part_plan)
        else {
            tracing::debug!("planning in full: a pending item cannot be placed");
            self.base = None;
            return None;
        };
        base.index.replace(&accounts, &desired);
        base.plan = spliced.clone();
        Some((spliced, Made::Part(accounts.len())))
    }
}

/// Grows `seeds` until it is closed, building the part's model each round;
/// `None` when a part does not validate alone or grows past `limit`.
fn close_part(
    specs: &SpecsCache,
    index: &DesiredIndex,
    state: &State,
    state_index: &StateIndex,
    seeds: BTreeSet<String>,
    limit: usize,
) -> Option<(BTreeSet<String>, Desired)> {
    let mut accounts = seeds;
    for _ in 0..MAX_ROUNDS {
        // The accounts the part's headers name must be in it to validate.
        loop {
            let named: BTreeSet<String> = specs
                .fragments_of(&accounts)
                .into_iter()
                .flat_map(|fragment| {
                    fragment
                        .hub
                        .iter()
                        .chain(fragment.connections.iter().flatten())
                        .chain(fragment.merged_into.iter())
                        .map(|account| account.as_str().to_string())
                })
                .filter(|account| !accounts.contains(account))
                .collect();
            if named.is_empty() {
                break;
            }
            accounts.extend(named);
        }
        if accounts.len() > limit {
            tracing::debug!("planning in full: {} accounts concerned", accounts.len());
            return None;
        }
        let desired = match crate::spec::build_fragments(specs.fragments_of(&accounts)) {
            Ok(desired) => desired,
            Err(problems) => {
                tracing::debug!(
                    "planning in full: part of the specs does not validate alone: {}",
                    problems
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                );
                return None;
            }
        };
        let more = partial::closure(&accounts, &desired, index, state, state_index);
        if more.is_empty() {
            return Some((accounts, desired));
        }
        accounts.extend(more);
    }
    None
}

#[cfg(test)]
mod tests {
    //! The promise of the module: a plan made in part is the full plan.
    //! Every flow of `examples/` (its `before` specs applied, its inventory
    //! imported, then edited into its `after` specs and back) and a series
    //! of edits of the demo specs are planned both ways and compared byte
    //! for byte, while the daemon's own commits are followed in memory.

    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::{Made, Planner};
    use crate::apply::{self, ApplyContext};
    use crate::daemon::specs_cache::SpecsCache;
    use crate::daemon::state_cache::Snapshot;
    use crate::model::{State, Timestamp};
    use crate::plan::partial::StateIndex;
    use crate::plan::{self, PlanConfig};
    use crate::render::json::render_json;
    use crate::store::Commit;

    fn now() -> Timestamp {
        "2026-11-23T12:00:00Z".parse().expect("timestamp")
    }

    fn repo(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// Makes `dir` hold exactly the files of `from` (a folder of specs).
    fn replace_specs(dir: &Path, from: &Path) {
        for entry in std::fs::read_dir(dir).expect("read specs") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("remove folder");
            } else {
                std::fs::remove_file(&path).expect("remove file");
            }
        }
        copy_tree(from, dir);
    }

    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read") {
            let path = entry.expect("entry").path();
            let target = to.join(path.file_name().expect("name"));
            if path.is_dir() {
                copy_tree(&path, &target);
            } else {
                std::fs::copy(&path, &target).expect("copy");
            }
        }
    }

    /// A state being reconciled, as the daemon's cache keeps it.
    struct Tenant {
        state: State,
        index: StateIndex,
        generation: u64,
        touched: BTreeSet<String>,
    }

    impl Tenant {
        fn new() -> Tenant {
            Tenant {
                state: State::default(),
                index: StateIndex::default(),
                generation: 1,
                touched: BTreeSet::new(),
            }
        }

        fn snapshot(&self) -> Snapshot {
            Snapshot {
                state: Arc::new(self.state.clone()),
                index: Arc::new(self.index.clone()),
                generation: self.generation,
            }
        }

        /// Writes a commit as the daemon's cache follows its own commits.
        fn follow(&mut self, commit: Commit) {
            let commit = commit.into_whole().expect("commit");
            let touched = crate::daemon::state_cache::write_commit(
                &mut self.state,
                &mut self.index,
                &commit.objects,
                &commit.invoices,
            )
            .expect("write");
            self.touched.extend(touched);
        }

        /// Another process wrote the state: loaded again.
        fn reload(&mut self) {
            self.index = StateIndex::of(&self.state);
            self.generation += 1;
            self.touched.clear();
        }
    }

    /// Plans incrementally and in full; they must agree. Applies the plan
    /// when there is one. Returns how the incremental plan was made.
    fn step(
        planner: &mut Planner,
        specs: &mut SpecsCache,
        tenant: &mut Tenant,
        what: &str,
    ) -> Made {
        specs.reload(&BTreeSet::new(), true);
        let snapshot = tenant.snapshot();
        let touched = (tenant.generation, std::mem::take(&mut tenant.touched));
        let incremental = planner.plan(specs, &snapshot, touched, now(), false);
        let full = specs
            .desired()
            .map_err(|diagnostics| diagnostics.len())
            .and_then(|desired| {
                plan::plan(&desired, &tenant.state, &PlanConfig { now: now() })
                    .map_err(|diagnostics| diagnostics.len())
            });
        match (incremental, full) {
            (Ok((plan, made)), Ok(full)) => {
                assert_eq!(
                    render_json(&plan),
                    render_json(&full),
                    "{what}: the plan made {made:?} differs from the full plan"
                );
                let context = ApplyContext {
                    now: Some(now()),
                    actor: None,
                    revision: None,
                };
                let state = tenant.state.clone();
                let outcome = apply::prepare(&plan, &state, &context).expect("apply");
                tenant.follow(outcome.commit);
                made
            }
            (Err(_), Err(_)) => Made::Full,
            (incremental, full) => panic!(
                "{what}: incremental {:?} but full {:?}",
                incremental
                    .map(|(plan, _)| plan.changes.len())
                    .map_err(|_| ()),
                full.map(|plan| plan.changes.len())
            ),
        }
    }

    fn import(tenant: &mut Tenant, inventory: &Path) {
        let text = std::fs::read_to_string(inventory).expect("inventory");
        let state = tenant.state.clone();
        let import = crate::inventory::parse_import("inventory.jsonl", &text, &state, now())
            .expect("valid inventory");
        tenant.follow(import.commit);
        tenant.reload();
    }

    #[test]
    fn every_example_flow_planned_in_part_is_the_full_plan() {
        let mut parts = 0;
        for flow in [
            "account-merge",
            "account-ownership-transfer",
            "invitations",
            "license-reassignment",
            "move-user",
            "product-transfer",
            "reassign-to-group",
            "removals",
        ] {
            let example = repo("examples").join(flow);
            let dir = tempfile::tempdir().expect("tempdir");
            copy_tree(&example.join("before"), dir.path());
            let mut specs = SpecsCache::new(dir.path());
            let mut planner = Planner::default();
            let mut tenant = Tenant::new();
            step(&mut planner, &mut specs, &mut tenant, flow);
            if example.join("inventory.jsonl").exists() {
                import(&mut tenant, &example.join("inventory.jsonl"));
            }
            step(&mut planner, &mut specs, &mut tenant, flow);
            step(&mut planner, &mut specs, &mut tenant, flow);
            replace_specs(dir.path(), &example.join("after"));
            let made = step(
                &mut planner,
                &mut specs,
                &mut tenant,
                &format!("{flow}: after"),
            );
            parts += usize::from(matches!(made, Made::Part(_)));
            step(
                &mut planner,
                &mut specs,
                &mut tenant,
                &format!("{flow}: after, again"),
            );
            replace_specs(dir.path(), &example.join("before"));
            step(
                &mut planner,
                &mut specs,
                &mut tenant,
                &format!("{flow}: back"),
            );
        }
        assert!(parts >= 6, "only {parts} flows were planned in part");
    }

    #[test]
    fn edits_of_the_demo_specs_planned_in_part_are_the_full_plan() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        copy_tree(&repo("specs"), dir.path());
        let mut specs = SpecsCache::new(dir.path());
        let mut planner = Planner::default();
        let mut tenant = Tenant::new();
        assert_eq!(
            step(&mut planner, &mut specs, &mut tenant, "start"),
            Made::Full
        );
        let edit = |path: &str, from: &str, to: &str| {
            let path = dir.path().join(path);
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(text.contains(from), "{from} in {}", path.display());
            std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
        };
        let mut parts = Vec::new();
        let mut run = |what: &str, tenant: &mut Tenant, specs: &mut SpecsCache| {
            let made = step(&mut planner, specs, tenant, what);
            parts.push((what.to_string(), made));
        };
        run("unchanged", &mut tenant, &mut specs);
        edit(
            "acme-eu.yaml",
            "  ines@acme.eu: {role: viewer}\n",
            "  ines@acme.eu: {role: member}\n  jo@acme.eu: {}\n",
        );
        run("a user added, a role changed", &mut tenant, &mut specs);
        // carol moves from acme to its satellite acme-eu.
        edit("acme/account.yaml", "  carol@acme.com: {}\n", "");
        edit("acme/account.yaml", "assignee: carol@acme.com, ", "");
        edit(
            "acme/account.yaml",
            "access: [carol@acme.com, bob@acme.com]",
            "access: [bob@acme.com]",
        );
        edit("acme/teams.yaml", ", carol@acme.com: member", "");
        edit(
            "acme/teams.yaml",
            "  workflow/wf-1: {owner: \"user:carol@acme.com\"}\n",
            "",
        );
        edit("acme/teams.yaml", "reassign:\n  - from: user:carol@acme.com\n    to: group:analysts\n    kinds: [dataset]\n    tag: {original-owner: carol@acme.com}\n", "");
        edit(
            "acme-eu.yaml",
            "  jo@acme.eu: {}\n",
            "  jo@acme.eu: {}\n  carol@acme.com: {move: {bring: [dataset, workflow]}}\n",
        );
        run("a user moves to a satellite", &mut tenant, &mut specs);
        edit(
            "globex.yaml",
            "  mindy@globex.com: {role: admin}\n",
            "  mindy@globex.com: {role: admin}\n  nora@globex.com: {}\n",
        );
        run(
            "a user added in a two-document file",
            &mut tenant,
            &mut specs,
        );
        edit(
            "globex.yaml",
            "connections: [acme]\n",
            "connections: [acme, initech]\n",
        );
        run("a connection requested", &mut tenant, &mut specs);
        std::fs::write(
            dir.path().join("umbrella.yaml"),
            "account: umbrella\ndomains: [umbrella.com]\nusers:\n  al@umbrella.com: {role: owner}\n",
        )
        .expect("write");
        run("an account added", &mut tenant, &mut specs);
        std::fs::remove_file(dir.path().join("umbrella.yaml")).expect("remove");
        run("an account removed", &mut tenant, &mut specs);
        edit(
            "globex.yaml",
            "  nora@globex.com: {}\n",
            "  nora@globex.com: {}\n  nora@globex.com: {}\n",
        );
        run("a broken file", &mut tenant, &mut specs);
        edit(
            "globex.yaml",
            "  nora@globex.com: {}\n  nora@globex.com: {}\n",
            "",
        );
        run("fixed", &mut tenant, &mut specs);
        let in_part = parts
            .iter()
            .filter(|(_, made)| matches!(made, Made::Part(_) | Made::Unchanged))
            .count();
        assert!(in_part >= 7, "planned in part: {parts:?}");
    }
}
