//! deed: plans and applies transfers of tenant ownership declared in YAML
//! specs. See ARCHITECTURE.md for the map of the modules.

pub mod apply;
pub mod check;
pub mod cli;
pub mod daemon;
pub mod desired;
pub mod diagnostic;
pub mod export;
pub mod inventory;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod spec;
pub mod store;
