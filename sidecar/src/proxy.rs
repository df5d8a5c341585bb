//! What every connection of a proxy shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use weft_api::config as api;

use crate::metrics::{Metrics, UpdateLabels};
use crate::model::{Backend, Endpoints};
use crate::state::{Config, Rejected};
use crate::tls::MeshTls;
use crate::upstream::{Upstream, Upstreams};

#[derive(Debug)]
pub struct Proxy {
    /// The config requests start with; a request keeps the value it loaded
    /// until it ends, so swapping never disturbs one in flight.
    pub config: ArcSwap<Config>,
    pub upstreams: Upstreams,
    pub metrics: Metrics,
    /// mTLS mode, certificate and roots, shared with the connectors.
    pub tls: Arc<MeshTls>,
    /// Limits every listener enforces on requests (`--max-request-body`...).
    pub limits: ArcSwap<crate::validate::Limits>,
    /// Rate-limited log of the 5xx responses the proxy makes up.
    pub error_log: crate::reply::ErrorLog,
    /// Which listeners write JSON access logs (`--access-log`).
    pub access_log: crate::reply::AccessLog,
    /// The upstreams of each endpoint set and port, resolved on first use.
    resolved: ResolvedEndpoints,
    /// Set once the first update from the control plane is applied.
    synced: AtomicBool,
    /// The nonce of the last update applied, for tasks that follow the
    /// config (gateway listeners).
    applied: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    pub fn new() -> Arc<Self> {
        let metrics = Metrics::default();
        let tls = Arc::new(MeshTls::new(metrics.tls.clone()));
        Arc::new(Proxy {
            config: ArcSwap::default(),
            upstreams: Upstreams::new(tls.clone()),
            metrics,
            tls,
            limits: ArcSwap::from_pointee(crate::validate::Limits::default()),
            error_log: Default::default(),
            access_log: Default::default(),
            resolved: ResolvedEndpoints::default(),
            synced: AtomicBool::new(false),
            applied: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Applies an update from the control plane; returns what was rejected.
    pub fn install(&self, update: &api::ConfigUpdate) -> Vec<Rejected> {
        let current = self.config.load_full();
        let (next, rejected) = current.apply(update);
        let addrs = next.endpoint_addrs();
        let resources = next.versions.len();
        if let Some(mesh) = &next.mesh {
            self.tls.set_mode(mesh.mtls);
            self.tls.set_roots(&mesh.roots_pem);
            self.tls.set_federated(&mesh.federated);
        }
        self.config.store(Arc::new(next));
        self.upstreams.retain(|a| addrs.contains(a));
        self.resolved.clear();
        let result = if rejected.is_empty() { "applied" } else { "rejected" };
        self.metrics.config_updates.get_or_create(&UpdateLabels { result }).inc();
        self.metrics.config_nonce.set(i64::try_from(update.nonce).unwrap_or(i64::MAX));
        self.metrics.config_resources.set(i64::try_from(resources).unwrap_or(i64::MAX));
        self.synced.store(true, Ordering::Release);
        self.applied.send_replace(update.nonce);
        tracing::debug!(
            nonce = update.nonce,
            changed = update.resources.len(),
            removed = update.removed.len(),
            rejected = rejected.len(),
            "config applied"
        );
        rejected
    }

    /// An endpoint of `backend` chosen by the balancer, or `None` when the
    /// backend has no endpoint serving its port.
    pub fn endpoint_for(&self, backend: &Backend) -> Option<Arc<Upstream>> {
        self.endpoint_avoiding(backend, &[])
    }

    /// [`Proxy::endpoint_for`], avoiding the endpoints in `tried` while
    /// there are others.
    pub fn endpoint_avoiding(&self, backend: &Backend, tried: &[std::net::SocketAddr]) -> Option<Arc<Upstream>> {
        let config = self.config.load();
        let eps = config.endpoints.get(&backend.endpoints)?;
        let upstreams = self.resolved.get(&backend.endpoints, eps, backend.port, &self.upstreams);
        let mut rng = fastrand::Rng::new();
        if !tried.is_empty() {
            let untried: Vec<Arc<Upstream>> =
                upstreams.iter().filter(|u| !tried.contains(&u.addr())).cloned().collect();
            if !untried.is_empty() {
                return crate::balance::pick(&untried, |u| &u.stats, Instant::now(), &mut rng).cloned();
            }
        }
        crate::balance::pick(&upstreams, |u| &u.stats, Instant::now(), &mut rng).cloned()
    }

    /// Wakes at every config update applied.
    pub fn updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Whether the proxy has config to serve with.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// Closes pooled connections that have been idle past their timeout,
/// checking a few times per timeout. Runs until the proxy stops.
pub async fn close_idle_connections(proxy: Arc<Proxy>) {
    let mut every = tokio::time::interval(crate::pool::IDLE_TIMEOUT / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        proxy.upstreams.sweep(Instant::now());
    }
}

/// The upstreams serving one port of one endpoint set, looked up once per
/// endpoint set version instead of once per request. An entry remembers
/// the endpoint set it was made from, so a request still holding an older
/// config never gets (or leaves behind) upstreams of another version.
#[derive(Debug, Default)]
struct ResolvedEndpoints {
    by_set: Mutex<FxHashMap<String, Vec<ResolvedPort>>>,
}

#[derive(Debug)]
struct ResolvedPort {
    port: u16,
    from: Arc<Endpoints>,
    upstreams: Arc<[Arc<Upstream>]>,
}

impl ResolvedEndpoints {
    fn get(&self, name: &str, set: &Arc<Endpoints>, port: u16, upstreams: &Upstreams) -> Arc<[Arc<Upstream>]> {
        let mut by_set = self.by_set.lock().unwrap_or_else(|e| e.into_inner());
        let found =
            by_set.get(name).and_then(|ports| ports.iter().find(|r| r.port == port && Arc::ptr_eq(&r.from, set)));
        if let Some(r) = found {
            return r.upstreams.clone();
        }
        let resolved: Arc<[Arc<Upstream>]> = set
            .endpoints
            .iter()
            .filter_map(|e| Some((e.addr(port)?, e.identity.as_str())))
            .map(|(addr, identity)| upstreams.get(addr, identity))
            .collect();
        let ports = by_set.entry(name.to_owned()).or_default();
        ports.retain(|r| r.port != port);
        ports.push(ResolvedPort { port, from: set.clone(), upstreams: resolved.clone() });
        resolved
    }

    fn clear(&self) {
        self.by_set.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
