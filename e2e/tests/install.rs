//! The install path end to end, against the API-server double: the Gateway
//! API CRDs, then `weftctl install --crds` and `weftctl install` (the
//! chart's default rendering, byte for byte — tests/chart.rs) applied with
//! the real `kubectl apply --server-side`; `weft-cp` started in a network
//! namespace as the rendered Deployment starts it — its arguments, its
//! environment (downward API resolved), as the user its security context
//! names, with a token the TokenRequest API issued for its ServiceAccount,
//! bound to its pod, mounted where the kubelet mounts it. It becomes ready
//! on the probe the Deployment declares, sets the webhook's caBundle,
//! translates an applied HTTPRoute, injects a pod, provisions a gateway,
//! signs a certificate through a TokenReview; `weftctl check` says what is
//! missing before and that all is well after.
//!
//! The double's request recorder then shows that every (verb, resource) the
//! control plane used is granted by the chart's RBAC, and that nothing is
//! granted that it did not use (both lists printed).
//!
//! One deviation from a cluster: the control plane reads the API through a
//! kubeconfig (`KUBECONFIG`, pointing at the mounted token file) instead of
//! the in-cluster configuration, because the double serves plain HTTP and
//! in-cluster configuration is HTTPS only.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube_double::{Options, Recorded};
use serde_json::{Value, json};
use support::{documents, find, repo, run_with};
use weft_e2e::kube::Kube;
use weft_e2e::netns::{Cluster, Pod};
use weft_e2e::process::ChildHandle;
use weft_e2e::workspace_bin;

const NAMESPACE: &str = "weft-system";
/// The control plane's user at the API: its ServiceAccount.
const CP_USER: &str = "system:serviceaccount:weft-system:weft-cp";
/// The pod the ReplicaSet would make of the Deployment.
const CP_POD: &str = "weft-cp-6d4c8f7b9-x7k2p";
const WAIT: Duration = Duration::from_secs(40);
/// Where the kubelet mounts a pod's ServiceAccount token.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Grants that no step of this test can reach, and why. The test fails if
/// one of them is used (then it belongs with the others) or if a grant not
/// listed here goes unused.
const UNEXERCISED: &[(&str, &str)] = &[];

fn weftctl(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let mut command = Command::new(workspace_bin("weftctl")?);
    command.args(args);
    run_with(command, None, Duration::from_secs(60))
}

/// `weftctl check` against the double as the admin.
fn check(kube: &Kube) -> anyhow::Result<(bool, String)> {
    let kubeconfig = kube.kubeconfig("admin")?;
    let (ok, out, err) = weftctl(&["check", "--kubeconfig", &kubeconfig.to_string_lossy()])?;
    Ok((ok, format!("{out}{err}")))
}

fn line<'a>(report: &'a str, what: &str) -> &'a str {
    report.lines().find(|l| l.starts_with(what)).unwrap_or("")
}

/// The rendered chart's RBAC: (ClusterRole rules, Role rules).
fn rbac(docs: &[Value]) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    let cluster_role = find(docs, "ClusterRole", "weft-cp").context("no ClusterRole weft-cp")?;
    let role = find(docs, "Role", "weft-cp").context("no Role weft-cp")?;
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    for (kind, role_kind) in [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")] {
        let binding = find(docs, kind, "weft-cp").with_context(|| format!("no {kind} weft-cp"))?;
        assert_eq!(binding["roleRef"]["kind"], role_kind);
        assert_eq!(binding["roleRef"]["name"], "weft-cp");
        assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": "weft-cp", "namespace": NAMESPACE}]));
    }
    let rules = |r: &Value| r["rules"].as_array().cloned().unwrap_or_default();
    Ok((rules(cluster_role), rules(role)))
}

/// One permission: (scope, verb, group, resource[/subresource], resourceName).
/// Scope is `cluster` (ClusterRole) or the Role's namespace.
type Grant = (String, String, String, String, String);

fn grants(scope: &str, rules: &[Value]) -> Vec<Grant> {
    let strs = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
    };
    let mut out = Vec::new();
    for rule in rules {
        let names = strs(&rule["resourceNames"]);
        let names = if names.is_empty() { vec![String::new()] } else { names };
        for group in strs(&rule["apiGroups"]) {
            for resource in strs(&rule["resources"]) {
                for verb in strs(&rule["verbs"]) {
                    for name in &names {
                        out.push((scope.to_owned(), verb.clone(), group.clone(), resource.clone(), name.clone()));
                    }
                }
            }
        }
    }
    out
}

