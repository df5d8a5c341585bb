//! Hostile config-stream clients against a running mesh under load: real
//! proxies (a gateway pod and sidecars in network namespaces) serve traffic
//! while clients the test drives over gRPC try every way the config stream
//! was once open to — no token, a forged token, another namespace's token,
//! endpoints announced with someone else's address or an invalid IP, a
//! gateway announced from another identity, a real proxy's name taken
//! while it reconnects after a control-plane restart. Each is refused with its gRPC code,
//! logged ("config stream refused", with the reason) and counted
//! (`weft_cp_config_streams_refused_total{reason}`), nothing it announced
//! reaches a proxy or the Gateway's status, and no request fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_api as api;
use weft_api::proxy_config_client::ProxyConfigClient;
use weft_e2e::load::Outcome;
use weft_e2e::mesh::{Mesh, PodSpec};

const MANIFESTS: &str = "
apiVersion: weft.io/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  mtls: {mode: Strict}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: attacker}
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
  - {name: web, protocol: HTTP, port: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: store, namespace: shop}
spec:
  clusterIP: 10.96.60.11
  selector: {app: store}
  ports: [{name: http, port: 9080, appProtocol: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  rules:
  - backendRefs: [{name: store, port: 9080}]
";

/// An address no pod has: what the attacker wants traffic sent to.
const ATTACKER_IP: &str = "192.0.2.66";

/// One hostile attempt: what it announces and with which token.
struct Attempt {
    what: &'static str,
    workload: api::Workload,
    token: String,
    code: tonic::Code,
    reason: &'static str,
}

fn workload(ns: &str, name: &str, ip: &str, role: api::Role, gateway: &str) -> api::Workload {
    api::Workload {
        name: name.into(),
        namespace: ns.into(),
        service_account: String::new(),
        labels: [("app".to_string(), "store".to_string())].into_iter().collect(),
        ips: vec![ip.into()],
        ports: vec![api::WorkloadPort { name: "http".into(), port: 9080 }],
        mesh: String::new(),
        role: role as i32,
        gateway: gateway.into(),
    }
}

/// Opens a config stream with a Hello; `Ok` with the number of updates
/// received in 2 s if the control plane accepted it, the refusal otherwise.
async fn open_stream(addr: SocketAddr, workload: api::Workload, token: String) -> Result<usize, tonic::Status> {
    let mut client = ProxyConfigClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    let (tx, rx) = mpsc::channel(4);
    let hello = api::Hello { workload: Some(workload), versions: Default::default(), token };
    tx.send(api::ProxyMessage { message: Some(api::proxy_message::Message::Hello(hello)) })
        .await
        .map_err(|_| tonic::Status::internal("the request stream closed"))?;
    let mut updates = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, updates.message()).await {
            Ok(Ok(Some(_))) => received += 1,
            Ok(Ok(None)) | Err(_) => return Ok(received),
            Ok(Err(status)) => return Err(status),
        }
    }
}

/// `weft_cp_config_streams_refused_total` by reason.
fn refused_counts(mesh: &Mesh) -> anyhow::Result<BTreeMap<String, f64>> {
    Ok(mesh
        .control_plane_text("/metrics")?
        .lines()
        .filter_map(|l| l.strip_prefix("weft_cp_config_streams_refused_total{reason=\""))
        .filter_map(|l| {
            let (reason, value) = l.split_once("\"} ")?;
            Some((reason.to_string(), value.trim().parse().ok()?))
        })
        .collect())
}

/// Runs each attempt and checks its refusal: code, a message, counted.
fn refuse_all(rt: &tokio::runtime::Runtime, mesh: &Mesh, attempts: Vec<Attempt>) -> anyhow::Result<Vec<String>> {
    let mut messages = Vec::new();
    for a in attempts {
        let before = refused_counts(mesh)?.get(a.reason).copied().unwrap_or(0.0);
        let outcome = rt.block_on(open_stream(mesh.control_plane_grpc(), a.workload, a.token));
        let status = match outcome {
            Ok(updates) => anyhow::bail!("{}: the stream was accepted ({updates} updates sent to it)", a.what),
            Err(status) => status,
        };
        anyhow::ensure!(status.code() == a.code, "{}: refused with {:?}, expected {:?}", a.what, status, a.code);
        anyhow::ensure!(!status.message().is_empty(), "{}: refused without a reason", a.what);
        let after = refused_counts(mesh)?.get(a.reason).copied().unwrap_or(0.0);
        anyhow::ensure!(
            after == before + 1.0,
            "{}: not counted under reason {} ({before} → {after})",
            a.what,
            a.reason
        );
        println!("{}: refused, {:?} \"{}\" (reason {})", a.what, status.code(), status.message(), a.reason);
        messages.push(status.message().to_string());
    }
    Ok(messages)
}

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.status != 200).collect()
}

