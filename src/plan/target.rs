//! The target state: what the state must become for the specs to hold, with
//! the ownership rules of contract §2 applied (moves, merges, removals,
//! `reassign` rules, pins, invitations). [`super::diff`] turns the difference
//! between the target and the state into changes.
//!
//! Assets are the bulk of a large state (a million of them), so the target
//! keeps only the assets it changes ([`TargetAssets`]), over the state's.

use std::borrow::Cow;
use std::collections::{btree_map, hash_map, BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::desired::{Desired, DesiredAccount, ReassignRule};
use crate::diagnostic::Diagnostic;
use crate::model::{
    email_domain, grant_id, Account, Asset, AssetKind, Assets, Grant, Group, Kind, License,
    Membership, Organization, Owner, OwnerRef, PackedAsset, Product, Role, State, Timestamp, User,
    UserStatus,
};

use super::Pending;

/// The target of every kind but assets, in full; assets as an overlay.
/// Groups, memberships and products are the specs' own, as declared: no
/// rule changes them (300k memberships at scale are not copied).
pub(crate) struct Target<'s> {
    pub accounts: BTreeMap<String, Account>,
    pub users: BTreeMap<String, User>,
    pub groups: &'s BTreeMap<String, Group>,
    pub memberships: &'s BTreeMap<String, Membership>,
    pub organizations: BTreeMap<String, Organization>,
    pub products: &'s BTreeMap<String, Product>,
    pub licenses: BTreeMap<String, License>,
    pub assets: TargetAssets<'s>,
    pub grants: BTreeMap<String, Grant>,
    /// Why an object changes, where that is more than "the specs say so".
    pub reasons: Reasons,
    pub pending: Vec<Pending>,
    pub errors: Vec<Diagnostic>,
}

/// Why objects change, where that is more than "the specs say so": by
/// kind, then id, so that the diff looks a reason up by `&str` (a plan of a
/// million transfers looks up a million reasons). Hashed as the owner
/// indexes are ([`HashIndex`]).
#[derive(Debug, Default)]
pub(crate) struct Reasons {
    /// Indexed by the position of the kind in [`Kind::ALL`].
    by_kind: [HashIndex<String, Arc<str>>; 9],
}

impl Reasons {
    fn of_kind(&mut self, kind: Kind) -> &mut HashIndex<String, Arc<str>> {
        let slot = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &mut self.by_kind[slot]
    }

    /// Sets the reason of `id`; gives the one it replaces.
    fn insert(&mut self, (kind, id): (Kind, String), reason: Arc<str>) -> Option<Arc<str>> {
        self.of_kind(kind).insert(id, reason)
    }

    /// Sets the reason of `id` unless it has one.
    fn insert_if_absent(&mut self, (kind, id): (Kind, String), reason: Arc<str>) {
        self.of_kind(kind).entry(id).or_insert(reason);
    }

    /// Takes the reason of `id` out.
    pub fn remove(&mut self, kind: Kind, id: &str) -> Option<Arc<str>> {
        self.of_kind(kind).remove(id)
    }
}

impl Target<'_> {
    /// Sets why object `id` changes, replacing the reason it had. An
    /// asset's reason is kept with the asset in the overlay (a rule that
    /// moves a million assets gives a million reasons, mostly the same
    /// text: shared, and no copy of each id).
    pub fn set_reason(&mut self, (kind, id): (Kind, String), reason: impl Into<Arc<str>>) {
        match kind {
            Kind::Asset => self.assets.set_reason(id, reason.into(), true),
            _ => {
                self.reasons.insert((kind, id), reason.into());
            }
        }
    }

    /// Sets why object `id` changes, unless it has a reason.
    pub fn set_reason_if_absent(
        &mut self,
        (kind, id): (Kind, String),
        reason: impl Into<Arc<str>>,
    ) {
        match kind {
            Kind::Asset => self.assets.set_reason(id, reason.into(), false),
            _ => self.reasons.insert_if_absent((kind, id), reason.into()),
        }
    }
}

/// The hash map of the target's indexes and reasons (a million entries go
/// in at scale). Not the spec loader's case-folding hasher: the keys come
/// from the inventory and the specs, and a hostile inventory naming many
/// groups that differ only in case must not make every key collide.
/// foldhash's seeds are random per process as `std`'s are, and it hashes
/// these short keys several times faster.
type HashIndex<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Assets of the target: the state's, with an overlay of changed and created
/// ones, and an index by (account, owner) kept up to date as owners change.
///
/// The index of the state's assets borrows their ids and owners (a million
/// of them at scale: no copies); the overlay, small unless a rule moves
/// many assets, has its own. An asset of the state that is in the overlay
/// counts under its overlay owner only. The overlay's assets are packed
/// ([`PackedAsset`]): a rule that moves a million assets holds a million
/// of them, a third of the memory of as many [`Asset`]s.
pub(crate) struct TargetAssets<'s> {
    pub base: &'s Assets,
    pub overlay: BTreeMap<String, ChangedAsset>,
    /// Reasons of assets given before the asset is in the overlay; moved
    /// into its entry when it is put there.
    waiting_reasons: HashIndex<String, Arc<str>>,
    /// The state's assets by (account, owner), ids in order; shared with
    /// the siblings that apply reassign rules on a second thread (see
    /// [`TargetAssets::unchanged_sibling`]).
    base_by_owner: Arc<BaseByOwner<'s>>,
    /// How many ids of each `base_by_owner` list the overlay has taken.
    base_taken: HashIndex<(&'s str, OwnerRef<'s>), usize>,
    /// The overlay's assets by (account, owner).
    overlay_by_owner: HashIndex<(String, Owner), BTreeSet<String>>,
}

/// The state's assets by (account, owner), ids in order.
type BaseByOwner<'s> = HashIndex<(&'s str, OwnerRef<'s>), Vec<&'s str>>;

/// An asset the target changes or creates, and why, if more than "the specs
/// say so".
pub(crate) struct ChangedAsset {
    pub asset: PackedAsset,
    pub reason: Option<Arc<str>>,
}

impl<'s> TargetAssets<'s> {
    fn new(base: &'s Assets) -> Self {
        let mut base_by_owner = BaseByOwner::default();
        for (id, asset) in base.packed_iter() {
            // Read in place: a million assets are not unpacked for this.
            let (Some(account), Some(owner)) = (asset.account(), asset.owner()) else {
                continue;
            };
            base_by_owner
                .entry((account, owner))
                .or_default()
                .push(id.as_str());
        }
        TargetAssets {
            base_by_owner: Arc::new(base_by_owner),
            ..TargetAssets::unindexed(base)
        }
    }

    /// The state's assets without their owner index: a stand-in for the
    /// steps that never look at assets while [`TargetAssets::new`] runs.
    fn unindexed(base: &'s Assets) -> Self {
        TargetAssets {
            base,
            overlay: BTreeMap::new(),
            waiting_reasons: HashIndex::default(),
            base_by_owner: Arc::default(),
            base_taken: HashIndex::default(),
            overlay_by_owner: HashIndex::default(),
        }
    }

