//! Gateways and ListenerSets → MeshGateway + MeshGatewayInstance, and their
//! status. Routes attach to the models built here before statuses are
//! emitted, because `attachedRoutes` depends on them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_k8s_api::crds::{
    GatewayAddress, MeshGateway, MeshGatewayConfigSpec, MeshGatewayInstance, MeshGatewayInstanceSpec,
    MeshGatewayListener, MeshGatewaySpec, NamespacedName, PodTemplate, ServiceTemplate, TemplateMetadata,
};
use weft_k8s_api::gateway::listenersets::{ListenerSetStatusListeners, ListenerSetStatusListenersSupportedKinds};
use weft_k8s_api::gateway::{
    GROUP, Gateway, GatewayStatus, GatewayStatusAddresses, GatewayStatusListeners,
    GatewayStatusListenersSupportedKinds, ListenerSet, ListenerSetStatus,
};
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::class::{ClassState, resolve_config};
use super::conditions::{Conditions, reasons, types};
use super::context::{AgeKey, Ctx, age_key};
use super::listeners::{self, ListenerModel, ListenerOwner, listener_spec};
use super::meta::{ObjectRef, generated_meta};
use super::names;
use super::selector::Selector;
use crate::snapshot::ObjectKey;

/// A Gateway of a Weft class, after validation.
#[derive(Debug)]
pub(crate) struct GatewayModel<'a> {
    pub key: ObjectKey,
    pub gateway: &'a Gateway,
    pub mesh: String,
    pub config: MeshGatewayConfigSpec,
    /// Accepted=False for the whole Gateway (class, parameters, addresses,
    /// mesh): reason and message. Routes cannot attach to such a Gateway.
    pub rejected: Option<(&'static str, String)>,
    /// Name of the generated MeshGateway.
    pub mesh_gateway_name: String,
    /// The Gateway's own listeners, in spec order.
    pub listeners: Vec<ListenerModel>,
    /// ListenerSets whose parent is this Gateway, in precedence order.
    pub listener_sets: Vec<ObjectKey>,
}

impl GatewayModel<'_> {
    /// At least one of the Gateway's own listeners can be served.
    pub fn has_valid_listener(&self) -> bool {
        self.listeners.iter().any(ListenerModel::is_valid)
    }
}

/// A ListenerSet whose parent is a Weft Gateway.
#[derive(Debug)]
pub(crate) struct ListenerSetModel<'a> {
    pub listener_set: &'a ListenerSet,
    pub gateway: ObjectKey,
    /// Accepted=False: reason and message.
    pub rejected: Option<(&'static str, String)>,
    pub listeners: Vec<ListenerModel>,
}

impl ListenerSetModel<'_> {
    /// Attached to its Gateway (counted in `attachedListenerSets`).
    pub fn is_accepted(&self) -> bool {
        self.rejected.is_none() && self.listeners.iter().any(ListenerModel::is_valid)
    }
}

/// Every Weft Gateway and ListenerSet, by key.
#[derive(Debug, Default)]
pub(crate) struct GatewayIndex<'a> {
    pub gateways: BTreeMap<ObjectKey, GatewayModel<'a>>,
    pub listener_sets: BTreeMap<ObjectKey, ListenerSetModel<'a>>,
}

impl<'a> GatewayIndex<'a> {
    /// The listeners a route parentRef can see: a Gateway's own listeners,
    /// or a ListenerSet's.
    pub fn listeners(&self, kind: &str, key: &ObjectKey) -> Option<&Vec<ListenerModel>> {
        match kind {
            "Gateway" => self.gateways.get(key).map(|g| &g.listeners),
            "ListenerSet" => self.listener_sets.get(key).map(|l| &l.listeners),
            _ => None,
        }
    }

    /// Mutable [`Self::listeners`].
    pub fn listeners_mut(&mut self, kind: &str, key: &ObjectKey) -> Option<&mut Vec<ListenerModel>> {
        match kind {
            "Gateway" => self.gateways.get_mut(key).map(|g| &mut g.listeners),
            "ListenerSet" => self.listener_sets.get_mut(key).map(|l| &mut l.listeners),
            _ => None,
        }
    }
}

