//! Mesh identity for Weft.
//!
//! Every proxy proves who it is (a join token in local mode; a
//! ServiceAccount token in Kubernetes) and receives a short-lived X.509
//! certificate whose only name is a SPIFFE ID,
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`. Each mesh
//! has its own CA and trust domain, so a proxy of one mesh cannot complete
//! a handshake with a proxy of another.
//!
//! This crate holds the parts both sides share and that need no network:
//! [`spiffe`] names identities and reads them out of certificates, [`ca`]
//! makes and loads mesh CAs, [`token`] issues and checks join tokens,
//! [`signer`] turns a CSR plus proof into a certificate, and [`store`] keeps
//! CAs and the token key in the control plane's state directory.

pub mod ca;
pub mod signer;
pub mod spiffe;
pub mod store;
pub mod token;

pub use ca::MeshCa;
pub use signer::{Issued, ProofVerifier, SignError, Signer};
pub use spiffe::SpiffeId;
pub use token::{Claims, TokenError, TokenKey};
