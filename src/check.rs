//! The invariants of a state (`deed state check`): one owner per account, no
//! owner, member, assignee or grant that points at nothing, no object in a
//! missing account.
//!
//! Architecture invariant: pure; it reads a [`State`] and reports.

use std::collections::HashSet;

use crate::model::{group_id, Owner, OwnerRef, Role, State};

/// Every violation of the state's invariants, one sentence each, sorted.
pub fn check_state(state: &State) -> Vec<String> {
    let mut violations = Vec::new();
    let account_exists = |id: &str| state.accounts.contains_key(id);
    // Users with role owner, by account, in one pass.
    let mut owners_by_account: std::collections::HashMap<&str, Vec<&String>> =
        std::collections::HashMap::new();
    for (email, user) in &state.users {
        if user.role == Role::Owner {
            owners_by_account
                .entry(user.account.as_str())
                .or_default()
                .push(email);
        }
    }
    for (id, account) in &state.accounts {
        let owners: Vec<&String> = owners_by_account.remove(id.as_str()).unwrap_or_default();
        if account.merged_into.is_some() {
            if let Some(owner) = &account.owner {
                violations.push(format!("account {id} is merged but has owner {owner}"));
            }
            if let Some(into) = &account.merged_into {
                if !account_exists(into) {
                    violations.push(format!(
                        "account {id} is merged into {into}, which does not exist"
                    ));
                }
            }
            continue;
        }
        match &account.owner {
            None => violations.push(format!("account {id} has no owner")),
            Some(owner) => match state.users.get(owner) {
                None => violations.push(format!("account {id}: owner {owner} does not exist")),
                Some(user) if user.account != *id => violations.push(format!(
                    "account {id}: owner {owner} is a user of account {}",
                    user.account
                )),
                Some(user) if user.role != Role::Owner => violations.push(format!(
                    "account {id}: owner {owner} has role {}",
                    user.role
                )),
                Some(_) => {}
            },
        }
        for email in owners {
            if account.owner.as_ref() != Some(email) {
                violations.push(format!(
                    "account {id}: {email} has role owner but is not the account's owner"
                ));
            }
        }
        if let Some(hub) = &account.hub {
            if !account_exists(hub) {
                violations.push(format!("account {id}: hub {hub} does not exist"));
            }
        }
    }
    for (email, user) in &state.users {
        if !account_exists(&user.account) {
            violations.push(format!(
                "user {email} is in account {}, which does not exist",
                user.account
            ));
        }
    }
    for (id, group) in &state.groups {
        if !account_exists(&group.account) {
            violations.push(format!(
                "group {id} is in account {}, which does not exist",
                group.account
            ));
        }
    }
    for (id, membership) in &state.memberships {
        let group = group_id(&membership.account, &membership.group);
        if !state.groups.contains_key(&group) {
            violations.push(format!("membership {id}: group {group} does not exist"));
        }
        if !state.users.contains_key(&membership.user) {
            violations.push(format!(
                "membership {id}: member {} does not exist",
                membership.user
            ));
        }
    }
    for (id, organization) in &state.organizations {
        if !account_exists(&organization.account) {
            violations.push(format!(
                "organization {id} is in account {}, which does not exist",
                organization.account
            ));
        }
    }
    for (id, product) in &state.products {
        if !state.organizations.contains_key(&product.organization) {
            violations.push(format!(
                "product {id} is in organization {}, which does not exist",
                product.organization
            ));
        }
        for email in &product.access {
            if !state.users.contains_key(email) {
                violations.push(format!(
                    "product {id}: access of {email}, who does not exist"
                ));
            }
        }
    }
    for (id, license) in &state.licenses {
        if !account_exists(&license.account) {
            violations.push(format!(
                "license {id} is in account {}, which does not exist",
                license.account
            ));
        }
        if let Some(assignee) = &license.assignee {
            if !state.users.contains_key(assignee) {
                violations.push(format!("license {id}: assignee {assignee} does not exist"));
            }
        }
    }
    // Assets are many: check each (account, owner) pair once, read in
    // place; an asset is unpacked only when it is looked at further.
    let mut owners_seen: HashSet<(&str, OwnerRef<'_>)> = HashSet::new();
    for (id, packed) in state.assets.packed_iter() {
        let (Some(account), Some(owner)) = (packed.account(), packed.owner()) else {
            continue;
        };
        if !account_exists(account) {
            violations.push(format!(
                "asset {id} is in account {account}, which does not exist"
            ));
            continue;
        }
        if !owners_seen.insert((account, owner)) && !packed.has_versions() {
            continue;
        }
        let Some(asset) = packed.unpack() else {
            continue;
        };
        let owner_exists = match &asset.owner {
            Owner::User(email) => state.users.contains_key(email),
            Owner::Group(name) => state.groups.contains_key(&group_id(&asset.account, name)),
        };
        if !owner_exists {
            violations.push(format!("asset {id}: owner {} does not exist", asset.owner));
        }
        for version in &asset.versions {
            if !state.users.contains_key(version) {
                violations.push(format!(
                    "asset {id}: a version is owned by {version}, who does not exist"
                ));
            }
        }
    }
    for (id, grant) in &state.grants {
        if !state.assets.contains_key(&grant.asset) {
            violations.push(format!("grant {id}: asset {} does not exist", grant.asset));
        }
        if !state.users.contains_key(&grant.user) {
            violations.push(format!("grant {id}: user {} does not exist", grant.user));
        }
    }
    for (id, invoice) in &state.invoices {
        if !state.organizations.contains_key(&invoice.organization) {
            violations.push(format!(
                "invoice {id} is in organization {}, which does not exist",
                invoice.organization
            ));
        }
    }
    violations.sort();
    violations.dedup();
    violations
}
