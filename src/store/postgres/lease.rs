//! Leases on a PostgreSQL state (contract §5): how several `deed daemon`s on
//! one database agree on which of them applies.
//!
//! A lease is one row of `deed_leases(name, holder, generation,
//! expires_at)`. Every statement is a single `INSERT … ON CONFLICT DO
//! UPDATE … WHERE` or `UPDATE … WHERE` that compares against the database's
//! clock (`now()`), so the daemons' own clocks never matter:
//!
//! - **acquire**: taken when there is no row or its `expires_at` has passed;
//!   the generation is incremented on every takeover (1 for the first);
//! - **renew**: only by the same holder at the same generation, pushing
//!   `expires_at` one time-to-live ahead;
//! - **release** (clean shutdown): the holder expires its own row, so a
//!   standby takes over at its next poll rather than after the time-to-live.
//!
//! A leader's commits carry its generation as a [`Fence`]
//! ([`crate::store::Store::set_fence`]); see [`super::check_fence`]. This
//! module keeps its own connection, apart from the store's: it runs every
//! second or two for the daemon's whole life, and takes no advisory lock.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ::postgres::Client;

use super::{connect, db_error, redact, PostgresStore};
use crate::store::{Fence, StoreError};

/// The lease the daemons of one state compete for.
pub const DAEMON_LEASE: &str = "daemon";

/// Statements of the lease's connection give up after this (a lock held
/// by a long commit, a server that stopped answering), so that a tick never
/// outlives a time-to-live by much.
const STATEMENT_TIMEOUT: &str = "5s";

/// A lease as one process sees it after a tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// This process holds the lease, at `generation`, until at least
    /// `until` (its own clock: the time-to-live counted from before the
    /// statement was sent).
    Held { generation: i64, until: Instant },
    /// Another process holds the lease, unexpired.
    HeldBy { holder: String, generation: i64 },
    /// Nobody holds it (never taken, released, or expired).
    Free,
}

/// What a tick saw: the lease, and the state's version (`deed_meta`), which
/// every write to the state increments (`None` before the state exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub lease: LeaseState,
    pub state_version: Option<i64>,
}

/// One process's handle on a lease.
pub struct Lease {
    url: String,
    location: PathBuf,
    name: String,
    holder: String,
    ttl: Duration,
    client: Option<Client>,
    /// Whether `deed_leases` is known to exist.
    schema_ready: bool,
    /// The generation this process acquired, while it believes it holds it.
    held: Option<i64>,
}

impl Lease {
    /// A handle on lease `name` of the state at `url`, for `holder`; nothing
    /// is connected until the first tick.
    pub fn new(url: &str, name: &str, holder: &str, ttl: Duration) -> Lease {
        Lease {
            url: url.to_string(),
            location: PathBuf::from(redact(url)),
            name: name.to_string(),
            holder: holder.to_string(),
            ttl,
            client: None,
            schema_ready: false,
            held: None,
        }
    }

    /// The fence for commits made while holding the lease.
    pub fn fence(&self) -> Option<Fence> {
        self.held.map(|generation| Fence {
            lease: self.name.clone(),
            holder: self.holder.clone(),
            generation,
        })
    }

    /// Renews the lease if this process holds it, else takes it if it is
    /// free. Creates or migrates deed's tables first when `deed_leases` is
    /// missing (as any writer does; [`StoreError::InUse`] when another
    /// process holds the writer's lock meanwhile). On an error the
    /// connection is dropped and made again on the next call; the
    /// generation is kept, so a renewal after a short outage still works if
    /// nobody took over.
    pub fn acquire_or_renew(&mut self) -> Result<Observed, StoreError> {
        let started = Instant::now();
        let result = self.try_acquire_or_renew(started);
        if result.is_err() {
            self.client = None;
        }
        result
    }

    /// Reads the lease without competing for it (a `--dry-run` daemon).
    pub fn observe(&mut self) -> Result<Observed, StoreError> {
        let result = self.try_observe();
        if result.is_err() {
            self.client = None;
        }
        result
    }

    /// Gives the lease up (clean shutdown): expires it now, if this process
    /// still holds it, so that a standby takes over at once.
    pub fn release(&mut self) -> Result<(), StoreError> {
        let Some(generation) = self.held.take() else {
            return Ok(());
        };
        let (name, holder, location) = (
            self.name.clone(),
            self.holder.clone(),
            self.location.clone(),
        );
        let client = self.client()?;
        client
            .execute(
                "UPDATE deed_leases SET expires_at = now() \
                 WHERE name = $1 AND holder = $2 AND generation = $3",
                &[&name, &holder, &generation],
            )
            .map_err(|error| db_error(&location, &error))?;
        Ok(())
    }

