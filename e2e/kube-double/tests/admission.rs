//! Mutating admission over HTTPS: a test webhook (rustls, rcgen CA) injects
//! into pods of labelled namespaces; selectors keep it away from others; a
//! wrong caBundle fails the TLS handshake (Fail → rejected); a webhook that
//! is down is skipped under Ignore; timeouts are honoured; denials carry the
//! webhook's status.

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube_double::{ApiServer, Options};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum Mode {
    Inject,
    Deny,
    Slow,
}

struct Hook {
    addr: SocketAddr,
    ca_pem: String,
    requests: Arc<Mutex<Vec<Value>>>,
}

fn ca() -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

async fn start_hook(mode: Mode) -> Hook {
    let (ca_pem, issuer) = ca();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["hook.weft-system.svc".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let reqs = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let reqs = reqs.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let reqs = reqs.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let review: Value = serde_json::from_slice(&body).unwrap();
                        reqs.lock().unwrap().push(review["request"].clone());
                        let uid = review["request"]["uid"].clone();
                        let response = match mode {
                            Mode::Inject => {
                                let patch = json!([
                                    {"op": "add", "path": "/metadata/labels/injected", "value": "true"},
                                    {"op": "add", "path": "/spec/containers/-", "value": {"name": "weft-proxy", "image": "weft/proxy:dev"}},
                                ]);
                                json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                                       "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())})
                            }
                            Mode::Deny => {
                                json!({"uid": uid, "allowed": false, "status": {"code": 403, "message": "no pods today"}})
                            }
                            Mode::Slow => {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                json!({"uid": uid, "allowed": true})
                            }
                        };
                        let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(out.to_string()))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    Hook { addr, ca_pem, requests }
}

fn mwc(name: &str, ca_pem: &str, client_config: Value, failure_policy: &str, timeout: u64) -> Value {
    let mut cc = client_config;
    cc["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(ca_pem));
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": name},
    "webhooks": [{
        "name": "inject.weft.io", "clientConfig": cc,
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
        "namespaceSelector": {"matchLabels": {"weft.io/sidecar-injection": "enabled"}},
        "objectSelector": {"matchExpressions": [{"key": "weft.io/sidecar-injection", "operator": "NotIn", "values": ["disabled"]}]},
        "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": failure_policy, "timeoutSeconds": timeout,
        "matchConditions": [{"name": "not-evaluated", "expression": "true"}],
    }]})
}

fn service_ref() -> Value {
    json!({"service": {"namespace": "weft-system", "name": "hook", "port": 443, "path": "/inject"}})
}

fn pod(name: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}})).unwrap()
}

fn setup() -> ApiServer {
    let server = ApiServer::start(Options::default()).unwrap();
    server.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "meshed", "labels": {"weft.io/sidecar-injection": "enabled"}}})).unwrap();
    server.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain"}})).unwrap();
    server
}

