//! Keeps the state the last reconcile loaded, so that the next one (an
//! edited file, a tick) does not decode the whole store again.
//!
//! The cached state is used only while the history's last sequence number
//! is the one it was loaded at, checked with the store open (under its
//! lock): every write to the objects — apply, inventory import, invitation
//! accept, restore — appends to the history (contract 3.3, §1 Inventory).
//! The daemon's own commit drops the cache. A state served from the cache
//! is a copy: the compare-and-set of [`crate::apply`] runs against exactly
//! what is in the store.

use std::cell::RefCell;

use crate::model::State;
use crate::store::{Commit, Fence, HistoryEntry, Notification, Store, StoreError};

/// The state at a history position.
#[derive(Default)]
pub struct StateCache {
    loaded: Option<(Option<u64>, State)>,
}

/// A store whose [`Store::load`] answers from a [`StateCache`] when the
/// history has not moved; everything else goes to the store.
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
}

impl Store for CachingStore<'_> {
    fn load(&self) -> Result<State, StoreError> {
        let seq = self.last_seq()?;
        let mut cache = self.cache.borrow_mut();
        if let Some((at, state)) = &cache.loaded {
            if *at == seq {
                return Ok(state.clone());
            }
        }
        cache.loaded = None;
        let state = self.inner.load()?;
        cache.loaded = Some((seq, state.clone()));
        Ok(state)
    }

    fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.cache.borrow_mut().loaded = None;
        self.inner.commit(commit)
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
