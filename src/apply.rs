//! Applying a plan: per-change compare-and-set against the state, decided
//! for every change before anything is written, and turned into one
//! [`Commit`] (objects, history entries, notifications) that the store writes
//! atomically.
//!
//! The commit is produced lazily: [`prepare`] decides every change and
//! checks every object it writes, keeping only an index per change; the
//! objects' fields, the history entries and the notifications are made part
//! by part ([`PART_CHANGES`] at a time, objects and history in turn) while
//! the store writes them, so a plan of a million transfers does not also
//! hold a million field maps.
//!
//! A plan `deed apply` has just made from the state it holds locked is
//! not compared with that state again ([`prepare_own_plan`]): each of its
//! changes is at its `before` by construction.
//!
//! Architecture invariant: this module is pure. It decides; the caller holds
//! the writer's lock, loads the state, and commits what it returns.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::model::{FieldValue, Fields, Kind, Owner, OwnerRef, PackedAsset, State, Timestamp};
use crate::plan::{Action, Change, PackedFieldsRef, Plan};
use crate::store::codec::Object;
use crate::store::{Commit, HistoryEntry, MakeParts, Notification, Parts, StoreError};

/// Changes (objects, or history entries) per part of the commit.
pub const PART_CHANGES: usize = 10_000;

/// Who applies, and when: written to every history entry.
#[derive(Clone, Debug, Default)]
pub struct ApplyContext {
    pub now: Option<Timestamp>,
    pub actor: Option<String>,
    /// The git revision of the specs, when known.
    pub revision: Option<String>,
}

/// What an apply will do (or did).
#[derive(Debug)]
pub struct ApplyOutcome<'a> {
    /// The commit to write (empty when everything was already applied); it
    /// borrows the plan and the state it was prepared from.
    pub commit: Commit<'a>,
    /// Changes that are written.
    pub applied: usize,
    /// Changes whose object was already at `after`.
    pub skipped: usize,
}

/// An object at neither `before` nor `after` of its change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub change_id: String,
    pub kind: Kind,
    pub object: String,
    pub detail: String,
}

/// Why an apply was refused; nothing is written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Objects that drifted since the plan was made.
    #[error("{} conflict(s): the state changed since the plan was made; nothing was applied\n{}", .0.len(), render_conflicts(.0))]
    Conflicts(Vec<Conflict>),
    /// A change whose fields do not make a valid object.
    #[error("change {change_id} ({kind} {object}) is invalid: {message}; nothing was applied")]
    InvalidChange {
        change_id: String,
        kind: Kind,
        object: String,
        message: String,
    },
}

fn render_conflicts(conflicts: &[Conflict]) -> String {
    conflicts
        .iter()
        .map(|c| {
            format!(
                "  conflict: {} {} {}: {}",
                c.change_id, c.kind, c.object, c.detail
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Decides every change of `plan` against `state`: skip (already at
/// `after`), apply (at `before`), or conflict. Any conflict refuses the whole
/// plan; so does an object the applied changes would leave invalid.
///
/// The changes of each object are decided together, in plan order, against
/// the object as the previous ones leave it; the commit writes each object
/// once, sorted by kind and id, then the history entries and notifications
/// in plan order.
pub fn prepare<'a>(
    plan: &'a Plan,
    state: &'a State,
    context: &ApplyContext,
) -> Result<ApplyOutcome<'a>, ApplyError> {
    let changes = plan.changes.as_slice();
    let order = by_object(changes);
    let checked = check_in_halves(changes, &order, state);
    outcome(plan, state, context, order, checked)
}

/// [`prepare`] for a plan this process has just made from this very
/// `state`, loaded under the writer's lock it has held since (`deed apply`
/// without a plan file). Every change is then at its `before` by
/// construction (the plan was diffed against `state`, one change per
/// object, and nothing else could write in between), so comparing each
/// change with the state, as [`prepare`] does for a plan that may be older
/// than the state, would only find what the plan already says: every change
/// applies. That comparison took about a tenth of Workload L's reassign
/// apply (a million transfers, each looked up in the state).
///
/// Nothing is weaker for it: every object the commit writes is still
/// checked as it is encoded (an invalid one writes nothing), and a
/// transfer is still made from the state's asset. Debug builds still
/// compare every change and assert that the comparison agrees; the
/// property test of random specs (`tests/cli/properties.rs`) applies each
/// plan from its file too, compared, and requires that every change
/// applies and that both leave the same state.
pub fn prepare_own_plan<'a>(
    plan: &'a Plan,
    state: &'a State,
    context: &ApplyContext,
) -> Result<ApplyOutcome<'a>, ApplyError> {
    let changes = plan.changes.as_slice();
    let order = by_object(changes);
    let checked = Checked {
        applied: (0..changes.len()).collect(),
        objects: ObjectGroups::new(changes, &order).count(),
        ..Checked::default()
    };
    if cfg!(debug_assertions) {
        let compared = check_in_halves(changes, &order, state);
        let mut compared_applied = compared.applied.clone();
        compared_applied.sort_unstable();
        assert!(
            compared.conflicts.is_empty()
                && compared.invalid.is_none()
                && compared.skipped == 0
                && compared_applied == checked.applied
                && compared.objects == checked.objects,
            "a plan made from this state does not apply to it as made: {} conflict(s), {} skipped, invalid: {:?}",
            compared.conflicts.len(),
            compared.skipped,
            compared.invalid,
        );
    }
    outcome(plan, state, context, order, checked)
}

/// The outcome of `plan` once its changes are decided (`checked`, in
/// `order`): refused on any conflict or invalid object, else the commit of
/// the applied changes.
fn outcome<'a>(
    plan: &'a Plan,
    state: &'a State,
    context: &ApplyContext,
    order: Vec<usize>,
    checked: Checked,
) -> Result<ApplyOutcome<'a>, ApplyError> {
    let changes = plan.changes.as_slice();
    if !checked.conflicts.is_empty() {
        let mut conflicts = checked.conflicts;
        conflicts.sort_by_key(|(index, _)| *index);
        return Err(ApplyError::Conflicts(
            conflicts
                .into_iter()
                .map(|(_, conflict)| conflict)
                .collect(),
        ));
    }
    if let Some(error) = checked.invalid {
        return Err(error);
    }
    let mut applied = vec![false; changes.len()];
    for &index in &checked.applied {
        applied[index] = true;
    }
    let (skipped, applied_count, objects) =
        (checked.skipped, checked.applied.len(), checked.objects);
    let commit = if applied_count == 0 {
        Commit::default()
    } else {
        let accounts = changes
            .iter()
            .enumerate()
            .filter(|(index, change)| applied[*index] && change.kind == Kind::Account)
            .map(|(index, _)| index)
            .collect();
        let maker = ApplyParts {
            order,
            applied,
            objects_at: 0,
            history_at: 0,
            history_turn: false,
            accounts,
            now: context.now.unwrap_or_else(Timestamp::now),
            plan_id: plan.id(),
            actor: context.actor.clone(),
            revision: context.revision.clone(),
        };
        Commit {
            rest: Some(Parts::new(objects + applied_count, changes, state, maker)),
            ..Commit::default()
        }
    };
    Ok(ApplyOutcome {
        commit,
        applied: applied_count,
        skipped,
    })
}

