//! Mutating admission: the MutatingWebhookConfigurations whose rules match
//! a write are called in order (configurations by name, then webhook
//! order), each with an AdmissionReview v1 over HTTPS, the server
//! certificate verified against `caBundle` for the server name
//! `<service>.<namespace>.svc` (or the URL's host). `clientConfig.service`
//! is reached through the address registered with `route_service`.
//! `matchConditions` are not evaluated (treated as true) and
//! `reinvocationPolicy` is ignored (no reinvocation).

use crate::error::ApiError;
use crate::store::{Prepared, State, key};
use crate::util;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Validation of Mutating/ValidatingWebhookConfigurations, as the API
/// server does it for admissionregistration.k8s.io/v1 (the fields the
/// double relies on when calling webhooks).
pub fn validate_config(obj: &Value) -> Vec<crate::error::FieldError> {
    use crate::error::FieldError;
    let mut errs = Vec::new();
    let hooks = obj.get("webhooks").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut names = Vec::new();
    for (i, wh) in hooks.iter().enumerate() {
        let f = |x: &str| format!("webhooks[{i}].{x}");
        let name = wh.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required(&f("name"), ""));
        } else if names.contains(&name) {
            errs.push(FieldError {
                reason: "FieldValueDuplicate",
                field: f("name"),
                value: None,
                detail: format!("Duplicate value: \"{name}\""),
            });
        } else if name.split('.').count() < 3 {
            errs.push(FieldError::invalid(
                &f("name"),
                &json!(name),
                "should be a domain with at least three segments separated by dots",
            ));
        }
        names.push(name);
        match wh.get("sideEffects").and_then(Value::as_str) {
            Some("None" | "NoneOnDryRun") => {}
            Some(other) => errs.push(FieldError::not_supported(
                &f("sideEffects"),
                &json!(other),
                &[json!("None"), json!("NoneOnDryRun")],
            )),
            None => errs.push(FieldError::required(&f("sideEffects"), "must specify one of None, NoneOnDryRun")),
        }
        let versions = strs(wh.get("admissionReviewVersions"));
        if versions.is_empty() {
            errs.push(FieldError::required(&f("admissionReviewVersions"), "must specify one of v1, v1beta1"));
        } else if !versions.iter().any(|v| v == "v1" || v == "v1beta1") {
            errs.push(FieldError::invalid(
                &f("admissionReviewVersions"),
                &json!(versions),
                "must include at least one of v1, v1beta1",
            ));
        }
        let cc = wh.get("clientConfig").cloned().unwrap_or(json!({}));
        match (cc.get("url"), cc.get("service")) {
            (Some(_), Some(_)) => {
                errs.push(FieldError::invalid(&f("clientConfig"), &cc, "exactly one of url or service is required"))
            }
            (None, None) => {
                errs.push(FieldError::required(&f("clientConfig"), "exactly one of url or service is required"))
            }
            (Some(u), None) if !u.as_str().is_some_and(|u| u.starts_with("https://")) => {
                errs.push(FieldError::invalid(&f("clientConfig.url"), u, "'https' is the only allowed URL scheme"))
            }
            _ => {}
        }
        if let Some(t) = wh.get("timeoutSeconds").and_then(Value::as_i64)
            && !(1..=30).contains(&t)
        {
            errs.push(FieldError::invalid(
                &f("timeoutSeconds"),
                &json!(t),
                "the timeout value must be between 1 and 30 seconds",
            ));
        }
        if let Some(fp) = wh.get("failurePolicy").and_then(Value::as_str)
            && fp != "Fail"
            && fp != "Ignore"
        {
            errs.push(FieldError::not_supported(&f("failurePolicy"), &json!(fp), &[json!("Fail"), json!("Ignore")]));
        }
    }
    errs
}

