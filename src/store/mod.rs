//! The state store: where deed keeps objects, inventory, history and outbox.
//!
//! [`Store`] is the narrow interface every backend implements: load the whole
//! [`State`], commit a [`Commit`] atomically, read the history and the outbox,
//! dump. sled is the embedded default ([`sled_store`]); a dump file opened
//! with `--state FILE` is a read-only store ([`dump`]).
//!
//! Architecture invariant: the store knows nothing of specs or plans beyond
//! the records it keeps; compare-and-set decisions are made by
//! [`crate::apply`] against the state this module loaded while holding the
//! writer's lock.

pub mod dump;
pub mod sled_store;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::{Fields, Invoice, Kind, State, Timestamp};
use crate::plan::Change;

/// The version of the stored layout. Opening a state written with a newer
/// one fails.
pub const SCHEMA_VERSION: u32 = 1;

/// One applied change, as the history keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Position in the history, from 1, without gaps.
    pub seq: u64,
    pub time: Timestamp,
    pub plan_id: String,
    pub actor: Option<String>,
    /// The git revision of the specs, when they are in a git repository.
    pub revision: Option<String>,
    pub change: Change,
}

/// A queued notification (contract 2.8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable: the same event for the same recipient has the same id.
    pub id: String,
    pub time: Timestamp,
    /// Recipient email.
    pub to: String,
    /// `invitation`, `transfer`, `move`, `removal`.
    pub event: String,
    pub kind: Kind,
    pub object: String,
    pub message: String,
    pub change_id: String,
    pub delivered: bool,
}

/// Everything one apply (or import, or accept) writes, committed at once.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    /// Objects to write (`Some`) or delete (`None`), as their full fields.
    pub objects: Vec<(Kind, String, Option<Fields>)>,
    /// Invoices to write or delete.
    pub invoices: Vec<(String, Option<Invoice>)>,
    /// History entries to append; the store assigns `seq`.
    pub history: Vec<HistoryEntry>,
    /// Notifications to add (or replace, by id).
    pub notifications: Vec<Notification>,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
            && self.invoices.is_empty()
            && self.history.is_empty()
            && self.notifications.is_empty()
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another deed process holds the state.
    #[error("state {path} is in use by another deed process (use --wait to wait for it)")]
    InUse { path: PathBuf },
    /// The state was written by a newer deed.
    #[error("state {path} has schema version {found}, newer than this deed understands ({supported}); upgrade deed")]
    NewerSchema { path: PathBuf, found: u32, supported: u32 },
    /// A write to a read-only store (a dump opened with `--state FILE`).
    #[error("state {path} is a dump, opened read-only: it cannot be changed")]
    ReadOnly { path: PathBuf },
    /// A record that does not decode.
    #[error("state {path}: corrupt record {key}: {message}")]
    Corrupt { path: PathBuf, key: String, message: String },
    /// `state restore` into a state that already holds objects.
    #[error("state {path} is not empty: restore only into an empty state")]
    NotEmpty { path: PathBuf },
    /// A dump file that cannot be read.
    #[error("{path}:{line}: {message}")]
    BadDump { path: PathBuf, line: usize, message: String },
    #[error("state {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The interface every backend implements.
pub trait Store {
    /// Everything: objects and invoices.
    fn load(&self) -> Result<State, StoreError>;
    /// Writes a commit atomically: all of it or nothing.
    fn commit(&self, commit: Commit) -> Result<(), StoreError>;
    /// The last `limit` history entries (all without a limit), oldest first.
    fn history(&self, limit: Option<usize>) -> Result<Vec<HistoryEntry>, StoreError>;
    /// All notifications, delivered or not, sorted by time then id.
    fn outbox(&self) -> Result<Vec<Notification>, StoreError>;
    /// Marks notifications delivered, atomically.
    fn mark_delivered(&self, ids: &[String]) -> Result<(), StoreError>;
    /// Writes a full-fidelity dump (see [`dump`]).
    fn dump(&self, out: &mut dyn std::io::Write) -> Result<(), StoreError>;
}
