//! The admin surface under `/_double/` (for tests that run the binary, and
//! for humans), the TokenRequest/TokenReview handlers, and the synchronous
//! store operations the [`crate::ApiServer`] handle offers. Admin requests
//! are neither recorded nor subject to faults.

use crate::error::ApiError;
use crate::faults::Scope;
use crate::registry::ResourceType;
use crate::server::{Body, Shared, error_response, json_response};
use crate::store::{DeleteOpts, DeleteResult, WriteCtx, at_version, key};
use crate::util;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

impl Shared {
    /// Finds the resource type and version for an apiVersion and kind.
    pub fn resolve(&self, api_version: &str, kind: &str) -> Result<(Arc<ResourceType>, String), ApiError> {
        let (g, v) = util::split_api_version(api_version);
        let st = self.lock();
        let rt = st.registry.by_kind(g, kind).filter(|t| t.version(v).is_some()).cloned().ok_or_else(|| {
            ApiError::new(404, "NotFound", format!("no matches for kind \"{kind}\" in version \"{api_version}\""))
        })?;
        Ok((rt, v.to_string()))
    }

    pub fn direct_get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
        let (rt, v) = self.resolve(api_version, kind)?;
        let st = self.lock();
        Ok(st.lookup(&rt.key(), ns, name).map(|o| at_version(o, &rt.api_version(&v))))
    }

    pub fn direct_list(&self, api_version: &str, kind: &str, ns: Option<&str>) -> Result<Vec<Value>, ApiError> {
        let (rt, v) = self.resolve(api_version, kind)?;
        let st = self.lock();
        Ok(st.objects_in(&rt.key(), ns).map(|o| at_version(o, &rt.api_version(&v))).collect())
    }

    fn commit_loop<F>(&self, mut f: F) -> Result<Value, ApiError>
    where
        F: FnMut(&crate::store::State) -> Result<crate::store::Prepared, ApiError>,
    {
        for _ in 0..8 {
            let mut st = self.lock();
            let p = f(&st)?;
            if let Some(v) = st.commit(p)? {
                return Ok(v);
            }
        }
        Err(ApiError::internal("object kept changing"))
    }

    fn target(&self, obj: &Value) -> Result<(Arc<ResourceType>, String, String, String), ApiError> {
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let (rt, v) = self.resolve(av, kind)?;
        let ns = if rt.namespaced {
            match util::namespace_of(obj) {
                "" => "default".to_string(),
                n => n.to_string(),
            }
        } else {
            String::new()
        };
        Ok((rt, v, ns, util::name_of(obj).to_string()))
    }

    pub fn direct_create(&self, obj: Value, manager: &str) -> Result<Value, ApiError> {
        let (rt, v, ns, _) = self.target(&obj)?;
        self.commit_loop(|st| st.prepare_create(&rt, &v, &ns, obj.clone(), &mut WriteCtx::new("kube-double", manager)))
    }

    pub fn direct_update(&self, obj: Value, subresource: &str, manager: &str) -> Result<Value, ApiError> {
        let (rt, v, ns, name) = self.target(&obj)?;
        self.commit_loop(|st| {
            st.prepare_update(&rt, &v, &ns, &name, subresource, obj.clone(), &mut WriteCtx::new("kube-double", manager))
        })
    }

    pub fn direct_apply(&self, obj: Value, manager: &str, force: bool, subresource: &str) -> Result<Value, ApiError> {
        let (rt, v, ns, name) = self.target(&obj)?;
        let body = serde_json::to_vec(&obj).unwrap_or_default();
        self.commit_loop(|st| {
            st.prepare_apply(&rt, &v, &ns, &name, subresource, &body, force, &mut WriteCtx::new("kube-double", manager))
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn direct_patch(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        subresource: &str,
        content_type: &str,
        patch: &Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let (rt, v) = self.resolve(api_version, kind)?;
        let body = serde_json::to_vec(patch).unwrap_or_default();
        self.commit_loop(|st| {
            st.prepare_patch(
                &rt,
                &v,
                ns,
                name,
                subresource,
                content_type,
                &body,
                &mut WriteCtx::new("kube-double", manager),
            )
        })
    }

    pub fn direct_delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let (rt, v) = self.resolve(api_version, kind)?;
        let mut st = self.lock();
        Ok(match st.delete(&rt, &v, ns, name, &DeleteOpts::default())? {
            DeleteResult::Deleted(_) => None,
            DeleteResult::Pending(o) => Some(o),
        })
    }

    /// Issues a ServiceAccount token (the SA's uid when it exists).
    pub fn issue_token(
        &self,
        ns: &str,
        sa: &str,
        audiences: &[String],
        expiration: Duration,
        pod: Option<(&str, &str)>,
    ) -> (String, u64) {
        let sa_uid = {
            let st = self.lock();
            st.lookup(&key("", "serviceaccounts"), ns, sa)
                .map(|o| util::uid_of(o).to_string())
                .unwrap_or_else(util::new_uid)
        };
        self.issuer.issue(ns, sa, &sa_uid, audiences, expiration, pod)
    }
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// `POST .../serviceaccounts/{name}/token` (TokenRequest), JSON or protobuf.
pub fn token_request(shared: &Shared, _rt: &ResourceType, ns: &str, sa: &str, body: &[u8]) -> Result<Value, ApiError> {
    let req: Value = if body.is_empty() {
        json!({})
    } else if crate::protobuf::is_protobuf(body) {
        crate::protobuf::decode(body)?
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid TokenRequest: {e}")))?
    };
    let gr = crate::error::GroupResource { group: "", resource: "serviceaccounts" };
    {
        let st = shared.lock();
        if st.lookup(&key("", "serviceaccounts"), ns, sa).is_none() {
            return Err(ApiError::not_found(&gr, sa));
        }
    }
    let exp = req.pointer("/spec/expirationSeconds").and_then(Value::as_u64).unwrap_or(3600);
    if exp < 600 {
        return Err(ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            sa,
            vec![crate::error::FieldError::invalid(
                "spec.expirationSeconds",
                &json!(exp),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let audiences = strs(req.pointer("/spec/audiences"));
    let mut pod = None;
    if let Some(bound) = req.pointer("/spec/boundObjectRef").filter(|b| !b.is_null()) {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = bound.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        if kind != "Pod" {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of kind {kind:?}: only Pod is supported by the kube double"
            )));
        }
        let st = shared.lock();
        let p = st
            .lookup(&key("", "pods"), ns, &name)
            .ok_or_else(|| ApiError::not_found(&crate::error::GroupResource { group: "", resource: "pods" }, &name))?;
        let uid = util::uid_of(p).to_string();
        if let Some(want) = bound.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(ApiError::conflict(
                &gr,
                sa,
                &format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        pod = Some((name, uid));
    }
    let (token, exp_at) = shared.issue_token(
        ns,
        sa,
        &audiences,
        Duration::from_secs(exp),
        pod.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
    );
    let aud = if audiences.is_empty() { vec![shared.issuer.default_audience.clone()] } else { audiences };
    let mut spec = json!({"audiences": aud, "expirationSeconds": exp});
    if let Some(b) = req.pointer("/spec/boundObjectRef").filter(|b| !b.is_null()) {
        spec["boundObjectRef"] = b.clone();
    }
    Ok(json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": sa, "namespace": ns, "creationTimestamp": null},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": util::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(exp_at))},
    }))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub fn token_review(shared: &Shared, body: &[u8]) -> Result<Value, ApiError> {
    let req: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid TokenReview: {e}")))?;
    let token = req.pointer("/spec/token").and_then(Value::as_str).unwrap_or("");
    let mut wanted = strs(req.pointer("/spec/audiences"));
    let requested = wanted.clone();
    if wanted.is_empty() {
        wanted = vec![shared.issuer.default_audience.clone()];
    }
    let mut spec = json!({"token": token});
    if !requested.is_empty() {
        spec["audiences"] = json!(requested);
    }
    let result = (|| -> Result<Value, String> {
        let c = shared.issuer.verify(token)?;
        let common: Vec<String> = c.audiences.iter().filter(|a| wanted.contains(a)).cloned().collect();
        if common.is_empty() {
            return Err("[invalid bearer token, token audiences [...] is invalid for the target audiences]"
                .replace("[...]", &format!("{:?}", c.audiences)));
        }
        let st = shared.lock();
        let sa = st
            .lookup(&key("", "serviceaccounts"), &c.namespace, &c.service_account)
            .ok_or_else(|| format!("[invalid bearer token, serviceaccounts \"{}\" not found]", c.service_account))?;
        if util::uid_of(sa) != c.sa_uid {
            return Err(format!(
                "[invalid bearer token, service account UID ({}) does not match claim ({})]",
                util::uid_of(sa),
                c.sa_uid
            ));
        }
        let mut user = json!({
            "username": format!("system:serviceaccount:{}:{}", c.namespace, c.service_account),
            "uid": c.sa_uid,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", c.namespace), "system:authenticated"],
        });
        if let Some((pname, puid)) = &c.pod {
            let pod = st
                .lookup(&key("", "pods"), &c.namespace, pname)
                .ok_or_else(|| format!("[invalid bearer token, pods \"{pname}\" not found]"))?;
            if util::uid_of(pod) != puid {
                return Err(format!(
                    "[invalid bearer token, pod UID ({}) does not match claim ({puid})]",
                    util::uid_of(pod)
                ));
            }
            user["extra"] = json!({
                "authentication.kubernetes.io/pod-name": [pname],
                "authentication.kubernetes.io/pod-uid": [puid],
                "authentication.kubernetes.io/credential-id": [format!("JTI={}", util::new_uid())],
            });
        }
        Ok(json!({"authenticated": true, "user": user, "audiences": common}))
    })();
    let status = match result {
        Ok(s) => s,
        Err(e) => json!({"user": {}, "error": e}),
    };
    Ok(json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
              "metadata": {"creationTimestamp": null}, "spec": spec, "status": status}))
}

