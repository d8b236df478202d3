//! Applying a plan: per-change compare-and-set against the state, decided
//! for every change before anything is written, and turned into one
//! [`Commit`] (objects, history entries, notifications) that the store writes
//! atomically.
//!
//! Architecture invariant: this module is pure. It decides; the caller holds
//! the writer's lock, loads the state, and commits what it returns.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::model::{Fields, Kind, State, Timestamp};
use crate::plan::{Action, Change, Plan};
use crate::store::{Commit, HistoryEntry, Notification};

/// Who applies, and when: written to every history entry.
#[derive(Clone, Debug, Default)]
pub struct ApplyContext {
    pub now: Option<Timestamp>,
    pub actor: Option<String>,
    /// The git revision of the specs, when known.
    pub revision: Option<String>,
}

/// What an apply will do (or did).
#[derive(Clone, Debug)]
pub struct ApplyOutcome {
    /// The commit to write (empty when everything was already applied).
    pub commit: Commit,
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
/// plan.
pub fn prepare(
    plan: &Plan,
    state: &State,
    context: &ApplyContext,
) -> Result<ApplyOutcome, ApplyError> {
    let mut working: HashMap<(Kind, String), Option<Fields>> = HashMap::new();
    let mut conflicts = Vec::new();
    let mut applied_changes: Vec<&Change> = Vec::new();
    let mut skipped = 0;
    for change in &plan.changes {
        let key = (change.kind, change.object.clone());
        let current = match working.get(&key) {
            Some(fields) => fields.clone(),
            None => state.fields(change.kind, &change.object),
        };
        match decide(change, current.as_ref()) {
            Decision::Skip => skipped += 1,
            Decision::Apply => {
                let next = match change.action {
                    Action::Remove => None,
                    Action::Create => change.after.clone(),
                    Action::Update | Action::Transfer => {
                        let mut fields = current.unwrap_or_default();
                        for (name, value) in change.after.iter().flatten() {
                            fields.insert(name.clone(), value.clone());
                        }
                        Some(fields)
                    }
                };
                working.insert(key, next);
                applied_changes.push(change);
            }
            Decision::Conflict(detail) => conflicts.push(Conflict {
                change_id: change.id.clone(),
                kind: change.kind,
                object: change.object.clone(),
                detail,
            }),
        }
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    // Every object written must be a valid object of its kind.
    let mut scratch = State::default();
    let mut objects: Vec<(Kind, String, Option<Fields>)> = working
        .into_iter()
        .map(|((kind, id), fields)| (kind, id, fields))
        .collect();
    objects.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (kind, id, fields) in &objects {
        if let Some(fields) = fields {
            scratch
                .put_fields(*kind, id, Some(fields.clone()))
                .map_err(|message| {
                    let change_id = plan
                        .changes
                        .iter()
                        .find(|c| c.kind == *kind && &c.object == id)
                        .map(|c| c.id.clone())
                        .unwrap_or_default();
                    ApplyError::InvalidChange {
                        change_id,
                        kind: *kind,
                        object: id.clone(),
                        message,
                    }
                })?;
            scratch.put_fields(*kind, id, None).ok();
        }
    }
    let now = context.now.unwrap_or_else(Timestamp::now);
    let plan_id = plan.id();
    let history = applied_changes
        .iter()
        .map(|change| HistoryEntry {
            seq: 0,
            time: now,
            plan_id: plan_id.clone(),
            actor: context.actor.clone(),
            revision: context.revision.clone(),
            change: (*change).clone(),
        })
        .collect();
    let accounts = AccountsAfter::of(state, &applied_changes);
    let notifications = applied_changes
        .iter()
        .flat_map(|change| notifications_for(change, &accounts, now))
        .collect();
    let applied = applied_changes.len();
    Ok(ApplyOutcome {
        commit: Commit {
            objects,
            invoices: Vec::new(),
            history,
            notifications,
        },
        applied,
        skipped,
    })
}

enum Decision {
    Skip,
    Apply,
    Conflict(String),
}

fn matches(current: &Fields, wanted: &Fields) -> bool {
    wanted
        .iter()
        .all(|(name, value)| current.get(name).unwrap_or(&serde_json::Value::Null) == value)
}

fn decide(change: &Change, current: Option<&Fields>) -> Decision {
    let empty = Fields::new();
    let before = change.before.as_ref().unwrap_or(&empty);
    let after = change.after.as_ref().unwrap_or(&empty);
    match (change.action, current) {
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
                serde_json::Value::Object(before.clone()),
                serde_json::Value::Object(after.clone()),
                serde_json::Value::Object(found)
            ))
        }
    }
}

fn text<'a>(fields: Option<&'a Fields>, name: &str) -> Option<&'a str> {
    fields.and_then(|f| f.get(name)).and_then(|v| v.as_str())
}

/// The owner and successor of each account once the plan is applied: a
/// notification goes to who holds the role afterwards (the new owner of an
/// account whose ownership passes in the same plan).
struct AccountsAfter<'a> {
    state: &'a State,
    changed: HashMap<&'a str, &'a Fields>,
}

impl<'a> AccountsAfter<'a> {
    fn of(state: &'a State, applied: &[&'a Change]) -> AccountsAfter<'a> {
        let changed = applied
            .iter()
            .filter(|c| c.kind == Kind::Account && c.action != Action::Remove)
            .filter_map(|c| Some((c.object.as_str(), c.after.as_ref()?)))
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
    let before = change.before.as_ref();
    let after = change.after.as_ref();
    let mut recipients: Vec<(String, String, String)> = Vec::new(); // (to, event, message)
    let user = change.object.as_str();
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
                object: change.object.clone(),
                message,
                change_id: change.id.clone(),
                delivered: false,
            }
        })
        .collect()
}
