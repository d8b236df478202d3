//! Which daemon applies (contract §5). On a PostgreSQL state several
//! daemons may run; a thread per daemon competes for the state's lease
//! ([`crate::store::postgres::lease`]): the holder is the leader and
//! reconciles, the others are standbys that plan read-only (as `--dry-run`)
//! and name the leader on `/status`. The leader renews every
//! [`RENEW_EVERY`]; a standby tries to take the lease every
//! [`POLL_EVERY`]; the lease lives [`TTL`], so a leader killed without a
//! word is replaced within `TTL + POLL_EVERY` (7 s), and one that stops
//! cleanly releases the lease for a standby to take at its next poll.
//!
//! A sled state is one process's: its daemon always leads, without a lease.
//! A `--dry-run` daemon never competes; it watches who leads.
//!
//! Safety does not rest on this thread's timing: the leader's commits are
//! fenced by its lease generation in their own transaction
//! ([`crate::store::Fence`]), so a leader that lost its lease without
//! noticing (paused, cut off) has its next commit refused.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::postgres::lease::{Lease, LeaseState, Observed, DAEMON_LEASE};
use crate::store::Fence;

/// How long a lease lives without renewal.
pub const TTL: Duration = Duration::from_secs(6);
/// How often the leader renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a standby tries to take the lease.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// This daemon's part, as the loop and `/status` see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// This daemon applies. `fence` is `None` on sled (no lease: one
    /// process); on PostgreSQL it is the lease, valid until `until`.
    Leader {
        fence: Option<Fence>,
        until: Option<Instant>,
    },
    /// Another daemon applies (`leader`, when one holds the lease now);
    /// this one plans read-only.
    Standby { leader: Option<String> },
}

/// What the election thread publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub role: Role,
    /// The state's version (`deed_meta`) at the last tick: it moves with
    /// every write to the state, by anyone. `None` on sled.
    pub state_version: Option<i64>,
}

impl Leadership {
    /// A sled daemon's: always the leader.
    pub fn alone() -> Leadership {
        Leadership {
            role: Role::Leader {
                fence: None,
                until: None,
            },
            state_version: None,
        }
    }

    /// Before the first tick: not leading, leader unknown.
    pub fn unknown() -> Leadership {
        Leadership {
            role: Role::Standby { leader: None },
            state_version: None,
        }
    }

    /// The role now: a lease whose time-to-live passed without a renewal
    /// (the election thread is stuck on an unanswering server) no longer
    /// makes this daemon the leader.
    pub fn current(&self) -> Role {
        match &self.role {
            Role::Leader {
                until: Some(until), ..
            } if Instant::now() >= *until => Role::Standby { leader: None },
            role => role.clone(),
        }
    }
}

/// This daemon's name in the lease and on `/status`: host, process id and
/// the address it listens on, e.g. `web-1/4242/10.0.0.5:9477`.
pub fn holder_id(address: &str) -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            std::fs::read_to_string(path)
                .ok()
                .map(|text| text.trim().to_string())
                .filter(|text| !text.is_empty())
        })
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|host| !host.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}/{}/{address}", std::process::id())
}

/// The election thread of a PostgreSQL daemon.
pub struct Election {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Election {
    /// Starts competing for the lease of the state at `url` as `holder`
    /// (only watching it when `compete` is false), publishing every change
    /// on `publish`.
    pub fn start(
        url: &str,
        holder: &str,
        compete: bool,
        publish: watch::Sender<Leadership>,
    ) -> std::io::Result<Election> {
        let (stop, stopped) = mpsc::channel();
        let lease = Lease::new(url, DAEMON_LEASE, holder, TTL);
        let thread = std::thread::Builder::new()
            .name("deed-election".to_string())
            .spawn(move || elect(lease, compete, publish, stopped))?;
        Ok(Election { stop, thread })
    }

    /// Stops competing and releases the lease if this daemon holds it, so
    /// that a standby takes over at once (blocking; call once no reconcile
    /// runs).
    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::warn!("the election thread failed");
        }
    }
}

