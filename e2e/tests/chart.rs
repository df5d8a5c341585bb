//! The Helm chart, rendered and checked with the real tools: `helm lint
//! --strict` and `helm template` for the default values and three other
//! value sets (HA; custom images and resources; the injection webhook's
//! failurePolicy switched to Ignore), every rendered object validated with
//! `kubernetes-validate --strict` for Kubernetes 1.29 and 1.32, and Weft's
//! own objects (and the GatewayClass) against their CRDs' schemas. Also:
//! `values.schema.json` refuses a misspelled value, the GatewayClass is
//! rendered only where the Gateway API is served, the webhook is the one
//! the e2e harness installs, and what `weftctl install` prints is the
//! chart's default rendering (`scripts/render-install` regenerates it).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use support::{chart, documents, find, helm_template, repo, run, run_with, tool};

const GATEWAY_API: &str = "gateway.networking.k8s.io/v1/GatewayClass";
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.32.0"];

/// Custom images, pull policy and secrets, and resources.
const CUSTOM_VALUES: &str = r#"controlPlane:
  image: {repository: registry.example.com/mesh/weft-cp, tag: 1.2.3-rc.1, pullPolicy: Always}
  imagePullSecrets: [{name: registry-credentials}]
  resources:
    requests: {cpu: 250m, memory: 192Mi}
    limits: {cpu: "2", memory: 768Mi}
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: mesh, effect: NoSchedule}]
  priorityClassName: system-cluster-critical
  logLevel: weft_kubernetes=debug,info
proxy:
  image: {repository: registry.example.com/mesh/weft-proxy, tag: 1.2.3-rc.1, pullPolicy: IfNotPresent}
  logLevel: debug
  resources:
    requests: {cpu: 20m, memory: 24Mi}
    limits: {cpu: 500m, memory: 128Mi}
  nativeSidecars: "false"
"#;

/// The webhook fails open, excludes more namespaces; metrics through a
/// ServiceMonitor; a Strict default mesh.
const IGNORE_VALUES: &str = r#"injector:
  failurePolicy: Ignore
  timeoutSeconds: 3
  excludedNamespaces: [kube-system, monitoring]
metrics:
  podAnnotations: false
  serviceMonitor: {enabled: true, interval: 15s, labels: {release: prometheus}}
mesh:
  mtls: {mode: Strict}
"#;

struct ValueSet {
    name: &'static str,
    /// Values files (a path in the chart, or YAML written to a temp file).
    files: Vec<PathBuf>,
}

fn value_sets(dir: &Path) -> anyhow::Result<Vec<ValueSet>> {
    let custom = dir.join("custom.yaml");
    std::fs::write(&custom, CUSTOM_VALUES)?;
    let ignore = dir.join("ignore.yaml");
    std::fs::write(&ignore, IGNORE_VALUES)?;
    Ok(vec![
        ValueSet { name: "default", files: vec![] },
        ValueSet { name: "ha", files: vec![chart().join("values-ha.yaml")] },
        ValueSet { name: "custom images and resources", files: vec![custom] },
        ValueSet { name: "failurePolicy Ignore", files: vec![ignore] },
    ])
}

fn file_args(set: &ValueSet) -> Vec<String> {
    set.files.iter().flat_map(|f| ["-f".to_string(), f.to_string_lossy().into_owned()]).collect()
}

fn render(set: &ValueSet, extra: &[&str]) -> anyhow::Result<String> {
    let args = file_args(set);
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(extra);
    helm_template(&all).with_context(|| format!("value set {}", set.name))
}