/// What a request needs: (verb, group, resource[/sub], namespace, name).
/// A server-side apply that creates its object needs `create` as well as
/// `patch` (the API server authorizes the create).
fn needs(r: &Recorded) -> Vec<(String, String, String, String, String)> {
    let resource =
        if r.subresource.is_empty() { r.resource.clone() } else { format!("{}/{}", r.resource, r.subresource) };
    let mut out = vec![(r.verb.clone(), r.group.clone(), resource.clone(), r.namespace.clone(), r.name.clone())];
    if r.verb == "patch" && r.content_type == "application/apply-patch+yaml" && r.code == 201 {
        out.push(("create".into(), r.group.clone(), resource, r.namespace.clone(), r.name.clone()));
    }
    out
}

/// The grant that allows a need, if any (Role grants only in its namespace;
/// resourceNames never allow create, list or watch of a collection).
fn allowing<'a>(grants: &'a [Grant], need: &(String, String, String, String, String)) -> Option<&'a Grant> {
    let (verb, group, resource, namespace, name) = need;
    grants.iter().find(|(scope, v, g, res, n)| {
        (scope == "cluster" || scope == namespace)
            && v == verb
            && g == group
            && res == resource
            && (n.is_empty() || (n == name && !matches!(verb.as_str(), "create" | "deletecollection")))
    })
}

/// Starts `weft-cp` in `pod` exactly as the rendered Deployment's pod
/// template says; returns it with the addresses of its named ports.
fn start_control_plane(
    kube: &Kube,
    pod: &Pod,
    template: &Value,
    uid: &str,
    log_dir: &Path,
) -> anyhow::Result<(ChildHandle, BTreeMap<String, u16>)> {
    let spec = &template["spec"];
    assert_eq!(spec["serviceAccountName"], "weft-cp");
    let container = &spec["containers"][0];
    // The image's entrypoint is weft-cp (scripts/images); this workspace's.
    assert!(container["command"].is_null(), "the chart overrides the image's entrypoint: {}", container["command"]);
    let args: Vec<String> =
        container["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
    let mut env: Vec<(String, String)> = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let value = match (e["value"].as_str(), e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
            (Some(v), _) => v.to_owned(),
            (None, Some("metadata.name")) => CP_POD.to_owned(),
            (None, Some("metadata.namespace")) => NAMESPACE.to_owned(),
            (None, Some("status.podIP")) => pod.ip().to_string(),
            (None, other) => bail!("unsupported environment source {other:?} in {e}"),
        };
        env.push((e["name"].as_str().unwrap_or_default().to_owned(), value));
    }
    // The kubelet's token: from the TokenRequest API, for the Deployment's
    // ServiceAccount, bound to the pod, mounted at the usual path.
    let token = kube.kubectl(&[
        "create",
        "token",
        "weft-cp",
        "-n",
        NAMESPACE,
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        CP_POD,
        "--bound-object-uid",
        uid,
        "--duration",
        "3607s",
    ])?;
    let sa_dir = log_dir.join("serviceaccount");
    std::fs::create_dir_all(&sa_dir)?;
    std::fs::write(sa_dir.join("token"), token.trim())?;
    std::fs::write(sa_dir.join("namespace"), NAMESPACE)?;
    let kubeconfig = log_dir.join("in-cluster.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: cluster, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: weft-cp, user: {{tokenFile: {SA_DIR}/token}}}}]\n\
             contexts: [{{name: in-cluster, context: {{cluster: cluster, user: weft-cp}}}}]\ncurrent-context: in-cluster\n",
            kube.api.url()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    for f in [&sa_dir, &sa_dir.join("token"), &sa_dir.join("namespace"), &kubeconfig] {
        let mode = if f.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode))?;
    }
    env.push(("KUBECONFIG".into(), kubeconfig.to_string_lossy().into_owned()));
    let user = spec["securityContext"]["runAsUser"].as_u64().context("no runAsUser")?;
    let group = spec["securityContext"]["runAsGroup"].as_u64().context("no runAsGroup")?;
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    // `ip netns exec` gives the process a mount namespace of its own: the
    // token mount and the read-only root stay the pod's.
    let script = format!(
        "mkdir -p {SA_DIR} && mount --bind {} {SA_DIR} && mount -o remount,bind,ro / && \
         exec setpriv --reuid={user} --regid={group} --clear-groups --no-new-privs -- \"$@\"",
        sa_dir.display()
    );
    let binary = workspace_bin("weft-cp")?;
    let mut argv = vec!["-c".to_string(), script, "sh".into(), binary.to_string_lossy().into_owned()];
    argv.extend(args);
    println!("weft-cp as the Deployment starts it, as uid {user}: {}", argv[3..].join(" "));
    println!("environment: {env:?}");
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let process = pod.spawn(Path::new("/bin/sh"), &refs, &env_refs, &log_dir.join("weft-cp.log"))?;
    let ports = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (p["name"].as_str().unwrap_or_default().to_owned(), p["containerPort"].as_u64().unwrap_or(0) as u16))
        .collect();
    Ok((process, ports))
}

