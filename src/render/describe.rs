//! What the text and markdown plans share: changes grouped by account, folded
//! when many of them share an action, a kind and a reason, and a short human
//! description of each change made from its `before` and `after`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::FieldValue as Value;

use crate::model::{AssetKind, Fields, Kind};
use crate::plan::{Action, Change, Plan, Summary};

/// Within an account, this many changes with the same action, kind and
/// reason fold into one line (unless expanded).
pub(crate) const FOLD_AT: usize = 5;

/// The changes of one account, in plan order.
pub(crate) struct Section<'a> {
    pub account: &'a str,
    pub entries: Vec<Entry>,
}

/// One line of a plan: a single change, or a fold of many.
pub(crate) struct Entry {
    pub action: Action,
    pub kind: Kind,
    /// The object's id, or `1,204 assets` for a fold.
    pub object: String,
    /// How many changes this line stands for: 1 unless folded.
    pub count: usize,
    /// `user bob@acme.com`, or `1,204 assets` for a fold.
    pub label: String,
    /// What changes, for a human: `role: member -> admin`.
    pub detail: String,
    /// Further lines under the change (what a moving user brings and leaves).
    pub notes: Vec<String>,
}

/// The plan's changes grouped by account (in order of first appearance),
/// folded unless `expand`.
pub(crate) fn sections(plan: &Plan, expand: bool) -> Vec<Section<'_>> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_account: HashMap<&str, Vec<&Change>> = HashMap::new();
    for change in &plan.changes {
        by_account
            .entry(&*change.account)
            .or_insert_with(|| {
                order.push(&*change.account);
                Vec::new()
            })
            .push(change);
    }
    let moves = MoveIndex::of(plan);
    let mut sections = Vec::with_capacity(order.len());
    for account in order {
        let changes = by_account.remove(account).unwrap_or_default();
        let mut counts: HashMap<(Action, Kind, &str), usize> = HashMap::new();
        for change in &changes {
            *counts
                .entry((change.action, change.kind, &*change.reason))
                .or_default() += 1;
        }
        let mut folded: BTreeSet<(Action, Kind, &str)> = BTreeSet::new();
        let mut entries = Vec::new();
        for change in &changes {
            let key = (change.action, change.kind, &*change.reason);
            let count = counts.get(&key).copied().unwrap_or(1);
            if !expand && count >= FOLD_AT {
                if folded.insert(key) {
                    let object = format!("{} {}", thousands(count), change.kind.plural());
                    entries.push(Entry {
                        action: change.action,
                        kind: change.kind,
                        label: object.clone(),
                        object,
                        count,
                        detail: with_reason(describe(change), &change.reason),
                        notes: Vec::new(),
                    });
                }
                continue;
            }
            let detail = detail_of(change);
            entries.push(Entry {
                action: change.action,
                kind: change.kind,
                object: change.object.to_string(),
                count: 1,
                label: format!("{} {}", change.kind, change.object),
                detail,
                notes: moves.notes(change),
            });
        }
        sections.push(Section { account, entries });
    }
    sections
}

/// `Plan: N to create, N to update, N to transfer, N to remove.` or the
/// no-changes line.
pub(crate) fn summary_line(plan: &Plan) -> String {
    if plan.changes.is_empty() {
        return "No changes. The state matches the specs.".to_string();
    }
    // Recount rather than trust a summary read from a file.
    let Summary {
        create,
        update,
        transfer,
        remove,
    } = Summary::of(&plan.changes);
    format!(
        "Plan: {create} to create, {update} to update, {transfer} to transfer, {remove} to remove."
    )
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(number: usize) -> String {
    let digits = number.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|group| std::str::from_utf8(group).unwrap_or_default())
        .collect();
    groups.join(",")
}

/// The reasons the planner gives when nothing more than the specs explains a
/// change; they are not repeated on the plan's lines.
fn is_plain_reason(reason: &str) -> bool {
    reason.starts_with("declared in ")
        || reason.starts_with("changed in ")
        || reason == "no longer in the specs"
        || reason == "not in the specs"
        || reason == "follows the specs"
}

