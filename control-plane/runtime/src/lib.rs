//! Weft's control plane runtime.
//!
//! A source (local mode: a directory of YAML) feeds the control loop, which
//! translates and compiles and publishes the result; the distributor streams
//! each connected proxy what it needs over gRPC; the admin API shows it all.

#![forbid(unsafe_code)]

pub mod admin;
pub mod control;
pub mod distribute;
pub mod identity;
pub mod metrics;
pub mod proxies;
pub mod source;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::control::Published;
use crate::metrics::Metrics;
use crate::proxies::Proxies;

/// Where the control plane listens and what it serves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Local mode: the directory of YAML to serve.
    pub local_dir: PathBuf,
    /// gRPC address for proxies.
    pub grpc_addr: SocketAddr,
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
    /// Where the mesh CAs and the join-token key are kept.
    pub state_dir: PathBuf,
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
}

impl Running {
    /// Waits until a task fails (they run forever otherwise).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let (result, _, rest) = futures::future::select_all(self.tasks.drain(..)).await;
        for t in rest {
            t.abort();
        }
        result.context("a control-plane task panicked")?
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

/// Starts the control plane: binds its listeners, loads the directory and
/// serves.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::default());
    let proxies = Arc::new(Proxies::default());
    let identities = Arc::new(
        identity::Identities::open(&config.state_dir)
            .with_context(|| format!("opening the state directory {}", config.state_dir.display()))?,
    );
    let (control, published) = control::spawn(metrics.clone(), identities.clone());

    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC address {}", config.grpc_addr))?;
    let admin_listener = TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding admin address {}", config.admin_addr))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let mut tasks = Vec::new();
    // Mesh CAs rotated in the state directory reach proxies within seconds.
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
    let dir = config.local_dir.clone();
    let source_control = control.clone();
    tasks.push(tokio::spawn(async move { source::watch_directory(dir, source_control).await }));

    let certificate_metrics = metrics.clone();
    let distributor = distribute::Distributor::new(control, published.clone(), proxies.clone(), metrics.clone());
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
            }))
            .serve_with_incoming(TcpListenerStream::new(grpc_listener))
            .await
            .context("gRPC server")
    }));

    let admin = admin::router(admin::AdminState {
        published: published.clone(),
        proxies: proxies.clone(),
        metrics: metrics.clone(),
    });
    tasks.push(tokio::spawn(async move { axum::serve(admin_listener, admin).await.context("admin server") }));

    tracing::info!(%grpc_addr, %admin_addr, dir = %config.local_dir.display(), "control plane started");
    Ok(Running { grpc_addr, admin_addr, published, proxies, metrics, tasks })
}
