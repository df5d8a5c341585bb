//! Mutual TLS between Weft proxies (rustls, ring only).
//!
//! A proxy holds one workload certificate (made by [`crate::identity`]) and
//! its mesh's roots. Outbound to a meshed endpoint it checks that the peer
//! chains to those roots *and* presents the SPIFFE ID the control plane
//! expects for that endpoint; inbound it requires a client certificate
//! chaining to the same roots. A proxy of another mesh has other roots, so
//! the handshake fails both ways.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use serde::Serialize;
use weft_identity::SpiffeId;

use crate::metrics::TlsLabels;

/// ALPN of connections carrying opaque TCP between proxies.
pub const ALPN_TCP: &[u8] = b"weft-tcp";
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A mesh's mTLS mode, as the control plane sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// mTLS between proxies; plaintext refused on inbound.
    Strict,
    /// mTLS between proxies when possible; plaintext also accepted inbound.
    Permissive,
    /// Plaintext everywhere.
    Off,
}

impl MtlsMode {
    fn to_u8(self) -> u8 {
        match self {
            MtlsMode::Strict => 0,
            MtlsMode::Permissive => 1,
            MtlsMode::Off => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => MtlsMode::Strict,
            2 => MtlsMode::Off,
            _ => MtlsMode::Permissive,
        }
    }
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no root certificate could be read from the mesh's roots")]
    NoRoots,
    #[error("the certificate chain is empty or not PEM")]
    NoChain,
    #[error("the certificate does not name a workload: {0}")]
    Identity(#[from] weft_identity::spiffe::SpiffeError),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn pem_certificate(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

/// The ring provider, the only one the proxy uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses PEM roots into a store; unreadable entries are skipped.
pub fn root_store(roots_pem: &[String]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for pem in roots_pem {
        for der in
            <CertificateDer<'static> as rustls::pki_types::pem::PemObject>::pem_slice_iter(pem.as_bytes()).flatten()
        {
            let _ = store.add(der);
        }
    }
    if store.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(store)
}

/// Checks that a server chains to the mesh's roots and is the expected
/// workload. The TLS server name is not used: endpoints are dialled by IP
/// and their identity comes from the control plane.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: String,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    pub fn new(roots: Arc<RootCertStore>, expected: &str, provider: Arc<CryptoProvider>) -> Self {
        SpiffeServerVerifier { roots, expected: expected.to_owned(), provider }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let presented = SpiffeId::from_certificate(end_entity)
            .map_err(|e| rustls::Error::General(format!("peer certificate: {e}")))?;
        if presented.to_string() != self.expected {
            return Err(rustls::Error::General(format!(
                "peer is {presented}, expected {} for this endpoint",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether the certificate of `key` chains to the one root in `root_pem`.
fn chains_to(key: &CertifiedKey, root_pem: &str, provider: &CryptoProvider) -> bool {
    let Ok(store) = root_store(std::slice::from_ref(&root_pem.to_owned())) else { return false };
    let Some(leaf) = key.cert.first() else { return false };
    let Ok(parsed) = ParsedCertificate::try_from(leaf) else { return false };
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &store,
        &key.cert[1..],
        UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
    .is_ok()
}

/// Client configs by (expected peer identity, ALPN).
type ClientConfigs = HashMap<(String, &'static [u8]), Arc<ClientConfig>>;

/// The proxy's certificate and everything built from it.
#[derive(Debug)]
pub struct TlsState {
    pub identity: SpiffeId,
    pub not_after: SystemTime,
    /// When the certificate was installed (renewal is timed from here).
    pub installed: SystemTime,
    key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    roots_pem: Vec<String>,
    /// Which of the roots signed the certificate (the control plane lists
    /// its current CA first, so after a rotation this shows whether the
    /// certificate is already from the new CA).
    pub signed_by_root: Option<usize>,
    provider: Arc<CryptoProvider>,
    server: Arc<ServerConfig>,
    /// Client configs by expected peer identity (they share the key and
    /// roots; only the verifier differs).
    clients: Mutex<ClientConfigs>,
}

impl TlsState {
    /// Builds the state from a chain (PEM, leaf first), the private key it
    /// certifies and the mesh's roots.
    pub fn new(
        chain_pem: &[String],
        key: PrivateKeyDer<'static>,
        roots_pem: &[String],
        not_after: SystemTime,
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let chain: Vec<CertificateDer<'static>> = chain_pem
            .iter()
            .flat_map(|pem| {
                <CertificateDer<'static> as rustls::pki_types::pem::PemObject>::pem_slice_iter(pem.as_bytes())
            })
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::NoChain)?;
        let leaf = chain.first().ok_or(TlsError::NoChain)?;
        let identity = SpiffeId::from_certificate(leaf)?;
        let key = Arc::new(CertifiedKey::from_der(chain, key, &provider)?);
        Self::with_key(identity, key, roots_pem, not_after, provider)
    }

    fn with_key(
        identity: SpiffeId,
        key: Arc<CertifiedKey>,
        roots_pem: &[String],
        not_after: SystemTime,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let roots = Arc::new(root_store(roots_pem)?);
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(key.clone())));
        server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec(), ALPN_TCP.to_vec()];
        let signed_by_root = roots_pem.iter().position(|root| chains_to(&key, root, &provider));
        Ok(TlsState {
            signed_by_root,
            identity,
            not_after,
            installed: SystemTime::now(),
            key,
            roots,
            roots_pem: roots_pem.to_vec(),
            provider,
            server: Arc::new(server),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The same certificate with other roots (the mesh's roots changed, as
    /// during a CA rotation).
    pub fn with_roots(&self, roots_pem: &[String]) -> Result<Self, TlsError> {
        let mut next =
            Self::with_key(self.identity.clone(), self.key.clone(), roots_pem, self.not_after, self.provider.clone())?;
        next.installed = self.installed;
        Ok(next)
    }

    pub fn roots_pem(&self) -> &[String] {
        &self.roots_pem
    }

    /// The certificate chain in force, PEM, leaf first.
    pub fn chain_pem(&self) -> Vec<String> {
        self.key.cert.iter().map(|der| pem_certificate(der)).collect()
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// A client config that accepts only `expected` as the peer, offering
    /// `alpn`.
    pub fn client_config(&self, expected: &str, alpn: &'static [u8]) -> Result<Arc<ClientConfig>, TlsError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&(expected.to_owned(), alpn)) {
            return Ok(c.clone());
        }
        let verifier = Arc::new(SpiffeServerVerifier::new(self.roots.clone(), expected, self.provider.clone()));
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(self.key.clone())));
        config.alpn_protocols = vec![alpn.to_vec()];
        let config = Arc::new(config);
        clients.insert((expected.to_owned(), alpn), config.clone());
        Ok(config)
    }
}

impl TlsState {
    /// A client config for a peer of another mesh (a cross-mesh gateway):
    /// its certificate must chain to `roots`, that mesh's trust bundle, and
    /// name `expected`. Not cached: connections to such peers are pooled,
    /// and the bundle may rotate.
    pub fn client_config_trusting(
        &self,
        roots: Arc<RootCertStore>,
        expected: &str,
        alpn: &'static [u8],
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = Arc::new(SpiffeServerVerifier::new(roots, expected, self.provider.clone()));
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(self.key.clone())));
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    }

    /// The server config of a gateway's HTTP listener for mesh clients:
    /// this proxy's certificate, HTTP ALPNs, and client certificates that
    /// chain to its own mesh's roots or, for a cross-mesh gateway, to any of
    /// `others` (the other meshes' bundles).
    pub fn gateway_server_config(&self, others: &[Arc<RootCertStore>]) -> Result<Arc<ServerConfig>, TlsError> {
        let mut roots = (*self.roots).clone();
        for store in others {
            roots.roots.extend(store.roots.iter().cloned());
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone()).build()?;
        let mut server = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(self.key.clone())));
        server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(Arc::new(server))
    }
}

/// The other meshes' trust bundles, by trust domain (from the mesh
/// settings), with a generation that changes whenever they do.
#[derive(Debug, Default)]
pub struct Federation {
    pub bundles: HashMap<String, Arc<RootCertStore>>,
    pem: Vec<(String, Vec<String>)>,
    pub generation: u64,
}

/// The trust domain of a `spiffe://` ID.
pub fn trust_domain_of(id: &str) -> &str {
    id.strip_prefix("spiffe://").and_then(|rest| rest.split('/').next()).unwrap_or_default()
}

/// The proxy's mTLS state, shared by the listeners and the connectors.
#[derive(Debug)]
pub struct MeshTls {
    mode: AtomicU8,
    /// Set when the proxy was given a proof of identity: it is not ready
    /// until it holds a certificate (unless the mesh's mTLS is off).
    required: AtomicBool,
    state: ArcSwapOption<TlsState>,
    /// The pod's own addresses: a connection to one of them never leaves
    /// the pod (and the proxy's own traffic skips the inbound redirect), so
    /// it goes to the application in plaintext.
    local_ips: std::sync::OnceLock<Vec<std::net::IpAddr>>,
    /// The other meshes' trust bundles.
    federation: arc_swap::ArcSwap<Federation>,
    /// Handshake and refusal counts by direction and result.
    pub events: Family<TlsLabels, Counter>,
}

impl MeshTls {
    pub fn new(events: Family<TlsLabels, Counter>) -> Self {
        MeshTls {
            mode: AtomicU8::new(MtlsMode::Permissive.to_u8()),
            required: AtomicBool::new(false),
            state: ArcSwapOption::empty(),
            local_ips: std::sync::OnceLock::new(),
            federation: arc_swap::ArcSwap::from_pointee(Federation::default()),
            events,
        }
    }

