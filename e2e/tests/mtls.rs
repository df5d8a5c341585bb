//! Mesh identity end to end: strict and permissive inbound, isolation
//! between meshes, and certificate rotation under load — real sidecars in
//! network namespaces, certificates from the control plane's CA.

use std::net::SocketAddr;
use std::time::Duration;

use weft_e2e::mesh::{Mesh, PodSpec};
use weft_e2e::netns::Pod;

const REVIEWS_VIP: &str = "10.96.110.10";

/// Two meshes: `default` (strict, in namespace `secure`) and `legacy`
/// (permissive, in namespace `legacy`), each with an echo Service.
fn manifests(default_extra: &str) -> String {
    let mut s = format!(
        "apiVersion: weft.io/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\nspec:\n  mtls: {{mode: Strict{default_extra}}}\n---\n\
         apiVersion: weft.io/v1alpha1\nkind: Mesh\nmetadata: {{name: legacy}}\nspec:\n  mtls: {{mode: Permissive}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: secure}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: legacy, labels: {{weft.io/mesh: legacy}}}}\n---\n"
    );
    for (ns, ip) in [("secure", REVIEWS_VIP), ("legacy", "10.96.110.20")] {
        s += &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: {ns}}}\nspec:\n  clusterIP: {ip}\n  selector: {{app: reviews}}\n  ports: [{{name: http, port: 9080, appProtocol: http}}]\n---\n"
        );
    }
    s
}

/// A plain GET from inside `pod` to `addr`; the status, or the reason
/// there was none.
fn get(pod: &Pod, addr: SocketAddr) -> Result<u16, String> {
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let raw = pod.tcp_exchange(None, addr, request.as_bytes(), Duration::from_secs(5)).map_err(|e| format!("{e:#}"))?;
    if raw.is_empty() {
        return Err("connection closed without a response".into());
    }
    weft_e2e::http1::Response::parse(&raw).map(|r| r.status).map_err(|e| format!("{e:#}"))
}

#[test]
fn strict_refuses_plaintext_permissive_accepts_it_and_meshes_are_isolated() -> anyhow::Result<()> {
    let mut mesh = Mesh::start("mtls", &[("all.yaml", &manifests(""))])?;
    // The sidecars here run single-threaded, as on a pod with one CPU;
    // the other e2e tests take the multi-threaded path.
    let strict =
        mesh.add_pod(&PodSpec::new("reviews-s", "secure").label("app", "reviews").port("http", 9080).workers(1))?;
    let permissive = mesh.add_pod(
        &PodSpec::new("reviews-p", "legacy").mesh("legacy").label("app", "reviews").port("http", 9080).workers(1),
    )?;
    let outsider = mesh.add_pod(&PodSpec::new("outsider", "secure").without_sidecar())?;
    let legacy_client =
        mesh.add_pod(&PodSpec::new("legacy-client", "legacy").mesh("legacy").label("app", "c").workers(1))?;
    for pod in [&strict, &permissive, &legacy_client] {
        mesh.wait_for_certificate(pod, Duration::from_secs(30))?;
    }
    for pod in [&strict, &permissive, &legacy_client] {
        let log = std::fs::read_to_string(pod.log_file("proxy"))?;
        assert!(log.contains("single_threaded=true"), "{}: the sidecar is not single-threaded:\n{log}", pod.name());
    }
    let strict_dump = mesh.config_dump(&strict)?;
    assert_eq!(strict_dump["mtls"], "strict");
    assert_eq!(strict_dump["certificate"]["identity"], "spiffe://default.weft.local/ns/secure/sa/default");
    assert_eq!(
        mesh.config_dump(&permissive)?["certificate"]["identity"],
        "spiffe://legacy.weft.local/ns/legacy/sa/default"
    );

    // A client without a sidecar: refused by the strict pod, served by the
    // permissive one.
    let to_strict = get(&outsider, SocketAddr::new(strict.ip().into(), 9080));
    let to_permissive = get(&outsider, SocketAddr::new(permissive.ip().into(), 9080));
    println!("no sidecar → strict pod: {to_strict:?}; → permissive pod: {to_permissive:?}");
    assert!(to_strict.is_err(), "the strict pod answered plaintext: {to_strict:?}");
    assert_eq!(to_permissive, Ok(200));
    let refused = mesh.metric(&strict, "weft_proxy_tls_connections_total", &["inbound", "plaintext_refused"])?;
    assert!(refused >= 1.0, "the refusal is not counted");

    // A client of mesh `legacy` cannot reach the strict pod of mesh
    // `default`: its sidecar has no route or identity for it, so the
    // connection leaves in plaintext and is refused, visibly (the client's
    // sidecar answers 502, the strict pod counts the refusal).
    let before = refused;
    let cross = get(&legacy_client, SocketAddr::new(strict.ip().into(), 9080));
    println!("mesh legacy client → mesh default pod: {cross:?}");
    assert!(matches!(cross, Err(_) | Ok(502)), "a client of another mesh got through: {cross:?}");
    let after = mesh.metric(&strict, "weft_proxy_tls_connections_total", &["inbound", "plaintext_refused"])?;
    assert!(after > before, "the cross-mesh attempt is not visible in the strict pod's metrics");
    // While the same client reaches its own mesh's service over mTLS.
    let own = mesh.load(&legacy_client, "10.96.110.20:9080".parse()?, "reviews.legacy:9080", 20, 1.0)?;
    assert!(
        own.iter().all(|o| o.status == 200),
        "own-mesh requests failed: {:?}",
        own.iter().find(|o| o.status != 200)
    );
    let mtls = mesh.metric(&legacy_client, "weft_proxy_tls_connections_total", &["outbound", "\"mtls\""])?;
    assert!(mtls >= 1.0, "the own-mesh request did not use mTLS");
    Ok(())
}

