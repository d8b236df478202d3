//! Specs: files → fragments → one validated [`Desired`](crate::desired::Desired).