/// Whether the Gateway's proxies are ready, from its MeshGatewayInstance.
fn instance_ready(ctx: &Ctx<'_>, key: &ObjectKey) -> (bool, Vec<GatewayAddress>, Vec<GatewayAddress>) {
    match ctx.snapshot.mesh_gateway_instances.get(key).and_then(|i| i.status.as_ref()) {
        Some(s) => (s.ready_replicas > 0, s.addresses.clone(), s.unusable_addresses.clone()),
        None => (false, Vec::new(), Vec::new()),
    }
}

/// Builds the models of all Weft Gateways and their ListenerSets.
pub(crate) fn build<'a>(ctx: &Ctx<'a>, classes: &BTreeMap<String, ClassState>) -> GatewayIndex<'a> {
    let mut index = GatewayIndex::default();
    for (key, gw) in &ctx.snapshot.gateways {
        let Some(class) = classes.get(&gw.spec.gateway_class_name) else {
            continue;
        };
        index.gateways.insert(key.clone(), build_gateway(ctx, key, gw, class));
    }

    // ListenerSets, grouped by parent and ordered by precedence.
    let mut by_parent: BTreeMap<ObjectKey, Vec<(AgeKey<'_>, ObjectKey)>> = BTreeMap::new();
    for (key, ls) in &ctx.snapshot.listener_sets {
        let p = &ls.spec.parent_ref;
        if p.group.as_deref().is_some_and(|g| g != GROUP) || p.kind.as_deref().is_some_and(|k| k != "Gateway") {
            continue;
        }
        let parent = ObjectKey::new(p.namespace.clone().unwrap_or_else(|| key.namespace.clone()), p.name.clone());
        let Some(gw) = index.gateways.get(&parent) else {
            continue;
        };
        let rejected = if gw.rejected.is_some() {
            Some((reasons::PARENT_NOT_ACCEPTED, format!("parent Gateway {parent} is not accepted")))
        } else if !listener_sets_allowed(ctx, gw, &key.namespace) {
            Some((
                reasons::NOT_ALLOWED,
                format!("Gateway {parent} does not allow ListenerSets from namespace {}", key.namespace),
            ))
        } else {
            None
        };
        let cross_mesh = gw.config.cross_mesh;
        let listeners = ls
            .spec
            .listeners
            .iter()
            .map(|l| {
                let spec = listener_spec!(l);
                let mesh_name = format!("{}/{}/{}", key.namespace, key.name, spec.name);
                listeners::evaluate(
                    ctx,
                    &spec,
                    ListenerOwner::ListenerSet(key.clone()),
                    &key.namespace,
                    mesh_name,
                    cross_mesh,
                )
            })
            .collect();
        by_parent.entry(parent.clone()).or_default().push((age_key(&ls.metadata, key), key.clone()));
        index
            .listener_sets
            .insert(key.clone(), ListenerSetModel { listener_set: ls, gateway: parent, rejected, listeners });
    }

    // Conflicts across a Gateway and its ListenerSets: the Gateway's own
    // listeners take precedence, then ListenerSets from oldest to newest.
    for (parent, mut sets) in by_parent {
        sets.sort();
        let order: Vec<ObjectKey> = sets.into_iter().map(|(_, k)| k).collect();
        let Some(gw) = index.gateways.get_mut(&parent) else {
            continue;
        };
        gw.listener_sets = order.clone();
        let mut accepted: Vec<ListenerModel> =
            gw.listeners.iter().filter(|l| l.rejected.is_none() && l.conflict.is_none()).cloned().collect();
        for ls_key in order {
            let Some(ls) = index.listener_sets.get_mut(&ls_key) else {
                continue;
            };
            if ls.rejected.is_some() {
                continue;
            }
            // First against listeners that take precedence, then among the
            // set's own survivors, where no listener wins over another.
            let refs: Vec<&ListenerModel> = accepted.iter().collect();
            for l in ls.listeners.iter_mut() {
                listeners::mark_conflict_with_accepted(l, &refs);
            }
            listeners::mark_conflicts_within(&mut ls.listeners);
            accepted.extend(ls.listeners.iter().filter(|l| l.rejected.is_none() && l.conflict.is_none()).cloned());
        }
    }
    index
}

