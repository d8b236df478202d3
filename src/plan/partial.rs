//! Planning part of the accounts: what lets the daemon re-plan one edited
//! file of a thousand without planning the other 999 accounts again.
//!
//! The planner works on whole maps, but what it decides for an account
//! depends only on a small neighbourhood of accounts: those it names in its
//! header (hub, connections, merged_into), those naming it, and those its
//! objects come from or go to (a user declared here but stored there, a
//! grant to a user of another account, …). [`closure`] grows a set of
//! accounts until it holds that whole neighbourhood, on the desired side
//! and on the state's. Planning the specs and the state *restricted* to a
//! closed set ([`restrict_state`]) then gives exactly the changes a full
//! plan lists under those accounts, and [`splice`] swaps them into the
//! previous full plan.
//!
//! [`StateIndex`] and [`DesiredIndex`] say which objects belong to which
//! account, so that restricting costs the size of the accounts, not of the
//! tenant. Both are updated in place as the state and the specs change.
//!
//! The tests below check the promise directly: for many edits, the spliced
//! plan is byte for byte the full plan.
//!
//! Architecture invariant: pure; no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::desired::Desired;
use crate::model::{Kind, Owner, State};

use super::{Pending, Plan};

/// Which state objects belong to which account.
#[derive(Clone, Debug, Default)]
pub struct StateIndex {
    /// By account: the ids of its objects of each kind but products
    /// (listed with their organization).
    by_account: BTreeMap<String, AccountIds>,
    /// By organization: its products.
    products_of: HashMap<String, BTreeSet<String>>,
    /// By organization: its invoices.
    invoices_of: HashMap<String, BTreeSet<String>>,
    /// Products whose organization is not in the state, and invoices whose
    /// organization is not: a state that `state check` refuses. Planning
    /// part of it is not attempted.
    strays: usize,
}

#[derive(Clone, Debug, Default)]
struct AccountIds {
    /// Indexed by the position of the kind in [`Kind::ALL`].
    ids: [BTreeSet<String>; 9],
}

fn slot(kind: Kind) -> usize {
    Kind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default()
}

/// The account of an object that has an `account` field (all kinds but
/// accounts and products).
fn own_account(state: &State, kind: Kind, id: &str) -> Option<String> {
    match kind {
        Kind::Account => state.accounts.contains_key(id).then(|| id.to_string()),
        Kind::Product => None,
        _ => state.account_of(kind, id),
    }
}

impl StateIndex {
    /// Indexes every object of `state`.
    pub fn of(state: &State) -> StateIndex {
        let mut index = StateIndex::default();
        for id in state.accounts.keys() {
            index.add(Kind::Account, id, id);
        }
        macro_rules! by_field {
            ($kind:expr, $map:expr) => {
                for (id, object) in $map {
                    index.add($kind, &object.account, id);
                }
            };
        }
        by_field!(Kind::User, &state.users);
        by_field!(Kind::Group, &state.groups);
        by_field!(Kind::Membership, &state.memberships);
        by_field!(Kind::Organization, &state.organizations);
        by_field!(Kind::License, &state.licenses);
        for (id, asset) in state.assets.packed_iter() {
            index.add(Kind::Asset, asset.account().unwrap_or_default(), id);
        }
        by_field!(Kind::Grant, &state.grants);
        for (id, product) in &state.products {
            index
                .products_of
                .entry(product.organization.clone())
                .or_default()
                .insert(id.clone());
        }
        for (id, invoice) in &state.invoices {
            index
                .invoices_of
                .entry(invoice.organization.clone())
                .or_default()
                .insert(id.clone());
        }
        index.strays = index.count_strays(state);
        index
    }

    fn add(&mut self, kind: Kind, account: &str, id: &str) {
        self.by_account.entry(account.to_string()).or_default().ids[slot(kind)]
            .insert(id.to_string());
    }

    fn remove(&mut self, kind: Kind, account: &str, id: &str) {
        if let Some(ids) = self.by_account.get_mut(account) {
            ids.ids[slot(kind)].remove(id);
        }
    }

