//! The ProxyConfig gRPC service: one session per connected proxy, sending
//! the resources that differ from what the proxy holds and recording its
//! acknowledgements and rejections.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_api as api;
use weft_api::server::proxy_config_server::ProxyConfig;
use weft_compile::{Compiled, ProxyView, SharedResource, desired_resources, resource_for};

use crate::control::{ControlHandle, Input, Published};
use crate::identity::ProofChecker;
use crate::metrics::Metrics;
use crate::proxies::{Proxies, Rejected};

/// Most resources in one update; an initial sync is split into several.
const MAX_RESOURCES_PER_UPDATE: usize = 200;

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct Distributor {
    control: ControlHandle,
    published: watch::Receiver<Arc<Published>>,
    proxies: Arc<Proxies>,
    metrics: Arc<Metrics>,
    checker: ProofChecker,
    /// Local mode: a proxy's announced addresses become endpoints, so they
    /// must be the address its stream comes from.
    check_addresses: bool,
}

impl Distributor {
    pub fn new(
        control: ControlHandle,
        published: watch::Receiver<Arc<Published>>,
        proxies: Arc<Proxies>,
        metrics: Arc<Metrics>,
        checker: ProofChecker,
        check_addresses: bool,
    ) -> Self {
        Self { control, published, proxies, metrics, checker, check_addresses }
    }

    /// Logs and counts a refused stream; the token itself is never logged.
    fn refuse(&self, id: &str, peer: Option<std::net::SocketAddr>, reason: &'static str, status: Status) -> Status {
        tracing::warn!(proxy = %id, ?peer, reason, error = %status.message(), "config stream refused");
        self.metrics.streams_refused.get_or_create(&vec![("reason".into(), reason.into())]).inc();
        status
    }
}