fn scope_of(v: &Value) -> Scope {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Scope { user: s("user"), verb: s("verb"), resource: s("resource") }
}

/// `/_double/...`.
pub async fn handle(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    path: &str,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error_response(&ApiError::bad_request(e.to_string())),
    };
    let parsed: Value = if body.is_empty() { json!({}) } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
    if parsed.is_null() {
        return error_response(&ApiError::bad_request("admin requests take a JSON body"));
    }
    match admin(shared, &method, path.trim_start_matches("/_double").trim_matches('/'), query, &parsed) {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

fn admin(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    b: &Value,
) -> Result<(u16, Value), ApiError> {
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    match (method.as_str(), path) {
        ("GET", "recorded") => {
            let r = shared.recorder.lock().unwrap_or_else(|e| e.into_inner()).clone();
            Ok((200, serde_json::to_value(r).unwrap_or_default()))
        }
        ("DELETE", "recorded") => {
            shared.recorder.lock().unwrap_or_else(|e| e.into_inner()).clear();
            Ok((200, json!({})))
        }
        ("POST", "faults") => {
            let code = b.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
            let n = b.get("n").and_then(Value::as_u64).unwrap_or(1) as u32;
            let millis = b.get("millis").and_then(Value::as_u64).unwrap_or(0);
            let scope = scope_of(b);
            let mut f = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
            match s("action").as_str() {
                "drop-watches" => shared.drop_watches(),
                "compact" => shared.lock().compact(),
                "fail-next" => f.fail_next(scope, n, code),
                "fail-nth" => f.fail_nth(scope, n, code),
                "fail-for" => f.fail_for(scope, Duration::from_millis(millis), code),
                "delay" => f.delay(scope, Duration::from_millis(millis)),
                "clear" => f.clear(),
                other => return Err(ApiError::bad_request(format!("unknown fault action {other:?}"))),
            }
            Ok((200, json!({})))
        }
        ("POST", "tokens") => {
            let audiences = strs(b.get("audiences"));
            let exp = b.get("expirationSeconds").and_then(Value::as_u64).unwrap_or(3600);
            let pod = b.get("pod").map(|p| {
                (
                    p.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                    p.get("uid").and_then(Value::as_str).unwrap_or("").to_string(),
                )
            });
            let (token, exp_at) = shared.issue_token(
                &s("namespace"),
                &s("serviceAccount"),
                &audiences,
                Duration::from_secs(exp),
                pod.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
            );
            Ok((200, json!({"token": token, "exp": exp_at})))
        }
        ("POST", "routes") => {
            let addr: std::net::SocketAddr =
                s("address").parse().map_err(|e| ApiError::bad_request(format!("address: {e}")))?;
            let port = b.get("port").and_then(Value::as_u64).unwrap_or(443) as u16;
            shared.lock().routes.insert((s("namespace"), s("name"), port), addr);
            Ok((200, json!({})))
        }
        ("GET", "objects") => {
            let q = |k: &str| query.get(k).cloned().unwrap_or_default();
            if q("name").is_empty() {
                let ns = q("namespace");
                let items =
                    shared.direct_list(&q("apiVersion"), &q("kind"), (!ns.is_empty()).then_some(ns.as_str()))?;
                Ok((200, json!({"items": items})))
            } else {
                match shared.direct_get(&q("apiVersion"), &q("kind"), &q("namespace"), &q("name"))? {
                    Some(o) => Ok((200, o)),
                    None => Err(ApiError::new(404, "NotFound", "not found")),
                }
            }
        }
        ("POST", "objects") => {
            let manager = match s("manager") {
                m if m.is_empty() => "kube-double".to_string(),
                m => m,
            };
            let obj = b.get("object").cloned().unwrap_or(Value::Null);
            let force = b.get("force").and_then(Value::as_bool).unwrap_or(false);
            let sub = s("subresource");
            let v = match s("op").as_str() {
                "create" => shared.direct_create(obj, &manager)?,
                "update" => shared.direct_update(obj, &sub, &manager)?,
                "apply" => shared.direct_apply(obj, &manager, force, &sub)?,
                "patch" => {
                    let ct = match s("patchType").as_str() {
                        "json" => "application/json-patch+json",
                        "strategic" => "application/strategic-merge-patch+json",
                        _ => "application/merge-patch+json",
                    };
                    shared.direct_patch(
                        &s("apiVersion"),
                        &s("kind"),
                        &s("namespace"),
                        &s("name"),
                        &sub,
                        ct,
                        b.get("patch").unwrap_or(&json!({})),
                        &manager,
                    )?
                }
                "delete" => shared
                    .direct_delete(&s("apiVersion"), &s("kind"), &s("namespace"), &s("name"))?
                    .unwrap_or(json!({})),
                other => return Err(ApiError::bad_request(format!("unknown object op {other:?}"))),
            };
            Ok((200, v))
        }
        _ => Err(ApiError::new(404, "NotFound", format!("no admin endpoint {method} /_double/{path}"))),
    }
}