fn listener_sets_allowed(ctx: &Ctx<'_>, gw: &GatewayModel<'_>, namespace: &str) -> bool {
    let Some(ns) = gw.gateway.spec.allowed_listeners.as_ref().and_then(|a| a.namespaces.as_ref()) else {
        return false;
    };
    match ns.from.as_ref().map(|f| format!("{f:?}")).as_deref() {
        Some("All") => true,
        Some("Same") => namespace == gw.key.namespace,
        Some("Selector") => {
            let selector = ns
                .selector
                .as_ref()
                .map(|s| Selector {
                    match_labels: s.match_labels.clone().unwrap_or_default(),
                    match_expressions: s
                        .match_expressions
                        .iter()
                        .flatten()
                        .map(|e| super::selector::Requirement {
                            key: e.key.clone(),
                            operator: e.operator.clone(),
                            values: e.values.clone().unwrap_or_default(),
                        })
                        .collect(),
                })
                .unwrap_or_default();
            selector.matches(&ctx.namespace_labels(namespace))
        }
        _ => false,
    }
}

fn build_gateway<'a>(ctx: &Ctx<'a>, key: &ObjectKey, gw: &'a Gateway, class: &ClassState) -> GatewayModel<'a> {
    let mesh = ctx.mesh_of(&gw.metadata, &key.namespace);
    let mut rejected = None;
    let mut config = MeshGatewayConfigSpec::default();
    match class {
        ClassState::Accepted(c) => config = (**c).clone(),
        ClassState::Rejected(msg) => {
            rejected = Some((
                reasons::INVALID_PARAMETERS,
                format!("GatewayClass {:?} is not accepted: {msg}", gw.spec.gateway_class_name),
            ));
        }
    }
    if rejected.is_none()
        && let Some(p) = gw.spec.infrastructure.as_ref().and_then(|i| i.parameters_ref.as_ref())
    {
        // A Gateway may pick other deployment settings, but whether it
        // serves every mesh stays the GatewayClass owner's decision.
        match resolve_config(ctx, &p.group, &p.kind, &p.name, None) {
            Ok(c) if c.cross_mesh != config.cross_mesh => {
                rejected = Some((
                    reasons::INVALID_PARAMETERS,
                    format!(
                        "infrastructure.parametersRef: MeshGatewayConfig {:?} sets crossMesh {}, but only the GatewayClass's config decides crossMesh",
                        p.name, c.cross_mesh
                    ),
                ))
            }
            Ok(c) => {
                config.deployment = c.deployment;
                config.tags.extend(c.tags);
            }
            Err(msg) => rejected = Some((reasons::INVALID_PARAMETERS, format!("infrastructure.parametersRef: {msg}"))),
        }
    }
    if rejected.is_none() && !ctx.mesh_exists(mesh) {
        rejected = Some((
            reasons::INVALID,
            format!("mesh {mesh:?} does not exist; create a Mesh named {mesh:?} or change the weft.io/mesh annotation"),
        ));
    }
    if rejected.is_none() {
        for a in gw.spec.addresses.iter().flatten() {
            let type_ = a.r#type.as_deref().unwrap_or("IPAddress");
            let problem = match (type_, a.value.as_deref()) {
                ("IPAddress", Some(v)) if v.parse::<IpAddr>().is_err() => Some(format!("{v:?} is not an IP address")),
                ("IPAddress" | "Hostname", _) => None,
                (other, _) => Some(format!("address type {other:?} is not supported; use IPAddress or Hostname")),
            };
            if let Some(msg) = problem {
                rejected = Some((reasons::UNSUPPORTED_ADDRESS, msg));
                break;
            }
        }
    }
    let mut models: Vec<ListenerModel> = gw
        .spec
        .listeners
        .iter()
        .map(|l| {
            let spec = listener_spec!(l);
            let name = spec.name.clone();
            listeners::evaluate(ctx, &spec, ListenerOwner::Gateway, &key.namespace, name, config.cross_mesh)
        })
        .collect();
    listeners::mark_conflicts_within(&mut models);
    let mesh_gateway_name = names::object_name(
        &format!("{}.{}", key.name, key.namespace),
        &format!("Gateway/{}/{}", key.namespace, key.name),
        false,
    );
    GatewayModel {
        key: key.clone(),
        gateway: gw,
        mesh: mesh.to_string(),
        config,
        rejected,
        mesh_gateway_name,
        listeners: models,
        listener_sets: Vec::new(),
    }
}

