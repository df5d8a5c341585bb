//! Serving the injection webhook: its TLS certificate, the `caBundle` of
//! its MutatingWebhookConfiguration, and the HTTPS server.
//!
//! The control plane owns the certificate, as istiod does: a CA and a
//! serving certificate for `<service>.<namespace>.svc`, made by the leader
//! with rcgen and kept in the Secret `weft-webhook-tls`, so every replica
//! serves the same one (each reads it through a watch and swaps it in
//! without a restart). The leader also keeps the `caBundle` of every
//! webhook of the configuration equal to that CA, re-patching it whenever
//! it drifts — after a `helm upgrade` or a re-apply of the chart, say,
//! which is how injection broke for Istio users (istio#6069): pod creation
//! then fails with "x509: certificate signed by unknown authority".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::FIELD_MANAGER;
use crate::injector::Injector;
use crate::leader::Leadership;

/// The Secret holding the webhook's CA and serving certificate.
pub const TLS_SECRET: &str = "weft-webhook-tls";
/// Lifetime of the webhook CA.
const CA_LIFETIME: time::Duration = time::Duration::days(3650);
/// Lifetime of the serving certificate; renewed after 80 % of it.
const LEAF_LIFETIME: time::Duration = time::Duration::days(365);

/// Where the webhook is.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// The control plane's namespace (the Secret lives there).
    pub namespace: String,
    /// The Service in front of the webhook (the certificate's name).
    pub service: String,
    /// The MutatingWebhookConfiguration whose `caBundle` Weft keeps.
    pub configuration: String,
}

/// The certificate the webhook serves, swapped when the Secret changes.
#[derive(Debug, Default)]
pub struct ServingCert {
    current: ArcSwapOption<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    ca_pem: String,
    /// The Secret's data as loaded (to notice changes).
    data: BTreeMap<String, Vec<u8>>,
}

impl ServingCert {
    /// The CA (PEM) that signs the served certificate, if one is loaded.
    pub fn ca_pem(&self) -> Option<String> {
        self.current.load().as_ref().map(|l| l.ca_pem.clone())
    }

    /// Whether a certificate is being served.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|l| l.key.clone())
    }
}

/// The DNS names the serving certificate must cover.
fn names(config: &WebhookConfig) -> Vec<String> {
    let (s, ns) = (&config.service, &config.namespace);
    vec![format!("{s}.{ns}.svc"), format!("{s}.{ns}.svc.cluster.local"), format!("{s}.{ns}"), s.clone()]
}

/// A new CA and serving certificate, as Secret data.
pub fn generate(config: &WebhookConfig, now: OffsetDateTime) -> Result<BTreeMap<String, Vec<u8>>, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::OrganizationName, "Weft");
    ca.distinguished_name.push(DnType::CommonName, "Weft injection webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = now - time::Duration::minutes(5);
    ca.not_after = now + CA_LIFETIME;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = leaf(config, &issuer, now)?;
    Ok(BTreeMap::from([
        ("ca.crt".to_string(), ca_cert.pem().into_bytes()),
        ("ca.key".to_string(), ca_key_pem.into_bytes()),
        ("tls.crt".to_string(), leaf.0.into_bytes()),
        ("tls.key".to_string(), leaf.1.into_bytes()),
    ]))
}

fn leaf(
    config: &WebhookConfig,
    issuer: &Issuer<'_, KeyPair>,
    now: OffsetDateTime,
) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names(config))?;
    params.distinguished_name.push(DnType::CommonName, format!("{}.{}.svc", config.service, config.namespace));
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + LEAF_LIFETIME;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The Secret data with a new serving certificate from the same CA.
fn renewed(
    config: &WebhookConfig,
    data: &BTreeMap<String, Vec<u8>>,
    now: OffsetDateTime,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let text = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned()).ok_or(format!("no {k}"));
    let key = KeyPair::from_pem(&text("ca.key")?).map_err(|e| e.to_string())?;
    let issuer = Issuer::from_ca_cert_pem(&text("ca.crt")?, key).map_err(|e| e.to_string())?;
    let (crt, key) = leaf(config, &issuer, now).map_err(|e| e.to_string())?;
    let mut out = data.clone();
    out.insert("tls.crt".into(), crt.into_bytes());
    out.insert("tls.key".into(), key.into_bytes());
    Ok(out)
}

/// Parses Secret data into what the server serves; also says when the
/// serving certificate should be renewed.
fn load(data: &BTreeMap<String, Vec<u8>>) -> Result<(Loaded, OffsetDateTime), String> {
    let get = |k: &str| data.get(k).ok_or(format!("no {k}"));
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(get("tls.crt")?).collect::<Result<_, _>>().map_err(|_| "tls.crt is not PEM")?;
    let leaf = chain.first().ok_or("tls.crt holds no certificate")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|_| "tls.crt is not X.509")?;
    let validity = parsed.validity();
    let (from, until) = (validity.not_before.to_datetime(), validity.not_after.to_datetime());
    let renew_at = from + (until - from) * 0.8;
    let key = PrivateKeyDer::from_pem_slice(get("tls.key")?).map_err(|_| "tls.key holds no private key")?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| "tls.key is not usable")?;
    let ca_pem = String::from_utf8_lossy(get("ca.crt")?).into_owned();
    Ok((Loaded { key: Arc::new(CertifiedKey::new(chain, signing)), ca_pem, data: data.clone() }, renew_at))
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect()
}

