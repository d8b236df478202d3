//! The inventory: what users create (assets), what billing produces
//! (invoices) and the credits an account holds, observed rather than
//! declared. `deed inventory import FILE` parses JSON lines or a YAML list of
//! records into a [`Commit`], all or nothing.
//!
//! Architecture invariant: pure; the caller reads the file and commits.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::diagnostic::Diagnostic;
use crate::model::{
    to_fields, validate_asset_id, validate_email, validate_object_id, Account, Asset, Invoice,
    Kind, Owner, State, Timestamp,
};
use crate::plan::{Action, Change};
use crate::store::{Commit, HistoryEntry};

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
pub struct Import {
    pub commit: Commit,
    pub assets: usize,
    pub invoices: usize,
    pub credits: usize,
}

/// Parses `text` (from `path`, for messages) against `state`. Every bad
/// record is reported with its line; any error imports nothing.
pub fn parse_import(
    path: &str,
    text: &str,
    state: &State,
    now: Timestamp,
) -> Result<Import, Vec<Diagnostic>> {
    let records = parse_records(path, text)?;
    let mut errors = Vec::new();
    let mut assets: BTreeMap<String, Asset> = BTreeMap::new();
    let mut invoices: BTreeMap<String, Invoice> = BTreeMap::new();
    let mut credits: BTreeMap<String, i64> = BTreeMap::new();
    for (line, record) in records {
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
                    continue;
                };
                if let Err(message) = validate_asset_id(&id) {
                    error(message);
                    continue;
                }
                let Some(account) = known_account(&mut error) else {
                    continue;
                };
                let Some(owner_text) = record.owner.as_deref() else {
                    error(format!("asset {id}: missing field `owner`"));
                    continue;
                };
                let owner: Owner = match owner_text.parse() {
                    Ok(owner) => owner,
                    Err(message) => {
                        error(format!("asset {id}: {message}"));
                        continue;
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
                    continue;
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
                        tags: record.tags.clone().unwrap_or_default(),
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
                    continue;
                };
                if let Err(message) = validate_object_id(&id) {
                    error(format!("invoice: {message}"));
                    continue;
                }
                if !state.organizations.contains_key(&organization) {
                    error(format!(
                        "invoice {id}: unknown organization `{organization}`"
                    ));
                    continue;
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
                    continue;
                };
                let Some(balance) = record.balance else {
                    error("credits: missing field `balance`".into());
                    continue;
                };
                credits.insert(account, balance);
            }
            other => error(format!(
                "unknown record type `{other}` (expected asset, invoice or credits)"
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut commit = Commit::default();
    let history = |action: Action,
                   kind: Kind,
                   object: &str,
                   account: &str,
                   before: Option<crate::model::Fields>,
                   after: Option<crate::model::Fields>| HistoryEntry {
        seq: 0,
        time: now,
        plan_id: "inventory-import".into(),
        actor: None,
        revision: None,
        change: Change::new(
            action,
            kind,
            object,
            account,
            before,
            after,
            format!("inventory import of {path}"),
        ),
    };
    let (asset_count, invoice_count, credit_count) = (assets.len(), invoices.len(), credits.len());
    for (id, asset) in assets {
        let before = state.assets.get(&id);
        if before == Some(&asset) {
            continue;
        }
        let action = if before.is_some() {
            Action::Update
        } else {
            Action::Create
        };
        let entry = history(
            action,
            Kind::Asset,
            &id,
            &asset.account,
            before.map(to_fields),
            Some(to_fields(&asset)),
        );
        commit.history.push(entry);
        commit
            .objects
            .push((Kind::Asset, id, Some(to_fields(&asset))));
    }
    for (id, invoice) in invoices {
        if state.invoices.get(&id) != Some(&invoice) {
            commit.invoices.push((id, Some(invoice)));
        }
    }
    for (account_id, balance) in credits {
        let Some(account) = state.accounts.get(&account_id) else {
            continue;
        };
        if account.credits == balance {
            continue;
        }
        let updated = Account {
            credits: balance,
            ..account.clone()
        };
        let mut before = serde_json::Map::new();
        before.insert("credits".into(), account.credits.into());
        let mut after = serde_json::Map::new();
        after.insert("credits".into(), balance.into());
        commit.history.push(history(
            Action::Update,
            Kind::Account,
            &account_id,
            &account_id,
            Some(before),
            Some(after),
        ));
        commit
            .objects
            .push((Kind::Account, account_id, Some(to_fields(&updated))));
    }
    Ok(Import {
        commit,
        assets: asset_count,
        invoices: invoice_count,
        credits: credit_count,
    })
}

/// Records with their 1-based line numbers: JSON lines when the first
/// non-blank character is `{`, otherwise a YAML list.
fn parse_records(path: &str, text: &str) -> Result<Vec<(usize, Record)>, Vec<Diagnostic>> {
    let first = text.trim_start().chars().next();
    if first == Some('{') {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(line) {
                Ok(record) => records.push((index + 1, record)),
                Err(error) => errors.push(Diagnostic::at(
                    path,
                    index + 1,
                    error.column(),
                    strip_position(&error.to_string()),
                )),
            }
        }
        if errors.is_empty() {
            Ok(records)
        } else {
            Err(errors)
        }
    } else if first.is_none() {
        Ok(Vec::new())
    } else {
        // Each item's line: a YAML list item starts with `- ` at column 1.
        let item_lines: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, line)| line.starts_with("- ") || *line == "-")
            .map(|(index, _)| index + 1)
            .collect();
        match serde_yaml::from_str::<Vec<Record>>(text) {
            Ok(records) => Ok(records
                .into_iter()
                .enumerate()
                .map(|(index, record)| (item_lines.get(index).copied().unwrap_or(1), record))
                .collect()),
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
