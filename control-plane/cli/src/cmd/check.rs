//! `weftctl check`: what a cluster lacks for Weft to work — the Gateway API
//! CRDs (and their bundle version), Weft's CRDs, a ready control plane with
//! a leader, and an injection webhook whose certificate the API server will
//! trust. One line per check; exits 1 when one fails.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::ListParams;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kubeconfig (default: KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The control plane's namespace.
    #[arg(short, long, default_value = "weft-system")]
    namespace: String,
    /// The MutatingWebhookConfiguration of the injector.
    #[arg(long, default_value = "weft-injector")]
    webhook_configuration: String,
}

/// Weft's CRDs (`crds/`).
const WEFT_CRDS: [&str; 6] = [
    "meshes.weft.io",
    "meshgatewayconfigs.weft.io",
    "meshgatewayinstances.weft.io",
    "meshgateways.weft.io",
    "meshhttproutes.weft.io",
    "meshtcproutes.weft.io",
];
/// Gateway API resources Weft needs (standard channel).
const GATEWAY_API_STANDARD: [&str; 5] = ["gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants"];
/// Experimental-channel resources Weft reads when present.
const GATEWAY_API_EXPERIMENTAL: [&str; 3] = ["listenersets", "tlsroutes", "tcproutes"];
/// The oldest Gateway API release Weft is tested with.
const OLDEST_TESTED_BUNDLE: (u32, u32) = (1, 4);
/// Where to get the Gateway API CRDs.
const GATEWAY_API_INSTALL: &str = "kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.5.1/experimental-install.yaml";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Warn,
    Fail,
}

struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, what: &str, outcome: Outcome, detail: impl AsRef<str>) {
        let word = match outcome {
            Outcome::Ok => "ok",
            Outcome::Warn => "warning",
            Outcome::Fail => "FAIL",
        };
        self.failed |= outcome == Outcome::Fail;
        println!("{what:<24} {word:<8} {}", detail.as_ref());
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await.context("no kubeconfig found (use --kubeconfig)")?,
    };
    let client = kube::Client::try_from(config)?;
    let mut report = Report { failed: false };
    let crds: Vec<CustomResourceDefinition> = Api::<CustomResourceDefinition>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing CustomResourceDefinitions (cannot reach the cluster?)")?
        .items;
    check_weft_crds(&mut report, &crds);
    check_gateway_api(&mut report, &crds);
    check_control_plane(&mut report, &client, &args.namespace).await?;
    check_webhook(&mut report, &client, &args).await?;
    Ok(if report.failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"))
}

fn find<'a>(crds: &'a [CustomResourceDefinition], name: &str) -> Option<&'a CustomResourceDefinition> {
    crds.iter().find(|c| c.metadata.name.as_deref() == Some(name))
}

fn check_weft_crds(report: &mut Report, crds: &[CustomResourceDefinition]) {
    let missing: Vec<&str> = WEFT_CRDS.iter().copied().filter(|n| !find(crds, n).is_some_and(established)).collect();
    if missing.is_empty() {
        report.line("Weft CRDs", Outcome::Ok, format!("{} of {} established", WEFT_CRDS.len(), WEFT_CRDS.len()));
    } else {
        report.line(
            "Weft CRDs",
            Outcome::Fail,
            format!(
                "missing or not established: {}; install them: helm install (charts/weft), or weftctl install --crds | kubectl apply --server-side -f -",
                missing.join(", ")
            ),
        );
    }
}

fn annotation<'a>(crd: &'a CustomResourceDefinition, key: &str) -> Option<&'a str> {
    crd.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// `v1.5.1` → (1, 5).
