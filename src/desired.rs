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
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

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
    pub origins: Origins,
    /// The files that declare each account, sorted.
    pub account_files: BTreeMap<String, Vec<String>>,
}

impl Desired {
    /// Where an object was declared, if the specs declare it.
    pub fn origin(&self, kind: Kind, id: &str) -> Option<&Origin> {
        self.origins.get(kind, id)
    }
}

/// Where each object was declared: a list in declaration order, and an
/// index made on the first lookup. `validate` and a plan without changes
/// never look an origin up, so they never pay for a map of half a million
/// entries (most of the cost of inserting into one is cache misses).
///
/// The index maps a 64-bit hash of (kind, id) to the last entry with that
/// hash; a lookup checks the entry's key, and only in the case of two keys
/// with one hash falls back to a scan. Inserting the same key twice: the
/// last origin wins, as in a map.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    list: Vec<((Kind, String), Origin)>,
    index: OnceLock<HashMap<u64, usize, OriginHasher>>,
}

impl Origins {
    pub fn insert(&mut self, key: (Kind, String), origin: Origin) {
        let hash = key_hash(key.0, &key.1);
        let position = self.list.len();
        self.list.push((key, origin));
        if let Some(index) = self.index.get_mut() {
            index.insert(hash, position);
        }
    }

    /// Where `id` of `kind` was declared (its last declaration).
    pub fn get(&self, kind: Kind, id: &str) -> Option<&Origin> {
        let index = self.index.get_or_init(|| {
            let mut index = HashMap::with_capacity_and_hasher(self.list.len(), Default::default());
            for (position, ((kind, id), _)) in self.list.iter().enumerate() {
                index.insert(key_hash(*kind, id), position);
            }
            index
        });
        let position = *index.get(&key_hash(kind, id))?;
        match self.list.get(position) {
            Some(((found_kind, found_id), origin)) if *found_kind == kind && found_id == id => {
                Some(origin)
            }
            // Another key with the same hash came later: look for this one.
            _ => self
                .list
                .iter()
                .rev()
                .find(|((found_kind, found_id), _)| *found_kind == kind && found_id == id)
                .map(|(_, origin)| origin),
        }
    }

    /// Number of origins recorded (a key declared twice counts twice).
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn reserve(&mut self, additional: usize) {
        self.list.reserve(additional);
    }
}

impl IntoIterator for Origins {
    type Item = ((Kind, String), Origin);
    type IntoIter = std::vec::IntoIter<((Kind, String), Origin)>;
    /// Every origin in declaration order (a key declared twice comes twice).
    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

/// `std`'s SipHash with its fixed keys (the same in every instance made by
/// `new`: the index lives in memory only). It does not fold case, so ids
/// that differ only in case do not collide.
fn key_hash(kind: Kind, id: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    kind.hash(&mut hasher);
    id.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize) -> Origin {
        Origin {
            path: Arc::from("a.yaml"),
            line,
            column: 1,
        }
    }

    #[test]
    fn origins_answer_the_last_declaration_before_and_after_the_index_is_made() {
        let mut origins = Origins::default();
        origins.insert((Kind::User, "bob@x.com".into()), at(1));
        origins.insert((Kind::Group, "bob@x.com".into()), at(2));
        origins.insert((Kind::User, "bob@x.com".into()), at(3));
        assert_eq!(
            origins.get(Kind::User, "bob@x.com").map(|o| o.line),
            Some(3)
        );
        assert_eq!(
            origins.get(Kind::Group, "bob@x.com").map(|o| o.line),
            Some(2)
        );
        assert_eq!(origins.get(Kind::User, "Bob@x.com"), None);
        // The index exists now; later inserts keep it right.
        origins.insert((Kind::User, "bob@x.com".into()), at(4));
        origins.insert((Kind::User, "eve@x.com".into()), at(5));
        assert_eq!(
            origins.get(Kind::User, "bob@x.com").map(|o| o.line),
            Some(4)
        );
        assert_eq!(
            origins.get(Kind::User, "eve@x.com").map(|o| o.line),
            Some(5)
        );
        assert_eq!(origins.get(Kind::Asset, "eve@x.com"), None);
        assert_eq!(origins.len(), 5);
    }
}
