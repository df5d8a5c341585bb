//! Workload identity on Kubernetes: a proxy proves who it is with the
//! projected ServiceAccount token injection gave it (audience
//! `weft.io/identity`), and the control plane asks the API server about it
//! with a TokenReview.
//!
//! A token is accepted only when the review says it is authenticated, for
//! Weft's audience, for a ServiceAccount (`system:serviceaccount:NS:SA`);
//! when the token is bound to a pod (as projected tokens are), that pod
//! must be a meshed pod Weft knows, with the same uid, in the mesh the
//! proxy asks a certificate for. Positive answers are cached for a few
//! minutes (never past the token's expiry), so a mass restart does not
//! flood the API server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use weft_identity::signer::Proven;
use weft_k8s_api::labels;
use weft_translate::ObjectKey;

use crate::index::{Index, Item};
use crate::kinds::Kind;

/// How long a positive review is reused at most.
pub const CACHE_FOR: Duration = Duration::from_secs(300);
/// Cached reviews kept at most (oldest dropped first).
const CACHE_LIMIT: usize = 50_000;

/// What a review established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewed {
    pub namespace: String,
    pub service_account: String,
    /// The pod the token is bound to (name, uid), if it is.
    pub pod: Option<(String, String)>,
}

/// Why a token is refused; the message says which check failed, never the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("{0}")]
    Refused(String),
    #[error("the TokenReview could not be made: {0}")]
    Unavailable(String),
}

/// Reviews tokens; cheap to share.
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
    index: Arc<RwLock<Index>>,
    cache: Mutex<HashMap<[u8; 32], (Reviewed, Instant)>>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .field("cached", &self.cache.lock().len())
            .finish()
    }
}

/// The `exp` claim of a JWT, read without verifying it (only to bound how
/// long a review is cached; the API server verifies the token).
fn jwt_expiry(token: &str) -> Option<i64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("exp")?.as_i64()
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenReviewer {
    /// A reviewer asking for `audience`, checking bound pods against the
    /// index of the Kubernetes source.
    pub fn new(client: kube::Client, audience: &str, index: Arc<RwLock<Index>>) -> Self {
        TokenReviewer { client, audience: audience.to_owned(), index, cache: Mutex::new(HashMap::new()) }
    }

    /// Reviews `token` (cached), then checks that it may have a certificate
    /// of `mesh`.
    pub async fn verify(&self, token: &str, mesh: &str) -> Result<Proven, ReviewError> {
        let key = digest(token);
        let cached = {
            let cache = self.cache.lock();
            cache.get(&key).filter(|(_, until)| Instant::now() < *until).map(|(r, _)| r.clone())
        };
        let reviewed = match cached {
            Some(r) => r,
            None => {
                let r = self.review(token).await?;
                let now_unix = time::OffsetDateTime::now_utc().unix_timestamp();
                let ttl = jwt_expiry(token)
                    .map(|exp| Duration::from_secs(exp.saturating_sub(now_unix).max(0) as u64))
                    .unwrap_or(CACHE_FOR)
                    .min(CACHE_FOR);
                let mut cache = self.cache.lock();
                if cache.len() >= CACHE_LIMIT {
                    let now = Instant::now();
                    cache.retain(|_, (_, until)| *until > now);
                    if cache.len() >= CACHE_LIMIT {
                        cache.clear();
                    }
                }
                cache.insert(key, (r.clone(), Instant::now() + ttl));
                r
            }
        };
        self.check_mesh(&reviewed, mesh)?;
        Ok(Proven {
            namespace: reviewed.namespace,
            service_account: reviewed.service_account,
            pod: reviewed.pod.map(|(name, _)| name),
        })
    }

    /// Whether a cached review exists for the token (for metrics and tests).
    pub fn is_cached(&self, token: &str) -> bool {
        self.cache.lock().get(&digest(token)).is_some_and(|(_, until)| Instant::now() < *until)
    }

    async fn review(&self, token: &str) -> Result<Reviewed, ReviewError> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_owned()), audiences: Some(vec![self.audience.clone()]) },
            ..Default::default()
        };
        let answer =
            api.create(&PostParams::default(), &review).await.map_err(|e| ReviewError::Unavailable(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "not authenticated".into());
            return Err(ReviewError::Refused(format!("the API server does not authenticate it: {why}")));
        }
        if !status.audiences.iter().flatten().any(|a| *a == self.audience) {
            return Err(ReviewError::Refused(format!("it is not for the audience {:?}", self.audience)));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let (namespace, service_account) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
            .ok_or_else(|| ReviewError::Refused(format!("{username:?} is not a ServiceAccount")))?;
        let extra = user.extra.unwrap_or_default();
        let one = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
        let pod = match (one("authentication.kubernetes.io/pod-name"), one("authentication.kubernetes.io/pod-uid")) {
            (Some(name), Some(uid)) => Some((name, uid)),
            _ => None,
        };
        Ok(Reviewed { namespace: namespace.to_owned(), service_account: service_account.to_owned(), pod })
    }

    fn check_mesh(&self, r: &Reviewed, mesh: &str) -> Result<(), ReviewError> {
        let index = self.index.read();
        match &r.pod {
            Some((name, uid)) => {
                let key = ObjectKey::new(r.namespace.clone(), name.clone());
                let Some(entry) = index.get(Kind::Pod, &key) else {
                    return Err(ReviewError::Refused(format!("the pod {key} it is bound to is not a meshed pod")));
                };
                if entry.uid != *uid {
                    return Err(ReviewError::Refused(format!("the pod {key} it is bound to no longer exists")));
                }
                match &entry.item {
                    Item::Pod(info) if info.mesh == mesh => Ok(()),
                    Item::Pod(info) => {
                        Err(ReviewError::Refused(format!("the pod {key} is in mesh {:?}, not {mesh:?}", info.mesh)))
                    }
                    _ => Err(ReviewError::Refused(format!("the pod {key} is not a meshed pod"))),
                }
            }
            None => {
                // A token not bound to a pod: the mesh of its namespace.
                let ns_mesh = index
                    .get(Kind::Namespace, &ObjectKey::cluster(r.namespace.clone()))
                    .and_then(|e| match &e.item {
                        Item::Namespace(ns) => {
                            let m = &ns.metadata;
                            m.annotations
                                .as_ref()
                                .and_then(|a| a.get(labels::MESH))
                                .or_else(|| m.labels.as_ref().and_then(|l| l.get(labels::MESH)))
                                .cloned()
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| labels::DEFAULT_MESH.to_string());
                if ns_mesh == mesh {
                    Ok(())
                } else {
                    Err(ReviewError::Refused(format!("namespace {} is in mesh {ns_mesh:?}, not {mesh:?}", r.namespace)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_of_a_jwt_bounds_the_cache() {
        use base64::Engine as _;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!("{}.{}.sig", enc(r#"{"alg":"RS256"}"#), enc(r#"{"exp":1900000000,"sub":"x"}"#));
        assert_eq!(jwt_expiry(&token), Some(1_900_000_000));
        assert_eq!(jwt_expiry("weft1.abc.def"), None);
        assert_ne!(digest("a"), digest("b"));
    }
}
