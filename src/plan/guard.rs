//! Checks a plan must pass before it is shown as applicable or applied: the
//! removal guard (contract 2.7) and authorization of `--actor` (3.4).
//!
//! Architecture invariant: pure; both read a plan and the state it was made
//! against.

use crate::model::{Kind, Role, State};

use super::{Action, Change, Plan};

/// The removal guard's verdict: how much of the state the plan removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovalCount {
    pub users_removed: usize,
    pub users_total: usize,
    pub memberships_removed: usize,
    pub memberships_total: usize,
}

impl RemovalCount {
    pub fn of(plan: &Plan, state: &State) -> RemovalCount {
        let removed = |kind: Kind| {
            plan.changes
                .iter()
                .filter(|c| c.kind == kind && c.action == Action::Remove)
                .count()
        };
        RemovalCount {
            users_removed: removed(Kind::User),
            users_total: state.users.len(),
            memberships_removed: removed(Kind::Membership),
            memberships_total: state.memberships.len(),
        }
    }

    /// `Err` with a message naming the numbers when the plan removes more
    /// than `max_percent` of all users or of all memberships.
    pub fn check(&self, max_percent: f64) -> Result<(), String> {
        let over = |removed: usize, total: usize| {
            total > 0 && (removed as f64) * 100.0 > max_percent * (total as f64)
        };
        let users_over = over(self.users_removed, self.users_total);
        let memberships_over = over(self.memberships_removed, self.memberships_total);
        if !users_over && !memberships_over {
            return Ok(());
        }
        let mut parts = Vec::new();
        if users_over {
            parts.push(format!(
                "{} of {} users ({})",
                self.users_removed,
                self.users_total,
                percent(self.users_removed, self.users_total)
            ));
        }
        if memberships_over {
            parts.push(format!(
                "{} of {} group memberships ({})",
                self.memberships_removed,
                self.memberships_total,
                percent(self.memberships_removed, self.memberships_total)
            ));
        }
        Err(format!(
            "removal guard: the plan removes {}, more than --max-removal {}%; check the specs, or pass --allow-removals if this is intended",
            parts.join(" and "),
            trim_float(max_percent)
        ))
    }
}

fn percent(part: usize, total: usize) -> String {
    format!(
        "{}%",
        trim_float(((part as f64) * 1000.0 / (total as f64)).round() / 10.0)
    )
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.1}");
    text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
}

/// Every change of `plan` that `actor` may not make, as one sentence each
/// naming the actor, the change and the role it lacks. Roles are read from
/// the state the plan was made against.
pub fn authorize(plan: &Plan, state: &State, actor: &str) -> Vec<String> {
    let actor = actor.to_ascii_lowercase();
    let role_in = |account: &str| -> Option<Role> {
        state
            .users
            .get(&actor)
            .filter(|user| user.account == account)
            .map(|user| user.role)
    };
    let is_admin = |account: &str| matches!(role_in(account), Some(Role::Owner | Role::Admin));
    let mut refusals = Vec::new();
    for change in &plan.changes {
        let refuse = |needs: String| format!("{actor} may not {}: {needs}", describe(change));
        let before_text = |name: &str| {
            change
                .before()
                .and_then(|f| f.text(name))
                .map(str::to_string)
        };
        let after_text = |name: &str| {
            change
                .after()
                .and_then(|f| f.text(name))
                .map(str::to_string)
        };
        match (change.kind, change.action) {
            (Kind::Account, Action::Transfer) => {
                let owner = state
                    .accounts
                    .get(&*change.object)
                    .and_then(|a| a.owner.clone());
                if owner.as_deref() != Some(actor.as_str()) {
                    refusals.push(refuse(format!(
                        "an ownership transfer of account {} needs its current owner{}",
                        change.object,
                        owner.map(|o| format!(" ({o})")).unwrap_or_default()
                    )));
                }
            }
            (Kind::User, Action::Transfer) if before_text("account").is_some() => {
                let from = before_text("account").unwrap_or_default();
                let to = after_text("account").unwrap_or_default();
                let hub = |id: &str| state.accounts.get(id).and_then(|a| a.hub.clone());
                let hub_account = hub(&from).or_else(|| hub(&to));
                let may_move = |account: &str| {
                    matches!(
                        role_in(account),
                        Some(Role::Owner | Role::Admin | Role::BillingAdmin)
                    )
                };
                match hub_account {
                    Some(hub) if !may_move(&hub) => refusals.push(refuse(format!(
                        "moving a user needs an admin or billing-admin of the hub account {hub}"
                    ))),
                    Some(_) => {}
                    None if !(may_move(&from) && may_move(&to)) => refusals.push(refuse(format!(
                        "moving a user needs an admin or billing-admin of both {from} and {to}"
                    ))),
                    None => {}
                }
            }
            (Kind::Product, Action::Transfer) | (Kind::Organization, Action::Transfer) => {
                let accounts = container_accounts(change, state);
                for account in accounts {
                    if state.accounts.contains_key(&account) && !is_admin(&account) {
                        refusals.push(refuse(format!("it needs an admin of account {account}")));
                    }
                }
            }
            _ => {
                let account = &*change.account;
                if state.accounts.contains_key(account) && !is_admin(account) {
                    refusals.push(refuse(format!(
                        "it needs an owner or admin of account {account}"
                    )));
                }
            }
        }
    }
    refusals
}

/// The accounts on both sides of a product or organization transfer.
fn container_accounts(change: &Change, state: &State) -> Vec<String> {
    let text = |fields: Option<super::PackedFieldsRef<'_>>, name: &str| {
        fields.and_then(|f| f.text(name)).map(str::to_string)
    };
    let mut accounts = Vec::new();
    match change.kind {
        Kind::Organization => {
            accounts.extend(text(change.before(), "account"));
            accounts.extend(text(change.after(), "account"));
        }
        _ => {
            for organization in [
                text(change.before(), "organization"),
                text(change.after(), "organization"),
            ]
            .into_iter()
            .flatten()
            {
                match state.organizations.get(&organization) {
                    Some(org) => accounts.push(org.account.clone()),
                    None => accounts.push(change.account.to_string()),
                }
            }
        }
    }
    accounts.sort();
    accounts.dedup();
    accounts
}

fn describe(change: &Change) -> String {
    format!(
        "{} {} {} (change {})",
        change.action.as_str(),
        change.kind,
        change.object,
        change.id
    )
}
