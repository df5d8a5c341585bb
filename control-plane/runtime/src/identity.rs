//! Mesh identities in the control plane: one CA per mesh (kept in the state
//! directory in local mode, in Secrets in Kubernetes mode), the join-token
//! key, and the `Certificates.Sign` service that turns a proxy's CSR and
//! proof into a workload certificate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::str::FromStr;
use std::sync::Arc;

use parking_lot::RwLock;
use weft_api as api;
use weft_identity::signer::{DEFAULT_LIFETIME, MeshSigning};
use weft_identity::store::SharedCas;
use weft_identity::{SignError, Signer, TokenKey, store};
use weft_k8s_api::gateway::GatewayDuration;

use crate::metrics::Metrics;

/// What the control plane needs to know of a mesh to sign for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshIdentity {
    pub name: String,
    pub trust_domain: String,
    /// Lifetime of workload certificates (Gateway API duration), if set.
    pub certificate_lifetime: Option<String>,
}

/// Where mesh CAs are kept.
#[derive(Debug, Clone)]
pub enum CaSource {
    /// Local mode: `<state>/meshes/<mesh>/`, a CA created on first use.
    Directory(PathBuf),
    /// Kubernetes mode: the Secrets the cluster source keeps in sync (it
    /// also creates them); a mesh whose Secret is not there yet has no CA.
    Shared(Arc<SharedCas>),
}

impl CaSource {
    /// Changes whenever a mesh's CA material changes.
    fn revision(&self, mesh: &str) -> Option<String> {
        match self {
            CaSource::Directory(state) => store::mesh_ca_modified(state, mesh).map(|t| format!("{t:?}")),
            CaSource::Shared(cas) => cas.get(mesh).map(|(_, revision)| revision.to_string()),
        }
    }

    fn load(&self, mesh: &str, trust_domain: &str, now: time::OffsetDateTime) -> Result<store::StoredCa, String> {
        match self {
            CaSource::Directory(state) => store::mesh_ca(state, mesh, trust_domain, now).map_err(|e| e.to_string()),
            CaSource::Shared(cas) => match cas.get(mesh) {
                Some((material, _)) => material.load(trust_domain, now).map_err(|e| e.to_string()),
                None => Err("its CA Secret is not there yet".into()),
            },
        }
    }
}

/// The signer and the state behind it.
#[derive(Debug)]
pub struct Identities {
    source: CaSource,
    signer: RwLock<Signer>,
    /// What each mesh was set up with, so unchanged meshes are not reloaded.
    known: RwLock<BTreeMap<String, Loaded>>,
}

/// A mesh as last loaded.
#[derive(Debug, Clone, PartialEq)]
struct Loaded {
    mesh: MeshIdentity,
    /// Revision of its CA material then.
    modified: Option<String>,
    /// When its previous root (during a rotation) stops being trusted.
    previous_until_unix: Option<i64>,
}

