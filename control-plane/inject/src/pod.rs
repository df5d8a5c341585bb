//! The mutation of one pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
    Lifecycle, LifecycleHandler, ObjectFieldSelector, Pod, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_k8s_api::labels;

use crate::overrides::{Overrides, PROXY_VERSION};
use crate::probes;
use crate::settings::{
    ADMIN_PORT, APP_PROBES_ENV, HEALTH_PORT, INIT_CONTAINER, INIT_RUN_VOLUME, METRICS_PORT, PROXY_BINARY,
    PROXY_CONTAINER, PROXY_UID, Settings, TOKEN_DIR, TOKEN_FILE, TOKEN_VOLUME,
};
use crate::{InjectError, Mode, Outcome, Skip};

/// The annotation Prometheus's Kubernetes scrape configurations select on.
const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";

/// The namespace a pod is created in, as injection needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

fn get<'a>(map: &'a Option<BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    map.as_ref()?.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

/// The pod's mesh: its own `weft.io/mesh` (annotation, then label), else
/// its namespace's, else `default`.
fn mesh_of(pod: &Pod, namespace: &NamespaceInfo) -> String {
    let m = &pod.metadata;
    get(&m.annotations, labels::MESH)
        .or_else(|| get(&m.labels, labels::MESH))
        .or_else(|| namespace.annotations.get(labels::MESH).map(String::as_str).filter(|v| !v.is_empty()))
        .or_else(|| namespace.labels.get(labels::MESH).map(String::as_str).filter(|v| !v.is_empty()))
        .unwrap_or(labels::DEFAULT_MESH)
        .to_string()
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

fn joined<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

fn health_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(HEALTH_PORT),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Default::default()
    }
}