#[test]
fn thirty_second_certificates_and_the_mesh_ca_rotate_under_load_without_errors() -> anyhow::Result<()> {
    let mut mesh = Mesh::start("rotate", &[("all.yaml", &manifests(", certificateLifetime: 30s"))])?;
    let server = mesh.add_pod(&PodSpec::new("reviews-s", "secure").label("app", "reviews").port("http", 9080))?;
    let client = mesh.add_pod(&PodSpec::new("client", "secure").label("app", "client"))?;
    for pod in [&server, &client] {
        mesh.wait_for_certificate(pod, Duration::from_secs(30))?;
    }
    mesh.wait_for_config(&client, "the reviews endpoint", Duration::from_secs(30), |d| {
        d["endpoints"]["ep/secure/reviews"]["endpoints"].as_array().is_some_and(|a| !a.is_empty())
    })?;
    let issued =
        |mesh: &Mesh, pod: &Pod| mesh.metric(pod, "weft_proxy_certificate_requests_total", &["issued"]).unwrap_or(0.0);
    let (server_before, client_before) = (issued(&mesh, &server), issued(&mesh, &client));
    // Renewal at 65-70 % of 30 s: every 20 s or so; 75 s see at least three.
    // 15 s in, the mesh's CA is rotated: both roots are trusted, and the
    // next certificates come from the new CA.
    let load =
        mesh.start_load(&client, SocketAddr::new(REVIEWS_VIP.parse()?, 9080), "reviews.secure:9080", 100, 75.0)?;
    std::thread::sleep(Duration::from_secs(15));
    let mut rotate = std::process::Command::new(weft_e2e::workspace_bin("weftctl")?);
    rotate.args(["ca", "rotate", "--mesh", "default", "--overlap", "10m", "--state-dir"]).arg(&mesh.state_dir);
    let rotated = rotate.output()?;
    assert!(rotated.status.success(), "weftctl ca rotate: {}", String::from_utf8_lossy(&rotated.stderr));
    println!("{}", String::from_utf8_lossy(&rotated.stdout).trim());
    let outcomes = load.finish()?;
    let renewed = (issued(&mesh, &server) - server_before, issued(&mesh, &client) - client_before);
    let failed: Vec<_> = outcomes.iter().filter(|o| o.status != 200).collect();
    println!(
        "{} requests at 100/s over 75 s, {} failed; certificates renewed: server {}, client {}",
        outcomes.len(),
        failed.len(),
        renewed.0,
        renewed.1
    );
    assert!(outcomes.len() >= 7_400, "only {} requests were sent", outcomes.len());
    assert!(failed.is_empty(), "requests failed: {:?}", &failed[..failed.len().min(5)]);
    assert!(renewed.0 >= 3.0 && renewed.1 >= 3.0, "certificates renewed only {renewed:?} times");
    for pod in [&server, &client] {
        let cert = &mesh.config_dump(pod)?["certificate"];
        println!(
            "{}: {} roots trusted, certificate signed by root {}",
            pod.name(),
            cert["roots"],
            cert["signed_by_root"]
        );
        assert_eq!(cert["roots"], 2, "{}: both roots must be trusted during the overlap", pod.name());
        assert_eq!(cert["signed_by_root"], 0, "{}: the certificate is not from the new CA yet", pod.name());
    }
    Ok(())
}
