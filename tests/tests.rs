//! The integration tests of deed: one test binary (as ripgrep does), whose
//! modules under `tests/cli/` drive the real `deed` program on temporary
//! folders and a real sled state. Nothing is mocked.

mod cli;