/// One webhook to call.
#[derive(Debug, Clone)]
pub struct Call {
    pub name: String,
    pub addr: Result<SocketAddr, String>,
    pub server_name: String,
    pub path: String,
    /// What the error message calls the URL.
    pub url: String,
    pub ca_pem: Vec<u8>,
    pub timeout: Duration,
    pub fail_closed: bool,
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn any_matches(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

fn rule_matches(
    rule: &Value,
    op: &str,
    group: &str,
    version: &str,
    resource: &str,
    sub: &str,
    namespaced: bool,
) -> bool {
    let resources = strs(rule.get("resources"));
    let res_ok = resources.iter().any(|r| {
        let (rr, rs) = r.split_once('/').unwrap_or((r.as_str(), ""));
        let main_ok = rr == "*" || rr == resource;
        let sub_ok = if sub.is_empty() { rs.is_empty() } else { rs == "*" || rs == sub };
        main_ok && sub_ok
    });
    let scope = rule.get("scope").and_then(Value::as_str).unwrap_or("*");
    let scope_ok = scope == "*" || (scope == "Namespaced") == namespaced;
    any_matches(&strs(rule.get("operations")), op)
        && any_matches(&strs(rule.get("apiGroups")), group)
        && any_matches(&strs(rule.get("apiVersions")), version)
        && res_ok
        && scope_ok
}

/// The webhooks a write must go through, in calling order.
pub fn plan(state: &State, p: &Prepared, op: &str, object: Option<&Value>) -> Result<Vec<Call>, ApiError> {
    let mut configs: Vec<&Arc<Value>> =
        state.objects_in(&key("admissionregistration.k8s.io", "mutatingwebhookconfigurations"), None).collect();
    if configs.is_empty() {
        return Ok(vec![]);
    }
    configs.sort_by(|a, b| util::name_of(a).cmp(util::name_of(b)));
    let ns_labels = if p.rt.namespaced {
        state.lookup(&key("", "namespaces"), "", &p.namespace).and_then(|n| util::labels_of(n)).cloned()
    } else if p.rt.group.is_empty() && p.rt.plural == "namespaces" {
        object.and_then(util::labels_of).cloned()
    } else {
        None
    };
    let mut calls = Vec::new();
    for cfg in configs {
        for wh in cfg.get("webhooks").and_then(Value::as_array).into_iter().flatten() {
            let name = wh.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            let rules = wh.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
            if !rules
                .iter()
                .any(|r| rule_matches(r, op, &p.rt.group, &p.version, &p.rt.plural, &p.subresource, p.rt.namespaced))
            {
                continue;
            }
            if !strs(wh.get("admissionReviewVersions")).iter().any(|v| v == "v1") {
                continue;
            }
            if p.dry_run
                && wh.get("sideEffects").and_then(Value::as_str) != Some("None")
                && wh.get("sideEffects").and_then(Value::as_str) != Some("NoneOnDryRun")
            {
                return Err(ApiError::bad_request(format!("admission webhook \"{name}\" does not support dry run")));
            }
            let ns_sel_applies = p.rt.namespaced || (p.rt.group.is_empty() && p.rt.plural == "namespaces");
            if ns_sel_applies {
                let ok = crate::controllers::structured_matches(wh.get("namespaceSelector"), ns_labels.as_ref())
                    .map_err(ApiError::internal)?;
                if !ok {
                    continue;
                }
            }
            let obj_labels = object.and_then(util::labels_of);
            let old_labels = p.old.as_deref().and_then(util::labels_of);
            let sel = wh.get("objectSelector");
            let obj_ok = crate::controllers::structured_matches(sel, obj_labels).map_err(ApiError::internal)?
                || (old_labels.is_some()
                    && crate::controllers::structured_matches(sel, old_labels).map_err(ApiError::internal)?);
            if !obj_ok {
                continue;
            }
            let cc = wh.get("clientConfig").cloned().unwrap_or(json!({}));
            let ca_pem = cc
                .get("caBundle")
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .unwrap_or_default();
            let (addr, server_name, path, url) = if let Some(u) = cc.get("url").and_then(Value::as_str) {
                let rest = u.strip_prefix("https://").unwrap_or(u);
                let (hostport, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], rest[i..].to_string()),
                    None => (rest, "/".to_string()),
                };
                let (host, port) = match hostport.rsplit_once(':') {
                    Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse::<u16>().unwrap_or(443)),
                    _ => (hostport, 443),
                };
                let host_clean = host.trim_start_matches('[').trim_end_matches(']');
                let ip = if host_clean == "localhost" { Some([127, 0, 0, 1].into()) } else { host_clean.parse().ok() };
                let addr = ip
                    .map(|ip| SocketAddr::new(ip, port))
                    .ok_or_else(|| format!("dial tcp: lookup {host_clean}: no such host"));
                (addr, host_clean.to_string(), path, u.to_string())
            } else if let Some(svc) = cc.get("service") {
                let sns = svc.get("namespace").and_then(Value::as_str).unwrap_or("");
                let sname = svc.get("name").and_then(Value::as_str).unwrap_or("");
                let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443) as u16;
                let path = svc.get("path").and_then(Value::as_str).unwrap_or("/").to_string();
                let addr = state.routes.get(&(sns.to_string(), sname.to_string(), port)).copied().ok_or_else(|| {
                    format!("service \"{sname}\" not found (no route registered with the kube double for {sns}/{sname}:{port})")
                });
                let server_name = format!("{sname}.{sns}.svc");
                let url = format!("https://{server_name}:{port}{path}");
                (addr, server_name, path, url)
            } else {
                (Err("webhook has no clientConfig".to_string()), String::new(), "/".to_string(), String::new())
            };
            let timeout = wh.get("timeoutSeconds").and_then(Value::as_u64).unwrap_or(10).clamp(1, 30);
            let fail_closed = wh.get("failurePolicy").and_then(Value::as_str).unwrap_or("Fail") != "Ignore";
            calls.push(Call {
                name,
                addr,
                server_name,
                path,
                url,
                ca_pem,
                timeout: Duration::from_secs(timeout),
                fail_closed,
            });
        }
    }
    Ok(calls)
}