impl Identities {
    /// Opens (creating on first use) the state directory's token key; the
    /// mesh CAs are kept there too.
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let key = store::token_key(state_dir)?;
        Ok(Self::new(key, CaSource::Directory(state_dir.to_owned())))
    }

    /// Identities signing with `key`'s join tokens as proof and the CAs of
    /// `source`.
    pub fn new(key: TokenKey, source: CaSource) -> Self {
        Identities { source, signer: RwLock::new(Signer::new(Box::new(key))), known: RwLock::new(BTreeMap::new()) }
    }

    /// Makes sure every mesh has a CA (loading or creating it) and returns
    /// the roots each mesh's proxies must trust. A mesh whose CA cannot be
    /// loaded is logged and left without roots; the others are unaffected.
    pub fn sync(&self, meshes: &[MeshIdentity]) -> BTreeMap<String, Vec<String>> {
        let now = time::OffsetDateTime::now_utc();
        for mesh in meshes {
            let modified = self.source.revision(&mesh.name);
            let unchanged = self.known.read().get(&mesh.name).is_some_and(|k| {
                k.mesh == *mesh
                    && k.modified == modified
                    && k.previous_until_unix.is_none_or(|until| until > now.unix_timestamp())
            });
            if unchanged {
                continue;
            }
            let lifetime = match mesh.certificate_lifetime.as_deref().map(GatewayDuration::from_str) {
                None => DEFAULT_LIFETIME,
                Some(Ok(d)) if d.as_secs() >= 10 => time::Duration::seconds(d.as_secs() as i64),
                Some(Ok(_)) | Some(Err(_)) => {
                    tracing::warn!(
                        mesh = %mesh.name,
                        value = mesh.certificate_lifetime.as_deref().unwrap_or_default(),
                        "spec.mtls.certificateLifetime must be a Gateway API duration of at least 10s; using 24h"
                    );
                    DEFAULT_LIFETIME
                }
            };
            match self.source.load(&mesh.name, &mesh.trust_domain, now) {
                Ok(stored) => {
                    tracing::info!(
                        mesh = %mesh.name,
                        trust_domain = %mesh.trust_domain,
                        ?lifetime,
                        roots = 1 + stored.extra_roots_pem.len(),
                        "mesh CA loaded"
                    );
                    let loaded = Loaded {
                        mesh: mesh.clone(),
                        // Read after writing a new CA, so creating one is not a change.
                        modified: self.source.revision(&mesh.name),
                        previous_until_unix: stored.previous_until_unix,
                    };
                    self.signer.write().set_mesh(
                        &mesh.name,
                        MeshSigning { ca: stored.ca, extra_roots_pem: stored.extra_roots_pem, lifetime },
                    );
                    self.known.write().insert(mesh.name.clone(), loaded);
                }
                Err(e) => {
                    tracing::warn!(mesh = %mesh.name, error = %e, "mesh CA unavailable; its proxies get no certificates")
                }
            }
        }
        self.signer.read().meshes().map(|(name, signing)| (name.clone(), signing.roots_pem())).collect()
    }

    /// Whether a loaded mesh's CA changed where it is kept (rotated with
    /// `weftctl ca rotate`, or replaced) or its previous root's overlap
    /// ended.
    pub fn changed_on_disk(&self) -> bool {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.known.read().iter().any(|(name, k)| {
            self.source.revision(name) != k.modified || k.previous_until_unix.is_some_and(|until| until <= now)
        })
    }

    /// Whether the mesh has a CA loaded (so its proxies can get
    /// certificates).
    pub fn has_mesh(&self, mesh: &str) -> bool {
        self.signer.read().mesh(mesh).is_some()
    }

    /// Every mesh as last loaded (to sync again after a change on disk).
    pub fn meshes(&self) -> Vec<MeshIdentity> {
        self.known.read().values().map(|k| k.mesh.clone()).collect()
    }

    pub fn sign(&self, csr_pem: &str, proof: &str, mesh: &str) -> Result<weft_identity::Issued, SignError> {
        self.signer.read().sign(csr_pem, proof, mesh, time::OffsetDateTime::now_utc())
    }

    /// Checks a join token for `mesh`.
    pub fn verify(&self, proof: &str, mesh: &str) -> Result<weft_identity::signer::Proven, SignError> {
        self.signer.read().verify(proof, mesh, time::OffsetDateTime::now_utc())
    }

    /// Signs for an identity proven elsewhere (a TokenReview).
    pub fn sign_proven(
        &self,
        csr_pem: &str,
        proven: &weft_identity::signer::Proven,
        mesh: &str,
    ) -> Result<weft_identity::Issued, SignError> {
        self.signer.read().sign_proven(csr_pem, proven, mesh, time::OffsetDateTime::now_utc())
    }
}