/// An HTTP GET from the root namespace; (status, body).
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let resp = weft_e2e::http1::Response::parse(&raw)?;
    Ok((resp.status, resp.text()))
}

/// The port a probe or Service targets: a number, or a container port's name.
fn port_of(target: &Value, ports: &BTreeMap<String, u16>) -> anyhow::Result<u16> {
    match target {
        Value::Number(n) => Ok(n.as_u64().context("port")? as u16),
        Value::String(name) => ports.get(name).copied().with_context(|| format!("no container port {name}")),
        other => bail!("port {other}"),
    }
}

fn condition(obj: &Value, path: &str, type_: &str) -> Option<String> {
    obj.pointer(path)?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| c["status"].as_str().unwrap_or("").to_owned())
}

const SCENARIO: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: store, namespace: shop}
spec:
  selector: {app: store}
  ports: [{name: http, port: 8080, appProtocol: http}, {name: grpc, port: 9090, appProtocol: grpc}, {name: tcp, port: 7000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: weft
  allowedListeners: {namespaces: {from: Same}}
  listeners:
  - {name: web, protocol: HTTP, port: 80}
  - {name: tls, protocol: TLS, port: 443, tls: {mode: Passthrough}}
  - {name: tcp, protocol: TCP, port: 7000}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: extra, namespace: shop}
spec:
  parentRef: {name: edge}
  listeners: [{name: extra, port: 8081, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: shop}
spec:
  parentRefs: [{name: edge, sectionName: web}]
  rules: [{backendRefs: [{name: store, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: store-grpc, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: store, port: 9090}]
  rules: [{backendRefs: [{name: store, port: 9090}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: store-tls, namespace: shop}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [store.example]
  rules: [{backendRefs: [{name: store, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: store-tcp, namespace: shop}
spec:
  parentRefs: [{name: edge, sectionName: tcp}]
  rules: [{backendRefs: [{name: store, port: 7000}]}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-bookinfo, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: bookinfo}]
  to: [{group: "", kind: Service}]
---
apiVersion: weft.io/v1alpha1
kind: MeshHTTPRoute
metadata: {name: by-hand, namespace: shop}
spec:
  targetRef: {kind: Mesh}
  to: [{kind: Service, name: store, port: 8080}]
  rules:
  - backendRefs: [{kind: Service, name: store, namespace: shop, port: 8080}]
---
apiVersion: weft.io/v1alpha1
kind: MeshTCPRoute
metadata: {name: by-hand-tcp, namespace: shop}
spec:
  targetRef: {kind: Mesh}
  to: [{kind: Service, name: store, namespace: shop, port: 7000}]
  rules:
  - backendRefs: [{name: store, namespace: shop, port: 7000}]
"#;

/// Gateway objects whose instance is gone, labelled as the provisioner
/// labels them.
const ORPHANS: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: retired, namespace: shop, labels: {weft.io/gateway-instance: retired}}
---
apiVersion: v1
kind: Service
metadata: {name: retired, namespace: shop, labels: {weft.io/gateway-instance: retired}}
spec:
  selector: {weft.io/gateway-instance: retired}
  ports: [{name: web, port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: retired, namespace: shop, labels: {weft.io/gateway-instance: retired}}
spec:
  selector: {matchLabels: {weft.io/gateway-instance: retired}}
  template:
    metadata: {labels: {weft.io/gateway-instance: retired}}
    spec: {containers: [{name: weft-gateway, image: ghcr.io/weft-mesh/weft-proxy:0.1.0}]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: retired, namespace: shop, labels: {weft.io/gateway-instance: retired}}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: retired}
  minReplicas: 1
  maxReplicas: 2
"#;

#[test]
fn the_rendered_chart_runs_the_control_plane_with_exactly_the_rights_it_uses() -> anyhow::Result<()> {
    support::tool("promtool")?;
    // Declared first, dropped last: the pods' network namespaces.
    let mut cluster = Cluster::new("install")?;
    let options = Options { addr: Some(SocketAddr::new(cluster.gateway().into(), 0)), ..Options::default() };
    let mut kube = Kube::start_with("install", options)?;
    let log_dir = kube.dir.clone();

    // Nothing installed: weftctl check says what is missing.
    let (ok, report) = check(&kube)?;
    println!("weftctl check on an empty cluster:\n{report}");
    assert!(!ok, "weftctl check passed an empty cluster");
    assert!(line(&report, "Gateway API CRDs").contains("FAIL") && report.contains("not installed"), "{report}");
    assert!(line(&report, "Weft CRDs").contains("FAIL"), "{report}");
    assert!(line(&report, "control plane").contains("no Deployment weft-cp"), "{report}");

    // README's path: the Gateway API CRDs, then Weft's CRDs, then the rest.
    let gateway_api = repo().join("third_party/gateway-api-crds/v1.5.1-experimental.yaml");
    kube.kubectl(&["apply", "--server-side", "-f", &gateway_api.to_string_lossy()])?;
    let (_, crds, _) = weftctl(&["install", "--crds"])?;
    kube.apply(&crds)?;
    let (ok, manifests, err) = weftctl(&["install"])?;
    assert!(ok, "{err}");
    let applied = kube.apply(&manifests)?;
    println!("kubectl apply --server-side of weftctl install:\n{applied}");
    let docs = documents(&manifests)?;
    for d in &docs {
        let (kind, name) = (d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap());
        let ns = d["metadata"]["namespace"].as_str();
        assert!(
            kube.get(&kind.to_lowercase(), ns, name)?.is_some(),
            "{kind} {name} is not in the cluster after kubectl apply"
        );
    }

    // A webhook certificate Secret left unusable (by hand, say): the leader
    // replaces it.
    kube.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: weft-webhook-tls, namespace: weft-system}\ntype: kubernetes.io/tls\nstringData: {tls.crt: broken, tls.key: broken, ca.crt: broken}\n")?;

    // The pod the ReplicaSet makes of the Deployment's template.
    let deployment = find(&docs, "Deployment", "weft-cp").context("no Deployment")?;
    let template = deployment["spec"]["template"].clone();
    let pod_object = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": CP_POD, "namespace": NAMESPACE, "labels": template["metadata"]["labels"],
                     "annotations": template["metadata"]["annotations"]},
        "spec": template["spec"],
    });
    let stored = kube.api.create(pod_object).map_err(|e| anyhow::anyhow!("creating the pod: {e}"))?;
    let uid = stored["metadata"]["uid"].as_str().context("pod uid")?.to_owned();
    let pod = cluster.pod(CP_POD)?;
    let (mut cp, ports) = start_control_plane(&kube, &pod, &template, &uid, &log_dir)?;
    let status = json!({"status": {"phase": "Running", "podIP": pod.ip().to_string(), "podIPs": [{"ip": pod.ip().to_string()}]}});
    kube.api.patch_status("v1", "Pod", NAMESPACE, CP_POD, status).map_err(|e| anyhow::anyhow!("{e}"))?;

    // The API server reaches the webhook through the Service: its port 443
    // targets the container port the Service names.
    let service = find(&docs, "Service", "weft-cp").context("no Service weft-cp")?;
    let webhook_port =
        service["spec"]["ports"].as_array().unwrap().iter().find(|p| p["port"] == 443).context("no port 443")?;
    let target = port_of(&webhook_port["targetPort"], &ports)?;
    kube.api.route_service(NAMESPACE, "weft-cp", 443, SocketAddr::new(pod.ip().into(), target));

    // Ready on the probes the Deployment declares; then the Deployment
    // controller would count it.
    let container = &template["spec"]["containers"][0];
    let started = Instant::now();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        let addr = SocketAddr::new(pod.ip().into(), port_of(&get["port"], &ports)?);
        let path = get["path"].as_str().context("probe path")?.to_owned();
        kube.wait_for(&format!("the {probe} ({path})"), WAIT, |_| {
            Ok(http_get(addr, &path).ok().filter(|(code, _)| *code == 200).map(|_| ()))
        })
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", cp.log_tail()))?;
        cp.ensure_running()?;
    }
    println!("weft-cp ready on its probes {:?} after start", started.elapsed());
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    kube.api.patch_status("v1", "Pod", NAMESPACE, CP_POD, ready).map_err(|e| anyhow::anyhow!("{e}"))?;
    let available =
        json!({"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1}});
    kube.api
        .patch_status("apps/v1", "Deployment", NAMESPACE, "weft-cp", available)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // The caBundle of both webhooks.
    kube.wait_for("the caBundle set by the control plane", WAIT, |k| {
        let mwc = k.get("mutatingwebhookconfiguration", None, "weft-injector")?.context("the configuration")?;
        let hooks = mwc["webhooks"].as_array().cloned().unwrap_or_default();
        Ok((hooks.len() == 2 && hooks.iter().all(|w| w["clientConfig"]["caBundle"].is_string())).then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", cp.log_tail()))?;

    // The canary of the README: an HTTPRoute translated.
    let canary = std::fs::read_to_string(repo().join("examples/canary/mesh.yaml"))?;
    kube.apply(&canary)?;
    let generated = kube.wait_for("the canary's MeshHTTPRoute", WAIT, |k| {
        let routes = k.list("meshhttproutes", Some("bookinfo"), None)?;
        Ok(routes.into_iter().find(|r| r["metadata"]["labels"]["weft.io/origin-kind"] == "HTTPRoute"))
    })?;
    println!("the canary HTTPRoute became MeshHTTPRoute {}", generated["metadata"]["name"]);
    kube.wait_for("the HTTPRoute accepted by Weft", WAIT, |k| {
        let r = k.get("httproute", Some("bookinfo"), "reviews-canary")?.context("the route")?;
        Ok((condition(&r, "/status/parents/0/conditions", "Accepted").as_deref() == Some("True")).then_some(()))
    })?;

    // Gateways, every route kind, hand-written routes; a gateway provisioned.
    kube.apply(SCENARIO)?;
    kube.wait_for("the gateway's Deployment", WAIT, |k| k.get("deployment", Some("shop"), "edge"))?;
    for (kind, name) in [
        ("gatewayclass", ""),
        ("gateway", "edge"),
        ("listenerset", "extra"),
        ("tlsroute", "store-tls"),
        ("tcproute", "store-tcp"),
        ("grpcroute", "store-grpc"),
        ("meshhttproute", "by-hand"),
        ("meshtcproute", "by-hand-tcp"),
    ] {
        kube.wait_for(&format!("status of {kind} {name}"), WAIT, |k| {
            let obj =
                if kind == "gatewayclass" { k.get(kind, None, "weft")? } else { k.get(kind, Some("shop"), name)? };
            Ok(obj.filter(|o| !o["status"].is_null() && o["status"] != json!({})).map(|_| ()))
        })?;
    }
    // Autoscaling gives the gateway an HPA.
    kube.kubectl(&[
        "patch",
        "meshgatewayconfig",
        "weft-gateway",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"autoscaling":{"minReplicas":1,"maxReplicas":3}}}"#,
    ])?;
    kube.wait_for("the gateway's HPA", WAIT, |k| k.get("horizontalpodautoscaler", Some("shop"), "edge"))?;

    // A pod of the meshed namespace: injected through the webhook.
    kube.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: reviews, namespace: bookinfo}\n")?;
    kube.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: reviews-v1-a, namespace: bookinfo, labels: {app: reviews, version: v1}}\nspec:\n  serviceAccountName: reviews\n  containers: [{name: app, image: example/reviews:1}]\n",
    )?;
    let injected = kube.get("pod", Some("bookinfo"), "reviews-v1-a")?.context("the pod")?;
    let inits: Vec<&str> = injected["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(inits, ["weft-init", "weft-proxy"], "{injected}");
    // With the chart's proxy defaults (its --proxy-* flags).
    let sidecar = &injected["spec"]["initContainers"][1];
    let flag = |name: &str| {
        let args = template["spec"]["containers"][0]["args"].as_array().cloned().unwrap_or_default();
        args.iter().find_map(|a| a.as_str()?.strip_prefix(&format!("--{name}=")).map(str::to_owned))
    };
    assert_eq!(sidecar["image"].as_str(), flag("proxy-image").as_deref());
    assert_eq!(sidecar["resources"]["requests"]["cpu"].as_str(), flag("proxy-cpu-request").as_deref());
    assert_eq!(sidecar["resources"]["requests"]["memory"].as_str(), flag("proxy-memory-request").as_deref());
    assert_eq!(sidecar["resources"]["limits"]["memory"].as_str(), flag("proxy-memory-limit").as_deref());
    let log_level = sidecar["env"].as_array().into_iter().flatten().find(|e| e["name"] == "WEFT_LOG");
    assert_eq!(log_level.and_then(|e| e["value"].as_str()), flag("proxy-log-level").as_deref());

    // A pod that got past the webhook is flagged with an Event.
    let missed = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "missed", "namespace": "bookinfo"},
                        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}});
    kube.api.create(missed).map_err(|e| anyhow::anyhow!("{e}"))?;
    kube.wait_for("the NotMeshed Event", WAIT, |k| {
        let events = k.list("events.events.k8s.io", Some("bookinfo"), None)?;
        Ok(events.into_iter().find(|e| e["reason"] == "NotMeshed"))
    })?;

    // The injected proxy asks for its certificate with its projected
    // token: a TokenReview.
    let proxy = run_injected_proxy(&mut cluster, &kube, &injected, pod.ip(), &log_dir)?;
    kube.wait_for("a certificate for the injected proxy", WAIT, |_| {
        let signed = http_get(SocketAddr::new(proxy.1.into(), 15021), "/ready").ok().filter(|(c, _)| *c == 200);
        Ok(signed.map(|_| ()))
    })
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", proxy.0.log_tail()))?;

    // weftctl check: all well.
    let (ok, report) = check(&kube)?;
    println!("weftctl check after the install:\n{report}");
    assert!(ok, "{report}");
    for what in ["Weft CRDs", "Gateway API CRDs", "control plane", "webhook certificate"] {
        assert!(line(&report, what).contains(" ok "), "{what}: {report}");
    }
    assert!(line(&report, "Gateway API CRDs").contains("v1.5.1 (experimental)"), "{report}");
    assert!(line(&report, "control plane").contains(&format!("leader {CP_POD}")), "{report}");

    // Stale objects are swept by the leader: gateway objects left without
    // an instance (e.g. orphaned by `kubectl delete --cascade=orphan`) ...
    kube.apply(ORPHANS)?;
    kube.wait_for("the orphaned gateway objects swept", WAIT, |k| {
        let left = [
            ("serviceaccount", "retired"),
            ("deployment", "retired"),
            ("service", "retired"),
            ("horizontalpodautoscaler", "retired"),
        ]
        .iter()
        .filter(|(kind, name)| k.get(kind, Some("shop"), name).ok().flatten().is_some())
        .count();
        Ok((left == 0).then_some(()))
    })?;
    // ... and what a Gateway no longer of Weft's class had: its instance,
    // its MeshGateway, the routes generated for it.
    let generated_before = kube.list("meshhttproutes", Some("shop"), Some("weft.io/origin-kind"))?.len()
        + kube.list("meshtcproutes", Some("shop"), Some("weft.io/origin-kind"))?.len();
    assert!(generated_before > 0);
    kube.kubectl(&[
        "patch",
        "gateway",
        "edge",
        "-n",
        "shop",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"gatewayClassName":"someone-else"}}"#,
    ])?;
    kube.wait_for("the instance, MeshGateway and gateway routes of edge swept", WAIT, |k| {
        let instance = k.get("meshgatewayinstance", Some("shop"), "edge")?;
        let gateways = k.list("meshgateways", None, None)?;
        let routes = k.list("meshtcproutes", Some("shop"), Some("weft.io/origin-kind"))?;
        Ok((instance.is_none() && gateways.is_empty() && routes.is_empty()).then_some(()))
    })?;
    kube.kubectl(&["delete", "gateway", "edge", "-n", "shop"])?;
    kube.kubectl(&["delete", "httproute", "reviews-canary", "-n", "bookinfo"])?;
    kube.wait_for("the canary's MeshHTTPRoute deleted", WAIT, |k| {
        let routes = k.list("meshhttproutes", Some("bookinfo"), None)?;
        Ok(routes.iter().all(|r| r["metadata"]["labels"]["weft.io/origin-kind"] != "HTTPRoute").then_some(()))
    })?;
    cp.ensure_running()?;

    // Its metrics, after all that, pass Prometheus's linter.
    let admin = SocketAddr::new(pod.ip().into(), port_of(&json!("admin"), &ports)?);
    let (code, exposition) = http_get(admin, "/metrics")?;
    assert_eq!(code, 200);
    let lint = support::promtool_check("weft-cp in Kubernetes mode", &exposition)?;
    println!("weft-cp (Kubernetes mode) /metrics: {} metric families; promtool check metrics: clean", lint.families);

    // What it used against what the chart grants.
    let (cluster_rules, role_rules) = rbac(&docs)?;
    let mut granted = grants("cluster", &cluster_rules);
    granted.extend(grants(NAMESPACE, &role_rules));
    let recorded: Vec<Recorded> =
        kube.api.recorded().into_iter().filter(|r| r.user == CP_USER && !r.resource.is_empty()).collect();
    assert!(!recorded.is_empty(), "the control plane made no request as its ServiceAccount");
    let others: BTreeSet<String> = kube
        .api
        .recorded()
        .into_iter()
        .filter(|r| r.user_agent.starts_with("weft-cp") || r.field_manager.starts_with("weft-control-plane"))
        .filter(|r| r.user != CP_USER)
        .map(|r| r.user)
        .collect();
    assert!(others.is_empty(), "the control plane also acted as {others:?}");
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut denied = BTreeSet::new();
    let mut used_grants = BTreeSet::new();
    for r in &recorded {
        for need in needs(r) {
            let (verb, group, resource, namespace, name) = &need;
            let scope = if namespace.is_empty() { "cluster-wide".to_string() } else { format!("ns {namespace}") };
            let key =
                format!("{verb:<7} {}{resource}", if group.is_empty() { String::new() } else { format!("{group}/") });
            used.entry(key.clone()).or_default().insert(scope);
            match allowing(&granted, &need) {
                Some(g) => {
                    used_grants.insert(g.clone());
                }
                None => {
                    denied.insert(format!("{key} (namespace {namespace:?}, name {name:?})"));
                }
            }
        }
    }
    println!("\nused by weft-cp ({} requests as {CP_USER}):", recorded.len());
    for (k, scopes) in &used {
        println!("  {k}  [{}]", scopes.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    let show = |g: &Grant| {
        let (scope, verb, group, resource, name) = g;
        let group = if group.is_empty() { String::new() } else { format!("{group}/") };
        let name = if name.is_empty() { String::new() } else { format!(" {name}") };
        format!("{verb:<7} {group}{resource}{name}  [{}]", if scope == "cluster" { "ClusterRole" } else { "Role" })
    };
    println!("\ngranted by the chart ({} permissions):", granted.len());
    for g in &granted {
        println!("  {}{}", show(g), if used_grants.contains(g) { "" } else { "   <- unused" });
    }
    assert!(denied.is_empty(), "the chart's RBAC does not grant what the control plane used:\n{denied:#?}");
    let unused: BTreeSet<String> = granted.iter().filter(|g| !used_grants.contains(*g)).map(show).collect();
    let expected: BTreeSet<String> = UNEXERCISED.iter().map(|(g, _)| (*g).to_owned()).collect();
    let surplus: Vec<&String> = unused.difference(&expected).collect();
    assert!(surplus.is_empty(), "the chart grants what the control plane never used:\n{surplus:#?}");
    let now_used: Vec<&String> = expected.difference(&unused).collect();
    assert!(now_used.is_empty(), "UNEXERCISED lists grants that were used (remove them): {now_used:#?}");
    for (g, why) in UNEXERCISED {
        println!("granted though not exercised here: {g}: {why}");
    }
    drop(proxy);
    drop(cp);
    drop(kube);
    drop(cluster);
    Ok(())
}

/// Runs the injected pod's `weft-proxy` container as its spec says (no
/// capture: only its certificate matters here), with a projected token the
/// double issues for its ServiceAccount, bound to it; the control plane's
/// Service name resolves to the control plane's pod. Returns the process
/// and the pod's address.
fn run_injected_proxy(
    cluster: &mut Cluster,
    kube: &Kube,
    stored: &Value,
    cp_ip: std::net::Ipv4Addr,
    log_dir: &Path,
) -> anyhow::Result<(ChildHandle, std::net::Ipv4Addr)> {
    let name = stored["metadata"]["name"].as_str().context("name")?;
    let namespace = stored["metadata"]["namespace"].as_str().context("namespace")?;
    let uid = stored["metadata"]["uid"].as_str().context("uid")?;
    let sidecar = stored["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "weft-proxy")
        .context("no weft-proxy container")?;
    let pod = cluster.pod(name)?;
    let status = json!({"status": {"phase": "Running", "podIP": pod.ip().to_string(), "podIPs": [{"ip": pod.ip().to_string()}]}});
    kube.api.patch_status("v1", "Pod", namespace, name, status).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut env = Vec::new();
    for e in sidecar["env"].as_array().into_iter().flatten() {
        let value = match (e["value"].as_str(), e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
            (Some(v), _) => v.to_owned(),
            (None, Some("metadata.name")) => name.to_owned(),
            (None, Some("metadata.namespace")) => namespace.to_owned(),
            (None, Some("spec.serviceAccountName")) => {
                stored["spec"]["serviceAccountName"].as_str().unwrap_or("default").to_owned()
            }
            (None, Some("status.podIP")) => pod.ip().to_string(),
            (None, other) => bail!("unsupported environment source {other:?}"),
        };
        env.push((e["name"].as_str().unwrap_or_default().to_owned(), value));
    }
    let volume = stored["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["projected"]["sources"][0]["serviceAccountToken"].is_object())
        .context("no projected token")?;
    let projection = &volume["projected"]["sources"][0]["serviceAccountToken"];
    let mount = sidecar["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == volume["name"])
        .context("the token is not mounted")?;
    let token = kube.api.issue_token(
        namespace,
        stored["spec"]["serviceAccountName"].as_str().unwrap_or("default"),
        &[projection["audience"].as_str().unwrap_or_default()],
        Duration::from_secs(projection["expirationSeconds"].as_u64().unwrap_or(3600)),
        Some((name, uid)),
    );
    let dir = log_dir.join(format!("{name}-token"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(projection["path"].as_str().unwrap_or("token")), token)?;
    let hosts = log_dir.join(format!("{name}-hosts"));
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n{cp_ip} weft-cp.weft-system.svc\n"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    for f in std::fs::read_dir(&dir)? {
        std::fs::set_permissions(f?.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    let user = sidecar["securityContext"]["runAsUser"].as_u64().context("runAsUser")?;
    let mount_path = mount["mountPath"].as_str().context("mountPath")?;
    let script = format!(
        "mkdir -p {mount_path} && mount --bind {} {mount_path} && mount --bind {} /etc/hosts && \
         exec setpriv --reuid={user} --regid={user} --clear-groups -- \"$@\"",
        dir.display(),
        hosts.display()
    );
    let mut argv = vec!["-c".to_string(), script, "sh".into()];
    for (i, a) in sidecar["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(sidecar["args"].as_array().into_iter().flatten())
        .enumerate()
    {
        let a = a.as_str().context("argument")?;
        argv.push(if i == 0 { workspace_bin("weft-proxy")?.to_string_lossy().into_owned() } else { a.to_owned() });
    }
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let process = pod.spawn(Path::new("/bin/sh"), &refs, &env_refs, &log_dir.join(format!("{name}-proxy.log")))?;
    Ok((process, pod.ip()))
}