    /// Installs the other meshes' trust bundles (trust domain → PEM roots);
    /// a bundle that cannot be read is left out and logged.
    pub fn set_federated(&self, bundles: &[(String, Vec<String>)]) {
        let current = self.federation.load();
        if current.pem == bundles {
            return;
        }
        let mut stores = HashMap::new();
        for (domain, pem) in bundles {
            match root_store(pem) {
                Ok(store) => {
                    stores.insert(domain.clone(), Arc::new(store));
                }
                Err(e) => tracing::warn!(trust_domain = %domain, error = %e, "trust bundle of another mesh not usable"),
            }
        }
        self.federation.store(Arc::new(Federation {
            bundles: stores,
            pem: bundles.to_vec(),
            generation: current.generation + 1,
        }));
    }

    /// The other meshes' trust bundles in force.
    pub fn federation(&self) -> Arc<Federation> {
        self.federation.load_full()
    }

    pub fn mode(&self) -> MtlsMode {
        MtlsMode::from_u8(self.mode.load(Ordering::Acquire))
    }

    /// Records the pod's own addresses (once, at start).
    pub fn set_local_ips(&self, ips: Vec<std::net::IpAddr>) {
        let _ = self.local_ips.set(ips);
    }

    pub fn is_local(&self, ip: std::net::IpAddr) -> bool {
        self.local_ips.get().is_some_and(|ips| ips.contains(&ip))
    }

