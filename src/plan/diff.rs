//! The diff: the target state (see [`super::target`]) against the state,
//! kind by kind, into [`Change`]s in the order they are applied.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::target::{self, ChangedAsset, Reasons, Target};
use super::{Action, Change, Plan};
use crate::desired::Desired;
use crate::diagnostic::Diagnostic;
use crate::model::{to_fields, Fields, Kind, ObjectFields, PackedAsset, State, Timestamp};

/// What planning needs besides the specs and the state.
#[derive(Clone, Debug)]
pub struct PlanConfig {
    /// The time invitations are issued and expire against.
    pub now: Timestamp,
}

/// Plans the changes that make `state` match `desired`. Fails with every
/// broken rule at once.
pub fn plan(
    desired: &Desired,
    state: &State,
    config: &PlanConfig,
) -> Result<Plan, Vec<Diagnostic>> {
    let mut target = target::build(desired, state, config.now);
    if !target.errors.is_empty() {
        return Err(target.errors);
    }
    // Taken out, so that each is freed as the diff goes (a million
    // entries each when a rule moves a million assets).
    let overlay = target.assets.take_overlay();
    let mut reasons = std::mem::take(&mut target.reasons);
    // Sized once for the usual bulk of a large plan, the assets, rather
    // than doubled to it (a million changes are 150 MB).
    let mut changes = Vec::with_capacity(overlay.len());
    let mut differ = Differ {
        desired,
        state,
        target: &target,
        reasons: &mut reasons,
        changes: &mut changes,
        accounts: HashSet::new(),
    };
    differ.kind(Kind::Account, &state.accounts, &target.accounts);
    differ.kind(Kind::User, &state.users, &target.users);
    differ.kind(Kind::Group, &state.groups, target.groups);
    differ.kind(Kind::Membership, &state.memberships, target.memberships);
    differ.kind(
        Kind::Organization,
        &state.organizations,
        &target.organizations,
    );
    differ.kind(Kind::Product, &state.products, target.products);
    differ.kind(Kind::License, &state.licenses, &target.licenses);
    differ.assets(overlay);
    differ.kind(Kind::Grant, &state.grants, &target.grants);
    // In place: a stable sort would take a buffer of half the changes.
    // Each object has one change, so the keys are unique and the order is
    // the same.
    changes.sort_unstable_by(|a, b| order_key(a).cmp(&order_key(b)));
    Ok(Plan::new(changes, target.pending.clone()))
}

/// Sorted by account, then creations, updates and transfers in dependency
/// order, then removals in reverse dependency order (after the transfers
/// that free what they remove).
pub(crate) fn order_key(change: &Change) -> (&str, u8, i32, &str) {
    let rank = Kind::ALL
        .iter()
        .position(|k| *k == change.kind)
        .unwrap_or(0) as i32;
    match change.action {
        Action::Remove => (&change.account, 1, -rank, &change.object),
        _ => (&change.account, 0, rank, &change.object),
    }
}

/// The fields whose change makes a change a transfer (contract 3.1).
fn transfer_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Account => &["owner"],
        Kind::User => &["account"],
        Kind::Organization => &["account"],
        Kind::Product => &["organization"],
        Kind::License => &["assignee", "account"],
        Kind::Asset => &["owner", "account"],
        Kind::Group | Kind::Membership | Kind::Grant => &[],
    }
}

/// From this many changed and created assets on, half of them are diffed
/// on a second thread.
const ASSETS_ON_TWO_THREADS: usize = 50_000;

/// The second thread's changes are handed over in chunks of this many.
const ASSET_CHUNK: usize = 4_096;

struct Differ<'a, 's> {
    desired: &'a Desired,
    state: &'s State,
    target: &'a Target<'s>,
    /// The target's reasons, each taken by its change.
    reasons: &'a mut Reasons,
    changes: &'a mut Vec<Change>,
    /// The accounts of the changes, one shared text each (a thousand
    /// accounts for a million changes at scale).
    accounts: HashSet<Arc<str>>,
}

