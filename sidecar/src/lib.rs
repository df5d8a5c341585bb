//! Weft's data plane: the transparent sidecar and the init step that
//! redirects a pod's traffic through it.
//!
//! The request path reads only validated config ([`model`]) from an
//! atomically swapped snapshot ([`state`]); routing ([`route`]) and filters
//! ([`filters`]) are pure functions, tested against the Gateway API's rules.

pub mod accept;
pub mod admin;
pub mod balance;
pub mod client;
pub mod detect;
pub mod filters;
pub mod gateway;
pub mod grpc;
pub mod health;
pub mod holddown;
pub mod http;
pub mod identity;
pub mod init;
pub mod listen;
pub mod metrics;
pub mod model;
pub mod orig_dst;
pub mod pool;
pub mod proxy;
pub mod reply;
pub mod route;
pub mod state;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod validate;