/// The IPs of an endpoint set in a proxy's config dump.
fn endpoint_ips(dump: &serde_json::Value, key: &str) -> Vec<String> {
    dump["endpoints"][key]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["ip"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn hostile_config_stream_clients_are_refused_while_traffic_flows() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut mesh = Mesh::start("hostile-cp", &[("mesh.yaml", MANIFESTS)])?;
    let store = mesh.add_pod(&PodSpec::new("store-a", "shop").label("app", "store").port("http", 9080))?;
    let gateway = mesh.add_pod(&PodSpec::new("edge-gw-a", "shop").gateway("edge"))?;
    let shopper = mesh.add_pod(&PodSpec::new("shopper", "shop").label("app", "shopper"))?;
    let outsider = mesh.add_pod(&PodSpec::new("outsider", "shop").without_sidecar())?;
    for pod in [&store, &gateway, &shopper] {
        mesh.wait_for_certificate(pod, Duration::from_secs(30))?;
    }
    for pod in [&gateway, &shopper] {
        mesh.wait_for_config(pod, "the store's endpoint", Duration::from_secs(30), |d| {
            endpoint_ips(d, "ep/shop/store") == [store.ip().to_string()]
        })?;
    }
    let entry = SocketAddr::new(gateway.ip().into(), 8080);
    let vip: SocketAddr = "10.96.60.11:9080".parse()?;
    let state = mesh.state_dir.clone();
    let token = |ns: &str, sa: &str| weft_e2e::join_token(&state, ns, sa, "default");
    let intruder = token("shop", "intruder")?;
    let other_namespace = token("attacker", "default")?;
    // From the test process, streams come from the bridge's address.
    let own_address = mesh.cluster.gateway().to_string();

    let through_sidecar = mesh.start_load(&shopper, vip, "store.shop:9080", 100, 30.0)?;
    let through_gateway = mesh.start_load(&outsider, entry, "store.example", 50, 30.0)?;
    std::thread::sleep(Duration::from_secs(2));

    use api::Role::{Gateway, Sidecar};
    use tonic::Code::{AlreadyExists, PermissionDenied, Unauthenticated};
    let attempts = vec![
        Attempt {
            what: "an endpoint of shop/store announced without a token",
            workload: workload("shop", "store-evil", ATTACKER_IP, Sidecar, ""),
            token: String::new(),
            code: Unauthenticated,
            reason: "no_token",
        },
        Attempt {
            what: "the same with a forged token",
            workload: workload("shop", "store-evil", ATTACKER_IP, Sidecar, ""),
            token: format!("{intruder}x"),
            code: PermissionDenied,
            reason: "bad_token",
        },
        Attempt {
            what: "the same with another namespace's token",
            workload: workload("shop", "store-evil", ATTACKER_IP, Sidecar, ""),
            token: other_namespace.clone(),
            code: PermissionDenied,
            reason: "other_namespace",
        },
        Attempt {
            what: "an endpoint of shop/store at someone else's address, with a shop token",
            workload: workload("shop", "store-evil", ATTACKER_IP, Sidecar, ""),
            token: intruder.clone(),
            code: PermissionDenied,
            reason: "bad_address",
        },
        Attempt {
            what: "an endpoint of shop/store at a real pod's address, with a shop token",
            workload: workload("shop", "store-evil", &store.ip().to_string(), Sidecar, ""),
            token: intruder.clone(),
            code: PermissionDenied,
            reason: "bad_address",
        },
        Attempt {
            what: "an endpoint with an invalid IP",
            workload: workload("shop", "store-evil", "999.1.2.3", Sidecar, ""),
            token: intruder.clone(),
            code: PermissionDenied,
            reason: "bad_address",
        },
        Attempt {
            what: "a gateway for shop/edge announced without a token",
            workload: workload("shop", "edge-evil", ATTACKER_IP, Gateway, "edge"),
            token: String::new(),
            code: Unauthenticated,
            reason: "no_token",
        },
        Attempt {
            what: "a gateway for shop/edge with another namespace's token",
            workload: workload("shop", "edge-evil", ATTACKER_IP, Gateway, "edge"),
            token: other_namespace.clone(),
            code: PermissionDenied,
            reason: "other_namespace",
        },
        Attempt {
            what: "a gateway for shop/edge at someone else's address, with a shop token",
            workload: workload("shop", "edge-evil", ATTACKER_IP, Gateway, "edge"),
            token: intruder.clone(),
            code: PermissionDenied,
            reason: "bad_address",
        },
        Attempt {
            what: "a connected proxy's name (shop/store-a), by another identity",
            workload: workload("shop", "store-a", &own_address, Sidecar, ""),
            token: intruder.clone(),
            code: AlreadyExists,
            reason: "name_taken",
        },
    ];
    refuse_all(&rt, &mesh, attempts)?;
    let first_log = std::fs::read_to_string(mesh.cluster.log_dir().join("weft-cp.log"))?;

    // The control plane crashes and comes back; the store proxy cannot
    // reach it yet (its reconnects are rejected in its pod), so the first
    // stream to ask for its name is an impostor's: the name is kept for
    // the ServiceAccount that held it.
    let cp = mesh.control_plane_grpc();
    let (cp_ip, cp_port) = (cp.ip().to_string(), cp.port().to_string());
    let rule = ["OUTPUT", "-p", "tcp", "-d", &cp_ip, "--dport", &cp_port, "-j", "REJECT", "--reject-with", "tcp-reset"];
    let iptables = |op: &str| -> anyhow::Result<String> {
        let mut args = vec!["iptables", "-w", op];
        args.extend_from_slice(&rule);
        store.exec_ok(&args)
    };
    std::thread::sleep(Duration::from_secs(2));
    iptables("-I")?;
    mesh.restart_control_plane(Duration::from_millis(500))?;
    let restarted = refuse_all(
        &rt,
        &mesh,
        vec![Attempt {
            what: "the store proxy's name while it reconnects after a control-plane restart, by another identity",
            workload: workload("shop", "store-a", &own_address, Sidecar, ""),
            token: intruder.clone(),
            code: AlreadyExists,
            reason: "name_taken",
        }],
    );
    iptables("-D")?;
    let message = restarted?;
    anyhow::ensure!(
        message[0].contains("kept for it while it reconnects"),
        "not refused as a reserved name: {message:?}"
    );

    let mut outcomes_total = 0;
    for (what, load) in [("through the sidecar", through_sidecar), ("through the gateway", through_gateway)] {
        let outcomes = load.finish()?;
        let failed = failures(&outcomes);
        println!("{what}, beside the hostile clients: {} requests, {} failed", outcomes.len(), failed.len());
        anyhow::ensure!(outcomes.len() >= 1_000, "{what}: only {} requests were sent", outcomes.len());
        anyhow::ensure!(failed.is_empty(), "{what}: {:?}", &failed[..failed.len().min(5)]);
        outcomes_total += outcomes.len();
    }

    // Nothing the attackers announced reached a proxy or the Gateway.
    for pod in [&gateway, &shopper] {
        let ips = endpoint_ips(&mesh.config_dump(pod)?, "ep/shop/store");
        anyhow::ensure!(ips == [store.ip().to_string()], "{}: store endpoints {ips:?}", pod.name());
    }
    let status = mesh.control_plane_get("/api/v1/status/Gateway/shop/edge")?;
    let addresses: Vec<&str> =
        status["status"]["addresses"].as_array().into_iter().flatten().filter_map(|a| a["value"].as_str()).collect();
    anyhow::ensure!(addresses == [gateway.ip().to_string()], "Gateway addresses {addresses:?}");
    // The real store proxy still holds its session and gets updates: a new
    // Service reaches it.
    mesh.write(
        "extra.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: shop}\nspec:\n  clusterIP: 10.96.60.12\n  selector: {app: extra}\n  ports: [{name: http, port: 9080}]\n",
    )?;
    mesh.wait_for_config(&store, "a Service added after the impostor", Duration::from_secs(20), |d| {
        d["services"]["svc/shop/extra"].is_object()
    })?;
    let proxies = mesh.control_plane_get("/api/v1/proxies")?;
    let store_session = proxies["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == "shop/store-a")
        .cloned()
        .unwrap_or_default();
    anyhow::ensure!(
        store_session["proven"] == "shop/default",
        "shop/store-a is not held by the real proxy's identity: {store_session}"
    );

    // Every refusal is in the control plane's logs, with its reason.
    let second_log = std::fs::read_to_string(mesh.cluster.log_dir().join("weft-cp-restart-1.log"))?;
    let refusals = |log: &str, reason: &str| {
        log.lines().filter(|l| l.contains("config stream refused") && l.contains(reason)).count()
    };
    let mut logged = BTreeMap::new();
    for (reason, expected) in
        [("no_token", 2), ("bad_token", 1), ("other_namespace", 2), ("bad_address", 4), ("name_taken", 1)]
    {
        let n = refusals(&first_log, reason);
        anyhow::ensure!(n >= expected, "{reason}: {n} refusals logged before the restart, expected {expected}");
        logged.insert(reason, n);
    }
    anyhow::ensure!(refusals(&second_log, "name_taken") >= 1, "the impostor after the restart was not logged");
    println!(
        "refusals logged: {logged:?} before the restart, name_taken after it; {outcomes_total} requests, 0 failed"
    );
    Ok(())
}
