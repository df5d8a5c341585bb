//! Listener certificates in Kubernetes mode: the chains and keys of the TLS
//! Secrets that accepted terminating listeners reference — and of no other
//! Secret. The watch of TLS Secrets (which judging certificateRefs needs)
//! sees every TLS Secret; the index keeps only a summary of each, and this
//! cache keeps the material of the referenced ones, updated by the same
//! watch, fetched once when a Secret becomes referenced.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use parking_lot::Mutex;
use tokio::sync::watch;
use weft_translate::ObjectKey;
use weft_translate::load::secret::{TlsMaterial, check_tls_pair, material};

#[derive(Debug, Default)]
struct Inner {
    allowed: BTreeSet<ObjectKey>,
    materials: BTreeMap<ObjectKey, TlsMaterial>,
}

/// The cache; share it with an `Arc`.
#[derive(Debug)]
pub struct TlsCache {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl Default for TlsCache {
    fn default() -> Self {
        TlsCache { inner: Mutex::default(), changed: watch::channel(0).0 }
    }
}

/// The usable material of a Secret, if it is a valid TLS pair.
pub fn usable(secret: &Secret) -> Option<TlsMaterial> {
    let m = material(secret)?;
    check_tls_pair(Some(m.chain_pem.as_bytes()), Some(m.key_pem.as_bytes())).ok()?;
    Some(m)
}

impl TlsCache {
    /// Notified after every change of the materials.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether the Secret's material is wanted.
    pub fn wants(&self, key: &ObjectKey) -> bool {
        self.inner.lock().allowed.contains(key)
    }

    /// The watch saw the Secret (`None`: deleted, or not a usable pair).
    pub fn observe(&self, key: &ObjectKey, material: Option<TlsMaterial>) {
        let mut inner = self.inner.lock();
        if !inner.allowed.contains(key) {
            return;
        }
        let changed = match material {
            Some(m) => inner.materials.insert(key.clone(), m.clone()).as_ref() != Some(&m),
            None => inner.materials.remove(key).is_some(),
        };
        drop(inner);
        if changed {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Sets which Secrets are referenced; forgets the others' material and
    /// returns those newly referenced, which the caller fetches.
    pub fn set_referenced(&self, keys: BTreeSet<ObjectKey>) -> Vec<ObjectKey> {
        let mut inner = self.inner.lock();
        let new: Vec<ObjectKey> = keys.iter().filter(|k| !inner.allowed.contains(*k)).cloned().collect();
        let before = inner.materials.len();
        inner.materials.retain(|k, _| keys.contains(k));
        let dropped = inner.materials.len() != before;
        inner.allowed = keys;
        drop(inner);
        if dropped {
            self.changed.send_modify(|v| *v += 1);
        }
        new
    }

    /// The materials held.
    pub fn materials(&self) -> BTreeMap<ObjectKey, TlsMaterial> {
        self.inner.lock().materials.clone()
    }

    /// Fetches newly referenced Secrets (the watch delivers later changes).
    pub async fn fetch(&self, client: &kube::Client, keys: Vec<ObjectKey>) {
        for key in keys {
            let api: Api<Secret> = Api::namespaced(client.clone(), &key.namespace);
            match api.get_opt(&key.name).await {
                Ok(secret) => self.observe(&key, secret.as_ref().and_then(usable)),
                Err(e) => tracing::warn!(secret = %key, error = %e, "could not read a listener's certificate Secret"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(n: &str) -> TlsMaterial {
        TlsMaterial { chain_pem: n.into(), key_pem: format!("key of {n}") }
    }

    #[test]
    fn only_referenced_secrets_are_kept() {
        let cache = TlsCache::default();
        let a = ObjectKey::new("shop", "a");
        let b = ObjectKey::new("shop", "b");
        cache.observe(&a, Some(material("a")));
        assert!(cache.materials().is_empty(), "unreferenced material kept");
        assert_eq!(cache.set_referenced(BTreeSet::from([a.clone()])), vec![a.clone()]);
        cache.observe(&a, Some(material("a")));
        cache.observe(&b, Some(material("b")));
        assert_eq!(cache.materials().keys().cloned().collect::<Vec<_>>(), vec![a.clone()]);
        let rx = cache.subscribe();
        assert!(cache.set_referenced(BTreeSet::from([b.clone()])) == vec![b.clone()]);
        assert!(cache.materials().is_empty());
        assert!(rx.has_changed().unwrap());
        assert!(!format!("{:?}", material("a")).contains("key of"));
    }
}
