//! Dumps.