    /// Asset `id` of the target, unpacked from the overlay or the state.
    pub fn get(&self, id: &str) -> Option<Cow<'_, Asset>> {
        match self.overlay.get(id) {
            Some(changed) => changed.asset.unpack().map(Cow::Owned),
            None => self.base.get(id).map(Cow::Owned),
        }
    }

    /// Whether the target has asset `id` (nothing unpacked).
    pub fn contains(&self, id: &str) -> bool {
        self.overlay.contains_key(id) || self.base.contains_key(id)
    }

    /// Ids of the assets of `account` owned by `owner`, sorted.
    pub fn owned_by(&self, account: &str, owner: &Owner) -> Vec<String> {
        let from_base = self
            .base_by_owner
            .get(&(account, owner.borrowed()))
            .map(|ids| ids.as_slice())
            .unwrap_or_default();
        let taken = self
            .base_taken
            .get(&(account, owner.borrowed()))
            .copied()
            .unwrap_or_default();
        let from_overlay = self
            .overlay_by_owner
            .get(&(account.to_string(), owner.clone()));
        let mut ids: Vec<String> = Vec::with_capacity(
            from_base.len() - taken.min(from_base.len()) + from_overlay.map_or(0, BTreeSet::len),
        );
        let mut still_in_base = from_base
            .iter()
            .filter(|id| taken == 0 || !self.overlay.contains_key(**id))
            .peekable();
        let mut in_overlay = from_overlay.into_iter().flatten().peekable();
        // Both sorted and disjoint: merged in order.
        loop {
            let next = match (still_in_base.peek(), in_overlay.peek()) {
                (Some(a), Some(b)) if **a < b.as_str() => {
                    still_in_base.next().map(|id| id.to_string())
                }
                (Some(_), Some(_)) | (None, Some(_)) => in_overlay.next().cloned(),
                (Some(_), None) => still_in_base.next().map(|id| id.to_string()),
                (None, None) => break,
            };
            ids.extend(next);
        }
        ids
    }

    /// Every (account, owner) pair that owns at least one asset, sorted.
    pub fn owners(&self) -> Vec<(String, Owner)> {
        let mut owners: BTreeSet<(String, Owner)> = self
            .base_by_owner
            .iter()
            .filter(|(key, ids)| ids.len() > self.base_taken.get(*key).copied().unwrap_or_default())
            .map(|((account, owner), _)| (account.to_string(), owner.to_owner()))
            .collect();
        owners.extend(
            self.overlay_by_owner
                .iter()
                .filter(|(_, ids)| !ids.is_empty())
                .map(|(key, _)| key.clone()),
        );
        owners.into_iter().collect()
    }

    /// Sets (or creates) asset `id`, keeping the index right.
    pub fn put(&mut self, id: &str, asset: Asset) {
        self.overlay_by_owner
            .entry((asset.account.clone(), asset.owner.clone()))
            .or_default()
            .insert(id.to_string());
        let packed = PackedAsset::pack(&asset);
        // One search of the overlay, whether the asset is in it or not.
        match self.overlay.entry(id.to_string()) {
            btree_map::Entry::Occupied(mut entry) => {
                if let Some(old) = entry.get().asset.unpack() {
                    let moved = (old.account != asset.account) || (old.owner != asset.owner);
                    if let (true, Some(ids)) = (
                        moved,
                        self.overlay_by_owner.get_mut(&(old.account, old.owner)),
                    ) {
                        ids.remove(id);
                    }
                }
                entry.get_mut().asset = packed;
            }
            btree_map::Entry::Vacant(entry) => {
                if let Some(old) = self.base.packed(id) {
                    if let (Some(account), Some(owner)) = (old.account(), old.owner()) {
                        *self.base_taken.entry((account, owner)).or_default() += 1;
                    }
                }
                let reason = self.waiting_reasons.remove(id);
                entry.insert(ChangedAsset {
                    asset: packed,
                    reason,
                });
            }
        }
    }

    /// Moves assets `ids` of `account` from owner `from` to owner `to`,
    /// adding `tags` to theirs, each with `reason` (replacing any): the
    /// same as [`TargetAssets::get`], the change, [`TargetAssets::put`]
    /// and [`Target::set_reason`] for each, in fewer searches of the
    /// large maps: the overlay and the state's assets are searched once
    /// for each (a rule's assets lie scattered among a million others),
    /// and an asset is changed in its packed bytes, not unpacked. `ids`
    /// are some of [`TargetAssets::owned_by`]'s for `account` and `from`.
    pub fn reassign(
        &mut self,
        (account, from): (&str, &Owner),
        ids: &[String],
        to: &Owner,
        tags: &BTreeMap<String, String>,
        reason: &Arc<str>,
    ) {
        let moved = |asset: &PackedAsset| asset.with_owner_and_tags(to, tags);
        let mut arrived = BTreeSet::new();
        let mut left = Vec::new();
        for id in ids {
            match self.overlay.entry(id.clone()) {
                btree_map::Entry::Occupied(mut entry) => {
                    let Some(asset) = moved(&entry.get().asset) else {
                        continue;
                    };
                    entry.get_mut().asset = asset;
                    entry.get_mut().reason = Some(reason.clone());
                    if from != to {
                        left.push(id);
                    }
                }
                btree_map::Entry::Vacant(entry) => {
                    let Some(old) = self.base.packed(id) else {
                        continue;
                    };
                    let Some(asset) = moved(old) else { continue };
                    if let (Some(account), Some(owner)) = (old.account(), old.owner()) {
                        *self.base_taken.entry((account, owner)).or_default() += 1;
                    }
                    self.waiting_reasons.remove(id);
                    entry.insert(ChangedAsset {
                        asset,
                        reason: Some(reason.clone()),
                    });
                }
            }
            arrived.insert(id.clone());
        }
        if let Some(ids) = self
            .overlay_by_owner
            .get_mut(&(account.to_string(), from.clone()))
        {
            for id in left {
                ids.remove(id);
            }
        }
        if !arrived.is_empty() {
            self.overlay_by_owner
                .entry((account.to_string(), to.clone()))
                .or_default()
                .append(&mut arrived);
        }
    }

    /// Whether nothing has been changed or given a reason yet.
    fn is_unchanged(&self) -> bool {
        self.overlay.is_empty()
            && self.waiting_reasons.is_empty()
            && self.base_taken.is_empty()
            && self.overlay_by_owner.is_empty()
    }

    /// The same state's assets, unchanged, sharing this one's owner index
    /// (not copied): for the changes to some accounts' assets to be made
    /// apart, on another thread, and taken in by [`TargetAssets::absorb`].
    fn unchanged_sibling(&self) -> TargetAssets<'s> {
        TargetAssets {
            base_by_owner: Arc::clone(&self.base_by_owner),
            ..TargetAssets::unindexed(self.base)
        }
    }

    /// Takes in the changes of `sibling` (see
    /// [`TargetAssets::unchanged_sibling`]), which changed other assets
    /// than this one did: the two overlays are merged in one walk (not an
    /// insertion each), and so are their indexes.
    fn absorb(&mut self, mut sibling: TargetAssets<'s>) {
        self.overlay.append(&mut sibling.overlay);
        self.waiting_reasons.extend(sibling.waiting_reasons);
        for (key, taken) in sibling.base_taken {
            *self.base_taken.entry(key).or_default() += taken;
        }
        for (key, mut ids) in sibling.overlay_by_owner {
            self.overlay_by_owner
                .entry(key)
                .or_default()
                .append(&mut ids);
        }
    }

    /// Sets why asset `id` changes: replacing the reason it had, or only
    /// if it has none.
    fn set_reason(&mut self, id: String, reason: Arc<str>, replace: bool) {
        if let Some(changed) = self.overlay.get_mut(&id) {
            if replace || changed.reason.is_none() {
                changed.reason = Some(reason);
            }
            return;
        }
        match self.waiting_reasons.entry(id) {
            hash_map::Entry::Occupied(mut entry) if replace => {
                entry.insert(reason);
            }
            hash_map::Entry::Occupied(_) => {}
            hash_map::Entry::Vacant(entry) => {
                entry.insert(reason);
            }
        }
    }

    /// The changed and created assets, taken out for the diff; the owner
    /// indexes are dropped with them (a million entries at scale), so that
    /// their memory is free before the changes are made.
    pub fn take_overlay(&mut self) -> BTreeMap<String, ChangedAsset> {
        self.base_by_owner = Arc::default();
        self.base_taken = HashIndex::default();
        self.overlay_by_owner = HashIndex::default();
        self.waiting_reasons = HashIndex::default();
        std::mem::take(&mut self.overlay)
    }

    /// Number of assets in `account`.
    pub fn count_in(&self, account: &str) -> usize {
        self.owners()
            .iter()
            .filter(|(owner_account, _)| owner_account == account)
            .map(|(owner_account, owner)| self.owned_by(owner_account, owner).len())
            .sum()
    }

    /// Up to `limit` asset ids of `account`, sorted.
    pub fn sample_in(&self, account: &str, limit: usize) -> Vec<String> {
        let mut ids: Vec<String> = self
            .owners()
            .iter()
            .filter(|(owner_account, _)| owner_account == account)
            .flat_map(|(owner_account, owner)| self.owned_by(owner_account, owner))
            .collect();
        ids.sort();
        ids.truncate(limit);
        ids
    }
}

