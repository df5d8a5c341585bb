//! Turns a proxy's CSR plus proof of identity into a workload certificate.

use std::collections::BTreeMap;

use rcgen::{
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::ca::MeshCa;
use crate::spiffe::SpiffeId;
use crate::token::{TokenError, TokenKey};

/// Who a proof says the caller is, within a mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    pub namespace: String,
    pub service_account: String,
    /// The pod a Kubernetes token is bound to (projected tokens are), if
    /// any: a config stream proven by it may speak only for that pod.
    pub pod: Option<String>,
}

/// Checks a proof of identity for a mesh. Local mode checks join tokens
/// ([`TokenKey`]); Kubernetes mode will check ServiceAccount tokens with a
/// TokenReview behind the same interface.
pub trait ProofVerifier: Send + Sync {
    fn verify(&self, proof: &str, mesh: &str, now_unix: i64) -> Result<Proven, SignError>;
}

impl ProofVerifier for TokenKey {
    fn verify(&self, proof: &str, mesh: &str, now_unix: i64) -> Result<Proven, SignError> {
        let claims = TokenKey::verify(self, proof, now_unix).map_err(SignError::Token)?;
        if claims.mesh != mesh {
            return Err(SignError::OtherMesh { token: claims.mesh, requested: mesh.to_owned() });
        }
        Ok(Proven { namespace: claims.namespace, service_account: claims.service_account, pod: None })
    }
}

/// Why a signing request is refused. Every variant is the caller's fault
/// (an invalid request), except none: the signer has no internal failures
/// it could blame on the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("unknown mesh {0:?}")]
    UnknownMesh(String),
    #[error("the proof of identity is refused: {0}")]
    Token(TokenError),
    #[error("the token is for mesh {token:?}, not {requested:?}")]
    OtherMesh { token: String, requested: String },
    #[error("the ServiceAccount token is refused: {0}")]
    Refused(String),
    #[error("the CSR cannot be used: {0}")]
    Csr(String),
    #[error("the CSR asks for {requested}, but the proof is for {proven}")]
    IdentityMismatch { requested: String, proven: String },
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A signed workload certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub identity: SpiffeId,
    /// Leaf first.
    pub chain_pem: Vec<String>,
    pub not_after_unix: i64,
    /// Every root the mesh's proxies trust now (two during a CA rotation).
    pub roots_pem: Vec<String>,
}

/// One mesh's signing state.
#[derive(Debug)]
pub struct MeshSigning {
    pub ca: MeshCa,
    /// Roots still trusted besides the CA's own (the previous root during
    /// a rotation's overlap).
    pub extra_roots_pem: Vec<String>,
    pub lifetime: Duration,
}

impl MeshSigning {
    pub fn roots_pem(&self) -> Vec<String> {
        std::iter::once(self.ca.root_pem().to_owned()).chain(self.extra_roots_pem.iter().cloned()).collect()
    }
}

/// Default lifetime of workload certificates.
pub const DEFAULT_LIFETIME: Duration = Duration::hours(24);

/// Signs CSRs for every mesh of a control plane.
pub struct Signer {
    meshes: BTreeMap<String, MeshSigning>,
    proof: Box<dyn ProofVerifier>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("meshes", &self.meshes.keys().collect::<Vec<_>>()).finish()
    }
}

impl Signer {
    pub fn new(proof: Box<dyn ProofVerifier>) -> Self {
        Signer { meshes: BTreeMap::new(), proof }
    }

    pub fn set_mesh(&mut self, mesh: &str, signing: MeshSigning) {
        self.meshes.insert(mesh.to_owned(), signing);
    }

    pub fn mesh(&self, mesh: &str) -> Option<&MeshSigning> {
        self.meshes.get(mesh)
    }

    pub fn meshes(&self) -> impl Iterator<Item = (&String, &MeshSigning)> {
        self.meshes.iter()
    }