/// The indices of `changes`, sorted by object (kind, then id), each
/// object's in plan order.
fn by_object(changes: &[Change]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..changes.len()).collect();
    // The index breaks ties: unstable, and still in plan order.
    order.sort_unstable_by(|&a, &b| {
        let (change_a, change_b) = (&changes[a], &changes[b]);
        (change_a.kind, &change_a.object, a).cmp(&(change_b.kind, &change_b.object, b))
    });
    order
}

/// Plans with fewer changes are checked on one thread.
const CHECK_ON_TWO_THREADS: usize = 20_000;

/// What [`check`] found in a run of [`by_object`]'s order.
#[derive(Default)]
struct Checked {
    /// The changes to apply (indices into the plan).
    applied: Vec<usize>,
    /// Every conflict, with its change's index.
    conflicts: Vec<(usize, Conflict)>,
    /// The first object, in the run's order, that its applied changes would
    /// leave invalid; only looked for while the run has no conflict.
    invalid: Option<ApplyError>,
    skipped: usize,
    /// Objects the applied changes write.
    objects: usize,
}

/// [`check`] over the whole order, split in two at an object's edge and
/// checked on two threads when the plan is large. The same result as one
/// run: conflicts are reported all together and sorted by the caller, and
/// an invalid object only counts when there is no conflict at all, the
/// first half's before the second's.
fn check_in_halves(changes: &[Change], order: &[usize], state: &State) -> Checked {
    if order.len() < CHECK_ON_TWO_THREADS {
        return check(changes, order, state);
    }
    let mut middle = order.len() / 2;
    let same_object = |a: usize, b: usize| {
        let (a, b) = (&changes[a], &changes[b]);
        a.kind == b.kind && a.object == b.object
    };
    while middle < order.len() && same_object(order[middle - 1], order[middle]) {
        middle += 1;
    }
    let (first, second) = order.split_at(middle);
    let (first, mut second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| check(changes, first, state));
        let second = check(changes, second, state);
        match first.join() {
            Ok(first) => (first, second),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    let mut checked = first;
    checked.applied.append(&mut second.applied);
    checked.conflicts.append(&mut second.conflicts);
    checked.invalid = checked.invalid.or(second.invalid);
    checked.skipped += second.skipped;
    checked.objects += second.objects;
    checked
}

/// Decides the changes of a run of [`by_object`]'s order (whole objects),
/// each object's changes together, in plan order, against the object as
/// the previous ones leave it, and checks every object they write.
fn check(changes: &[Change], order: &[usize], state: &State) -> Checked {
    let mut checked = Checked::default();
    for group in ObjectGroups::new(changes, order) {
        let first = &changes[group[0]];
        if let ([index], Some(decision)) = (group, owner_transfer(first, state)) {
            match decision {
                OwnerTransfer::Skip => checked.skipped += 1,
                OwnerTransfer::Apply => {
                    checked.applied.push(*index);
                    checked.objects += 1;
                }
            }
            continue;
        }
        let mut current = state.fields(first.kind, &first.object);
        let mut changed = false;
        for &index in group {
            let change = &changes[index];
            let (before, after) = (change.before_fields(), change.after_fields());
            match decide(change.action, before, after.as_ref(), current.as_ref()) {
                Decision::Skip => checked.skipped += 1,
                Decision::Apply => {
                    current = fields_after(change.action, after, current);
                    checked.applied.push(index);
                    changed = true;
                }
                Decision::Conflict(detail) => checked.conflicts.push((
                    index,
                    Conflict {
                        change_id: change.id.to_string(),
                        kind: change.kind,
                        object: change.object.to_string(),
                        detail,
                    },
                )),
            }
        }
        if !changed {
            continue;
        }
        checked.objects += 1;
        let (Some(fields), true) = (
            current,
            checked.conflicts.is_empty() && checked.invalid.is_none(),
        ) else {
            continue;
        };
        // Every object written must be a valid object of its kind.
        let (kind, id) = (first.kind, &*first.object);
        if let Err(error) = Object::from_fields(kind, &fields) {
            checked.invalid = Some(ApplyError::InvalidChange {
                change_id: first.id.to_string(),
                kind,
                object: id.to_string(),
                message: format!("{kind} {id}: {error}"),
            });
        }
    }
    checked
}

/// What [`check`] decides of a transfer of an asset, read in place (a
/// rule that moves a million assets makes a million of them).
enum OwnerTransfer {
    Skip,
    Apply,
}

/// `change` decided without unpacking the asset, when it transfers an
/// existing asset and changes only its `owner` and `tags`, and the asset
/// is at `after` (skip) or at `before` (apply, when the new owner and tags
/// are valid, [`owner_and_tags`]: its other fields stay as the state holds
/// them). The same
/// decision as the general check's; `None` leaves the change to it, which
/// also words a conflict.
fn owner_transfer(change: &Change, state: &State) -> Option<OwnerTransfer> {
    if change.kind != Kind::Asset || change.action != Action::Transfer {
        return None;
    }
    let (before, after) = (change.before()?, change.after()?);
    let asset = state.assets.packed(&change.object)?;
    let owner = asset.owner()?;
    let tags = asset.tags()?;
    // Whether the asset is at `side`; `None` for a side with other fields.
    let is_at = |side: PackedFieldsRef| -> Option<bool> {
        let mut known = 0;
        let mut at = true;
        if side.contains_key("owner") {
            known += 1;
            at &= match (side.text("owner"), owner) {
                (Some(text), OwnerRef::User(email)) => text.strip_prefix("user:") == Some(email),
                (Some(text), OwnerRef::Group(name)) => text.strip_prefix("group:") == Some(name),
                (None, _) => false,
            };
        }
        if side.contains_key("tags") {
            known += 1;
            // Both in ascending order of keys.
            at &= side.text_map("tags").is_some_and(|wanted| wanted == tags);
        }
        (known == side.len()).then_some(at)
    };
    if is_at(after)? {
        Some(OwnerTransfer::Skip)
    } else if is_at(before)? && owner_and_tags(after).is_some() {
        Some(OwnerTransfer::Apply)
    } else {
        None
    }
}

/// A part's objects: as fields, and assets packed.
type ObjectsPart = (
    Vec<(Kind, String, Option<Fields>)>,
    Vec<(String, PackedAsset)>,
);

/// The asset that applied `change` leaves, made from the state's packed
/// asset, when `change` is its only applied change and transfers it
/// changing only its `owner` and `tags`: the same asset as the fields
/// [`next_fields`] gives (a transfer sets the fields of its `after`),
/// packed. `None` leaves it to them.
fn transferred_asset(change: &Change, state: &State) -> Option<PackedAsset> {
    if change.kind != Kind::Asset || change.action != Action::Transfer {
        return None;
    }
    let (owner, tags) = owner_and_tags(change.after()?)?;
    state
        .assets
        .packed(&change.object)?
        .with_owner_and_all_tags(owner.as_ref(), tags)
}

/// Tags read in place: each key and text, in ascending order of keys.
type TextTags<'a> = Vec<(&'a str, &'a str)>;

/// What the `after` of an asset's transfer sets, when it sets only a valid
/// owner and tags whose values are all texts (the tags in ascending order
/// of keys, read in place): `None` for anything else.
fn owner_and_tags(after: PackedFieldsRef<'_>) -> Option<(Option<Owner>, Option<TextTags<'_>>)> {
    let owner = match after.contains_key("owner") {
        true => Some(after.text("owner")?.parse::<Owner>().ok()?),
        false => None,
    };
    let tags = match after.contains_key("tags") {
        true => Some(after.text_map("tags")?),
        false => None,
    };
    let known = usize::from(owner.is_some()) + usize::from(tags.is_some());
    (known == after.len()).then_some((owner, tags))
}

/// The runs of [`by_object`]'s order that touch one object each.
struct ObjectGroups<'o> {
    changes: &'o [Change],
    rest: &'o [usize],
}