impl Differ<'_, '_> {
    fn kind<T: ObjectFields>(
        &mut self,
        kind: Kind,
        current: &BTreeMap<String, T>,
        wanted: &BTreeMap<String, T>,
    ) {
        // Both maps are sorted by id: one walk over the two, in step (a
        // lookup per object costs more when there are 300k memberships).
        let mut removed = Vec::new();
        let mut current = current.iter().peekable();
        for (id, object) in wanted {
            while let Some((current_id, existing)) = current.next_if(|(c, _)| *c < id) {
                removed.push((current_id, existing));
            }
            match current.next_if(|(c, _)| *c == id) {
                None => self.push(kind, id, None, Some(to_fields(object))),
                Some((_, existing)) if existing != object => {
                    let (before, after) = existing.changed_fields(object);
                    self.push(kind, id, Some(before), Some(after))
                }
                Some(_) => {}
            }
        }
        removed.extend(current);
        for (id, existing) in removed {
            self.push(kind, id, Some(to_fields(existing)), None);
        }
    }

    /// The changed and created assets (the overlay of the target, taken by
    /// value and freed as it goes), each listed under its new account. A
    /// large overlay is split in two at an id, and its second half diffed
    /// on a thread of its own, which hands its changes over in chunks as it
    /// makes them: they go into the same list between the first half's (the
    /// plan is sorted afterwards either way), so that no second list of
    /// half the changes is held. Assets keep their reasons in the overlay,
    /// never in [`Reasons`], so the second half needs none of the first's.
    fn assets(&mut self, mut overlay: BTreeMap<String, ChangedAsset>) {
        let middle = (overlay.len() >= ASSETS_ON_TWO_THREADS)
            .then(|| overlay.keys().nth(overlay.len() / 2).cloned())
            .flatten();
        let Some(middle) = middle else {
            self.asset_changes(overlay, self.state.assets.packed_iter(), &mut |_| {});
            return;
        };
        let second = overlay.split_off(&middle);
        let (desired, state, target) = (self.desired, self.state, self.target);
        std::thread::scope(|scope| {
            let (sender, chunks) = std::sync::mpsc::sync_channel::<Vec<Change>>(4);
            let thread = scope.spawn(move || {
                let mut reasons = Reasons::default();
                let mut changes = Vec::with_capacity(ASSET_CHUNK);
                let mut differ = Differ {
                    desired,
                    state,
                    target,
                    reasons: &mut reasons,
                    changes: &mut changes,
                    accounts: HashSet::new(),
                };
                let mut hand_over = |changes: &mut Vec<Change>| {
                    if changes.len() >= ASSET_CHUNK {
                        // The receiver only goes once this thread is joined.
                        let _ = sender
                            .send(std::mem::replace(changes, Vec::with_capacity(ASSET_CHUNK)));
                    }
                };
                differ.asset_changes(second, state.assets.packed_from(&middle), &mut hand_over);
                let _ = sender.send(changes);
            });
            let mut take_over = |changes: &mut Vec<Change>| {
                for chunk in chunks.try_iter() {
                    changes.extend(chunk);
                }
            };
            self.asset_changes(overlay, self.state.assets.packed_iter(), &mut take_over);
            for chunk in chunks.iter() {
                self.changes.extend(chunk);
            }
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        });
    }