    pub fn require_certificate(&self) {
        self.required.store(true, Ordering::Release);
    }

    /// Whether mTLS is as ready as it needs to be to serve.
    pub fn ready(&self) -> bool {
        !self.required.load(Ordering::Acquire) || self.mode() == MtlsMode::Off || self.state.load().is_some()
    }

    pub fn set_mode(&self, mode: MtlsMode) {
        self.mode.store(mode.to_u8(), Ordering::Release);
    }

    /// The certificate in force, if any.
    pub fn state(&self) -> Option<Arc<TlsState>> {
        self.state.load_full()
    }

    pub fn install(&self, state: TlsState) {
        self.state.store(Some(Arc::new(state)));
    }

    /// Applies new mesh roots to the certificate in force (kept as it was
    /// when the roots cannot be read).
    pub fn set_roots(&self, roots_pem: &[String]) {
        let Some(current) = self.state() else { return };
        if roots_pem.is_empty() || current.roots_pem() == roots_pem {
            return;
        }
        match current.with_roots(roots_pem) {
            Ok(next) => self.install(next),
            Err(e) => tracing::warn!(error = %e, "new mesh roots not usable; keeping the previous ones"),
        }
    }

    pub fn count(&self, direction: &'static str, result: &'static str) {
        self.events.get_or_create(&TlsLabels { direction, result }).inc();
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};
    use time::OffsetDateTime;
    use weft_identity::signer::MeshSigning;
    use weft_identity::{Claims, MeshCa, Signer, TokenKey};

    use super::*;

    /// Two meshes' CAs and a signer for each; returns PEM roots and a way to
    /// issue a certificate (chain, key) for an identity.
    struct Pki {
        signer: Signer,
        key: Arc<TokenKey>,
    }

    struct SharedKey(Arc<TokenKey>);
    impl weft_identity::ProofVerifier for SharedKey {
        fn verify(
            &self,
            proof: &str,
            mesh: &str,
            now: i64,
        ) -> Result<weft_identity::signer::Proven, weft_identity::SignError> {
            weft_identity::ProofVerifier::verify(self.0.as_ref(), proof, mesh, now)
        }
    }

    fn pki() -> Pki {
        let key = Arc::new(TokenKey::generate());
        let mut signer = Signer::new(Box::new(SharedKey(key.clone())));
        let now = OffsetDateTime::now_utc();
        for mesh in ["a", "b"] {
            let ca = MeshCa::generate(&format!("{mesh}.weft.local"), now, time::Duration::days(1)).unwrap();
            signer.set_mesh(mesh, MeshSigning { ca, extra_roots_pem: vec![], lifetime: time::Duration::hours(1) });
        }
        Pki { signer, key }
    }

    impl Pki {
        fn roots(&self, mesh: &str) -> Vec<String> {
            self.signer.mesh(mesh).unwrap().roots_pem()
        }

        fn state(&self, mesh: &str, ns: &str, sa: &str) -> TlsState {
            self.state_trusting(mesh, ns, sa, &self.roots(mesh))
        }

