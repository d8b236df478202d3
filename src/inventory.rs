//! The inventory: what users create (assets), what billing produces
//! (invoices) and the credits an account holds, observed rather than
//! declared. `deed inventory import FILE` parses JSON lines or a YAML list of
//! records into a [`Commit`], all or nothing.
//!
//! Every record is checked before anything is written; the commit's objects
//! and history entries are then made part by part ([`PART_ASSETS`] assets at
//! a time) while the store writes them, so an import of a million assets
//! holds the typed assets once, not their field maps and history entries too.
//!
//! Architecture invariant: pure; the caller reads the file and commits.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::diagnostic::Diagnostic;
use crate::model::{
    to_fields, validate_asset_id, validate_email, validate_object_id, Account, Asset, FieldValue,
    Invoice, Kind, Owner, State, Timestamp,
};
use crate::plan::{Action, Change};
use crate::store::{Commit, HistoryEntry, MakeParts, Parts, StoreError};

/// Assets per part of the commit.
pub const PART_ASSETS: usize = 10_000;

/// One record as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    #[serde(rename = "type", default)]
    record_type: Option<String>,
    id: Option<String>,
    account: Option<String>,
    owner: Option<String>,
    creator: Option<String>,
    folder: Option<String>,
    versions: Option<Vec<String>>,
    tags: Option<BTreeMap<String, String>>,
    product: Option<String>,
    organization: Option<String>,
    balance: Option<i64>,
}

/// The result of parsing an import: what it writes and how much.
#[derive(Debug)]
pub struct Import<'a> {
    /// What the import writes; it borrows the state it was parsed against.
    pub commit: Commit<'a>,
    /// Records of each type in the file (the last of an id counts).
    pub assets: usize,
    pub invoices: usize,
    pub credits: usize,
    /// Objects and invoices that differ from the state, which the commit
    /// writes.
    pub changed: usize,
}

/// Parses `text` (from `path`, for messages) against `state`. Every bad
/// record is reported with its line; any error imports nothing.
pub fn parse_import<'a>(
    path: &str,
    text: &str,
    state: &'a State,
    now: Timestamp,
) -> Result<Import<'a>, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut assets: BTreeMap<String, Asset> = BTreeMap::new();
    let mut invoices: BTreeMap<String, Invoice> = BTreeMap::new();
    let mut credits: BTreeMap<String, i64> = BTreeMap::new();
    for_each_record(path, text, |line, record| {
        let mut error = |message: String| errors.push(Diagnostic::at(path, line, 1, message));
        let record_type = record.record_type.as_deref().unwrap_or("asset");
        let account = record
            .account
            .as_deref()
            .map(|a| state.resolve_account(a).to_string());
        let known_account = |error: &mut dyn FnMut(String)| -> Option<String> {
            match &account {
                None => {
                    error("missing field `account`".into());
                    None
                }
                Some(a) if !state.accounts.contains_key(a) => {
                    error(format!(
                        "unknown account `{a}`: declare and apply it before importing into it"
                    ));
                    None
                }
                Some(a) => Some(a.clone()),
            }
        };
        match record_type {
            "asset" => {
                let Some(id) = record.id.clone() else {
                    error("asset: missing field `id`".into());
                    return;
                };
                if let Err(message) = validate_asset_id(&id) {
                    error(message);
                    return;
                }
                let Some(account) = known_account(&mut error) else {
                    return;
                };
                let Some(owner_text) = record.owner.as_deref() else {
                    error(format!("asset {id}: missing field `owner`"));
                    return;
                };
                let owner: Owner = match owner_text.parse() {
                    Ok(owner) => owner,
                    Err(message) => {
                        error(format!("asset {id}: {message}"));
                        return;
                    }
                };
                let creator = match &record.creator {
                    Some(creator) => Some(creator.to_ascii_lowercase()),
                    None => owner.user().map(str::to_string),
                };
                let mut bad = false;
                for email in creator.iter().chain(record.versions.iter().flatten()) {
                    if let Err(message) = validate_email(email) {
                        error(format!("asset {id}: {message}"));
                        bad = true;
                    }
                }
                if let Some(folder) = &record.folder {
                    if let Err(message) = validate_asset_id(folder) {
                        error(format!("asset {id}: folder: {message}"));
                        bad = true;
                    }
                }
                if bad {
                    return;
                }
                assets.insert(
                    id,
                    Asset {
                        account,
                        owner,
                        creator,
                        folder: record.folder.clone(),
                        versions: record
                            .versions
                            .iter()
                            .flatten()
                            .map(|v| v.to_ascii_lowercase())
                            .collect(),
                        tags: record
                            .tags
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .collect(),
                    },
                );
            }
            "invoice" => {
                let (Some(id), Some(product), Some(organization)) = (
                    record.id.clone(),
                    record.product.clone(),
                    record.organization.clone(),
                ) else {
                    error("invoice: needs `id`, `product` and `organization`".into());
                    return;
                };
                if let Err(message) = validate_object_id(&id) {
                    error(format!("invoice: {message}"));
                    return;
                }
                if !state.organizations.contains_key(&organization) {
                    error(format!(
                        "invoice {id}: unknown organization `{organization}`"
                    ));
                    return;
                }
                invoices.insert(
                    id,
                    Invoice {
                        product,
                        organization,
                    },
                );
            }
            "credits" => {
                let Some(account) = known_account(&mut error) else {
                    return;
                };
                let Some(balance) = record.balance else {
                    error("credits: missing field `balance`".into());
                    return;
                };
                credits.insert(account, balance);
            }
            other => error(format!(
                "unknown record type `{other}` (expected asset, invoice or credits)"
            )),
        }
    })?;
    if !errors.is_empty() {
        return Err(errors);
    }
    let (asset_count, invoice_count, credit_count) = (assets.len(), invoices.len(), credits.len());
    // What the commit writes: what differs from the state.
    assets.retain(|id, asset| state.assets.get(id).as_ref() != Some(&*asset));
    invoices.retain(|id, invoice| state.invoices.get(id) != Some(&*invoice));
    credits.retain(|account, balance| {
        state
            .accounts
            .get(account)
            .is_some_and(|account| account.credits != *balance)
    });
    let changed = assets.len() + invoices.len() + credits.len();
    let commit = if changed == 0 {
        Commit::default()
    } else {
        // Invoices: one record each, and about one history entry each.
        let records = 2 * assets.len() + 2 * invoices.len() + 2 * credits.len();
        let maker = ImportParts {
            now,
            reason: format!("inventory import of {path}"),
            assets: assets.into_iter(),
            invoices,
            credits,
        };
        Commit {
            rest: Some(Parts::new(records, &[], state, maker)),
            ..Commit::default()
        }
    };
    Ok(Import {
        commit,
        assets: asset_count,
        invoices: invoice_count,
        credits: credit_count,
        changed,
    })
}

