//! Identity material in Kubernetes mode: each mesh's CA and the join-token
//! key, kept in Secrets of the control plane's namespace so that every
//! replica signs with the same CA and a restart keeps it.
//!
//! Only the leader creates a missing Secret; every replica reads them
//! through a watch. The layout mirrors local mode's state directory:
//! `ca.crt`, `ca.key` and, during a rotation, `previous.crt` and
//! `previous.until`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tokio::sync::watch;
use weft_identity::TokenKey;
use weft_identity::store::{CaMaterial, SharedCas};

use crate::leader::Leadership;

/// Name of the Secret holding the join-token key.
pub const TOKEN_KEY_SECRET: &str = "weft-join-token-key";
/// Key of the join-token key in its Secret.
pub const TOKEN_KEY_FIELD: &str = "token.key";
/// Prefix of each mesh's CA Secret (`weft-mesh-ca-<mesh>`).
pub const CA_SECRET_PREFIX: &str = "weft-mesh-ca-";
/// Label naming the mesh of a CA Secret.
pub const CA_LABEL: &str = "weft.io/mesh-ca";

/// The join-token key, waiting for it to exist (the leader creates it when
/// it is missing). Never returns an error: the API may be briefly away.
pub async fn token_key(client: kube::Client, namespace: &str, leadership: watch::Receiver<Leadership>) -> TokenKey {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let mut said = false;
    loop {
        match api.get_opt(TOKEN_KEY_SECRET).await {
            Ok(Some(secret)) => {
                match secret.data.as_ref().and_then(|d| d.get(TOKEN_KEY_FIELD)).filter(|k| k.0.len() >= 32) {
                    Some(key) => return TokenKey::from_bytes(&key.0),
                    None => tracing::error!(
                        secret = %format!("{namespace}/{TOKEN_KEY_SECRET}"),
                        "the join-token key Secret has no {TOKEN_KEY_FIELD} of at least 32 bytes; fix or delete it"
                    ),
                }
            }
            Ok(None) if leadership.borrow().is_leader() => {
                let key = TokenKey::generate();
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(TOKEN_KEY_SECRET.into()),
                        namespace: Some(namespace.into()),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(TOKEN_KEY_FIELD.to_string(), ByteString(key.as_bytes().to_vec()))])),
                    type_: Some("Opaque".into()),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => {
                        tracing::info!(secret = %format!("{namespace}/{TOKEN_KEY_SECRET}"), "join-token key created");
                        return key;
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => tracing::warn!(error = %e, "could not create the join-token key Secret"),
                }
            }
            Ok(None) => {
                if !said {
                    tracing::info!("waiting for the leader to create the join-token key Secret");
                    said = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the join-token key Secret"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A mesh's CA material from its Secret.
pub fn material(secret: &Secret) -> Result<CaMaterial, String> {
    let get = |k: &str| -> Option<String> {
        secret.data.as_ref()?.get(k).map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let cert_pem = get("ca.crt").ok_or("no ca.crt")?;
    let key_pem = get("ca.key").ok_or("no ca.key")?;
    let previous = match (get("previous.crt"), get("previous.until")) {
        (Some(c), Some(u)) => Some((c, u)),
        (None, None) => None,
        _ => return Err("previous.crt and previous.until go together".into()),
    };
    Ok(CaMaterial { cert_pem, key_pem, previous })
}

fn secret_for(namespace: &str, mesh: &str, material: &CaMaterial) -> Secret {
    let mut data = BTreeMap::from([
        ("ca.crt".to_string(), ByteString(material.cert_pem.clone().into_bytes())),
        ("ca.key".to_string(), ByteString(material.key_pem.clone().into_bytes())),
    ]);
    if let Some((c, u)) = &material.previous {
        data.insert("previous.crt".into(), ByteString(c.clone().into_bytes()));
        data.insert("previous.until".into(), ByteString(u.clone().into_bytes()));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("{CA_SECRET_PREFIX}{mesh}")),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(CA_LABEL.to_string(), mesh.to_string())])),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Keeps `cas` equal to the CA Secrets of `namespace`, and (while leading)
/// creates the Secret of every mesh in `meshes` (name → trust domain) that
/// has none. `changed` is called after each change of `cas`. Runs forever.
pub async fn sync(
    client: kube::Client,
    namespace: String,
    mut meshes: watch::Receiver<BTreeMap<String, String>>,
    mut leadership: watch::Receiver<Leadership>,
    cas: Arc<SharedCas>,
    changed: impl Fn() + Send,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let mut stream = watcher(api.clone(), watcher::Config::default().labels(CA_LABEL)).default_backoff().boxed();
    let mut listed = false;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut init: BTreeSet<String> = BTreeSet::new();
    let mut create_tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            item = stream.next() => {
                let Some(item) = item else { return };
                match item {
                    Ok(watcher::Event::Init) => init.clear(),
                    Ok(watcher::Event::InitApply(s)) | Ok(watcher::Event::Apply(s)) => {
                        let name = s.metadata.name.clone().unwrap_or_default();
                        let Some(mesh) = s.metadata.labels.as_ref().and_then(|l| l.get(CA_LABEL)).cloned() else { continue };
                        init.insert(mesh.clone());
                        match material(&s) {
                            Ok(m) => {
                                seen.insert(mesh.clone());
                                if cas.set(&mesh, m) {
                                    tracing::info!(%mesh, secret = %name, "mesh CA read from its Secret");
                                    changed();
                                }
                            }
                            Err(e) => tracing::error!(%mesh, secret = %name, error = %e, "mesh CA Secret is not usable"),
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        listed = true;
                        for mesh in seen.clone() {
                            if !init.contains(&mesh) {
                                seen.remove(&mesh);
                                if cas.remove(&mesh) {
                                    changed();
                                }
                            }
                        }
                    }
                    Ok(watcher::Event::Delete(s)) => {
                        if let Some(mesh) = s.metadata.labels.as_ref().and_then(|l| l.get(CA_LABEL)) {
                            seen.remove(mesh);
                            if cas.remove(mesh) {
                                tracing::warn!(%mesh, "mesh CA Secret deleted; the leader makes a new CA");
                                changed();
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "watching mesh CA Secrets failed; retrying"),
                }
            }
            r = meshes.changed() => if r.is_err() { return },
            r = leadership.changed() => if r.is_err() { return },
            _ = create_tick.tick() => {}
        }
        if !listed || !leadership.borrow().is_leader() {
            continue;
        }
        let wanted = meshes.borrow().clone();
        for (mesh, trust_domain) in wanted {
            if seen.contains(&mesh) {
                continue;
            }
            let material = match CaMaterial::generate(&trust_domain, time::OffsetDateTime::now_utc()) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(%mesh, error = %e, "could not generate a mesh CA");
                    continue;
                }
            };
            match api.create(&PostParams::default(), &secret_for(&namespace, &mesh, &material)).await {
                Ok(_) => {
                    tracing::info!(%mesh, %trust_domain, "mesh CA created");
                    seen.insert(mesh.clone());
                    if cas.set(&mesh, material) {
                        changed();
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => tracing::warn!(%mesh, error = %e, "could not create the mesh CA Secret"),
            }
        }
    }
}