impl<'o> ObjectGroups<'o> {
    fn new(changes: &'o [Change], order: &'o [usize]) -> ObjectGroups<'o> {
        ObjectGroups {
            changes,
            rest: order,
        }
    }
}

impl<'o> Iterator for ObjectGroups<'o> {
    type Item = &'o [usize];

    fn next(&mut self) -> Option<&'o [usize]> {
        let first = &self.changes[*self.rest.first()?];
        let length = self
            .rest
            .iter()
            .take_while(|&&index| {
                let change = &self.changes[index];
                change.kind == first.kind && change.object == first.object
            })
            .count();
        let (group, rest) = self.rest.split_at(length);
        self.rest = rest;
        Some(group)
    }
}

/// The fields of an object once `change` is applied to `current`.
fn next_fields(change: &Change, current: Option<Fields>) -> Option<Fields> {
    fields_after(change.action, change.after_fields(), current)
}

/// [`next_fields`], for a change whose `after` the caller has unpacked.
fn fields_after(action: Action, after: Option<Fields>, current: Option<Fields>) -> Option<Fields> {
    match action {
        Action::Remove => None,
        Action::Create => after,
        Action::Update | Action::Transfer => {
            let mut fields = current.unwrap_or_default();
            for (name, value) in after.into_iter().flatten() {
                fields.insert(name, value);
            }
            Some(fields)
        }
    }
}

/// The rest of an apply's commit, made part by part from the plan's
/// changes and the state: first the objects (each object's fields in the
/// state, with its applied changes on top), then the history entries and
/// notifications of the applied changes.
struct ApplyParts {
    /// [`by_object`]'s order; emptied once the objects are made.
    order: Vec<usize>,
    /// Which changes are applied.
    applied: Vec<bool>,
    /// Where the objects continue, in `order`.
    objects_at: usize,
    /// Where the history continues, in the changes.
    history_at: usize,
    /// Whether the next part is history (see [`ApplyParts::next_part`]).
    history_turn: bool,
    /// The applied changes of accounts, for [`AccountsAfter`].
    accounts: Vec<usize>,
    now: Timestamp,
    plan_id: String,
    actor: Option<String>,
    revision: Option<String>,
}

