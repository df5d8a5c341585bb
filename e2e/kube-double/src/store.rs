//! The object store: every object as JSON, indexed by resource type, then
//! namespace/name; a global resourceVersion; a bounded event history per
//! resource type (for watch resumption) and a broadcast channel per type
//! (watch fan-out). All writes go through `prepare_*` (compute the new
//! object, check preconditions, run SSA) and [`State::commit`] (store,
//! emit the event, run the fake controllers).

use crate::error::{ApiError, FieldError};
use crate::fieldset::{Scope, Types};
use crate::registry::{Registry, ResourceType, TypeKey};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::{schema, ssa, util};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// A change to one object. `old` is the previous state (for selector
/// transitions in watches).
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventKind,
    pub object: Arc<Value>,
    pub old: Option<Arc<Value>>,
    /// The watch line of this event as stored, encoded once for all watchers.
    pub encoded: std::sync::OnceLock<bytes::Bytes>,
}

pub type ObjKey = (String, String);

/// The objects, history and watch channel of one resource type.
#[derive(Debug)]
pub struct KindStore {
    pub objects: BTreeMap<ObjKey, Arc<Value>>,
    pub history: VecDeque<Arc<Event>>,
    /// A watch from a resourceVersion below this gets 410 Expired.
    pub floor: u64,
    pub tx: broadcast::Sender<Arc<Event>>,
}

impl KindStore {
    fn new() -> Self {
        KindStore { objects: BTreeMap::new(), history: VecDeque::new(), floor: 0, tx: broadcast::channel(8192).0 }
    }
}

/// `fieldValidation` of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    Strict,
    Warn,
    Ignore,
}

/// Who writes and how.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    pub user: String,
    pub manager: String,
    pub dry_run: bool,
    pub validation: Validation,
    pub warnings: Vec<String>,
}

impl WriteCtx {
    pub fn new(user: &str, manager: &str) -> Self {
        WriteCtx {
            user: user.to_string(),
            manager: manager.to_string(),
            dry_run: false,
            validation: Validation::Warn,
            warnings: vec![],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
}

/// A computed write, not yet stored (admission may still change it).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub rt: Arc<ResourceType>,
    pub version: String,
    pub namespace: String,
    pub name: String,
    pub op: Op,
    pub old: Option<Arc<Value>>,
    pub new: Value,
    pub dry_run: bool,
    pub subresource: String,
    /// The name came from `generateName` (admission sees no name yet).
    pub generated_name: bool,
}

/// Options of a DELETE.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub propagation: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    pub history_limit: usize,
    pub endpointslice_controller: bool,
}

/// Everything behind the server's lock.
#[derive(Debug)]
pub struct State {
    pub rv: u64,
    pub registry: Registry,
    pub kinds: HashMap<TypeKey, KindStore>,
    /// uid → where the object lives.
    pub by_uid: HashMap<String, (TypeKey, ObjKey)>,
    /// owner uid → dependents.
    pub dependents: HashMap<String, BTreeSet<(TypeKey, ObjKey)>>,
    pub opts: StoreOptions,
    pub published_rv: Arc<AtomicU64>,
    pub cluster_ips: BTreeSet<u32>,
    pub node_ports: BTreeSet<u16>,
    /// Where the next ClusterIP / node-port search starts (allocation is
    /// sequential, wrapping, so creating N Services stays linear).
    pub next_ip: u32,
    pub next_node_port: u16,
    /// (namespace, service, port) → address, for webhook `clientConfig.service`.
    pub routes: HashMap<(String, String, u16), std::net::SocketAddr>,
}

pub fn key(group: &str, plural: &str) -> TypeKey {
    (group.to_string(), plural.to_string())
}

impl State {
    pub fn new(opts: StoreOptions, published_rv: Arc<AtomicU64>) -> Self {
        let registry = Registry::with_builtins();
        let mut kinds = HashMap::new();
        for t in registry.all() {
            kinds.insert(t.key(), KindStore::new());
        }
        State {
            rv: 1,
            registry,
            kinds,
            by_uid: HashMap::new(),
            dependents: HashMap::new(),
            opts,
            published_rv,
            cluster_ips: BTreeSet::new(),
            node_ports: BTreeSet::new(),
            next_ip: 10,
            next_node_port: 30000,
            routes: HashMap::new(),
        }
    }

    pub fn types_for(&self, rt: &ResourceType, version: &str) -> Types {
        let schema = rt.versions.iter().find(|v| v.name == version).and_then(|v| v.schema.clone());
        Types { schema, group: rt.group.clone(), kind: rt.kind.clone() }
    }

    pub fn resource(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.registry.get(group, plural).cloned()
    }

