//! The fake controllers and defaulting the tests rely on: Service IP and
//! node-port allocation, Pod/Namespace/Service/CRD defaulting, the
//! EndpointSlice controller, the CRD establishing controller (registry
//! updates), the namespace controller (immediate), the ServiceAccount
//! controller (`default` in each namespace) and the garbage collector.

use crate::error::ApiError;
use crate::registry::{ResourceType, TypeKey};
use crate::selectors::LabelSelector;
use crate::store::{State, key};
use crate::util;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Per-kind defaulting, done before admission and validation.
pub fn default_object(rt: &ResourceType, obj: &mut Value, old: Option<&Value>) {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => default_pod(obj, old.is_none()),
        ("", "namespaces") => {
            let name = util::name_of(obj).to_string();
            let m = util::meta_mut(obj);
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            let phase = if obj.pointer("/metadata/deletionTimestamp").is_some() { "Terminating" } else { "Active" };
            if obj.pointer("/status/phase").and_then(Value::as_str) != Some(phase) {
                obj["status"] = json!({"phase": phase});
            }
        }
        ("", "services") => default_service(obj),
        ("", "serviceaccounts") => {}
        ("apps", "deployments") => {
            let spec = obj.as_object_mut().and_then(|o| o.get_mut("spec")).and_then(Value::as_object_mut);
            if let Some(spec) = spec {
                spec.entry("replicas").or_insert(json!(1));
                spec.entry("revisionHistoryLimit").or_insert(json!(10));
                spec.entry("progressDeadlineSeconds").or_insert(json!(600));
                spec.entry("strategy").or_insert(
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                );
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => default_crd(obj, old),
        _ => {}
    }
}

fn default_pod(obj: &mut Value, creating: bool) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let sa = spec
        .get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), Value::String(sa.clone()));
    spec.insert("serviceAccount".into(), Value::String(sa));
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("terminationGracePeriodSeconds").or_insert(json!(30));
    spec.entry("schedulerName").or_insert(json!("default-scheduler"));
    spec.entry("securityContext").or_insert(json!({}));
    spec.entry("enableServiceLinks").or_insert(json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                c.entry("terminationMessagePath").or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                let latest = !image.contains(':') || image.ends_with(":latest");
                c.entry("imagePullPolicy").or_insert(json!(if latest { "Always" } else { "IfNotPresent" }));
                c.entry("resources").or_insert(json!({}));
                if let Some(ps) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ps.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                    }
                }
            }
        }
    }
    if creating {
        let status = obj.as_object_mut().expect("object").entry("status").or_insert(json!({}));
        if let Some(s) = status.as_object_mut() {
            s.entry("phase").or_insert(json!("Pending"));
            s.entry("qosClass").or_insert(json!("BestEffort"));
        }
    }
}

fn default_service(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    spec.entry("type").or_insert(json!("ClusterIP"));
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty != "ExternalName" {
        spec.entry("sessionAffinity").or_insert(json!("None"));
        spec.entry("internalTrafficPolicy").or_insert(json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        spec.entry("externalTrafficPolicy").or_insert(json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        spec.entry("allocateLoadBalancerNodePorts").or_insert(json!(true));
    }
    if let Some(ps) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ps.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert(json!("TCP"));
            if !p.contains_key("targetPort")
                && let Some(port) = p.get("port").cloned()
            {
                p.insert("targetPort".into(), port);
            }
        }
    }
}

/// CRD defaults and the status the establishing controller would write.
fn default_crd(obj: &mut Value, old: Option<&Value>) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    spec.entry("conversion").or_insert(json!({"strategy": "None"}));
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
        names.entry("singular").or_insert(json!(kind.to_lowercase()));
        names.entry("listKind").or_insert(json!(format!("{kind}List")));
    }
    let names = spec.get("names").cloned().unwrap_or(json!({}));
    let storage: Vec<Value> = spec
        .get("versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let mut stored: Vec<Value> =
        old.and_then(|o| o.pointer("/status/storedVersions")).and_then(Value::as_array).cloned().unwrap_or_default();
    for s in storage {
        if !stored.contains(&s) {
            stored.push(s);
        }
    }
    let keep_time = |t: &str| {
        old.and_then(|o| o.pointer("/status/conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(t)))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| Value::String(util::now()))
    };
    obj["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found",
             "lastTransitionTime": keep_time("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": keep_time("Established")},
        ],
        "storedVersions": stored,
    });
}