/// From this many assets on, their owner index is made on a second thread.
const INDEX_ON_A_THREAD: usize = 50_000;

/// Builds the target for `desired` over `state` at time `now`.
pub(crate) fn build<'s>(desired: &'s Desired, state: &'s State, now: Timestamp) -> Target<'s> {
    std::thread::scope(|scope| {
        // The owner index of the state's assets (a million at scale) is
        // made on a second thread while the first steps, which never look
        // at assets, run; it is the same index on either thread.
        let indexing = (state.assets.len() >= INDEX_ON_A_THREAD)
            .then(|| {
                std::thread::Builder::new()
                    .name("deed-asset-index".into())
                    .spawn_scoped(scope, || TargetAssets::new(&state.assets))
                    .ok()
            })
            .flatten();
        let mut target = Target {
            accounts: BTreeMap::new(),
            users: BTreeMap::new(),
            groups: &desired.groups,
            memberships: &desired.memberships,
            organizations: BTreeMap::new(),
            products: &desired.products,
            licenses: BTreeMap::new(),
            assets: TargetAssets::unindexed(&state.assets),
            grants: state.grants.clone(),
            reasons: Reasons::default(),
            pending: Vec::new(),
            errors: Vec::new(),
        };
        let mut builder = Builder {
            desired,
            state,
            now,
        };
        builder.accounts(&mut target);
        builder.users(&mut target);
        builder.organizations_and_licenses(&mut target);
        target.assets = match indexing {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => TargetAssets::new(&state.assets),
        };
        builder.finish(target)
    })
}

impl<'a> Builder<'a> {
    /// The steps that look at assets, once their index is made.
    fn finish<'s>(&mut self, mut target: Target<'s>) -> Target<'s> {
        self.pins_and_reassign_rules(&mut target);
        self.merges(&mut target);
        self.moves(&mut target);
        self.orphans(&mut target);
        self.orphan_versions(&mut target);
        self.grants(&mut target);
        self.organization_removals(&mut target);
        self.account_removals(&mut target);
        self.connection_requests(&mut target);
        target
            .pending
            .sort_by(|a, b| (a.kind, &a.object, &a.reason).cmp(&(b.kind, &b.object, &b.reason)));
        target.errors.sort();
        target.errors.dedup();
        target
    }
}

struct Builder<'a> {
    desired: &'a Desired,
    state: &'a State,
    now: Timestamp,
}

impl<'a> Builder<'a> {
    /// A diagnostic at the object's declaration, else at its account's
    /// header, else at the specs folder.
    fn error(&self, kind: Kind, id: &str, account: &str, message: String) -> Diagnostic {
        match self
            .desired
            .origin(kind, id)
            .or_else(|| self.desired.origin(Kind::Account, account))
        {
            Some(origin) => Diagnostic::at_origin(origin, message),
            None => Diagnostic::general(message),
        }
    }