/// The commit of an import, made part by part against the state: the
/// changed assets (object and history entry each), sorted by id, then the
/// invoices and credit balances.
struct ImportParts {
    now: Timestamp,
    /// The reason of every history entry.
    reason: String,
    assets: std::collections::btree_map::IntoIter<String, Asset>,
    /// Written in the last part; emptied then.
    invoices: BTreeMap<String, Invoice>,
    credits: BTreeMap<String, i64>,
}

impl ImportParts {
    /// The next assets, or `None` when they are all written.
    fn assets(&mut self, state: &State) -> Option<Commit<'static>> {
        let mut part = Commit::default();
        for (id, asset) in self.assets.by_ref().take(PART_ASSETS) {
            let before = state.assets.get(&id);
            let action = if before.is_some() {
                Action::Update
            } else {
                Action::Create
            };
            let after = to_fields(&asset);
            let change = Change::new(
                action,
                Kind::Asset,
                id.as_str(),
                asset.account.as_str(),
                before.as_ref().map(to_fields),
                Some(after.clone()),
                self.reason.as_str(),
            );
            part.history.push(history_entry(self.now, change));
            part.objects.push((Kind::Asset, id, Some(after)));
        }
        (!part.is_empty()).then_some(part)
    }

    /// The invoices and credit balances, once.
    fn rest(&mut self, state: &State) -> Option<Commit<'static>> {
        let mut part = Commit::default();
        let invoices = std::mem::take(&mut self.invoices);
        for change in invoice_changes(&invoices, state, &self.reason) {
            part.history.push(history_entry(self.now, change));
        }
        for (id, invoice) in invoices {
            part.invoices.push((id, Some(invoice)));
        }
        for (account_id, balance) in std::mem::take(&mut self.credits) {
            let Some(account) = state.accounts.get(&account_id) else {
                continue;
            };
            let updated = Account {
                credits: balance,
                ..account.clone()
            };
            let mut before = crate::model::Fields::new();
            before.insert("credits".into(), account.credits.into());
            let mut after = crate::model::Fields::new();
            after.insert("credits".into(), balance.into());
            let change = Change::new(
                Action::Update,
                Kind::Account,
                account_id.as_str(),
                account_id.as_str(),
                Some(before),
                Some(after),
                self.reason.as_str(),
            );
            part.history.push(history_entry(self.now, change));
            part.objects
                .push((Kind::Account, account_id, Some(to_fields(&updated))));
        }
        (!part.is_empty()).then_some(part)
    }
}

