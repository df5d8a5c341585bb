//! An HTTP Kubernetes API-server double for Weft's tests.
//!
//! [`ApiServer::start`] serves a Kubernetes API on 127.0.0.1 from its own
//! thread and tokio runtime, so blocking tests (that run `kubectl`) and async
//! tests (that use the product's `kube::Client` and `kube::runtime::watcher`)
//! can share it. It speaks the real REST semantics the product relies on:
//! discovery and OpenAPI v3 (enough for kubectl), get/list/watch with
//! selectors, paging, bookmarks, resumption and 410 Expired, create/update/
//! patch (merge, JSON, strategic, server-side apply with managedFields and
//! conflicts)/delete with preconditions, finalizers and garbage collection,
//! CRDs served at run time with structural-schema pruning, defaulting and
//! validation, mutating admission webhooks over HTTPS, TokenRequest and
//! TokenReview. Faults (failing, delaying, dropping watches, compacting
//! history) and a request recorder serve the tests. Everything is also
//! reachable over HTTP under `/_double/` (see the crate README).
//!
//! # DEVIATIONS
//!
//! Where the double knowingly differs from a real kube-apiserver (v1.32):
//!
//! - **Storage and versions.** One store in memory; no etcd. Objects of a
//!   resource are stored once at the storage version and served at any
//!   served version by rewriting `apiVersion` (CRD conversion strategy
//!   `None` only; no conversion webhooks). `events` (v1) and
//!   `events.k8s.io/v1` are separate stores. Every kind gets
//!   `metadata.generation` (real ConfigMaps, Services, ... have none). A
//!   write that changes nothing is not persisted (no new resourceVersion, no
//!   event), as the real server does.
//! - **resourceVersion.** A global counter. Lists are always served from the
//!   current state: `resourceVersion`/`NotOlderThan` are accepted and answered
//!   with the current state; `resourceVersionMatch=Exact` for any other than
//!   the current version answers 410. `continue` pages are read from the
//!   current state (not a snapshot); a continue token older than a compaction
//!   answers 410. A watch from a resourceVersion newer than the current one
//!   simply waits for later events (the real server answers 504 after a
//!   while).
//! - **compact_history()** bumps the resourceVersion and forgets every
//!   history, so a watch resuming from any resourceVersion seen before gets
//!   HTTP 200 + an ERROR event (410, reason Expired). The history is also
//!   bounded per resource (`history_limit`); a watch that falls behind the
//!   broadcast buffer (8192 events) is ended abruptly and resumes.
//! - **Watch.** No `/watch/` legacy paths; no watch on a single object path
//!   (use `fieldSelector=metadata.name=`). Without `timeoutSeconds` a watch
//!   does not time out. Bookmarks carry the current global resourceVersion.
//!   `as=Table` is never produced (kubectl accepts plain lists and objects).
//! - **Field selectors**: `metadata.name`, `metadata.namespace` everywhere;
//!   Secret `type`; Pod `spec.nodeName`, `spec.restartPolicy`,
//!   `spec.schedulerName`, `spec.serviceAccountName`, `spec.hostNetwork`,
//!   `status.phase`, `status.podIP`, `status.nominatedNodeName`; Namespace
//!   `status.phase`; Event `involvedObject.*`, `reason`, `type`, `source`,
//!   `reportingComponent`. CRD `selectableFields` are not supported. Others
//!   answer 400 like the real server.
//! - **Validation of built-in kinds.** Only metadata: names (DNS-1123
//!   subdomain; label for Namespace; DNS-1035 for Service; path segment for
//!   RBAC), label keys/values, annotation values, the shape of labels,
//!   annotations, finalizers and ownerReferences (apiVersion, kind, name, uid
//!   set; at most one controller); plus webhook configurations (names,
//!   sideEffects, admissionReviewVersions, clientConfig, timeoutSeconds,
//!   failurePolicy) and CRDs (group, names, scope, one storage version, name
//!   = plural.group). Unknown fields of built-in
//!   kinds are kept (no OpenAPI schemas for built-ins), so
//!   `fieldValidation=Strict` only rejects unknown fields of custom resources.
//!   Unknown fields under `Strict` answer **400 BadRequest** (`strict decoding
//!   error: unknown field "spec.x"`) as the real server does (not 422);
//!   `Warn` (the default) adds a `Warning` header; `Ignore` is silent.
//! - **CRD schemas.** Pruning, defaulting (nulls of non-nullable fields
//!   dropped first) and validation of `type`, `nullable`,
//!   `x-kubernetes-int-or-string`, `enum`, `required`, `minimum`/`maximum`
//!   (with `exclusive*`), `minLength`/`maxLength`, `pattern` (Rust `regex`
//!   syntax; a pattern it cannot compile is skipped), `minItems`/`maxItems`,
//!   `minProperties`/`maxProperties`, duplicate keys of list-type map/set,
//!   and CEL `x-kubernetes-validations` on the defaulted object (the
//!   `cel` crate; transition rules and cost limits are not evaluated, see
//!   `weft_schema::rules`). **Not evaluated:** `format`,
//!   `allOf`/`anyOf`/`oneOf`/`not`, `uniqueItems`, metadata pruning.
//!   CRD `status` (NamesAccepted, Established, acceptedNames,
//!   storedVersions) is set in the same write that creates or updates the
//!   CRD (no separate MODIFIED event). Deleting a CRD deletes its objects
//!   immediately (no `customresourcecleanup` finalizer) and ends its watches.
//! - **Server-side apply.** Lists are atomic unless the CRD schema says
//!   `x-kubernetes-list-type: map` (keys from `x-kubernetes-list-map-keys`)
//!   or, for built-in kinds, the merge-key table: `containers`,
//!   `initContainers`, `ephemeralContainers`, `volumes`, `env`,
//!   `imagePullSecrets` by `name`; `volumeMounts` by `mountPath` (as
//!   Kubernetes declares it); container `ports` by `containerPort`+`protocol`;
//!   Service `spec.ports` by `port`+`protocol`; `conditions` by `type`;
//!   webhooks by `name`; `ownerReferences` by `uid`; `hostAliases` by `ip`;
//!   `topologySpreadConstraints` by `topologyKey`+`whenUnsatisfiable`.
//!   `x-kubernetes-list-type: set` (and `finalizers`) are tracked atomically.
//!   `x-kubernetes-map-type: atomic` is not honoured (maps are granular).
//!   Conflicts are computed on leaf fields whose value would change. Fields
//!   set by defaulting or by admission webhooks are not attributed to any
//!   manager. Update-operation managers are keyed by (manager, operation,
//!   subresource), not by apiVersion. A `managedFields: []` in an update
//!   resets ownership; any other `managedFields` sent by a client is ignored.
//! - **Strategic merge patch** is approximated with the same merge-key table:
//!   `$patch: delete|replace|merge`, `$retainKeys`,
//!   `$deleteFromPrimitiveList/`; `$setElementOrder/` is ignored (order is
//!   not rearranged); `finalizers` merge as a set; other primitive lists are
//!   replaced. On custom resources it answers 415, as the real server does.
//! - **Protobuf** request bodies are decoded only for Namespace,
//!   ServiceAccount, ConfigMap, Secret and TokenRequest (what `kubectl create
//!   ns|sa|cm|secret|token` send); other protobuf bodies answer 415.
//!   Responses are always JSON.
//! - **Deletion.** No graceful deletion: objects without finalizers (pods
//!   too) disappear at once. `Foreground` deletes dependents first, then the
//!   owner, without the `foregroundDeletion` finalizer phase; `Orphan`
//!   removes the ownerReferences at once. Deleting a Namespace deletes its
//!   objects immediately (finalizers of the contained objects are not
//!   waited for), then the Namespace. `gracePeriodSeconds` is ignored.
//! - **Garbage collector.** Synchronous: when an owner goes, dependents whose
//!   every ownerReference points to an absent owner are deleted (honouring
//!   their finalizers). Owner references are resolved by uid in the
//!   dependent's namespace or at cluster scope; a namespaced owner of a
//!   cluster-scoped dependent or an owner in another namespace counts as
//!   absent, and a Warning Event `OwnerRefInvalidNamespace` is recorded (in
//!   the dependent's namespace, `default` for cluster-scoped ones). A
//!   dependent created with only dangling owners is collected at once.
//!   `blockOwnerDeletion` is not checked.
//! - **Controllers.** Services get a ClusterIP from 10.96.0.0/16 (from
//!   10.96.0.10), `clusterIPs`, `ipFamilies`, node ports 30000-32767 for
//!   NodePort/LoadBalancer, port `protocol`/`targetPort` defaults; no load
//!   balancer. One EndpointSlice per selector Service named
//!   `<svc>-<5 chars stable per service uid>`; a named `targetPort` is
//!   resolved from the first matching pod that declares it (the real
//!   controller splits slices per resolution); service labels are not copied;
//!   no `zone`/`hints`; no Endpoints objects. Each new Namespace gets the
//!   `default` ServiceAccount (no `kube-root-ca.crt` ConfigMap). Deployments
//!   get spec defaults but no ReplicaSets, Pods or status. No scheduler or
//!   kubelet: pods stay Pending unless a test writes their status.
//! - **Admission.** Only mutating webhooks are called (Validating
//!   configurations are stored only), for CREATE, UPDATE (including patches
//!   and applies) and DELETE. `clientConfig.service` is reached through
//!   `route_service(namespace, name, port, addr)` (the real server resolves
//!   the Service); `clientConfig.url` hosts must be IP literals or
//!   `localhost`. The server certificate is verified against `caBundle` only
//!   (no system roots). `matchConditions` (CEL) are treated as true;
//!   `reinvocationPolicy` is ignored; `matchPolicy: Equivalent` is not
//!   applied (rules must name the request's version). Writes made through
//!   the handle's direct store methods (`create`, `apply_as`, ...) and by the
//!   fake controllers do not go through admission. Pod defaulting before
//!   admission covers serviceAccountName/serviceAccount, restartPolicy,
//!   dnsPolicy, terminationGracePeriodSeconds, schedulerName,
//!   securityContext, enableServiceLinks, container
//!   terminationMessagePath/Policy, imagePullPolicy, resources, port
//!   protocol, and status phase Pending / qosClass BestEffort.
//! - **Authentication and authorization.** Every request is allowed. The
//!   user is taken from the path prefix `/_u/<user>` that kubeconfigs written
//!   by the double put in the server URL (kubectl sends no credentials over
//!   plain HTTP: client-go reads auth info only for TLS), else from the
//!   bearer token: `user:<name>` (also in those kubeconfigs), a token this server issued
//!   (`system:serviceaccount:NS:SA`), any other short token as itself,
//!   anything else `system:unknown-token`; no token is `system:anonymous`.
//!   Tokens are HS256 JWTs signed with a per-server random key (the real
//!   server uses RS256/ES256 and publishes JWKS; no OIDC discovery here).
//!   TokenReview checks signature, issuer, expiry, audiences, and that the
//!   ServiceAccount (and the bound Pod) still exist with the same uid;
//!   `issue_token` for a ServiceAccount that does not exist mints a random
//!   uid, so such a token never reviews as authenticated.
//! - **Not served:** `/openapi/v2` (404), aggregated discovery
//!   (`apidiscovery.k8s.io/v2`; legacy documents are returned instead),
//!   `scale` subresources, `/proxy`, `/exec`, `/log`, `/eviction`,
//!   `/binding`, SubjectAccessReviews, protobuf, HTTP/2, TLS on the API port.
//!
//! The request recorder names verbs as the audit log does (get, list, watch,
//! create, update, patch, delete, deletecollection); non-resource requests
//! (`/version`, discovery, OpenAPI) are recorded with verb `get`, an empty
//! resource and their `path`.

