//! The registry of connected proxies and what each holds: what the admin
//! API and `weftctl get proxies` show.

use std::collections::BTreeMap;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::Serialize;
use weft_api as api;

/// A resource a proxy rejected, with its reason.
#[derive(Clone, Debug, Serialize)]
pub struct Rejected {
    pub version: String,
    pub error: String,
}

/// What the control plane knows of one connected proxy.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyStatus {
    pub id: String,
    pub role: String,
    pub mesh: String,
    pub ips: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub connected_at: u64,
    /// The configuration generation the proxy has acknowledged in full
    /// (every update up to it answered).
    pub synced_generation: u64,
    /// Resources it rejected (it keeps its previous version of them).
    pub rejected: BTreeMap<String, Rejected>,
    /// Updates sent and not yet answered.
    pub pending_updates: usize,
    pub updates_sent: u64,
    pub bytes_sent: u64,
    /// The identity the proxy proved when it opened its stream
    /// (`namespace/serviceaccount`), if it sent a proof.
    pub proven: Option<String>,
}

/// Connected proxies by id.
#[derive(Debug, Default)]
pub struct Proxies {
    inner: Mutex<BTreeMap<String, ProxyStatus>>,
}

/// A proxy id is already connected.
#[derive(Debug, thiserror::Error)]
#[error("a proxy named {0} is already connected")]
pub struct AlreadyConnected(pub String);

impl Proxies {
    /// Registers a new connection.
    pub fn register(&self, id: &str, w: &api::Workload, mesh: String) -> Result<(), AlreadyConnected> {
        let mut inner = self.inner.lock();
        if inner.contains_key(id) {
            return Err(AlreadyConnected(id.to_string()));
        }
        let role = if w.role == api::Role::Gateway as i32 { "gateway" } else { "sidecar" };
        inner.insert(
            id.to_string(),
            ProxyStatus {
                id: id.to_string(),
                role: role.to_string(),
                mesh,
                ips: w.ips.clone(),
                labels: w.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                connected_at: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                synced_generation: 0,
                rejected: BTreeMap::new(),
                pending_updates: 0,
                updates_sent: 0,
                bytes_sent: 0,
                proven: None,
            },
        );
        Ok(())
    }

    /// Forgets a connection.
    pub fn unregister(&self, id: &str) {
        self.inner.lock().remove(id);
    }

    /// Runs `f` on a proxy's status.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut ProxyStatus)) {
        if let Some(s) = self.inner.lock().get_mut(id) {
            f(s);
        }
    }

    /// A copy of every status.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.inner.lock().values().cloned().collect()
    }

    /// A copy of one status.
    pub fn get(&self, id: &str) -> Option<ProxyStatus> {
        self.inner.lock().get(id).cloned()
    }

    /// Number of connected proxies.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// True when no proxy is connected.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().is_empty()
    }
}
