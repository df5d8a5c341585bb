//! Listener validation shared by Gateways and ListenerSets: protocols, TLS,
//! route kinds, certificate references, and conflicts between listeners.

use weft_k8s_api::crds::{ListenerProtocol, ListenerTls, NamespacedName, TlsMode};
use weft_k8s_api::gateway::GROUP;

use super::conditions::reasons;
use super::context::{Ctx, core_group};
use super::kinds::{RouteKind, kinds_for_protocol};
use super::selector::Selector;
use crate::load::secret::TLS_SECRET_TYPE;
use crate::snapshot::ObjectKey;

/// Which object declared a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ListenerOwner {
    Gateway,
    ListenerSet(ObjectKey),
}

/// A certificate reference as written.
#[derive(Clone, Debug, Default)]
pub(crate) struct CertRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
}

/// The listener fields Gateway and ListenerSet listeners share; their
/// generated Rust types differ, so both are converted to this.
#[derive(Clone, Debug, Default)]
pub(crate) struct ListenerSpec {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub hostname: Option<String>,
    pub tls: Option<(Option<String>, Vec<CertRef>)>,
    pub kinds: Vec<(Option<String>, String)>,
    pub namespaces_from: Option<String>,
    pub selector: Option<Selector>,
}

/// Converts a Gateway or ListenerSet listener (same field names, different
/// generated types) into a [`ListenerSpec`].
macro_rules! listener_spec {
    ($l:expr) => {{
        let l = $l;
        let ar = l.allowed_routes.as_ref();
        let ns = ar.and_then(|a| a.namespaces.as_ref());
        $crate::translate::listeners::ListenerSpec {
            name: l.name.clone(),
            port: l.port,
            protocol: l.protocol.clone(),
            hostname: l.hostname.clone().filter(|h| !h.is_empty()),
            tls: l.tls.as_ref().map(|t| {
                (
                    t.mode.as_ref().map(|m| format!("{m:?}")),
                    t.certificate_refs
                        .iter()
                        .flatten()
                        .map(|r| $crate::translate::listeners::CertRef {
                            group: r.group.clone(),
                            kind: r.kind.clone(),
                            name: r.name.clone(),
                            namespace: r.namespace.clone(),
                        })
                        .collect(),
                )
            }),
            kinds: ar
                .and_then(|a| a.kinds.as_ref())
                .map(|ks| ks.iter().map(|k| (k.group.clone(), k.kind.clone())).collect())
                .unwrap_or_default(),
            namespaces_from: ns.and_then(|n| n.from.as_ref()).map(|f| format!("{f:?}")),
            selector: ns.and_then(|n| n.selector.as_ref()).map(|s| $crate::translate::selector::Selector {
                match_labels: s.match_labels.clone().unwrap_or_default(),
                match_expressions: s
                    .match_expressions
                    .iter()
                    .flatten()
                    .map(|e| $crate::translate::selector::Requirement {
                        key: e.key.clone(),
                        operator: e.operator.clone(),
                        values: e.values.clone().unwrap_or_default(),
                    })
                    .collect(),
            }),
        }
    }};
}
pub(crate) use listener_spec;

/// Which namespaces may attach routes to a listener.
#[derive(Clone, Debug)]
pub(crate) enum AllowedNamespaces {
    /// Only the namespace of the listener's owner.
    Same,
    All,
    Selector(Selector),
}

