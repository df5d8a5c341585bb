//! The real kubectl (v1.32 through the google-cloud-sdk dispatcher) against
//! the double: server-side apply (create, update, conflicts between field
//! managers, --force-conflicts), get in every output, get -w, label,
//! annotate, merge/JSON/status patches, wait, delete, create token and a
//! TokenReview. These tests block on child processes.

mod common;

use common::{Kubectl, wait_for};
use kube_double::{ApiServer, Options};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 8080}]
"#;

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn apply_update_conflict_and_force() {
    let server = ApiServer::start(Options::default()).unwrap();
    let k = Kubectl::new(&server, "admin");
    let crds = common::repo_root().join("crds");
    let out = k.ok(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    assert!(out.contains("meshes.weft.io serverside-applied"), "{out}");
    let mesh = k.write(
        "mesh.yaml",
        "apiVersion: weft.io/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec:\n  mtls: {mode: Strict}\n",
    );
    let out = k.ok(&["apply", "--server-side", "-f", mesh.to_str().unwrap()]);
    assert!(out.contains("mesh.weft.io/default serverside-applied"), "{out}");
    let got = json_of(&k.ok(&["get", "mesh", "default", "-o", "json"]));
    assert_eq!(got["spec"]["mtls"]["mode"], "Strict");

    let app = k.write("app.yaml", APP);
    k.ok(&["apply", "--server-side", "-f", app.to_str().unwrap()]);
    let svc = json_of(&k.ok(&["get", "svc", "web", "-n", "shop", "-o", "json"]));
    assert!(svc["spec"]["clusterIP"].as_str().unwrap().starts_with("10.96."));
    // Update by a second apply.
    let app3 = k.write("app3.yaml", &APP.replace("replicas: 2", "replicas: 3"));
    k.ok(&["apply", "--server-side", "-f", app3.to_str().unwrap()]);
    assert_eq!(server.get("apps/v1", "Deployment", "shop", "web").unwrap()["spec"]["replicas"], 3);
    // Another manager changing the same field conflicts ...
    let app5 = k.write("app5.yaml", &APP.replace("replicas: 2", "replicas: 5"));
    let stderr = k.fails(&["apply", "--server-side", "--field-manager", "other", "-f", app5.to_str().unwrap()]);
    assert!(stderr.contains("conflict with \"kubectl\"") && stderr.contains(".spec.replicas"), "{stderr}");
    assert_eq!(server.get("apps/v1", "Deployment", "shop", "web").unwrap()["spec"]["replicas"], 3);
    // ... until forced.
    k.ok(&["apply", "--server-side", "--field-manager", "other", "--force-conflicts", "-f", app5.to_str().unwrap()]);
    let d = server.get("apps/v1", "Deployment", "shop", "web").unwrap();
    assert_eq!(d["spec"]["replicas"], 5);
    let managers: Vec<&str> =
        d["metadata"]["managedFields"].as_array().unwrap().iter().map(|m| m["manager"].as_str().unwrap()).collect();
    assert!(managers.contains(&"other") && managers.contains(&"kubectl"), "{managers:?}");
    let rec = server.recorded();
    assert!(rec.iter().any(|r| r.user == "admin"
        && r.verb == "patch"
        && r.field_manager == "other"
        && r.content_type == "application/apply-patch+yaml"));
}

#[test]
fn get_watch_label_annotate_patch_wait_delete() {
    let server = ApiServer::start(Options::default()).unwrap();
    let k = Kubectl::new(&server, "admin");
    let app = k.write("app.yaml", APP);
    k.ok(&["apply", "--server-side", "-f", app.to_str().unwrap()]);

    let yaml = k.ok(&["get", "deploy", "web", "-n", "shop", "-o", "yaml"]);
    assert!(yaml.contains("name: web") && yaml.contains("replicas: 2"), "{yaml}");
    let table = k.ok(&["get", "deploy", "-n", "shop"]);
    assert!(table.starts_with("NAME") && table.contains("web"), "{table}");
    let all = json_of(&k.ok(&["get", "svc", "-A", "-o", "json"]));
    assert_eq!(all["items"].as_array().unwrap().len(), 1);

    // get -w sees a change made meanwhile.
    let mut child = k
        .command(&["get", "deploy", "-n", "shop", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("get -w prints the list");
    assert!(first.contains("EVENT") || first.contains("web"), "{first}");
    server.patch("apps/v1", "Deployment", "shop", "web", json!({"metadata": {"labels": {"watched": "yes"}}})).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut saw_modified = false;
    while std::time::Instant::now() < deadline && !saw_modified {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            saw_modified = l.contains("MODIFIED") && l.contains("web");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(saw_modified, "get -w printed no MODIFIED event");

    k.ok(&["label", "deploy", "web", "-n", "shop", "tier=frontend"]);
    k.ok(&["annotate", "deploy", "web", "-n", "shop", "owner=team-a"]);
    k.ok(&["patch", "deploy", "web", "-n", "shop", "--type", "merge", "-p", r#"{"spec":{"replicas":4}}"#]);
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"nginx:1.28"}]"#,
    ]);
    k.ok(&["patch", "deploy", "web", "-n", "shop", "--subresource=status", "--type", "merge", "-p", r#"{"status":{"readyReplicas":4,"conditions":[{"type":"Available","status":"True","reason":"MinimumReplicasAvailable"}]}}"#]);
    let d = server.get("apps/v1", "Deployment", "shop", "web").unwrap();
    assert_eq!(d["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(d["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.28");
    assert_eq!(d["status"]["readyReplicas"], 4);
    k.ok(&["wait", "-n", "shop", "--for=condition=Available", "deploy/web", "--timeout=10s"]);
    k.ok(&["wait", "-n", "shop", "--for=jsonpath={.status.readyReplicas}=4", "deploy/web", "--timeout=10s"]);
    let rec = server.recorded();
    for m in ["kubectl-label", "kubectl-annotate", "kubectl-patch"] {
        assert!(rec.iter().any(|r| r.field_manager == m), "no write by {m}");
    }
    assert!(rec.iter().any(|r| r.verb == "patch" && r.subresource == "status"));

    // Strategic merge patch of a built-in kind merges containers by name.
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox"}]}}}}"#,
    ]);
    let d = server.get("apps/v1", "Deployment", "shop", "web").unwrap();
    assert_eq!(d["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 2);

    k.ok(&["delete", "deploy", "web", "-n", "shop", "--timeout=10s"]);
    assert!(server.get("apps/v1", "Deployment", "shop", "web").is_none());
    let stderr = k.fails(&["get", "deploy", "web", "-n", "shop"]);
    assert!(stderr.contains("NotFound") || stderr.contains("not found"), "{stderr}");
    k.ok(&["delete", "ns", "shop", "--timeout=10s"]);
    wait_for("namespace gone", Duration::from_secs(10), || {
        server.get("v1", "Namespace", "", "shop").is_none().then_some(())
    });
    assert!(server.get("v1", "Service", "shop", "web").is_none(), "namespace contents deleted");
}

#[test]
fn create_token_and_token_review() {
    let server = ApiServer::start(Options::default()).unwrap();
    let k = Kubectl::new(&server, "admin");
    k.ok(&["create", "serviceaccount", "proxy"]);
    let token = k.ok(&["create", "token", "proxy", "--audience", "weft.io/identity", "--duration", "1h"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let review = |aud: &str| {
        let f = k.write(
            "review.json",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": [aud]}}).to_string(),
        );
        json_of(&k.ok(&["create", "-f", f.to_str().unwrap(), "-o", "json"]))
    };
    let ok = review("weft.io/identity");
    assert_eq!(ok["status"]["authenticated"], true, "{ok}");
    assert_eq!(ok["status"]["user"]["username"], "system:serviceaccount:default:proxy");
    let bad = review("other");
    assert_ne!(bad["status"]["authenticated"], true);
    assert!(bad["status"]["error"].as_str().is_some());
    // Requests made with the token are attributed to the service account.
    let (code, _) = common::http(&server, "GET", "/api/v1/namespaces", Some(token), "");
    assert_eq!(code, 200);
    assert!(server.recorded().iter().any(|r| r.user == "system:serviceaccount:default:proxy"));
}