/// What a single change's line says: what changes, and why when the why is
/// more than "the specs say so" and the change does not already tell it.
fn detail_of(change: &Change) -> String {
    let detail = describe(change);
    let reason = &*change.reason;
    match (change.kind, change.action) {
        // `moves from A (both satellites of H)`.
        (Kind::User, Action::Transfer) if moving(change).is_some() => {
            match reason.split_once("; connected: ") {
                Some((_, how)) => match detail.split_once(", ") {
                    Some((head, rest)) => format!("{head} ({how}), {rest}"),
                    None => format!("{detail} ({how})"),
                },
                None => detail,
            }
        }
        (Kind::User, Action::Create | Action::Update) => detail,
        // `(term kept)` says to when, from the planner's reason.
        (Kind::License, Action::Transfer) if reason.contains("term to ") => {
            let (how, term) = match reason.split_once("; term to ") {
                Some((how, term)) => (Some(how), format!("term to {term}")),
                None => (None, reason.to_string()),
            };
            let term = term.split(':').next().unwrap_or_default();
            let detail = detail.replace("(term kept)", &format!("({term})"));
            match how {
                Some(how) => with_reason(detail, how),
                None => detail,
            }
        }
        (Kind::Account, _) if reason.starts_with("ownership passes") => detail,
        _ if is_plain_reason(reason) => detail,
        _ => with_reason(detail, reason),
    }
}

fn with_reason(detail: String, reason: &str) -> String {
    match (detail.is_empty(), reason.is_empty()) {
        (_, true) => detail,
        (true, false) => format!("({reason})"),
        (false, false) => format!("{detail} ({reason})"),
    }
}

/// A short description of what a change does, without its reason.
pub(crate) fn describe(change: &Change) -> String {
    let before = change.before_fields().unwrap_or_default();
    let after = change.after_fields().unwrap_or_default();
    match change.action {
        Action::Create => describe_create(change.kind, &after),
        Action::Remove => String::new(),
        Action::Update | Action::Transfer => {
            describe_update(change.kind, change.action, &before, &after)
        }
    }
}

fn describe_create(kind: Kind, after: &Fields) -> String {
    if kind == Kind::User && after.get("status").and_then(Value::as_str) == Some("invited") {
        let role = after
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("member");
        let mut detail = format!("invited as {role}");
        if let Some(name) = after.get("name").and_then(Value::as_str) {
            detail.push_str(&format!(", name: {name}"));
        }
        if let Some(expires) = after.get("invitation_expires").filter(|v| !v.is_null()) {
            detail.push_str(", invitation expires ");
            detail.push_str(&format_field("invitation_expires", expires));
        }
        return detail;
    }
    let hidden: &[&str] = match kind {
        Kind::Group => &["account", "name"],
        Kind::Membership => &["account", "group", "user"],
        Kind::Grant => &["account", "asset", "user"],
        _ => &["account"],
    };
    // The main fields first, then the others in name order.
    const FIRST: [&str; 7] = [
        "name",
        "role",
        "owner",
        "organization",
        "product",
        "assignee",
        "expires",
    ];
    let mut keys: Vec<&String> = after.keys().collect();
    keys.sort_by_key(|key| {
        (
            FIRST
                .iter()
                .position(|first| first == key)
                .unwrap_or(FIRST.len()),
            key.as_str(),
        )
    });
    let mut pieces = Vec::new();
    for key in keys {
        let Some(value) = after.get(key) else {
            continue;
        };
        let blank = match value {
            Value::Null => true,
            Value::Array(items) => items.is_empty(),
            Value::Object(map) => map.is_empty(),
            Value::Number(number) => key == "credits" && number.as_i64() == Some(0),
            _ => false,
        };
        if blank || hidden.contains(&key.as_str()) {
            continue;
        }
        pieces.push(format!("{key}: {}", format_field(key, value)));
    }
    pieces.join(", ")
}

