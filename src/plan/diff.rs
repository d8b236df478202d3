//! The diff: desired objects against the state, kind by kind.
use crate::desired::Desired;
use crate::diagnostic::Diagnostic;
use crate::model::{State, Timestamp};
use super::Plan;

/// What planning needs besides the specs and the state.
#[derive(Clone, Debug)]
pub struct PlanConfig {
    pub now: Timestamp,
}

pub fn plan(_desired: &Desired, _state: &State, _config: &PlanConfig) -> Result<Plan, Vec<Diagnostic>> {
    Ok(Plan::new(Vec::new(), Vec::new()))
}