impl MakeParts for ImportParts {
    fn next_part(
        &mut self,
        _changes: &[Change],
        state: &State,
    ) -> Option<Result<Commit<'static>, StoreError>> {
        self.assets(state).or_else(|| self.rest(state)).map(Ok)
    }
}

/// The history of imported invoices: an invoice is not an object of its own
/// (contract 3.1 has no such kind), it is listed under its product's
/// `invoices` (as `state show PRODUCT` shows them). So each product whose
/// list changes gets one `update` of `invoices`, before and after, sorted;
/// an invoice moved to another product changes both lists.
fn invoice_changes(
    invoices: &BTreeMap<String, Invoice>,
    state: &State,
    reason: &str,
) -> Vec<Change> {
    let mut lists: BTreeMap<&str, (Vec<&str>, &str)> = BTreeMap::new();
    let mut imported: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, invoice) in invoices {
        lists
            .entry(invoice.product.as_str())
            .or_insert((Vec::new(), invoice.organization.as_str()));
        imported
            .entry(invoice.product.as_str())
            .or_default()
            .push(id.as_str());
        if let Some(old) = state.invoices.get(id) {
            lists
                .entry(old.product.as_str())
                .or_insert((Vec::new(), old.organization.as_str()));
        }
    }
    for (id, invoice) in &state.invoices {
        if let Some((before, _)) = lists.get_mut(invoice.product.as_str()) {
            before.push(id.as_str());
        }
    }
    let mut changes = Vec::new();
    for (product, (before, organization)) in lists {
        let mut after: Vec<&str> = before
            .iter()
            .copied()
            .filter(|id| !invoices.contains_key(*id))
            .chain(imported.get(product).into_iter().flatten().copied())
            .collect();
        after.sort_unstable();
        if after == before {
            continue;
        }
        let organization = state
            .products
            .get(product)
            .map_or(organization, |product| product.organization.as_str());
        let account = state
            .organizations
            .get(organization)
            .map_or("", |organization| organization.account.as_str());
        let list = |ids: &[&str]| {
            let mut fields = crate::model::Fields::new();
            fields.insert("invoices".into(), FieldValue::of(&ids));
            fields
        };
        changes.push(Change::new(
            Action::Update,
            Kind::Product,
            product,
            account,
            Some(list(&before)),
            Some(list(&after)),
            reason,
        ));
    }
    changes
}

/// The history entry of an imported change.
fn history_entry(now: Timestamp, change: Change) -> HistoryEntry {
    HistoryEntry {
        seq: 0,
        time: now,
        plan_id: "inventory-import".into(),
        actor: None,
        revision: None,
        change,
    }
}

/// Calls `each` with every record and its 1-based line number, in order:
/// JSON lines (read one line at a time) when the first non-blank character
/// is `{`, otherwise a YAML list. A record that does not parse is an error;
/// when there is any, only those errors are returned (and `each` is not
/// called past the first).
fn for_each_record(
    path: &str,
    text: &str,
    mut each: impl FnMut(usize, Record),
) -> Result<(), Vec<Diagnostic>> {
    let first = text.trim_start().chars().next();
    if first == Some('{') {
        let mut errors = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(line) {
                Ok(record) if errors.is_empty() => each(index + 1, record),
                Ok(_) => {}
                Err(error) => errors.push(Diagnostic::at(
                    path,
                    index + 1,
                    error.column(),
                    strip_position(&error.to_string()),
                )),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    } else if first.is_none() {
        Ok(())
    } else {
        // Each item's line: a YAML list item starts with `- ` at column 1.
        let item_lines: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, line)| line.starts_with("- ") || *line == "-")
            .map(|(index, _)| index + 1)
            .collect();
        match serde_yaml::from_str::<Vec<Record>>(text) {
            Ok(records) => {
                for (index, record) in records.into_iter().enumerate() {
                    each(item_lines.get(index).copied().unwrap_or(1), record);
                }
                Ok(())
            }
            Err(error) => {
                let (line, column) = error.location().map_or((1, 1), |l| (l.line(), l.column()));
                Err(vec![Diagnostic::at(
                    path,
                    line,
                    column,
                    strip_position(&error.to_string()),
                )])
            }
        }
    }
}

/// serde's messages end in "at line N column M"; the diagnostic says it
/// already.
fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(index) => message[..index].to_string(),
        None => message.to_string(),
    }
}
