//! The HTTP server: request parsing (the API server's RequestInfo rules),
//! fault injection, recording, and dispatch to discovery, OpenAPI, reads,
//! writes, watches, tokens and the admin surface.

use crate::error::ApiError;
use crate::faults::Faults;
use crate::recorder::Recorded;
use crate::registry::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector, supported_fields};
use crate::store::{DeleteOpts, DeleteResult, Op, Prepared, State, Validation, WriteCtx, at_version};
use crate::tokens::Issuer;
use crate::watch::{WatchParams, partial_metadata};
use crate::{admission, discovery, openapi, util};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// State shared by the server thread and the handle.
#[derive(Debug)]
pub struct Shared {
    pub state: Mutex<State>,
    pub recorder: Mutex<Vec<Recorded>>,
    pub faults: Mutex<Faults>,
    pub drop_tx: tokio::sync::watch::Sender<u64>,
    pub issuer: Issuer,
    pub bookmark_interval: Duration,
    pub addr: SocketAddr,
    pub published_rv: Arc<AtomicU64>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, r: Recorded) {
        self.recorder.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    pub fn drop_watches(&self) {
        self.drop_tx.send_modify(|g| *g += 1);
    }
}

/// Who is calling, from the bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
}

pub fn caller(shared: &Shared, headers: &http::HeaderMap) -> Caller {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let authenticated = vec!["system:authenticated".to_string()];
    match token {
        None | Some("") => Caller { user: "system:anonymous".into(), groups: vec!["system:unauthenticated".into()] },
        Some(t) => {
            if let Some(u) = t.strip_prefix("user:") {
                return Caller { user: u.to_string(), groups: authenticated };
            }
            if let Ok(c) = shared.issuer.verify(t) {
                return Caller {
                    user: format!("system:serviceaccount:{}:{}", c.namespace, c.service_account),
                    groups: vec![
                        "system:serviceaccounts".into(),
                        format!("system:serviceaccounts:{}", c.namespace),
                        "system:authenticated".into(),
                    ],
                };
            }
            let user = if t.len() <= 64 && !t.contains('.') { t.to_string() } else { "system:unknown-token".into() };
            Caller { user, groups: authenticated }
        }
    }
}

/// The parts of a request path, as the API server's RequestInfoFactory.
#[derive(Debug, Clone, Default)]
pub struct ReqInfo {
    pub resource_request: bool,
    pub verb: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub name: String,
    pub subresource: String,
}

pub fn parse_path(method: &Method, path: &str, query: &HashMap<String, String>) -> ReqInfo {
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let mut info = ReqInfo { verb: method.as_str().to_lowercase(), ..Default::default() };
    let rest: &[&str] = match parts.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => {
            info.version = v.to_string();
            rest
        }
        ["apis", g, v, rest @ ..] if !rest.is_empty() => {
            info.group = g.to_string();
            info.version = v.to_string();
            rest
        }
        _ => return info,
    };
    info.resource_request = true;
    let mut cur: &[&str] = rest;
    if cur[0] == "namespaces" && cur.len() > 1 {
        info.namespace = cur[1].to_string();
        if cur.len() > 2 && !matches!(cur[2], "status" | "finalize") {
            cur = &cur[2..];
        }
    }
    info.resource = cur[0].to_string();
    if let Some(n) = cur.get(1) {
        info.name = n.to_string();
    }
    if let Some(s) = cur.get(2) {
        info.subresource = s.to_string();
    }
    if info.resource == "namespaces" {
        info.namespace = String::new();
    }
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    info.verb = match *method {
        Method::GET | Method::HEAD if info.name.is_empty() => if watch { "watch" } else { "list" }.into(),
        Method::GET | Method::HEAD => "get".into(),
        Method::POST => "create".into(),
        Method::PUT => "update".into(),
        Method::PATCH => "patch".into(),
        Method::DELETE if info.name.is_empty() => "deletecollection".into(),
        Method::DELETE => "delete".into(),
        _ => method.as_str().to_lowercase(),
    };
    info
}

pub fn full(code: u16, body: Vec<u8>, content_type: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_str(content_type).expect("content type"));
    r
}

