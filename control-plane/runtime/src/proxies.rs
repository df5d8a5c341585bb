//! The registry of connected proxies and what each holds: what the admin
//! API and `weftctl get proxies` show.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::oneshot;
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
    /// (`namespace/serviceaccount`).
    pub proven: Option<String>,
}

/// Connected proxies by id.
#[derive(Debug, Default)]
pub struct Proxies {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    statuses: BTreeMap<String, ProxyStatus>,
    sessions: BTreeMap<String, Slot>,
    /// Names known before a restart, held for the ServiceAccount that had
    /// them until the reconnect grace ends.
    reserved: BTreeMap<String, (String, Instant)>,
    next_epoch: u64,
}

/// The session that holds a proxy name.
#[derive(Debug)]
struct Slot {
    epoch: u64,
    /// `namespace/serviceaccount` the session proved.
    proven: String,
    /// Fired (or dropped) when a newer session of the same identity takes
    /// the name over.
    displace: oneshot::Sender<()>,
}

/// A session's hold on its proxy name.
#[derive(Debug)]
pub struct Registration {
    /// Identifies this session among those that held the name.
    pub epoch: u64,
    /// Completes when a newer session of the same identity replaced it.
    pub displaced: oneshot::Receiver<()>,
}

/// Why a session may not take a proxy name.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("a proxy named {id} is connected with another identity ({holder})")]
    HeldByOther { id: String, holder: String },
    #[error(
        "the proxy named {id} belonged to ServiceAccount {service_account} before the control plane restarted; it is kept for it while it reconnects"
    )]
    Reserved { id: String, service_account: String },
}

impl Proxies {
    /// Keeps each name for the ServiceAccount that held it (`id` →
    /// ServiceAccount) until `until`: after a restart, a session of another
    /// identity cannot take a reconnecting proxy's name first.
    pub fn reserve(&self, names: impl IntoIterator<Item = (String, String)>, until: Instant) {
        let mut inner = self.inner.lock();
        for (id, service_account) in names {
            inner.reserved.insert(id, (service_account, until));
        }
    }

    /// Registers a session that proved `proven` (`namespace/serviceaccount`).
    /// A session of the same identity already holding the name is displaced
    /// (a proxy reconnecting before its old stream timed out); one of another
    /// identity keeps it and this one is refused.
    pub fn register(
        &self,
        id: &str,
        w: &api::Workload,
        mesh: String,
        proven: &str,
    ) -> Result<Registration, RegisterError> {
        let mut inner = self.inner.lock();
        if let Some((service_account, until)) = inner.reserved.get(id)
            && *until > Instant::now()
            && *service_account != w.service_account
        {
            return Err(RegisterError::Reserved { id: id.to_string(), service_account: service_account.clone() });
        }
        if let Some(slot) = inner.sessions.get(id)
            && slot.proven != proven
        {
            return Err(RegisterError::HeldByOther { id: id.to_string(), holder: slot.proven.clone() });
        }
        inner.reserved.remove(id);
        inner.next_epoch += 1;
        let epoch = inner.next_epoch;
        let (displace, displaced) = oneshot::channel();
        if let Some(old) = inner.sessions.insert(id.to_string(), Slot { epoch, proven: proven.to_string(), displace }) {
            let _ = old.displace.send(());
        }
        let role = if w.role == api::Role::Gateway as i32 { "gateway" } else { "sidecar" };
        inner.statuses.insert(
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
                proven: Some(proven.to_string()),
            },
        );
        Ok(Registration { epoch, displaced })
    }

    /// Forgets session `epoch` of `id`; false (and nothing changed) when a
    /// newer session holds the name.
    pub fn unregister(&self, id: &str, epoch: u64) -> bool {
        let mut inner = self.inner.lock();
        if inner.sessions.get(id).is_none_or(|slot| slot.epoch != epoch) {
            return false;
        }
        inner.sessions.remove(id);
        inner.statuses.remove(id);
        true
    }

    /// Whether session `epoch` still holds `id`.
    pub fn is_current(&self, id: &str, epoch: u64) -> bool {
        self.inner.lock().sessions.get(id).is_some_and(|slot| slot.epoch == epoch)
    }

    /// Runs `f` on a proxy's status.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut ProxyStatus)) {
        if let Some(s) = self.inner.lock().statuses.get_mut(id) {
            f(s);
        }
    }

    /// A copy of every status.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.inner.lock().statuses.values().cloned().collect()
    }

    /// A copy of one status.
    pub fn get(&self, id: &str) -> Option<ProxyStatus> {
        self.inner.lock().statuses.get(id).cloned()
    }

    /// Number of connected proxies.
    pub fn len(&self) -> usize {
        self.inner.lock().statuses.len()
    }

    /// True when no proxy is connected.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().statuses.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(sa: &str) -> api::Workload {
        api::Workload { name: "a".into(), namespace: "ns".into(), service_account: sa.into(), ..Default::default() }
    }

    #[test]
    fn the_same_identity_replaces_its_session_another_is_refused() {
        let proxies = Proxies::default();
        let mut first = proxies.register("ns/a", &workload("x"), "default".into(), "ns/x").unwrap();
        assert!(matches!(
            proxies.register("ns/a", &workload("y"), "default".into(), "ns/y"),
            Err(RegisterError::HeldByOther { .. })
        ));
        assert!(first.displaced.try_recv().is_err(), "a refused session displaces nothing");
        let second = proxies.register("ns/a", &workload("x"), "default".into(), "ns/x").unwrap();
        assert!(first.displaced.try_recv().is_ok(), "the older session is told to end");
        assert!(!proxies.unregister("ns/a", first.epoch), "the old session's end leaves the new one");
        assert!(proxies.is_current("ns/a", second.epoch));
        assert_eq!(proxies.len(), 1);
        assert!(proxies.unregister("ns/a", second.epoch));
        assert!(proxies.is_empty());
    }

    #[test]
    fn reserved_names_wait_for_their_service_account() {
        let proxies = Proxies::default();
        proxies.reserve([("ns/a".to_string(), "x".to_string())], Instant::now() + std::time::Duration::from_secs(60));
        assert!(matches!(
            proxies.register("ns/a", &workload("y"), "default".into(), "ns/y"),
            Err(RegisterError::Reserved { .. })
        ));
        proxies.register("ns/a", &workload("x"), "default".into(), "ns/x").unwrap();
        proxies.reserve([("ns/b".to_string(), "x".to_string())], Instant::now());
        let mut b = workload("y");
        b.name = "b".into();
        proxies.register("ns/b", &b, "default".into(), "ns/y").expect("an expired reservation holds nothing");
    }
}