    pub fn lookup(&self, key: &TypeKey, ns: &str, name: &str) -> Option<&Arc<Value>> {
        self.kinds.get(key)?.objects.get(&(ns.to_string(), name.to_string()))
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        self.lookup(&rt.key(), ns, name).cloned().ok_or_else(|| ApiError::not_found(&rt.gr(), name))
    }

    /// Objects of a type, optionally in one namespace, in key order.
    pub fn objects_in<'a>(
        &'a self,
        key: &TypeKey,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Value>> + 'a> {
        let Some(ks) = self.kinds.get(key) else { return Box::new(std::iter::empty()) };
        match ns {
            Some(ns) => Box::new(
                ks.objects
                    .range((ns.to_string(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns)
                    .map(|(_, v)| v),
            ),
            None => Box::new(ks.objects.values()),
        }
    }

    /// A page of a list.
    #[allow(clippy::too_many_arguments)]
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let key = rt.key();
        let mut start: Option<ObjKey> = None;
        if let Some(tok) = continue_token.filter(|t| !t.is_empty()) {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(tok)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid: illegal base64 data"))?;
            let rv = raw.get("rv").and_then(Value::as_u64).unwrap_or(0);
            let floor = self.kinds.get(&key).map(|k| k.floor).unwrap_or(0);
            if rv < floor {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            start = Some((
                raw.get("ns").and_then(Value::as_str).unwrap_or("").to_string(),
                raw.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
            ));
        }
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0usize;
        let matches = |o: &Value| labels.matches_object(o) && fields.matches(o);
        let iter: Box<dyn Iterator<Item = (&ObjKey, &Arc<Value>)>> = match self.kinds.get(&key) {
            None => Box::new(std::iter::empty()),
            Some(ks) => match (&start, ns) {
                (Some(s), _) => Box::new(ks.objects.range(s.clone()..).filter(move |(k, _)| *k != s)),
                (None, Some(n)) => Box::new(ks.objects.range((n.to_string(), String::new())..)),
                (None, None) => Box::new(ks.objects.iter()),
            },
        };
        for (k, o) in iter {
            if let Some(n) = ns
                && k.0 != n
            {
                if k.0.as_str() > n {
                    break;
                }
                continue;
            }
            if !matches(o) {
                continue;
            }
            if let Some(l) = limit.filter(|l| *l > 0)
                && items.len() >= l
            {
                if next.is_none() {
                    let last: &Arc<Value> = items.last().expect("nonempty");
                    let tok = json!({"rv": self.rv, "ns": util::namespace_of(last), "name": util::name_of(last)});
                    next = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok.to_string()));
                }
                remaining += 1;
                continue;
            }
            items.push(o.clone());
        }
        Ok(ListPage { items, resource_version: self.rv, continue_token: next, remaining: next_remaining(remaining) })
    }

    // ---------------------------------------------------------------- writes

    fn check_namespace(&self, rt: &ResourceType, ns: &str, op: Op) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        if ns.is_empty() {
            return Err(ApiError::bad_request(
                "the server could not find the requested resource: namespace is required",
            ));
        }
        let nskey = key("", "namespaces");
        match self.lookup(&nskey, "", ns) {
            None => Err(ApiError::not_found(&crate::error::GroupResource { group: "", resource: "namespaces" }, ns)),
            Some(n) if op == Op::Create && n.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    rt.plural, ""
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Prunes an incoming object of a custom resource and applies
    /// `fieldValidation`.
    fn prune_input(
        &self,
        rt: &ResourceType,
        version: &str,
        obj: &mut Value,
        ctx: &mut WriteCtx,
    ) -> Result<(), ApiError> {
        let Some(schema) = rt.versions.iter().find(|v| v.name == version).and_then(|v| v.schema.clone()) else {
            return Ok(());
        };
        let unknown = schema::prune(obj, &schema);
        if unknown.is_empty() {
            return Ok(());
        }
        let msgs: Vec<String> = unknown.iter().map(|u| format!("unknown field \"{u}\"")).collect();
        match ctx.validation {
            Validation::Strict => Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                msgs.join(", "),
                kind = rt.kind
            ))),
            Validation::Warn => {
                ctx.warnings.extend(msgs);
                Ok(())
            }
            Validation::Ignore => Ok(()),
        }
    }

    /// Defaulting and validation of the final object.
    pub fn finish(
        &self,
        rt: &ResourceType,
        version: &str,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        crate::controllers::default_object(rt, obj, old);
        let mut errs = validate_metadata(rt, obj);
        if let Some(schema) = rt.versions.iter().find(|v| v.name == version).and_then(|v| v.schema.clone()) {
            schema::default(obj, &schema);
            errs.extend(schema::validate(obj, &schema));
        }
        if rt.group == "admissionregistration.k8s.io" {
            errs.extend(crate::admission::validate_config(obj));
        }
        if rt.group == "apiextensions.k8s.io"
            && let Err(e) = crate::registry::from_crd(obj)
        {
            errs.extend(e);
        }
        if errs.is_empty() { Ok(()) } else { Err(ApiError::invalid(&rt.kind, &rt.group, util::name_of(obj), errs)) }
    }

    fn write_ctx<'a>(
        &self,
        ctx: &'a WriteCtx,
        rt: &ResourceType,
        version: &str,
        types: &'a Types,
        sub: &'a str,
        scope: Scope,
    ) -> ssa::ApplyRequest<'a> {
        let _ = (rt, version);
        ssa::ApplyRequest {
            manager: &ctx.manager,
            force: false,
            subresource: sub,
            api_version: "",
            scope,
            types,
            now: util::now(),
        }
    }

    pub fn prepare_create(
        &self,
        rt: &Arc<ResourceType>,
        version: &str,
        url_ns: &str,
        mut obj: Value,
        ctx: &mut WriteCtx,
    ) -> Result<Prepared, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request was in an unknown format"));
        }
        check_type_meta(rt, version, &obj)?;
        let ns = self.resolve_namespace(rt, url_ns, &obj)?;
        self.prune_input(rt, version, &mut obj, ctx)?;
        let meta = util::meta_mut(&mut obj);
        if meta.get("resourceVersion").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
        }
        let mut name = meta.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let generated_name = name.is_empty();
        if name.is_empty()
            && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        {
            let prefix: String = prefix.chars().take(58).collect();
            name = format!("{prefix}{}", util::random_suffix(5));
        }
        if name.is_empty() {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                "",
                vec![FieldError::required("metadata.name", "name or generateName is required")],
            ));
        }
        meta.insert("name".into(), Value::String(name.clone()));
        if rt.namespaced {
            meta.insert("namespace".into(), Value::String(ns.clone()));
        } else {
            meta.remove("namespace");
        }
        for f in
            ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "selfLink"]
        {
            meta.remove(f);
        }
        meta.insert("uid".into(), Value::String(util::new_uid()));
        meta.insert("creationTimestamp".into(), Value::String(util::now()));
        obj["apiVersion"] = Value::String(rt.api_version(version));
        obj["kind"] = Value::String(rt.kind.clone());
        if rt.has_status(version) {
            obj.as_object_mut().expect("object").remove("status");
        }
        self.check_namespace(rt, &ns, Op::Create)?;
        if self.lookup(&rt.key(), &ns, &name).is_some() {
            return Err(ApiError::already_exists(&rt.gr(), &name));
        }
        self.finish(rt, version, &mut obj, None)?;
        let types = self.types_for(rt, version);
        let scope = Scope::Main { exclude_status: rt.has_status(version) };
        let mut req = self.write_ctx(ctx, rt, version, &types, "", scope);
        let av = rt.api_version(version);
        req.api_version = &av;
        if obj.pointer("/metadata/managedFields").is_none() {
            ssa::record_update(None, &mut obj, &req);
        }
        Ok(Prepared {
            rt: rt.clone(),
            version: version.to_string(),
            namespace: ns,
            name,
            op: Op::Create,
            old: None,
            new: obj,
            dry_run: ctx.dry_run,
            subresource: String::new(),
            generated_name,
        })
    }

    fn resolve_namespace(&self, rt: &ResourceType, url_ns: &str, obj: &Value) -> Result<String, ApiError> {
        if !rt.namespaced {
            return Ok(String::new());
        }
        let body_ns = util::namespace_of(obj);
        if !body_ns.is_empty() && !url_ns.is_empty() && body_ns != url_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(if url_ns.is_empty() { body_ns.to_string() } else { url_ns.to_string() })
    }

    fn existing(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        self.get(rt, ns, name)
    }

    /// PUT of the main resource or of `/status`.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_update(
        &self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        name: &str,
        subresource: &str,
        mut body: Value,
        ctx: &mut WriteCtx,
    ) -> Result<Prepared, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the body of the request was in an unknown format"));
        }
        check_type_meta(rt, version, &body)?;
        let body_name = util::name_of(&body);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let old = self.existing(rt, ns, name)?;
        check_rv_precondition(rt, name, &body, &old)?;
        self.prune_input(rt, version, &mut body, ctx)?;
        let new = if subresource == "status" {
            let mut n = (*old).clone();
            match body.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    n.as_object_mut().expect("object").remove("status");
                }
            }
            n
        } else {
            let mut n = body;
            carry_server_metadata(&mut n, &old);
            if rt.has_status(version) {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        n.as_object_mut().expect("object").remove("status");
                    }
                }
            }
            n
        };
        self.finish_update(rt, version, ns, name, subresource, old, new, ctx)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_update(
        &self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        name: &str,
        subresource: &str,
        old: Arc<Value>,
        mut new: Value,
        ctx: &mut WriteCtx,
    ) -> Result<Prepared, ApiError> {
        new["apiVersion"] = Value::String(rt.api_version(version));
        new["kind"] = Value::String(rt.kind.clone());
        self.finish(rt, version, &mut new, Some(&old))?;
        let types = self.types_for(rt, version);
        let scope = if subresource == "status" {
            Scope::Status
        } else {
            Scope::Main { exclude_status: rt.has_status(version) }
        };
        let mut req = self.write_ctx(ctx, rt, version, &types, subresource, scope);
        let av = rt.api_version(version);
        req.api_version = &av;
        let explicit_reset =
            new.pointer("/metadata/managedFields").is_some_and(|m| m.as_array().is_some_and(Vec::is_empty));
        if explicit_reset {
            util::meta_mut(&mut new).remove("managedFields");
        } else {
            let at_version = at_version(&old, &rt.api_version(version));
            ssa::record_update(Some(&at_version), &mut new, &req);
        }
        Ok(Prepared {
            rt: rt.clone(),
            version: version.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
            op: Op::Update,
            old: Some(old),
            new,
            dry_run: ctx.dry_run,
            subresource: subresource.to_string(),
            generated_name: false,
        })
    }

    /// PATCH with a merge, JSON or strategic merge patch.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_patch(
        &self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        name: &str,
        subresource: &str,
        content_type: &str,
        body: &[u8],
        ctx: &mut WriteCtx,
    ) -> Result<Prepared, ApiError> {
        let old = self.existing(rt, ns, name)?;
        let base = at_version(&old, &rt.api_version(version));
        let types = self.types_for(rt, version);
        let mut patched = match content_type {
            "application/merge-patch+json" => crate::patch::merge_patch(&base, body)?,
            "application/json-patch+json" => crate::patch::json_patch(&base, body)?,
            "application/strategic-merge-patch+json" => {
                if rt.custom {
                    return Err(ApiError::unsupported_media_type("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".to_string()));
                }
                crate::patch::strategic_merge_patch(&base, body, &types)?
            }
            other => {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                )));
            }
        };
        if !patched.is_object() {
            return Err(ApiError::new(422, "Invalid", "the patch produced an object that is not a JSON object"));
        }
        check_rv_precondition(rt, name, &patched, &old)?;
        self.prune_input(rt, version, &mut patched, ctx)?;
        let new = if subresource == "status" {
            let mut n = (*old).clone();
            match patched.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    n.as_object_mut().expect("object").remove("status");
                }
            }
            n
        } else {
            let mut n = patched;
            carry_server_metadata(&mut n, &old);
            if rt.has_status(version) {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        n.as_object_mut().expect("object").remove("status");
                    }
                }
            }
            n
        };
        self.finish_update(rt, version, ns, name, subresource, old, new, ctx)
    }

    /// Server-side apply (`application/apply-patch+yaml`).
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_apply(
        &self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        name: &str,
        subresource: &str,
        body: &[u8],
        force: bool,
        ctx: &mut WriteCtx,
    ) -> Result<Prepared, ApiError> {
        if ctx.manager.is_empty() {
            return Err(ApiError::bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be set"));
        }
        let mut applied =
            util::parse_json_or_yaml(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !applied.is_object() {
            return Err(ApiError::bad_request("apply body must be an object"));
        }
        if applied.get("apiVersion").and_then(Value::as_str).unwrap_or("").is_empty()
            || applied.get("kind").and_then(Value::as_str).unwrap_or("").is_empty()
        {
            return Err(ApiError::bad_request("invalid object type: apiVersion and kind must be set"));
        }
        check_type_meta(rt, version, &applied)?;
        let body_name = util::name_of(&applied);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if rt.namespaced {
            let body_ns = util::namespace_of(&applied);
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        self.prune_input(rt, version, &mut applied, ctx)?;
        let types = self.types_for(rt, version);
        let scope = if subresource == "status" {
            Scope::Status
        } else {
            Scope::Main { exclude_status: rt.has_status(version) }
        };
        let av = rt.api_version(version);
        let req = ssa::ApplyRequest {
            manager: &ctx.manager,
            force,
            subresource,
            api_version: &av,
            scope,
            types: &types,
            now: util::now(),
        };
        let old = self.lookup(&rt.key(), ns, name).cloned();
        match old {
            None => {
                if subresource == "status" {
                    return Err(ApiError::not_found(&rt.gr(), name));
                }
                if applied.pointer("/metadata/resourceVersion").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                    return Err(ApiError::modified(&rt.gr(), name));
                }
                let mut merged =
                    ssa::apply(&json!({}), &applied, &req).map_err(|c| ssa::conflict_error(&c, &rt.gr(), name))?;
                util::meta_mut(&mut merged).insert("name".into(), Value::String(name.to_string()));
                if rt.namespaced {
                    util::meta_mut(&mut merged).insert("namespace".into(), Value::String(ns.to_string()));
                }
                self.prepare_create(rt, version, ns, merged, ctx)
            }
            Some(old) => {
                check_rv_precondition(rt, name, &applied, &old)?;
                let live = at_version(&old, &av);
                let mut merged =
                    ssa::apply(&live, &applied, &req).map_err(|c| ssa::conflict_error(&c, &rt.gr(), name))?;
                let managed = merged.pointer("/metadata/managedFields").cloned();
                carry_server_metadata(&mut merged, &old);
                match managed {
                    Some(m) => util::meta_mut(&mut merged).insert("managedFields".into(), m),
                    None => util::meta_mut(&mut merged).remove("managedFields"),
                };
                if subresource != "status" && rt.has_status(version) {
                    match old.get("status") {
                        Some(s) => merged["status"] = s.clone(),
                        None => {
                            merged.as_object_mut().expect("object").remove("status");
                        }
                    }
                }
                merged["apiVersion"] = Value::String(av.clone());
                merged["kind"] = Value::String(rt.kind.clone());
                self.finish(rt, version, &mut merged, Some(&old))?;
                Ok(Prepared {
                    rt: rt.clone(),
                    version: version.to_string(),
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    op: Op::Update,
                    old: Some(old),
                    new: merged,
                    dry_run: ctx.dry_run,
                    subresource: subresource.to_string(),
                    generated_name: false,
                })
            }
        }
    }

    /// Stores a prepared write. Returns `Ok(None)` when the object changed
    /// since it was prepared (the caller prepares again).
    pub fn commit(&mut self, p: Prepared) -> Result<Option<Value>, ApiError> {
        let key = p.rt.key();
        let current = self.lookup(&key, &p.namespace, &p.name).cloned();
        match (&p.op, &current, &p.old) {
            (Op::Create, Some(_), _) => return Err(ApiError::already_exists(&p.rt.gr(), &p.name)),
            (Op::Update, None, _) => return Err(ApiError::not_found(&p.rt.gr(), &p.name)),
            (Op::Update, Some(c), Some(o)) if !Arc::ptr_eq(c, o) => return Ok(None),
            _ => {}
        }
        if p.op == Op::Create {
            self.check_namespace(&p.rt, &p.namespace, Op::Create)?;
        }
        let mut new = p.new;
        new["apiVersion"] = Value::String(p.rt.api_version(p.rt.storage_version()));
        if p.rt.group.is_empty() && p.rt.plural == "services" {
            self.allocate_service(&mut new, current.as_deref())?;
        }
        if let Some(old) = &current {
            // Generation: bumped by changes outside metadata (and status, for
            // kinds with a status subresource) and by deletion.
            let gen_old = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
            let exclude_status = p.rt.has_status(&p.version);
            let spec_changed = strip_for_generation(old, exclude_status) != strip_for_generation(&new, exclude_status);
            let deleting = old.pointer("/metadata/deletionTimestamp").is_none()
                && new.pointer("/metadata/deletionTimestamp").is_some();
            let generation = if spec_changed || deleting { gen_old + 1 } else { gen_old };
            util::meta_mut(&mut new).insert("generation".into(), json!(generation));
            if unchanged(old, &new) {
                return Ok(Some(at_version(old, &p.rt.api_version(&p.version))));
            }
        } else {
            util::meta_mut(&mut new).insert("generation".into(), json!(1));
        }
        let finalizing = new.pointer("/metadata/deletionTimestamp").is_some()
            && new.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
        if p.dry_run {
            return Ok(Some(at_version(&new, &p.rt.api_version(&p.version))));
        }
        if finalizing {
            let deleted = self.remove_object(&key, &p.namespace, &p.name);
            return Ok(deleted.map(|d| at_version(&d, &p.rt.api_version(&p.version))));
        }
        let stored = self.put_object(&key, new, current.clone());
        self.after_put(&key, current.as_ref(), &stored);
        Ok(Some(at_version(&stored, &p.rt.api_version(&p.version))))
    }

    /// Writes an object (assigning its resourceVersion) and emits the event.
    pub fn put_object(&mut self, key: &TypeKey, mut obj: Value, old: Option<Arc<Value>>) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        util::meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let ns = util::namespace_of(&obj).to_string();
        let name = util::name_of(&obj).to_string();
        let uid = util::uid_of(&obj).to_string();
        let arc = Arc::new(obj);
        if let Some(o) = &old {
            self.unindex_owners(key, o);
        }
        self.index_owners(key, &arc);
        self.by_uid.insert(uid, (key.clone(), (ns.clone(), name.clone())));
        let limit = self.opts.history_limit.max(1);
        let ks = self.kinds.entry(key.clone()).or_insert_with(KindStore::new);
        ks.objects.insert((ns, name), arc.clone());
        let kind = if old.is_some() { EventKind::Modified } else { EventKind::Added };
        let ev = Arc::new(Event { rv, kind, object: arc.clone(), old, encoded: Default::default() });
        ks.history.push_back(ev.clone());
        while ks.history.len() > limit {
            if let Some(e) = ks.history.pop_front() {
                ks.floor = e.rv;
            }
        }
        let _ = ks.tx.send(ev);
        self.published_rv.store(rv, Ordering::SeqCst);
        arc
    }

    /// Removes an object now (no finalizer check) and emits DELETED; runs
    /// garbage collection for its dependents.
    pub fn remove_object(&mut self, key: &TypeKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        let ks = self.kinds.get_mut(key)?;
        let old = ks.objects.remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let rv = self.rv;
        let mut gone = (*old).clone();
        util::meta_mut(&mut gone).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let gone = Arc::new(gone);
        let limit = self.opts.history_limit.max(1);
        let ev = Arc::new(Event {
            rv,
            kind: EventKind::Deleted,
            object: gone.clone(),
            old: Some(old.clone()),
            encoded: Default::default(),
        });
        ks.history.push_back(ev.clone());
        while ks.history.len() > limit {
            if let Some(e) = ks.history.pop_front() {
                ks.floor = e.rv;
            }
        }
        let _ = ks.tx.send(ev);
        self.published_rv.store(rv, Ordering::SeqCst);
        self.unindex_owners(key, &old);
        self.by_uid.remove(util::uid_of(&old));
        self.after_delete(key, &gone);
        Some(gone)
    }

    fn owner_uids(obj: &Value) -> Vec<String> {
        obj.pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string)).collect())
            .unwrap_or_default()
    }

    fn index_owners(&mut self, key: &TypeKey, obj: &Value) {
        let me = (key.clone(), (util::namespace_of(obj).to_string(), util::name_of(obj).to_string()));
        for uid in Self::owner_uids(obj) {
            self.dependents.entry(uid).or_default().insert(me.clone());
        }
    }

    fn unindex_owners(&mut self, key: &TypeKey, obj: &Value) {
        let me = (key.clone(), (util::namespace_of(obj).to_string(), util::name_of(obj).to_string()));
        for uid in Self::owner_uids(obj) {
            if let Some(set) = self.dependents.get_mut(&uid) {
                set.remove(&me);
                if set.is_empty() {
                    self.dependents.remove(&uid);
                }
            }
        }
    }

    /// DELETE of one object.
    pub fn delete(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<DeleteResult, ApiError> {
        let key = rt.key();
        let obj = self.get(rt, ns, name)?;
        if let Some(uid) = &opts.uid
            && uid != util::uid_of(&obj)
        {
            return Err(ApiError::conflict(
                &rt.gr(),
                name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", util::uid_of(&obj)),
            ));
        }
        if let Some(rv) = &opts.resource_version {
            let cur = util::meta_str(&obj, "resourceVersion").unwrap_or("");
            if rv != cur {
                return Err(ApiError::conflict(
                    &rt.gr(),
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {cur}"
                    ),
                ));
            }
        }
        let av = rt.api_version(version);
        if opts.dry_run {
            return Ok(DeleteResult::Deleted(at_version(&obj, &av)));
        }
        let uid = util::uid_of(&obj).to_string();
        let propagation = opts.propagation.as_deref().unwrap_or("Background");
        match propagation {
            "Orphan" => self.orphan_dependents(&uid),
            "Foreground" => self.delete_dependents_now(&uid),
            _ => {}
        }
        let has_finalizers =
            obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(DeleteResult::Pending(at_version(&obj, &av)));
            }
            let mut n = (*obj).clone();
            let m = util::meta_mut(&mut n);
            m.insert("deletionTimestamp".into(), Value::String(util::now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(1) + 1;
            m.insert("generation".into(), json!(generation));
            let stored = self.put_object(&key, n, Some(obj.clone()));
            self.after_put(&key, Some(&obj), &stored);
            return Ok(DeleteResult::Pending(at_version(&stored, &av)));
        }
        let gone = self.remove_object(&key, ns, name).ok_or_else(|| ApiError::not_found(&rt.gr(), name))?;
        Ok(DeleteResult::Deleted(at_version(&gone, &av)))
    }

    /// Orphan: remove the ownerReferences to `uid` from its dependents.
    fn orphan_dependents(&mut self, uid: &str) {
        let deps: Vec<_> = self.dependents.get(uid).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        for (k, (ns, name)) in deps {
            let Some(d) = self.lookup(&k, &ns, &name).cloned() else { continue };
            let mut n = (*d).clone();
            if let Some(refs) = n.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                if refs.is_empty() {
                    util::meta_mut(&mut n).remove("ownerReferences");
                }
            }
            let stored = self.put_object(&k, n, Some(d.clone()));
            self.after_put(&k, Some(&d), &stored);
        }
    }

    /// Foreground: delete every dependent before the owner.
    fn delete_dependents_now(&mut self, uid: &str) {
        let deps: Vec<_> = self.dependents.get(uid).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        for (k, (ns, name)) in deps {
            self.delete_if_present(&k, &ns, &name);
        }
    }

    /// Deletes an object honouring finalizers (sets deletionTimestamp).
    pub fn delete_if_present(&mut self, k: &TypeKey, ns: &str, name: &str) {
        let Some(rt) = self.registry.get(&k.0, &k.1).cloned() else {
            self.remove_object(k, ns, name);
            return;
        };
        let v = rt.storage_version().to_string();
        let _ = self.delete(&rt, &v, ns, name, &DeleteOpts::default());
    }

    /// Forgets every watch history: watches resuming from an older
    /// resourceVersion get 410 Expired.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.published_rv.store(self.rv, Ordering::SeqCst);
        for ks in self.kinds.values_mut() {
            ks.history.clear();
            ks.floor = self.rv;
        }
    }
}

