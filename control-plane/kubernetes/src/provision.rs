//! Gateway provisioning: the objects that run a MeshGatewayInstance — a
//! ServiceAccount, a Deployment of `weft-proxy run --gateway`, a Service
//! with one port per listener port and, when autoscaling is asked for, a
//! HorizontalPodAutoscaler — rendered from the instance (which carries its
//! class's MeshGatewayConfig and its Gateway's `spec.infrastructure`).
//! Pure: the writer applies what this returns.
//!
//! Everything the config can say reaches the objects (replicas, Service
//! type and template, pod template: labels, annotations, resources, node
//! selector, tolerations, affinity, topology spread, security contexts,
//! priority class, image pull secrets, ServiceAccount), and its JSON merge
//! patches are applied last, for anything else. Weft's own labels are set
//! after the user's, so a template cannot detach the pods from their
//! Deployment or Service.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use weft_inject::settings::{ADMIN_PORT, HEALTH_PORT, METRICS_PORT, PROXY_BINARY, PROXY_UID, TOKEN_DIR, TOKEN_FILE};
use weft_k8s_api::crds::{MeshGatewayInstance, ServiceType};
use weft_k8s_api::labels;
use weft_translate::translate::names::label_value;

use crate::compare::without_nulls;

/// Label on every provisioned object, naming its instance.
pub const INSTANCE_LABEL: &str = "weft.io/gateway-instance";

/// One object to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Provisioned {
    /// `ServiceAccount`, `Deployment`, `Service` or `HorizontalPodAutoscaler`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub body: Value,
}

/// A name that fits a Service (a DNS label, 63 characters).
fn service_name(name: &str) -> String {
    label_value(name)
}

fn owner(mgi: &MeshGatewayInstance) -> Option<Value> {
    let uid = mgi.metadata.uid.as_deref().filter(|u| !u.is_empty())?;
    Some(json!([{
        "apiVersion": weft_k8s_api::crds::API_VERSION, "kind": "MeshGatewayInstance",
        "name": mgi.metadata.name, "uid": uid, "controller": true,
    }]))
}