/// Where a generated object's status and output go.
#[derive(Debug, Default)]
pub(crate) struct GatewayOutputs {
    pub mesh_gateways: Vec<MeshGateway>,
    pub instances: Vec<MeshGatewayInstance>,
    pub gateway_statuses: BTreeMap<ObjectKey, GatewayStatus>,
    pub listener_set_statuses: BTreeMap<ObjectKey, ListenerSetStatus>,
}

/// Whether the data plane is ready for the Gateway, and the Programmed
/// condition that follows.
struct Readiness {
    programmed: Result<(), (&'static str, String)>,
    addresses: Vec<GatewayAddress>,
}

fn readiness(ctx: &Ctx<'_>, gw: &GatewayModel<'_>) -> Readiness {
    if let Some((_, msg)) = &gw.rejected {
        return Readiness { programmed: Err((reasons::INVALID, msg.clone())), addresses: Vec::new() };
    }
    if !gw.has_valid_listener() {
        return Readiness { programmed: Err((reasons::INVALID, "no listener is valid".into())), addresses: Vec::new() };
    }
    let (ready, addresses, unusable) = instance_ready(ctx, &gw.key);
    if !ready {
        return Readiness {
            programmed: Err((
                reasons::PENDING,
                format!("waiting for a ready gateway proxy of MeshGatewayInstance {}", gw.key),
            )),
            addresses,
        };
    }
    let requested: Vec<_> = gw.gateway.spec.addresses.iter().flatten().collect();
    for r in &requested {
        let type_ = r.r#type.as_deref().unwrap_or("IPAddress");
        match r.value.as_deref() {
            Some(v) if !v.is_empty() && !addresses.iter().any(|a| a.value == v) => {
                let why = if unusable.iter().any(|u| u.value == v) {
                    "cannot be bound by the gateway proxies"
                } else {
                    "was not assigned to the gateway proxies"
                };
                return Readiness {
                    programmed: Err((
                        reasons::ADDRESS_NOT_USABLE,
                        format!(
                            "requested address {v} {why}; remove it from spec.addresses or make it available to the gateway's nodes"
                        ),
                    )),
                    addresses,
                };
            }
            _ if r.value.as_deref().is_none_or(str::is_empty) && !addresses.iter().any(|a| a.type_ == type_) => {
                return Readiness {
                    programmed: Err((reasons::ADDRESS_NOT_ASSIGNED, format!("no {type_} address was assigned"))),
                    addresses,
                };
            }
            _ => {}
        }
    }
    if addresses.is_empty() {
        return Readiness {
            programmed: Err((reasons::ADDRESS_NOT_ASSIGNED, "the gateway proxies have no address yet".into())),
            addresses,
        };
    }
    Readiness { programmed: Ok(()), addresses }
}

/// Emits the status of every Weft Gateway and ListenerSet, and the generated
/// MeshGateways and MeshGatewayInstances.
pub(crate) fn emit(ctx: &Ctx<'_>, index: &GatewayIndex<'_>, out: &mut GatewayOutputs) {
    for gw in index.gateways.values() {
        let ready = readiness(ctx, gw);
        let generation = gw.gateway.metadata.generation;
        let previous = gw.gateway.status.as_ref();
        let mut c = Conditions::new(previous.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]), ctx.now, generation);
        let invalid: Vec<&str> = gw.listeners.iter().filter(|l| !l.is_valid()).map(|l| l.name.as_str()).collect();
        match &gw.rejected {
            Some((reason, msg)) => c.set(types::ACCEPTED, false, reason, msg.clone()),
            None if !gw.has_valid_listener() => c.set(
                types::ACCEPTED,
                false,
                reasons::LISTENERS_NOT_VALID,
                format!("no listener is valid: {}", invalid.join(", ")),
            ),
            None if invalid.is_empty() => {
                let reserved = reserved_infrastructure_keys(gw.gateway);
                let msg = if reserved.is_empty() {
                    "Gateway is accepted".to_string()
                } else {
                    format!(
                        "Gateway is accepted; infrastructure keys reserved for Weft were not applied: {}",
                        reserved.join(", ")
                    )
                };
                c.set(types::ACCEPTED, true, reasons::ACCEPTED, msg)
            }
            None => c.set(
                types::ACCEPTED,
                true,
                reasons::LISTENERS_NOT_VALID,
                format!("listeners not valid: {}; the others are served", invalid.join(", ")),
            ),
        };
        match &ready.programmed {
            Ok(()) => {
                c.set(types::PROGRAMMED, true, reasons::PROGRAMMED, "gateway proxies are serving the configuration")
            }
            Err((reason, msg)) => c.set(types::PROGRAMMED, false, reason, msg.clone()),
        };
        let prev_listeners = previous.and_then(|s| s.listeners.as_deref()).unwrap_or(&[]);
        let listener_statuses = gw
            .listeners
            .iter()
            .map(|l| {
                let prev =
                    prev_listeners.iter().find(|p| p.name == l.name).map(|p| p.conditions.as_slice()).unwrap_or(&[]);
                GatewayStatusListeners {
                    name: l.name.clone(),
                    attached_routes: l.attached.len() as i32,
                    conditions: listener_conditions(ctx, l, prev, generation, gw.rejected.is_some(), &ready.programmed),
                    supported_kinds: Some(
                        l.kinds
                            .iter()
                            .map(|k| GatewayStatusListenersSupportedKinds {
                                group: Some(GROUP.into()),
                                kind: k.kind().into(),
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        let attached_sets = gw
            .listener_sets
            .iter()
            .filter(|k| index.listener_sets.get(*k).is_some_and(ListenerSetModel::is_accepted))
            .count() as i32;
        out.gateway_statuses.insert(
            gw.key.clone(),
            GatewayStatus {
                addresses: Some(
                    ready
                        .addresses
                        .iter()
                        .map(|a| GatewayStatusAddresses { r#type: Some(a.type_.clone()), value: a.value.clone() })
                        .collect(),
                ),
                attached_listener_sets: Some(attached_sets),
                conditions: Some(c.build()),
                listeners: Some(listener_statuses),
            },
        );

        for ls_key in &gw.listener_sets {
            if let Some(ls) = index.listener_sets.get(ls_key) {
                out.listener_set_statuses.insert(ls_key.clone(), listener_set_status(ctx, ls, &ready.programmed));
            }
        }

        if gw.rejected.is_none() && gw.has_valid_listener() {
            generate(ctx, index, gw, out);
        }
    }
}

fn listener_conditions(
    ctx: &Ctx<'_>,
    l: &ListenerModel,
    previous: &[Condition],
    generation: Option<i64>,
    parent_rejected: bool,
    programmed: &Result<(), (&'static str, String)>,
) -> Vec<Condition> {
    let mut c = Conditions::new(previous, ctx.now, generation);
    match (&l.rejected, &l.conflict) {
        (Some((reason, msg)), _) => c.set(types::ACCEPTED, false, reason, msg.clone()),
        (None, Some((reason, msg))) => c.set(types::ACCEPTED, false, reason, msg.clone()),
        (None, None) => c.set(types::ACCEPTED, true, reasons::ACCEPTED, "listener is accepted"),
    };
    match &l.conflict {
        Some((reason, msg)) => c.set(types::CONFLICTED, true, reason, msg.clone()),
        None => c.set(types::CONFLICTED, false, reasons::NO_CONFLICTS, "no conflicts"),
    };
    match &l.unresolved {
        Some((reason, msgs)) => c.set(types::RESOLVED_REFS, false, reason, msgs.join("; ")),
        None => c.set(types::RESOLVED_REFS, true, reasons::RESOLVED_REFS, "all references resolved"),
    };
    if let Some((reason, msg)) = &l.conflict {
        c.set(types::PROGRAMMED, false, reason, msg.clone());
    } else if parent_rejected {
        c.set(types::PROGRAMMED, false, reasons::INVALID, "the Gateway is not accepted");
    } else if !l.is_valid() {
        c.set(types::PROGRAMMED, false, reasons::INVALID, l.not_served_reason());
    } else {
        match programmed {
            Ok(()) => c.set(types::PROGRAMMED, true, reasons::PROGRAMMED, "listener is served"),
            Err((reasons::PENDING, msg)) => c.set(types::PROGRAMMED, false, reasons::PENDING, msg.clone()),
            Err(_) => c.set(types::PROGRAMMED, true, reasons::PROGRAMMED, "listener is served"),
        };
    }
    c.build()
}

fn listener_set_status(
    ctx: &Ctx<'_>,
    ls: &ListenerSetModel<'_>,
    programmed: &Result<(), (&'static str, String)>,
) -> ListenerSetStatus {
    let generation = ls.listener_set.metadata.generation;
    let previous = ls.listener_set.status.as_ref();
    let mut c = Conditions::new(previous.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]), ctx.now, generation);
    let invalid: Vec<&str> = ls.listeners.iter().filter(|l| !l.is_valid()).map(|l| l.name.as_str()).collect();
    let any_valid = ls.listeners.iter().any(ListenerModel::is_valid);
    match (&ls.rejected, any_valid, invalid.is_empty()) {
        (Some((reason, msg)), _, _) => {
            c.set(types::ACCEPTED, false, reason, msg.clone());
            let programmed_reason =
                if *reason == reasons::PARENT_NOT_ACCEPTED { reasons::PARENT_NOT_PROGRAMMED } else { reason };
            c.set(types::PROGRAMMED, false, programmed_reason, msg.clone());
        }
        (None, false, _) => {
            c.set(types::ACCEPTED, false, reasons::LISTENERS_NOT_VALID, "no listener is valid");
            c.set(types::PROGRAMMED, false, reasons::LISTENERS_NOT_VALID, "no listener is valid");
        }
        (None, true, all_valid) => {
            if all_valid {
                c.set(types::ACCEPTED, true, reasons::ACCEPTED, "ListenerSet is attached");
            } else {
                c.set(
                    types::ACCEPTED,
                    true,
                    reasons::LISTENERS_NOT_VALID,
                    format!("listeners not valid: {}; the others are served", invalid.join(", ")),
                );
            }
            match programmed {
                Err((reasons::PENDING, msg)) => {
                    c.set(types::PROGRAMMED, false, reasons::PARENT_NOT_PROGRAMMED, format!("parent Gateway: {msg}"))
                }
                _ => c.set(types::PROGRAMMED, true, reasons::PROGRAMMED, "listeners are served"),
            };
        }
    }
    let prev_listeners = previous.and_then(|s| s.listeners.as_deref()).unwrap_or(&[]);
    let listeners = ls
        .listeners
        .iter()
        .map(|l| {
            let prev = prev_listeners.iter().find(|p| p.name == l.name).map(|p| p.conditions.as_slice()).unwrap_or(&[]);
            let conditions = if let Some((reason, msg)) = &ls.rejected {
                let mut lc = Conditions::new(prev, ctx.now, generation);
                lc.set(types::ACCEPTED, false, reason, msg.clone());
                lc.set(types::PROGRAMMED, false, reason, msg.clone());
                lc.build()
            } else {
                listener_conditions(ctx, l, prev, generation, false, programmed)
            };
            ListenerSetStatusListeners {
                name: l.name.clone(),
                attached_routes: l.attached.len() as i32,
                conditions,
                supported_kinds: Some(
                    l.kinds
                        .iter()
                        .map(|k| ListenerSetStatusListenersSupportedKinds {
                            group: Some(GROUP.into()),
                            kind: k.kind().into(),
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    ListenerSetStatus { conditions: Some(c.build()), listeners: Some(listeners) }
}

fn is_reserved_key(key: &str) -> bool {
    key.split('/').next().is_some_and(|prefix| prefix == "weft.io" || prefix.ends_with(".weft.io"))
}

/// Infrastructure label and annotation keys Weft does not apply.
fn reserved_infrastructure_keys(gw: &Gateway) -> Vec<String> {
    let infra = gw.spec.infrastructure.as_ref();
    let keys = infra
        .and_then(|i| i.labels.as_ref())
        .into_iter()
        .flatten()
        .chain(infra.and_then(|i| i.annotations.as_ref()).into_iter().flatten())
        .map(|(k, _)| k.clone())
        .filter(|k| is_reserved_key(k));
    keys.collect()
}

/// The MeshGateway and MeshGatewayInstance of an accepted Gateway.
fn generate(ctx: &Ctx<'_>, index: &GatewayIndex<'_>, gw: &GatewayModel<'_>, out: &mut GatewayOutputs) {
    let mut served: Vec<&ListenerModel> = gw.listeners.iter().filter(|l| l.is_valid()).collect();
    for ls_key in &gw.listener_sets {
        if let Some(ls) = index.listener_sets.get(ls_key).filter(|ls| ls.rejected.is_none()) {
            served.extend(ls.listeners.iter().filter(|l| l.is_valid()));
        }
    }
    let mut listeners: Vec<MeshGatewayListener> = served
        .iter()
        .filter_map(|l| {
            Some(MeshGatewayListener {
                name: l.mesh_name.clone(),
                port: l.port,
                protocol: l.mesh_protocol()?,
                hostname: l.hostname.clone(),
                tls: l.tls.clone(),
            })
        })
        .collect();
    listeners.sort_by(|a, b| (a.port, &a.name).cmp(&(b.port, &b.name)));
    let mut ports: Vec<i32> = listeners.iter().map(|l| l.port).collect();
    ports.sort_unstable();
    ports.dedup();

    let origin = ObjectRef::of("gateway.networking.k8s.io/v1", "Gateway", &gw.gateway.metadata, &gw.key);
    let mut mg_meta = generated_meta(&origin, &gw.mesh, None);
    mg_meta.name = Some(gw.mesh_gateway_name.clone());
    mg_meta.owner_references = None; // cluster-scoped: cannot be owned by a namespaced Gateway
    out.mesh_gateways.push(MeshGateway {
        metadata: mg_meta,
        spec: MeshGatewaySpec {
            mesh: gw.mesh.clone(),
            cross_mesh: gw.config.cross_mesh,
            instance: NamespacedName { namespace: gw.key.namespace.clone(), name: gw.key.name.clone() },
            listeners,
        },
        status: None,
    });

    let infra = gw.gateway.spec.infrastructure.as_ref();
    // Keys under weft.io/ drive Weft itself (mesh membership, injection) and
    // are not taken from users; the Gateway's Accepted message says so.
    let unreserved = |m: Option<std::collections::BTreeMap<String, String>>| {
        m.unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !is_reserved_key(k))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let infra_labels = unreserved(infra.and_then(|i| i.labels.clone()));
    let infra_annotations = unreserved(infra.and_then(|i| i.annotations.clone()));
    let mut deployment = gw.config.deployment.clone();
    if gw.config.cross_mesh {
        deployment.service_type = weft_k8s_api::crds::ServiceType::ClusterIP;
    }
    if !infra_labels.is_empty() || !infra_annotations.is_empty() {
        let merge = |m: &mut Option<TemplateMetadata>| {
            let m = m.get_or_insert_with(Default::default);
            m.labels.extend(infra_labels.clone());
            m.annotations.extend(infra_annotations.clone());
        };
        merge(&mut deployment.pod_template.get_or_insert_with(PodTemplate::default).metadata);
        merge(&mut deployment.service_template.get_or_insert_with(ServiceTemplate::default).metadata);
    }
    let mut tags = gw.config.tags.clone();
    tags.insert("gateway.networking.k8s.io/gateway-name".into(), names::label_value(&gw.key.name));
    let mut meta = generated_meta(&origin, &gw.mesh, Some(&gw.key.namespace));
    meta.name = Some(gw.key.name.clone());
    out.instances.push(MeshGatewayInstance {
        metadata: meta,
        spec: MeshGatewayInstanceSpec {
            mesh_gateway: gw.mesh_gateway_name.clone(),
            mesh: gw.mesh.clone(),
            deployment,
            cross_mesh: gw.config.cross_mesh,
            ports,
            addresses: gw
                .gateway
                .spec
                .addresses
                .iter()
                .flatten()
                .map(|a| GatewayAddress {
                    type_: a.r#type.clone().unwrap_or_else(|| "IPAddress".into()),
                    value: a.value.clone().unwrap_or_default(),
                })
                .collect(),
            tags,
        },
        status: None,
    });
    let _ = ctx;
}