pub fn json_response(code: u16, v: &Value) -> Response<Body> {
    full(code, serde_json::to_vec(v).unwrap_or_default(), "application/json")
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after {
        r.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(s));
    }
    r
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    let mut m = HashMap::new();
    if let Some(q) = q {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            m.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    m
}

/// Serves connections until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = &mut shutdown => return,
        }
    }
}

/// Splits the `/_u/<user>` prefix that kubeconfigs written by the double
/// carry in their server URL: kubectl sends no credentials over plain HTTP
/// (client-go reads auth info only for TLS transports), so the user rides
/// in the path.
fn user_prefix(path: &str) -> (Option<String>, String) {
    if let Some(rest) = path.strip_prefix("/_u/") {
        let (user, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let user = percent_decode(user);
        return (Some(user), tail.to_string());
    }
    (None, path.to_string())
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (path_user, path) = user_prefix(req.uri().path());
    let query = query_map(req.uri().query());
    if path.starts_with("/_double/") || path == "/_double" {
        return crate::admin::handle(&shared, req, &path, &query).await;
    }
    let mut who = caller(&shared, req.headers());
    if let Some(u) = path_user {
        who = Caller { user: u, groups: vec!["system:authenticated".into()] };
    }
    let info = parse_path(req.method(), &path, &query);
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let user_agent =
        req.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let manager = query.get("fieldManager").cloned().unwrap_or_else(|| {
        if info.verb == "patch" && content_type == "application/apply-patch+yaml" {
            String::new()
        } else {
            user_agent.split('/').next().unwrap_or("").chars().take(128).collect()
        }
    });
    let verdict = shared.faults.lock().unwrap_or_else(|e| e.into_inner()).check(&who.user, &info.verb, &info.resource);
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }
    let response = match verdict.fail {
        Some(code) => error_response(&ApiError::for_code(code)),
        None => dispatch(&shared, req, &info, &query, &who, &manager, &content_type, &path).await,
    };
    let recorded_manager =
        if matches!(info.verb.as_str(), "create" | "update" | "patch") { manager } else { String::new() };
    shared.record(Recorded {
        user: who.user,
        verb: if info.resource_request { info.verb.clone() } else { "get".into() },
        group: info.group,
        version: info.version,
        resource: info.resource,
        subresource: info.subresource,
        namespace: info.namespace,
        name: info.name,
        field_manager: recorded_manager,
        content_type,
        code: response.status().as_u16(),
        path,
        user_agent,
        at: SystemTime::now(),
    });
    response
}

fn version_info() -> Value {
    json!({"major": "1", "minor": "32", "gitVersion": "v1.32.5", "gitCommit": "9894294ef13a5b32803e3ca2c0d620a088cc84d1",
           "gitTreeState": "clean", "buildDate": "2025-05-15T09:33:56Z", "goVersion": "go1.23.8", "compiler": "gc",
           "platform": "linux/amd64"})
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    info: &ReqInfo,
    query: &HashMap<String, String>,
    who: &Caller,
    manager: &str,
    content_type: &str,
    path: &str,
) -> Response<Body> {
    if !info.resource_request {
        return non_resource(shared, path);
    }
    let accept = req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let partial = accept.split(',').next().is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let method = req.method().clone();
    let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return error_response(&ApiError::bad_request(format!("reading body: {e}"))),
        }
    } else {
        Bytes::new()
    };
    match resource(shared, info, query, who, manager, content_type, partial, &body).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn non_resource(shared: &Arc<Shared>, path: &str) -> Response<Body> {
    let st = shared.lock();
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let found = match parts.as_slice() {
        ["version"] => Some(version_info()),
        ["healthz"] | ["readyz"] | ["livez"] => return full(200, b"ok".to_vec(), "text/plain"),
        ["api"] => Some(discovery::api_versions(&shared.addr.to_string())),
        ["apis"] => Some(discovery::api_group_list(&st.registry)),
        ["api", v] => discovery::api_resource_list(&st.registry, "", v),
        ["apis", g] => discovery::api_group(&st.registry, g),
        ["apis", g, v] => discovery::api_resource_list(&st.registry, g, v),
        ["openapi", "v3"] => Some(openapi::index(&st.registry)),
        ["openapi", "v3", "api", v] => openapi::document(&st.registry, "", v),
        ["openapi", "v3", "apis", g, v] => openapi::document(&st.registry, g, v),
        _ => None,
    };
    match found {
        Some(v) => json_response(200, &v),
        None => error_response(
            &ApiError::new(404, "NotFound", "the server could not find the requested resource").with_details(
                json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}),
            ),
        ),
    }
}