fn describe_update(kind: Kind, action: Action, before: &Fields, after: &Fields) -> String {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut first = Vec::new();
    let mut pieces = Vec::new();
    let mut skip: BTreeSet<&str> = BTreeSet::new();

    if kind == Kind::User {
        if let (Some(old), Some(new)) = (
            before.get("invitation_expires").filter(|v| !v.is_null()),
            after.get("invitation_expires").filter(|v| !v.is_null()),
        ) {
            if old != new {
                first.push(format!(
                    "invitation expired {}; re-issued, expires {}",
                    format_field("invitation_expires", old),
                    format_field("invitation_expires", new)
                ));
                skip.insert("invitation_expires");
            }
        }
        if let (Some(from), Some(to)) = (before.get("account"), after.get("account")) {
            if from != to {
                first.push(format!("moves from {}", format_value(from)));
                skip.insert("account");
            }
        }
    }
    if kind == Kind::Asset {
        if let Some(to) = after.get("owner") {
            let from = before
                .get("owner")
                .map(format_value)
                .unwrap_or_else(|| "none".into());
            if before.get("owner") != Some(to) {
                first.push(format!("{from} -> {}", format_value(to)));
            }
            skip.insert("owner");
        }
    }
    if kind == Kind::License && (before.contains_key("assignee") || after.contains_key("assignee"))
    {
        let from = before.get("assignee");
        let to = after.get("assignee");
        if from != to {
            let mut piece = format!(
                "assignee: {} -> {}",
                from.map(format_value).unwrap_or_else(|| "none".into()),
                to.map(format_value).unwrap_or_else(|| "none".into()),
            );
            match (before.get("expires"), after.get("expires")) {
                (Some(old), Some(new)) if old == new && !new.is_null() => {
                    piece.push_str(&format!(" (term to {} kept)", format_value(new)));
                    skip.insert("expires");
                }
                (None, None) if action == Action::Transfer => piece.push_str(" (term kept)"),
                _ => {}
            }
            first.push(piece);
        }
        skip.insert("assignee");
    }

    for key in keys {
        if skip.contains(key.as_str()) {
            continue;
        }
        match (before.get(key), after.get(key)) {
            (Some(old), Some(new)) if old == new => {}
            (Some(old), Some(new)) => pieces.push(format!(
                "{key}: {} -> {}",
                format_field(key, old),
                format_field(key, new)
            )),
            (None, Some(new)) => pieces.push(format!("{key}: {}", format_field(key, new))),
            (Some(old), None) => pieces.push(format!("{key}: {} -> none", format_field(key, old))),
            (None, None) => {}
        }
    }
    first.extend(pieces);
    first.join(", ")
}

/// A field's value for a human; times as `2026-11-25 12:00 UTC`.
fn format_field(key: &str, value: &Value) -> String {
    if key == "invitation_expires" {
        if let Some(time) = value
            .as_str()
            .and_then(|text| text.parse::<jiff::Timestamp>().ok())
        {
            return time.strftime("%Y-%m-%d %H:%M UTC").to_string();
        }
    }
    format_value(value)
}

/// At most this many items of a list or map are shown.
const SHOWN_ITEMS: usize = 5;

fn format_value(value: &Value) -> String {
    match value {
        Value::Null => "none".to_string(),
        Value::String(text) => text.clone(),
        Value::Array(items) => {
            let mut shown: Vec<String> = items.iter().take(SHOWN_ITEMS).map(format_value).collect();
            if items.len() > SHOWN_ITEMS {
                shown.push(format!("… {} more", thousands(items.len() - SHOWN_ITEMS)));
            }
            format!("[{}]", shown.join(", "))
        }
        Value::Object(map) => {
            let mut shown: Vec<String> = map
                .iter()
                .take(SHOWN_ITEMS)
                .map(|(key, value)| format!("{key}: {}", format_value(value)))
                .collect();
            if map.len() > SHOWN_ITEMS {
                shown.push(format!("… {} more", thousands(map.len() - SHOWN_ITEMS)));
            }
            format!("{{{}}}", shown.join(", "))
        }
        other => other.to_string(),
    }
}

/// How many assets of each kind.
type KindCounts = BTreeMap<String, usize>;

/// What goes with a moving user and what stays with whom, from the asset and
/// grant changes of the same plan. Assets that move with a user say so in
/// their reason (`moves with EMAIL from A to B`), set by the planner.
#[derive(Default)]
struct MoveIndex<'a> {
    /// Assets a user brings: email -> kind -> count.
    brought: HashMap<&'a str, KindCounts>,
    /// The folders receiving the files a user brings: email -> folder names.
    folders: HashMap<&'a str, BTreeSet<String>>,
    /// Assets of an account leaving a user: (email, account) -> new owner ->
    /// what -> count.
    left: HashMap<(&'a str, &'a str), BTreeMap<String, KindCounts>>,
    /// Folders a user keeps read access to: email -> count.
    granted: HashMap<&'a str, usize>,
}