    fn count_strays(&self, state: &State) -> usize {
        let products = self
            .products_of
            .iter()
            .filter(|(organization, _)| !state.organizations.contains_key(*organization))
            .map(|(_, ids)| ids.len())
            .sum::<usize>();
        let invoices = self
            .invoices_of
            .iter()
            .filter(|(organization, _)| !state.organizations.contains_key(*organization))
            .map(|(_, ids)| ids.len())
            .sum::<usize>();
        products + invoices
    }

    /// Whether planning part of the state is sound: no product or invoice
    /// points at an organization the state does not have.
    pub fn is_partitionable(&self) -> bool {
        self.strays == 0
    }

    /// The ids of `kind` in `account`.
    fn ids(&self, account: &str, kind: Kind) -> impl Iterator<Item = &String> {
        self.by_account
            .get(account)
            .into_iter()
            .flat_map(move |ids| ids.ids[slot(kind)].iter())
    }

    /// Forgets where object `kind` `id` of `state` is, before it is
    /// written or deleted; returns the account it was in.
    pub fn forget(&mut self, state: &State, kind: Kind, id: &str) -> Option<String> {
        match kind {
            Kind::Product => {
                let old = state.products.get(id)?;
                if let Some(ids) = self.products_of.get_mut(&old.organization) {
                    ids.remove(id);
                }
                state.account_of(Kind::Product, id)
            }
            _ => {
                let account = own_account(state, kind, id)?;
                self.remove(kind, &account, id);
                Some(account)
            }
        }
    }

    /// Records where object `kind` `id` of `state` is, after it was
    /// written; returns its account.
    pub fn record(&mut self, state: &State, kind: Kind, id: &str) -> Option<String> {
        match kind {
            Kind::Product => {
                let product = state.products.get(id)?;
                self.products_of
                    .entry(product.organization.clone())
                    .or_default()
                    .insert(id.to_string());
                state.account_of(Kind::Product, id)
            }
            _ => {
                let account = own_account(state, kind, id)?;
                self.add(kind, &account, id);
                Some(account)
            }
        }
    }

    /// [`StateIndex::forget`] for an invoice.
    pub fn forget_invoice(&mut self, state: &State, id: &str) -> Option<String> {
        let old = state.invoices.get(id)?;
        if let Some(ids) = self.invoices_of.get_mut(&old.organization) {
            ids.remove(id);
        }
        state.account_of(Kind::Organization, &old.organization)
    }

    /// [`StateIndex::record`] for an invoice.
    pub fn record_invoice(&mut self, state: &State, id: &str) -> Option<String> {
        let invoice = state.invoices.get(id)?;
        self.invoices_of
            .entry(invoice.organization.clone())
            .or_default()
            .insert(id.to_string());
        state.account_of(Kind::Organization, &invoice.organization)
    }

    /// Counts again the products and invoices without an organization,
    /// after writes.
    pub fn recount(&mut self, state: &State) {
        self.strays = self.count_strays(state);
    }
}

/// The accounts' headers as the specs declare them: who names whom.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Header {
    hub: Option<String>,
    connections: Vec<String>,
    merged_into: Option<String>,
}

impl Header {
    fn names(&self) -> impl Iterator<Item = &String> {
        self.hub
            .iter()
            .chain(self.connections.iter())
            .chain(self.merged_into.iter())
    }
}

/// Which declared objects belong to which account, for objects whose id is
/// global (users, organizations, products, licenses, pinned assets), and
/// every account's header.
#[derive(Clone, Debug, Default)]
pub struct DesiredIndex {
    account_of: HashMap<(Kind, String), String>,
    /// Pinned assets and their account (also in `account_of`).
    pins: BTreeMap<String, String>,
    declared: BTreeMap<String, Vec<(Kind, String)>>,
    headers: BTreeMap<String, Header>,
}

/// The global ids `desired` declares, with their account.
fn global_ids(desired: &Desired) -> Vec<(Kind, String, String)> {
    let mut ids = Vec::new();
    for (id, user) in &desired.users {
        ids.push((Kind::User, id.clone(), user.account.clone()));
    }
    for (id, organization) in &desired.organizations {
        ids.push((Kind::Organization, id.clone(), organization.account.clone()));
    }
    for (id, product) in &desired.products {
        if let Some(organization) = desired.organizations.get(&product.organization) {
            ids.push((Kind::Product, id.clone(), organization.account.clone()));
        }
    }
    for (id, license) in &desired.licenses {
        ids.push((Kind::License, id.clone(), license.account.clone()));
    }
    for (id, pin) in &desired.pins {
        ids.push((Kind::Asset, id.clone(), pin.account.clone()));
    }
    ids
}