fn list_response(
    rt: &ResourceType,
    version: &str,
    items: Vec<Value>,
    rv: u64,
    cont: Option<String>,
    remaining: Option<usize>,
    partial: bool,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    if partial {
        let items: Vec<Value> = items.iter().map(partial_metadata).collect();
        json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items})
    } else {
        json!({"kind": rt.list_kind, "apiVersion": rt.api_version(version), "metadata": meta, "items": items})
    }
}

fn validation_of(q: &HashMap<String, String>) -> Result<Validation, ApiError> {
    match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(Validation::Warn),
        Some("Strict") => Ok(Validation::Strict),
        Some("Ignore") => Ok(Validation::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {other}: must be one of Ignore, Warn, or Strict"
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    shared: &Arc<Shared>,
    info: &ReqInfo,
    query: &HashMap<String, String>,
    who: &Caller,
    manager: &str,
    content_type: &str,
    partial: bool,
    body: &Bytes,
) -> Result<Response<Body>, ApiError> {
    let not_found = || ApiError::new(404, "NotFound", "the server could not find the requested resource");
    let rt = shared.lock().resource(&info.group, &info.resource).ok_or_else(not_found)?;
    if rt.version(&info.version).is_none() {
        return Err(not_found());
    }
    if !rt.namespaced && !info.namespace.is_empty() {
        return Err(not_found());
    }
    let version = info.version.as_str();
    let ns = info.namespace.as_str();
    let sub = info.subresource.as_str();
    match sub {
        "" => {}
        "status" if rt.has_status(version) => {}
        "token" if rt.plural == "serviceaccounts" && info.verb == "create" => {
            return crate::admin::token_request(shared, &rt, ns, &info.name, body).map(|v| json_response(201, &v));
        }
        _ => return Err(not_found()),
    }
    if rt.verbs.len() == 1 && rt.plural == "tokenreviews" {
        if info.verb != "create" {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource".to_string(),
            ));
        }
        return crate::admin::token_review(shared, body).map(|v| json_response(201, &v));
    }
    let av = rt.api_version(version);
    let out = |o: Value| if partial { partial_metadata(&o) } else { o };
    match info.verb.as_str() {
        "get" => {
            let st = shared.lock();
            let obj = st.get(&rt, ns, &info.name)?;
            Ok(json_response(200, &out(at_version(&obj, &av))))
        }
        "list" | "watch" => {
            let labels = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
            let fields = FieldSelector::parse(
                query.get("fieldSelector").map(String::as_str).unwrap_or(""),
                &supported_fields(&rt.group, &rt.plural),
            )?;
            let nsopt = (!ns.is_empty()).then_some(ns);
            if info.verb == "watch" {
                let p = WatchParams {
                    rt: rt.clone(),
                    version: version.to_string(),
                    namespace: nsopt.map(str::to_string),
                    labels,
                    fields,
                    resource_version: query.get("resourceVersion").cloned(),
                    send_initial_events: query.get("sendInitialEvents").map(String::as_str) == Some("true"),
                    bookmarks: query.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
                    timeout: query.get("timeoutSeconds").and_then(|s| s.parse().ok()).map(Duration::from_secs),
                    partial,
                    api_version: String::new(),
                };
                let body = crate::watch::start(shared, p)?;
                let mut r = Response::new(body);
                r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                return Ok(r);
            }
            let limit = query.get("limit").and_then(|s| s.parse().ok());
            let page = {
                let st = shared.lock();
                if query.get("resourceVersionMatch").map(String::as_str) == Some("Exact") {
                    let want: u64 = query.get("resourceVersion").and_then(|s| s.parse().ok()).unwrap_or(0);
                    if want != st.rv {
                        return Err(ApiError::expired(format!("too old resource version: {want} ({})", st.rv)));
                    }
                }
                st.list(&rt, nsopt, &labels, &fields, limit, query.get("continue").map(String::as_str))?
            };
            let items: Vec<Value> = page.items.iter().map(|o| at_version(o, &av)).collect();
            let body =
                list_response(&rt, version, items, page.resource_version, page.continue_token, page.remaining, partial);
            Ok(json_response(200, &body))
        }
        "create" | "update" | "patch" => {
            let mut ctx = WriteCtx::new(&who.user, manager);
            ctx.dry_run = query.get("dryRun").is_some_and(|d| d == "All");
            ctx.validation = validation_of(query)?;
            let force = query.get("force").map(String::as_str) == Some("true");
            if info.verb == "patch" && force && content_type != "application/apply-patch+yaml" {
                return Err(ApiError::bad_request("force may not be specified for non-apply patch"));
            }
            let (code, obj, warnings) = write(shared, info, &rt, query, who, content_type, body, force, ctx).await?;
            let mut r = json_response(code, &out(obj));
            for w in warnings {
                if let Ok(h) = http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
                    r.headers_mut().append("Warning", h);
                }
            }
            Ok(r)
        }
        "delete" => {
            let opts = delete_opts(query, body)?;
            admit_delete(shared, &rt, version, ns, &info.name, who, &opts).await?;
            let res = shared.lock().delete(&rt, version, ns, &info.name, &opts)?;
            Ok(match res {
                DeleteResult::Pending(o) => json_response(200, &out(o)),
                DeleteResult::Deleted(o) => json_response(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                            "details": {"name": util::name_of(&o), "group": rt.group, "kind": rt.plural, "uid": util::uid_of(&o)}}),
                ),
            })
        }
        "deletecollection" => {
            let opts = delete_opts(query, body)?;
            let labels = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
            let fields = FieldSelector::parse(
                query.get("fieldSelector").map(String::as_str).unwrap_or(""),
                &supported_fields(&rt.group, &rt.plural),
            )?;
            let mut st = shared.lock();
            let nsopt = (!ns.is_empty()).then_some(ns);
            let items = st.list(&rt, nsopt, &labels, &fields, None, None)?.items;
            let mut deleted = Vec::new();
            for o in items {
                let (n, name) = (util::namespace_of(&o).to_string(), util::name_of(&o).to_string());
                if let Ok(r) = st.delete(
                    &rt,
                    version,
                    &n,
                    &name,
                    &DeleteOpts { dry_run: opts.dry_run, propagation: opts.propagation.clone(), ..Default::default() },
                ) {
                    deleted.push(match r {
                        DeleteResult::Deleted(o) | DeleteResult::Pending(o) => o,
                    });
                }
            }
            Ok(json_response(200, &list_response(&rt, version, deleted, st.rv, None, None, partial)))
        }
        _ => Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource")),
    }
}

