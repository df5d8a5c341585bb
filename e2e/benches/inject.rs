//! Injection and identity benchmark, against the API-server double with a
//! release `weft-cp`:
//!
//! * the webhook: 1,000 AdmissionReviews sent straight to it over HTTPS
//!   (its own latency), and 1,000 pods created through the double's API,
//!   which calls the webhook (creation latency with injection, against the
//!   same creations in a namespace without injection);
//! * certificate signing with a ServiceAccount token: 300 requests each with
//!   a new token (a TokenReview each) and 300 with one token (cached
//!   review), against join tokens (no review).
//!
//! Run: `./scripts/bench inject`. The double runs in this process and
//! shares the machine's cores with the control plane.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use weft_api as api;
use weft_e2e::kube::Kube;

fn pct(v: &mut [Duration], q: f64) -> String {
    v.sort();
    let d = v[((v.len() as f64 - 1.0) * q).round() as usize];
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn review(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE", "userInfo": {"username": "bench"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{i}"), "namespace": "shop", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "example/app",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}}]}},
        }
    }))
    .unwrap()
}

fn main() -> anyhow::Result<()> {
    let mut kube = Kube::start("bench-inject", None)?;
    kube.start_control_plane("weft-cp-0", 15, None, None)?;
    kube.install_webhook()?;
    kube.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {weft.io/sidecar-injection: enabled}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: shop}\n",
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let webhook = kube.control_planes[0].webhook_addr.expect("webhook");
    let grpc = kube.control_planes[0].grpc_addr;
    let ca_b64 = kube.get("mutatingwebhookconfiguration", None, "weft-injector")?.expect("mwc")["webhooks"][0]
        ["clientConfig"]["caBundle"]
        .as_str()
        .unwrap()
        .to_string();
    use base64::Engine as _;
    let ca_pem = base64::engine::general_purpose::STANDARD.decode(ca_b64)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    // 1. The webhook alone: HTTPS POSTs on one kept-alive connection.
    let mut direct = rt
        .block_on(async {
            let mut roots = rustls::RootCertStore::empty();
            for c in <rustls_pki_types::CertificateDer<'_> as rustls_pki_types::pem::PemObject>::pem_slice_iter(&ca_pem)
            {
                roots.add(c?)?;
            }
            let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let tcp = tokio::net::TcpStream::connect(webhook).await?;
            let name = rustls_pki_types::ServerName::try_from("weft-cp.weft-system.svc")?.to_owned();
            let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut out = Vec::new();
            for i in 0..1100 {
                let body = review(i);
                let req = http::Request::post("/inject")
                    .header("content-type", "application/json")
                    .header("host", "weft-cp.weft-system.svc")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
                sender.ready().await?;
                let started = Instant::now();
                let resp = sender.send_request(req).await?;
                let body = http_body_util::BodyExt::collect(resp.into_body()).await?.to_bytes();
                let took = started.elapsed();
                anyhow::ensure!(
                    body.windows(9).any(|w| w == b"JSONPatch"),
                    "no patch in {}",
                    String::from_utf8_lossy(&body)
                );
                if i >= 100 {
                    out.push(took);
                }
            }
            anyhow::Ok(out)
        })
        .context("admissions straight to the webhook")?;

    // 2. Pod creation through the API, injected and not.
    let client = rt.block_on(kube.api.client("bench"))?;
    let create = |ns: &str, n: usize| -> anyhow::Result<Vec<Duration>> {
        rt.block_on(async {
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), ns);
            let mut out = Vec::new();
            for i in 0..n {
                let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{i}")},
                    "spec": {"containers": [{"name": "app", "image": "example/app"}]}}))?;
                let started = Instant::now();
                let created = pods.create(&Default::default(), &pod).await?;
                out.push(started.elapsed());
                let injected = created.spec.as_ref().and_then(|s| s.init_containers.as_ref()).is_some();
                anyhow::ensure!(injected == (ns == "shop"), "pod {i} in {ns}: injected {injected}");
            }
            anyhow::Ok(out)
        })
    };
    let mut injected = create("shop", 1000).context("injected pod creations")?;
    let mut plain = create("plain", 1000).context("plain pod creations")?;

    println!("| webhook (1,000 admissions) | p50 | p99 |");
    println!("|---|---:|---:|");
    println!(
        "| AdmissionReview straight to the webhook (HTTPS, kept-alive) | {} | {} |",
        pct(&mut direct, 0.5),
        pct(&mut direct, 0.99)
    );
    println!(
        "| pod create through the API server double, injected | {} | {} |",
        pct(&mut injected, 0.5),
        pct(&mut injected, 0.99)
    );
    println!(
        "| pod create, namespace without injection (no webhook call) | {} | {} |",
        pct(&mut plain, 0.5),
        pct(&mut plain, 0.99)
    );

    // 3. Certificate signing.
    let key = rcgen::KeyPair::generate()?;
    let csr_for = |sa: &str| -> anyhow::Result<String> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names =
            vec![rcgen::SanType::URI(format!("spiffe://default.weft.local/ns/shop/sa/{sa}").try_into()?)];
        Ok(params.serialize_request(&key)?.pem()?)
    };
    let csr = csr_for("web")?;
    let sign = |tokens: &mut dyn FnMut(usize) -> String, n: usize| -> anyhow::Result<Vec<Duration>> {
        rt.block_on(async {
            let mut client = api::certificates_client::CertificatesClient::connect(format!("http://{grpc}")).await?;
            let mut out = Vec::new();
            for i in 0..n {
                let req = api::SignRequest { csr_pem: csr.clone(), token: tokens(i), mesh: "default".into() };
                let started = Instant::now();
                client.sign(req).await?;
                out.push(started.elapsed());
            }
            anyhow::Ok(out)
        })
    };
    let issue = |_: usize| kube.api.issue_token("shop", "web", &["weft.io/identity"], Duration::from_secs(3600), None);
    let fresh: Vec<String> = (0..300).map(issue).collect();
    let mut uncached = sign(&mut |i| fresh[i].clone(), 300).context("signing with fresh tokens")?;
    let one = fresh[0].clone();
    let mut cached = sign(&mut |_| one.clone(), 300)?;
    // Join tokens: made with the key the control plane keeps in its Secret.
    let secret = kube.api.get("v1", "Secret", "weft-system", "weft-join-token-key").expect("the token key");
    let raw = base64::engine::general_purpose::STANDARD.decode(secret["data"]["token.key"].as_str().unwrap())?;
    let join = weft_identity::TokenKey::from_bytes(&raw).issue(&weft_identity::Claims {
        mesh: "default".into(),
        namespace: "shop".into(),
        service_account: "web".into(),
        expires_unix: time::OffsetDateTime::now_utc().unix_timestamp() + 3600,
    });
    let mut joined = sign(&mut |_| join.clone(), 300)?;
    println!();
    println!("| certificate signing (300 each) | p50 | p99 |");
    println!("|---|---:|---:|");
    println!(
        "| ServiceAccount token, new each time (TokenReview) | {} | {} |",
        pct(&mut uncached, 0.5),
        pct(&mut uncached, 0.99)
    );
    println!("| ServiceAccount token, cached review | {} | {} |", pct(&mut cached, 0.5), pct(&mut cached, 0.99));
    println!("| join token (no review) | {} | {} |", pct(&mut joined, 0.5), pct(&mut joined, 0.99));
    let reviews = kube.api.recorded().into_iter().filter(|r| r.resource == "tokenreviews").count();
    println!("\nTokenReviews sent by the control plane: {reviews} (for 300 distinct tokens and 300 uses of one)");
    rt.shutdown_background();
    Ok(())
}