fn next_remaining(n: usize) -> Option<usize> {
    (n > 0).then_some(n)
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Arc<Value>>,
    /// The list's resourceVersion (the current global one).
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// The result of a DELETE: gone now, or kept by finalizers.
#[derive(Debug)]
pub enum DeleteResult {
    Deleted(Value),
    Pending(Value),
}

/// The object as seen at another version of the same resource (conversion
/// strategy None: only apiVersion changes).
pub fn at_version(obj: &Value, api_version: &str) -> Value {
    let mut o = obj.clone();
    if o.get("apiVersion").and_then(Value::as_str) != Some(api_version) {
        o["apiVersion"] = Value::String(api_version.to_string());
    }
    o
}

fn check_type_meta(rt: &ResourceType, version: &str, obj: &Value) -> Result<(), ApiError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty())
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({})",
            obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
            rt.api_version(version)
        ))
        .with_details(json!({"kind": kind})));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str).filter(|a| !a.is_empty()) {
        let (g, v) = util::split_api_version(av);
        if g != rt.group || rt.version(v).is_none() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.api_version(version)
            )));
        }
    }
    Ok(())
}

fn check_rv_precondition(rt: &ResourceType, name: &str, body: &Value, old: &Value) -> Result<(), ApiError> {
    if let Some(rv) = body.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|s| !s.is_empty())
        && Some(rv) != util::meta_str(old, "resourceVersion")
    {
        return Err(ApiError::modified(&rt.gr(), name));
    }
    Ok(())
}