fn elect(
    mut lease: Lease,
    compete: bool,
    publish: watch::Sender<Leadership>,
    stopped: mpsc::Receiver<()>,
) {
    let mut first = true;
    let mut last_error: Option<String> = None;
    loop {
        let tick = if compete {
            lease.acquire_or_renew()
        } else {
            lease.observe()
        };
        let previous = publish.borrow().clone();
        let next = match tick {
            Ok(observed) => {
                if last_error.take().is_some() {
                    tracing::info!("the lease of {} answers again", lease.location().display());
                }
                from_observed(&lease, observed)
            }
            Err(error) => {
                let message = error.to_string();
                if last_error.as_ref() != Some(&message) {
                    tracing::warn!("cannot reach the lease: {message}; trying again");
                    last_error = Some(message);
                }
                // Keep what was known; a leader's lease runs out by itself
                // ([`Leadership::current`]).
                let mut kept = previous.clone();
                kept.role = kept.current();
                kept
            }
        };
        log_change(&previous.current(), &next.role, first);
        if first || next != previous {
            publish.send_replace(next.clone());
            first = false;
        }
        let wait = match next.role {
            Role::Leader { .. } => RENEW_EVERY,
            Role::Standby { .. } => POLL_EVERY,
        };
        match stopped.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if lease.fence().is_some() {
        match lease.release() {
            Ok(()) => tracing::info!("released the lease: a standby takes over"),
            Err(error) => tracing::warn!(
                "cannot release the lease ({error}): a standby takes over once it expires, within {} s",
                TTL.as_secs()
            ),
        }
    }
}

fn from_observed(lease: &Lease, observed: Observed) -> Leadership {
    let role = match observed.lease {
        LeaseState::Held { until, .. } => Role::Leader {
            fence: lease.fence(),
            until: Some(until),
        },
        LeaseState::HeldBy { holder, .. } => Role::Standby {
            leader: Some(holder),
        },
        LeaseState::Free => Role::Standby { leader: None },
    };
    Leadership {
        role,
        state_version: observed.state_version,
    }
}

fn log_change(previous: &Role, next: &Role, first: bool) {
    let generation = |role: &Role| match role {
        Role::Leader {
            fence: Some(fence), ..
        } => Some(fence.generation),
        _ => None,
    };
    match (previous, next) {
        (Role::Leader { .. }, Role::Leader { .. }) if generation(previous) == generation(next) => {}
        (_, Role::Leader { .. }) => tracing::info!(
            generation = generation(next),
            "leading: this daemon holds the lease (generation {}) and applies",
            generation(next).unwrap_or_default()
        ),
        (Role::Leader { .. }, Role::Standby { leader }) => tracing::warn!(
            leader = leader.as_deref(),
            "lost the lease{}: standing by, planning read-only",
            leader
                .as_deref()
                .map(|leader| format!(" to {leader}"))
                .unwrap_or_default()
        ),
        (Role::Standby { leader: before }, Role::Standby { leader }) => {
            if first || before != leader {
                match leader {
                    Some(leader) => tracing::info!(
                        leader = leader.as_str(),
                        "standing by: {leader} leads; planning read-only"
                    ),
                    None if first => {
                        tracing::info!("standing by: no daemon holds the lease right now")
                    }
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_whose_lease_ran_out_is_a_standby() {
        let fence = Fence {
            lease: DAEMON_LEASE.to_string(),
            holder: "me".to_string(),
            generation: 3,
        };
        let live = Leadership {
            role: Role::Leader {
                fence: Some(fence.clone()),
                until: Some(Instant::now() + Duration::from_secs(60)),
            },
            state_version: Some(1),
        };
        assert!(matches!(live.current(), Role::Leader { .. }));
        let expired = Leadership {
            role: Role::Leader {
                fence: Some(fence),
                until: Instant::now().checked_sub(Duration::from_millis(1)),
            },
            state_version: Some(1),
        };
        assert_eq!(expired.current(), Role::Standby { leader: None });
        assert!(matches!(
            Leadership::alone().current(),
            Role::Leader { fence: None, .. }
        ));
    }

    #[test]
    fn holder_ids_name_the_process_and_its_address() {
        let id = holder_id("127.0.0.1:9477");
        assert!(
            id.ends_with(&format!("/{}/127.0.0.1:9477", std::process::id())),
            "{id}"
        );
    }
}
