//! CRDs at run time: a CRD created after start is served (discovery, list,
//! OpenAPI) and stops being served when deleted. The real Gateway API v1.5.1
//! experimental bundle applies with kubectl; objects of every kind get their
//! schema defaults; schema violations are 422 naming the field; unknown
//! fields under Strict are rejected.

mod common;

use common::Kubectl;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::{ApiResource, Discovery};
use kube_double::{ApiServer, Options, read_crds};
use serde_json::json;

fn mesh_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("weft.io", "v1alpha1", "Mesh"), "meshes")
}

#[tokio::test]
async fn crd_created_at_run_time_is_served_until_deleted() {
    let server = ApiServer::start(Options::default()).unwrap();
    let client = server.client("t").await.unwrap();
    let meshes: Api<DynamicObject> = Api::all_with(client.clone(), &mesh_resource());
    assert!(meshes.list(&Default::default()).await.map_err(|e| e.to_string()).unwrap_err().contains("404"));

    let crd = read_crds(&common::repo_root().join("crds/meshes.weft.io.yaml")).unwrap().remove(0);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let got = crds.get("meshes.weft.io").await.unwrap();
    let conds = got.status.unwrap().conditions.unwrap();
    assert!(conds.iter().any(|c| c.type_ == "Established" && c.status == "True"));

    let resources = client.list_api_group_resources("weft.io/v1alpha1").await.unwrap();
    assert!(resources.resources.iter().any(|r| r.name == "meshes" && r.kind == "Mesh" && !r.namespaced));
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.groups().any(|g| g.name() == "weft.io"));

    let m: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "weft.io/v1alpha1", "kind": "Mesh", "metadata": {"name": "default"}, "spec": {}}),
    )
    .unwrap();
    meshes.create(&PostParams::default(), &m).await.unwrap();
    assert_eq!(meshes.list(&Default::default()).await.unwrap().items.len(), 1);

    crds.delete("meshes.weft.io", &DeleteParams::default()).await.unwrap();
    let err = meshes.list(&Default::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404), "{err:?}");
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    assert!(!discovery.groups().any(|g| g.name() == "weft.io"));
    assert!(server.list("v1", "Namespace", None).len() >= 4);

    // Created again, it is empty: its objects went with it.
    crds.create(&PostParams::default(), &crd).await.unwrap();
    assert!(meshes.list(&Default::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn gateway_api_bundle_with_kubectl_defaults_and_schema_errors() {
    let server = ApiServer::start(Options::default()).unwrap();
    let k = Kubectl::new(&server, "admin");
    let root = common::repo_root();
    let bundle = root.join("third_party/gateway-api-crds/v1.5.1-experimental.yaml");
    let out = k.ok(&["apply", "--server-side", "-f", bundle.to_str().unwrap()]);
    assert!(out.contains("httproutes.gateway.networking.k8s.io serverside-applied"), "{out}");
    let objects = root.join("e2e/kube-double/tests/data/gateway-api-objects.yaml");
    let out = k.ok(&["apply", "--server-side", "-f", objects.to_str().unwrap()]);
    assert_eq!(out.lines().filter(|l| l.ends_with("serverside-applied")).count(), 13, "{out}");

    let g = |av: &str, kind: &str, ns: &str, name: &str| {
        server.get(av, kind, ns, name).unwrap_or_else(|| panic!("{kind} {name}"))
    };
    let gw = g("gateway.networking.k8s.io/v1", "Gateway", "gw", "gw");
    assert_eq!(gw["spec"]["listeners"][0]["allowedRoutes"], json!({"namespaces": {"from": "Same"}}));
    assert_eq!(gw["status"]["conditions"][0]["reason"], "Pending", "status defaults: {}", gw["status"]);
    let gc = g("gateway.networking.k8s.io/v1", "GatewayClass", "", "weft");
    assert_eq!(gc["status"]["conditions"][0]["status"], "Unknown");
    let hr = g("gateway.networking.k8s.io/v1", "HTTPRoute", "gw", "route");
    assert_eq!(hr["spec"]["rules"][0]["matches"], json!([{"path": {"type": "PathPrefix", "value": "/"}}]));
    assert_eq!(hr["spec"]["rules"][0]["backendRefs"][0]["weight"], 1);
    assert_eq!(hr["spec"]["parentRefs"][0]["kind"], "Gateway");
    for (av, kind, name) in [
        ("gateway.networking.k8s.io/v1", "GRPCRoute", "grpc"),
        ("gateway.networking.k8s.io/v1", "TLSRoute", "tls"),
        ("gateway.networking.k8s.io/v1alpha2", "TCPRoute", "tcp"),
        ("gateway.networking.k8s.io/v1alpha2", "UDPRoute", "udp"),
    ] {
        let r = g(av, kind, "gw", name);
        assert_eq!(r["spec"]["rules"][0]["backendRefs"][0]["weight"], 1, "{kind}");
        assert_eq!(r["spec"]["parentRefs"][0]["group"], "gateway.networking.k8s.io", "{kind}");
    }
    let ls = g("gateway.networking.k8s.io/v1", "ListenerSet", "gw", "ls");
    assert_eq!(ls["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]["from"], "Same");
    assert_eq!(ls["spec"]["parentRef"]["kind"], "Gateway");
    for (av, kind, ns, name) in [
        ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", "gw", "rg"),
        ("gateway.networking.k8s.io/v1", "BackendTLSPolicy", "gw", "btls"),
        ("gateway.networking.x-k8s.io/v1alpha1", "XBackendTrafficPolicy", "gw", "btp"),
        ("gateway.networking.x-k8s.io/v1alpha1", "XMesh", "", "mesh"),
    ] {
        g(av, kind, ns, name);
    }
    // Served at every version: the same object as v1beta1.
    let hr_beta = g("gateway.networking.k8s.io/v1beta1", "HTTPRoute", "gw", "route");
    assert_eq!(hr_beta["apiVersion"], "gateway.networking.k8s.io/v1beta1");
    let out = k.ok(&[
        "get",
        "httproutes.v1beta1.gateway.networking.k8s.io",
        "-n",
        "gw",
        "route",
        "-o",
        "jsonpath={.apiVersion}",
    ]);
    assert_eq!(out, "gateway.networking.k8s.io/v1beta1");

    // Schema errors: 422 naming the field, through kube and through kubectl.
    let client = server.client("t").await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), "gw", &ar);
    let bad = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "bad"},
                     "spec": {"rules": [{"backendRefs": [{"name": "svc", "port": 80, "weight": 2000000}]}]}});
    let err = routes.patch("bad", &PatchParams::apply("t"), &Patch::Apply(&bad)).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("{err:?}") };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(status.message.contains("spec.rules[0].backendRefs[0].weight"), "{}", status.message);
    let causes = status.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.rules[0].backendRefs[0].weight");
    let f = k.write(
        "bad.yaml",
        &serde_json::to_string(&bad).unwrap().replace("\"metadata\":{", "\"metadata\":{\"namespace\":\"gw\","),
    );
    let stderr = k.fails(&["apply", "--server-side", "-f", f.to_str().unwrap()]);
    assert!(
        stderr.contains("spec.rules[0].backendRefs[0].weight") && stderr.contains("less than or equal to 1000000"),
        "{stderr}"
    );

    // Unknown fields: kubectl's default --validate=strict is rejected by the server.
    let unknown = k.write(
        "unknown.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: u, namespace: gw}\nspec:\n  bogus: 1\n",
    );
    let stderr = k.fails(&["apply", "--server-side", "-f", unknown.to_str().unwrap()]);
    assert!(stderr.contains("unknown field \"spec.bogus\""), "{stderr}");
    let out = k.run(&["apply", "--server-side", "--validate=false", "-f", unknown.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        server.get("gateway.networking.k8s.io/v1", "HTTPRoute", "gw", "u").unwrap()["spec"].get("bogus").is_none(),
        "pruned"
    );
    // Strategic merge patch is refused on custom resources.
    let stderr =
        k.fails(&["patch", "httproute", "-n", "gw", "route", "-p", "{\"spec\":{\"hostnames\":[\"a.example\"]}}"]);
    assert!(
        stderr.contains("UnsupportedMediaType")
            || stderr.contains("unknown format")
            || stderr.contains("not supported"),
        "{stderr}"
    );
}
