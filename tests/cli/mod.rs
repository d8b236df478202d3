//! One module per area of the contract (`/work/shared/CONTRACT.md`).

mod apply;
mod commands;
mod corpus;
mod crash;
mod fuzz;
mod daemon;
mod inventory;
mod plan;
mod postgres;
mod properties;
mod pull_requests;
mod state;
mod util;
mod validation;
mod examples;
mod flows;
mod failover;