        /// A certificate of `mesh` with other roots trusted.
        fn state_trusting(&self, mesh: &str, ns: &str, sa: &str, roots: &[String]) -> TlsState {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            let id = format!("spiffe://{mesh}.weft.local/ns/{ns}/sa/{sa}");
            params.subject_alt_names = vec![SanType::URI(id.as_str().try_into().unwrap())];
            let csr = params.serialize_request(&key).unwrap().pem().unwrap();
            let token = self.key.issue(&Claims {
                mesh: mesh.into(),
                namespace: ns.into(),
                service_account: sa.into(),
                expires_unix: OffsetDateTime::now_utc().unix_timestamp() + 60,
            });
            let issued = self.signer.sign(&csr, &token, mesh, OffsetDateTime::now_utc()).unwrap();
            let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
            TlsState::new(&issued.chain_pem, der, roots, SystemTime::now()).unwrap()
        }
    }

    /// Runs a handshake in memory between `client` (expecting `expected`)
    /// and `server`; returns the error, if any, as text.
    fn handshake(client: &TlsState, expected: &str, server: &TlsState) -> Result<(), String> {
        let config = client.client_config(expected, ALPN_H2).map_err(|e| e.to_string())?;
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let mut c = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut s = rustls::ServerConnection::new(server.server_config()).map_err(|e| e.to_string())?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                s.read_tls(&mut buf.as_slice()).unwrap();
                s.process_new_packets().map_err(|e| format!("server: {e}"))?;
            }
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                c.read_tls(&mut buf.as_slice()).unwrap();
                c.process_new_packets().map_err(|e| format!("client: {e}"))?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                assert_eq!(c.alpn_protocol(), Some(ALPN_H2));
                return Ok(());
            }
        }
        Err("handshake did not finish".into())
    }

    #[test]
    fn peers_of_one_mesh_with_the_expected_identity_connect() {
        let pki = pki();
        let client = pki.state("a", "shop", "frontend");
        let server = pki.state("a", "shop", "cart");
        assert_eq!(handshake(&client, "spiffe://a.weft.local/ns/shop/sa/cart", &server), Ok(()));
        assert_eq!(client.identity.to_string(), "spiffe://a.weft.local/ns/shop/sa/frontend");
    }

    #[test]
    fn a_peer_with_another_identity_is_refused() {
        let pki = pki();
        let client = pki.state("a", "shop", "frontend");
        let impostor = pki.state("a", "shop", "payments");
        let err = handshake(&client, "spiffe://a.weft.local/ns/shop/sa/cart", &impostor).unwrap_err();
        assert!(err.contains("expected spiffe://a.weft.local/ns/shop/sa/cart"), "{err}");
    }

    #[test]
    fn a_peer_of_another_mesh_is_refused_both_ways() {
        let pki = pki();
        let a = pki.state("a", "shop", "frontend");
        let b = pki.state("b", "shop", "cart");
        // The client does not trust mesh b's CA, even for the right name.
        let err = handshake(&a, "spiffe://b.weft.local/ns/shop/sa/cart", &b).unwrap_err();
        assert!(err.starts_with("client:") && err.contains("UnknownIssuer"), "{err}");
        // A server of mesh a refuses a client certificate from mesh b, even
        // from a client that trusts mesh a.
        let a_server = pki.state("a", "shop", "cart");
        let b_client = pki.state_trusting("b", "shop", "frontend", &pki.roots("a"));
        let err = handshake(&b_client, "spiffe://a.weft.local/ns/shop/sa/cart", &a_server).unwrap_err();
        assert!(err.starts_with("server:") && err.contains("UnknownIssuer"), "{err}");
    }

    #[test]
    fn new_roots_apply_to_the_certificate_in_force() {
        let pki = pki();
        let tls = MeshTls::new(Family::default());
        tls.install(pki.state("a", "shop", "frontend"));
        let before = tls.state().unwrap();
        let mut both = pki.roots("a");
        both.extend(pki.roots("b"));
        tls.set_roots(&both);
        let after = tls.state().unwrap();
        assert_eq!(after.roots_pem(), both.as_slice());
        assert_eq!(after.identity, before.identity);
        assert_eq!(before.signed_by_root, Some(0));
        assert_eq!(after.signed_by_root, Some(0));
        // Listed after another mesh's root, the signing root is found second.
        let mut reversed = pki.roots("b");
        reversed.extend(pki.roots("a"));
        tls.set_roots(&reversed);
        assert_eq!(tls.state().unwrap().signed_by_root, Some(1));
        // Unreadable roots leave the state alone.
        tls.set_roots(&["not a certificate".to_owned()]);
        assert_eq!(tls.state().unwrap().roots_pem(), reversed.as_slice());
    }
}