fn headers_of(desired: &Desired) -> impl Iterator<Item = (&String, Header)> {
    desired.accounts.iter().map(|(id, account)| {
        (
            id,
            Header {
                hub: account.hub.clone(),
                connections: account.connections.clone(),
                merged_into: account.merged_into.clone(),
            },
        )
    })
}

impl DesiredIndex {
    /// Indexes a whole desired model.
    pub fn of(desired: &Desired) -> DesiredIndex {
        let mut index = DesiredIndex::default();
        index.insert(desired);
        index
    }

    fn insert(&mut self, desired: &Desired) {
        for (kind, id, account) in global_ids(desired) {
            if kind == Kind::Asset {
                self.pins.insert(id.clone(), account.clone());
            }
            self.declared
                .entry(account.clone())
                .or_default()
                .push((kind, id.clone()));
            self.account_of.insert((kind, id), account);
        }
        for (id, header) in headers_of(desired) {
            self.declared.entry(id.clone()).or_default();
            self.headers.insert(id.clone(), header);
        }
    }

    /// Replaces what `accounts` declare with what `part` (the specs of
    /// exactly those accounts) declares.
    pub fn replace(&mut self, accounts: &BTreeSet<String>, part: &Desired) {
        for account in accounts {
            for key in self.declared.remove(account).unwrap_or_default() {
                if key.0 == Kind::Asset {
                    self.pins.remove(&key.1);
                }
                self.account_of.remove(&key);
            }
            self.headers.remove(account);
        }
        self.insert(part);
    }

    /// The account the specs declare a global id in.
    fn account(&self, kind: Kind, id: &str) -> Option<&String> {
        self.account_of.get(&(kind, id.to_string()))
    }

    /// An id `part` declares that an account outside `accounts` declares
    /// too: the full specs would report it twice.
    pub fn clash(&self, accounts: &BTreeSet<String>, part: &Desired) -> Option<String> {
        global_ids(part).into_iter().find_map(|(kind, id, _)| {
            self.account(kind, &id)
                .filter(|other| !accounts.contains(*other))
                .map(|other| format!("{kind} {id} is also declared in account {other}"))
        })
    }

    /// Every account the specs declare.
    pub fn accounts(&self) -> impl Iterator<Item = &String> {
        self.headers.keys()
    }
}