    /// The changes of the assets of `overlay`, against the state's assets
    /// `stored` (sorted by id, from the overlay's first id or before). Both
    /// are walked in step (when a rule moves a million assets, a lookup
    /// each costs more). `every_chunk` is given the changes every
    /// [`ASSET_CHUNK`] assets.
    fn asset_changes<'i>(
        &mut self,
        overlay: BTreeMap<String, ChangedAsset>,
        stored: impl Iterator<Item = (&'i String, &'i PackedAsset)>,
        every_chunk: &mut dyn FnMut(&mut Vec<Change>),
    ) {
        let mut stored = stored.peekable();
        for (at, (id, changed)) in overlay.into_iter().enumerate() {
            if at % ASSET_CHUNK == 0 {
                every_chunk(self.changes);
            }
            while stored.next_if(|(stored_id, _)| **stored_id < id).is_some() {}
            let existing = stored
                .next_if(|(stored_id, _)| **stored_id == id)
                .map(|(_, existing)| existing);
            // Packed bytes are canonical: equal bytes, equal assets, and
            // neither is unpacked.
            if existing == Some(&changed.asset) {
                continue;
            }
            // Read in place: neither asset is unpacked, and only the values
            // that differ are made.
            let Some(account) = changed.asset.account() else {
                continue;
            };
            let account = Some(account);
            let reason = changed.reason;
            match existing.and_then(|existing| existing.changed_fields(&changed.asset)) {
                None => {
                    let Some(after) = changed.asset.fields() else {
                        continue;
                    };
                    self.push_in(Kind::Asset, id.into(), account, reason, None, Some(after))
                }
                Some((before, after)) => {
                    let id = id.into();
                    self.push_in(Kind::Asset, id, account, reason, Some(before), Some(after))
                }
            }
        }
    }

    /// Records one change: a create (only `after`), a remove (only
    /// `before`, the full fields), or an update or transfer (the changed
    /// fields on both sides).
    fn push(&mut self, kind: Kind, id: &str, before: Option<Fields>, after: Option<Fields>) {
        self.push_in(kind, id.into(), None, None, before, after)
    }

    /// [`Differ::push`], with the account of the object in the target and
    /// the reason when the caller has them (`None`: looked up). The id is
    /// taken as it is when the caller owns it (a million asset ids).
    fn push_in(
        &mut self,
        kind: Kind,
        id: Cow<'_, str>,
        target_account: Option<&str>,
        reason: Option<Arc<str>>,
        before: Option<Fields>,
        after: Option<Fields>,
    ) {
        let (action, before, after) = match (before, after) {
            (None, Some(after)) => (Action::Create, None, Some(after)),
            (Some(before), None) => (Action::Remove, Some(before), None),
            (Some(before), Some(after)) => {
                if after.is_empty() {
                    return;
                }
                let is_transfer = after
                    .keys()
                    .any(|key| transfer_fields(kind).contains(&key.as_str()));
                let action = if is_transfer {
                    Action::Transfer
                } else {
                    Action::Update
                };
                (action, Some(before), Some(after))
            }
            (None, None) => return,
        };
        let account = match target_account {
            Some(account) if action != Action::Remove => self.shared_account(account),
            _ => {
                let account = self.account_of(kind, &id, action);
                self.shared_account(&account)
            }
        };
        let reason = match reason {
            Some(reason) => reason,
            None => self.reason(kind, &id, action),
        };
        self.changes.push(Change::new(
            action,
            kind,
            id.into_owned(),
            account,
            before,
            after,
            reason,
        ));
    }

    /// The one shared text of `account` among the plan's changes.
    fn shared_account(&mut self, account: &str) -> Arc<str> {
        match self.accounts.get(account) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = account.into();
                self.accounts.insert(shared.clone());
                shared
            }
        }
    }

    /// The account a change is listed under: where the object will be, or,
    /// for a removal, where it was.
    fn account_of(&self, kind: Kind, id: &str, action: Action) -> String {
        let target = self.target;
        let in_target = match kind {
            Kind::Account => Some(id.to_string()),
            Kind::User => target.users.get(id).map(|o| o.account.clone()),
            Kind::Group => target.groups.get(id).map(|o| o.account.clone()),
            Kind::Membership => target.memberships.get(id).map(|o| o.account.clone()),
            Kind::Organization => target.organizations.get(id).map(|o| o.account.clone()),
            Kind::Product => target
                .products
                .get(id)
                .and_then(|p| target.organizations.get(&p.organization))
                .map(|o| o.account.clone()),
            Kind::License => target.licenses.get(id).map(|o| o.account.clone()),
            Kind::Asset => target.assets.get(id).map(|o| o.account.clone()),
            Kind::Grant => target.grants.get(id).map(|o| o.account.clone()),
        };
        match (action, in_target) {
            (Action::Remove, _) | (_, None) => self.state.account_of(kind, id).unwrap_or_default(),
            (_, Some(account)) => account,
        }
    }

    fn reason(&mut self, kind: Kind, id: &str, action: Action) -> Arc<str> {
        if let Some(reason) = self.reasons.remove(kind, id) {
            return reason;
        }
        let origin = self.desired.origin(kind, id).map(|o| &*o.path);
        match (action, origin) {
            (Action::Remove, _) => "no longer in the specs".into(),
            (Action::Create, Some(path)) => format!("declared in {path}").into(),
            (_, Some(path)) => format!("changed in {path}").into(),
            (_, None) => "follows the specs".into(),
        }
    }
}