/// A listener after validation.
#[derive(Clone, Debug)]
pub(crate) struct ListenerModel {
    pub owner: ListenerOwner,
    /// Namespace of the Gateway or ListenerSet that declared it.
    pub owner_namespace: String,
    pub name: String,
    /// Unique name within the MeshGateway.
    pub mesh_name: String,
    pub port: i32,
    pub protocol: String,
    pub hostname: Option<String>,
    /// Route kinds it accepts (requested and supported).
    pub kinds: Vec<RouteKind>,
    pub namespaces: AllowedNamespaces,
    /// Accepted=False: reason and message.
    pub rejected: Option<(&'static str, String)>,
    /// ResolvedRefs=False: reason and messages.
    pub unresolved: Option<(&'static str, Vec<String>)>,
    /// Conflicted=True: reason and message.
    pub conflict: Option<(&'static str, String)>,
    /// TLS as the proxy serves it (valid certificates only).
    pub tls: Option<ListenerTls>,
    /// HTTPS and TLS listeners cannot be served without TLS settings.
    pub needs_tls: bool,
    /// Routes attached, counted for `attachedRoutes`.
    pub attached: std::collections::BTreeSet<(RouteKind, ObjectKey)>,
    /// Host names served by the HTTPRoutes accepted so far: a GRPCRoute
    /// may not share one on a listener.
    pub http_claims: Vec<(ObjectKey, Vec<String>)>,
    /// Host names served by the GRPCRoutes accepted so far.
    pub grpc_claims: Vec<(ObjectKey, Vec<String>)>,
}

impl ListenerModel {
    /// Valid on its own: accepted, references resolved, not conflicted.
    ///
    /// A listener with some unresolved references (an unsupported route kind
    /// next to supported ones, one bad certificate next to good ones) is
    /// still served with what did resolve; ResolvedRefs=False reports the
    /// rest.
    pub fn is_valid(&self) -> bool {
        self.rejected.is_none()
            && self.conflict.is_none()
            && !self.kinds.is_empty()
            && (!self.needs_tls || self.tls.is_some())
    }

    /// Why an invalid listener is not served, for its Programmed condition.
    pub fn not_served_reason(&self) -> String {
        if let Some((_, msg)) = self.rejected.as_ref().or(self.conflict.as_ref()) {
            msg.clone()
        } else if self.kinds.is_empty() {
            "the listener accepts no route kind Weft supports".into()
        } else if self.needs_tls && self.tls.is_none() {
            "the listener has no usable certificate".into()
        } else {
            "the listener is not valid".into()
        }
    }

    /// The protocol in MeshGateway form.
    pub fn mesh_protocol(&self) -> Option<ListenerProtocol> {
        match self.protocol.as_str() {
            "HTTP" => Some(ListenerProtocol::Http),
            "HTTPS" => Some(ListenerProtocol::Https),
            "TLS" => Some(ListenerProtocol::Tls),
            "TCP" => Some(ListenerProtocol::Tcp),
            _ => None,
        }
    }

    /// Whether a route in `namespace` with these namespace labels may attach.
    pub fn allows_namespace(&self, ctx: &Ctx<'_>, namespace: &str) -> bool {
        match &self.namespaces {
            AllowedNamespaces::Same => namespace == self.owner_namespace,
            AllowedNamespaces::All => true,
            AllowedNamespaces::Selector(s) => s.matches(&ctx.namespace_labels(namespace)),
        }
    }
}

/// Ports every gateway proxy listens on itself: a listener there could
/// never be served.
const GATEWAY_PROXY_PORTS: [i32; 3] = [15020, 15021, 15090];

/// Validates one listener. `owner_kind` is `Gateway` or `ListenerSet` (the
/// `from` kind of ReferenceGrants for certificates).
pub(crate) fn evaluate(
    ctx: &Ctx<'_>,
    spec: &ListenerSpec,
    owner: ListenerOwner,
    owner_namespace: &str,
    mesh_name: String,
    cross_mesh: bool,
) -> ListenerModel {
    let owner_kind = match owner {
        ListenerOwner::Gateway => "Gateway",
        ListenerOwner::ListenerSet(_) => "ListenerSet",
    };
    let mut model = ListenerModel {
        owner,
        owner_namespace: owner_namespace.to_string(),
        name: spec.name.clone(),
        mesh_name,
        port: spec.port,
        protocol: spec.protocol.clone(),
        hostname: spec.hostname.clone(),
        kinds: Vec::new(),
        namespaces: match spec.namespaces_from.as_deref() {
            Some("All") => AllowedNamespaces::All,
            Some("Selector") => AllowedNamespaces::Selector(spec.selector.clone().unwrap_or_default()),
            _ => AllowedNamespaces::Same,
        },
        rejected: None,
        unresolved: None,
        conflict: None,
        tls: None,
        needs_tls: matches!(spec.protocol.as_str(), "HTTPS" | "TLS"),
        attached: Default::default(),
        http_claims: Vec::new(),
        grpc_claims: Vec::new(),
    };

    let supported = kinds_for_protocol(&spec.protocol);
    if supported.is_empty() {
        model.rejected = Some((
            reasons::UNSUPPORTED_PROTOCOL,
            format!("protocol {:?} is not supported; Weft serves HTTP, HTTPS, TLS and TCP listeners", spec.protocol),
        ));
        return model;
    }
    if GATEWAY_PROXY_PORTS.contains(&spec.port) {
        model.rejected = Some((
            reasons::PORT_UNAVAILABLE,
            format!(
                "port {} is the gateway proxy's own (admin 15020, health 15021, metrics 15090); choose another port",
                spec.port
            ),
        ));
        return model;
    }
    if cross_mesh && spec.protocol != "HTTP" {
        model.rejected = Some((
            reasons::UNSUPPORTED_PROTOCOL,
            format!("cross-mesh gateways serve HTTP listeners only, not {}", spec.protocol),
        ));
        return model;
    }

    // Route kinds: the requested ones this protocol supports.
    let mut invalid_kinds = Vec::new();
    if spec.kinds.is_empty() {
        model.kinds = supported.to_vec();
    } else {
        for (group, kind) in &spec.kinds {
            match RouteKind::parse(group.as_deref().or(Some(GROUP)), kind).filter(|k| supported.contains(k)) {
                Some(k) if !model.kinds.contains(&k) => model.kinds.push(k),
                Some(_) => {}
                None => invalid_kinds.push(format!("{}/{kind}", group.as_deref().unwrap_or(GROUP))),
            }
        }
    }
    let mut unresolved: Vec<(&'static str, String)> = Vec::new();
    if !invalid_kinds.is_empty() {
        unresolved.push((
            reasons::INVALID_ROUTE_KINDS,
            format!("route kinds {} are not supported on {} listeners", invalid_kinds.join(", "), spec.protocol),
        ));
    }

    // TLS settings.
    let needs_tls = matches!(spec.protocol.as_str(), "HTTPS" | "TLS");
    match (&spec.tls, needs_tls) {
        (Some(_), false) => {
            model.rejected =
                Some((reasons::UNSUPPORTED_VALUE, format!("tls must not be set on {} listeners", spec.protocol)));
        }
        (None, true) => {
            model.rejected =
                Some((reasons::UNSUPPORTED_VALUE, format!("{} listeners need tls settings", spec.protocol)));
        }
        (Some((mode, refs)), true) => {
            let mode = match mode.as_deref() {
                Some("Passthrough") => TlsMode::Passthrough,
                _ => TlsMode::Terminate,
            };
            if spec.protocol == "HTTPS" && mode == TlsMode::Passthrough {
                model.rejected = Some((
                    reasons::UNSUPPORTED_VALUE,
                    "HTTPS listeners terminate TLS; use protocol TLS with mode Passthrough to pass TLS through".into(),
                ));
            } else {
                let mut certificates = Vec::new();
                if mode == TlsMode::Terminate {
                    if refs.is_empty() {
                        unresolved.push((
                            reasons::INVALID_CERTIFICATE_REF,
                            "tls mode Terminate needs at least one certificateRef".into(),
                        ));
                    }
                    for r in refs {
                        match resolve_certificate(ctx, r, owner_kind, owner_namespace) {
                            Ok(cert) => certificates.push(cert),
                            Err(problem) => unresolved.push(problem),
                        }
                    }
                }
                let usable = mode == TlsMode::Passthrough || !certificates.is_empty();
                if usable {
                    model.tls = Some(ListenerTls { mode, certificates });
                }
            }
        }
        (None, false) => {}
    }
    if let Some((reason, _)) = unresolved.first() {
        model.unresolved = Some((reason, unresolved.iter().map(|(_, m)| m.clone()).collect()));
    }
    model
}

fn resolve_certificate(
    ctx: &Ctx<'_>,
    r: &CertRef,
    owner_kind: &str,
    owner_namespace: &str,
) -> Result<NamespacedName, (&'static str, String)> {
    let namespace = r.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| owner_namespace.to_string());
    let kind = r.kind.as_deref().unwrap_or("Secret");
    let group = r.group.as_deref().unwrap_or("");
    // Whether the reference is allowed comes first: InvalidCertificateRef is
    // only for references that are permitted.
    if namespace != owner_namespace
        && !ctx.reference_granted((GROUP, owner_kind, owner_namespace), group, kind, &namespace, &r.name)
    {
        return Err((
            reasons::REF_NOT_PERMITTED,
            format!("no ReferenceGrant in namespace {namespace} lets this {owner_kind} use {kind} {}", r.name),
        ));
    }
    if !core_group(r.group.as_deref()) || kind != "Secret" {
        let shown = if core_group(r.group.as_deref()) { kind.to_string() } else { format!("{kind} (group {group})") };
        return Err((
            reasons::INVALID_CERTIFICATE_REF,
            format!(
                "certificateRef to {shown} {:?} is not supported; use a core Secret of type {TLS_SECRET_TYPE}",
                r.name
            ),
        ));
    }
    let Some(secret) = ctx.snapshot.secrets.get(&ObjectKey::new(namespace.clone(), r.name.clone())) else {
        return Err((reasons::INVALID_CERTIFICATE_REF, format!("Secret {namespace}/{} does not exist", r.name)));
    };
    if secret.type_ != TLS_SECRET_TYPE {
        return Err((
            reasons::INVALID_CERTIFICATE_REF,
            format!("Secret {namespace}/{} has type {:?}, not {TLS_SECRET_TYPE}", r.name, secret.type_),
        ));
    }
    if let Some(Err(why)) = &secret.tls {
        return Err((reasons::INVALID_CERTIFICATE_REF, format!("Secret {namespace}/{} is malformed: {why}", r.name)));
    }
    Ok(NamespacedName { namespace, name: r.name.clone() })
}

/// Why two listeners on one port cannot be told apart, if they cannot.
pub(crate) fn conflict_between(a: &ListenerModel, b: &ListenerModel) -> Option<&'static str> {
    if a.port != b.port {
        return None;
    }
    let layer4 = |p: &str| matches!(p, "TCP" | "UDP");
    if a.protocol != b.protocol {
        // HTTPS and TLS share a port: the proxy tells them apart by SNI.
        let sni = |p: &str| matches!(p, "HTTPS" | "TLS");
        if sni(&a.protocol) && sni(&b.protocol) {
            return same_hostname(a, b).then_some(reasons::HOSTNAME_CONFLICT);
        }
        return Some(reasons::PROTOCOL_CONFLICT);
    }
    if layer4(&a.protocol) {
        return Some(reasons::HOSTNAME_CONFLICT);
    }
    same_hostname(a, b).then_some(reasons::HOSTNAME_CONFLICT)
}

fn same_hostname(a: &ListenerModel, b: &ListenerModel) -> bool {
    match (&a.hostname, &b.hostname) {
        (None, None) => true,
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
        _ => false,
    }
}

/// Marks conflicts inside one Gateway's own listeners: every listener that
/// cannot be told apart from another is rejected (the spec forbids picking a
/// winner among them).
pub(crate) fn mark_conflicts_within(listeners: &mut [ListenerModel]) {
    let n = listeners.len();
    let mut found: Vec<Option<(&'static str, String)>> = vec![None; n];
    for i in 0..n {
        for j in 0..n {
            let out_of_play = |l: &ListenerModel| l.rejected.is_some() || l.conflict.is_some();
            if i == j || out_of_play(&listeners[i]) || out_of_play(&listeners[j]) {
                continue;
            }
            if let Some(reason) = conflict_between(&listeners[i], &listeners[j])
                && found[i].is_none()
            {
                found[i] = Some((
                    reason,
                    format!(
                        "listener {:?} cannot be told apart from listener {:?} on port {}",
                        listeners[i].name, listeners[j].name, listeners[i].port
                    ),
                ));
            }
        }
    }
    for (l, f) in listeners.iter_mut().zip(found) {
        if l.conflict.is_none() {
            l.conflict = f;
        }
    }
}

/// Marks listeners that conflict with an already accepted listener of a
/// Gateway or ListenerSet that takes precedence (GEP-1713: the earlier one
/// wins).
pub(crate) fn mark_conflict_with_accepted(listener: &mut ListenerModel, accepted: &[&ListenerModel]) {
    if listener.rejected.is_some() || listener.conflict.is_some() {
        return;
    }
    for other in accepted {
        if let Some(reason) = conflict_between(listener, other) {
            listener.conflict = Some((
                reason,
                format!(
                    "listener {:?} conflicts with listener {:?} {}, which takes precedence",
                    listener.name,
                    other.name,
                    match &other.owner {
                        ListenerOwner::Gateway => "of the parent Gateway".to_string(),
                        ListenerOwner::ListenerSet(key) => format!("of the older ListenerSet {key}"),
                    }
                ),
            ));
            return;
        }
    }
}