fn container(docs: &[Value]) -> Value {
    let deployment = find(docs, "Deployment", "weft-cp").expect("the Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0].clone()
}

fn args_of(docs: &[Value]) -> Vec<String> {
    container(docs)["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

/// kubernetes-validate --strict on the rendered file for one Kubernetes
/// version: every object with a built-in schema must have passed.
fn kubernetes_validate(file: &Path, docs: &[Value], version: &str) -> anyhow::Result<usize> {
    let mut command = Command::new(tool("kubernetes-validate")?);
    command.args(["--strict", "-k", version]).arg(file);
    let (ok, out, err) = run_with(command, None, Duration::from_secs(120))?;
    let text = format!("{out}{err}");
    if !ok {
        bail!("kubernetes-validate --strict -k {version} failed:\n{text}");
    }
    let mut passed = 0;
    for d in docs {
        let (kind, name) = (d["kind"].as_str().unwrap_or(""), d["metadata"]["name"].as_str().unwrap_or(""));
        // Built-in kinds have schemas; custom ones (Weft's, the Gateway API's,
        // prometheus-operator's ServiceMonitor) get a warning and are
        // checked against their CRDs instead.
        let group = d["apiVersion"].as_str().unwrap_or("").rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let builtin = !group.contains('.') || (group.ends_with(".k8s.io") && group != "gateway.networking.k8s.io");
        if builtin {
            let line = format!("passed for resource {}/{name}", kind.to_lowercase());
            if !text.contains(&line) {
                bail!("kubernetes-validate -k {version} did not pass {kind}/{name}:\n{text}");
            }
            passed += 1;
        }
    }
    Ok(passed)
}

/// Validates custom objects against their CRD's openAPIV3Schema with the
/// jsonschema of kubernetes-validate's venv. Unknown fields are errors, as
/// kubectl's strict field validation makes them; nullable and
/// int-or-string are honoured.
const CRD_VALIDATOR: &str = r#"
import json, sys, yaml, jsonschema
crd_files, docs_file = sys.argv[1:-1], sys.argv[-1]
schemas = {}
for f in crd_files:
    for crd in yaml.safe_load_all(open(f)):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        for v in crd["spec"]["versions"]:
            schemas[(crd["spec"]["group"] + "/" + v["name"], crd["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
def strict(s):
    if not isinstance(s, dict):
        return s
    s = dict(s)
    if s.pop("x-kubernetes-int-or-string", False):
        s.pop("type", None)
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    for k in ("properties", "patternProperties"):
        if k in s:
            s[k] = {n: strict(p) for n, p in s[k].items()}
    for k in ("items", "additionalProperties"):
        if isinstance(s.get(k), dict):
            s[k] = strict(s[k])
    for k in ("allOf", "anyOf", "oneOf"):
        if k in s:
            s[k] = [strict(x) for x in s[k]]
    if "properties" in s and "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
        s["additionalProperties"] = False
    return s
failed = 0
count = 0
for d in yaml.safe_load_all(open(docs_file)):
    if not d:
        continue
    key = (d["apiVersion"], d["kind"])
    if key not in schemas:
        continue
    schema = strict(schemas[key])
    schema["properties"].update({"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}})
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(d), key=lambda e: list(e.path))
    for e in errors:
        print("INVALID %s/%s: %s: %s" % (d["kind"], d["metadata"]["name"], "/".join(map(str, e.path)), e.message))
        failed += 1
    if not errors:
        print("valid %s/%s against its CRD" % (d["kind"], d["metadata"]["name"]))
    count += 1
print("%d objects checked against CRD schemas" % count)
sys.exit(1 if failed else 0)
"#;

fn crd_validate(file: &Path) -> anyhow::Result<String> {
    // kubernetes-validate's venv has jsonschema and PyYAML.
    let kv = std::fs::canonicalize(tool("kubernetes-validate")?)?;
    let python = kv.parent().context("kubernetes-validate's directory")?.join("python");
    if !python.exists() {
        bail!(
            "{} is missing: kubernetes-validate must be installed in a venv (scripts/install-test-tools)",
            python.display()
        );
    }
    let mut command = Command::new(python);
    command.arg("-c").arg(CRD_VALIDATOR);
    let mut crds: Vec<PathBuf> =
        std::fs::read_dir(chart().join("crds"))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    crds.sort();
    crds.push(repo().join("third_party/gateway-api-crds/v1.5.1-standard.yaml"));
    command.args(&crds).arg(file);
    let (ok, out, err) = run_with(command, None, Duration::from_secs(60))?;
    if !ok {
        bail!("{} does not validate against the CRD schemas:\n{out}{err}", file.display());
    }
    Ok(out)
}

#[test]
fn the_chart_lints_renders_and_validates_for_every_value_set() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for set in value_sets(dir.path())? {
        let mut lint = Command::new(tool("helm")?);
        lint.args(["lint", "--strict"]).arg(chart()).args(file_args(&set));
        let out = run(lint, Duration::from_secs(60)).with_context(|| format!("helm lint --strict, {}", set.name))?;
        assert!(out.contains("0 chart(s) failed"), "{out}");
        for version in KUBERNETES_VERSIONS {
            let rendered = render(&set, &["--kube-version", version, "--api-versions", GATEWAY_API])?;
            let file = dir.path().join(format!("{}-{version}.yaml", set.name.replace(' ', "-")));
            std::fs::write(&file, &rendered)?;
            let docs = documents(&rendered)?;
            let passed = kubernetes_validate(&file, &docs, version)?;
            let crd = crd_validate(&file)?;
            let checked = crd.lines().filter(|l| l.starts_with("valid ")).count();
            assert!(checked >= 3, "Mesh, MeshGatewayConfig and GatewayClass were not all checked:\n{crd}");
            println!(
                "{} values, Kubernetes {version}: {} objects; {passed} passed kubernetes-validate --strict, {checked} their CRD schemas",
                set.name,
                docs.len()
            );
        }
    }
    Ok(())
}

#[test]
fn the_validators_catch_a_misspelled_field() -> anyhow::Result<()> {
    // The checks above are only worth something if a typo fails them.
    let dir = tempfile::tempdir()?;
    let rendered = helm_template(&["--api-versions", GATEWAY_API])?;
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        rendered.replace("  replicas: 1\n  revisionHistoryLimit", "  replica: 1\n  revisionHistoryLimit"),
    )?;
    let mut command = Command::new(tool("kubernetes-validate")?);
    command.args(["--strict", "-k", "1.32.0"]).arg(&typo);
    let (ok, out, err) = run_with(command, None, Duration::from_secs(60))?;
    assert!(!ok && format!("{out}{err}").contains("replica"), "{out}{err}");
    let mesh_typo = dir.path().join("mesh-typo.yaml");
    std::fs::write(&mesh_typo, rendered.replace("    mode: Permissive", "    mode: Permisive"))?;
    let err = crd_validate(&mesh_typo).expect_err("a Mesh with an invalid mode passed");
    assert!(format!("{err:#}").contains("Permisive"), "{err:#}");
    let config_typo = dir.path().join("config-typo.yaml");
    std::fs::write(&config_typo, rendered.replace("  serviceType: LoadBalancer", "  serviceTipe: LoadBalancer"))?;
    let err = crd_validate(&config_typo).expect_err("a MeshGatewayConfig with an unknown field passed");
    assert!(format!("{err:#}").contains("serviceTipe"), "{err:#}");
    // values.schema.json: Helm refuses a misspelled key or a bad value.
    for (set, what) in [
        ("controlPlane.replica=3", "replica"),
        ("injector.failurePolicy=Ignor", "failurePolicy"),
        ("proxy.resources.limits.memory=lots", "memory"),
    ] {
        let err = helm_template(&["--set", set]).expect_err(set);
        assert!(format!("{err:#}").contains(what), "{set}: {err:#}");
    }
    Ok(())
}

#[test]
fn each_value_set_renders_what_it_says() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sets = value_sets(dir.path())?;
    let docs_of =
        |i: usize| -> anyhow::Result<Vec<Value>> { documents(&render(&sets[i], &["--api-versions", GATEWAY_API])?) };

    // Defaults: one replica, hardened, probed, resourced; the images the
    // image script builds; no PDB, no ServiceMonitor.
    let default = docs_of(0)?;
    let version = env!("CARGO_PKG_VERSION");
    let c = container(&default);
    assert_eq!(c["image"], format!("ghcr.io/weft-mesh/weft-cp:{version}"));
    assert!(args_of(&default).contains(&format!("--proxy-image=ghcr.io/weft-mesh/weft-proxy:{version}")));
    for arg in ["--grpc-addr=0.0.0.0:15010", "--admin-addr=0.0.0.0:15000", "--webhook-addr=0.0.0.0:15017"] {
        assert!(args_of(&default).iter().any(|a| a == arg), "{arg} missing: {:?}", args_of(&default));
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    let deployment = find(&default, "Deployment", "weft-cp").unwrap();
    assert_eq!(deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["limits"]["memory"].is_string());
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"], "true");
    assert!(find(&default, "PodDisruptionBudget", "weft-cp").is_none());
    assert!(!default.iter().any(|d| d["kind"] == "ServiceMonitor"));
    let class = find(&default, "GatewayClass", "weft").expect("the GatewayClass");
    assert_eq!(class["spec"]["parametersRef"]["name"], "weft-gateway");
    assert_eq!(find(&default, "Mesh", "default").expect("the default Mesh")["spec"]["mtls"]["mode"], "Permissive");

    // HA: three replicas on different nodes, a PodDisruptionBudget.
    let ha = docs_of(1)?;
    let deployment = find(&ha, "Deployment", "weft-cp").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    let anti = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert_eq!(anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"], "kubernetes.io/hostname");
    let pdb = find(&ha, "PodDisruptionBudget", "weft-cp").expect("the PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"]);

    // Custom images and resources reach the control plane and, through its
    // flags, every injected proxy.
    let custom = docs_of(2)?;
    let c = container(&custom);
    assert_eq!(c["image"], "registry.example.com/mesh/weft-cp:1.2.3-rc.1");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["resources"]["limits"]["cpu"], "2");
    let args = args_of(&custom);
    for arg in [
        "--proxy-image=registry.example.com/mesh/weft-proxy:1.2.3-rc.1",
        "--proxy-image-pull-policy=IfNotPresent",
        "--proxy-log-level=debug",
        "--proxy-cpu-request=20m",
        "--proxy-memory-request=24Mi",
        "--proxy-cpu-limit=500m",
        "--proxy-memory-limit=128Mi",
        "--native-sidecars=false",
    ] {
        assert!(args.iter().any(|a| a == arg), "{arg} missing: {args:?}");
    }
    let pod = &find(&custom, "Deployment", "weft-cp").unwrap()["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "registry-credentials"}]));
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");

    // failurePolicy switched; more exclusions; a ServiceMonitor.
    let ignore = docs_of(3)?;
    let mwc = find(&ignore, "MutatingWebhookConfiguration", "weft-injector").unwrap();
    for w in mwc["webhooks"].as_array().unwrap() {
        assert_eq!(w["failurePolicy"], "Ignore");
        assert_eq!(w["timeoutSeconds"], 3);
        let excluded = w["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == "kubernetes.io/metadata.name")
            .unwrap();
        assert_eq!(excluded["values"], json!(["kube-system", "monitoring", "weft-system"]));
    }
    let monitor = ignore.iter().find(|d| d["kind"] == "ServiceMonitor").expect("the ServiceMonitor");
    let admin = find(&ignore, "Service", "weft-cp-admin").unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&admin["metadata"]["labels"][k], v, "the ServiceMonitor does not select weft-cp-admin");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], admin["spec"]["ports"][0]["name"]);
    assert!(find(&ignore, "Deployment", "weft-cp").unwrap()["spec"]["template"]["metadata"]["annotations"].is_null());
    Ok(())
}

#[test]
fn the_gateway_class_is_rendered_only_where_the_gateway_api_is_served() -> anyhow::Result<()> {
    let without = documents(&helm_template(&[])?)?;
    assert!(!without.iter().any(|d| d["kind"] == "GatewayClass"), "a GatewayClass without the Gateway API CRDs");
    assert!(find(&without, "Mesh", "default").is_some() && find(&without, "Deployment", "weft-cp").is_some());
    let with = documents(&helm_template(&["--api-versions", GATEWAY_API])?)?;
    assert!(find(&with, "GatewayClass", "weft").is_some());
    // The real `helm install` into the API-server double without the
    // Gateway API CRDs: Weft's CRDs first, then everything but the
    // GatewayClass; NOTES.txt tells a new user what to do next, and about
    // the missing CRDs.
    let api = kube_double::ApiServer::start(kube_double::Options::default())?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "admin")?;
    let mut install = Command::new(tool("helm")?);
    install.args(["install", "weft"]).arg(chart()).args(["-n", "weft-system", "--create-namespace"]);
    // (The double serves OpenAPI v3 only; Helm validates with v2.)
    install.args(["--disable-openapi-validation", "--kubeconfig"]);
    install.arg(&kubeconfig).env("HELM_CACHE_HOME", dir.path().join("cache")).env("HELM_CONFIG_HOME", dir.path());
    let notes = run(install, Duration::from_secs(60))?;
    println!("{notes}");
    assert!(api.get("apps/v1", "Deployment", "weft-system", "weft-cp").is_some(), "helm install made no Deployment");
    assert!(api.get("weft.io/v1alpha1", "Mesh", "", "default").is_some(), "helm install made no Mesh");
    assert!(api.list("gateway.networking.k8s.io/v1", "GatewayClass", None).is_empty());
    for expected in [
        "kubectl -n weft-system rollout status deployment/weft-cp",
        "weftctl check",
        "The Gateway API CRDs are not installed",
        "kubectl label namespace NAMESPACE weft.io/sidecar-injection=enabled",
        "examples/canary/mesh.yaml",
    ] {
        assert!(notes.contains(expected), "NOTES.txt lacks {expected:?}:\n{notes}");
    }
    Ok(())
}

#[test]
fn the_webhook_is_the_one_the_harness_installs() -> anyhow::Result<()> {
    let docs = documents(&helm_template(&[])?)?;
    let mut rendered = find(&docs, "MutatingWebhookConfiguration", "weft-injector").expect("the webhook").clone();
    rendered["metadata"] = json!({"name": "weft-injector"});
    let harness: Value = serde_saphyr::from_str(weft_e2e::kube::INJECTOR_WEBHOOK)?;
    assert_eq!(rendered, harness, "the chart's webhook differs from e2e/src/kube.rs INJECTOR_WEBHOOK");
    Ok(())
}

/// Without its first line (the "generated by" comment).
fn body(text: &str) -> &str {
    text.split_once('\n').map(|(_, rest)| rest).unwrap_or("")
}

#[test]
fn weftctl_install_prints_the_charts_default_rendering() -> anyhow::Result<()> {
    let manifests = repo().join("control-plane/cli/manifests");
    let stale = "control-plane/cli/manifests is stale: run scripts/render-install and commit the result";
    let fresh = helm_template(&["--api-versions", GATEWAY_API])?;
    let generated = std::fs::read_to_string(manifests.join("install.yaml"))?;
    if body(&generated) != fresh {
        let diff = similar::TextDiff::from_lines(body(&generated), &fresh);
        panic!("{stale}\n{}", diff.unified_diff().context_radius(2).header("install.yaml", "helm template"));
    }
    let mut crds = String::new();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(chart().join("crds"))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for f in files {
        crds.push_str("---\n");
        crds.push_str(&std::fs::read_to_string(f)?);
    }
    assert!(body(&std::fs::read_to_string(manifests.join("crds.yaml"))?) == crds, "{stale}");

    // The binary prints them: the namespace, then the rendering.
    let weftctl = weft_e2e::workspace_bin("weftctl")?;
    let mut command = Command::new(&weftctl);
    command.arg("install");
    let printed = documents(&run(command, Duration::from_secs(30))?)?;
    let mut expected = vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "weft-system"}})];
    expected.extend(documents(&fresh)?);
    assert_eq!(printed, expected);
    let mut command = Command::new(&weftctl);
    command.args(["install", "--crds"]);
    let printed = documents(&run(command, Duration::from_secs(30))?)?;
    assert_eq!(printed, documents(&crds)?);
    Ok(())
}