/// Keeps the fields clients cannot change on update.
fn carry_server_metadata(new: &mut Value, old: &Value) {
    let old_meta = util::meta(old).cloned().unwrap_or_default();
    let m = util::meta_mut(new);
    for f in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(f) {
            Some(v) => {
                m.insert(f.to_string(), v.clone());
            }
            None => {
                m.remove(f);
            }
        }
    }
    match (m.get("managedFields"), old_meta.get("managedFields")) {
        (Some(Value::Array(a)), _) if a.is_empty() => {}
        (_, Some(v)) => {
            m.insert("managedFields".into(), v.clone());
        }
        (_, None) => {
            m.remove("managedFields");
        }
    }
}

fn strip_for_generation(obj: &Value, exclude_status: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if exclude_status {
            m.remove("status");
        }
    }
    o
}

/// Equal but for managedFields timestamps and resourceVersion: a no-op
/// write, which the API server does not persist.
fn unchanged(old: &Value, new: &Value) -> bool {
    fn norm(v: &Value) -> Value {
        let mut o = v.clone();
        let m = util::meta_mut(&mut o);
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf.iter_mut() {
                if let Some(em) = e.as_object_mut() {
                    em.remove("time");
                    em.remove("apiVersion");
                }
            }
        }
        o
    }
    norm(old) == norm(new)
}

