//! Kubernetes-facing types of Weft.
//!
//! Two groups of types live here so that every other crate names them one way:
//!
//! * [`crds`]: Weft's own resources (`weft.io/v1alpha1`), from which `crds/` is
//!   generated. The control plane writes the generated ones and reads the
//!   hand-written ones.
//! * [`gateway`]: the Gateway API types the translator reads, re-exported from
//!   the `gateway-api` crate's experimental channel (a superset of standard, so a
//!   route using a newer filter still parses). Renames in that generated crate
//!   stay local to this module.

#![forbid(unsafe_code)]

pub mod crds;
pub mod gateway;
pub mod labels;

pub use k8s_openapi;
pub use kube;