impl ApplyParts {
    /// The next objects to write: as fields, and the assets that a
    /// transfer changes, packed ([`transferred_asset`]).
    fn objects(&mut self, changes: &[Change], state: &State) -> ObjectsPart {
        let (mut objects, mut packed_assets) = (Vec::new(), Vec::new());
        let mut groups = ObjectGroups::new(changes, &self.order[self.objects_at..]);
        while objects.len() + packed_assets.len() < PART_CHANGES {
            let Some(group) = groups.next() else { break };
            self.objects_at += group.len();
            let mut applied = group.iter().filter(|&&index| self.applied[index]);
            let (Some(&index), only) = (applied.next(), applied.next().is_none()) else {
                continue;
            };
            let first = &changes[group[0]];
            if let (true, Some(asset)) = (only, transferred_asset(&changes[index], state)) {
                packed_assets.push((first.object.to_string(), asset));
                continue;
            }
            let mut current = state.fields(first.kind, &first.object);
            for &index in group.iter().filter(|&&index| self.applied[index]) {
                current = next_fields(&changes[index], current);
            }
            objects.push((first.kind, first.object.to_string(), current));
        }
        if self.objects_at == self.order.len() {
            self.order = Vec::new();
            self.objects_at = 0;
        }
        (objects, packed_assets)
    }

    fn history(
        &mut self,
        changes: &[Change],
        state: &State,
    ) -> (Vec<HistoryEntry>, Vec<Notification>) {
        let accounts = AccountsAfter::of(state, self.accounts.iter().map(|&index| &changes[index]));
        let (mut history, mut notifications) = (Vec::new(), Vec::new());
        while history.len() < PART_CHANGES && self.history_at < changes.len() {
            let index = self.history_at;
            self.history_at += 1;
            if !self.applied[index] {
                continue;
            }
            let change = &changes[index];
            history.push(HistoryEntry {
                seq: 0,
                time: self.now,
                plan_id: self.plan_id.clone(),
                actor: self.actor.clone(),
                revision: self.revision.clone(),
                change: change.clone(),
            });
            notifications.extend(notifications_for(change, &accounts, self.now));
        }
        (history, notifications)
    }

    /// The next part of objects; `None` once all are made.
    fn objects_part(&mut self, changes: &[Change], state: &State) -> Option<Commit<'static>> {
        while !self.order.is_empty() {
            let (objects, packed_assets) = self.objects(changes, state);
            if !objects.is_empty() || !packed_assets.is_empty() {
                return Some(Commit {
                    objects,
                    packed_assets,
                    ..Commit::default()
                });
            }
        }
        None
    }

    /// The next part of history entries and notifications; `None` once all
    /// are made.
    fn history_part(&mut self, changes: &[Change], state: &State) -> Option<Commit<'static>> {
        let (history, notifications) = self.history(changes, state);
        if history.is_empty() {
            return None;
        }
        Some(Commit {
            history,
            notifications,
            ..Commit::default()
        })
    }
}

impl MakeParts for ApplyParts {
    /// Objects and history alternate, part by part, until one runs out.
    /// Their records never share a key, so the order in which they are
    /// written changes nothing in the state; alternating lets the store
    /// encode a part of history (the most work per record, in JSON) while
    /// the next part of objects is made (the most work per record here).
    fn next_part(
        &mut self,
        changes: &[Change],
        state: &State,
    ) -> Option<Result<Commit<'static>, StoreError>> {
        let history_first = self.history_turn;
        self.history_turn = !history_first;
        if history_first {
            if let Some(part) = self.history_part(changes, state) {
                return Some(Ok(part));
            }
        }
        if let Some(part) = self.objects_part(changes, state) {
            return Some(Ok(part));
        }
        self.history_part(changes, state).map(Ok)
    }
}

enum Decision {
    Skip,
    Apply,
    Conflict(String),
}

fn matches(current: &Fields, wanted: &Fields) -> bool {
    wanted
        .iter()
        .all(|(name, value)| current.get(name).unwrap_or(&FieldValue::Null) == value)
}

/// Whether a change with these `before` and `after` fields applies to an
/// object whose fields are `current` (`None`: it does not exist).
fn decide(
    action: Action,
    before: Option<Fields>,
    after: Option<&Fields>,
    current: Option<&Fields>,
) -> Decision {
    let empty = Fields::new();
    let before = before.unwrap_or_default();
    let (before, after) = (&before, after.unwrap_or(&empty));
    match (action, current) {
        (Action::Create, None) => Decision::Apply,
        (Action::Create, Some(fields)) if matches(fields, after) => Decision::Skip,
        (Action::Create, Some(_)) => Decision::Conflict("exists already, with other fields".into()),
        (Action::Remove, None) => Decision::Skip,
        (Action::Remove, Some(fields)) if matches(fields, before) => Decision::Apply,
        (Action::Remove, Some(_)) => Decision::Conflict("changed since the plan was made".into()),
        (_, None) => Decision::Conflict("does not exist".into()),
        (_, Some(fields)) if matches(fields, after) => Decision::Skip,
        (_, Some(fields)) if matches(fields, before) => Decision::Apply,
        (_, Some(fields)) => {
            let found: Fields = before
                .keys()
                .map(|name| (name.clone(), fields.get(name).cloned().unwrap_or_default()))
                .collect();
            Decision::Conflict(format!(
                "expected {} or {}, found {}",
                serde_json::Value::from(before.clone()),
                serde_json::Value::from(after.clone()),
                serde_json::Value::from(found)
            ))
        }
    }
}

/// The text of field `name`, read from the packed fields (nothing
/// unpacked: every applied change asks).
fn text<'a>(fields: Option<PackedFieldsRef<'a>>, name: &str) -> Option<&'a str> {
    fields.and_then(|f| f.text(name))
}

/// The owner and successor of each account once the plan is applied: a
/// notification goes to who holds the role afterwards (the new owner of an
/// account whose ownership passes in the same plan).
struct AccountsAfter<'a> {
    state: &'a State,
    /// The fields changed of accounts, unpacked (a plan changes few).
    changed: HashMap<&'a str, Fields>,
}