impl<'a> MoveIndex<'a> {
    fn of(plan: &'a Plan) -> MoveIndex<'a> {
        let mut index = MoveIndex::default();
        let any_move = plan
            .changes
            .iter()
            .any(|c| c.kind == Kind::User && c.action == Action::Transfer && moving(c).is_some());
        if !any_move {
            return index;
        }
        let folder_names: HashMap<&str, String> = plan
            .changes
            .iter()
            .filter(|c| c.kind == Kind::Asset && c.action == Action::Create)
            .filter_map(|c| {
                let tags = c.after()?.get("tags")?;
                Some((&*c.object, tags.get("name")?.as_str()?.to_string()))
            })
            .collect();
        for change in &plan.changes {
            match change.kind {
                Kind::Asset if change.action == Action::Transfer => {
                    let kind = asset_kind_name(&change.object);
                    if let Some(email) = mover_of(&change.reason) {
                        if moving(change).is_some() {
                            *index
                                .brought
                                .entry(email)
                                .or_default()
                                .entry(kind.clone())
                                .or_default() += 1;
                            let folder = change.after().and_then(|f| f.text("folder"));
                            if let Some(folder) = folder {
                                let name = folder_names.get(folder).map_or(folder, String::as_str);
                                index
                                    .folders
                                    .entry(email)
                                    .or_default()
                                    .insert(name.to_string());
                            }
                        }
                    }
                    let old = change
                        .before()
                        .and_then(|f| f.text("owner"))
                        .and_then(|owner| owner.strip_prefix("user:"));
                    let new = change.after().and_then(|f| f.text("owner"));
                    if let (Some(old), Some(new)) = (old, new) {
                        if new != format!("user:{old}") {
                            let new = new.strip_prefix("user:").unwrap_or(new).to_string();
                            let others = change
                                .before()
                                .and_then(|f| f.get("versions"))
                                .is_some_and(|versions| {
                                    versions.as_array().is_some_and(|versions| {
                                        versions.iter().any(|v| v.as_str() != Some(old))
                                    })
                                });
                            let what = match kind.as_str() {
                                "proof" if others => "proof with versions of others".to_string(),
                                "folder" => format!("folder ({old} keeps read access)"),
                                _ => kind,
                            };
                            *index
                                .left
                                .entry((old, &*change.account))
                                .or_default()
                                .entry(new)
                                .or_default()
                                .entry(what)
                                .or_default() += 1;
                        }
                    }
                }
                Kind::Grant if change.action == Action::Create => {
                    if let Some((_, user)) = change.object.rsplit_once(':') {
                        *index.granted.entry(user).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        index
    }

    fn notes(&self, change: &Change) -> Vec<String> {
        if change.kind != Kind::User || change.action != Action::Transfer {
            return Vec::new();
        }
        let Some((from, _)) = moving(change) else {
            return Vec::new();
        };
        let mut notes = Vec::new();
        let email = &*change.object;
        if let Some(kinds) = self.brought.get(email) {
            let folders = self.folders.get(email);
            let parts: Vec<String> = kinds
                .iter()
                .map(|(kind, &count)| {
                    let mut part = count_phrase(kind, count);
                    if kind == "file" {
                        if let Some(folders) = folders.filter(|f| !f.is_empty()) {
                            let names: Vec<String> =
                                folders.iter().map(|name| format!("\"{name}\"")).collect();
                            let noun = if names.len() == 1 {
                                "folder"
                            } else {
                                "folders"
                            };
                            part.push_str(&format!(" into {noun} {}", names.join(", ")));
                        }
                    }
                    part
                })
                .collect();
            notes.push(format!("brings  {}", parts.join(", ")));
        }
        if let Some(owners) = self.left.get(&(email, from)) {
            let parts: Vec<String> = owners
                .iter()
                .map(|(owner, kinds)| format!("{} -> {owner}", kinds_phrase(kinds)))
                .collect();
            notes.push(format!("leaves  {}", parts.join("; ")));
        }
        if let Some(&grants) = self.granted.get(email) {
            let noun = if grants == 1 { "folder" } else { "folders" };
            notes.push(format!(
                "keeps   read access to {} {noun} in {from}",
                thousands(grants)
            ));
        }
        notes
    }
}

/// `(from, to)` of a change that changes an object's account.
fn moving(change: &Change) -> Option<(&str, &str)> {
    let from = change.before()?.text("account")?;
    let to = change.after()?.text("account")?;
    (from != to).then_some((from, to))
}

/// The user an asset moves with, from its reason `moves with EMAIL from ...`.
fn mover_of(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("moves with ")?;
    rest.split_once(' ').map(|(email, _)| email)
}

fn asset_kind_name(asset: &str) -> String {
    AssetKind::of_asset_id(asset)
        .map(|kind| kind.as_str().to_string())
        .unwrap_or_else(|| "asset".to_string())
}

/// `14 files, 2 proofs`.
fn kinds_phrase(kinds: &BTreeMap<String, usize>) -> String {
    kinds
        .iter()
        .map(|(kind, &count)| count_phrase(kind, count))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1 file`, `14 files`, `2 proofs with versions of others`, `3 folders
/// (dave@acme.com keeps read access)`: the first word takes the plural.
fn count_phrase(what: &str, count: usize) -> String {
    if count == 1 {
        return format!("1 {what}");
    }
    match what.split_once(' ') {
        Some((noun, rest)) => format!("{} {noun}s {rest}", thousands(count)),
        None => format!("{} {what}s", thousands(count)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_204), "1,204");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
