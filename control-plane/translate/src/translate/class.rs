//! GatewayClass: which classes are Weft's, and whether their parameters
//! resolve to a MeshGatewayConfig.

use std::collections::BTreeMap;

use weft_k8s_api::crds::{GatewayDeployment, MeshGatewayConfigSpec};
use weft_k8s_api::gateway::{GatewayClass, GatewayClassStatus, GatewayClassStatusSupportedFeatures};
use weft_k8s_api::labels;

use super::conditions::{Conditions, reasons, types};
use super::context::Ctx;

/// Gateway API features Weft implements, advertised in GatewayClass status.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "Gateway",
    "GatewayHTTPListenerIsolation",
    "GatewayInfrastructurePropagation",
    "GatewayPort8080",
    "GatewayStaticAddresses",
    "GatewayAddressEmpty",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "GRPCRouteRequestHeaderModifier",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteRetry",
    "HTTPRouteSchemeRedirect",
    "ListenerSet",
    "Mesh",
    "MeshClusterIPMatching",
    "MeshConsumerRoute",
    "MeshHTTPRouteBackendRequestHeaderModification",
    "MeshHTTPRouteNamedRouteRule",
    "MeshHTTPRouteQueryParamMatching",
    "MeshHTTPRouteRedirectPath",
    "MeshHTTPRouteRedirectPort",
    "MeshHTTPRouteRewritePath",
    "MeshHTTPRouteSchemeRedirect",
    "ReferenceGrant",
    "TCPRoute",
    "TLSRoute",
    "TLSRouteModeTerminate",
];

/// What a Weft GatewayClass means for its Gateways.
#[derive(Clone, Debug)]
pub(crate) enum ClassState {
    /// Usable, with the config its Gateways get.
    Accepted(Box<MeshGatewayConfigSpec>),
    /// Not usable; the message says why.
    Rejected(String),
}

/// Resolves a `parametersRef` to the named MeshGatewayConfig's spec.
pub(crate) fn resolve_config(
    ctx: &Ctx<'_>,
    group: &str,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
) -> Result<MeshGatewayConfigSpec, String> {
    if group != labels::GROUP || kind != "MeshGatewayConfig" {
        return Err(format!(
            "parametersRef must name a MeshGatewayConfig (group weft.io), not {kind} in group {group:?}"
        ));
    }
    if namespace.is_some_and(|n| !n.is_empty()) {
        return Err("parametersRef must not set a namespace: MeshGatewayConfig is cluster-scoped".into());
    }
    let config = ctx
        .snapshot
        .mesh_gateway_configs
        .get(name)
        .map(|c| c.spec.clone())
        .ok_or_else(|| format!("MeshGatewayConfig {name:?} does not exist"))?;
    validate(&config).map_err(|e| format!("MeshGatewayConfig {name:?}: {e}"))?;
    Ok(config)
}

/// What the API server's schema cannot say about a MeshGatewayConfig (and
/// what local mode, which has no API server, must check itself). Errors
/// name the field.
pub(crate) fn validate(config: &MeshGatewayConfigSpec) -> Result<(), String> {
    let d = &config.deployment;
    if d.replicas < 1 {
        return Err(format!("spec.replicas: must be at least 1, not {}", d.replicas));
    }
    if let Some(a) = &d.autoscaling {
        let min = a.min_replicas.unwrap_or(1);
        if min < 1 {
            return Err(format!("spec.autoscaling.minReplicas: must be at least 1, not {min}"));
        }
        if a.max_replicas < min {
            return Err(format!("spec.autoscaling.maxReplicas: {} is less than minReplicas {min}", a.max_replicas));
        }
        if let Some(t) = a.target_cpu_utilization_percentage.filter(|t| !(1..=100).contains(t)) {
            return Err(format!("spec.autoscaling.targetCPUUtilizationPercentage: {t} is not between 1 and 100"));
        }
    }
    if let Some(policy) =
        d.service_template.as_ref().and_then(|t| t.spec.as_ref()).and_then(|s| s.external_traffic_policy.as_deref())
    {
        if policy != "Cluster" && policy != "Local" {
            return Err(format!("spec.serviceTemplate.spec.externalTrafficPolicy: {policy:?} is not Cluster or Local"));
        }
        if d.service_type == weft_k8s_api::crds::ServiceType::ClusterIP || config.cross_mesh {
            return Err(
                "spec.serviceTemplate.spec.externalTrafficPolicy: only for LoadBalancer and NodePort Services".into()
            );
        }
    }
    if let Some(p) = &d.patches {
        for (field, patch) in [("deployment", &p.deployment), ("service", &p.service)] {
            if patch.as_ref().is_some_and(|v| !v.is_object()) {
                return Err(format!("spec.patches.{field}: must be an object (a JSON merge patch)"));
            }
        }
    }
    Ok(())
}

/// Computes the status of Weft's GatewayClasses and what each means for its
/// Gateways. Classes of other controllers are left alone.
pub(crate) fn translate(
    ctx: &Ctx<'_>,
    statuses: &mut BTreeMap<String, GatewayClassStatus>,
) -> BTreeMap<String, ClassState> {
    let mut states = BTreeMap::new();
    for (name, class) in &ctx.snapshot.gateway_classes {
        if class.spec.controller_name != labels::GATEWAY_CONTROLLER_NAME {
            continue;
        }
        let state = match &class.spec.parameters_ref {
            None => ClassState::Accepted(Box::new(MeshGatewayConfigSpec {
                deployment: GatewayDeployment::default(),
                ..Default::default()
            })),
            Some(p) => match resolve_config(ctx, &p.group, &p.kind, &p.name, p.namespace.as_deref()) {
                Ok(config) => ClassState::Accepted(Box::new(config)),
                Err(msg) => ClassState::Rejected(msg),
            },
        };
        statuses.insert(name.clone(), status(ctx, class, &state));
        states.insert(name.clone(), state);
    }
    states
}

fn status(ctx: &Ctx<'_>, class: &GatewayClass, state: &ClassState) -> GatewayClassStatus {
    let previous = class.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let mut c = Conditions::new(previous, ctx.now, class.metadata.generation);
    match state {
        ClassState::Accepted(_) => {
            c.set(types::ACCEPTED, true, reasons::ACCEPTED, "Weft manages Gateways of this class")
        }
        ClassState::Rejected(msg) => c.set(types::ACCEPTED, false, reasons::INVALID_PARAMETERS, msg.clone()),
    };
    c.set(types::SUPPORTED_VERSION, true, reasons::SUPPORTED_VERSION, "Gateway API v1.5");
    GatewayClassStatus {
        conditions: Some(c.build()),
        supported_features: Some({
            // The spec requires ascending order by name.
            let mut names: Vec<&str> = SUPPORTED_FEATURES.to_vec();
            names.sort_unstable();
            names.into_iter().map(|f| GatewayClassStatusSupportedFeatures { name: f.to_string() }).collect()
        }),
    }
}
