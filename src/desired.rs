//! The desired model: what the specs ask for, validated and merged across
//! fragments, ready for the planner.
//!
//! [`crate::spec`] builds it; [`crate::plan`] compares it with the
//! [`State`](crate::model::State). It reuses the objects of
//! [`crate::model`] where the specs declare exactly those fields, and adds what
//! only specs say: how a user is moved, pinned assets, `reassign` rules, and
//! where each object was declared.
//!
//! Architecture invariant: this module does no I/O.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use crate::model::{
    AssetKind, Duration, Group, Kind, License, Membership, Organization, Owner, Product, Role,
};

/// Where something was declared: a spec file (relative to the specs
/// directory) and a 1-based line and column. The objects of one file share
/// one path (a model of 500k objects would otherwise hold 500k copies).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub path: Arc<str>,
    pub line: usize,
    pub column: usize,
}

/// An account as the specs declare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredAccount {
    pub domains: Vec<String>,
    pub hub: Option<String>,
    pub connections: Vec<String>,
    pub invite_ttl: Duration,
    pub merged_into: Option<String>,
    /// Who receives what a removed user leaves behind; `None`: the owner.
    pub successor: Option<String>,
    /// The user declared with `role: owner`; `None` only for a merged account.
    pub owner: Option<String>,
}

/// A user as the specs declare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredUser {
    pub account: String,
    pub role: Role,
    pub name: Option<String>,
    /// How to move the user when they arrive from another account.
    pub move_rule: Option<MoveRule>,
}

/// `move:` of a user (contract 2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoveRule {
    /// A user of the source account; `None`: the source account's owner.
    pub successor: Option<String>,
    /// Asset kinds that move with the user.
    pub bring: Vec<AssetKind>,
    /// Folder on the destination that receives moved files; `None`:
    /// `Moved from <source>`.
    pub folder: Option<String>,
}

/// A pinned asset (`assets:` of a fragment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub account: String,
    pub owner: Owner,
    pub tags: BTreeMap<String, String>,
}

/// A `reassign` rule of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReassignRule {
    /// 1-based position among the account's rules, in sorted file order.
    pub number: usize,
    pub from: Owner,
    pub to: Owner,
    /// Asset kinds the rule applies to; empty: every kind.
    pub kinds: Vec<AssetKind>,
    pub tag: BTreeMap<String, String>,
}

/// The hasher of [`Desired::origins`]: the fast, deterministic hash the
/// spec loader uses for its own maps of ids (a model holds an origin per
/// object, and SipHash showed in profiles of `validate`).
pub type OriginHasher = BuildHasherDefault<crate::spec::KeyHasher>;

/// Everything the specs declare, merged and validated.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub accounts: BTreeMap<String, DesiredAccount>,
    pub users: BTreeMap<String, DesiredUser>,
    pub groups: BTreeMap<String, Group>,
    pub memberships: BTreeMap<String, Membership>,
    pub organizations: BTreeMap<String, Organization>,
    pub products: BTreeMap<String, Product>,
    pub licenses: BTreeMap<String, License>,
    pub pins: BTreeMap<String, Pin>,
    /// Rules by account.
    pub reassign: BTreeMap<String, Vec<ReassignRule>>,
    /// Where each object was declared (accounts: their header).
    pub origins: HashMap<(Kind, String), Origin, OriginHasher>,
    /// The files that declare each account, sorted.
    pub account_files: BTreeMap<String, Vec<String>>,
}

impl Desired {
    /// Where an object was declared, if the specs declare it.
    pub fn origin(&self, kind: Kind, id: &str) -> Option<&Origin> {
        self.origins.get(&(kind, id.to_string()))
    }
}