fn delete_opts(query: &HashMap<String, String>, body: &Bytes) -> Result<DeleteOpts, ApiError> {
    let b: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let s = |p: &str| b.pointer(p).and_then(Value::as_str).map(str::to_string);
    let mut propagation = s("/propagationPolicy").or_else(|| query.get("propagationPolicy").cloned());
    if propagation.is_none() && b.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
        propagation = Some("Orphan".into());
    }
    if let Some(p) = &propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid(
            "DeleteOptions",
            "",
            "",
            vec![crate::error::FieldError::not_supported(
                "propagationPolicy",
                &json!(p),
                &[json!("Foreground"), json!("Background"), json!("Orphan")],
            )],
        ));
    }
    let dry = b.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == "All"))
        || query.get("dryRun").is_some_and(|d| d == "All");
    Ok(DeleteOpts {
        uid: s("/preconditions/uid"),
        resource_version: s("/preconditions/resourceVersion"),
        propagation,
        dry_run: dry,
    })
}

#[allow(clippy::too_many_arguments)]
async fn admit_delete(
    shared: &Arc<Shared>,
    rt: &Arc<ResourceType>,
    version: &str,
    ns: &str,
    name: &str,
    who: &Caller,
    opts: &DeleteOpts,
) -> Result<(), ApiError> {
    let (calls, p) = {
        let st = shared.lock();
        let old = st.get(rt, ns, name)?;
        let p = Prepared {
            rt: rt.clone(),
            version: version.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
            op: Op::Update,
            old: Some(old.clone()),
            new: Value::Null,
            dry_run: opts.dry_run,
            subresource: String::new(),
            generated_name: false,
        };
        (admission::plan(&st, &p, "DELETE", Some(&old))?, p)
    };
    if calls.is_empty() {
        return Ok(());
    }
    let base = admission::request_base(&p, "DELETE", &who.user, &who.groups, "");
    admission::run(calls, base, Value::Null, false).await.map(|_| ())
}