fn to_secret(config: &WebhookConfig, data: BTreeMap<String, Vec<u8>>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(TLS_SECRET.into()),
            namespace: Some(config.namespace.clone()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    }
}

/// Keeps `cert` equal to the Secret (every replica), and while leading
/// creates the Secret when missing and renews the serving certificate at
/// 80 % of its life. Runs forever.
pub async fn sync_certificate(
    client: kube::Client,
    config: WebhookConfig,
    mut leadership: watch::Receiver<Leadership>,
    cert: Arc<ServingCert>,
) {
    let api: Api<Secret> = Api::namespaced(client, &config.namespace);
    let selector = format!("metadata.name={TLS_SECRET}");
    let mut stream = watcher(api.clone(), watcher::Config::default().fields(&selector)).default_backoff().boxed();
    let mut listed = false;
    let mut present: Option<(BTreeMap<String, Vec<u8>>, OffsetDateTime)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            item = stream.next() => {
                let Some(item) = item else { return };
                match item {
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                        let data = secret_data(&s);
                        match load(&data) {
                            Ok((loaded, renew_at)) => {
                                let changed = cert.current.load().as_ref().is_none_or(|l| l.data != data);
                                if changed {
                                    tracing::info!(secret = %format!("{}/{TLS_SECRET}", config.namespace), "webhook certificate loaded");
                                    cert.current.store(Some(Arc::new(loaded)));
                                }
                                present = Some((data, renew_at));
                            }
                            Err(e) => {
                                tracing::error!(secret = %format!("{}/{TLS_SECRET}", config.namespace), error = %e, "the webhook certificate Secret is not usable");
                                present = None;
                            }
                        }
                    }
                    Ok(watcher::Event::Delete(_)) => present = None,
                    Ok(watcher::Event::Init) => {}
                    Ok(watcher::Event::InitDone) => listed = true,
                    Err(e) => tracing::warn!(error = %e, "watching the webhook certificate Secret failed; retrying"),
                }
            }
            r = leadership.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        if !listed || !leadership.borrow().is_leader() {
            continue;
        }
        let now = OffsetDateTime::now_utc();
        match &present {
            None => {
                let data = match generate(&config, now) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(error = %e, "could not generate the webhook certificate");
                        continue;
                    }
                };
                let secret = to_secret(&config, data);
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => tracing::info!("webhook certificate created"),
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        // A Secret that is there but unusable: replace it.
                        if let Err(e) = api.replace(TLS_SECRET, &PostParams::default(), &secret).await {
                            tracing::warn!(error = %e, "could not replace the unusable webhook certificate Secret");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not create the webhook certificate Secret"),
                }
            }
            Some((data, renew_at)) if now >= *renew_at => match renewed(&config, data, now) {
                Ok(new) => match api.replace(TLS_SECRET, &PostParams::default(), &to_secret(&config, new)).await {
                    Ok(_) => tracing::info!("webhook serving certificate renewed"),
                    Err(e) => tracing::warn!(error = %e, "could not renew the webhook serving certificate"),
                },
                Err(e) => tracing::error!(error = %e, "could not renew the webhook serving certificate"),
            },
            Some(_) => {}
        }
    }
}

/// The JSON patch that sets every webhook's `caBundle` to `ca_pem`, or
/// `None` when they all hold it already. Each replace is guarded by a test
/// of the webhook's name at that index, so a concurrent reordering makes
/// the patch fail instead of writing the wrong entry.
pub fn ca_bundle_patch(config: &MutatingWebhookConfiguration, ca_pem: &str) -> Option<json_patch::Patch> {
    let mut ops = Vec::new();
    for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref().is_some_and(|b| b.0 == ca_pem.as_bytes()) {
            continue;
        }
        use base64::Engine as _;
        let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
        ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}));
        ops.push(
            serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}),
        );
    }
    if ops.is_empty() {
        return None;
    }
    serde_json::from_value(serde_json::Value::Array(ops)).ok()
}