    /// Checks `proof` for `mesh`, checks that the CSR asks for exactly the
    /// proven identity, and signs a certificate for it valid from `now` for
    /// the mesh's lifetime. The certificate names only the SPIFFE ID
    /// whatever else the CSR asked for, and serves as both client and
    /// server certificate.
    pub fn sign(&self, csr_pem: &str, proof: &str, mesh: &str, now: OffsetDateTime) -> Result<Issued, SignError> {
        if !self.meshes.contains_key(mesh) {
            return Err(SignError::UnknownMesh(mesh.to_owned()));
        }
        let proven = self.proof.verify(proof, mesh, now.unix_timestamp())?;
        self.sign_proven(csr_pem, &proven, mesh, now)
    }

    /// Checks a proof for `mesh` without signing (the config stream asks who
    /// a proxy is).
    pub fn verify(&self, proof: &str, mesh: &str, now: OffsetDateTime) -> Result<Proven, SignError> {
        self.proof.verify(proof, mesh, now.unix_timestamp())
    }

    /// Signs for an identity the caller has already proven some other way
    /// (Kubernetes mode checks ServiceAccount tokens with a TokenReview,
    /// which needs the network): the CSR must ask for exactly that
    /// identity.
    pub fn sign_proven(
        &self,
        csr_pem: &str,
        proven: &Proven,
        mesh: &str,
        now: OffsetDateTime,
    ) -> Result<Issued, SignError> {
        let signing = self.meshes.get(mesh).ok_or_else(|| SignError::UnknownMesh(mesh.to_owned()))?;
        let identity = SpiffeId::new(&signing.ca.trust_domain, &proven.namespace, &proven.service_account);

        // Parsing verifies the CSR's own signature: the caller holds the key.
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| SignError::Csr(e.to_string()))?;
        let requested: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|san| match san {
                SanType::URI(uri) => uri.as_str().to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        if requested != [identity.to_string()] {
            return Err(SignError::IdentityMismatch { requested: requested.join(", "), proven: identity.to_string() });
        }

        let mut params = rcgen::CertificateParams::default();
        let uri = identity.to_string().try_into().map_err(|e: rcgen::Error| SignError::Signing(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Weft");
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        // A minute of allowance for clocks a little behind ours.
        params.not_before = now - Duration::minutes(1);
        params.not_after = now + signing.lifetime;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.use_authority_key_identifier_extension = true;
        let cert = CertificateSigningRequestParams { params, public_key: csr.public_key }
            .signed_by(signing.ca.issuer())
            .map_err(|e| SignError::Signing(e.to_string()))?;
        Ok(Issued {
            identity,
            chain_pem: vec![cert.pem()],
            not_after_unix: (now + signing.lifetime).unix_timestamp(),
            roots_pem: signing.roots_pem(),
        })
    }
}

fn random_serial() -> [u8; 16] {
    let mut serial = [0u8; 16];
    let rng = ring::rand::SystemRandom::new();
    // SystemRandom fails only when the OS has no randomness at all.
    ring::rand::SecureRandom::fill(&rng, &mut serial).expect("the operating system's random source");
    // Positive, and never zero-length after DER's leading-zero trimming.
    serial[0] = (serial[0] & 0x7f) | 0x01;
    serial
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;
    use crate::ca::ROOT_LIFETIME;
    use crate::token::Claims;

    struct Fixture {
        signer: Signer,
        key: std::sync::Arc<TokenKey>,
        now: OffsetDateTime,
    }

    struct SharedKey(std::sync::Arc<TokenKey>);

    impl ProofVerifier for SharedKey {
        fn verify(&self, proof: &str, mesh: &str, now_unix: i64) -> Result<Proven, SignError> {
            ProofVerifier::verify(self.0.as_ref(), proof, mesh, now_unix)
        }
    }

    fn fixture() -> Fixture {
        let now = OffsetDateTime::now_utc();
        let key = std::sync::Arc::new(TokenKey::generate());
        let mut signer = Signer::new(Box::new(SharedKey(key.clone())));
        for (mesh, td) in [("default", "default.weft.local"), ("payments", "payments.weft.local")] {
            let ca = MeshCa::generate(td, now, ROOT_LIFETIME).unwrap();
            signer.set_mesh(mesh, MeshSigning { ca, extra_roots_pem: vec![], lifetime: Duration::seconds(30) });
        }
        Fixture { signer, key, now }
    }

    fn token(f: &Fixture, mesh: &str, ns: &str, sa: &str, expires_in: i64) -> String {
        f.key.issue(&Claims {
            mesh: mesh.into(),
            namespace: ns.into(),
            service_account: sa.into(),
            expires_unix: f.now.unix_timestamp() + expires_in,
        })
    }

    fn csr(san: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(san.try_into().unwrap())];
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn signs_the_proven_identity_for_the_mesh_lifetime() {
        let f = fixture();
        let issued = f
            .signer
            .sign(
                &csr("spiffe://default.weft.local/ns/shop/sa/cart"),
                &token(&f, "default", "shop", "cart", 60),
                "default",
                f.now,
            )
            .unwrap();
        assert_eq!(issued.identity.to_string(), "spiffe://default.weft.local/ns/shop/sa/cart");
        assert_eq!(issued.not_after_unix, f.now.unix_timestamp() + 30);
        assert_eq!(issued.roots_pem, vec![f.signer.mesh("default").unwrap().ca.root_pem().to_owned()]);
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(issued.chain_pem[0].as_bytes()).unwrap();
        let der: rustls_pki_types::CertificateDer<'static> = der;
        assert_eq!(SpiffeId::from_certificate(&der).unwrap(), issued.identity);
    }

    #[test]
    fn refuses_a_csr_whose_identity_does_not_match_the_proof() {
        let f = fixture();
        let proof = token(&f, "default", "shop", "cart", 60);
        for san in [
            "spiffe://default.weft.local/ns/shop/sa/admin",
            "spiffe://default.weft.local/ns/kube-system/sa/cart",
            "spiffe://payments.weft.local/ns/shop/sa/cart",
        ] {
            let err = f.signer.sign(&csr(san), &proof, "default", f.now).unwrap_err();
            assert!(matches!(err, SignError::IdentityMismatch { .. }), "{san}: {err}");
        }
        // No name at all is not the proven identity either.
        let key = KeyPair::generate().unwrap();
        let bare = CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        assert!(matches!(f.signer.sign(&bare, &proof, "default", f.now), Err(SignError::IdentityMismatch { .. })));
    }

    #[test]
    fn refuses_expired_forged_and_other_mesh_tokens() {
        let f = fixture();
        let request = csr("spiffe://default.weft.local/ns/shop/sa/cart");
        let expired = token(&f, "default", "shop", "cart", -1);
        assert!(matches!(
            f.signer.sign(&request, &expired, "default", f.now),
            Err(SignError::Token(TokenError::Expired { .. }))
        ));
        let forged = TokenKey::generate().issue(&Claims {
            mesh: "default".into(),
            namespace: "shop".into(),
            service_account: "cart".into(),
            expires_unix: f.now.unix_timestamp() + 60,
        });
        assert_eq!(
            f.signer.sign(&request, &forged, "default", f.now).unwrap_err(),
            SignError::Token(TokenError::BadSignature)
        );
        let payments = token(&f, "payments", "shop", "cart", 60);
        assert!(matches!(f.signer.sign(&request, &payments, "default", f.now), Err(SignError::OtherMesh { .. })));
        assert!(matches!(f.signer.sign(&request, &payments, "nowhere", f.now), Err(SignError::UnknownMesh(_))));
    }

    #[test]
    fn refuses_a_csr_not_signed_by_its_key() {
        let f = fixture();
        let good = csr("spiffe://default.weft.local/ns/shop/sa/cart");
        // Flip a byte inside the signature (the end of the DER).
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(good.as_bytes()).unwrap();
        let der: rustls_pki_types::CertificateSigningRequestDer<'static> = der;
        let mut bytes = der.as_ref().to_vec();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        let tampered = pem_encode("CERTIFICATE REQUEST", &bytes);
        let proof = token(&f, "default", "shop", "cart", 60);
        assert!(matches!(f.signer.sign(&tampered, &proof, "default", f.now), Err(SignError::Csr(_))));
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }
}