fn status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injects_only_where_selectors_match() {
    let server = setup();
    let hook = start_hook(Mode::Inject).await;
    server.route_service("weft-system", "hook", 443, hook.addr);
    server.create(mwc("weft-injector", &hook.ca_pem, service_ref(), "Fail", 5)).unwrap();
    let client = server.client("tester").await.unwrap();

    let meshed: Api<Pod> = Api::namespaced(client.clone(), "meshed");
    let mut p = pod("", json!({"app": "web"}));
    p.metadata.name = None;
    p.metadata.generate_name = Some("web-".into());
    let created = meshed.create(&PostParams::default(), &p).await.unwrap();
    let containers: Vec<String> = created.spec.as_ref().unwrap().containers.iter().map(|c| c.name.clone()).collect();
    assert_eq!(containers, vec!["app", "weft-proxy"]);
    assert_eq!(created.metadata.labels.as_ref().unwrap()["injected"], "true");
    let stored = server.get("v1", "Pod", "meshed", created.metadata.name.as_deref().unwrap()).unwrap();
    assert_eq!(stored["spec"]["containers"][1]["name"], "weft-proxy");

    let reqs = hook.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r["operation"], "CREATE");
    assert_eq!(r["kind"], json!({"group": "", "version": "v1", "kind": "Pod"}));
    assert_eq!(r["resource"], json!({"group": "", "version": "v1", "resource": "pods"}));
    assert_eq!(r["namespace"], "meshed");
    assert_eq!(r["name"], "", "generateName: no name yet");
    assert_eq!(r["userInfo"]["username"], "tester");
    assert_eq!(r["object"]["spec"]["serviceAccountName"], "default", "defaulted before admission");
    assert_eq!(r["object"]["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(r["object"]["metadata"]["generateName"], "web-");
    // kube-rs's own admission types decode the request.
    let review: kube::core::admission::AdmissionReview<Pod> =
        serde_json::from_value(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r}))
            .unwrap();
    let req: kube::core::admission::AdmissionRequest<Pod> = review.try_into().unwrap();
    assert_eq!(req.namespace.as_deref(), Some("meshed"));

    // Namespace without the label, and a pod that opts out: not called.
    let plain: Api<Pod> = Api::namespaced(client.clone(), "plain");
    let p = plain.create(&PostParams::default(), &pod("a", json!({}))).await.unwrap();
    assert_eq!(p.spec.unwrap().containers.len(), 1);
    let p = meshed
        .create(&PostParams::default(), &pod("b", json!({"weft.io/sidecar-injection": "disabled"})))
        .await
        .unwrap();
    assert_eq!(p.spec.unwrap().containers.len(), 1);
    assert_eq!(hook.requests.lock().unwrap().len(), 1);

    // Configurations are validated as the API server does.
    let mut bad = mwc("bad", &hook.ca_pem, service_ref(), "Fail", 5);
    bad["webhooks"][0].as_object_mut().unwrap().remove("sideEffects");
    bad["webhooks"][0]["timeoutSeconds"] = json!(60);
    let err = server.create(bad).unwrap_err();
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("webhooks[0].sideEffects") && err.message.contains("webhooks[0].timeoutSeconds"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_bundle_with_fail_rejects_the_pod() {
    let server = setup();
    let hook = start_hook(Mode::Inject).await;
    server.route_service("weft-system", "hook", 443, hook.addr);
    let (other_ca, _) = ca();
    server.create(mwc("weft-injector", &other_ca, service_ref(), "Fail", 5)).unwrap();
    let client = server.client("tester").await.unwrap();
    let meshed: Api<Pod> = Api::namespaced(client, "meshed");
    let s = status(meshed.create(&PostParams::default(), &pod("x", json!({}))).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    assert!(s.message.contains("failed calling webhook \"inject.weft.io\""), "{}", s.message);
    assert!(s.message.contains("x509: certificate signed by unknown authority"), "{}", s.message);
    assert!(server.get("v1", "Pod", "meshed", "x").is_none());
    assert!(hook.requests.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_down_with_ignore_creates_unchanged() {
    let server = setup();
    let (ca_pem, _) = ca();
    // Nothing listens here.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    server.route_service("weft-system", "hook", 443, closed);
    server.create(mwc("weft-injector", &ca_pem, service_ref(), "Ignore", 5)).unwrap();
    let client = server.client("tester").await.unwrap();
    let meshed: Api<Pod> = Api::namespaced(client, "meshed");
    let p = meshed.create(&PostParams::default(), &pod("x", json!({}))).await.unwrap();
    assert_eq!(p.spec.unwrap().containers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_honoured_and_denials_carry_the_status() {
    let server = setup();
    let slow = start_hook(Mode::Slow).await;
    let url = json!({"url": format!("https://127.0.0.1:{}/inject", slow.addr.port())});
    server.create(mwc("a-slow", &slow.ca_pem, url.clone(), "Fail", 1)).unwrap();
    let client = server.client("tester").await.unwrap();
    let meshed: Api<Pod> = Api::namespaced(client.clone(), "meshed");
    let t = Instant::now();
    let s = status(meshed.create(&PostParams::default(), &pod("x", json!({}))).await.unwrap_err());
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2900), "took {took:?}");
    assert_eq!(s.code, 500);
    assert!(s.message.contains("context deadline exceeded"), "{}", s.message);

    // The same slow webhook under Ignore: created after the timeout.
    server.delete("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", "a-slow").unwrap();
    server.create(mwc("a-slow", &slow.ca_pem, url, "Ignore", 1)).unwrap();
    meshed.create(&PostParams::default(), &pod("y", json!({}))).await.unwrap();
    server.delete("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", "a-slow").unwrap();

    // A denial: the webhook's code and message.
    let deny = start_hook(Mode::Deny).await;
    let url = json!({"url": format!("https://127.0.0.1:{}/inject", deny.addr.port())});
    server.create(mwc("b-deny", &deny.ca_pem, url, "Fail", 5)).unwrap();
    let s = status(meshed.create(&PostParams::default(), &pod("z", json!({}))).await.unwrap_err());
    assert_eq!(s.code, 403);
    assert_eq!(s.message, "admission webhook \"inject.weft.io\" denied the request: no pods today");
}
