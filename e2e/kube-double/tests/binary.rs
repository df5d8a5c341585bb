//! The `weft-kube-double` binary and its admin API under `/_double/`:
//! kubeconfig written once listening, CRDs preloaded, and every handle
//! feature (objects, faults, tokens, routes, recorder) reachable over HTTP.

mod common;

use common::{KUBECTL, http_to};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl(kubeconfig: &std::path::Path, cache: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("kubectl")
}

#[test]
fn binary_serves_kubectl_and_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let cache = dir.path().join("cache");
    let crd = common::repo_root().join("crds/meshes.weft.io.yaml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-kube-double"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--crd")
        .arg(&crd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _running = Running(child);
    let url = BufReader::new(stdout).lines().next().unwrap().unwrap();
    let addr: SocketAddr = url.strip_prefix("http://").unwrap().parse().unwrap();
    assert!(kubeconfig.exists(), "kubeconfig is written before the URL is printed");

    let out = kubectl(&kubeconfig, &cache, &["get", "meshes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Objects.
    let (c, _) = http_to(addr, "POST", "/_double/objects", None, &json!({"op": "create", "object":
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "default"}, "data": {"a": "1"}}}).to_string());
    assert_eq!(c, 200);
    let (c, body) = http_to(addr, "POST", "/_double/objects", None, &json!({"op": "apply", "manager": "cloud", "force": true, "object":
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "default"}, "data": {"b": "2"}}}).to_string());
    assert_eq!(c, 200, "{body}");
    let (c, body) =
        http_to(addr, "GET", "/_double/objects?apiVersion=v1&kind=ConfigMap&namespace=default&name=x", None, "");
    assert_eq!(c, 200);
    let obj: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(obj["data"], json!({"a": "1", "b": "2"}));
    let (c, body) = http_to(
        addr,
        "POST",
        "/_double/objects",
        None,
        &json!({"op": "patch", "subresource": "status", "apiVersion": "v1", "kind": "Namespace",
        "namespace": "", "name": "default", "patch": {"status": {"phase": "Active"}}})
        .to_string(),
    );
    assert_eq!(c, 200, "{body}");

    // Faults scoped to kubectl's user.
    let (c, _) = http_to(
        addr,
        "POST",
        "/_double/faults",
        None,
        &json!({"action": "fail-next", "n": 1, "code": 500, "user": "admin"}).to_string(),
    );
    assert_eq!(c, 200);
    let out = kubectl(&kubeconfig, &cache, &["get", "cm", "x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InternalError")
            || String::from_utf8_lossy(&out.stderr).contains("injected fault"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&kubeconfig, &cache, &["get", "cm", "x", "-o", "jsonpath={.data.b}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2");
    for action in [
        json!({"action": "delay", "millis": 0}),
        json!({"action": "drop-watches"}),
        json!({"action": "compact"}),
        json!({"action": "clear"}),
    ] {
        assert_eq!(http_to(addr, "POST", "/_double/faults", None, &action.to_string()).0, 200);
    }
    assert_eq!(http_to(addr, "POST", "/_double/faults", None, &json!({"action": "explode"}).to_string()).0, 400);

    // Tokens and TokenReview.
    let (_, body) = http_to(
        addr,
        "POST",
        "/_double/objects",
        None,
        &json!({"op": "create", "object":
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "proxy", "namespace": "default"}}})
        .to_string(),
    );
    assert!(body.contains("proxy"));
    let (c, body) = http_to(addr, "POST", "/_double/tokens", None, &json!({"namespace": "default", "serviceAccount": "proxy", "audiences": ["weft.io/identity"], "expirationSeconds": 600}).to_string());
    assert_eq!(c, 200);
    let token = serde_json::from_str::<Value>(&body).unwrap()["token"].as_str().unwrap().to_string();
    let (c, body) = http_to(addr, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", None,
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": ["weft.io/identity"]}}).to_string());
    assert_eq!(c, 201);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"]["authenticated"], true);

    // Routes.
    assert_eq!(
        http_to(
            addr,
            "POST",
            "/_double/routes",
            None,
            &json!({"namespace": "weft-system", "name": "weft-cp", "port": 443, "address": "127.0.0.1:9443"})
                .to_string()
        )
        .0,
        200
    );

    // The recorder.
    let (c, body) = http_to(addr, "GET", "/_double/recorded", None, "");
    assert_eq!(c, 200);
    let rec: Vec<kube_double::Recorded> = serde_json::from_str(&body).unwrap();
    assert!(rec.iter().any(|r| r.user == "admin" && r.verb == "get" && r.resource == "configmaps" && r.code == 500));
    assert!(rec.iter().any(|r| r.verb == "list" && r.resource == "meshes" && r.group == "weft.io"));
    assert!(rec.iter().all(|r| !r.path.starts_with("/_double")), "admin calls are not recorded");
    assert_eq!(http_to(addr, "DELETE", "/_double/recorded", None, "").0, 200);
    let (_, body) = http_to(addr, "GET", "/_double/recorded", None, "");
    assert_eq!(body.trim(), "[]");
}