pub mod admin;
pub mod admission;
pub mod controllers;
pub mod discovery;
pub mod error;
pub mod faults;
pub mod fieldset;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod recorder;
pub mod registry;
pub use weft_schema as schema;
pub mod selectors;
pub mod server;
pub mod ssa;
pub mod store;
pub mod tokens;
pub mod util;
pub mod watch;

pub use error::ApiError;
pub use faults::Scope as FaultScope;
pub use recorder::Recorded;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// How to start the double.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen; default 127.0.0.1:0.
    pub addr: Option<SocketAddr>,
    /// CRDs created (and so served) before the first request.
    pub crds: Vec<CustomResourceDefinition>,
    /// Watch events kept per resource type for resumption.
    pub history_limit: usize,
    /// Period of BOOKMARK events on watches that ask for them.
    pub bookmark_interval: Duration,
    /// Run the EndpointSlice controller.
    pub endpointslice_controller: bool,
    /// (namespace, service, port) → address for webhook `clientConfig.service`.
    pub service_routes: Vec<((String, String, u16), SocketAddr)>,
    /// The API server's own token audience (TokenRequest/TokenReview default).
    pub audience: String,
    /// Namespaces created at start besides default, kube-system, kube-public
    /// and kube-node-lease.
    pub namespaces: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addr: None,
            crds: vec![],
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(1),
            endpointslice_controller: true,
            service_routes: vec![],
            audience: "https://kubernetes.default.svc".to_string(),
            namespaces: vec![],
        }
    }
}

