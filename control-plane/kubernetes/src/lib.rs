//! Weft's Kubernetes I/O.
//!
//! The control plane's Kubernetes mode, kept apart from everything that
//! does not need a cluster (translation, compilation and distribution run
//! the same in local mode):
//!
//! * [`gate`] and [`watch`]: discover which resources the cluster serves
//!   (the Gateway API and Weft's CRDs may come and go while the control
//!   plane runs) and watch each, feeding the [`index`];
//! * [`source`]: turns the index into translator snapshots once every
//!   watcher has listed, then after each (debounced) change;
//! * [`leader`]: a `coordination.k8s.io` Lease, so exactly one replica
//!   writes;
//! * [`writer`]: the leader's writes: generated objects by server-side
//!   apply, removal of stale ones, and the status of every object, only
//!   where the cluster differs from what Weft computed, through a
//!   rate-limited queue ([`queue`]);
//! * [`ca`]: each mesh's CA and the join-token key in Secrets, shared by
//!   every replica;
//! * [`tokenreview`]: proxies' ServiceAccount tokens checked with
//!   TokenReviews.
//!
//! Index, status computation and the comparisons are plain data functions
//! with unit tests; the tasks around them are thin.

#![forbid(unsafe_code)]

pub mod ca;
pub mod compare;
pub mod flagger;
pub mod gate;
pub mod index;
pub mod injector;
pub mod kinds;
pub mod leader;
pub mod metrics;
pub mod provision;
pub mod queue;
pub mod source;
pub mod tls;
pub mod tokenreview;
pub mod watch;
pub mod webhook;
pub mod writer;

/// Field manager of every write Weft makes.
pub const FIELD_MANAGER: &str = "weft-control-plane";
