//! Kubernetes mode: wires `weft-kubernetes` (source, Lease, writer, CA
//! Secrets) to the control loop and servers every mode shares.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use weft_identity::store::SharedCas;
use weft_k8s_api::crds::MeshStatus;
use weft_kubernetes::leader::{Leadership, LeaseConfig};
use weft_kubernetes::queue::Limits;
use weft_kubernetes::source::{ClusterSnapshot, Source};
use weft_kubernetes::writer::{Desired, WriterConfig};
use weft_kubernetes::{ca, leader, source, writer};

use crate::control::{self, Input, Published};
use crate::identity::{CaSource, Identities};
use crate::metrics::Metrics;
use crate::{Config, Running, admin, start_core};

/// Kubernetes mode's settings.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// A kubeconfig to use; otherwise `KUBECONFIG`, `~/.kube/config` or the
    /// in-cluster configuration, as kubectl finds them.
    pub kubeconfig: Option<PathBuf>,
    /// The control plane's namespace (its Lease and Secrets live there).
    pub namespace: String,
    /// This replica's name in the Lease (its pod name).
    pub identity: String,
    /// Lease duration; the leader renews every third of it.
    pub lease_duration: Duration,
    /// Writes per second (and twice that in a burst).
    pub write_qps: f64,
    /// Audience of the ServiceAccount tokens proxies present.
    pub token_audience: String,
    /// Where the injection webhook listens (HTTPS); `None`: no webhook.
    pub webhook_addr: Option<SocketAddr>,
    /// The Service in front of the webhook (names its certificate).
    pub webhook_service: String,
    /// The MutatingWebhookConfiguration whose caBundle the leader keeps.
    pub webhook_configuration: String,
    /// What injection adds (proxy image, resources, log level...).
    pub inject: weft_inject::Settings,
    /// Native sidecars; `None`: when the API server is 1.29 or newer.
    pub native_sidecars: Option<bool>,
}

impl KubeOptions {
    /// Defaults for `namespace` and `identity`.
    pub fn new(namespace: &str, identity: &str) -> Self {
        KubeOptions {
            kubeconfig: None,
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            write_qps: 50.0,
            token_audience: "weft.io/identity".to_owned(),
            webhook_addr: None,
            webhook_service: "weft-cp".to_owned(),
            webhook_configuration: "weft-injector".to_owned(),
            inject: weft_inject::Settings::default(),
            native_sidecars: None,
        }
    }
}

/// What must end cleanly when the control plane stops.
#[derive(Debug)]
pub struct Handle {
    stop: watch::Sender<bool>,
    released: Option<oneshot::Receiver<()>>,
}

impl Handle {
    /// Gives the Lease up (when held) before the process ends.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(released) = self.released.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), released).await;
        }
    }
}

async fn client(options: &KubeOptions) -> anyhow::Result<kube::Client> {
    let config = match &options.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration found (in-cluster, KUBECONFIG or ~/.kube/config); use --local DIR outside a cluster")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

fn mesh_status(ready: bool, generation: Option<i64>) -> MeshStatus {
    let (status, reason, message) = if ready {
        ("True", "CAReady", "the mesh CA is loaded; proxies of this mesh get certificates")
    } else {
        ("False", "CAUnavailable", "the mesh CA is not available yet; proxies of this mesh get no certificates")
    };
    MeshStatus {
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: Time(Timestamp::now()),
        }],
    }
}