#[allow(clippy::too_many_arguments)]
async fn write(
    shared: &Arc<Shared>,
    info: &ReqInfo,
    rt: &Arc<ResourceType>,
    _query: &HashMap<String, String>,
    who: &Caller,
    content_type: &str,
    body: &Bytes,
    force: bool,
    ctx: WriteCtx,
) -> Result<(u16, Value, Vec<String>), ApiError> {
    let version = info.version.as_str();
    let ns = info.namespace.as_str();
    for _attempt in 0..8 {
        let mut ctx = ctx.clone();
        let (mut p, calls) = {
            let st = shared.lock();
            let p = match info.verb.as_str() {
                "create" => {
                    if !info.name.is_empty() {
                        return Err(ApiError::method_not_allowed(
                            "the server does not allow this method on the requested resource",
                        ));
                    }
                    let obj: Value = if crate::protobuf::is_protobuf(body) {
                        crate::protobuf::decode(body)?
                    } else {
                        crate::util::parse_json_or_yaml(body)
                            .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?
                    };
                    st.prepare_create(rt, version, ns, obj, &mut ctx)?
                }
                "update" => {
                    let obj: Value = if crate::protobuf::is_protobuf(body) {
                        crate::protobuf::decode(body)?
                    } else {
                        serde_json::from_slice(body)
                            .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?
                    };
                    st.prepare_update(rt, version, ns, &info.name, &info.subresource, obj, &mut ctx)?
                }
                _ if content_type == "application/apply-patch+yaml" => {
                    st.prepare_apply(rt, version, ns, &info.name, &info.subresource, body, force, &mut ctx)?
                }
                _ => st.prepare_patch(rt, version, ns, &info.name, &info.subresource, content_type, body, &mut ctx)?,
            };
            let op = if p.op == Op::Create { "CREATE" } else { "UPDATE" };
            let calls = admission::plan(&st, &p, op, Some(&p.new))?;
            (p, calls)
        };
        if !calls.is_empty() {
            let op = if p.op == Op::Create { "CREATE" } else { "UPDATE" };
            let base = admission::request_base(&p, op, &who.user, &who.groups, &ctx.manager);
            let mut sent = p.new.clone();
            if p.generated_name {
                util::meta_mut(&mut sent).remove("name");
            }
            let mut mutated = admission::run(calls, base, sent, true).await?;
            // Identity fields are the server's, whatever a webhook patched.
            for f in ["name", "namespace", "uid", "creationTimestamp"] {
                match p.new.pointer(&format!("/metadata/{f}")).cloned() {
                    Some(v) => {
                        util::meta_mut(&mut mutated).insert(f.to_string(), v);
                    }
                    None => {
                        util::meta_mut(&mut mutated).remove(f);
                    }
                }
            }
            if mutated != p.new {
                p.new = mutated;
                let st = shared.lock();
                let old = p.old.clone();
                st.finish(&p.rt, &p.version, &mut p.new, old.as_deref())?;
            }
        }
        let code = if p.op == Op::Create { 201 } else { 200 };
        let mut st = shared.lock();
        if let Some(obj) = st.commit(p)? {
            return Ok((code, obj, ctx.warnings));
        }
    }
    Err(ApiError::conflict(&rt.gr(), &info.name, "the object kept changing while the request was being processed"))
}