    fn try_acquire_or_renew(&mut self, started: Instant) -> Result<Observed, StoreError> {
        if !self.schema_ready {
            if !self.leases_table_exists()? {
                // Migrates, under the writer's lock, then lets it go.
                drop(PostgresStore::open_for_writing(&self.url, false)?);
            }
            self.schema_ready = true;
        }
        let ttl = self.ttl.as_secs_f64();
        let (name, holder, location) = (
            self.name.clone(),
            self.holder.clone(),
            self.location.clone(),
        );
        let db = |error: ::postgres::Error| db_error(&location, &error);
        if let Some(generation) = self.held {
            let client = self.client()?;
            let renewed = client
                .query_opt(
                    "UPDATE deed_leases SET expires_at = now() + make_interval(secs => $4) \
                     WHERE name = $1 AND holder = $2 AND generation = $3 \
                     RETURNING generation",
                    &[&name, &holder, &generation, &ttl],
                )
                .map_err(db)?;
            if renewed.is_none() {
                self.held = None;
            }
        }
        if self.held.is_none() {
            let client = self.client()?;
            let acquired = client
                .query_opt(
                    "INSERT INTO deed_leases AS lease (name, holder, generation, expires_at) \
                     VALUES ($1, $2, 1, now() + make_interval(secs => $3)) \
                     ON CONFLICT (name) DO UPDATE \
                     SET holder = excluded.holder, generation = lease.generation + 1, \
                         expires_at = excluded.expires_at \
                     WHERE lease.expires_at <= now() \
                     RETURNING generation",
                    &[&name, &holder, &ttl],
                )
                .map_err(db)?;
            if let Some(row) = acquired {
                self.held = Some(row.try_get(0).map_err(db)?);
            }
        }
        let lease = match self.held {
            Some(generation) => LeaseState::Held {
                generation,
                until: started + self.ttl,
            },
            None => self.read_lease()?,
        };
        let state_version = self.state_version()?;
        Ok(Observed {
            lease,
            state_version,
        })
    }

    fn try_observe(&mut self) -> Result<Observed, StoreError> {
        if !self.schema_ready {
            if !self.leases_table_exists()? {
                return Ok(Observed {
                    lease: LeaseState::Free,
                    state_version: None,
                });
            }
            self.schema_ready = true;
        }
        let lease = self.read_lease()?;
        let state_version = self.state_version()?;
        Ok(Observed {
            lease,
            state_version,
        })
    }

    /// The lease row as it is now.
    fn read_lease(&mut self) -> Result<LeaseState, StoreError> {
        let (name, location) = (self.name.clone(), self.location.clone());
        let db = |error: ::postgres::Error| db_error(&location, &error);
        let row = self
            .client()?
            .query_opt(
                "SELECT holder, generation, expires_at > now() FROM deed_leases WHERE name = $1",
                &[&name],
            )
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(LeaseState::Free);
        };
        let holder: String = row.try_get(0).map_err(db)?;
        let generation: i64 = row.try_get(1).map_err(db)?;
        let live: bool = row.try_get(2).map_err(db)?;
        Ok(if live {
            LeaseState::HeldBy { holder, generation }
        } else {
            LeaseState::Free
        })
    }

    fn state_version(&mut self) -> Result<Option<i64>, StoreError> {
        let location = self.location.clone();
        let db = |error: ::postgres::Error| db_error(&location, &error);
        let row = self
            .client()?
            .query_opt("SELECT version FROM deed_meta", &[])
            .map_err(db)?;
        row.map(|row| row.try_get(0).map_err(db)).transpose()
    }

    fn leases_table_exists(&mut self) -> Result<bool, StoreError> {
        let location = self.location.clone();
        let db = |error: ::postgres::Error| db_error(&location, &error);
        let row = self
            .client()?
            .query_one("SELECT to_regclass('deed_leases') IS NOT NULL", &[])
            .map_err(db)?;
        row.try_get(0).map_err(db)
    }

    /// The connection, made when missing.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        match &mut self.client {
            Some(client) => Ok(client),
            slot => {
                let mut client = connect(&self.url, &self.location)?;
                client
                    .batch_execute(&format!("SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
                    .map_err(|error| db_error(&self.location, &error))?;
                Ok(slot.insert(client))
            }
        }
    }

    /// The location, password hidden.
    pub fn location(&self) -> &Path {
        &self.location
    }
}