/// The fixed part of the AdmissionReview request.
pub fn request_base(p: &Prepared, op: &str, user: &str, groups: &[String], manager: &str) -> Value {
    let gvk = json!({"group": p.rt.group, "version": p.version, "kind": p.rt.kind});
    let gvr = json!({"group": p.rt.group, "version": p.version, "resource": p.rt.plural});
    let options_kind = match op {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        _ => "DeleteOptions",
    };
    let mut options = json!({"apiVersion": "meta.k8s.io/v1", "kind": options_kind});
    if !manager.is_empty() && op != "DELETE" {
        options["fieldManager"] = json!(manager);
    }
    let mut r = json!({
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": if p.generated_name { "" } else { p.name.as_str() }, "operation": op,
        "userInfo": {"username": user, "groups": groups},
        "dryRun": p.dry_run, "options": options,
    });
    if p.rt.namespaced {
        r["namespace"] = json!(p.namespace);
    }
    if !p.subresource.is_empty() {
        r["subResource"] = json!(p.subresource);
        r["requestSubResource"] = json!(p.subresource);
    }
    if let Some(old) = &p.old {
        r["oldObject"] = (**old).clone();
    }
    r
}

/// Calls the webhooks in order; returns the (possibly patched) object.
pub async fn run(calls: Vec<Call>, base: Value, mut object: Value, with_object: bool) -> Result<Value, ApiError> {
    for call in calls {
        let uid = util::new_uid();
        let mut request = base.clone();
        request["uid"] = json!(uid);
        request["object"] = if with_object { object.clone() } else { Value::Null };
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
        let outcome = tokio::time::timeout(call.timeout, post(&call, review.to_string().into_bytes())).await;
        let resp = match outcome {
            Ok(Ok(v)) => v,
            other => {
                let why = match other {
                    Ok(Err(e)) => e,
                    _ => "context deadline exceeded".to_string(),
                };
                if call.fail_closed {
                    return Err(call_error(&call, &why));
                }
                tracing::warn!(webhook = %call.name, error = %why, "webhook failed, failurePolicy Ignore");
                continue;
            }
        };
        let response = resp.get("response").cloned().unwrap_or(Value::Null);
        if response.get("uid").and_then(Value::as_str) != Some(uid.as_str()) {
            let e = format!(
                "expected response.uid=\"{uid}\", got \"{}\"",
                response.get("uid").and_then(Value::as_str).unwrap_or("")
            );
            if call.fail_closed {
                return Err(call_error(&call, &e));
            }
            continue;
        }
        if response.get("allowed").and_then(Value::as_bool) != Some(true) {
            let status = response.get("status").cloned().unwrap_or(json!({}));
            let code = status.get("code").and_then(Value::as_u64).filter(|c| *c >= 400).unwrap_or(400) as u16;
            let msg = status.get("message").and_then(Value::as_str).unwrap_or("without explanation");
            let reason = status.get("reason").and_then(Value::as_str).unwrap_or("");
            let mut e =
                ApiError::new(code, reason, format!("admission webhook \"{}\" denied the request: {msg}", call.name));
            if reason.is_empty() {
                e.reason = String::new();
            }
            return Err(e);
        }
        if let Some(patch_b64) = response.get("patch").and_then(Value::as_str) {
            if response.get("patchType").and_then(Value::as_str) != Some("JSONPatch") {
                return Err(ApiError::internal(format!(
                    "Internal error occurred: webhook \"{}\" returned a patch with an unsupported patchType",
                    call.name
                )));
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(patch_b64)
                .map_err(|e| ApiError::internal(format!("Internal error occurred: webhook \"{}\": {e}", call.name)))?;
            let patch: json_patch::Patch = serde_json::from_slice(&raw)
                .map_err(|e| ApiError::internal(format!("Internal error occurred: webhook \"{}\": {e}", call.name)))?;
            json_patch::patch(&mut object, &patch)
                .map_err(|e| ApiError::internal(format!("Internal error occurred: {e}")))?;
        }
    }
    Ok(object)
}

fn call_error(call: &Call, e: &str) -> ApiError {
    ApiError::internal(format!(
        "Internal error occurred: failed calling webhook \"{}\": failed to call webhook: Post \"{}?timeout={}s\": {e}",
        call.name,
        call.url,
        call.timeout.as_secs()
    ))
}

async fn post(call: &Call, body: Vec<u8>) -> Result<Value, String> {
    let addr = call.addr.clone()?;
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject as _;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&call.ca_pem).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = rustls_pki_types::ServerName::try_from(call.server_name.clone()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("dial tcp {addr}: connect: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, tcp).await.map_err(|e| {
        let s = e.to_string();
        if s.contains("UnknownIssuer") || s.contains("invalid peer certificate") {
            format!("tls: failed to verify certificate: x509: certificate signed by unknown authority ({s})")
        } else {
            format!("tls: {s}")
        }
    })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::post(format!("{}?timeout={}s", call.path, call.timeout.as_secs()))
        .header(http::header::HOST, call.server_name.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, */*")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("the server responded with status {}", status.as_u16()));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("failed to decode the AdmissionReview response: {e}"))
}