/// While leading, keeps the `caBundle` of the webhook configuration equal
/// to the served CA. Runs forever.
pub async fn keep_ca_bundle(
    client: kube::Client,
    config: WebhookConfig,
    mut leadership: watch::Receiver<Leadership>,
    cert: Arc<ServingCert>,
    repairs: prometheus_client::metrics::counter::Counter,
) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let selector = format!("metadata.name={}", config.configuration);
    let mut stream = watcher(api.clone(), watcher::Config::default().fields(&selector)).default_backoff().boxed();
    let mut current: Option<MutatingWebhookConfiguration> = None;
    let mut warned_missing = false;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            item = stream.next() => {
                let Some(item) = item else { return };
                match item {
                    Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => current = Some(c),
                    Ok(watcher::Event::Delete(_)) => current = None,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "watching the webhook configuration failed; retrying"),
                }
            }
            r = leadership.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        if !leadership.borrow().is_leader() {
            continue;
        }
        let Some(ca) = cert.ca_pem() else { continue };
        let Some(c) = &current else {
            if !warned_missing {
                tracing::warn!(configuration = %config.configuration, "no MutatingWebhookConfiguration of that name: pods are not injected");
                warned_missing = true;
            }
            continue;
        };
        warned_missing = false;
        let Some(patch) = ca_bundle_patch(c, &ca) else { continue };
        let params = PatchParams { field_manager: Some(format!("{FIELD_MANAGER}/webhook-ca")), ..Default::default() };
        match api.patch(&config.configuration, &params, &Patch::<()>::Json(patch)).await {
            Ok(updated) => {
                tracing::info!(configuration = %config.configuration, "caBundle set to the webhook's CA");
                repairs.inc();
                current = Some(updated);
            }
            Err(e) => tracing::warn!(configuration = %config.configuration, error = %e, "could not set the caBundle"),
        }
    }
}

/// Serves the webhook over TLS (HTTP/1.1 and HTTP/2): `POST /inject`
/// answers AdmissionReviews, `GET /healthz` says whether a certificate is
/// loaded. Runs until the listener fails.
pub async fn serve(listener: TcpListener, cert: Arc<ServingCert>, injector: Arc<Injector>) -> std::io::Result<()> {
    use http_body_util::{BodyExt, Full, Limited};
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, injector) = (acceptor.clone(), injector.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let injector = injector.clone();
                async move {
                    let respond = |status: StatusCode, body: Vec<u8>, json: bool| {
                        let mut r = Response::new(Full::new(bytes::Bytes::from(body)));
                        *r.status_mut() = status;
                        let ct = if json { "application/json" } else { "text/plain" };
                        r.headers_mut()
                            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ct));
                        Ok::<_, std::convert::Infallible>(r)
                    };
                    match (req.method().as_str(), req.uri().path()) {
                        ("POST", "/inject") => {
                            // Pods are small; 16 MiB bounds a hostile body.
                            match Limited::new(req.into_body(), 16 << 20).collect().await {
                                Ok(body) => {
                                    let answer = injector.admit(&body.to_bytes());
                                    respond(
                                        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK),
                                        answer.body,
                                        true,
                                    )
                                }
                                Err(e) => respond(
                                    StatusCode::BAD_REQUEST,
                                    format!("cannot read the request: {e}\n").into_bytes(),
                                    false,
                                ),
                            }
                        }
                        ("GET", "/healthz") => respond(StatusCode::OK, b"ok\n".to_vec(), false),
                        _ => respond(StatusCode::NOT_FOUND, b"POST /inject\n".to_vec(), false),
                    }
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WebhookConfig {
        WebhookConfig {
            namespace: "weft-system".into(),
            service: "weft-cp".into(),
            configuration: "weft-injector".into(),
        }
    }

    #[test]
    fn generated_certificates_load_and_renew_from_the_same_ca() {
        let now = OffsetDateTime::now_utc();
        let data = generate(&config(), now).unwrap();
        let (loaded, renew_at) = load(&data).unwrap();
        assert!(renew_at > now + time::Duration::days(290) && renew_at < now + time::Duration::days(293));
        let renewed = renewed(&config(), &data, now + time::Duration::days(300)).unwrap();
        assert_eq!(renewed["ca.crt"], data["ca.crt"]);
        assert_ne!(renewed["tls.crt"], data["tls.crt"]);
        let (again, _) = load(&renewed).unwrap();
        assert_eq!(again.ca_pem, loaded.ca_pem);
        // The serving certificate names the Service.
        let der = CertificateDer::pem_slice_iter(&data["tls.crt"]).next().unwrap().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let sans = cert.subject_alternative_name().unwrap().unwrap().value.general_names.len();
        assert_eq!(sans, 4);
    }

    #[test]
    fn the_ca_bundle_patch_covers_only_webhooks_that_differ() {
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let c: MutatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "weft-injector"},
            "webhooks": [
                {"name": "namespaces.weft.io", "clientConfig": {"caBundle": "c3RhbGU="}, "sideEffects": "None", "admissionReviewVersions": ["v1"]},
                {"name": "pods.weft.io", "clientConfig": {"caBundle": base64_of(ca)}, "sideEffects": "None", "admissionReviewVersions": ["v1"]},
            ]
        }))
        .unwrap();
        let patch = serde_json::to_value(ca_bundle_patch(&c, ca).unwrap()).unwrap();
        assert_eq!(patch.as_array().unwrap().len(), 2);
        assert_eq!(patch[0]["path"], "/webhooks/0/name");
        assert_eq!(patch[1]["path"], "/webhooks/0/clientConfig/caBundle");
        assert_eq!(patch[1]["value"], base64_of(ca));
        let mut fixed = c.clone();
        fixed.webhooks.as_mut().unwrap()[0].client_config.ca_bundle = Some(ByteString(ca.as_bytes().to_vec()));
        assert!(ca_bundle_patch(&fixed, ca).is_none());
    }

    fn base64_of(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    }
}
