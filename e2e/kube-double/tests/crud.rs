//! kube Client CRUD against the double: create/get/list/replace/delete,
//! server-side apply (force, conflicts, removal of dropped fields, shared
//! ownership), status subresource separation, generation, merge-patched
//! status, resourceVersion preconditions, owner-reference garbage collection
//! (including invalid cross-namespace owners) and finalizers.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use kube_double::{ApiServer, Options};
use serde_json::{Value, json};

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn deployment(replicas: i32, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "web", "image": image}]}}}})
}

#[tokio::test]
async fn create_get_list_replace_delete_with_preconditions() {
    let server = ApiServer::start(Options::default()).unwrap();
    let client = server.client("t").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "a"}, "data": {"x": "1"}})).unwrap();
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let err = api_err(api.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));

    let generated: ConfigMap = serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let g = api.create(&PostParams::default(), &generated).await.unwrap();
    assert!(g.metadata.name.unwrap().starts_with("gen-"));

    // Namespace must exist.
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let err = api_err(missing.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(err.code, 404);

    // Update with a stale resourceVersion conflicts; without one it is unconditional.
    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh.data = Some([("x".to_string(), "2".to_string())].into());
    api.replace("a", &PostParams::default(), &fresh).await.unwrap();
    stale.data = Some([("x".to_string(), "3".to_string())].into());
    let err = api_err(api.replace("a", &PostParams::default(), &stale).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    stale.metadata.resource_version = None;
    api.replace("a", &PostParams::default(), &stale).await.unwrap();

    // Paging.
    for i in 0..5 {
        let c: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("p{i}"), "labels": {"page": "yes"}}})).unwrap();
        api.create(&PostParams::default(), &c).await.unwrap();
    }
    let page1 = api.list(&ListParams::default().labels("page=yes").limit(2)).await.unwrap();
    assert_eq!(page1.items.len(), 2);
    let tok = page1.metadata.continue_.clone().unwrap();
    let page2 = api.list(&ListParams::default().labels("page=yes").limit(2).continue_token(&tok)).await.unwrap();
    assert_eq!(page2.items[0].metadata.name.as_deref(), Some("p2"));
    let by_field = api.list(&ListParams::default().fields("metadata.name=p3")).await.unwrap();
    assert_eq!(by_field.items.len(), 1);
    let err = api_err(api.list(&ListParams::default().fields("data.x=1")).await.unwrap_err());
    assert_eq!(err.code, 400);

    // Delete preconditions.
    let cur = api.get("a").await.unwrap();
    let bad = DeleteParams {
        preconditions: Some(Preconditions { uid: Some("wrong".into()), resource_version: None }),
        ..Default::default()
    };
    assert_eq!(api_err(api.delete("a", &bad).await.unwrap_err()).code, 409);
    let bad = DeleteParams {
        preconditions: Some(Preconditions { uid: None, resource_version: Some("1".into()) }),
        ..Default::default()
    };
    assert_eq!(api_err(api.delete("a", &bad).await.unwrap_err()).code, 409);
    let good = DeleteParams {
        preconditions: Some(Preconditions {
            uid: cur.metadata.uid.clone(),
            resource_version: cur.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    let dry = DeleteParams { dry_run: true, ..Default::default() };
    api.delete("a", &dry).await.unwrap();
    assert!(api.get("a").await.is_ok(), "a dry-run delete keeps the object");
    api.delete("a", &good).await.unwrap();
    assert_eq!(api_err(api.get("a").await.unwrap_err()).code, 404);

    // deletecollection with a label selector.
    api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("page=yes")).await.unwrap();
    assert!(api.list(&ListParams::default().labels("page=yes")).await.unwrap().items.is_empty());
    assert!(api.get("p0").await.is_err());
    assert!(server.recorded().iter().any(|r| r.verb == "deletecollection" && r.resource == "configmaps"));
}

#[tokio::test]
async fn server_side_apply_ownership() {
    let server = ApiServer::start(Options::default()).unwrap();
    let client = server.client("t").await.unwrap();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let a = PatchParams::apply("manager-a");
    let b = PatchParams::apply("manager-b");

    api.patch("web", &a, &Patch::Apply(deployment(1, "nginx:1"))).await.unwrap();
    // b sets the same replicas (shared) and a different image: conflict.
    let mut b_cfg = deployment(1, "nginx:2");
    b_cfg["spec"].as_object_mut().unwrap().remove("selector");
    let err = api_err(api.patch("web", &b, &Patch::Apply(&b_cfg)).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(err.message.contains("conflict with \"manager-a\""), "{}", err.message);
    let causes = err.details.unwrap().causes;
    assert!(causes.iter().any(|c| c.reason == "FieldManagerConflict" && c.field.contains(".image")), "{causes:?}");

    // Forced: b takes the image; replicas stay shared.
    let d = api.patch("web", &b.clone().force(), &Patch::Apply(&b_cfg)).await.unwrap();
    assert_eq!(
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.as_deref(),
        Some("nginx:2")
    );
    let mf = d.metadata.managed_fields.clone().unwrap();
    assert!(mf.iter().any(|m| m.manager.as_deref() == Some("manager-b") && m.operation.as_deref() == Some("Apply")));

    // a stops applying replicas: b still owns it, so it stays.
    let mut a_cfg = deployment(1, "nginx:1");
    a_cfg["spec"].as_object_mut().unwrap().remove("replicas");
    a_cfg["spec"]["template"]["spec"]["containers"][0].as_object_mut().unwrap().remove("image");
    a_cfg["metadata"]["labels"] = json!({"team": "x", "tier": "web"});
    let d = api.patch("web", &a, &Patch::Apply(&a_cfg)).await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1));
    // a drops one label: removed (nobody else owns it); the other stays.
    a_cfg["metadata"]["labels"] = json!({"team": "x"});
    let d = api.patch("web", &a, &Patch::Apply(&a_cfg)).await.unwrap();
    let labels = d.metadata.labels.unwrap();
    assert!(labels.contains_key("team") && !labels.contains_key("tier"), "{labels:?}");
    // b drops replicas too: now nobody owns it and it is removed (then defaulted to 1 again).
    let mut b2 = b_cfg.clone();
    b2["spec"].as_object_mut().unwrap().remove("replicas");
    let before = api.get("web").await.unwrap();
    let d = api.patch("web", &b, &Patch::Apply(&b2)).await.unwrap();
    let mf = d.metadata.managed_fields.unwrap();
    let owners: Vec<_> = mf
        .iter()
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some()))
        .collect();
    assert!(owners.is_empty(), "{owners:?}");
    assert_eq!(d.metadata.generation, before.metadata.generation, "replicas defaulted back to 1: no spec change");

    // Create-on-apply, dry run and the rv precondition.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let dry = PatchParams { dry_run: true, ..PatchParams::apply("m") };
    cms.patch(
        "dry",
        &dry,
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry"}})),
    )
    .await
    .unwrap();
    assert!(server.get("v1", "ConfigMap", "default", "dry").is_none());
    let c = cms
        .patch(
            "c",
            &PatchParams::apply("m"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}),
            ),
        )
        .await
        .unwrap();
    let err = api_err(
        cms.patch("c", &PatchParams::apply("m"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "resourceVersion": "1"}, "data": {"a": "2"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    let rv = c.metadata.resource_version.unwrap();
    cms.patch("c", &PatchParams::apply("m"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "resourceVersion": rv}, "data": {"a": "2"}})))
        .await
        .unwrap();
    // A merge patch by another manager records an Update entry and takes the field.
    let c = cms.patch("c", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "3"}}))).await.unwrap();
    let mf = c.metadata.managed_fields.unwrap();
    assert!(mf.iter().any(|m| m.operation.as_deref() == Some("Update")
        && m.fields_v1.as_ref().unwrap().0.pointer("/f:data/f:a").is_some()));
    assert!(
        !mf.iter()
            .any(|m| m.manager.as_deref() == Some("m")
                && m.fields_v1.as_ref().unwrap().0.pointer("/f:data/f:a").is_some())
    );
    // A bad patch body is a 400, never a 500.
    let err = api_err(
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "replace", "path": "/nope/x", "value": 1}])).unwrap(),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
}

