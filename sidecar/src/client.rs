//! The proxy's side of the config stream: announce, apply, acknowledge,
//! and on any failure keep serving the last good config while reconnecting
//! with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_api::config as api;
use weft_api::config::proxy_config_client::ProxyConfigClient;

use crate::holddown::HoldDown;
use crate::proxy::Proxy;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("invalid control plane address {0:?}")]
    Address(String),
    #[error("cannot connect to the control plane: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the config stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the config stream closed")]
    Closed,
}

/// Runs the config stream forever. `proof` (the token the proxy also
/// presents for its certificate) is read again for every stream; for
/// `hold_down` after each stream opens, endpoint sets are not emptied (see
/// [`crate::holddown`]).
pub async fn run(
    proxy: Arc<Proxy>,
    control_plane: String,
    workload: api::Workload,
    proof: Option<crate::identity::Proof>,
    hold_down: Duration,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let token = match proof.as_ref().map(|p| p.read()) {
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the identity token; the stream opens without it");
                String::new()
            }
            None => String::new(),
        };
        let received =
            matches!(session(&proxy, &control_plane, &workload, token, hold_down).await, Ok(true) | Err((true, _)));
        if received {
            backoff = MIN_BACKOFF;
        }
        // Jitter spreads the reconnects of many proxies after a restart.
        let wait = backoff.mul_f64(0.5 + fastrand::f64());
        tracing::info!(retry_in_ms = wait.as_millis() as u64, "config stream down; serving the last good config");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One stream; returns whether any update arrived.
async fn session(
    proxy: &Proxy,
    control_plane: &str,
    workload: &api::Workload,
    token: String,
    hold_down: Duration,
) -> Result<bool, (bool, StreamError)> {
    let endpoint = tonic::transport::Endpoint::from_shared(control_plane.to_owned())
        .map_err(|_| (false, StreamError::Address(control_plane.to_owned())))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot reach the control plane");
        (false, StreamError::Connect(e))
    })?;
    let mut client = ProxyConfigClient::new(channel).max_decoding_message_size(256 << 20);
    let (tx, rx) = mpsc::channel(4);
    let versions = proxy.config.load().versions.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let hello = api::Hello { workload: Some(workload.clone()), versions, token };
    // The receiver is alive: it is moved into the request below.
    let _ = tx.send(api::ProxyMessage { message: Some(api::proxy_message::Message::Hello(hello)) }).await;
    let mut updates = client.stream(ReceiverStream::new(rx)).await.map_err(|e| (false, e.into()))?.into_inner();
    tracing::info!("config stream open");
    let mut received = false;
    let mut hold = HoldDown::new(Instant::now(), hold_down);
    loop {
        let due = hold.deadline();
        let message = tokio::select! {
            m = updates.message() => m,
            () = sleep_until(due), if due.is_some() => {
                if let Some(held) = hold.release(proxy.config.load().nonce) {
                    proxy.install(&held);
                }
                continue;
            }
        };
        let update = match message {
            Ok(Some(u)) => u,
            Ok(None) => return Err((received, StreamError::Closed)),
            Err(e) => {
                tracing::warn!(error = %e, "config stream failed");
                return Err((received, e.into()));
            }
        };
        received = true;
        let nonce = update.nonce;
        let update = hold.filter(&proxy.config.load(), update, Instant::now());
        let rejected = proxy.install(&update);
        let ack = api::Ack {
            nonce,
            rejected: rejected.into_iter().map(|r| api::Rejection { resource: r.resource, error: r.error }).collect(),
        };
        if tx.send(api::ProxyMessage { message: Some(api::proxy_message::Message::Ack(ack)) }).await.is_err() {
            return Err((received, StreamError::Closed));
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