impl State {
    /// ClusterIP and node-port allocation (10.96.0.0/16, 30000-32767).
    pub fn allocate_service(&mut self, svc: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
        let old_spec = old.and_then(|o| o.get("spec")).cloned().unwrap_or(json!({}));
        let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
        let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
        if ty != "ExternalName" {
            let cur = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("").to_string();
            let ip = if !cur.is_empty() {
                cur
            } else if let Some(o) = old_spec.get("clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                o.to_string()
            } else {
                let base: u32 = (10 << 24) | (96 << 16);
                let start = self.next_ip;
                let n = (start..65534u32)
                    .chain(10..start)
                    .find(|n| !self.cluster_ips.contains(&(base + n)))
                    .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?;
                self.next_ip = if n + 1 >= 65534 { 10 } else { n + 1 };
                self.cluster_ips.insert(base + n);
                std::net::Ipv4Addr::from(base + n).to_string()
            };
            if let Ok(addr) = ip.parse::<std::net::Ipv4Addr>() {
                self.cluster_ips.insert(u32::from(addr));
            }
            spec.insert("clusterIP".into(), Value::String(ip.clone()));
            spec.insert("clusterIPs".into(), json!([ip]));
            spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
            spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            let old_ports = old_spec.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
            if let Some(ps) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ps.iter_mut().filter_map(Value::as_object_mut) {
                    if p.get("nodePort").and_then(Value::as_u64).is_some() {
                        continue;
                    }
                    let port = p.get("port").cloned();
                    let reuse = old_ports
                        .iter()
                        .find(|o| o.get("port") == port.as_ref())
                        .and_then(|o| o.get("nodePort").and_then(Value::as_u64));
                    let np = match reuse {
                        Some(n) => n as u16,
                        None => {
                            let start = self.next_node_port;
                            let n = (start..=32767u16)
                                .chain(30000..start)
                                .find(|n| !self.node_ports.contains(n))
                                .ok_or_else(|| ApiError::internal("failed to allocate a nodePort: range is full"))?;
                            self.next_node_port = if n >= 32767 { 30000 } else { n + 1 };
                            self.node_ports.insert(n);
                            n
                        }
                    };
                    p.insert("nodePort".into(), json!(np));
                }
            }
        }
        Ok(())
    }

    /// Reactions to a stored object.
    pub fn after_put(&mut self, k: &TypeKey, old: Option<&Arc<Value>>, new: &Arc<Value>) {
        match (k.0.as_str(), k.1.as_str()) {
            ("apiextensions.k8s.io", "customresourcedefinitions") => self.register_crd(new),
            ("", "namespaces") if old.is_none() => self.ensure_default_sa(util::name_of(new)),
            ("", "namespaces") if new.pointer("/metadata/deletionTimestamp").is_some() => {
                self.delete_namespace_contents(util::name_of(new));
            }
            ("", "services") | ("", "pods") if self.opts.endpointslice_controller => {
                let ns = util::namespace_of(new).to_string();
                if k.1 == "services" {
                    self.reconcile_slice(&ns, util::name_of(new));
                } else {
                    self.reconcile_slices_for_pod(&ns, old.map(|o| &**o), Some(new));
                }
            }
            _ => {}
        }
        let refs_changed =
            old.map(|o| o.pointer("/metadata/ownerReferences")) != Some(new.pointer("/metadata/ownerReferences"));
        if refs_changed && new.pointer("/metadata/ownerReferences").is_some() {
            self.collect_if_garbage(k, new);
        }
    }

    /// Reactions to a removed object.
    pub fn after_delete(&mut self, k: &TypeKey, gone: &Arc<Value>) {
        match (k.0.as_str(), k.1.as_str()) {
            ("apiextensions.k8s.io", "customresourcedefinitions") => self.unregister_crd(gone),
            ("", "namespaces") => self.delete_namespace_contents(util::name_of(gone)),
            ("", "services") => {
                if let Some(ip) = gone.pointer("/spec/clusterIP").and_then(Value::as_str)
                    && let Ok(a) = ip.parse::<std::net::Ipv4Addr>()
                {
                    self.cluster_ips.remove(&u32::from(a));
                }
                for p in gone.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                        self.node_ports.remove(&(n as u16));
                    }
                }
            }
            ("", "pods") if self.opts.endpointslice_controller => {
                self.reconcile_slices_for_pod(util::namespace_of(gone), Some(gone), None);
            }
            _ => {}
        }
        // Garbage collection: dependents whose every owner is gone.
        let uid = util::uid_of(gone).to_string();
        let deps: Vec<_> = self.dependents.get(&uid).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        for (dk, (ns, name)) in deps {
            if let Some(d) = self.lookup(&dk, &ns, &name).cloned() {
                self.collect_if_garbage(&dk, &d);
            }
        }
    }

    /// Deletes a dependent whose ownerReferences all point to absent (or
    /// invalid, e.g. cross-namespace) owners, with an
    /// `OwnerRefInvalidNamespace` Event for the invalid ones, as the GC does.
    fn collect_if_garbage(&mut self, k: &TypeKey, obj: &Arc<Value>) {
        let Some(refs) = obj.pointer("/metadata/ownerReferences").and_then(Value::as_array) else { return };
        if refs.is_empty() || obj.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let dep_ns = util::namespace_of(obj).to_string();
        let mut invalid = Vec::new();
        for r in refs {
            let uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
            if let Some((ok, (owner_ns, _))) = self.by_uid.get(uid) {
                let owner_namespaced = self.registry.get(&ok.0, &ok.1).is_some_and(|t| t.namespaced);
                let valid = if owner_namespaced { !dep_ns.is_empty() && *owner_ns == dep_ns } else { true };
                if valid {
                    return;
                }
                invalid.push(r.clone());
            }
        }
        for r in &invalid {
            self.record_gc_event(obj, r);
        }
        let name = util::name_of(obj).to_string();
        self.delete_if_present(k, &dep_ns, &name);
    }

    fn record_gc_event(&mut self, obj: &Value, owner_ref: &Value) {
        let ns = match util::namespace_of(obj) {
            "" => "default".to_string(),
            n => n.to_string(),
        };
        let s = |k: &str| owner_ref.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let message = format!(
            "ownerRef [{}, Kind={}, Namespace={}, Name={}, UID={}] does not exist in namespace \"{}\"",
            s("apiVersion"),
            s("kind"),
            util::namespace_of(obj),
            s("name"),
            s("uid"),
            util::namespace_of(obj)
        );
        let now = util::now();
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.{}", util::name_of(obj), util::random_suffix(10)), "namespace": ns,
                         "uid": util::new_uid(), "creationTimestamp": now, "generation": 1},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": util::name_of(obj),
                               "namespace": util::namespace_of(obj), "uid": util::uid_of(obj)},
            "reason": "OwnerRefInvalidNamespace", "message": message, "type": "Warning",
            "source": {"component": "garbage-collector-controller"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": "garbage-collector-controller", "reportingInstance": "",
        });
        if self.lookup(&key("", "namespaces"), "", &ns).is_some() {
            self.put_object(&key("", "events"), ev, None);
        }
    }

    fn ensure_default_sa(&mut self, ns: &str) {
        let k = key("", "serviceaccounts");
        if self.lookup(&k, ns, "default").is_some() {
            return;
        }
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": ns, "uid": util::new_uid(), "creationTimestamp": util::now(), "generation": 1}});
        self.put_object(&k, sa, None);
    }

    fn delete_namespace_contents(&mut self, ns: &str) {
        for (k, (n, name)) in crate::store::namespaced_keys(self, ns) {
            self.remove_object(&k, &n, &name);
        }
        let nsk = key("", "namespaces");
        if let Some(obj) = self.lookup(&nsk, "", ns).cloned()
            && obj.pointer("/metadata/deletionTimestamp").is_some()
        {
            self.remove_object(&nsk, "", ns);
        }
    }

    fn register_crd(&mut self, crd: &Value) {
        let Ok(rt) = crate::registry::from_crd(crd) else { return };
        if crd.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let k = rt.key();
        self.kinds.entry(k).or_insert_with(|| crate::store::KindStore {
            objects: Default::default(),
            history: Default::default(),
            floor: 0,
            tx: tokio::sync::broadcast::channel(8192).0,
        });
        self.registry.insert(rt);
    }

    fn unregister_crd(&mut self, crd: &Value) {
        let Ok(rt) = crate::registry::from_crd(crd) else { return };
        let k = rt.key();
        let names: Vec<_> = self.kinds.get(&k).map(|ks| ks.objects.keys().cloned().collect()).unwrap_or_default();
        for (ns, name) in names {
            self.remove_object(&k, &ns, &name);
        }
        self.kinds.remove(&k);
        self.registry.remove(&k);
    }

    // ------------------------------------------------------ EndpointSlices

    fn reconcile_slices_for_pod(&mut self, ns: &str, old: Option<&Value>, new: Option<&Value>) {
        let svc_key = key("", "services");
        let services: Vec<(String, Value)> = self
            .objects_in(&svc_key, Some(ns))
            .filter_map(|s| {
                let sel = s.pointer("/spec/selector")?.as_object()?;
                let matches = |p: Option<&Value>| p.is_some_and(|p| selector_matches(sel, p));
                (matches(old) || matches(new)).then(|| (util::name_of(s).to_string(), (**s).clone()))
            })
            .collect();
        for (name, _) in services {
            self.reconcile_slice(ns, &name);
        }
    }

    /// Keeps the one EndpointSlice of a Service in line with its pods.
    pub fn reconcile_slice(&mut self, ns: &str, svc_name: &str) {
        let svc_key = key("", "services");
        let slice_key = key("discovery.k8s.io", "endpointslices");
        let Some(svc) = self.lookup(&svc_key, ns, svc_name).cloned() else { return };
        let slice_name = format!("{svc_name}-{}", util::stable_suffix(util::uid_of(&svc), 5));
        let selector = svc.pointer("/spec/selector").and_then(Value::as_object).filter(|s| !s.is_empty()).cloned();
        let existing = self.lookup(&slice_key, ns, &slice_name).cloned();
        let Some(selector) = selector else {
            if existing.is_some() {
                self.remove_object(&slice_key, ns, &slice_name);
            }
            return;
        };
        let pods: Vec<Arc<Value>> = self
            .objects_in(&key("", "pods"), Some(ns))
            .filter(|p| selector_matches(&selector, p) && p.pointer("/status/podIP").and_then(Value::as_str).is_some())
            .cloned()
            .collect();
        let mut endpoints = Vec::new();
        for p in &pods {
            let ready = p
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Ready")))
                .and_then(|c| c.get("status").and_then(Value::as_str))
                == Some("True");
            let terminating = p.pointer("/metadata/deletionTimestamp").is_some();
            let mut ep = json!({
                "addresses": [p.pointer("/status/podIP")],
                "conditions": {"ready": ready && !terminating, "serving": ready, "terminating": terminating},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": util::name_of(p), "uid": util::uid_of(p)},
            });
            if let Some(node) = p.pointer("/spec/nodeName") {
                ep["nodeName"] = node.clone();
            }
            endpoints.push(ep);
        }
        let mut ports = Vec::new();
        for sp in svc.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
            let target = sp.get("targetPort").cloned().or_else(|| sp.get("port").cloned()).unwrap_or(Value::Null);
            let resolved = match &target {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => {
                    s.parse::<u64>().ok().or_else(|| pods.iter().find_map(|p| named_container_port(p, s)))
                }
                _ => None,
            };
            let mut port = json!({
                "name": sp.get("name").cloned().unwrap_or(json!("")),
                "protocol": sp.get("protocol").cloned().unwrap_or(json!("TCP")),
            });
            if let Some(r) = resolved {
                port["port"] = json!(r);
            }
            if let Some(ap) = sp.get("appProtocol") {
                port["appProtocol"] = ap.clone();
            }
            ports.push(port);
        }
        let desired_labels = json!({
            "kubernetes.io/service-name": svc_name,
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        });
        let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": svc_name, "uid": util::uid_of(&svc),
                            "controller": true, "blockOwnerDeletion": true}]);
        if let Some(cur) = &existing
            && cur.get("endpoints").unwrap_or(&json!([])) == &Value::Array(endpoints.clone())
            && cur.get("ports") == Some(&Value::Array(ports.clone()))
            && cur.pointer("/metadata/labels") == Some(&desired_labels)
            && cur.pointer("/metadata/ownerReferences") == Some(&owner)
        {
            return;
        }
        let mut slice = match &existing {
            Some(c) => (**c).clone(),
            None => json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice_name, "namespace": ns, "generateName": format!("{svc_name}-"),
                             "uid": util::new_uid(), "creationTimestamp": util::now(), "generation": 1},
            }),
        };
        slice["addressType"] = json!("IPv4");
        slice["endpoints"] = Value::Array(endpoints);
        slice["ports"] = Value::Array(ports);
        let m = util::meta_mut(&mut slice);
        m.insert("labels".into(), desired_labels);
        m.insert("ownerReferences".into(), owner);
        let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(0) + i64::from(existing.is_some());
        m.insert("generation".into(), json!(generation.max(1)));
        let types =
            crate::fieldset::Types { schema: None, group: "discovery.k8s.io".into(), kind: "EndpointSlice".into() };
        let req = crate::ssa::ApplyRequest {
            manager: "kube-controller-manager",
            force: false,
            subresource: "",
            api_version: "discovery.k8s.io/v1",
            scope: crate::fieldset::Scope::Main { exclude_status: false },
            types: &types,
            now: util::now(),
        };
        crate::ssa::record_update(existing.as_deref(), &mut slice, &req);
        let stored = self.put_object(&slice_key, slice, existing.clone());
        let _ = stored;
    }
}

fn selector_matches(sel: &Map<String, Value>, obj: &Value) -> bool {
    let labels = util::labels_of(obj);
    sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn named_container_port(pod: &Value, name: &str) -> Option<u64> {
    pod.pointer("/spec/containers")?.as_array()?.iter().find_map(|c| {
        c.get("ports")?.as_array()?.iter().find_map(|p| {
            (p.get("name").and_then(Value::as_str) == Some(name))
                .then(|| p.get("containerPort").and_then(Value::as_u64))?
        })
    })
}

/// Whether a webhook's selector (structured) matches labels.
pub fn structured_matches(sel: Option<&Value>, labels: Option<&Map<String, Value>>) -> Result<bool, String> {
    Ok(LabelSelector::from_structured(sel)?.matches(labels))
}