fn minor_version(bundle: &str) -> Option<(u32, u32)> {
    let mut parts = bundle.trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn check_gateway_api(report: &mut Report, crds: &[CustomResourceDefinition]) {
    let name = |r: &str| format!("{r}.gateway.networking.k8s.io");
    let missing: Vec<&str> =
        GATEWAY_API_STANDARD.iter().copied().filter(|r| !find(crds, &name(r)).is_some_and(established)).collect();
    if missing.len() == GATEWAY_API_STANDARD.len() {
        report.line(
            "Gateway API CRDs",
            Outcome::Fail,
            format!("not installed (Weft never bundles them); install them: {GATEWAY_API_INSTALL}"),
        );
        return;
    }
    let mut bundles: Vec<String> = GATEWAY_API_STANDARD
        .iter()
        .chain(&GATEWAY_API_EXPERIMENTAL)
        .filter_map(|r| find(crds, &name(r)))
        .map(|c| {
            format!(
                "{} ({})",
                annotation(c, "gateway.networking.k8s.io/bundle-version").unwrap_or("unknown version"),
                annotation(c, "gateway.networking.k8s.io/channel").unwrap_or("unknown channel")
            )
        })
        .collect();
    bundles.sort();
    bundles.dedup();
    let absent_experimental: Vec<&str> =
        GATEWAY_API_EXPERIMENTAL.iter().copied().filter(|r| find(crds, &name(r)).is_none()).collect();
    let mut detail = format!("bundle {}", bundles.join(", "));
    if !absent_experimental.is_empty() {
        detail.push_str(&format!("; not served: {} (experimental channel)", absent_experimental.join(", ")));
    }
    if !missing.is_empty() {
        report.line("Gateway API CRDs", Outcome::Fail, format!("missing: {}; {detail}", missing.join(", ")));
        return;
    }
    let old = bundles.iter().filter_map(|b| minor_version(b)).any(|v| v < OLDEST_TESTED_BUNDLE);
    if bundles.len() > 1 || old {
        detail.push_str(if old {
            "; older than the releases Weft is tested with (v1.4, v1.5)"
        } else {
            "; CRDs of different releases are mixed"
        });
        report.line("Gateway API CRDs", Outcome::Warn, detail);
    } else {
        report.line("Gateway API CRDs", Outcome::Ok, detail);
    }
}

async fn check_control_plane(report: &mut Report, client: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(deployment) = deployments.get_opt("weft-cp").await.context("reading the weft-cp Deployment")? else {
        report.line(
            "control plane",
            Outcome::Fail,
            format!("no Deployment weft-cp in {namespace}: install the chart (helm install weft charts/weft -n {namespace} --create-namespace) or weftctl install"),
        );
        return Ok(());
    };
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let lease = leases.get_opt("weft-control-plane").await.context("reading the Lease weft-control-plane")?;
    let leader = lease.as_ref().and_then(|l| l.spec.as_ref()).and_then(|s| {
        let holder = s.holder_identity.clone()?;
        let renewed = s.renew_time.as_ref()?.0;
        let age = jiff_free_age(renewed);
        let duration = i64::from(s.lease_duration_seconds.unwrap_or(15));
        Some((holder, age, age <= duration))
    });
    let lease_text = match &leader {
        Some((holder, age, true)) => format!("leader {holder} (renewed {age}s ago)"),
        Some((holder, age, false)) => format!("no leader: {holder} last renewed {age}s ago"),
        None => "no leader yet (Lease weft-control-plane not held)".to_string(),
    };
    let detail = format!("{ready}/{wanted} replicas ready; {lease_text}");
    let leading = leader.as_ref().is_some_and(|l| l.2);
    if ready == 0 || !leading {
        report.line(
            "control plane",
            Outcome::Fail,
            format!("{detail}; see kubectl -n {namespace} describe deployment weft-cp, kubectl -n {namespace} logs deployment/weft-cp"),
        );
    } else if ready < wanted {
        report.line("control plane", Outcome::Warn, detail);
    } else {
        report.line("control plane", Outcome::Ok, detail);
    }
    Ok(())
}

/// Whole seconds since `t` (0 when it is in the future).
fn jiff_free_age(t: k8s_openapi::jiff::Timestamp) -> i64 {
    let now = k8s_openapi::jiff::Timestamp::now();
    (now.as_second() - t.as_second()).max(0)
}

async fn check_webhook(report: &mut Report, client: &kube::Client, args: &Args) -> anyhow::Result<()> {
    const WHAT: &str = "webhook certificate";
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(config) = configs
        .get_opt(&args.webhook_configuration)
        .await
        .with_context(|| format!("reading the MutatingWebhookConfiguration {}", args.webhook_configuration))?
    else {
        report.line(
            WHAT,
            Outcome::Warn,
            format!("no MutatingWebhookConfiguration {}: sidecar injection is off", args.webhook_configuration),
        );
        return Ok(());
    };
    let webhooks = config.webhooks.unwrap_or_default();
    let bundles: Vec<Option<Vec<u8>>> =
        webhooks.iter().map(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.clone())).collect();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.namespace);
    let secret = secrets.get_opt("weft-webhook-tls").await.context("reading the Secret weft-webhook-tls")?;
    let data = secret.and_then(|s| s.data).unwrap_or_default();
    let (Some(ca), Some(cert)) = (data.get("ca.crt"), data.get("tls.crt")) else {
        report.line(
            WHAT,
            Outcome::Fail,
            format!("no Secret weft-webhook-tls in {} yet: the control plane's leader makes it", args.namespace),
        );
        return Ok(());
    };
    let unset = bundles.iter().filter(|b| b.as_ref().is_none_or(|b| b.is_empty())).count();
    let stale = bundles.iter().flatten().filter(|b| !b.is_empty() && **b != ca.0).count();
    if unset > 0 || stale > 0 {
        report.line(
            WHAT,
            Outcome::Fail,
            format!(
                "{unset} of {} webhooks without a caBundle, {stale} with one that is not the webhook's CA: the API server cannot call the webhook (the control plane's leader sets it within seconds; is it running?)",
                bundles.len()
            ),
        );
        return Ok(());
    }
    let service = webhooks
        .first()
        .and_then(|w| w.client_config.service.as_ref())
        .map(|s| format!("{}.{}.svc", s.name, s.namespace))
        .unwrap_or_else(|| format!("weft-cp.{}.svc", args.namespace));
    match leaf_facts(&cert.0, &ca.0) {
        Err(e) => report.line(WHAT, Outcome::Fail, format!("weft-webhook-tls: {e}")),
        Ok(facts) => {
            let days_left = (facts.not_after - k8s_openapi::jiff::Timestamp::now().as_second()) / 86_400;
            let detail = format!(
                "serves {}, valid {days_left} more days; caBundle of {} webhooks matches its CA",
                facts.names.join(", "),
                bundles.len()
            );
            if !facts.names.contains(&service) {
                report.line(WHAT, Outcome::Fail, format!("{detail}; but it does not name {service}"));
            } else if !facts.signed_by_ca {
                report.line(WHAT, Outcome::Fail, format!("{detail}; but it is not issued by that CA"));
            } else if days_left < 0 {
                report.line(WHAT, Outcome::Fail, format!("{detail}; expired"));
            } else {
                report.line(WHAT, Outcome::Ok, detail);
            }
        }
    }
    Ok(())
}

struct LeafFacts {
    names: Vec<String>,
    not_after: i64,
    signed_by_ca: bool,
}

fn leaf_facts(cert_pem: &[u8], ca_pem: &[u8]) -> anyhow::Result<LeafFacts> {
    use x509_parser::prelude::*;
    let (_, cert_pem) = parse_x509_pem(cert_pem).map_err(|e| anyhow::anyhow!("tls.crt is not PEM: {e}"))?;
    let cert = cert_pem.parse_x509().map_err(|e| anyhow::anyhow!("tls.crt: {e}"))?;
    let (_, ca_pem) = parse_x509_pem(ca_pem).map_err(|e| anyhow::anyhow!("ca.crt is not PEM: {e}"))?;
    let ca = ca_pem.parse_x509().map_err(|e| anyhow::anyhow!("ca.crt: {e}"))?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let signed_by_ca = cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok();
    Ok(LeafFacts { names, not_after: cert.validity().not_after.timestamp(), signed_by_ca })
}
