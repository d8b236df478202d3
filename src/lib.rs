//! deed: plans and applies transfers of tenant ownership declared in YAML
//! specs. See ARCHITECTURE.md for the map of the modules.

pub mod diagnostic;
pub mod desired;
pub mod model;
pub mod plan;
pub mod spec;
pub mod store;
