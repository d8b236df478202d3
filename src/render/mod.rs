//! Rendering: a [`Plan`](crate::plan::Plan) as text for a terminal, as
//! markdown for a pull-request comment, as JSON for machines (contract 3.1,
//! 3.2), and unified diffs of accounts as YAML (`plan --diff`).
//!
//! Architecture invariant: rendering is pure. It does no I/O and reads no
//! clock; the same plan gives the same bytes.

pub mod diff;
pub mod json;
pub mod markdown;
pub mod text;

mod describe;

pub use diff::render_diff;
pub use json::{render_json, write_json};
pub use markdown::render_markdown;
pub use text::{render_text, TextOptions};
