//! Weft's control plane runtime.
//!
//! A source (local mode: a directory of YAML; Kubernetes mode: the cluster,
//! through `weft-kubernetes`) feeds the control loop, which translates and
//! compiles and publishes the result; the distributor streams each
//! connected proxy what it needs over gRPC; the admin API shows it all. In
//! Kubernetes mode the leader also writes generated objects and statuses
//! back to the cluster.

#![forbid(unsafe_code)]

pub mod admin;
pub mod control;
pub mod distribute;
pub mod identity;
pub mod kubernetes;
pub mod metrics;
pub mod proxies;
pub mod registry;
pub mod source;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::control::{ControlHandle, Published};
use crate::identity::Identities;
use crate::metrics::Metrics;
use crate::proxies::Proxies;

/// Where the control plane reads its input.
#[derive(Clone, Debug)]
pub enum Source {
    /// A directory of YAML; CAs, the join-token key and the workloads last
    /// connected in `state_dir`. After a restart the remembered workloads
    /// stay endpoints for `reconnect_grace` unless they reconnect sooner.
    Local { dir: PathBuf, state_dir: PathBuf, reconnect_grace: std::time::Duration },
    /// The Kubernetes API.
    Kubernetes(Box<kubernetes::KubeOptions>),
}

/// Where the control plane listens and what it serves.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: Source,
    /// gRPC address for proxies.
    pub grpc_addr: SocketAddr,
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
}

/// A running control plane.
#[derive(Debug)]
pub struct Running {
    /// The bound gRPC address (useful when the port was 0).
    pub grpc_addr: SocketAddr,
    /// The bound admin address.
    pub admin_addr: SocketAddr,
    /// The latest publication.
    pub published: watch::Receiver<Arc<Published>>,
    /// Connected proxies.
    pub proxies: Arc<Proxies>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    /// Kubernetes mode: what must end cleanly on shutdown.
    kube: Option<kubernetes::Handle>,
}

impl Running {
    /// Waits until a task fails (they run forever otherwise).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let (result, _, rest) = futures::future::select_all(self.tasks.drain(..)).await;
        for t in rest {
            t.abort();
        }
        result.context("a control-plane task panicked")?
    }

    /// Stops cleanly: in Kubernetes mode the leader gives its Lease up so
    /// that another replica takes over at once.
    pub async fn stop(mut self) {
        if let Some(kube) = self.kube.take() {
            kube.stop().await;
        }
        self.shutdown();
    }

    /// Stops every task.
    pub fn shutdown(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The servers every mode runs, and the control loop.
struct Core {
    control: ControlHandle,
    published: watch::Receiver<Arc<Published>>,
    proxies: Arc<Proxies>,
    metrics: Arc<Metrics>,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

async fn start_core(
    config: &Config,
    mode: control::Mode,
    metrics: Arc<Metrics>,
    identities: Arc<Identities>,
    extra: admin::Extra,
    reviewer: Option<Arc<weft_kubernetes::tokenreview::TokenReviewer>>,
    remembered: Option<control::Remembered>,
) -> anyhow::Result<Core> {
    let proxies = Arc::new(Proxies::default());
    // The names the control plane knew before it restarted are held for
    // their ServiceAccounts before the config stream serves anyone: no
    // client can take one in the moment between listening and reserving.
    if let Some(r) = &remembered {
        let reserved = r.known.iter().map(|(id, w)| (id.clone(), w.service_account.clone()));
        proxies.reserve(reserved, std::time::Instant::now() + r.grace);
    }
    let (control, published, control_loop) = control::spawn(mode, metrics.clone(), identities.clone(), remembered);

    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC address {}", config.grpc_addr))?;
    let admin_listener = TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding admin address {}", config.admin_addr))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    // The control loop first: stopping it before the servers means the
    // disconnects a shutdown causes are never taken for workloads leaving
    // (the workload list in the state directory keeps them).
    let mut tasks: Vec<JoinHandle<anyhow::Result<()>>> = vec![control_loop];
    // Mesh CAs rotated where they are kept reach proxies within seconds.
    let (watched, rotation_control) = (identities.clone(), control.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            if watched.changed_on_disk() && rotation_control.send(control::Input::IdentitiesChanged).await.is_err() {
                return Ok(());
            }
        }
    }));

    let certificate_metrics = metrics.clone();
    let checker = identity::ProofChecker { identities: identities.clone(), reviewer: reviewer.clone() };
    let distributor = distribute::Distributor::new(
        control.clone(),
        published.clone(),
        proxies.clone(),
        metrics.clone(),
        checker,
        mode == control::Mode::Local,
    );
    tasks.push(tokio::spawn(async move {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .add_service(
                weft_api::server::proxy_config_server::ProxyConfigServer::new(distributor)
                    .max_decoding_message_size(16 << 20),
            )
            .add_service(weft_api::server::certificates_server::CertificatesServer::new(identity::CertificateService {
                identities,
                metrics: certificate_metrics,
                reviewer,
            }))
            .serve_with_incoming(nodelay(TcpListenerStream::new(grpc_listener)))
            .await
            .context("gRPC server")
    }));

    let admin = admin::router(admin::AdminState {
        published: published.clone(),
        proxies: proxies.clone(),
        metrics: metrics.clone(),
        extra,
    });
    tasks.push(tokio::spawn(async move { axum::serve(admin_listener, admin).await.context("admin server") }));
    Ok(Core { control, published, proxies, metrics, grpc_addr, admin_addr, tasks })
}

/// Accepted connections with Nagle's algorithm off: a response's HEADERS,
/// DATA and trailers frames go out in separate small writes, and with it on
/// the later ones waited for the client's delayed ACK (about 40 ms per
/// certificate signed, per config update on a quiet stream).
fn nodelay(incoming: TcpListenerStream) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt as _;
    incoming.map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a gRPC connection");
            }
        })
    })
}

/// Starts the control plane: binds its listeners, starts reading its
/// source and serves.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    match &config.source {
        Source::Local { dir, state_dir, reconnect_grace } => {
            let metrics = Arc::new(Metrics::default());
            let identities = Arc::new(
                Identities::open(state_dir)
                    .with_context(|| format!("opening the state directory {}", state_dir.display()))?,
            );
            let registry = registry::WorkloadRegistry::in_state_dir(state_dir);
            let known = registry.load().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the workloads known before the restart are lost");
                Default::default()
            });
            // Their names stay theirs while they reconnect.
            let remembered = control::Remembered { registry, grace: *reconnect_grace, known };
            let core = start_core(
                &config,
                control::Mode::Local,
                metrics,
                identities,
                admin::Extra::default(),
                None,
                Some(remembered),
            )
            .await?;
            let mut core = core;
            let (dir, source_control) = (dir.clone(), core.control.clone());
            core.tasks.push(tokio::spawn(async move { source::watch_directory(dir, source_control).await }));
            tracing::info!(grpc_addr = %core.grpc_addr, admin_addr = %core.admin_addr, dir = %config_dir(&config), "control plane started (local mode)");
            Ok(Running {
                grpc_addr: core.grpc_addr,
                admin_addr: core.admin_addr,
                published: core.published,
                proxies: core.proxies,
                metrics: core.metrics,
                tasks: core.tasks,
                kube: None,
            })
        }
        Source::Kubernetes(options) => kubernetes::start(&config, (**options).clone()).await,
    }
}

fn config_dir(config: &Config) -> String {
    match &config.source {
        Source::Local { dir, .. } => dir.display().to_string(),
        Source::Kubernetes(_) => String::new(),
    }
}
