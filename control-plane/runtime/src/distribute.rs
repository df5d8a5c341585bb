//! The ProxyConfig gRPC service: one session per connected proxy, sending
//! the resources that differ from what the proxy holds and recording its
//! acknowledgements and rejections.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_api as api;
use weft_api::proxy_config_server::ProxyConfig;
use weft_compile::{ProxyView, desired_resources, resource_for};

use crate::control::{ControlHandle, Input, Published};
use crate::metrics::Metrics;
use crate::proxies::{Proxies, Rejected};

/// Most resources in one update; an initial sync is split into several.
const MAX_RESOURCES_PER_UPDATE: usize = 500;

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct Distributor {
    control: ControlHandle,
    published: watch::Receiver<Arc<Published>>,
    proxies: Arc<Proxies>,
    metrics: Arc<Metrics>,
}

impl Distributor {
    pub fn new(
        control: ControlHandle,
        published: watch::Receiver<Arc<Published>>,
        proxies: Arc<Proxies>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { control, published, proxies, metrics }
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<api::ConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl ProxyConfig for Distributor {
    type StreamStream = UpdateStream;

    async fn stream(&self, request: Request<Streaming<api::ProxyMessage>>) -> Result<Response<UpdateStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(api::ProxyMessage { message: Some(api::proxy_message::Message::Hello(h)) }) => h,
            _ => return Err(Status::invalid_argument("the first message of a stream must be a Hello")),
        };
        let workload = hello.workload.ok_or_else(|| Status::invalid_argument("Hello.workload is required"))?;
        if workload.name.is_empty() || workload.namespace.is_empty() {
            return Err(Status::invalid_argument("Hello.workload needs a name and a namespace"));
        }
        let id = format!("{}/{}", workload.namespace, workload.name);
        let mesh = if workload.mesh.is_empty() { "(namespace mesh)".to_string() } else { workload.mesh.clone() };
        self.proxies.register(&id, &workload, mesh).map_err(|e| Status::already_exists(e.to_string()))?;
        let (done_tx, done_rx) = oneshot::channel();
        let sent = self.control.send(Input::WorkloadUp {
            id: id.clone(),
            workload: Box::new(workload.clone()),
            done: done_tx,
        });
        if sent.await.is_err() {
            self.proxies.unregister(&id);
            return Err(Status::unavailable("the control plane is shutting down"));
        }
        let generation = done_rx.await.map_err(|_| Status::unavailable("the control plane is shutting down"))?;
        self.metrics.proxies_connected.inc();
        tracing::info!(proxy = %id, held = hello.versions.len(), "proxy connected");

        let (tx, rx) = mpsc::channel(8);
        let session = Session {
            id,
            workload,
            sent: hello.versions.into_iter().collect(),
            pending: BTreeMap::new(),
            next_nonce: 1,
            seen_generation: 0,
            control: self.control.clone(),
            proxies: self.proxies.clone(),
            metrics: self.metrics.clone(),
        };
        tokio::spawn(session.run(inbound, tx, self.published.clone(), generation));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One proxy's stream.
struct Session {
    id: String,
    workload: api::Workload,
    /// Version sent last, by resource name (what the proxy holds or is
    /// about to hold).
    sent: HashMap<String, String>,
    /// Updates awaiting an answer: nonce → the versions they carried.
    pending: BTreeMap<u64, Vec<(String, String)>>,
    next_nonce: u64,
    seen_generation: u64,
    control: ControlHandle,
    proxies: Arc<Proxies>,
    metrics: Arc<Metrics>,
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<api::ProxyMessage>,
        tx: mpsc::Sender<Result<api::ConfigUpdate, Status>>,
        mut published: watch::Receiver<Arc<Published>>,
        first_generation: u64,
    ) {
        let mut full = true;
        loop {
            let current = published.borrow_and_update().clone();
            if current.generation >= first_generation && current.generation > self.seen_generation {
                let updates = if full { self.full_diff(&current) } else { self.incremental_diff(&current) };
                full = false;
                self.seen_generation = current.generation;
                for update in updates {
                    if tx.send(Ok(update)).await.is_err() {
                        self.finish().await;
                        return;
                    }
                }
            }
            tokio::select! {
                changed = published.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(api::ProxyMessage { message: Some(api::proxy_message::Message::Ack(ack)) })) => self.on_ack(ack),
                    Ok(Some(_)) => {
                        tracing::warn!(proxy = %self.id, "unexpected message after Hello; ignored");
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(proxy = %self.id, %status, "proxy stream ended");
                        break;
                    }
                }
            }
        }
        self.finish().await;
    }

    async fn finish(&self) {
        self.proxies.unregister(&self.id);
        self.metrics.proxies_connected.dec();
        let _ = self.control.send(Input::WorkloadDown { id: self.id.clone() }).await;
        tracing::info!(proxy = %self.id, "proxy disconnected");
    }

    fn view(&self) -> ProxyView<'_> {
        ProxyView { id: &self.id, workload: &self.workload }
    }

    /// Everything that differs from what the proxy holds.
    fn full_diff(&mut self, published: &Published) -> Vec<api::ConfigUpdate> {
        let desired = desired_resources(&published.compiled, self.view());
        let mut changed = Vec::new();
        for (name, res) in &desired {
            if self.sent.get(name) != Some(&res.version) {
                changed.push(res.clone());
            }
        }
        let removed: Vec<String> = self.sent.keys().filter(|n| !desired.contains_key(*n)).cloned().collect();
        self.package(changed, removed)
    }

    /// The resources named by the changes since the last generation seen.
    fn incremental_diff(&mut self, published: &Published) -> Vec<api::ConfigUpdate> {
        let Some(changes) = published.changes_since(self.seen_generation) else {
            return self.full_diff(published);
        };
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        for change in &changes {
            let Some(entries) = resource_for(&published.compiled, self.view(), change) else {
                return self.full_diff(published);
            };
            for (name, desired) in entries {
                match desired {
                    Some(res) if self.sent.get(&name) != Some(&res.version) => changed.push(res),
                    Some(_) => {}
                    None if self.sent.contains_key(&name) => removed.push(name),
                    None => {}
                }
            }
        }
        self.package(changed, removed)
    }

    /// Splits changes into updates, records them as sent.
    fn package(&mut self, changed: Vec<weft_compile::SharedResource>, removed: Vec<String>) -> Vec<api::ConfigUpdate> {
        if changed.is_empty() && removed.is_empty() {
            return Vec::new();
        }
        let mut updates = Vec::new();
        let mut chunks = changed.chunks(MAX_RESOURCES_PER_UPDATE).peekable();
        let mut removed = Some(removed);
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let last = chunks.peek().is_none();
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            let update = api::ConfigUpdate {
                nonce,
                resources: chunk.iter().map(|r| (**r).clone()).collect(),
                removed: if last { removed.take().unwrap_or_default() } else { Vec::new() },
            };
            let versions: Vec<(String, String)> = chunk.iter().map(|r| (r.name.clone(), r.version.clone())).collect();
            for (name, version) in &versions {
                self.sent.insert(name.clone(), version.clone());
            }
            for name in &update.removed {
                self.sent.remove(name);
            }
            let bytes = update.encoded_len() as u64;
            self.metrics.updates_sent.inc();
            self.metrics.update_bytes.inc_by(bytes);
            let removed_names = update.removed.clone();
            self.proxies.update(&self.id, |s| {
                s.updates_sent += 1;
                s.bytes_sent += bytes;
                s.pending_updates += 1;
                for name in &removed_names {
                    s.acked.remove(name);
                    s.rejected.remove(name);
                }
            });
            self.pending.insert(nonce, versions);
            updates.push(update);
            if last {
                break;
            }
        }
        updates
    }

    fn on_ack(&mut self, ack: api::Ack) {
        let Some(versions) = self.pending.remove(&ack.nonce) else {
            tracing::debug!(proxy = %self.id, nonce = ack.nonce, "acknowledgement of an unknown update");
            return;
        };
        if ack.rejected.is_empty() {
            self.metrics.acks.inc();
        }
        for r in &ack.rejected {
            self.metrics.rejections.inc();
            tracing::warn!(proxy = %self.id, resource = %r.resource, error = %r.error, "proxy rejected a resource; it keeps its previous version");
        }
        self.proxies.update(&self.id, |s| {
            s.pending_updates = s.pending_updates.saturating_sub(1);
            for (name, version) in versions {
                match ack.rejected.iter().find(|r| r.resource == name) {
                    Some(r) => {
                        s.rejected.insert(name, Rejected { version, error: r.error.clone() });
                    }
                    None => {
                        s.rejected.remove(&name);
                        s.acked.insert(name, version);
                    }
                }
            }
        });
    }
}