/// Checks a workload's announced addresses: each must be an IP address,
/// and when `check` is set (local mode, where they become endpoints) the
/// address the stream comes from — or, for a stream over loopback (proxies
/// on the control plane's own host), a loopback address.
fn announced_addresses(workload: &api::Workload, peer: Option<std::net::IpAddr>, check: bool) -> Result<(), String> {
    for (i, ip) in workload.ips.iter().enumerate() {
        let ip: std::net::IpAddr =
            ip.parse().map_err(|_| format!("Hello.workload.ips[{i}]: {ip:?} is not an IP address"))?;
        let Some(peer) = peer.filter(|_| check) else { continue };
        let allowed = if peer.is_loopback() { ip.is_loopback() } else { ip == peer };
        if !allowed {
            return Err(format!(
                "Hello.workload.ips[{i}]: {ip} is not the address this stream comes from ({peer}); a proxy may announce only its own address"
            ));
        }
    }
    Ok(())
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<api::EncodedConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl ProxyConfig for Distributor {
    type StreamStream = UpdateStream;

    async fn stream(&self, request: Request<Streaming<api::ProxyMessage>>) -> Result<Response<UpdateStream>, Status> {
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(api::ProxyMessage { message: Some(api::proxy_message::Message::Hello(h)) }) => h,
            _ => return Err(Status::invalid_argument("the first message of a stream must be a Hello")),
        };
        let mut workload = hello.workload.ok_or_else(|| Status::invalid_argument("Hello.workload is required"))?;
        if workload.name.is_empty() || workload.namespace.is_empty() {
            return Err(Status::invalid_argument("Hello.workload needs a name and a namespace"));
        }
        let id = format!("{}/{}", workload.namespace, workload.name);
        // Every stream proves an identity (a join token, or in Kubernetes
        // mode a ServiceAccount token): it decides what the proxy is sent,
        // and bounds what it may announce.
        if hello.token.trim().is_empty() {
            return Err(self.refuse(
                &id,
                peer,
                "no_token",
                Status::unauthenticated(
                    "the config stream needs a proof of identity (Hello.token: a join token or a ServiceAccount token)",
                ),
            ));
        }
        let proof_mesh = if workload.mesh.is_empty() { weft_k8s_api::labels::DEFAULT_MESH } else { &workload.mesh };
        let proven = match self.checker.prove(&hello.token, proof_mesh).await {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(&id, peer, "bad_token", Status::permission_denied(e.to_string()))),
        };
        if proven.namespace != workload.namespace {
            let msg = format!("the token proves namespace {:?}, not {:?}", proven.namespace, workload.namespace);
            return Err(self.refuse(&id, peer, "other_namespace", Status::permission_denied(msg)));
        }
        if workload.service_account.is_empty() {
            workload.service_account = proven.service_account.clone();
        } else if workload.service_account != proven.service_account {
            let msg = format!(
                "the token proves ServiceAccount {:?}, not {:?}",
                proven.service_account, workload.service_account
            );
            return Err(self.refuse(&id, peer, "other_service_account", Status::permission_denied(msg)));
        }
        if let Some(pod) = proven.pod.as_ref().filter(|pod| **pod != workload.name) {
            let msg = format!("the token is bound to pod {pod:?}, not {:?}", workload.name);
            return Err(self.refuse(&id, peer, "other_pod", Status::permission_denied(msg)));
        }
        if let Err(msg) = announced_addresses(&workload, peer.map(|p| p.ip()), self.check_addresses) {
            return Err(self.refuse(&id, peer, "bad_address", Status::permission_denied(msg)));
        }
        let proven_id = format!("{}/{}", proven.namespace, proven.service_account);
        let mesh = if workload.mesh.is_empty() { "(namespace mesh)".to_string() } else { workload.mesh.clone() };
        let registration = match self.proxies.register(&id, &workload, mesh, &proven_id) {
            Ok(r) => r,
            Err(e) => return Err(self.refuse(&id, peer, "name_taken", Status::already_exists(e.to_string()))),
        };
        // The stream proved an identity in the proxy's namespace: a gateway
        // proxy may hold its listeners' keys.
        let may_hold_keys = true;
        let (done_tx, done_rx) = oneshot::channel();
        let sent = self.control.send(Input::WorkloadUp {
            id: id.clone(),
            workload: Box::new(workload.clone()),
            done: done_tx,
        });
        if sent.await.is_err() {
            self.proxies.unregister(&id, registration.epoch);
            return Err(Status::unavailable("the control plane is shutting down"));
        }
        let generation = done_rx.await.map_err(|_| Status::unavailable("the control plane is shutting down"))?;
        self.metrics.proxies_connected.inc();
        tracing::info!(proxy = %id, proven = %proven_id, held = hello.versions.len(), "proxy connected");

        // Small: updates are built only when there is room for them, so a
        // slow reader holds a couple of them, not its whole backlog.
        let (tx, rx) = mpsc::channel(2);
        let session = Session {
            id,
            epoch: registration.epoch,
            workload,
            may_hold_keys,
            basis: Basis::Announced(hello.versions.into_iter().collect()),
            outbox: VecDeque::new(),
            pending: BTreeMap::new(),
            next_nonce: 1,
            seen_generation: 0,
            control: self.control.clone(),
            proxies: self.proxies.clone(),
            metrics: self.metrics.clone(),
        };
        tokio::spawn(session.run(inbound, tx, self.published.clone(), generation, registration.displaced));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What the session takes the proxy to hold when it must compare
/// everything.
enum Basis {
    /// The versions the proxy announced in its Hello.
    Announced(HashMap<String, String>),
    /// The compilation of the last generation sent to it (shared with every
    /// session at that generation).
    Sent(Arc<Compiled>),
}

/// Resources to send, not yet built into an update.
struct Batch {
    generation: u64,
    resources: Vec<SharedResource>,
    removed: Vec<String>,
}

/// One proxy's stream. It keeps no per-resource copy of what the proxy
/// holds: each generation's changes say what to send, and for the rare full
/// comparison (its mesh or gateway changed, or it fell behind the history)
/// the compilation last sent to it stands for what it holds.
struct Session {
    id: String,
    /// Which of the sessions that held this proxy name it is.
    epoch: u64,
    workload: api::Workload,
    may_hold_keys: bool,
    basis: Basis,
    /// Batches waiting for room in the stream, oldest first.
    outbox: VecDeque<Batch>,
    /// Updates awaiting an answer: nonce → generation and resources.
    pending: BTreeMap<u64, (u64, Vec<SharedResource>)>,
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
        tx: mpsc::Sender<Result<api::EncodedConfigUpdate, Status>>,
        mut published: watch::Receiver<Arc<Published>>,
        first_generation: u64,
        mut displaced: oneshot::Receiver<()>,
    ) {
        loop {
            let current = published.borrow_and_update().clone();
            // Nothing goes out before the first snapshot is loaded: a control
            // plane that has just started would otherwise tell the proxy
            // that every Service and route is gone.
            if current.loaded && current.generation >= first_generation && current.generation > self.seen_generation {
                if self.seen_generation == 0 {
                    self.full_diff(&current)
                } else {
                    self.incremental_diff(&current)
                }
                self.seen_generation = current.generation;
                self.basis = Basis::Sent(current.compiled.clone());
            }
            drop(current);
            tokio::select! {
                permit = tx.reserve(), if !self.outbox.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(batch) = self.outbox.pop_front() {
                            permit.send(Ok(self.build(batch)));
                        }
                    }
                    Err(_) => break,
                },
                changed = published.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = &mut displaced => {
                    tracing::info!(proxy = %self.id, "a newer stream of the same identity replaced this one");
                    break;
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
        self.metrics.proxies_connected.dec();
        // A session replaced by a newer one of the same proxy leaves the
        // workload to it.
        if self.proxies.unregister(&self.id, self.epoch) {
            let _ = self.control.send(Input::WorkloadDown { id: self.id.clone() }).await;
            tracing::info!(proxy = %self.id, "proxy disconnected");
        }
    }

    fn view(&self) -> ProxyView<'_> {
        ProxyView { id: &self.id, workload: &self.workload, may_hold_keys: self.may_hold_keys }
    }

    /// Everything the proxy should hold that differs from what it holds,
    /// and the removal of what it holds but should not.
    fn full_diff(&mut self, published: &Published) {
        tracing::debug!(proxy = %self.id, generation = published.generation, "comparing everything");
        let desired = desired_resources(&published.compiled, self.view());
        let sent;
        let held: HashMap<&str, &str> = match &self.basis {
            Basis::Announced(held) => held.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
            Basis::Sent(compiled) => {
                sent = desired_resources(compiled, self.view());
                sent.iter().map(|r| (r.name.as_str(), r.version.as_str())).collect()
            }
        };
        let removed = if held.is_empty() {
            Vec::new()
        } else {
            let wanted: HashSet<&str> = desired.iter().map(|r| r.name.as_str()).collect();
            let mut removed: Vec<String> =
                held.keys().filter(|n| !wanted.contains(*n)).map(|n| n.to_string()).collect();
            removed.sort();
            removed
        };
        let changed = desired.into_iter().filter(|r| held.get(r.name.as_str()) != Some(&r.version.as_str())).collect();
        self.enqueue(published.generation, changed, removed);
    }

    /// The resources named by the changes since the last generation seen.
    fn incremental_diff(&mut self, published: &Published) {
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
                    Some(res) => changed.push(res),
                    None => removed.push(name),
                }
            }
        }
        self.enqueue(published.generation, changed, removed);
    }

    /// Queues changes in batches of at most [`MAX_RESOURCES_PER_UPDATE`];
    /// removals travel with the last batch.
    fn enqueue(&mut self, generation: u64, changed: Vec<SharedResource>, removed: Vec<String>) {
        if changed.is_empty() && removed.is_empty() {
            if self.outbox.is_empty() && self.pending.is_empty() {
                self.proxies.update(&self.id, |s| s.synced_generation = generation);
            }
            return;
        }
        let mut chunks = changed.chunks(MAX_RESOURCES_PER_UPDATE).peekable();
        let mut removed = Some(removed);
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let last = chunks.peek().is_none();
            self.outbox.push_back(Batch {
                generation,
                resources: chunk.to_vec(),
                removed: if last { removed.take().unwrap_or_default() } else { Vec::new() },
            });
            if last {
                break;
            }
        }
    }

    /// Builds a batch into an update and records it as awaiting an answer.
    fn build(&mut self, batch: Batch) -> api::EncodedConfigUpdate {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        // The resources' bytes are shared, not copied, until tonic writes
        // them into the stream.
        let update = api::EncodedConfigUpdate {
            nonce,
            resources: batch.resources.iter().map(|r| r.encoded().clone()).collect(),
            removed: batch.removed,
        };
        let bytes = update.encoded_len() as u64;
        self.metrics.updates_sent.inc();
        self.metrics.update_bytes.inc_by(bytes);
        self.proxies.update(&self.id, |s| {
            s.updates_sent += 1;
            s.bytes_sent += bytes;
            s.pending_updates += 1;
            for name in &update.removed {
                s.rejected.remove(name);
            }
        });
        self.pending.insert(nonce, (batch.generation, batch.resources));
        update
    }

    fn on_ack(&mut self, ack: api::Ack) {
        let Some((generation, resources)) = self.pending.remove(&ack.nonce) else {
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
        let all_answered = self.pending.is_empty() && self.outbox.is_empty();
        self.proxies.update(&self.id, |s| {
            s.pending_updates = s.pending_updates.saturating_sub(1);
            let nothing_rejected = ack.rejected.is_empty() && s.rejected.is_empty();
            for res in resources.iter().filter(|_| !nothing_rejected) {
                match ack.rejected.iter().find(|r| r.resource == res.name) {
                    Some(r) => {
                        s.rejected.insert(
                            res.name.clone(),
                            Rejected { version: res.version.clone(), error: r.error.clone() },
                        );
                    }
                    None => {
                        s.rejected.remove(&res.name);
                    }
                }
            }
            if all_answered {
                s.synced_generation = s.synced_generation.max(generation);
            }
        });
    }
}
