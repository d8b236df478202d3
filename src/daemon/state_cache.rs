//! Keeps the state the last reconcile loaded, so that the next one (an
//! edited file, a tick) does not decode the whole store again.
//!
//! The cached state is used only while the history's last sequence number
//! is the one it was loaded at (or the one the daemon's own commit left),
//! checked with the store open (under its lock): every write to the
//! objects — apply, inventory import, invitation accept, restore — appends
//! to the history (contract 3.3, §1 Inventory). The daemon's own commits are
//! written into the cached state too (not loaded again), and the accounts
//! they touched are remembered for [`super::incremental`]. The compare-and-set
//! of [`crate::apply`] runs against the cached state, which is exactly what
//! is in the store.
//!
//! Besides, the cache remembers the state folder's fingerprint (file sizes
//! and times) after the daemon last closed it: while it is unchanged, no
//! other process opened the state, and a plan can be made without opening
//! it (opening a large sled state takes a second).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::model::{Fields, Invoice, Kind, State};
use crate::plan::partial::StateIndex;
use crate::store::{Commit, Fence, HistoryEntry, Notification, Store, StoreError};

/// Commits larger than this are not followed in memory: the state is
/// loaded again after them.
const FOLLOW_LIMIT: usize = 200_000;

/// The state at a history position, with its index.
#[derive(Default)]
pub struct StateCache {
    loaded: Option<Cached>,
    /// Written by the daemon's own commit, not yet in `loaded`.
    written: Option<Written>,
    /// Increments whenever the state is loaded from the store: plans of an
    /// older generation cannot be patched.
    generation: u64,
    /// Accounts the daemon's own commits touched since
    /// [`StateCache::take_touched`].
    touched: BTreeSet<String>,
    /// The state folder's fingerprint after the daemon last closed it.
    pub closed_at: Option<[u8; 32]>,
}

struct Cached {
    seq: Option<u64>,
    state: Arc<State>,
    index: Arc<StateIndex>,
}

struct Written {
    /// The history position after the commit.
    seq: Option<u64>,
    objects: Vec<(Kind, String, Option<Fields>)>,
    invoices: Vec<(String, Option<Invoice>)>,
}

/// A state served by the cache.
#[derive(Clone)]
pub struct Snapshot {
    pub state: Arc<State>,
    pub index: Arc<StateIndex>,
    pub generation: u64,
}

impl StateCache {
    /// The cached state without asking the store, for a caller that knows
    /// nobody else wrote it; `None` when a commit of the daemon's own is
    /// still to be written in, or nothing is cached.
    pub fn peek(&mut self) -> Option<Snapshot> {
        self.follow_written();
        let cached = self.loaded.as_ref()?;
        Some(Snapshot {
            state: Arc::clone(&cached.state),
            index: Arc::clone(&cached.index),
            generation: self.generation,
        })
    }

    /// The state at the history position `seq`: from the cache if it is
    /// there, else loaded.
    fn at(&mut self, seq: Option<u64>, store: &dyn Store) -> Result<Snapshot, StoreError> {
        if let Some(written) = &self.written {
            if written.seq != seq {
                self.written = None;
                self.loaded = None;
            }
        }
        self.follow_written();
        if let Some(cached) = &self.loaded {
            if cached.seq == seq {
                return Ok(Snapshot {
                    state: Arc::clone(&cached.state),
                    index: Arc::clone(&cached.index),
                    generation: self.generation,
                });
            }
        }
        self.loaded = None;
        let state = store.load()?;
        let index = StateIndex::of(&state);
        self.generation += 1;
        self.touched.clear();
        self.loaded = Some(Cached {
            seq,
            state: Arc::new(state),
            index: Arc::new(index),
        });
        self.peek().ok_or_else(unreachable_store_error)
    }

    /// Writes the daemon's own last commit into the cached state, once no
    /// reconcile holds it any more (no copy is made).
    fn follow_written(&mut self) {
        let Some(written) = self.written.take() else {
            return;
        };
        let Some(cached) = self.loaded.as_mut() else {
            return;
        };
        let state = Arc::make_mut(&mut cached.state);
        let index = Arc::make_mut(&mut cached.index);
        match write_commit(state, index, &written.objects, &written.invoices) {
            Ok(touched) => {
                self.touched.extend(touched);
                cached.seq = written.seq;
            }
            Err(_) => self.loaded = None,
        }
    }