/// The accounts that must join `accounts` for planning them alone to give
/// what a full plan gives for them: the accounts their headers name or that
/// name them (in the specs, `part`, and `index` for the others; and in the
/// state), and the accounts their objects come from or go to. Empty when
/// `accounts` is closed.
pub fn closure(
    accounts: &BTreeSet<String>,
    part: &Desired,
    index: &DesiredIndex,
    state: &State,
    state_index: &StateIndex,
) -> BTreeSet<String> {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut want = |account: &String| {
        if !accounts.contains(account) {
            wanted.insert(account.clone());
        }
    };
    // Headers, both ways, in the specs and in the state.
    for (_, header) in headers_of(part) {
        header.names().for_each(&mut want);
    }
    for (id, header) in &index.headers {
        if !accounts.contains(id) && header.names().any(|name| accounts.contains(name)) {
            want(id);
        }
    }
    for (id, account) in &state.accounts {
        let mut names = account
            .hub
            .iter()
            .chain(account.connections.iter())
            .chain(account.merged_into.iter());
        if accounts.contains(id) {
            names.for_each(&mut want);
        } else if names.any(|name| accounts.contains(name)) {
            want(id);
        }
    }
    // Declared objects stored in another account.
    for (kind, id, _) in global_ids(part) {
        if let Some(stored) = state.account_of(kind, &id) {
            want(&stored);
        }
    }
    // Pins elsewhere of assets stored here.
    for (id, account) in &index.pins {
        if !accounts.contains(account) {
            if let Some(stored) = state.assets.get(id) {
                if accounts.contains(&stored.account) {
                    want(account);
                }
            }
        }
    }
    // Grants elsewhere to users, or of assets, of these accounts (few: a
    // grant is left by a move).
    for grant in state.grants.values() {
        if accounts.contains(&grant.account) {
            continue;
        }
        let user_here = state
            .users
            .get(&grant.user)
            .is_some_and(|user| accounts.contains(&user.account))
            || declared_here(part, &grant.user);
        let asset_here = state
            .assets
            .get(&grant.asset)
            .is_some_and(|asset| accounts.contains(&asset.account));
        if user_here || asset_here {
            want(&grant.account);
        }
    }
    // Stored objects declared in another account, grants to users of
    // other accounts, and assets owned by users of other accounts.
    let declared_in = |kind: Kind, id: &str| -> Option<String> {
        let key = (kind, id.to_string());
        global_ids_lookup(part, kind, id).or_else(|| index.account_of.get(&key).cloned())
    };
    for account in accounts {
        for kind in [Kind::User, Kind::Organization, Kind::License] {
            for id in state_index.ids(account, kind) {
                if let Some(declared) = declared_in(kind, id) {
                    want(&declared);
                }
            }
        }
        for organization in state_index.ids(account, Kind::Organization) {
            for product in state_index
                .products_of
                .get(organization)
                .into_iter()
                .flatten()
            {
                if let Some(declared) = declared_in(Kind::Product, product) {
                    want(&declared);
                }
            }
        }
        for id in state_index.ids(account, Kind::Grant) {
            if let Some(grant) = state.grants.get(id) {
                if let Some(user) = state.users.get(&grant.user) {
                    want(&user.account);
                }
                if let Some(declared) = declared_in(Kind::User, &grant.user) {
                    want(&declared);
                }
            }
        }
        for id in state_index.ids(account, Kind::Asset) {
            let Some(asset) = state.assets.get(id) else {
                continue;
            };
            if let Owner::User(email) = &asset.owner {
                match state.users.get(email) {
                    Some(user) if &user.account == account => {}
                    Some(user) => {
                        want(&user.account);
                        if let Some(declared) = declared_in(Kind::User, email) {
                            want(&declared);
                        }
                    }
                    // Not a user yet (an inventory record can name anyone):
                    // the account that declares them says why the asset
                    // passes to the successor.
                    None => {
                        if let Some(declared) = declared_in(Kind::User, email) {
                            want(&declared);
                        }
                    }
                }
            }
        }
    }
    wanted
}

/// Whether the part declares user `email`.
fn declared_here(part: &Desired, email: &str) -> bool {
    part.users.contains_key(email)
}

fn global_ids_lookup(part: &Desired, kind: Kind, id: &str) -> Option<String> {
    match kind {
        Kind::User => part.users.get(id).map(|o| o.account.clone()),
        Kind::Organization => part.organizations.get(id).map(|o| o.account.clone()),
        Kind::Product => part
            .products
            .get(id)
            .and_then(|p| part.organizations.get(&p.organization))
            .map(|o| o.account.clone()),
        Kind::License => part.licenses.get(id).map(|o| o.account.clone()),
        Kind::Asset => part.pins.get(id).map(|o| o.account.clone()),
        _ => None,
    }
}

/// The part of `state` that belongs to `accounts`: their objects, the
/// products and invoices of their organizations.
pub fn restrict_state(state: &State, index: &StateIndex, accounts: &BTreeSet<String>) -> State {
    let mut part = State::default();
    macro_rules! copy {
        ($kind:expr, $field:ident, $account:expr) => {
            for id in index.ids($account, $kind) {
                if let Some(object) = state.$field.get(id) {
                    part.$field.insert(id.clone(), object.clone());
                }
            }
        };
    }
    for account in accounts {
        copy!(Kind::Account, accounts, account);
        copy!(Kind::User, users, account);
        copy!(Kind::Group, groups, account);
        copy!(Kind::Membership, memberships, account);
        copy!(Kind::Organization, organizations, account);
        copy!(Kind::License, licenses, account);
        copy!(Kind::Asset, assets, account);
        copy!(Kind::Grant, grants, account);
        for organization in index.ids(account, Kind::Organization) {
            for id in index.products_of.get(organization).into_iter().flatten() {
                if let Some(product) = state.products.get(id) {
                    part.products.insert(id.clone(), product.clone());
                }
            }
            for id in index.invoices_of.get(organization).into_iter().flatten() {
                if let Some(invoice) = state.invoices.get(id) {
                    part.invoices.insert(id.clone(), invoice.clone());
                }
            }
        }
    }
    part
}