fn init_container(settings: &Settings, o: &Overrides) -> Container {
    // The health and metrics ports must reach the proxy directly: the
    // kubelet probes one, Prometheus scrapes the other in plaintext.
    let mut inbound: Vec<u16> = vec![HEALTH_PORT as u16, METRICS_PORT as u16];
    inbound.extend(&o.exclude_inbound_ports);
    let mut args = vec![
        "init".to_string(),
        "--proxy-uid".into(),
        PROXY_UID.to_string(),
        "--control-plane-port".into(),
        settings.control_plane_port.to_string(),
        "--admin-port".into(),
        ADMIN_PORT.to_string(),
        "--exclude-inbound-ports".into(),
        joined(inbound),
    ];
    if !o.exclude_outbound_ports.is_empty() {
        args.extend(["--exclude-outbound-ports".into(), joined(&o.exclude_outbound_ports)]);
    }
    if !o.exclude_outbound_cidrs.is_empty() {
        args.extend(["--exclude-outbound-cidrs".into(), o.exclude_outbound_cidrs.join(",")]);
    }
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(settings.image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        command: Some(vec![PROXY_BINARY.into()]),
        args: Some(args),
        // iptables needs these two, and root; nothing else.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: INIT_RUN_VOLUME.into(),
            mount_path: "/run".into(),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("10m".into())),
                ("memory".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("16Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("64Mi".into()),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn proxy_resources(settings: &Settings, o: &Overrides) -> ResourceRequirements {
    let mut r = settings.resources.clone();
    if !o.requests.is_empty() {
        r.requests.get_or_insert_with(BTreeMap::new).extend(o.requests.clone());
    }
    if !o.limits.is_empty() {
        r.limits.get_or_insert_with(BTreeMap::new).extend(o.limits.clone());
    }
    r
}

fn proxy_container(
    settings: &Settings,
    o: &Overrides,
    mesh: &str,
    native: bool,
    app_probes: &BTreeMap<String, probes::AppProbe>,
) -> Container {
    let mut env = vec![
        field_env("WEFT_WORKLOAD", "metadata.name"),
        field_env("WEFT_NAMESPACE", "metadata.namespace"),
        field_env("WEFT_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("WEFT_POD_IP", "status.podIP"),
        env("WEFT_LOG", o.log_level.clone().unwrap_or_else(|| settings.log_level.clone())),
    ];
    if !app_probes.is_empty() {
        env.push(env_json(app_probes));
    }
    Container {
        name: PROXY_CONTAINER.into(),
        image: Some(settings.image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        command: Some(vec![PROXY_BINARY.into()]),
        args: Some(vec![
            "run".into(),
            "--control-plane".into(),
            settings.control_plane.clone(),
            "--mesh".into(),
            mesh.into(),
            "--token-file".into(),
            format!("{TOKEN_DIR}/{TOKEN_FILE}"),
            "--admin".into(),
            format!("127.0.0.1:{ADMIN_PORT}"),
            "--health".into(),
            format!("0.0.0.0:{HEALTH_PORT}"),
            "--metrics".into(),
            format!("0.0.0.0:{METRICS_PORT}"),
        ]),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("weft-health".into()),
                container_port: HEALTH_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("weft-metrics".into()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        resources: Some(proxy_resources(settings, o)),
        // A native sidecar keeps the app from starting until it is ready;
        // the kubelet restarts it like any container.
        restart_policy: native.then(|| "Always".to_string()),
        startup_probe: native.then(|| health_probe("/ready", 1, 120)),
        readiness_probe: Some(health_probe("/ready", 2, 3)),
        liveness_probe: Some(health_probe("/live", 10, 3)),
        // Without native sidecars, the first container's postStart hook
        // holds the next containers until the proxy is ready.
        lifecycle: (!native).then(|| Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        PROXY_BINARY.into(),
                        "wait-ready".into(),
                        "--health".into(),
                        format!("127.0.0.1:{HEALTH_PORT}"),
                        "--timeout".into(),
                        "120s".into(),
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

fn env_json(app_probes: &BTreeMap<String, probes::AppProbe>) -> EnvVar {
    env(APP_PROBES_ENV, serde_json::to_string(app_probes).unwrap_or_default())
}

fn token_volume(settings: &Settings) -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(settings.token_audience.clone()),
                    expiration_seconds: Some(settings.token_expiration_seconds),
                    path: TOKEN_FILE.into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn has_proxy(spec: &PodSpec) -> bool {
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| c.name == PROXY_CONTAINER)
}

/// Why a pod is not injected, if it is not.
fn skip(pod: &Pod, namespace: &NamespaceInfo, mode: Mode) -> Option<Skip> {
    let m = &pod.metadata;
    let pod_setting =
        get(&m.labels, labels::SIDECAR_INJECTION).or_else(|| get(&m.annotations, labels::SIDECAR_INJECTION));
    if pod_setting == Some("disabled") {
        return Some(Skip::OptedOut);
    }
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return Some(Skip::HostNetwork);
    }
    if has_proxy(spec) {
        return Some(Skip::AlreadyInjected);
    }
    let enabled = pod_setting == Some("enabled")
        || namespace.labels.get(labels::SIDECAR_INJECTION).map(String::as_str) == Some("enabled");
    if mode == Mode::Webhook && !enabled {
        return Some(Skip::NotEnabled);
    }
    None
}

/// Injects one pod; see the crate docs.
pub fn inject(
    pod: &Pod,
    namespace: &NamespaceInfo,
    settings: &Settings,
    native_sidecars: bool,
    mode: Mode,
) -> Result<Outcome, InjectError> {
    if pod.spec.is_none() {
        return Err(InjectError::NoSpec);
    }
    if let Some(why) = skip(pod, namespace, mode) {
        return Ok(Outcome::Skipped(why));
    }
    let overrides = Overrides::from_annotations(pod.metadata.annotations.as_ref().unwrap_or(&BTreeMap::new()))?;
    let native = overrides.native_sidecar.unwrap_or(native_sidecars);
    let mesh = mesh_of(pod, namespace);
    let mut out = pod.clone();
    let spec = out.spec.as_mut().ok_or(InjectError::NoSpec)?;
    let app_probes = probes::rewrite(&mut spec.containers)?;
    let init = init_container(settings, &overrides);
    let proxy = proxy_container(settings, &overrides, &mesh, native, &app_probes);
    let inits = spec.init_containers.get_or_insert_with(Vec::new);
    if native {
        // Capture first, then the proxy: later init containers (the
        // user's) already have the mesh.
        inits.insert(0, init);
        inits.insert(1, proxy);
    } else {
        // Without native sidecars no proxy runs during init: the user's
        // init containers keep running before the capture exists.
        inits.push(init);
        spec.containers.insert(0, proxy);
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(token_volume(settings));
    volumes.push(Volume {
        name: INIT_RUN_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), ..Default::default() }),
        ..Default::default()
    });
    let meta = &mut out.metadata;
    meta.labels.get_or_insert_with(BTreeMap::new).insert(labels::MESH.into(), mesh);
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(PROXY_VERSION.into(), env!("CARGO_PKG_VERSION").into());
    // Prometheus's conventional annotations point at the proxy's metrics,
    // unless the pod already has its own (its application's metrics are not
    // merged into the proxy's, so they are left as the user set them).
    if !annotations.contains_key(PROMETHEUS_SCRAPE) {
        annotations.insert(PROMETHEUS_SCRAPE.into(), "true".into());
        annotations.insert("prometheus.io/port".into(), METRICS_PORT.to_string());
        annotations.insert("prometheus.io/path".into(), "/metrics".into());
    }
    Ok(Outcome::Injected(Box::new(out)))
}