    /// The accounts the daemon's own commits touched since the last call,
    /// and the generation they belong to.
    pub fn take_touched(&mut self) -> (u64, BTreeSet<String>) {
        self.follow_written();
        (self.generation, std::mem::take(&mut self.touched))
    }
}

/// Writes a commit's objects and invoices into `state` as the store wrote
/// them, keeping `index` right; returns the accounts touched (where each
/// object was, and where it is now).
pub(crate) fn write_commit(
    state: &mut State,
    index: &mut StateIndex,
    objects: &[(Kind, String, Option<Fields>)],
    invoices: &[(String, Option<Invoice>)],
) -> Result<BTreeSet<String>, String> {
    let mut touched = BTreeSet::new();
    for (kind, id, fields) in objects {
        touched.extend(index.forget(state, *kind, id));
        crate::store::write_object(state, *kind, id, fields.as_ref())?;
        touched.extend(index.record(state, *kind, id));
    }
    for (id, invoice) in invoices {
        touched.extend(index.forget_invoice(state, id));
        state.invoices.remove(id);
        if let Some(invoice) = invoice {
            state.invoices.insert(id.clone(), invoice.clone());
        }
        touched.extend(index.record_invoice(state, id));
    }
    index.recount(state);
    Ok(touched)
}

fn unreachable_store_error() -> StoreError {
    StoreError::Unsupported {
        location: "cache".to_string(),
        message: "the cached state vanished".to_string(),
    }
}

/// A store whose state comes from a [`StateCache`] when the history has not
/// moved; everything else goes to the store.
pub struct CachingStore<'a> {
    inner: &'a dyn Store,
    cache: RefCell<&'a mut StateCache>,
}

impl<'a> CachingStore<'a> {
    pub fn new(inner: &'a dyn Store, cache: &'a mut StateCache) -> CachingStore<'a> {
        CachingStore {
            inner,
            cache: RefCell::new(cache),
        }
    }

    fn last_seq(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.inner.history(Some(1))?.last().map(|entry| entry.seq))
    }

    /// The state now in the store, from the cache when it has not moved.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let seq = self.last_seq()?;
        self.cache.borrow_mut().at(seq, self.inner)
    }
}

impl Store for CachingStore<'_> {
    fn load(&self) -> Result<State, StoreError> {
        Ok(State::clone(&self.snapshot()?.state))
    }

    fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.cache.borrow_mut().written = None;
        if commit.records_hint() > FOLLOW_LIMIT {
            // Too large to keep a copy of: loaded again next time.
            self.cache.borrow_mut().loaded = None;
            return self.inner.commit(commit);
        }
        let whole = match commit.into_whole() {
            Ok(whole) => whole,
            Err(error) => {
                self.cache.borrow_mut().loaded = None;
                return Err(error);
            }
        };
        let (objects, invoices) = (whole.objects.clone(), whole.invoices.clone());
        let result = self.inner.commit(whole);
        let mut cache = self.cache.borrow_mut();
        match result.and_then(|()| self.last_seq()) {
            Ok(seq) => {
                cache.written = Some(Written {
                    seq,
                    objects,
                    invoices,
                });
                Ok(())
            }
            Err(error) => {
                cache.loaded = None;
                Err(error)
            }
        }
    }

    fn history(&self, limit: Option<usize>) -> Result<Vec<HistoryEntry>, StoreError> {
        self.inner.history(limit)
    }

    fn outbox(&self) -> Result<Vec<Notification>, StoreError> {
        self.inner.outbox()
    }

    fn mark_delivered(&self, ids: &[String]) -> Result<(), StoreError> {
        self.cache.borrow_mut().loaded = None;
        self.inner.mark_delivered(ids)
    }

    fn dump(&self, out: &mut dyn std::io::Write) -> Result<(), StoreError> {
        self.inner.dump(out)
    }

    fn set_fence(&self, fence: Option<Fence>) {
        self.inner.set_fence(fence)
    }
}
