//! One module per area of the contract (`/work/shared/CONTRACT.md`).

mod apply;
mod commands;
mod corpus;
mod crash;
mod daemon;
mod examples;
mod failover;
mod flows;
mod fuzz;
mod inventory;
mod plan;
mod postgres;
mod properties;
mod pull_requests;
mod state;
mod util;
mod validation;