/// The account a pending item is about (the pending items of the planner
/// are about accounts and users), `None` when it cannot be told.
fn pending_account(pending: &Pending, state: &State, desired: &DesiredIndex) -> Option<String> {
    match pending.kind {
        Kind::Account => Some(pending.object.clone()),
        kind => state
            .account_of(kind, &pending.object)
            .or_else(|| desired.account(kind, &pending.object).cloned()),
    }
}

/// `previous` (a full plan of the same state) with everything listed under
/// `accounts` replaced by `part`, the plan of exactly those accounts. `None`
/// when a pending item of `previous` cannot be placed.
pub fn splice(
    previous: Plan,
    state: &State,
    index: &DesiredIndex,
    accounts: &BTreeSet<String>,
    part: Plan,
) -> Option<Plan> {
    let mut changes: Vec<_> = previous
        .changes
        .into_iter()
        .filter(|change| !accounts.contains(&*change.account))
        .collect();
    changes.extend(part.changes);
    changes.sort_by(|a, b| super::diff::order_key(a).cmp(&super::diff::order_key(b)));
    let mut pending = Vec::with_capacity(previous.pending.len() + part.pending.len());
    for item in &previous.pending {
        let account = pending_account(item, state, index)?;
        if !accounts.contains(&account) {
            pending.push(item.clone());
        }
    }
    pending.extend(part.pending);
    pending.sort_by(|a, b| (a.kind, &a.object, &a.reason).cmp(&(b.kind, &b.object, &b.reason)));
    Some(Plan::new(changes, pending))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{closure, DesiredIndex, StateIndex};
    use crate::model::{Account, Asset, Duration, Owner, State};
    use crate::spec::{load_files, SourceFile};

    /// An asset of acme owned by someone who is not a user yet but whom
    /// zeta's specs declare: planning acme alone needs zeta, for the
    /// asset's reason names where that user is.
    #[test]
    fn the_closure_of_an_account_holds_the_account_declaring_the_owner_of_its_assets() {
        let file = |path: &str, text: &str| SourceFile {
            path: path.to_string(),
            text: text.to_string(),
        };
        let acme = file(
            "acme.yaml",
            "account: acme\ndomains: [acme.com]\nusers:\n  alice@acme.com: {role: owner}\n",
        );
        let zeta = file(
            "zeta.yaml",
            "account: zeta\ndomains: [zeta.com]\nusers:\n  zed@zeta.com: {role: owner}\n  nina@zeta.com: {}\n",
        );
        let whole = load_files(&[acme.clone(), zeta], Vec::new()).expect("valid specs");
        let part = load_files(&[acme], Vec::new()).expect("valid specs");
        let mut state = State::default();
        for (id, owner) in [("acme", "alice@acme.com"), ("zeta", "zed@zeta.com")] {
            let account = Account {
                owner: Some(owner.to_string()),
                domains: Vec::new(),
                hub: None,
                connections: Vec::new(),
                credits: 0,
                merged_into: None,
                invite_ttl: Duration { seconds: 0 },
                successor: None,
            };
            state.accounts.insert(id.to_string(), account);
        }
        state.assets.insert(
            "dataset/ds-1".into(),
            Asset {
                account: "acme".into(),
                owner: Owner::User("nina@zeta.com".into()),
                creator: None,
                folder: None,
                versions: Vec::new(),
                tags: Default::default(),
            },
        );
        let accounts: BTreeSet<String> = ["acme".to_string()].into();
        let wanted = closure(
            &accounts,
            &part,
            &DesiredIndex::of(&whole),
            &state,
            &StateIndex::of(&state),
        );
        assert_eq!(wanted, ["zeta".to_string()].into());
    }
}
