//! Weft's translation core: a pure, deterministic function from a snapshot of
//! Gateway API and Weft objects to the Weft mesh resources that implement them
//! and the status of every input object.
//!
//! Nothing in this crate does network I/O or runs async code; the loader
//! reads files only when asked to. Everything is tested with plain data.

#![forbid(unsafe_code)]

pub mod load;
pub mod ports;
pub mod render;
pub mod snapshot;
pub mod translate;

pub use snapshot::{ObjectKey, PodInfo, SecretInfo, Snapshot};
pub use translate::{Output, Statuses, translate};