impl Options {
    /// Adds the CRDs of multi-document YAML files (other kinds are skipped).
    pub fn with_crd_files<P: AsRef<Path>>(mut self, paths: impl IntoIterator<Item = P>) -> anyhow::Result<Self> {
        for p in paths {
            self.crds.extend(read_crds(p.as_ref())?);
        }
        Ok(self)
    }
}

/// Reads every CustomResourceDefinition of a YAML file.
pub fn read_crds(path: &Path) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let docs = util::parse_yaml_documents(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for d in docs {
        if d.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition") {
            out.push(serde_json::from_value(d).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
        }
    }
    Ok(out)
}

/// A running double; dropping it stops the server.
#[derive(Debug)]
pub struct ApiServer {
    shared: Arc<server::Shared>,
    url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Binds, preloads namespaces and CRDs, and serves on its own thread.
    pub fn start(opts: Options) -> anyhow::Result<ApiServer> {
        let std_listener = std::net::TcpListener::bind(opts.addr.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let published = Arc::new(AtomicU64::new(1));
        let mut state = store::State::new(
            store::StoreOptions {
                history_limit: opts.history_limit,
                endpointslice_controller: opts.endpointslice_controller,
            },
            published.clone(),
        );
        for (k, a) in &opts.service_routes {
            state.routes.insert(k.clone(), *a);
        }
        let (drop_tx, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(server::Shared {
            state: std::sync::Mutex::new(state),
            recorder: Default::default(),
            faults: Default::default(),
            drop_tx,
            issuer: tokens::Issuer::new(&opts.audience),
            bookmark_interval: opts.bookmark_interval,
            addr,
            published_rv: published,
        });
        let mut namespaces: Vec<String> =
            ["default", "kube-system", "kube-public", "kube-node-lease"].iter().map(|s| s.to_string()).collect();
        namespaces.extend(opts.namespaces.iter().cloned());
        for ns in namespaces {
            let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            shared.direct_create(obj, "kube-apiserver").map_err(|e| anyhow::anyhow!("namespace {ns}: {e}"))?;
        }
        for crd in &opts.crds {
            let v = serde_json::to_value(crd)?;
            shared.direct_create(v, "kube-double").map_err(|e| anyhow::anyhow!("CRD {}: {e}", crd_name(crd)))?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("kube-double")
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared2 = shared.clone();
        let thread = std::thread::Builder::new().name("kube-double".into()).spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => server::serve(l, shared2, rx).await,
                    Err(e) => tracing::error!(error = %e, "kube-double cannot listen"),
                }
            });
            rt.shutdown_timeout(Duration::from_millis(200));
        })?;
        tracing::info!(%addr, "kube-double listening");
        Ok(ApiServer { shared, url: format!("http://{addr}"), shutdown: Some(tx), thread: Some(thread) })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// A kubeconfig for `user`, context namespace `default`. The server URL
    /// carries the user as a path prefix (`/_u/<user>`, because kubectl sends
    /// no credentials over plain HTTP); the token `user:<user>` is there too.
    pub fn kubeconfig(&self, user: &str) -> String {
        kubeconfig_yaml(&self.url, user)
    }

    /// Writes [`ApiServer::kubeconfig`] to a file.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>, user: &str) -> anyhow::Result<()> {
        std::fs::write(path, self.kubeconfig(user))?;
        Ok(())
    }

    /// The `kube::Config` of [`ApiServer::kubeconfig`], to adjust before
    /// building a client (e.g. `default_retry = false`: kube 4.2 clients
    /// retry 429/503/504 up to 15 times by default).
    pub async fn config(&self, user: &str) -> anyhow::Result<kube::Config> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig(user))?;
        Ok(kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?)
    }

    /// A `kube::Client` authenticating as `user` (kube's defaults, including
    /// its retries of 429/503/504). Needs a tokio runtime.
    pub async fn client(&self, user: &str) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.config(user).await?)?)
    }

    // ------------------------------------------------------------ store

    /// The object, at `api_version`, or None.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared.direct_get(api_version, kind, namespace, name).ok().flatten()
    }

    /// Objects of a kind (all namespaces when `namespace` is None).
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        self.shared.direct_list(api_version, kind, namespace).unwrap_or_default()
    }

    /// Creates an object as field manager `kube-double` (no admission).
    pub fn create(&self, obj: Value) -> Result<Value, ApiError> {
        self.shared.direct_create(obj, "kube-double")
    }

    /// Replaces an object (PUT semantics, resourceVersion precondition if set).
    pub fn update(&self, obj: Value) -> Result<Value, ApiError> {
        self.shared.direct_update(obj, "", "kube-double")
    }

    /// Server-side apply as `manager` (creates when absent).
    pub fn apply_as(&self, manager: &str, obj: Value, force: bool) -> Result<Value, ApiError> {
        self.shared.direct_apply(obj, manager, force, "")
    }

    /// Server-side apply of the status subresource as `manager`.
    pub fn apply_status_as(&self, manager: &str, obj: Value, force: bool) -> Result<Value, ApiError> {
        self.shared.direct_apply(obj, manager, force, "status")
    }

    /// A JSON merge patch of the main resource.
    pub fn patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        self.shared.direct_patch(
            api_version,
            kind,
            namespace,
            name,
            "",
            "application/merge-patch+json",
            &patch,
            "kube-double",
        )
    }

    /// A JSON merge patch of `/status` (e.g. a cloud controller setting
    /// `status.loadBalancer.ingress`).
    pub fn patch_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        self.shared.direct_patch(
            api_version,
            kind,
            namespace,
            name,
            "status",
            "application/merge-patch+json",
            &patch,
            "kube-double",
        )
    }

    /// Deletes (finalizers honoured); returns the object if finalizers keep it.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        self.shared.direct_delete(api_version, kind, namespace, name)
    }

    // ------------------------------------------------------------ faults

    /// Ends every open watch stream now, abruptly.
    pub fn drop_watches(&self) {
        self.shared.drop_watches();
    }

    /// Forgets watch history: resuming from an older resourceVersion gets 410.
    pub fn compact_history(&self) {
        self.shared.lock().compact();
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, faults::Faults> {
        self.shared.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails the next `n` requests with `code` (a proper Status body).
    pub fn fail_next(&self, n: u32, code: u16) {
        self.faults().fail_next(FaultScope::default(), n, code);
    }

    /// Fails the `n`th request from now (1-based) with `code`.
    pub fn fail_nth(&self, n: u32, code: u16) {
        self.faults().fail_nth(FaultScope::default(), n, code);
    }

    /// Fails every request for `d` with `code`.
    pub fn fail_for(&self, d: Duration, code: u16) {
        self.faults().fail_for(FaultScope::default(), d, code);
    }

    /// Adds latency to every request (zero removes it).
    pub fn delay(&self, d: Duration) {
        self.faults().delay(FaultScope::default(), d);
    }

    /// Scoped variants: `scope` restricts a fault to a user, verb or resource.
    pub fn fail_next_scoped(&self, scope: FaultScope, n: u32, code: u16) {
        self.faults().fail_next(scope, n, code);
    }
    pub fn fail_nth_scoped(&self, scope: FaultScope, n: u32, code: u16) {
        self.faults().fail_nth(scope, n, code);
    }
    pub fn fail_for_scoped(&self, scope: FaultScope, d: Duration, code: u16) {
        self.faults().fail_for(scope, d, code);
    }
    pub fn delay_scoped(&self, scope: FaultScope, d: Duration) {
        self.faults().delay(scope, d);
    }

    /// Removes every fail/delay rule.
    pub fn clear_faults(&self) {
        self.faults().clear();
    }

    // ------------------------------------------------------------ recorder

    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared.recorder.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn clear_recorded(&self) {
        self.shared.recorder.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    // ------------------------------------------------------------ tokens, routes

    /// A ServiceAccount token (JWT) for `audiences` (empty: the API
    /// server's audience), bound to a pod (name, uid) when given.
    pub fn issue_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
        expiration: Duration,
        bound_pod: Option<(&str, &str)>,
    ) -> String {
        let aud: Vec<String> = audiences.iter().map(|s| s.to_string()).collect();
        self.shared.issue_token(namespace, service_account, &aud, expiration, bound_pod).0
    }

    /// Where webhook calls to `clientConfig.service` {namespace, name, port} go.
    pub fn route_service(&self, namespace: &str, name: &str, port: u16, addr: SocketAddr) {
        self.shared.lock().routes.insert((namespace.to_string(), name.to_string(), port), addr);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn crd_name(crd: &CustomResourceDefinition) -> String {
    crd.metadata.name.clone().unwrap_or_default()
}

/// The kubeconfig text for a server URL and user.
pub fn kubeconfig_yaml(url: &str, user: &str) -> String {
    let encoded: String = user
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._:~@".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let url = format!("{url}/_u/{encoded}");
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-double\n  cluster:\n    server: {url}\ncontexts:\n- name: kube-double\n  context:\n    cluster: kube-double\n    user: \"{user}\"\n    namespace: default\ncurrent-context: kube-double\nusers:\n- name: \"{user}\"\n  user:\n    token: \"user:{user}\"\npreferences: {{}}\n"
    )
}
