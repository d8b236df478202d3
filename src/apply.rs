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
    let notifications = applied_changes
        .iter()
        .flat_map(|change| notifications_for(change, state, now))
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

/// The notifications an applied change queues (contract 2.8): invitations,
/// ownership transfers, moves and removals, to both parties where there are
/// two.
fn notifications_for(change: &Change, state: &State, now: Timestamp) -> Vec<Notification> {
    let before = change.before.as_ref();
    let after = change.after.as_ref();
    let mut recipients: Vec<(String, String, String)> = Vec::new(); // (to, event, message)
    match (change.kind, change.action) {
        (Kind::User, Action::Create) => {
            let expires = text(after, "invitation_expires").unwrap_or("");
            recipients.push((
                change.object.clone(),
                "invitation".into(),
                format!(
                    "you are invited to account {}; the invitation expires {expires}",
                    change.account
                ),
            ));
        }
        (Kind::User, Action::Update)
            if after.is_some_and(|f| f.contains_key("invitation_expires")) =>
        {
            let expires = text(after, "invitation_expires").unwrap_or("");
            recipients.push((
                change.object.clone(),
                "invitation".into(),
                format!(
                    "your invitation to account {} was re-issued; it expires {expires}",
                    change.account
                ),
            ));
        }
        (Kind::User, Action::Transfer) => {
            let from = text(before, "account").unwrap_or("");
            let to = text(after, "account").unwrap_or("");
            recipients.push((
                change.object.clone(),
                "move".into(),
                format!("you were moved from account {from} to {to}"),
            ));
            if let Some(owner) = state.accounts.get(to).and_then(|a| a.owner.clone()) {
                recipients.push((
                    owner,
                    "move".into(),
                    format!(
                        "{} moved from account {from} into your account {to}",
                        change.object
                    ),
                ));
            }
        }
        (Kind::User, Action::Remove) => {
            let account = text(before, "account")
                .unwrap_or(&change.account)
                .to_string();
            recipients.push((
                change.object.clone(),
                "removal".into(),
                format!("you were removed from account {account}"),
            ));
            if let Some(owner) = state
                .accounts
                .get(&account)
                .and_then(|a| a.successor.clone().or(a.owner.clone()))
            {
                if owner != change.object {
                    recipients.push((
                        owner,
                        "removal".into(),
                        format!(
                            "{} was removed from account {account}; what they owned passes to you",
                            change.object
                        ),
                    ));
                }
            }
        }
        (Kind::Account, Action::Transfer) => {
            let old = text(before, "owner");
            let new = text(after, "owner");
            if let Some(new) = new {
                recipients.push((
                    new.to_string(),
                    "transfer".into(),
                    format!("you are now the owner of account {}", change.object),
                ));
            }
            if let Some(old) = old {
                recipients.push((
                    old.to_string(),
                    "transfer".into(),
                    format!(
                        "ownership of account {} passed to {}",
                        change.object,
                        new.unwrap_or("nobody")
                    ),
                ));
            }
        }
        (Kind::License, Action::Transfer) => {
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
    recipients
        .into_iter()
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