/// Starts the control plane in Kubernetes mode.
pub(crate) async fn start(config: &Config, options: KubeOptions) -> anyhow::Result<Running> {
    let client = client(&options).await?;
    let mut server_minor = None;
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(v)) => {
            tracing::info!(server = %v.git_version, namespace = %options.namespace, identity = %options.identity, "talking to the Kubernetes API");
            if v.major.trim_end_matches('+') == "1" {
                server_minor = v.minor.trim_end_matches('+').parse::<u32>().ok();
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the Kubernetes API did not answer /version; retrying in the background")
        }
        Err(_) => tracing::warn!("the Kubernetes API did not answer /version within 10 s; retrying in the background"),
    }
    // Native sidecars are GA from 1.29; an unknown version gets them too
    // (every supported Kubernetes has them), unless told otherwise.
    let native_sidecars = options.native_sidecars.unwrap_or(server_minor.is_none_or(|m| m >= 29));
    let kube_metrics = weft_kubernetes::metrics::Metrics::default();
    let injector_metrics = weft_kubernetes::injector::InjectorMetrics::default();
    let ca_bundle_repairs = prometheus_client::metrics::counter::Counter::default();
    let uninjected = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    let metrics = Arc::new(Metrics::with(|registry| {
        kube_metrics.register(registry);
        injector_metrics.register(registry);
        registry.register(
            "webhook_ca_bundle_repairs",
            "Times the leader set the injection webhook's caBundle (first setting and every drift)",
            ca_bundle_repairs.clone(),
        );
        registry.register(
            "uninjected_pods",
            "Pods of namespaces with injection enabled that run without a proxy",
            uninjected.clone(),
        );
    }));
    let mut tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = Vec::new();

    // Leader election first: the leader creates the Secrets every replica
    // waits for.
    let (leadership_tx, leadership) = watch::channel(Leadership::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (released_tx, released_rx) = oneshot::channel();
    let lease = LeaseConfig {
        duration: options.lease_duration,
        renew_every: options.lease_duration / 3,
        retry_every: (options.lease_duration / 7).max(Duration::from_millis(500)),
        ..LeaseConfig::new(&options.namespace, &options.identity)
    };
    {
        let (client, metrics, stop_rx) = (client.clone(), kube_metrics.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            leader::run(client, lease, leadership_tx, stop_rx.clone(), metrics).await;
            let _ = released_tx.send(());
            if *stop_rx.borrow() {
                Ok(())
            } else {
                anyhow::bail!("the leader election task ended; exiting so that this replica is restarted")
            }
        }));
    }

    let key = ca::token_key(client.clone(), &options.namespace, leadership.clone()).await;
    let cas = Arc::new(SharedCas::default());
    let identities = Arc::new(Identities::new(key, CaSource::Shared(cas.clone())));

    let (snapshots_tx, mut snapshots) = mpsc::channel::<ClusterSnapshot>(4);
    let tls_cache = Arc::new(weft_kubernetes::tls::TlsCache::default());
    let (source, source_task) = source::spawn(client.clone(), kube_metrics.clone(), snapshots_tx, tls_cache.clone());
    let flagged = Arc::new(parking_lot::RwLock::new(Vec::new()));
    let extra = admin::Extra { kubernetes: Some(admin_view(source.clone(), leadership.clone(), flagged.clone())) };
    let reviewer = Arc::new(weft_kubernetes::tokenreview::TokenReviewer::new(
        client.clone(),
        &options.token_audience,
        source.index.clone(),
    ));
    let mut core =
        start_core(config, control::Mode::Kubernetes, metrics, identities.clone(), extra, Some(reviewer), None).await?;
    core.tasks.append(&mut tasks);
    core.tasks.push(tokio::spawn(async move {
        source_task.await.context("the Kubernetes source panicked")?;
        anyhow::bail!("the Kubernetes source stopped")
    }));

    // Cluster snapshots into the control loop.
    let control = core.control.clone();
    core.tasks.push(tokio::spawn(async move {
        while let Some(cs) = snapshots.recv().await {
            let invalid = cs.invalid.iter().map(|i| format!("{} {}: {}", i.kind, i.key, i.error)).collect();
            let input = Input::ClusterSnapshot { snapshot: Box::new(cs.snapshot), invalid, complete: cs.complete };
            if control.send(input).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }));

    // Mesh CAs: the meshes the snapshot names, kept in Secrets.
    let (meshes_tx, meshes_rx) = watch::channel(BTreeMap::new());
    let ca_changed = Arc::new(Notify::new());
    {
        let (client, namespace, leadership, cas, changed) =
            (client.clone(), options.namespace.clone(), leadership.clone(), cas.clone(), ca_changed.clone());
        core.tasks.push(tokio::spawn(async move {
            ca::sync(client, namespace, meshes_rx, leadership, cas, move || changed.notify_one()).await;
            anyhow::bail!("the mesh CA task stopped")
        }));
    }
    {
        let control = core.control.clone();
        core.tasks.push(tokio::spawn(async move {
            loop {
                ca_changed.notified().await;
                if control.send(Input::IdentitiesChanged).await.is_err() {
                    return Ok(());
                }
            }
        }));
    }

    // Listener certificates: only the referenced Secrets' material, into
    // the control loop whenever it changes.
    {
        let (mut published, cache, client) = (core.published.clone(), tls_cache.clone(), client.clone());
        core.tasks.push(tokio::spawn(async move {
            loop {
                let referenced: std::collections::BTreeSet<weft_translate::ObjectKey> = published
                    .borrow_and_update()
                    .output
                    .mesh_gateways
                    .iter()
                    .flat_map(|g| weft_compile::referenced_certificates(&g.spec))
                    .collect();
                let new = cache.set_referenced(referenced);
                cache.fetch(&client, new).await;
                if published.changed().await.is_err() {
                    return Ok(());
                }
            }
        }));
        let (mut changed, cache, control) = (tls_cache.subscribe(), tls_cache.clone(), core.control.clone());
        core.tasks.push(tokio::spawn(async move {
            while changed.changed().await.is_ok() {
                if control.send(Input::TlsMaterials(cache.materials())).await.is_err() {
                    return Ok(());
                }
            }
            Ok(())
        }));
    }

    // What the writer wants, from each publication.
    let (desired_tx, desired_rx) = watch::channel(None::<Arc<Desired>>);
    {
        let mut published = core.published.clone();
        let identities = identities.clone();
        core.tasks.push(tokio::spawn(async move {
            loop {
                let p: Arc<Published> = published.borrow_and_update().clone();
                if p.loaded {
                    let meshes: BTreeMap<String, String> =
                        control::mesh_identities(&p.snapshot).into_iter().map(|m| (m.name, m.trust_domain)).collect();
                    meshes_tx.send_if_modified(|m| {
                        let changed = *m != meshes;
                        *m = meshes;
                        changed
                    });
                    let mesh_statuses = p
                        .snapshot
                        .meshes
                        .iter()
                        .map(|(name, mesh)| {
                            (name.clone(), mesh_status(identities.has_mesh(name), mesh.metadata.generation))
                        })
                        .collect();
                    desired_tx.send_replace(Some(Arc::new(Desired {
                        output: p.output.clone(),
                        instances: (*p.instances).clone(),
                        meshes: mesh_statuses,
                        complete: p.complete,
                    })));
                }
                if published.changed().await.is_err() {
                    return Ok(());
                }
            }
        }));
    }

    {
        let (c, index, l, identity) =
            (client.clone(), source.index.clone(), leadership.clone(), options.identity.clone());
        core.tasks.push(tokio::spawn(async move {
            weft_kubernetes::flagger::run(c, index, l, identity, uninjected, flagged).await;
            anyhow::bail!("the task flagging unmeshed pods stopped")
        }));
    }

    // The injection webhook: every replica serves it; the leader keeps its
    // certificate and caBundle.
    if let Some(addr) = options.webhook_addr {
        let config = weft_kubernetes::webhook::WebhookConfig {
            namespace: options.namespace.clone(),
            service: options.webhook_service.clone(),
            configuration: options.webhook_configuration.clone(),
        };
        let cert = Arc::new(weft_kubernetes::webhook::ServingCert::default());
        let injector = Arc::new(weft_kubernetes::injector::Injector::new(
            options.inject.clone(),
            native_sidecars,
            source.index.clone(),
            injector_metrics,
        ));
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the webhook address {addr}"))?;
        let webhook_addr = listener.local_addr()?;
        tracing::info!(%webhook_addr, native_sidecars, "injection webhook listening");
        let serving = cert.clone();
        core.tasks.push(tokio::spawn(async move {
            weft_kubernetes::webhook::serve(listener, serving, injector).await.context("the webhook server")
        }));
        let (c, cfg, l, ct) = (client.clone(), config.clone(), leadership.clone(), cert.clone());
        core.tasks.push(tokio::spawn(async move {
            weft_kubernetes::webhook::sync_certificate(c, cfg, l, ct).await;
            anyhow::bail!("the webhook certificate task stopped")
        }));
        let (c, l) = (client.clone(), leadership.clone());
        core.tasks.push(tokio::spawn(async move {
            weft_kubernetes::webhook::keep_ca_bundle(c, config, l, cert, ca_bundle_repairs).await;
            anyhow::bail!("the caBundle task stopped")
        }));
    }

    {
        let config = WriterConfig {
            limits: Limits { per_second: options.write_qps, burst: options.write_qps * 2.0 },
            gateways: Some(options.inject.clone()),
        };
        let (client, source, leadership, metrics) =
            (client.clone(), source.clone(), leadership.clone(), kube_metrics.clone());
        core.tasks.push(tokio::spawn(async move {
            writer::run(client, source, desired_rx, leadership, metrics, config).await;
            anyhow::bail!("the writer stopped")
        }));
    }

    tracing::info!(grpc_addr = %core.grpc_addr, admin_addr = %core.admin_addr, "control plane started (Kubernetes mode)");
    Ok(Running {
        grpc_addr: core.grpc_addr,
        admin_addr: core.admin_addr,
        published: core.published,
        proxies: core.proxies,
        metrics: core.metrics,
        tasks: core.tasks,
        kube: Some(Handle { stop: stop_tx, released: Some(released_rx) }),
    })
}

fn admin_view(
    source: Source,
    leadership: watch::Receiver<Leadership>,
    flagged: Arc<parking_lot::RwLock<Vec<String>>>,
) -> admin::View {
    Arc::new(move || {
        let state = source.state.borrow().clone();
        let index = source.index.read();
        let invalid: Vec<_> = index
            .invalid()
            .into_iter()
            .map(|i| json!({"kind": i.kind.to_string(), "object": i.key.to_string(), "error": i.error}))
            .collect();
        json!({
            "leader": leadership.borrow().is_leader(),
            "synced": state.synced,
            "unsynced": index.unsynced().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "served": state.served.iter().map(|(r, ar)| (r.to_string(), ar.api_version.clone())).collect::<BTreeMap<_, _>>(),
            "objects": index.len(),
            "invalid": invalid,
            "uninjected_pods": *flagged.read(),
        })
    })
}