/// The gRPC `Certificates` service.
#[derive(Debug, Clone)]
pub struct CertificateService {
    pub identities: Arc<Identities>,
    pub metrics: Arc<Metrics>,
    /// Kubernetes mode: ServiceAccount tokens are checked with TokenReviews
    /// (join tokens, `weft1.…`, keep working).
    pub reviewer: Option<Arc<weft_kubernetes::tokenreview::TokenReviewer>>,
}

impl CertificateService {
    /// Signs with whichever proof the caller sent.
    async fn issue(&self, req: &api::SignRequest, mesh: &str) -> Result<weft_identity::Issued, SignError> {
        let checker = ProofChecker { identities: self.identities.clone(), reviewer: self.reviewer.clone() };
        let proven = checker.prove(&req.token, mesh).await?;
        self.identities.sign_proven(&req.csr_pem, &proven, mesh)
    }
}

/// Who a proof of identity says its holder is: a join token (`weft1.…`)
/// checked with the control plane's key, or, in Kubernetes mode, a
/// ServiceAccount token checked with a TokenReview.
#[derive(Debug, Clone)]
pub struct ProofChecker {
    pub identities: Arc<Identities>,
    pub reviewer: Option<Arc<weft_kubernetes::tokenreview::TokenReviewer>>,
}

impl ProofChecker {
    pub async fn prove(&self, token: &str, mesh: &str) -> Result<weft_identity::signer::Proven, SignError> {
        let join_token = token.trim_start().starts_with("weft1.");
        match &self.reviewer {
            Some(reviewer) if !join_token => {
                reviewer.verify(token.trim(), mesh).await.map_err(|e| SignError::Refused(e.to_string()))
            }
            _ => self.identities.verify(token, mesh),
        }
    }
}

/// Largest CSR or token accepted (a CSR for one P-256 key is about 500 bytes).
const MAX_INPUT: usize = 16 * 1024;

#[tonic::async_trait]
impl api::server::certificates_server::Certificates for CertificateService {
    async fn sign(
        &self,
        request: tonic::Request<api::SignRequest>,
    ) -> Result<tonic::Response<api::SignResponse>, tonic::Status> {
        let peer = request.remote_addr();
        let req = request.into_inner();
        if req.csr_pem.len() > MAX_INPUT || req.token.len() > MAX_INPUT {
            return Err(tonic::Status::invalid_argument("the CSR or token is larger than 16 KiB"));
        }
        let mesh = if req.mesh.is_empty() { weft_k8s_api::labels::DEFAULT_MESH } else { req.mesh.as_str() };
        match self.issue(&req, mesh).await {
            Ok(issued) => {
                tracing::info!(?peer, %mesh, identity = %issued.identity, not_after = issued.not_after_unix, "certificate issued");
                self.metrics.certificates_issued.get_or_create(&vec![("mesh".into(), mesh.to_owned())]).inc();
                Ok(tonic::Response::new(api::SignResponse {
                    chain_pem: issued.chain_pem,
                    not_after_unix: issued.not_after_unix,
                    roots_pem: issued.roots_pem,
                }))
            }
            Err(e) => {
                // The token itself is never logged.
                tracing::warn!(?peer, %mesh, error = %e, "certificate refused");
                let reason = match &e {
                    SignError::UnknownMesh(_) => "unknown_mesh",
                    SignError::Token(_) => "bad_token",
                    SignError::Refused(_) => "token_refused",
                    SignError::OtherMesh { .. } => "other_mesh",
                    SignError::Csr(_) => "bad_csr",
                    SignError::IdentityMismatch { .. } => "identity_mismatch",
                    SignError::Signing(_) => "signing_failed",
                };
                self.metrics.certificates_refused.get_or_create(&vec![("reason".into(), reason.into())]).inc();
                Err(match e {
                    SignError::Signing(_) => tonic::Status::internal(e.to_string()),
                    SignError::UnknownMesh(_) => tonic::Status::not_found(e.to_string()),
                    SignError::Csr(_) => tonic::Status::invalid_argument(e.to_string()),
                    _ => tonic::Status::permission_denied(e.to_string()),
                })
            }
        }
    }
}