fn metadata(
    mgi: &MeshGatewayInstance,
    name: &str,
    extra_labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Value {
    let instance = mgi.metadata.name.clone().unwrap_or_default();
    let mut labels_out: BTreeMap<String, String> = extra_labels.clone();
    labels_out.insert(INSTANCE_LABEL.into(), label_value(&instance));
    labels_out.insert("app.kubernetes.io/name".into(), "weft-gateway".into());
    labels_out.insert("app.kubernetes.io/managed-by".into(), "weft".into());
    let mut m = json!({
        "name": name,
        "namespace": mgi.metadata.namespace,
        "labels": labels_out,
    });
    if !annotations.is_empty() {
        m["annotations"] = json!(annotations);
    }
    if let Some(o) = owner(mgi) {
        m["ownerReferences"] = o;
    }
    m
}

/// Renders the objects of one instance. `settings` says which proxy image
/// and control plane the gateway pods use (the injection settings).
pub fn render(mgi: &MeshGatewayInstance, settings: &weft_inject::Settings) -> Vec<Provisioned> {
    let instance = mgi.metadata.name.clone().unwrap_or_default();
    let namespace = mgi.metadata.namespace.clone().unwrap_or_default();
    let spec = &mgi.spec;
    let d = &spec.deployment;
    let pod_meta = d.pod_template.as_ref().and_then(|p| p.metadata.clone()).unwrap_or_default();
    let pod_spec = d.pod_template.as_ref().and_then(|p| p.spec.clone()).unwrap_or_default();
    let svc_meta = d.service_template.as_ref().and_then(|t| t.metadata.clone()).unwrap_or_default();
    let svc_spec = d.service_template.as_ref().and_then(|t| t.spec.clone()).unwrap_or_default();
    let mut out = Vec::new();

    // The ServiceAccount, unless the pods use one of the user's.
    let service_account = match pod_spec.service_account_name.clone().filter(|s| !s.is_empty()) {
        Some(sa) => sa,
        None => {
            out.push(Provisioned {
                kind: "ServiceAccount",
                namespace: namespace.clone(),
                name: instance.clone(),
                body: json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": metadata(mgi, &instance, &BTreeMap::new(), &BTreeMap::new())}),
            });
            instance.clone()
        }
    };

    // The pods: the user's labels and tags first, Weft's last.
    let selector = json!({INSTANCE_LABEL: label_value(&instance)});
    let mut pod_labels: BTreeMap<String, String> = pod_meta.labels.clone();
    pod_labels.extend(spec.tags.clone());
    pod_labels.insert(INSTANCE_LABEL.into(), label_value(&instance));
    pod_labels.insert(labels::GATEWAY_INSTANCE.into(), label_value(&instance));
    pod_labels.insert(labels::SIDECAR_INJECTION.into(), "disabled".into());
    pod_labels.insert(labels::MESH.into(), label_value(&spec.mesh));
    pod_labels.insert("app.kubernetes.io/name".into(), "weft-gateway".into());
    let mut ports: Vec<i32> = spec.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let mut container_ports: Vec<Value> =
        ports.iter().map(|p| json!({"name": format!("l{p}"), "containerPort": p, "protocol": "TCP"})).collect();
    container_ports.push(json!({"name": "weft-health", "containerPort": HEALTH_PORT, "protocol": "TCP"}));
    container_ports.push(json!({"name": "weft-metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}));
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let container_security = pod_spec.container_security_context.clone().map(|c| json!(c)).unwrap_or_else(|| {
        json!({"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": true,
               "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}})
    });
    let probe = |path: &str, period: i32| {
        json!({"httpGet": {"path": path, "port": HEALTH_PORT, "scheme": "HTTP"}, "periodSeconds": period,
               "timeoutSeconds": 1, "failureThreshold": 3})
    };
    let mut container = json!({
        "name": "weft-gateway",
        "image": settings.image,
        "command": [PROXY_BINARY],
        "args": ["run", "--gateway", instance, "--control-plane", settings.control_plane, "--mesh", spec.mesh,
                 "--token-file", format!("{TOKEN_DIR}/{TOKEN_FILE}"), "--admin", format!("127.0.0.1:{ADMIN_PORT}"),
                 "--health", format!("0.0.0.0:{HEALTH_PORT}"), "--metrics", format!("0.0.0.0:{METRICS_PORT}")],
        "env": [field("WEFT_WORKLOAD", "metadata.name"), field("WEFT_NAMESPACE", "metadata.namespace"),
                field("WEFT_SERVICE_ACCOUNT", "spec.serviceAccountName"), field("WEFT_POD_IP", "status.podIP"),
                {"name": "WEFT_LOG", "value": settings.log_level}],
        "ports": container_ports,
        "readinessProbe": probe("/ready", 2),
        "livenessProbe": probe("/live", 10),
        "securityContext": container_security,
        "volumeMounts": [{"name": "weft-identity-token", "mountPath": TOKEN_DIR, "readOnly": true}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if let Some(policy) = &settings.image_pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    container["resources"] = json!(d.resources.clone().unwrap_or_else(|| settings.resources.clone()));
    // Listeners on ports below 1024 without privileges: a safe sysctl.
    let mut pod_security = pod_spec.security_context.clone().map(|s| json!(s)).unwrap_or_else(|| json!({}));
    let sysctls = pod_security.get("sysctls").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut sysctls: Vec<Value> =
        sysctls.into_iter().filter(|s| s["name"] != "net.ipv4.ip_unprivileged_port_start").collect();
    sysctls.push(json!({"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}));
    pod_security["sysctls"] = json!(sysctls);
    let mut pod = json!({
        "serviceAccountName": service_account,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [{"name": "weft-identity-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": settings.token_audience, "expirationSeconds": settings.token_expiration_seconds,
            "path": TOKEN_FILE}}]}}],
    });
    let set = |pod: &mut Value, key: &str, v: Value| {
        if !v.is_null() && v != json!([]) && v != json!({}) {
            pod[key] = v;
        }
    };
    set(&mut pod, "nodeSelector", json!(pod_spec.node_selector));
    set(&mut pod, "tolerations", json!(pod_spec.tolerations));
    set(&mut pod, "affinity", json!(pod_spec.affinity));
    set(&mut pod, "topologySpreadConstraints", json!(pod_spec.topology_spread_constraints));
    set(&mut pod, "priorityClassName", json!(pod_spec.priority_class_name));
    set(&mut pod, "imagePullSecrets", json!(pod_spec.image_pull_secrets));
    // Prometheus's conventional annotations point at the proxy's metrics
    // port unless the MeshGatewayConfig sets its own.
    let mut pod_annotations = pod_meta.annotations.clone();
    if !pod_annotations.contains_key("prometheus.io/scrape") {
        pod_annotations.insert("prometheus.io/scrape".into(), "true".into());
        pod_annotations.insert("prometheus.io/port".into(), METRICS_PORT.to_string());
        pod_annotations.insert("prometheus.io/path".into(), "/metrics".into());
    }
    let template_meta = json!({"labels": pod_labels, "annotations": pod_annotations});
    let mut deployment_spec = json!({
        "selector": {"matchLabels": selector.clone()},
        "template": {"metadata": template_meta, "spec": pod},
    });
    // With an autoscaler the replica count is its to set: applying one
    // would fight it.
    if d.autoscaling.is_none() {
        deployment_spec["replicas"] = json!(d.replicas);
    }
    let mut deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(mgi, &instance, &pod_meta.labels, &BTreeMap::new()),
        "spec": deployment_spec,
    });
    if let Some(patch) = d.patches.as_ref().and_then(|p| p.deployment.as_ref()) {
        json_patch::merge(&mut deployment, patch);
    }
    out.push(Provisioned {
        kind: "Deployment",
        namespace: namespace.clone(),
        name: instance.clone(),
        body: deployment,
    });

    // The Service.
    let service_type = if spec.cross_mesh { ServiceType::ClusterIP } else { d.service_type };
    let type_name = match service_type {
        ServiceType::LoadBalancer => "LoadBalancer",
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
    };
    let svc_name = service_name(&instance);
    let mut service_spec = json!({
        "type": type_name,
        "selector": selector,
        "ports": ports.iter().map(|p| json!({"name": format!("l{p}"), "port": p, "targetPort": p, "protocol": "TCP"})).collect::<Vec<_>>(),
    });
    // Requested addresses: static IPs the Service takes as external IPs
    // (hostnames cannot be assigned; the status reports them unusable).
    let requested: Vec<&str> = spec
        .addresses
        .iter()
        .filter(|a| a.type_ == "IPAddress" && !a.value.is_empty())
        .map(|a| a.value.as_str())
        .collect();
    if !requested.is_empty() {
        service_spec["externalIPs"] = json!(requested);
    }
    if service_type == ServiceType::LoadBalancer {
        set(&mut service_spec, "loadBalancerIP", json!(svc_spec.load_balancer_ip));
        set(&mut service_spec, "loadBalancerClass", json!(svc_spec.load_balancer_class));
    }
    if service_type != ServiceType::ClusterIP {
        set(&mut service_spec, "externalTrafficPolicy", json!(svc_spec.external_traffic_policy));
    }
    let mut service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(mgi, &svc_name, &svc_meta.labels, &svc_meta.annotations),
        "spec": service_spec,
    });
    if let Some(patch) = d.patches.as_ref().and_then(|p| p.service.as_ref()) {
        json_patch::merge(&mut service, patch);
    }
    out.push(Provisioned { kind: "Service", namespace: namespace.clone(), name: svc_name, body: service });

    if let Some(a) = &d.autoscaling {
        out.push(Provisioned {
            kind: "HorizontalPodAutoscaler",
            namespace,
            name: instance.clone(),
            body: json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": metadata(mgi, &instance, &BTreeMap::new(), &BTreeMap::new()),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": instance},
                    "minReplicas": a.min_replicas.unwrap_or(1),
                    "maxReplicas": a.max_replicas,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                        "type": "Utilization", "averageUtilization": a.target_cpu_utilization_percentage.unwrap_or(80)}}}],
                },
            }),
        });
    }
    for p in &mut out {
        p.body = without_nulls(std::mem::take(&mut p.body));
    }
    out
}
