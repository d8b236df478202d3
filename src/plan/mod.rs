//! Planning: [`Desired`] × [`State`] → [`Plan`], a list of changes in the
//! order they are applied, plus the items that must wait (pending).
//!
//! Architecture invariant: planning is pure. It does no I/O, reads the clock
//! only through [`PlanConfig::now`], and the same inputs give the same plan,
//! byte for byte.

mod changes;
mod diff;
mod guard;
mod packed;
pub mod partial;
mod target;

pub use changes::{Action, Change, ChangeId, Pending, Plan, Summary, FORMAT_VERSION};
pub use diff::{plan, PlanConfig};
pub use guard::{authorize, RemovalCount};
pub use packed::{PackedChangeFields, PackedFields, PackedFieldsRef};
