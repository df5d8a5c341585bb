//! Which custom resources the cluster serves, and at which version.
//!
//! The Gateway API CRDs are often installed after the mesh (and may be
//! upgraded or removed later). Kuma and Linkerd users had to restart their
//! control planes when that happened, and Cilium once left its Gateway API
//! support silently off after a two-second race; Weft looks again every
//! [`REDISCOVER`], whenever a CustomResourceDefinition of a group it reads
//! changes, and whenever a watch answers 404, and starts or stops watchers
//! to match.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tokio::sync::mpsc;

use crate::kinds::Resource;

/// How often discovery runs even when nothing hinted at a change.
pub const REDISCOVER: Duration = Duration::from_secs(30);

/// What discovery found: for every resource, the served version to read it
/// at, or `None` when the cluster does not serve it.
pub type Served = BTreeMap<Resource, Option<ApiResource>>;

/// The API resource of a core kind (always served), or `None` for a custom
/// one.
fn core(resource: Resource) -> Option<ApiResource> {
    Some(match resource {
        Resource::Service => ApiResource::erase::<Service>(&()),
        Resource::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
        Resource::Namespace => ApiResource::erase::<Namespace>(&()),
        Resource::Secret => ApiResource::erase::<Secret>(&()),
        Resource::Pod | Resource::UnmeshedPod => ApiResource::erase::<Pod>(&()),
        Resource::GatewayDeployment => ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
        Resource::GatewayServiceAccount => ApiResource::erase::<k8s_openapi::api::core::v1::ServiceAccount>(&()),
        Resource::GatewayHpa => ApiResource::erase::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>(&()),
        _ => return None,
    })
}

/// Runs discovery. An error means discovery itself failed (the caller keeps
/// what it had); a group the cluster does not serve at all is not an error.
pub async fn discover(client: &kube::Client) -> Result<Served, kube::Error> {
    let mut served = Served::new();
    let mut groups: BTreeMap<&str, Option<kube::discovery::ApiGroup>> = BTreeMap::new();
    for resource in Resource::ALL {
        if let Some(ar) = core(resource) {
            served.insert(resource, Some(ar));
            continue;
        }
        let group = resource.group();
        if !groups.contains_key(group) {
            let found = match kube::discovery::group(client, group).await {
                Ok(g) => Some(g),
                Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_))) => None,
                Err(e) => return Err(e),
            };
            groups.insert(group, found);
        }
        let choice = groups[group].as_ref().and_then(|g| {
            resource.versions().iter().find_map(|v| {
                g.versioned_resources(v).into_iter().map(|(ar, _)| ar).find(|ar| ar.kind == resource.kind())
            })
        });
        served.insert(resource, choice);
    }
    Ok(served)
}

/// Whether a CRD's name belongs to a group Weft reads.
fn relevant(crd_name: &str) -> bool {
    let mut groups: Vec<&str> = Resource::ALL.iter().map(|r| r.group()).filter(|g| !g.is_empty()).collect();
    groups.dedup();
    groups.iter().any(|g| crd_name.ends_with(&format!(".{g}")))
}

/// Sends a hint whenever a CustomResourceDefinition of a group Weft reads
/// is added, changed or removed. Runs until the receiver is gone. A cluster
/// that does not let Weft watch CRDs leaves only the periodic discovery,
/// which is said once in the log.
pub async fn watch_crds(client: kube::Client, hints: mpsc::Sender<()>) {
    let api: Api<PartialObjectMeta<CustomResourceDefinition>> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut warned = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(watcher::Event::Apply(crd) | watcher::Event::Delete(crd)) => {
                if relevant(crd.metadata.name.as_deref().unwrap_or("")) && hints.send(()).await.is_err() {
                    return;
                }
            }
            Ok(watcher::Event::InitDone) => {
                if hints.send(()).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        error = %e,
                        "cannot watch CustomResourceDefinitions; newly installed Gateway API CRDs are found by periodic discovery"
                    );
                    warned = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_crds_of_groups_weft_reads_matter() {
        assert!(relevant("httproutes.gateway.networking.k8s.io"));
        assert!(relevant("meshes.weft.io"));
        assert!(!relevant("certificates.cert-manager.io"));
        assert!(!relevant("xmeshes.gateway.networking.x-k8s.io"));
    }
}