impl<'a> AccountsAfter<'a> {
    /// `applied`: the applied changes, in plan order (those of accounts
    /// suffice).
    fn of(state: &'a State, applied: impl Iterator<Item = &'a Change>) -> AccountsAfter<'a> {
        let changed = applied
            .filter(|c| c.kind == Kind::Account && c.action != Action::Remove)
            .filter_map(|c| Some((&*c.object, c.after_fields()?)))
            .collect();
        AccountsAfter { state, changed }
    }

    fn field(&self, account: &str, name: &str) -> Option<String> {
        if let Some(value) = self.changed.get(account).and_then(|f| f.get(name)) {
            return value.as_str().map(str::to_string);
        }
        let account = self.state.accounts.get(account)?;
        match name {
            "owner" => account.owner.clone(),
            "successor" => account.successor.clone(),
            _ => None,
        }
    }

    fn owner(&self, account: &str) -> Option<String> {
        self.field(account, "owner")
    }

    /// Who receives what a removed user leaves: the successor, else the owner.
    fn successor(&self, account: &str) -> Option<String> {
        self.field(account, "successor")
            .or_else(|| self.owner(account))
    }
}

/// The notifications an applied change queues (contract 2.8): invitations,
/// ownership transfers, moves and removals, to both parties where there are
/// two. Each id is derived from the change's id, the recipient and the event,
/// so the same change always queues the same ids.
fn notifications_for(
    change: &Change,
    accounts: &AccountsAfter,
    now: Timestamp,
) -> Vec<Notification> {
    let (before, after) = (change.before(), change.after());
    let mut recipients: Vec<(String, String, String)> = Vec::new(); // (to, event, message)
    let user = &*change.object;
    match (change.kind, change.action) {
        (Kind::User, Action::Create) => {
            let expires = text(after, "invitation_expires").unwrap_or("");
            recipients.push((
                user.to_string(),
                "invitation".into(),
                format!(
                    "you are invited to account {}; the invitation expires {expires}",
                    change.account
                ),
            ));
        }
        (Kind::User, Action::Update)
            if text(after, "invitation_expires").is_some()
                && text(before, "invitation_expires").is_some() =>
        {
            let expires = text(after, "invitation_expires").unwrap_or("");
            recipients.push((
                user.to_string(),
                "invitation".into(),
                format!(
                    "your invitation to account {} was re-issued; it expires {expires}",
                    change.account
                ),
            ));
        }
        (Kind::User, Action::Transfer) if text(before, "account").is_some() => {
            let from = text(before, "account").unwrap_or("");
            let to = text(after, "account").unwrap_or("");
            recipients.push((
                user.to_string(),
                "move".into(),
                format!("you were moved from account {from} to {to}"),
            ));
            if let Some(owner) = accounts.owner(from) {
                recipients.push((
                    owner,
                    "move".into(),
                    format!("{user} moved from your account {from} to {to}; what they leave passes to its successor"),
                ));
            }
            if let Some(owner) = accounts.owner(to) {
                recipients.push((
                    owner,
                    "move".into(),
                    format!("{user} moved from account {from} into your account {to}"),
                ));
            }
        }
        (Kind::User, Action::Remove) => {
            let account = text(before, "account")
                .unwrap_or(&change.account)
                .to_string();
            if text(before, "status") == Some("invited") {
                recipients.push((
                    user.to_string(),
                    "removal".into(),
                    format!("your invitation to account {account} was cancelled"),
                ));
                if let Some(owner) = accounts.owner(&account) {
                    recipients.push((
                        owner,
                        "removal".into(),
                        format!("the invitation of {user} to account {account} was cancelled"),
                    ));
                }
            } else {
                recipients.push((
                    user.to_string(),
                    "removal".into(),
                    format!("you were removed from account {account}"),
                ));
                if let Some(successor) = accounts.successor(&account) {
                    recipients.push((
                        successor,
                        "removal".into(),
                        format!(
                            "{user} was removed from account {account}; what they owned passes to you"
                        ),
                    ));
                }
            }
        }
        (Kind::Account, Action::Transfer) if after.is_some_and(|f| f.contains_key("owner")) => {
            let old = text(before, "owner");
            let new = text(after, "owner");
            if let Some(new) = new {
                recipients.push((
                    new.to_string(),
                    "transfer".into(),
                    match old {
                        Some(old) => format!(
                            "you are now the owner of account {}, transferred to you by {old}",
                            change.object
                        ),
                        None => format!("you are now the owner of account {}", change.object),
                    },
                ));
            }
            if let Some(old) = old {
                let message = match (new, text(after, "merged_into")) {
                    (_, Some(into)) => format!(
                        "account {} was merged into {into}; you no longer own it",
                        change.object
                    ),
                    (Some(new), None) => {
                        format!("ownership of account {} passed to {new}", change.object)
                    }
                    (None, None) => format!("you no longer own account {}", change.object),
                };
                recipients.push((old.to_string(), "transfer".into(), message));
            }
        }
        (Kind::License, Action::Transfer) if after.is_some_and(|f| f.contains_key("assignee")) => {
            if let Some(new) = text(after, "assignee") {
                recipients.push((
                    new.to_string(),
                    "transfer".into(),
                    format!("license {} is now assigned to you", change.object),
                ));
            }
            if let Some(old) = text(before, "assignee") {
                recipients.push((
                    old.to_string(),
                    "transfer".into(),
                    format!("license {} is no longer assigned to you", change.object),
                ));
            }
        }
        _ => {}
    }
    let mut seen = std::collections::HashSet::new();
    recipients
        .into_iter()
        .filter(|(to, event, _)| seen.insert((to.clone(), event.clone())))
        .map(|(to, event, message)| {
            let digest = Sha256::digest(format!("{}\0{to}\0{event}", change.id));
            let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            Notification {
                id: format!("n-{id}"),
                time: now,
                to,
                event,
                kind: change.kind,
                object: change.object.to_string(),
                message,
                change_id: change.id.to_string(),
                delivered: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::Asset;
    use crate::store::sled_store::tests::sample_state;

    fn fields(value: serde_json::Value) -> Option<Fields> {
        match value {
            serde_json::Value::Object(fields) => Some(fields.into()),
            _ => None,
        }
    }

    fn change(action: Action, kind: Kind, object: &str, before: &str, after: &str) -> Change {
        let parse = |text: &str| fields(serde_json::from_str(text).expect("json"));
        Change::new(
            action,
            kind,
            object,
            "acme",
            parse(before),
            parse(after),
            "test",
        )
    }

    /// The id of the `n`th organization of a large plan.
    fn organization(n: usize) -> String {
        format!("org-{n:06}")
    }

    /// The creation of the `n`th organization, in account acme.
    fn create_organization(n: usize) -> Change {
        change(
            Action::Create,
            Kind::Organization,
            &organization(n),
            "null",
            r#"{"account": "acme"}"#,
        )
    }

    fn context() -> ApplyContext {
        ApplyContext {
            now: Some("2026-11-23T12:00:00Z".parse().expect("timestamp")),
            actor: Some("alice@acme.com".into()),
            revision: None,
        }
    }

    /// A side of a transfer for [`a_transfer_read_in_place_is_decided_as_the_general_check_decides`]:
    /// an owner (`None`: absent; "nonsense" is no owner), tags (`None`:
    /// absent), and maybe a field other than those two.
    fn transfer_side(owner: Option<&str>, tags: Option<serde_json::Value>, other: bool) -> Fields {
        let mut side = serde_json::Map::new();
        if let Some(owner) = owner {
            side.insert("owner".into(), json!(owner));
        }
        if let Some(tags) = tags {
            side.insert("tags".into(), tags);
        }
        if other {
            side.insert("folder".into(), json!("f"));
        }
        side.into()
    }

    proptest::proptest! {
        /// The transfer of an asset read in place ([`owner_transfer`])
        /// decides what the general check decides: skip, apply (and the
        /// asset so changed is valid), or nothing, which leaves it to the
        /// general check (a conflict, an invalid asset, another field);
        /// and the asset an applied transfer leaves, made in place
        /// ([`transferred_asset`]), is the one made through fields.
        #[test]
        fn a_transfer_read_in_place_is_decided_as_the_general_check_decides(
            (owner, tags) in (0usize..3, proptest::collection::btree_map("k[12]", "v[12]", 0..3)),
            before in (proptest::option::of(0usize..4), proptest::option::of(proptest::collection::btree_map("k[12]", "v[12]", 0..3)), proptest::bool::weighted(0.1)),
            after in (proptest::option::of(0usize..4), proptest::option::of(proptest::collection::btree_map("k[12]", "v[12]", 0..3)), proptest::bool::weighted(0.1), proptest::bool::weighted(0.1)),
        ) {
            let owners = ["user:a@x.com", "user:b@x.com", "group:g", "nonsense"];
            let mut state = State::default();
            let asset: Asset = serde_json::from_value(json!({
                "account": "acme", "owner": owners[owner], "tags": tags,
                "creator": null, "folder": null, "versions": [],
            })).expect("asset");
            state.assets.insert("file/f-1".into(), asset);
            let before = transfer_side(before.0.map(|o| owners[o]), before.1.map(|t| json!(t)), before.2);
            let after_tags = match (after.1, after.3) {
                (_, true) => Some(json!("not tags")),
                (tags, false) => tags.map(|t| json!(t)),
            };
            let after = transfer_side(after.0.map(|o| owners[o]), after_tags, after.2);
            proptest::prop_assume!(!before.is_empty() && !after.is_empty());
            let change = Change::new(Action::Transfer, Kind::Asset, "file/f-1", "acme", Some(before.clone()), Some(after.clone()), "test");
            let current = state.fields(Kind::Asset, "file/f-1");
            let mut written = None;
            let general = match decide(Action::Transfer, Some(before), Some(&after), current.as_ref()) {
                Decision::Skip => "skip",
                Decision::Apply => {
                    let fields = fields_after(Action::Transfer, Some(after), current).expect("fields");
                    match Object::from_fields(Kind::Asset, &fields) {
                        Ok(Object::Asset(asset)) => {
                            written = Some(PackedAsset::pack(&asset));
                            "apply"
                        }
                        _ => "invalid",
                    }
                }
                Decision::Conflict(_) => "conflict",
            };
            let in_place = match owner_transfer(&change, &state) {
                Some(OwnerTransfer::Skip) => "skip",
                Some(OwnerTransfer::Apply) => "apply",
                None => "left to the general check",
            };
            let only_owner_and_tags = !change.before().expect("before").contains_key("folder")
                && !change.after().expect("after").contains_key("folder");
            // What the commit writes, packed in place or through fields.
            if let Some(written) = written {
                match transferred_asset(&change, &state) {
                    Some(asset) => proptest::prop_assert_eq!(asset, written),
                    None => proptest::prop_assert!(!only_owner_and_tags),
                }
            }
            match in_place {
                "left to the general check" if only_owner_and_tags => {
                    proptest::prop_assert!(general == "conflict" || general == "invalid", "general: {general}")
                }
                "left to the general check" => {}
                decided => proptest::prop_assert_eq!(decided, general),
            }
        }
    }

    /// A plan of changes that all apply to [`sample_state`], one per object:
    /// as a plan made from that state is.
    fn plan_made_from_sample_state() -> Plan {
        Plan::new(
            vec![
                change(
                    Action::Transfer,
                    Kind::Asset,
                    "proof/p-3",
                    r#"{"owner": "user:bob@acme.com"}"#,
                    r#"{"owner": "group:analysts", "tags": {"original-owner": "bob@acme.com"}}"#,
                ),
                create_organization(1),
                change(
                    Action::Remove,
                    Kind::Grant,
                    "folder/fo-1:bob@acme.com",
                    r#"{"level": "read"}"#,
                    "null",
                ),
                create_organization(0),
            ],
            Vec::new(),
        )
    }

    #[test]
    fn a_plan_made_from_the_state_commits_without_comparing_what_a_compared_plan_commits() {
        let state = sample_state();
        let plan = plan_made_from_sample_state();
        let compared = prepare(&plan, &state, &context()).expect("prepare");
        let own = prepare_own_plan(&plan, &state, &context()).expect("prepare_own_plan");
        assert_eq!(
            (own.applied, own.skipped),
            (compared.applied, compared.skipped)
        );
        assert_eq!((own.applied, own.skipped), (4, 0));
        let (compared, own) = (
            compared.commit.into_whole().expect("parts"),
            own.commit.into_whole().expect("parts"),
        );
        assert_eq!(own.objects, compared.objects);
        assert_eq!(own.objects.len(), 4);
        let changes = |commit: &Commit| -> Vec<Change> {
            commit
                .history
                .iter()
                .map(|entry| entry.change.clone())
                .collect()
        };
        assert_eq!(changes(&own), changes(&compared));
        assert_eq!(changes(&own), plan.changes);
        assert_eq!(own.notifications, compared.notifications);
    }

    /// Debug builds still compare a plan said to be made from the state,
    /// and stop when it is not (this test runs in them only; CI's release
    /// build relies on the property test of `tests/cli/properties.rs`).
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "does not apply to it as made")]
    fn a_plan_said_to_be_made_from_the_state_that_does_not_apply_stops_a_debug_build() {
        let state = sample_state();
        let mut plan = plan_made_from_sample_state();
        // Already done in the sample state: the comparison skips it.
        plan.changes.push(change(
            Action::Transfer,
            Kind::Asset,
            "dataset/ds-1",
            r#"{"owner": "user:bob@acme.com"}"#,
            r#"{"owner": "group:analysts"}"#,
        ));
        let _ = prepare_own_plan(&plan, &state, &context());
    }

    #[test]
    fn the_commit_writes_each_object_once_with_all_its_changes_and_the_history_in_plan_order() {
        let state = sample_state();
        let plan = Plan::new(
            vec![
                change(
                    Action::Transfer,
                    Kind::Asset,
                    "proof/p-3",
                    r#"{"owner": "user:bob@acme.com"}"#,
                    r#"{"owner": "group:analysts"}"#,
                ),
                change(
                    Action::Create,
                    Kind::Organization,
                    "lab",
                    "null",
                    r#"{"account": "acme"}"#,
                ),
                // Already done: skipped.
                change(
                    Action::Transfer,
                    Kind::Asset,
                    "dataset/ds-1",
                    r#"{"owner": "user:bob@acme.com"}"#,
                    r#"{"owner": "group:analysts"}"#,
                ),
                // A second change of proof/p-3, against the first's result.
                change(
                    Action::Update,
                    Kind::Asset,
                    "proof/p-3",
                    r#"{"tags": {"project": "x"}}"#,
                    r#"{"tags": {"project": "y"}}"#,
                ),
                change(
                    Action::Remove,
                    Kind::Grant,
                    "folder/fo-1:bob@acme.com",
                    r#"{"level": "read"}"#,
                    "null",
                ),
            ],
            Vec::new(),
        );
        let outcome = prepare(&plan, &state, &context()).expect("prepare");
        assert_eq!((outcome.applied, outcome.skipped), (4, 1));
        let commit = outcome.commit.into_whole().expect("parts");
        let written: Vec<(Kind, &str)> = commit
            .objects
            .iter()
            .map(|(kind, id, _)| (*kind, id.as_str()))
            .collect();
        assert_eq!(
            written,
            vec![
                (Kind::Organization, "lab"),
                (Kind::Asset, "proof/p-3"),
                (Kind::Grant, "folder/fo-1:bob@acme.com"),
            ]
        );
        let proof = commit.objects[1].2.as_ref().expect("fields");
        assert_eq!(proof["owner"], json!("group:analysts"));
        assert_eq!(proof["tags"], json!({"project": "y"}));
        assert_eq!(proof["creator"], json!("bob@acme.com"));
        assert!(commit.objects[2].2.is_none());
        let history: Vec<usize> = commit
            .history
            .iter()
            .map(|entry| {
                plan.changes
                    .iter()
                    .position(|change| *change == entry.change)
                    .expect("a change of the plan")
            })
            .collect();
        assert_eq!(history, vec![0, 1, 3, 4]);
        assert!(commit
            .history
            .iter()
            .all(|entry| entry.plan_id == plan.id()
                && entry.actor.as_deref() == Some("alice@acme.com")));
    }

    #[test]
    fn a_commit_of_many_parts_alternates_objects_and_history_and_holds_each_once() {
        let state = sample_state();
        let count = 2 * PART_CHANGES + 123;
        // Created in reverse order: the objects (in id order) and the
        // history (in plan order) are made in different orders.
        let plan = Plan::new(
            (0..count).rev().map(create_organization).collect(),
            Vec::new(),
        );
        let outcome = prepare(&plan, &state, &context()).expect("prepare");
        assert_eq!(outcome.applied, count);
        let (mut kinds, mut objects, mut history) = (String::new(), Vec::new(), Vec::new());
        for part in outcome.commit.into_parts() {
            let part = part.expect("part");
            match (part.objects.is_empty(), part.history.is_empty()) {
                (false, true) => kinds.push('O'),
                (true, false) => kinds.push('H'),
                (true, true) => continue,
                (false, false) => panic!("a part of objects and history"),
            }
            objects.extend(part.objects.into_iter().map(|(_, id, _)| id));
            history.extend(
                part.history
                    .into_iter()
                    .map(|entry| entry.change.object.to_string()),
            );
        }
        assert_eq!(
            kinds, "OHOHOH",
            "objects and history in turn, three parts each"
        );
        let expected: Vec<String> = (0..count).map(organization).collect();
        assert_eq!(objects, expected, "each object once, in id order");
        let in_plan_order: Vec<String> = expected.into_iter().rev().collect();
        assert_eq!(history, in_plan_order, "each change once, in plan order");
    }

    #[test]
    fn conflicts_are_reported_in_plan_order_and_nothing_is_committed() {
        let state = sample_state();
        let plan = Plan::new(
            vec![
                change(
                    Action::Transfer,
                    Kind::Asset,
                    "proof/p-3",
                    r#"{"owner": "user:carol@acme.com"}"#,
                    r#"{"owner": "group:analysts"}"#,
                ),
                change(
                    Action::Update,
                    Kind::Account,
                    "acme",
                    r#"{"credits": 1}"#,
                    r#"{"credits": 2}"#,
                ),
            ],
            Vec::new(),
        );
        match prepare(&plan, &state, &context()) {
            Err(ApplyError::Conflicts(conflicts)) => assert_eq!(
                conflicts
                    .iter()
                    .map(|conflict| conflict.object.as_str())
                    .collect::<Vec<_>>(),
                vec!["proof/p-3", "acme"]
            ),
            other => panic!("expected conflicts, got {other:?}"),
        }
    }

    #[test]
    fn an_invalid_object_refuses_the_plan_naming_its_first_change() {
        let state = sample_state();
        let plan = Plan::new(
            vec![change(
                Action::Transfer,
                Kind::Asset,
                "proof/p-3",
                r#"{"owner": "user:bob@acme.com"}"#,
                r#"{"owner": "nobody at all"}"#,
            )],
            Vec::new(),
        );
        match prepare(&plan, &state, &context()) {
            Err(ApplyError::InvalidChange {
                change_id, object, ..
            }) => assert_eq!(
                (change_id.as_str(), object.as_str()),
                (plan.changes[0].id.to_string().as_str(), "proof/p-3")
            ),
            other => panic!("expected an invalid change, got {other:?}"),
        }
    }

    #[test]
    fn a_plan_already_applied_commits_nothing() {
        let state = sample_state();
        let plan = Plan::new(
            vec![change(
                Action::Transfer,
                Kind::Asset,
                "dataset/ds-1",
                r#"{"owner": "user:bob@acme.com"}"#,
                r#"{"owner": "group:analysts"}"#,
            )],
            Vec::new(),
        );
        let outcome = prepare(&plan, &state, &context()).expect("prepare");
        assert_eq!((outcome.applied, outcome.skipped), (0, 1));
        assert!(outcome.commit.is_empty());
    }

    /// A plan past [`CHECK_ON_TWO_THREADS`] is checked in two halves, with
    /// the result of one run: every conflict in plan order, conflicts
    /// before an invalid object, and the first invalid object in order.
    #[test]
    fn a_large_plan_is_checked_in_two_halves_with_the_result_of_one_run() {
        let state = sample_state();
        let count = CHECK_ON_TWO_THREADS + 5_000;
        let creates = || -> Vec<Change> { (0..count).map(create_organization).collect() };
        let invalid = |n: usize| {
            change(
                Action::Create,
                Kind::Organization,
                &organization(n),
                "null",
                r#"{"account": 7}"#,
            )
        };
        let missing = |n: usize| {
            change(
                Action::Update,
                Kind::Organization,
                &organization(n),
                r#"{"account": "acme"}"#,
                r#"{"account": "globex"}"#,
            )
        };
        let outcome = |changes: Vec<Change>| {
            let plan = Plan::new(changes, Vec::new());
            let order = by_object(&plan.changes);
            let one_run = check(&plan.changes, &order, &state);
            let halves = check_in_halves(&plan.changes, &order, &state);
            assert_eq!(
                (halves.applied.len(), halves.skipped, halves.objects),
                (one_run.applied.len(), one_run.skipped, one_run.objects)
            );
            let result = prepare(&plan, &state, &context()).map(|outcome| outcome.applied);
            (plan, result)
        };
        let (first, second) = (10, count - 10);

        let (_, result) = outcome(creates());
        assert_eq!(result.expect("all apply"), count);

        // An invalid object in each half: the first half's is named.
        let mut changes = creates();
        changes[second] = invalid(second);
        changes[first] = invalid(first);
        let (plan, result) = outcome(changes.clone());
        match result {
            Err(ApplyError::InvalidChange { change_id, .. }) => {
                assert_eq!(change_id, plan.changes[first].id.to_string())
            }
            other => panic!("expected an invalid change, got {other:?}"),
        }
        changes[first] = creates().swap_remove(first);
        let (plan, result) = outcome(changes.clone());
        match result {
            Err(ApplyError::InvalidChange { change_id, .. }) => {
                assert_eq!(change_id, plan.changes[second].id.to_string())
            }
            other => panic!("expected an invalid change, got {other:?}"),
        }

        // A conflict in the second half outweighs an invalid object in the
        // first; conflicts in both halves come in plan order.
        let mut changes = creates();
        changes[first] = invalid(first);
        changes[second] = missing(second);
        changes.push(missing(count + 1));
        changes.push(missing(first + 1));
        changes.remove(first + 1);
        let (_, result) = outcome(changes);
        match result {
            Err(ApplyError::Conflicts(conflicts)) => assert_eq!(
                conflicts
                    .iter()
                    .map(|conflict| conflict.object.clone())
                    .collect::<Vec<_>>(),
                vec![
                    organization(second),
                    organization(count + 1),
                    organization(first + 1)
                ]
            ),
            other => panic!("expected conflicts, got {other:?}"),
        }
    }

    /// `prepare` checks each object as `State::put_fields` would take it.
    #[test]
    fn objects_are_checked_as_put_fields_accepts_or_refuses_them() {
        let sample = sample_state();
        let mut checked = 0;
        for kind in Kind::ALL {
            for id in sample.ids(kind) {
                let fields = sample.fields(kind, &id).expect("fields");
                let mut broken = fields.clone();
                let first = fields.keys().next().expect("a field").clone();
                broken.insert(first, FieldValue::Array(Vec::new()));
                let mut missing = fields.clone();
                missing.remove(&fields.keys().last().expect("a field").clone());
                for fields in [fields, broken, missing] {
                    let put = State::default().put_fields(kind, &id, Some(fields.clone()));
                    let check = Object::from_fields(kind, &fields)
                        .map(drop)
                        .map_err(|error| format!("{kind} {id}: {error}"));
                    assert_eq!(check, put, "{kind} {id}");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 30, "{checked}");
    }
}
