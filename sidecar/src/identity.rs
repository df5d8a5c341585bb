//! The proxy's workload certificate: a key pair made here and never sent
//! or written anywhere, a CSR naming the SPIFFE ID the proxy claims, the
//! join token as proof, and renewal at about 70 % of the lifetime. While
//! renewal fails the proxy keeps the certificate it has (until it expires)
//! and retries with backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::PrivateKeyDer;
use weft_api::config as api;
use weft_identity::SpiffeId;

use crate::metrics::ResultLabels;
use crate::proxy::Proxy;
use crate::tls::TlsState;

/// Where the proxy's proof of identity comes from.
#[derive(Debug, Clone)]
pub enum Proof {
    /// A file holding a join token, read at every request (so it can be
    /// replaced while the proxy runs).
    File(PathBuf),
    /// A token given on the command line or in the environment.
    Inline(String),
}

impl Proof {
    /// The token, read now.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Proof::Inline(t) => Ok(t.trim().to_owned()),
            Proof::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_owned())
                .map_err(|e| format!("reading the token file {}: {e}", path.display())),
        }
    }
}

/// Who the proxy says it is.
#[derive(Debug, Clone)]
pub struct Claim {
    pub namespace: String,
    pub service_account: String,
    /// Empty: the control plane's default mesh.
    pub mesh: String,
}

/// A new key pair and a CSR for `identity` made with it. The key is
/// returned to the caller only; the CSR carries the public key.
pub fn key_and_csr(identity: &SpiffeId) -> Result<(PrivateKeyDer<'static>, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((PrivateKeyDer::Pkcs8(key.serialize_der().into()), csr))
}

/// One signing round trip: a fresh key, the CSR, the control plane's
/// answer, and the TLS state built from it.
pub async fn request_certificate(
    client: &mut api::certificates_client::CertificatesClient<tonic::transport::Channel>,
    identity: &SpiffeId,
    mesh: &str,
    token: String,
    roots_override: &[String],
) -> anyhow::Result<TlsState> {
    let (key, csr_pem) = key_and_csr(identity)?;
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.sign(api::SignRequest { csr_pem, token, mesh: mesh.to_owned() }),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the control plane did not answer within 10 s"))??
    .into_inner();
    let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(response.not_after_unix).unwrap_or(0));
    let roots = if roots_override.is_empty() { &response.roots_pem } else { roots_override };
    Ok(TlsState::new(&response.chain_pem, key, roots, not_after)?)
}

/// When to renew a certificate installed at `installed` that expires at
/// `not_after`: at 70 % of its lifetime, with up to 5 % of jitter so that
/// proxies started together do not renew together.
pub fn renewal_due(installed: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after.duration_since(installed).unwrap_or_default();
    installed + lifetime.mul_f64(0.70 - 0.05 * jitter.clamp(0.0, 1.0))
}

const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between attempts while a valid certificate is still held.
const LAST_RETRY: Duration = Duration::from_secs(30);
/// Longest wait while the proxy holds no valid certificate: it is not ready
/// (strict inbound refuses everything), so a control plane that comes back
/// must be found quickly.
const LAST_RETRY_WITHOUT_CERTIFICATE: Duration = Duration::from_secs(5);

/// The wait after the next failed attempt: doubled, and capped lower while
/// the proxy has no valid certificate to keep serving with.
fn next_retry(retry: Duration, holds_valid_certificate: bool) -> Duration {
    (retry * 2).min(if holds_valid_certificate { LAST_RETRY } else { LAST_RETRY_WITHOUT_CERTIFICATE })
}

/// Keeps the proxy's certificate current until the task is dropped.
pub async fn run(proxy: Arc<Proxy>, control_plane: String, claim: Claim, proof: Proof) {
    let channel = match tonic::transport::Endpoint::from_shared(control_plane.clone()) {
        Ok(e) => e.connect_timeout(Duration::from_secs(3)).tcp_nodelay(true).connect_lazy(),
        Err(e) => {
            tracing::error!(%control_plane, error = %e, "invalid control-plane address; no workload certificate");
            return;
        }
    };
    let mut client = api::certificates_client::CertificatesClient::new(channel);
    let mut retry = FIRST_RETRY;
    loop {
        // The trust domain comes with the mesh settings.
        let Some(mesh) = proxy.config.load().mesh.clone() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let identity = SpiffeId::new(&mesh.trust_domain, &claim.namespace, &claim.service_account);
        let mesh_name = if claim.mesh.is_empty() { mesh.name.as_str() } else { claim.mesh.as_str() };
        let result = match proof.read() {
            Ok(token) => request_certificate(&mut client, &identity, mesh_name, token, &mesh.roots_pem).await,
            Err(e) => Err(anyhow::anyhow!(e)),
        };
        match result {
            Ok(state) => {
                let not_after = state.not_after;
                let due = renewal_due(state.installed, not_after, fastrand::f64());
                tracing::info!(
                    %identity,
                    expires_in_s = not_after.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
                    "workload certificate installed"
                );
                proxy.tls.install(state);
                proxy.metrics.certificate_requests.get_or_create(&ResultLabels { result: "issued" }).inc();
                proxy.metrics.certificate_expiry.set(unix(not_after));
                retry = FIRST_RETRY;
                tokio::time::sleep(due.duration_since(SystemTime::now()).unwrap_or_default()).await;
            }
            Err(e) => {
                proxy.metrics.certificate_requests.get_or_create(&ResultLabels { result: "failed" }).inc();
                let still_valid = proxy.tls.state().is_some_and(|s| s.not_after > SystemTime::now());
                tracing::warn!(
                    %identity,
                    error = %format!("{e:#}"),
                    retry_in_ms = retry.as_millis() as u64,
                    keeping_current = still_valid,
                    "workload certificate request failed"
                );
                let jittered = retry.mul_f64(0.5 + fastrand::f64() / 2.0);
                tokio::time::sleep(jittered).await;
                retry = next_retry(retry, still_valid);
            }
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_about_seventy_percent() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let end = start + Duration::from_secs(100);
        assert_eq!(renewal_due(start, end, 0.0), start + Duration::from_secs(70));
        assert_eq!(renewal_due(start, end, 1.0), start + Duration::from_secs(65));
        // An already expired or inverted window renews at once.
        assert_eq!(renewal_due(end, start, 0.5), end);
    }

    #[test]
    fn retries_back_off_less_while_no_valid_certificate_is_held() {
        let mut without = FIRST_RETRY;
        let mut with = FIRST_RETRY;
        for _ in 0..10 {
            without = next_retry(without, false);
            with = next_retry(with, true);
        }
        assert_eq!(without, Duration::from_secs(5));
        assert_eq!(with, Duration::from_secs(30));
        assert_eq!(next_retry(FIRST_RETRY, false), Duration::from_secs(2));
    }

    #[test]
    fn the_csr_names_the_identity_and_holds_no_private_key() {
        let id = SpiffeId::new("default.weft.local", "shop", "cart");
        let (key, csr) = key_and_csr(&id).unwrap();
        assert!(!csr.contains("PRIVATE"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        let sans: Vec<String> = parsed
            .params
            .subject_alt_names
            .iter()
            .map(|s| match s {
                SanType::URI(u) => u.as_str().to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, vec![id.to_string()]);
        // The CSR's public key is the key pair's.
        let pair = KeyPair::try_from(&key).unwrap();
        assert_eq!(rcgen::PublicKeyData::der_bytes(&parsed.public_key), pair.public_key_raw());
    }
}