const DNS1123_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS1123_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const DNS1035_LABEL: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// Compiled once: metadata validation runs on every write.
fn re(p: &'static str) -> &'static regex::Regex {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<HashMap<&'static str, &'static regex::Regex>>> =
        std::sync::OnceLock::new();
    let mut c = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    c.entry(p).or_insert_with(|| Box::leak(Box::new(regex::Regex::new(p).expect("static regex"))))
}

/// Name and label validation, as the real server does per kind.
pub fn validate_metadata(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = util::name_of(obj);
    let v = Value::String(name.to_string());
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("rbac.authorization.k8s.io", _) => {
            if name.contains('/') || name.contains('%') || name == "." || name == ".." {
                errs.push(FieldError::invalid("metadata.name", &v, "may not contain '/' or '%'"));
            }
        }
        ("", "namespaces") => {
            if name.len() > 63 || !re(DNS1123_LABEL).is_match(name) {
                errs.push(FieldError::invalid("metadata.name", &v, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string()));
            }
        }
        ("", "services") => {
            if name.len() > 63 || !re(DNS1035_LABEL).is_match(name) {
                errs.push(FieldError::invalid("metadata.name", &v, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"));
            }
        }
        _ => {
            if name.len() > 253 || !re(DNS1123_SUBDOMAIN).is_match(name) {
                errs.push(FieldError::invalid("metadata.name", &v, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"));
            }
        }
    }
    let meta = obj.get("metadata");
    for (field, want_object) in
        [("labels", true), ("annotations", true), ("finalizers", false), ("ownerReferences", false)]
    {
        if let Some(v) = meta.and_then(|m| m.get(field)).filter(|v| !v.is_null()) {
            let ok = if want_object { v.is_object() } else { v.is_array() };
            if !ok {
                errs.push(FieldError::type_invalid(
                    &format!("metadata.{field}"),
                    v,
                    if want_object { "must be a map of strings" } else { "must be a list" },
                ));
            }
        }
    }
    if let Some(fins) = meta.and_then(|m| m.get("finalizers")).and_then(Value::as_array) {
        for (i, f) in fins.iter().enumerate() {
            if f.as_str().is_none_or(|s| s.is_empty()) {
                errs.push(FieldError::invalid(&format!("metadata.finalizers[{i}]"), f, "must be a non-empty string"));
            }
        }
    }
    if let Some(refs) = meta.and_then(|m| m.get("ownerReferences")).and_then(Value::as_array) {
        for (i, r) in refs.iter().enumerate() {
            for key in ["apiVersion", "kind", "name", "uid"] {
                if r.get(key).and_then(Value::as_str).is_none_or(|s| s.is_empty()) {
                    errs.push(FieldError::invalid(
                        &format!("metadata.ownerReferences[{i}].{key}"),
                        r.get(key).unwrap_or(&Value::Null),
                        format!("{key} must not be empty"),
                    ));
                }
            }
        }
        if refs.iter().filter(|r| r.get("controller").and_then(Value::as_bool) == Some(true)).count() > 1 {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences",
                &Value::Null,
                "Only one reference can have Controller set to true",
            ));
        }
    }
    let qualified = re(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$");
    if let Some(labels) = util::labels_of(obj) {
        for (k, val) in labels {
            let (prefix, lname) = match k.split_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, k.as_str()),
            };
            let key_ok = lname.len() <= 63
                && qualified.is_match(lname)
                && prefix.is_none_or(|p| p.len() <= 253 && re(DNS1123_SUBDOMAIN).is_match(p));
            if !key_ok {
                errs.push(FieldError::invalid("metadata.labels", &Value::String(k.clone()), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            let s = val.as_str().unwrap_or("");
            if !val.is_string() || s.len() > 63 || (!s.is_empty() && !qualified.is_match(s)) {
                errs.push(FieldError::invalid("metadata.labels", val, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
        }
    }
    if let Some(ann) = obj.pointer("/metadata/annotations").and_then(Value::as_object) {
        for (k, val) in ann {
            if !val.is_string() {
                errs.push(FieldError::invalid(&format!("metadata.annotations.{k}"), val, "must be a string"));
            }
        }
    }
    errs
}

/// Objects of a namespace across every namespaced type (for namespace deletion).
pub fn namespaced_keys(state: &State, ns: &str) -> Vec<(TypeKey, ObjKey)> {
    let mut out = Vec::new();
    for (k, ks) in &state.kinds {
        for ((n, name), _) in ks.objects.range((ns.to_string(), String::new())..) {
            if n != ns {
                break;
            }
            out.push((k.clone(), (n.clone(), name.clone())));
        }
    }
    out
}

pub fn map_of(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}