    fn desired_account(&self, id: &str) -> Option<&'a DesiredAccount> {
        self.desired.accounts.get(id)
    }

    /// Accounts: header fields from the specs, credits from the state, and
    /// the owner — which changes only when the new owner is active.
    fn accounts(&mut self, target: &mut Target) {
        for (id, wanted) in &self.desired.accounts {
            let current = self.state.accounts.get(id);
            let mut owner = wanted.owner.clone();
            if let (Some(current), Some(new_owner)) = (current, wanted.owner.as_ref()) {
                if current.owner.as_ref() != Some(new_owner) && current.merged_into.is_none() {
                    let domain = email_domain(new_owner);
                    if !wanted.domains.iter().any(|d| d == domain) {
                        target.errors.push(self.error(
                            Kind::User,
                            new_owner,
                            id,
                            format!(
                                "account {id}: ownership cannot pass to {new_owner}: a new owner's email domain must be one of the account's domains, and {domain} is not ({}); choose an owner with an address in {}, or add {domain} to domains",
                                wanted.domains.join(", "),
                                wanted.domains.join(" or ")
                            ),
                        ));
                    }
                    let new_owner_active = self
                        .state
                        .users
                        .get(new_owner)
                        .is_some_and(|user| user.status == UserStatus::Active);
                    if !new_owner_active && current.owner.is_some() {
                        target.pending.push(Pending {
                            kind: Kind::Account,
                            object: id.clone(),
                            reason: format!(
                                "owner -> {new_owner} waits for {new_owner} to accept the invitation"
                            ),
                        });
                        owner = current.owner.clone();
                    } else {
                        target.set_reason(
                            (Kind::Account, id.clone()),
                            match &current.owner {
                                Some(old) => format!("ownership passes from {old} to {new_owner}"),
                                None => format!("ownership passes to {new_owner}"),
                            },
                        );
                    }
                }
            }
            target.accounts.insert(
                id.clone(),
                Account {
                    owner,
                    domains: wanted.domains.clone(),
                    hub: wanted.hub.clone(),
                    connections: wanted.connections.clone(),
                    credits: current.map_or(0, |account| account.credits),
                    merged_into: wanted.merged_into.clone(),
                    invite_ttl: wanted.invite_ttl,
                    successor: wanted.successor.clone(),
                },
            );
        }
    }

    /// Users: invitations for new ones, re-issued invitations, roles, and a
    /// previous owner who stays owner while a transfer is pending.
    fn users(&mut self, target: &mut Target) {
        // The specs' users and the state's are both sorted by email: walked
        // in step (a lookup each costs more at 100k users), and the target's
        // map is built in bulk from the sorted list.
        let mut in_state = self.state.users.iter().peekable();
        let mut users = Vec::with_capacity(self.desired.users.len());
        for (email, wanted) in &self.desired.users {
            while in_state.next_if(|(current, _)| *current < email).is_some() {}
            let current = in_state
                .next_if(|(current, _)| *current == email)
                .map(|(_, user)| user);
            // When a new invitation issued now expires (most users have
            // none to issue).
            let expires_at = || {
                let ttl = self
                    .desired_account(&wanted.account)
                    .map_or(crate::model::Duration::DEFAULT_INVITE_TTL, |a| a.invite_ttl);
                add_seconds(self.now, ttl.seconds)
            };
            let user = match current {
                None => {
                    target.set_reason(
                        (Kind::User, email.clone()),
                        format!("invited to {}", wanted.account),
                    );
                    User {
                        account: wanted.account.clone(),
                        role: wanted.role,
                        name: wanted.name.clone(),
                        status: UserStatus::Invited,
                        invitation_expires: Some(expires_at()),
                    }
                }
                Some(current) => {
                    let mut invitation_expires = current.invitation_expires;
                    if current.status == UserStatus::Invited
                        && current
                            .invitation_expires
                            .is_none_or(|expires| expires <= self.now)
                    {
                        invitation_expires = Some(expires_at());
                        target.set_reason(
                            (Kind::User, email.clone()),
                            "invitation expired; re-issued".to_string(),
                        );
                    }
                    User {
                        account: wanted.account.clone(),
                        role: wanted.role,
                        name: wanted.name.clone(),
                        status: current.status,
                        invitation_expires,
                    }
                }
            };
            users.push((email.clone(), user));
        }
        if target.users.is_empty() {
            target.users = users.into_iter().collect();
        } else {
            target.users.extend(users);
        }
        // A pending ownership transfer keeps the old owner in place and the
        // new one out of the owner role.
        for (account_id, account) in &target.accounts {
            let Some(wanted) = self.desired_account(account_id) else {
                continue;
            };
            if account.owner == wanted.owner {
                continue;
            }
            if let Some(new_owner) = &wanted.owner {
                if let Some(user) = target.users.get_mut(new_owner) {
                    user.role = self.state.users.get(new_owner).map_or(Role::Member, |u| {
                        if u.role == Role::Owner {
                            Role::Admin
                        } else {
                            u.role
                        }
                    });
                }
            }
            if let Some(old_owner) = &account.owner {
                match (
                    target.users.get_mut(old_owner),
                    self.state.users.get(old_owner),
                ) {
                    (Some(user), Some(current)) if user.account != current.account => {
                        *user = current.clone();
                        target.pending.push(Pending {
                            kind: Kind::User,
                            object: old_owner.clone(),
                            reason: format!(
                                "move waits for the ownership transfer of account {account_id}"
                            ),
                        });
                    }
                    (Some(user), _) => user.role = Role::Owner,
                    (None, Some(current)) => {
                        target.users.insert(old_owner.clone(), current.clone());
                        target.pending.push(Pending {
                            kind: Kind::User,
                            object: old_owner.clone(),
                            reason: format!(
                                "removal waits for the ownership transfer of account {account_id}"
                            ),
                        });
                    }
                    (None, None) => {}
                }
            }
        }
        // Users of a removed account go with it; users of kept accounts who
        // are no longer declared are removed (their assets pass on, below).
        for (email, user) in &self.state.users {
            if target.users.contains_key(email) {
                continue;
            }
            let reason = if user.status == UserStatus::Invited {
                format!(
                    "invitation cancelled: no longer declared in account {}",
                    user.account
                )
            } else {
                match successor_in(target, &user.account) {
                    Some(successor) => format!(
                        "no longer declared in account {}; what they own passes to {successor}",
                        user.account
                    ),
                    None => format!("no longer declared in account {}", user.account),
                }
            };
            target.set_reason((Kind::User, email.clone()), reason);
        }
    }

    /// Organizations and licenses: as declared. Those of an account that
    /// merges must be declared in the account it merges into (the merge
    /// moves them, without a connection); any other change of account needs
    /// one (contract 2.1, 2.6). Products follow their organization.
    fn organizations_and_licenses(&mut self, target: &mut Target) {
        target.organizations = self.desired.organizations.clone();
        target.licenses = self.desired.licenses.clone();
        for (id, organization) in &self.state.organizations {
            let Some(into) = self.merged_into(&organization.account) else {
                continue;
            };
            let from = &organization.account;
            match target.organizations.get(id) {
                Some(wanted) if wanted.account == into => {}
                Some(_) => {}
                None => target.errors.push(self.error(
                    Kind::Account,
                    from,
                    from,
                    format!(
                        "organization {id} of account {from} is not declared in {into}: {from} merges into {into}, and a merge moves its organizations (with their products and invoices); declare {id} under organizations: of {into}"
                    ),
                )),
            }
        }
        for (id, license) in &self.state.licenses {
            let Some(into) = self.merged_into(&license.account) else {
                continue;
            };
            let from = &license.account;
            if !target.licenses.contains_key(id) {
                target.errors.push(self.error(
                    Kind::Account,
                    from,
                    from,
                    format!(
                        "license {id} of account {from} is not declared in {into}: {from} merges into {into}, and a merge moves its licenses; declare {id} under licenses: of {into}"
                    ),
                ));
            }
        }
        for (id, organization) in &target.organizations {
            let Some(current) = self.state.organizations.get(id) else {
                continue;
            };
            let (from, to) = (&current.account, &organization.account);
            if from == to {
                continue;
            }
            let products: Vec<&String> = target
                .products
                .iter()
                .filter(|(_, p)| &p.organization == id)
                .map(|(k, _)| k)
                .collect();
            let takes = if products.is_empty() {
                String::new()
            } else {
                format!(
                    "takes its {} {}; ",
                    if products.len() == 1 {
                        "product"
                    } else {
                        "products"
                    },
                    join_some(&products)
                )
            };
            match self.connected(from, to) {
                Ok(how) => {
                    let reason = format!("{takes}{how}").into();
                    target
                        .reasons
                        .insert((Kind::Organization, id.clone()), reason);
                }
                Err(message) => target.errors.push(self.error(
                    Kind::Organization,
                    id,
                    to,
                    format!("organization {id} cannot move from {from} to {to}: {message}"),
                )),
            }
        }
        for (id, license) in &target.licenses {
            let Some(current) = self.state.licenses.get(id) else {
                continue;
            };
            if let (Some(expires), true) = (
                license.expires,
                current.assignee != license.assignee && current.expires == license.expires,
            ) {
                target.reasons.insert(
                    (Kind::License, id.clone()),
                    format!(
                        "term to {expires} kept: the new assignee takes over the remaining term"
                    )
                    .into(),
                );
            }
            let (from, to) = (&current.account, &license.account);
            if from != to {
                match self.connected(from, to) {
                    Ok(how) => {
                        let reason = match target.reasons.remove(Kind::License, id) {
                            Some(term) => format!("{how}; {term}"),
                            None => how,
                        };
                        target
                            .reasons
                            .insert((Kind::License, id.clone()), reason.into());
                    }
                    Err(message) => target.errors.push(self.error(
                        Kind::License,
                        id,
                        to,
                        format!("license {id} cannot move from {from} to {to}: {message}"),
                    )),
                }
            }
        }
        for (id, product) in target.products {
            let Some(current) = self.state.products.get(id) else {
                continue;
            };
            if current.organization == product.organization {
                continue;
            }
            let from = self
                .state
                .organizations
                .get(&current.organization)
                .map(|o| o.account.clone());
            let to = target
                .organizations
                .get(&product.organization)
                .map(|o| o.account.clone());
            if let (Some(from), Some(to)) = (from, to) {
                if let Err(message) = self.connected(&from, &to) {
                    target.errors.push(self.error(
                        Kind::Product,
                        id,
                        &to,
                        format!(
                            "product {id} cannot move from organization {} ({from}) to {} ({to}): {message}",
                            current.organization, product.organization
                        ),
                    ));
                }
            }
            let revoked: Vec<&String> = current
                .access
                .iter()
                .filter(|email| !product.access.contains(email))
                .collect();
            let access = if revoked.is_empty() {
                String::new()
            } else {
                format!(
                    "access of {} is not carried over; ",
                    revoked
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            target.set_reason(
                (Kind::Product, id.clone()),
                format!("{access}invoices stay with {}", current.organization),
            );
        }
    }

    /// `reassign` rules in order, then pins. A pinned asset is left alone
    /// by the rules: its owner and tags are what the pin declares.
    fn pins_and_reassign_rules(&mut self, target: &mut Target) {
        let on_two_threads = target.assets.base.len() >= INDEX_ON_A_THREAD;
        self.reassign_rules(&mut target.assets, on_two_threads);
        for (id, pin) in &self.desired.pins {
            let asset = match target.assets.get(id) {
                Some(current) => {
                    let mut asset = current.into_owned();
                    asset.account = pin.account.clone();
                    asset.owner = pin.owner.clone();
                    for (key, value) in &pin.tags {
                        asset.tags.insert(key.clone(), value.clone());
                    }
                    asset
                }
                None => Asset {
                    account: pin.account.clone(),
                    owner: pin.owner.clone(),
                    creator: pin.owner.user().map(str::to_string),
                    folder: None,
                    versions: Vec::new(),
                    tags: pin.tags.clone().into_iter().collect(),
                },
            };
            if target.assets.get(id).as_deref() != Some(&asset) {
                target.set_reason(
                    (Kind::Asset, id.clone()),
                    format!("pinned in account {}", pin.account),
                );
                target.assets.put(id, asset);
            }
        }
    }

    /// The reassign rules, each account's in their order. The rules of an
    /// account move only that account's assets, and only its rules move
    /// them: so, `on_two_threads` (with many assets), every other account's
    /// rules are applied on a second thread, to a sibling of the target's
    /// assets that shares their owner index, and its changes are taken in
    /// afterwards. The target is the same as with all rules applied in turn
    /// on one thread.
    fn reassign_rules(&self, assets: &mut TargetAssets, on_two_threads: bool) {
        let accounts: Vec<_> = self.desired.reassign.iter().collect();
        if !on_two_threads || accounts.len() < 2 || !assets.is_unchanged() {
            for (account, rules) in accounts {
                self.account_reassign_rules(account, rules, assets);
            }
            return;
        }
        std::thread::scope(|scope| {
            let mut sibling = assets.unchanged_sibling();
            let second = scope.spawn(|| {
                for (account, rules) in accounts.iter().skip(1).step_by(2) {
                    self.account_reassign_rules(account, rules, &mut sibling);
                }
                sibling
            });
            for (account, rules) in accounts.iter().step_by(2) {
                self.account_reassign_rules(account, rules, assets);
            }
            let sibling = second
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            assets.absorb(sibling);
        });
    }

    /// The reassign rules of `account`, in their order: each moves the
    /// assets the ones before it left with its `from` (pinned assets stay).
    fn account_reassign_rules(
        &self,
        account: &str,
        rules: &[ReassignRule],
        assets: &mut TargetAssets,
    ) {
        for rule in rules {
            let reason: Arc<str> =
                format!("reassign rule {} of account {account}", rule.number).into();
            let mut ids = assets.owned_by(account, &rule.from);
            ids.retain(|id| {
                !self.desired.pins.contains_key(id)
                    && (rule.kinds.is_empty()
                        || AssetKind::of_asset_id(id)
                            .is_some_and(|kind| rule.kinds.contains(&kind)))
            });
            assets.reassign((account, &rule.from), &ids, &rule.to, &rule.tag, &reason);
        }
    }

    /// The account `account` merges into, if the specs merge it.
    fn merged_into(&self, account: &str) -> Option<String> {
        self.desired_account(account)
            .and_then(|a| a.merged_into.clone())
    }

    /// `merged_into`: credits add up and assets follow into the other account.
    fn merges(&mut self, target: &mut Target) {
        for (from, wanted) in &self.desired.accounts {
            let Some(into) = &wanted.merged_into else {
                continue;
            };
            for (email, user) in &self.state.users {
                if &user.account != from {
                    continue;
                }
                let declared_in = self.desired.users.get(email).map(|u| u.account.as_str());
                if declared_in != Some(into.as_str()) {
                    let now = match declared_in {
                        Some(other) => format!(" (it is declared in {other})"),
                        None => String::new(),
                    };
                    target.errors.push(self.error(
                        Kind::Account,
                        from,
                        from,
                        format!(
                            "user {email} of account {from} is not declared in {into}{now}: {from} merges into {into}, and a merge moves its users; declare {email} under users: of {into}"
                        ),
                    ));
                }
            }
            let credits = target.accounts.get(from).map_or(0, |a| a.credits);
            if credits != 0 {
                if let Some(account) = target.accounts.get_mut(from) {
                    account.credits = 0;
                }
                if let Some(account) = target.accounts.get_mut(into) {
                    account.credits += credits;
                }
                let reason = format!("merge of {from} into {into}: credits add up");
                target.set_reason((Kind::Account, from.clone()), reason.clone());
                target.set_reason((Kind::Account, into.clone()), reason);
            }
            let owners: Vec<(String, Owner)> = target
                .assets
                .owners()
                .into_iter()
                .filter(|(account, _)| account == from)
                .collect();
            for (_, owner) in owners {
                for id in target.assets.owned_by(from, &owner) {
                    let Some(asset) = target.assets.get(&id) else {
                        continue;
                    };
                    let mut asset = asset.into_owned();
                    asset.account = into.clone();
                    target.assets.put(&id, asset);
                    target.set_reason(
                        (Kind::Asset, id.clone()),
                        format!("merge of {from} into {into}"),
                    );
                }
            }
        }
    }

    /// Whether two accounts may exchange objects (contract 2.1): `Ok`, or
    /// why not.
    fn connected(&self, a: &str, b: &str) -> Result<String, String> {
        if a == b {
            return Ok("same account".to_string());
        }
        let header = |id: &str| -> Option<(Option<String>, Vec<String>, Option<String>)> {
            if let Some(wanted) = self.desired_account(id) {
                Some((
                    wanted.hub.clone(),
                    wanted.connections.clone(),
                    wanted.merged_into.clone(),
                ))
            } else {
                self.state.accounts.get(id).map(|account| {
                    (
                        account.hub.clone(),
                        account.connections.clone(),
                        account.merged_into.clone(),
                    )
                })
            }
        };
        let (Some((hub_a, connections_a, merged_a)), Some((hub_b, connections_b, merged_b))) =
            (header(a), header(b))
        else {
            return Err("one of the accounts does not exist".to_string());
        };
        if merged_a.as_deref() == Some(b) {
            return Ok(format!("{a} merges into {b}"));
        }
        if merged_b.as_deref() == Some(a) {
            return Ok(format!("{b} merges into {a}"));
        }
        if hub_a.as_deref() == Some(b) {
            return Ok(format!("{a} is a satellite of {b}"));
        }
        if hub_b.as_deref() == Some(a) {
            return Ok(format!("{b} is a satellite of {a}"));
        }
        if let (Some(hub), true) = (&hub_a, hub_a == hub_b) {
            return Ok(format!("both satellites of {hub}"));
        }
        let a_lists_b = connections_a.iter().any(|c| c == b);
        let b_lists_a = connections_b.iter().any(|c| c == a);
        match (a_lists_b, b_lists_a) {
            (true, true) => Ok(format!("{a} and {b} list each other in connections")),
            (true, false) => Err(format!(
                "{b} does not list {a} in connections (only {a} consents); add {a} to the connections of {b}"
            )),
            (false, true) => Err(format!(
                "{a} does not list {b} in connections (only {b} consents); add {b} to the connections of {a}"
            )),
            (false, false) => Err(
                "the accounts are not connected (neither is the other's hub, they share no hub, and neither lists the other in connections); list each in the other's connections"
            .to_string()),
        }
    }

    /// Users declared in another account than the state's are moved, with
    /// what they own (contract 2.3).
    fn moves(&mut self, target: &mut Target) {
        // The state's memberships by user, made when the first user moves
        // (a plan where nobody moves never needs it: 300k at scale).
        let mut memberships_of: Option<HashMap<&str, Vec<&String>>> = None;
        // Both sorted by email: walked in step.
        let mut in_state = self.state.users.iter().peekable();
        for (email, wanted) in &self.desired.users {
            while in_state.next_if(|(current, _)| *current < email).is_some() {}
            let Some((_, current)) = in_state.next_if(|(current, _)| *current == email) else {
                continue;
            };
            let from = &current.account;
            // A move that waits (the user still owns the source account)
            // keeps the user where they are.
            let Some(to) = target.users.get(email).map(|u| u.account.clone()) else {
                continue;
            };
            let to = &to;
            if from == to {
                continue;
            }
            let how = match self.connected(from, to) {
                Ok(how) => how,
                Err(message) => {
                    target.errors.push(self.error(
                        Kind::User,
                        email,
                        to,
                        format!("{email} cannot move from {from} to {to}: {message}"),
                    ));
                    continue;
                }
            };
            let memberships_of = memberships_of.get_or_insert_with(|| {
                let mut memberships_of: HashMap<&str, Vec<&String>> = HashMap::new();
                for (id, membership) in &self.state.memberships {
                    memberships_of
                        .entry(membership.user.as_str())
                        .or_default()
                        .push(id);
                }
                memberships_of
            });
            for id in memberships_of.get(email.as_str()).into_iter().flatten() {
                let membership = &self.state.memberships[*id];
                if &membership.account == from {
                    target.set_reason(
                        (Kind::Membership, (*id).clone()),
                        format!("{email} moves to {to}; groups never move"),
                    );
                }
            }
            let rule = wanted.move_rule.clone().unwrap_or_default();
            let successor = match &rule.successor {
                Some(successor) => {
                    if target
                        .users
                        .get(successor)
                        .is_none_or(|u| &u.account != from)
                    {
                        target.errors.push(self.error(
                            Kind::User,
                            email,
                            to,
                            format!("user {email}: move.successor {successor} is not a user of {from}, the account {email} moves from"),
                        ));
                        continue;
                    }
                    Some(successor.clone())
                }
                None => target.accounts.get(from).and_then(|a| a.owner.clone()),
            };
            target.set_reason(
                (Kind::User, email.clone()),
                format!("moves from {from} to {to}; connected: {how}"),
            );
            let owner = Owner::User(email.clone());
            let folder_name = rule
                .folder
                .clone()
                .unwrap_or_else(|| format!("Moved from {from}"));
            let folder_id = moved_folder_id(to, email, &folder_name);
            let mut created_folder = false;
            for id in target.assets.owned_by(from, &owner) {
                let Some(asset) = target.assets.get(&id) else {
                    continue;
                };
                let mut asset = asset.into_owned();
                let kind = AssetKind::of_asset_id(&id);
                let all_versions_owned = asset.versions.iter().all(|v| v == email);
                let brings = kind.is_some_and(|k| {
                    rule.bring.contains(&k)
                        && k != AssetKind::Folder
                        && k != AssetKind::View
                        && (k != AssetKind::Proof || all_versions_owned)
                });
                if brings {
                    asset.account = to.clone();
                    if kind == Some(AssetKind::File) {
                        asset.folder = Some(folder_id.clone());
                        created_folder = true;
                    } else {
                        asset.folder = None;
                    }
                    target.set_reason(
                        (Kind::Asset, id.clone()),
                        format!("moves with {email} from {from} to {to}"),
                    );
                } else {
                    let Some(successor) = &successor else {
                        continue;
                    };
                    asset.owner = Owner::User(successor.clone());
                    for version in &mut asset.versions {
                        if version == email {
                            *version = successor.clone();
                        }
                    }
                    if kind == Some(AssetKind::Folder) {
                        let grant = grant_id(&id, email);
                        target.grants.insert(
                            grant.clone(),
                            Grant {
                                account: from.clone(),
                                asset: id.clone(),
                                user: email.clone(),
                                level: "read".into(),
                            },
                        );
                        target.set_reason(
                            (Kind::Grant, grant),
                            format!("{email} keeps read access after moving to {to}"),
                        );
                    }
                    target.set_reason(
                        (Kind::Asset, id.clone()),
                        format!("left by {email}, who moves to {to}; passes to {successor}"),
                    );
                }
                target.assets.put(&id, asset);
            }
            if created_folder && !target.assets.contains(&folder_id) {
                let mut tags = crate::model::Tags::new();
                tags.insert("name".to_string(), folder_name.clone());
                target.assets.put(
                    &folder_id,
                    Asset {
                        account: to.clone(),
                        owner: owner.clone(),
                        creator: Some(email.clone()),
                        folder: None,
                        versions: Vec::new(),
                        tags,
                    },
                );
                target.set_reason(
                    (Kind::Asset, folder_id.clone()),
                    format!("receives the files {email} brings from {from}"),
                );
            }
        }
    }

    /// Assets whose owner no longer exists in their account (a removed user
    /// or group, an inventory record naming someone unknown) pass to the
    /// account's successor, or its owner.
    fn orphans(&mut self, target: &mut Target) {
        for (account, owner) in target.assets.owners() {
            let exists = match &owner {
                Owner::User(email) => target
                    .users
                    .get(email)
                    .is_some_and(|u| u.account == account),
                Owner::Group(name) => target
                    .groups
                    .contains_key(&crate::model::group_id(&account, name)),
            };
            if exists {
                continue;
            }
            let Some(target_account) = target.accounts.get(&account) else {
                continue;
            };
            if target_account.merged_into.is_some() {
                continue;
            }
            let Some(successor) = successor_in(target, &account) else {
                continue;
            };
            let why = match &owner {
                // A user of another account (an inventory record can name
                // one) is not removed: say where they are.
                Owner::User(email) => match target.users.get(email) {
                    Some(user) => {
                        format!("{email} is a user of {}, not of {account}", user.account)
                    }
                    None if self.state.users.contains_key(email) => format!("{email} is removed"),
                    None => format!("{email} is not a user of {account}"),
                },
                Owner::Group(name) => format!("group {name} is removed"),
            };
            for id in target.assets.owned_by(&account, &owner) {
                let Some(asset) = target.assets.get(&id) else {
                    continue;
                };
                let mut asset = asset.into_owned();
                if let Owner::User(email) = &owner {
                    for version in &mut asset.versions {
                        if version == email {
                            *version = successor.clone();
                        }
                    }
                }
                asset.owner = Owner::User(successor.clone());
                target.assets.put(&id, asset);
                target.set_reason(
                    (Kind::Asset, id.clone()),
                    format!("{why}; passes to successor {successor}"),
                );
            }
        }
    }

    /// Versions (of proofs) owned by someone who is not a user of the
    /// asset's account pass to its successor too, even when the asset's
    /// owner stays: no version points at a missing user. One pass over the
    /// assets; only assets with versions are looked at.
    fn orphan_versions(&mut self, target: &mut Target) {
        // The account of each user, by hash: every version of every asset
        // is looked up (a third of a million at scale).
        let mut account_of: HashIndex<&str, &str> =
            HashIndex::with_capacity_and_hasher(target.users.len(), Default::default());
        account_of.extend(
            target
                .users
                .iter()
                .map(|(email, user)| (email.as_str(), user.account.as_str())),
        );
        let shared: &Target = target;
        let assets = shared.assets.base.len().max(shared.assets.overlay.len());
        // From 50k assets, the ids from the middle one of the larger map on
        // are looked at on a second thread (each asset is looked at once,
        // by one of the two; the fixes do not depend on the order).
        let middle = (assets >= ORPHAN_VERSIONS_ON_TWO_THREADS).then(|| {
            match shared.assets.base.len() >= shared.assets.overlay.len() {
                true => shared.assets.base.keys().nth(assets / 2),
                false => shared.assets.overlay.keys().nth(assets / 2),
            }
            .map(String::as_str)
        });
        let fixes = match middle.flatten() {
            None => orphan_versions_in(shared, &account_of, None, None),
            Some(middle) => std::thread::scope(|scope| {
                let account_of = &account_of;
                let second =
                    scope.spawn(move || orphan_versions_in(shared, account_of, Some(middle), None));
                let mut fixes = orphan_versions_in(shared, account_of, None, Some(middle));
                match second.join() {
                    Ok(second) => fixes.extend(second),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
                fixes
            }),
        };
        for (id, asset, reason) in fixes {
            target.assets.put(&id, asset);
            target.set_reason_if_absent((Kind::Asset, id), reason);
        }
    }

    /// Grants to users who no longer exist end.
    fn grants(&mut self, target: &mut Target) {
        target.grants.retain(|_, grant| {
            target.users.contains_key(&grant.user) && target.assets.contains(&grant.asset)
        });
    }

    /// An organization no longer declared is removed, but never with the
    /// invoices billing made for it: they would point at nothing.
    fn organization_removals(&mut self, target: &mut Target) {
        let mut invoices_by_organization: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, invoice) in &self.state.invoices {
            invoices_by_organization
                .entry(invoice.organization.as_str())
                .or_default()
                .push(id.as_str());
        }
        for (id, organization) in &self.state.organizations {
            if target.organizations.contains_key(id) {
                continue;
            }
            let Some(invoices) = invoices_by_organization.get(id.as_str()) else {
                continue;
            };
            let shown: Vec<&str> = invoices.iter().take(3).copied().collect();
            let more = if invoices.len() > 3 { ", …" } else { "" };
            let message = format!(
                "organization {id} cannot be removed: it holds {} invoice(s) ({}{more}); keep it declared, or move it to another account (invoices stay with their organization)",
                invoices.len(),
                shown.join(", ")
            );
            target.errors.push(
                match self.desired.origin(Kind::Account, &organization.account) {
                    Some(origin) => Diagnostic::at_origin(origin, message),
                    None => Diagnostic::general(message),
                },
            );
        }
    }

    /// An account no longer declared is removed, but only when nothing of
    /// value is left in it (contract 2.7).
    fn account_removals(&mut self, target: &mut Target) {
        for (id, account) in &self.state.accounts {
            if target.accounts.contains_key(id) {
                continue;
            }
            let mut holds = Vec::new();
            let assets = target.assets.count_in(id);
            if assets > 0 {
                let sample = target.assets.sample_in(id, 3).join(", ");
                holds.push(format!(
                    "{assets} asset(s) ({sample}{})",
                    if assets > 3 { ", …" } else { "" }
                ));
            }
            let organizations: Vec<&String> = target
                .organizations
                .iter()
                .filter(|(_, o)| &o.account == id)
                .map(|(k, _)| k)
                .collect();
            let organizations_in_state: Vec<&String> = self
                .state
                .organizations
                .iter()
                .filter(|(k, o)| &o.account == id && !target.organizations.contains_key(*k))
                .map(|(k, _)| k)
                .collect();
            let organizations: Vec<&String> = organizations
                .into_iter()
                .chain(organizations_in_state)
                .collect();
            if !organizations.is_empty() {
                holds.push(format!(
                    "{} organization(s) ({})",
                    organizations.len(),
                    join_some(&organizations)
                ));
            }
            let licenses: Vec<&String> = self
                .state
                .licenses
                .iter()
                .filter(|(k, l)| &l.account == id && !target.licenses.contains_key(*k))
                .map(|(k, _)| k)
                .chain(
                    target
                        .licenses
                        .iter()
                        .filter(|(_, l)| &l.account == id)
                        .map(|(k, _)| k),
                )
                .collect();
            if !licenses.is_empty() {
                holds.push(format!(
                    "{} license(s) ({})",
                    licenses.len(),
                    join_some(&licenses)
                ));
            }
            if account.credits != 0 {
                holds.push(format!("{} credits", account.credits));
            }
            if !holds.is_empty() {
                let mut files = String::new();
                if let Some(paths) = self.desired.account_files.get(id) {
                    files = format!(" ({})", paths.join(", "));
                }
                target.errors.push(Diagnostic::general(
                    format!(
                        "account {id} cannot be removed{files}: it still holds {}; merge it (merged_into) or move them to another account first",
                        holds.join(", ")
                    ),
                ));
            }
        }
    }

    /// A connection listed by one side only is a request: pending.
    fn connection_requests(&mut self, target: &mut Target) {
        for (id, account) in &self.desired.accounts {
            for other in &account.connections {
                let consents = self
                    .desired_account(other)
                    .is_some_and(|o| o.connections.contains(id));
                if !consents {
                    target.pending.push(Pending {
                        kind: Kind::Account,
                        object: id.clone(),
                        reason: format!(
                            "connection to {other} waits for {other} to list {id} in connections"
                        ),
                    });
                }
            }
        }
    }
}

/// Who receives what a user of `account` leaves behind: the account's
/// `successor` while it is a user of the account, else its owner.
/// From this many assets (in the state or changed), `orphan_versions`
/// looks at them on two threads.
const ORPHAN_VERSIONS_ON_TWO_THREADS: usize = 50_000;

/// The fixes of `orphan_versions` for the assets with ids from `from` (on)
/// up to `to` (not included): (id, the asset with its versions by users
/// gone from its account passed to the successor, the reason).
fn orphan_versions_in(
    target: &Target,
    account_of: &HashIndex<&str, &str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Vec<(String, Asset, String)> {
    let mut fixes: Vec<(String, Asset, String)> = Vec::new();
    // Read in place: only an asset with a version by someone who is not a
    // user of its account is unpacked (a rule that moves a million assets
    // puts a million in the overlay).
    let mut look = |id: &String, packed: &PackedAsset| {
        let Some((account, versions)) = packed.account_and_versions() else {
            return;
        };
        let is_user = |email: &str| {
            account_of
                .get(email)
                .is_some_and(|user_account| *user_account == account)
        };
        if versions.into_iter().all(is_user) {
            return;
        }
        let Some(asset) = packed.unpack() else {
            return;
        };
        let Some(account) = target.accounts.get(&asset.account) else {
            return;
        };
        if account.merged_into.is_some() {
            return;
        }
        let Some(successor) = successor_in(target, &asset.account) else {
            return;
        };
        let gone: BTreeSet<String> = asset
            .versions
            .iter()
            .filter(|v| !is_user(v))
            .cloned()
            .collect();
        let mut fixed = asset.clone();
        for version in &mut fixed.versions {
            if gone.contains(version) {
                *version = successor.clone();
            }
        }
        let names: Vec<&str> = gone.iter().map(String::as_str).collect();
        fixes.push((
            id.clone(),
            fixed,
            format!(
                "{} {} no longer in {}; versions pass to successor {successor}",
                names.join(", "),
                if names.len() == 1 { "is" } else { "are" },
                asset.account
            ),
        ));
    };
    let range = (
        from.map_or(Bound::Unbounded, Bound::Included),
        to.map_or(Bound::Unbounded, Bound::Excluded),
    );
    // The state's assets the overlay does not replace: both maps are
    // sorted by id, so the overlay is walked in step rather than looked up
    // a million times.
    let overlay = &target.assets.overlay;
    let mut replaced = overlay.range::<str, _>(range).map(|(id, _)| id).peekable();
    for (id, packed) in target.assets.base.packed_range(range) {
        while replaced.next_if(|replaced| *replaced < id).is_some() {}
        let is_replaced = replaced.next_if(|replaced| *replaced == id).is_some();
        if !is_replaced {
            look(id, packed);
        }
    }
    for (id, changed) in overlay.range::<str, _>(range) {
        look(id, &changed.asset);
    }
    fixes
}

fn successor_in(target: &Target, account: &str) -> Option<String> {
    let wanted = target.accounts.get(account)?;
    wanted
        .successor
        .clone()
        .filter(|s| target.users.get(s).is_some_and(|u| u.account == account))
        .or_else(|| wanted.owner.clone())
}

fn join_some(ids: &[&String]) -> String {
    let mut shown: Vec<&str> = ids.iter().take(3).map(|s| s.as_str()).collect();
    if ids.len() > 3 {
        shown.push("…");
    }
    shown.join(", ")
}

/// `now` plus some seconds, saturating at the largest timestamp.
fn add_seconds(now: Timestamp, seconds: u64) -> Timestamp {
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    now.checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap_or(Timestamp::MAX)
}

/// The id of the folder that receives the files a user brings: stable for
/// the same user, destination and folder name.
pub(crate) fn moved_folder_id(account: &str, email: &str, folder_name: &str) -> String {
    use sha2::{Digest, Sha256};
    let slug: String = folder_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let digest = Sha256::digest(format!("{account}\0{email}\0{folder_name}"));
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let slug = if slug.is_empty() {
        "moved".to_string()
    } else {
        slug.chars().take(60).collect()
    };
    format!("folder/{slug}-{short}")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::{Builder, TargetAssets};
    use crate::desired::{Desired, Pin, ReassignRule};
    use crate::model::{Asset, AssetKind, Assets, Owner, State};

    fn asset(account: u8, owner: u8) -> Asset {
        Asset {
            account: format!("a{account}"),
            owner: if owner.is_multiple_of(2) {
                Owner::User(format!("u{owner}@x.com"))
            } else {
                Owner::Group(format!("g{owner}"))
            },
            creator: None,
            folder: None,
            versions: Vec::new(),
            tags: Default::default(),
        }
    }

    /// The index answered from scratch: every asset, overlay over base.
    fn naive(
        base: &Assets,
        overlay: &BTreeMap<String, super::ChangedAsset>,
    ) -> BTreeMap<(String, Owner), BTreeSet<String>> {
        let mut all: BTreeMap<String, Asset> =
            base.iter().map(|(id, asset)| (id.clone(), asset)).collect();
        all.extend(
            overlay
                .iter()
                .map(|(id, changed)| (id.clone(), changed.asset.unpack().expect("packed by put"))),
        );
        let mut by_owner: BTreeMap<(String, Owner), BTreeSet<String>> = BTreeMap::new();
        for (id, asset) in all {
            by_owner
                .entry((asset.account.clone(), asset.owner.clone()))
                .or_default()
                .insert(id);
        }
        by_owner
    }

    /// The overlay taken out: each asset's id, packed bytes and reason.
    fn overlay(assets: &mut TargetAssets) -> Vec<(String, Vec<u8>, Option<String>)> {
        assets
            .take_overlay()
            .into_iter()
            .map(|(id, changed)| {
                let reason = changed.reason.map(|reason| reason.to_string());
                (id, changed.asset.as_bytes().to_vec(), reason)
            })
            .collect()
    }

    /// An asset's reason follows the rules of [`Reasons`] wherever it is
    /// kept: given before the asset is put or after, replaced by
    /// `set_reason`, kept by `set_reason_if_absent`, kept across puts.
    #[test]
    fn an_asset_keeps_its_reason_whether_given_before_or_after_its_put() {
        let base: Assets = [("a".to_string(), asset(0, 0))].into();
        let mut assets = TargetAssets::new(&base);
        assets.set_reason("a".into(), "first".into(), true);
        assets.set_reason("a".into(), "ignored".into(), false);
        assets.put("a", asset(0, 1));
        assets.set_reason("a".into(), "ignored too".into(), false);
        assets.put("a", asset(0, 2));
        assets.put("b", asset(1, 0));
        assets.set_reason("b".into(), "second".into(), false);
        assets.set_reason("b".into(), "third".into(), true);
        assets.put("c", asset(1, 1));
        let overlay = assets.take_overlay();
        let reasons: Vec<(&str, Option<&str>)> = overlay
            .iter()
            .map(|(id, changed)| (id.as_str(), changed.reason.as_deref()))
            .collect();
        assert_eq!(
            reasons,
            [("a", Some("first")), ("b", Some("third")), ("c", None)]
        );
        assert_eq!(overlay["a"].asset.unpack(), Some(asset(0, 2)));
    }

    proptest! {
        /// The reassign rules applied on two threads (each account's rules
        /// on the thread of that account) leave the assets, their reasons
        /// and the owner index exactly as the same rules applied in turn on
        /// one thread: for rules that chain (one moves what another moved
        /// there), rules of kinds, tagging rules and pinned assets.
        #[test]
        fn reassign_rules_on_two_threads_leave_the_target_assets_as_on_one(
            base in proptest::collection::btree_map("(dataset|file)/[a-h]{1,2}", (0u8..4, 0u8..4), 0..40),
            rules in proptest::collection::vec((0u8..4, 0u8..4, 0u8..4, any::<bool>(), any::<bool>()), 0..12),
            pins in proptest::collection::btree_set("(dataset|file)/[a-h]{1,2}", 0..4),
        ) {
            let base: Assets = base
                .into_iter()
                .map(|(id, (account, owner))| (id, asset(account, owner)))
                .collect();
            let mut desired = Desired::default();
            for (account, from, to, only_datasets, tagged) in rules {
                let account_rules = desired.reassign.entry(format!("a{account}")).or_default();
                account_rules.push(ReassignRule {
                    number: account_rules.len() + 1,
                    from: asset(0, from).owner,
                    to: asset(0, to).owner,
                    kinds: if only_datasets { vec![AssetKind::Dataset] } else { Vec::new() },
                    tag: if tagged {
                        [("moved".to_string(), format!("by-{}", account_rules.len()))].into()
                    } else {
                        BTreeMap::new()
                    },
                });
            }
            for id in pins {
                let pin = Pin { account: "a0".into(), owner: asset(0, 0).owner, tags: BTreeMap::new() };
                desired.pins.insert(id, pin);
            }
            let state = State::default();
            let builder = Builder { desired: &desired, state: &state, now: jiff::Timestamp::UNIX_EPOCH };
            let (mut in_turn, mut on_two) = (TargetAssets::new(&base), TargetAssets::new(&base));
            builder.reassign_rules(&mut in_turn, false);
            builder.reassign_rules(&mut on_two, true);
            prop_assert_eq!(on_two.owners(), in_turn.owners());
            for (account, owner) in in_turn.owners() {
                prop_assert_eq!(on_two.owned_by(&account, &owner), in_turn.owned_by(&account, &owner));
            }
            prop_assert_eq!(overlay(&mut on_two), overlay(&mut in_turn));
        }

        /// After any sequence of puts (changes of state assets, repeated
        /// changes, new assets), `owners`, `owned_by`, `count_in` and
        /// `sample_in` answer what a fresh index of the merged assets would.
        #[test]
        fn the_owner_index_follows_every_put(
            base in proptest::collection::btree_map("[a-h]{1,2}", (0u8..3, 0u8..4), 0..30),
            puts in proptest::collection::vec(("[a-j]{1,2}", 0u8..3, 0u8..4), 0..30),
        ) {
            let base: Assets = base
                .into_iter()
                .map(|(id, (account, owner))| (id, asset(account, owner)))
                .collect();
            let mut assets = TargetAssets::new(&base);
            for (id, account, owner) in puts {
                assets.put(&id, asset(account, owner));
            }
            let expected = naive(&base, &assets.overlay);
            let owners: Vec<(String, Owner)> = expected.keys().cloned().collect();
            prop_assert_eq!(assets.owners(), owners);
            for ((account, owner), ids) in &expected {
                let ids: Vec<String> = ids.iter().cloned().collect();
                prop_assert_eq!(assets.owned_by(account, owner), ids);
            }
            for account in ["a0", "a1", "a2"] {
                let mut ids: Vec<String> = expected
                    .iter()
                    .filter(|((owner_account, _), _)| owner_account == account)
                    .flat_map(|(_, ids)| ids.iter().cloned())
                    .collect();
                ids.sort();
                prop_assert_eq!(assets.count_in(account), ids.len());
                ids.truncate(3);
                prop_assert_eq!(assets.sample_in(account, 3), ids);
            }
            prop_assert!(assets.owned_by("a9", &Owner::User("nobody@x.com".into())).is_empty());
        }

        /// `reassign` leaves the assets, their reasons and the owner index
        /// exactly as a `get`, the change, `put` and `set_reason` of each
        /// asset would, after any puts, for any owners, with or without
        /// tags, for all of a rule's assets or some of them.
        #[test]
        fn a_reassign_equals_a_put_of_each_asset(
            base in proptest::collection::btree_map("[a-h]{1,2}", (0u8..3, 0u8..4), 0..30),
            puts in proptest::collection::vec(("[a-j]{1,2}", 0u8..3, 0u8..4), 0..30),
            (account, from, to) in (0u8..3, 0u8..4, 0u8..4),
            tagged in any::<bool>(),
            keep in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let base: Assets = base
                .into_iter()
                .map(|(id, (account, owner))| (id, asset(account, owner)))
                .collect();
            let (mut batched, mut one_by_one) = (TargetAssets::new(&base), TargetAssets::new(&base));
            for (id, account, owner) in puts {
                batched.put(&id, asset(account, owner));
                one_by_one.put(&id, asset(account, owner));
                batched.set_reason(id.clone(), "earlier".into(), true);
                one_by_one.set_reason(id, "earlier".into(), true);
            }
            let (account, from, to) =
                (format!("a{account}"), asset(0, from).owner, asset(0, to).owner);
            let tags: BTreeMap<String, String> = if tagged {
                [("team".to_string(), "data".to_string())].into()
            } else {
                BTreeMap::new()
            };
            let mut ids = batched.owned_by(&account, &from);
            let mut keeps = keep.iter();
            ids.retain(|_| keeps.next().copied().unwrap_or(true));
            let reason: std::sync::Arc<str> = "rule".into();
            batched.reassign((&account, &from), &ids, &to, &tags, &reason);
            for id in &ids {
                let mut asset = one_by_one.get(id).expect("owned").into_owned();
                asset.owner = to.clone();
                for (key, value) in &tags {
                    asset.tags.insert(key.clone(), value.clone());
                }
                one_by_one.put(id, asset);
                one_by_one.set_reason(id.clone(), reason.clone(), true);
            }
            prop_assert_eq!(batched.owners(), one_by_one.owners());
            for (account, owner) in one_by_one.owners() {
                prop_assert_eq!(
                    batched.owned_by(&account, &owner),
                    one_by_one.owned_by(&account, &owner)
                );
            }
            prop_assert_eq!(overlay(&mut batched), overlay(&mut one_by_one));
        }
    }
}
