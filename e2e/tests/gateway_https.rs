//! HTTPS at a provisioned gateway (Kubernetes mode): a listener with two
//! certificates, chosen by the client's SNI server name — as curl and
//! OpenSSL's s_client see them — and a certificate rotated (its Secret
//! updated) under 100 requests a second without a failed request.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use weft_e2e::load::Outcome;
use weft_e2e::mesh::{Mesh, PodSpec};
use weft_e2e::netns::Pod;

const MANIFESTS: &str = r#"apiVersion: weft.io/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  mtls: {mode: Strict}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.io/sidecar-injection: enabled}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec:
  controllerName: weft.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: weft
  listeners:
  - name: https
    protocol: HTTPS
    port: 443
    tls:
      mode: Terminate
      certificateRefs: [{name: store-cert}, {name: admin-cert}]
---
apiVersion: v1
kind: Service
metadata: {name: store, namespace: shop}
spec:
  clusterIP: 10.96.50.11
  selector: {app: store}
  ports: [{name: http, port: 9080, appProtocol: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [store.example, admin.example]
  rules:
  - backendRefs: [{name: store, port: 9080}]
"#;

/// A CA and leaves signed by it.
struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> anyhow::Result<Pki> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "e2e gateway CA");
        let cert = params.self_signed(&key)?;
        Ok(Pki { ca_pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) })
    }

    /// A `kubernetes.io/tls` Secret for `host`.
    fn secret(&self, name: &str, host: &str, serial: u64) -> anyhow::Result<String> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()])?;
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{host} #{serial}"));
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer)?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        Ok(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": "shop"},
            "data": {"tls.crt": b64(&cert.pem()), "tls.key": b64(&key.serialize_pem())},
        })
        .to_string())
    }
}

/// What a real TLS client sees: the subject of the certificate served for
/// `server_name` (OpenSSL's s_client).
fn served_subject(client: &Pod, address: SocketAddr, server_name: &str) -> anyhow::Result<String> {
    let script = format!(
        "openssl s_client -connect {address} -servername {server_name} </dev/null 2>/dev/null | openssl x509 -noout -subject"
    );
    Ok(client.exec_ok(&["bash", "-c", &script])?.trim().to_string())
}

/// curl over HTTPS, verifying the chain and the name: the HTTP status.
fn curl(client: &Pod, address: SocketAddr, host: &str, ca: &Path) -> anyhow::Result<String> {
    let resolve = format!("{host}:{}:{}", address.port(), address.ip());
    let url = format!("https://{host}/");
    let out = client.exec_ok(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{ssl_verify_result}",
        "--cacert",
        &ca.to_string_lossy(),
        "--resolve",
        &resolve,
        &url,
    ])?;
    Ok(out.trim().to_string())
}

#[test]
fn https_listeners_choose_certificates_by_sni_and_rotate_without_failures() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let mut mesh = Mesh::start_kubernetes("gateway-https")?;
    mesh.kube()?.install_webhook()?;
    mesh.kube()?.apply(MANIFESTS)?;
    mesh.kube()?.apply(&pki.secret("store-cert", "store.example", 1)?)?;
    mesh.kube()?.apply(&pki.secret("admin-cert", "admin.example", 2)?)?;
    let ca = mesh.cluster.log_dir().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem)?;
    mesh.kube()?.wait_for("the gateway's Deployment", Duration::from_secs(30), |k| {
        Ok(k.get("deployment", Some("shop"), "edge")?.map(|_| ()))
    })?;
    let backend =
        mesh.add_injected_pod(&PodSpec::new("store-a", "shop").label("app", "store").port("http", 9080), None)?.0;
    mesh.wait_ready_and_report(&backend, "shop", Duration::from_secs(30))?;
    let gateway = mesh.add_gateway_replica("shop", "edge", "edge-7d9f-a")?;
    mesh.wait_ready_and_report(&gateway, "shop", Duration::from_secs(30))?;
    let address = SocketAddr::new(gateway.ip().into(), 443);
    mesh.wait_for_config(&gateway, "both certificates on the gateway", Duration::from_secs(30), |d| {
        d["certificates"].as_object().is_some_and(|c| c.len() == 2)
    })?;
    // The config dump names the certificates and never shows a key.
    let dump = mesh.config_dump(&gateway)?;
    assert!(!dump.to_string().contains("PRIVATE KEY"), "a key in the config dump");
    let client = mesh.add_pod(&PodSpec::new("outsider", "shop").without_sidecar())?;
    mesh.kube()?.wait_for("the gateway serving HTTPS", Duration::from_secs(30), |_| {
        Ok(curl(&client, address, "store.example", &ca).ok().filter(|s| s == "200 0").map(|_| ()))
    })?;

    // Each server name gets its own certificate, as real clients see it.
    for (host, expected) in [("store.example", "store.example #1"), ("admin.example", "admin.example #2")] {
        let subject = served_subject(&client, address, host)?;
        println!("SNI {host}: served {subject}");
        assert!(subject.contains(expected), "SNI {host}: {subject}");
        assert_eq!(curl(&client, address, host, &ca)?, "200 0", "curl to {host}");
    }

    // Rotation under load: 100 requests a second over HTTPS; the Secret
    // gets a new certificate and key after 3 s.
    let serial_before = mesh.config_dump(&gateway)?["certificates"]["shop/store-cert"]["serial"].clone();
    assert!(serial_before.is_string(), "the config dump shows no serial: {serial_before}");
    let load = mesh.start_load_tls(&client, address, "store.example", &ca, 100, 10.0)?;
    std::thread::sleep(Duration::from_secs(3));
    mesh.kube()?.apply(&pki.secret("store-cert", "store.example", 3)?)?;
    let outcomes = load.finish()?;
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 200).collect();
    println!("rotation under 100 req/s: {} requests, {} failed", outcomes.len(), failed.len());
    assert!(outcomes.len() >= 990, "only {} requests", outcomes.len());
    assert!(failed.is_empty(), "failed during the rotation: {:?}", &failed[..failed.len().min(5)]);
    let rotated = mesh.config_dump(&gateway)?["certificates"]["shop/store-cert"].clone();
    println!("the gateway's store certificate after the rotation: {rotated}");
    assert_ne!(rotated["serial"], serial_before, "the config dump still shows the old certificate");
    let subject = served_subject(&client, address, "store.example")?;
    println!("after the rotation, SNI store.example: served {subject}");
    assert!(subject.contains("store.example #3"), "{subject}");
    Ok(())
}