#[tokio::test]
async fn status_subresource_generation_and_services() {
    let server = ApiServer::start(Options::default()).unwrap();
    let client = server.client("t").await.unwrap();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let mut d = deployment(1, "nginx:1");
    d["status"] = json!({"replicas": 5});
    let d = api.patch("web", &PatchParams::apply("m"), &Patch::Apply(d)).await.unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    assert!(d.status.is_none(), "status ignored on the main resource");
    // Status writes do not bump generation and do not touch spec.
    let d = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 1}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(1));
    assert_eq!(d.spec.unwrap().replicas, Some(1));
    assert_eq!(d.metadata.generation, Some(1));
    // Label changes do not bump generation; spec changes do.
    let d = api
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let d = api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    assert_eq!(d.status.unwrap().ready_replicas, Some(1), "spec writes keep status");
    // Status apply is its own manager entry with subresource status.
    let d = api
        .patch_status(
            "web",
            &PatchParams::apply("status-writer").force(),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": {"availableReplicas": 1}})),
        )
        .await
        .unwrap();
    assert!(
        d.metadata
            .managed_fields
            .unwrap()
            .iter()
            .any(|m| m.manager.as_deref() == Some("status-writer") && m.subresource.as_deref() == Some("status"))
    );

    // Services: cluster IP, and a test acting as the cloud controller.
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let s: Service = serde_json::from_value(json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})).unwrap();
    let s = svcs.create(&PostParams::default(), &s).await.unwrap();
    let spec = s.spec.unwrap();
    assert!(spec.cluster_ip.as_deref().unwrap().starts_with("10.96."));
    assert!(spec.ports.unwrap()[0].node_port.unwrap() >= 30000);
    server
        .patch_status(
            "v1",
            "Service",
            "default",
            "lb",
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}),
        )
        .unwrap();
    let s = svcs.get("lb").await.unwrap();
    assert_eq!(s.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0].ip.as_deref(), Some("192.0.2.1"));

    // EndpointSlice controller: a ready pod with a podIP and a named port.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "web-1", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.patch_status(
        "web-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"podIP": "10.0.0.5", "conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await
    .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let list = slices.list(&ListParams::default().labels("kubernetes.io/service-name=lb")).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let slice = &list.items[0];
    assert!(slice.metadata.name.as_deref().unwrap().starts_with("lb-"));
    assert_eq!(slice.endpoints[0].addresses, vec!["10.0.0.5".to_string()]);
    assert_eq!(slice.endpoints[0].conditions.as_ref().unwrap().ready, Some(true));
    assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));
    // Deleting the Service collects its slice.
    svcs.delete("lb", &DeleteParams::default()).await.unwrap();
    assert!(slices.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn garbage_collection_and_finalizers() {
    let server = ApiServer::start(Options { namespaces: vec!["other".into()], ..Default::default() }).unwrap();
    let client = server.client("t").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap())
        .await
        .unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]);
    for n in ["dep1", "dep2"] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": n, "ownerReferences": oref}})).unwrap(),
        )
        .await
        .unwrap();
    }
    // Background cascade.
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    assert!(server.get("v1", "ConfigMap", "default", "dep1").is_none());
    assert!(server.get("v1", "ConfigMap", "default", "dep2").is_none());

    // Orphan keeps dependents and strips the reference.
    let owner = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap())
        .await
        .unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "kept", "ownerReferences": oref}})).unwrap(),
    )
    .await
    .unwrap();
    cms.delete("owner", &DeleteParams::orphan()).await.unwrap();
    let kept = server.get("v1", "ConfigMap", "default", "kept").unwrap();
    assert!(kept["metadata"].get("ownerReferences").is_none());

    // An owner in another namespace is invalid: the dependent is garbage, with an Event.
    let foreign: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
    let fo = foreign
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "fo"}})).unwrap())
        .await
        .unwrap();
    let bad_ref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "fo", "uid": fo.metadata.uid}]);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cross", "ownerReferences": bad_ref}})).unwrap(),
    )
    .await
    .unwrap();
    assert!(server.get("v1", "ConfigMap", "default", "cross").is_none());
    let events = server.list("v1", "Event", Some("default"));
    assert!(
        events.iter().any(|e| e["reason"] == "OwnerRefInvalidNamespace" && e["involvedObject"]["name"] == "cross"),
        "{events:?}"
    );
    // A namespaced owner of a cluster-scoped object is invalid too.
    let crs = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRole>(&()),
    );
    let cr: DynamicObject = serde_json::from_value(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "cr", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "fo", "uid": fo.metadata.uid}]}})).unwrap();
    crs.create(&PostParams::default(), &cr).await.unwrap();
    assert!(server.get("rbac.authorization.k8s.io/v1", "ClusterRole", "", "cr").is_none());

    // Finalizers keep an object until they are removed.
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "fin", "finalizers": ["example.com/hold"]}})).unwrap(),
    )
    .await
    .unwrap();
    let res = cms.delete("fin", &DeleteParams::default()).await.unwrap();
    let pending = res.left().expect("object returned while finalizers remain");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(cms.get("fin").await.unwrap().metadata.deletion_timestamp.is_some());
    cms.patch("fin", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    assert_eq!(api_err(cms.get("fin").await.unwrap_err()).code, 404);

    // Foreground: dependents go first.
    let owner = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "fg"}})).unwrap())
        .await
        .unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "fg", "uid": owner.metadata.uid, "blockOwnerDeletion": true}]);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "fg-dep", "ownerReferences": oref}})).unwrap(),
    )
    .await
    .unwrap();
    cms.delete("fg", &DeleteParams::foreground()).await.unwrap();
    assert!(server.get("v1", "ConfigMap", "default", "fg-dep").is_none());
    assert!(server.get("v1", "ConfigMap", "default", "fg").is_none());
}
