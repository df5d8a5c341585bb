//! Reading Kubernetes YAML (files, directories, strings) into a [`Snapshot`].
//!
//! Each document is parsed on its own, defaulted the way the API server would
//! default it, and deserialized into its typed form. A document that fails is
//! reported with its file, document number, line and field path, and the
//! other documents still load.

mod defaults;
pub mod schemas;
pub mod secret;
mod split;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;
use weft_k8s_api::k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use weft_k8s_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::snapshot::{ObjectKey, Snapshot};

/// A document that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// File (or other source name) the document came from.
    pub file: String,
    /// 1-based document number within the file; 0 when the file itself
    /// could not be read.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    /// Field path inside the document (`spec.rules[0].matches`), empty when
    /// the document as a whole is wrong.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(f, "{}: document {} (line {})", self.file, self.document, self.line)?;
        if !self.path.is_empty() {
            write!(f, ": field `{}`", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What a load did besides filling the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Objects loaded.
    pub loaded: usize,
    /// Kinds that were read but are not used by Weft (e.g. Deployment),
    /// with how many objects of each.
    pub ignored_kinds: BTreeMap<String, usize>,
    /// Documents that failed.
    pub errors: Vec<LoadError>,
    /// Certificate chains and keys of the usable `kubernetes.io/tls`
    /// Secrets, kept out of the snapshot so that nothing printing it can
    /// show a key; only the gateways whose listeners reference one get it.
    pub tls_materials: BTreeMap<ObjectKey, secret::TlsMaterial>,
}

/// Where a document sits, for error messages.
#[derive(Clone, Debug)]
struct Origin {
    file: String,
    document: usize,
    line: usize,
}

impl Origin {
    fn error(&self, path: impl Into<String>, message: impl Into<String>) -> LoadError {
        LoadError {
            file: self.file.clone(),
            document: self.document,
            line: self.line,
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Accumulates documents into a snapshot.
#[derive(Debug, Default)]
pub struct Loader {
    files: Vec<ParsedFile>,
}

/// The documents of one file, parsed and typed on their own: nothing in
/// them depends on other files, so a reload can keep them while the file is
/// unchanged. Duplicates across files are found when files are assembled.
#[derive(Clone, Debug, Default)]
pub struct ParsedFile {
    /// Objects and errors in document order, so errors are reported in the
    /// order they appear.
    entries: Vec<Entry>,
    /// Kinds read but not used by Weft, with how many objects of each.
    ignored_kinds: BTreeMap<String, usize>,
}

#[derive(Clone, Debug)]
enum Entry {
    Object(Box<Parsed>),
    Error(LoadError),
}

/// One typed object and where it came from.
#[derive(Clone, Debug)]
struct Parsed {
    origin: Origin,
    kind: &'static str,
    key: ObjectKey,
    object: Object,
}

/// Loads every path (files, or directories walked recursively for `.yaml`,
/// `.yml` and `.json` files in name order).
pub fn load_paths(paths: &[PathBuf]) -> (Snapshot, LoadReport) {
    let mut loader = Loader::default();
    for path in paths {
        loader.add_path(path);
    }
    loader.finish()
}

/// Keeps the parsed documents of each file between loads of the same paths,
/// so that a reload after one file changed parses only that file. Local
/// mode reloads its whole directory on every change; with thousands of
/// objects, parsing is most of the time from a saved file to a proxy
/// update.
#[derive(Debug, Default)]
pub struct ManifestCache {
    files: BTreeMap<PathBuf, (String, ParsedFile)>,
    /// Each file's last version that loaded without an error.
    last_good: BTreeMap<PathBuf, ParsedFile>,
    /// When each object was first loaded: its `creationTimestamp` when the
    /// file gives none, as the API server stamps objects on create. The
    /// Gateway API breaks ties between routes and listeners by age (the
    /// oldest TCPRoute on a listener wins); without this, a route added
    /// later would win or lose by its name. Objects present at the first
    /// load share its time (ties then go by name); an object that leaves
    /// and comes back is new again.
    first_seen: BTreeMap<(&'static str, ObjectKey), Time>,
}

/// Largest manifest file read (the API server refuses requests over 3 MiB).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// A manifest file's text: only regular files (a FIFO would block the
/// reader, a device such as `/dev/zero` would never end), at most
/// [`MAX_FILE_BYTES`].
pub fn read_manifest(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, socket or device); skipped",
        ));
    }
    let too_large =
        || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {MAX_FILE_BYTES} bytes; skipped"));
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut text = String::new();
    std::fs::File::open(path)?.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

impl ManifestCache {
    /// Loads every path like [`load_paths`], re-parsing only files whose
    /// content differs from the last load. A file that now has errors keeps
    /// the objects of its last version that had none (its errors are still
    /// reported), so one broken file holds back only itself.
    pub fn load(&mut self, paths: &[PathBuf]) -> (Snapshot, LoadReport) {
        let mut order: Vec<ParsedFile> = Vec::new();
        let mut present = std::collections::BTreeSet::new();
        for path in paths {
            let files = match manifest_files(path) {
                Ok(files) => files,
                Err(e) => {
                    order.push(ParsedFile::unreadable(path, &e));
                    continue;
                }
            };
            for file in files {
                present.insert(file.clone());
                let text = match read_manifest(&file) {
                    Ok(text) => text,
                    Err(e) => {
                        order.push(self.with_last_good(&file, ParsedFile::unreadable(&file, &e)));
                        continue;
                    }
                };
                let cached = self.files.get(&file).filter(|(old, _)| *old == text).map(|(_, parsed)| parsed.clone());
                let parsed = match cached {
                    Some(parsed) => parsed,
                    None => {
                        let parsed = ParsedFile::parse(&file.display().to_string(), &text);
                        self.files.insert(file.clone(), (text, parsed.clone()));
                        parsed
                    }
                };
                order.push(self.with_last_good(&file, parsed));
            }
        }
        self.files.retain(|path, _| present.contains(path));
        self.last_good.retain(|path, _| present.contains(path));
        self.stamp_creation(&mut order);
        assemble(order)
    }

    /// Sets `creationTimestamp` of objects that have none to when they were
    /// first loaded (see [`ManifestCache::first_seen`]).
    fn stamp_creation(&mut self, files: &mut [ParsedFile]) {
        let now = Time(weft_k8s_api::k8s_openapi::jiff::Timestamp::now());
        let mut present = std::collections::BTreeSet::new();
        for file in files.iter_mut() {
            for entry in &mut file.entries {
                let Entry::Object(parsed) = entry else { continue };
                let id = (parsed.kind, parsed.key.clone());
                let Some(meta) = parsed.object.meta_mut() else { continue };
                if meta.creation_timestamp.is_none() {
                    let first = self.first_seen.entry(id.clone()).or_insert_with(|| now.clone());
                    meta.creation_timestamp = Some(first.clone());
                }
                present.insert(id);
            }
        }
        self.first_seen.retain(|id, _| present.contains(id));
    }

    /// `parsed` when it has no error (it becomes the file's last good
    /// version); otherwise the last good version's objects with `parsed`'s
    /// errors, or `parsed` itself when the file never loaded cleanly.
    fn with_last_good(&mut self, file: &Path, parsed: ParsedFile) -> ParsedFile {
        if !parsed.has_errors() {
            self.last_good.insert(file.to_path_buf(), parsed.clone());
            return parsed;
        }
        match self.last_good.get(file) {
            Some(good) => {
                let mut kept = good.clone();
                kept.entries.extend(parsed.entries.into_iter().filter(|e| matches!(e, Entry::Error(_))));
                kept
            }
            None => parsed,
        }
    }
}

/// Loads one YAML stream.
pub fn load_str(file: &str, text: &str) -> (Snapshot, LoadReport) {
    let mut loader = Loader::default();
    loader.add_str(file, text);
    loader.finish()
}

/// Files under `path` that the loader reads, in the order it reads them.
pub fn manifest_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect(path, &mut files, true)?;
    Ok(files)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>, explicit: bool) -> std::io::Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        // A dangling link or an entry removed meanwhile: reading it reports
        // it, if it is a manifest; the rest of the directory still loads.
        Err(_) if !explicit => {
            if path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json")) {
                out.push(path.to_path_buf());
            }
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for entry in entries {
            let hidden = entry.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if !hidden {
                collect(&entry, out, false)?;
            }
        }
    } else if explicit
        || path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
    {
        out.push(path.to_path_buf());
    }
    Ok(())
}

impl ParsedFile {
    /// Parses one YAML stream; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Self {
        let mut parsed = ParsedFile::default();
        for doc in split::documents(text) {
            let origin = Origin { file: file.to_string(), document: doc.index, line: doc.first_content_line };
            let value: Value = match serde_saphyr::from_str(doc.text) {
                Ok(v) => v,
                Err(e) => {
                    parsed.entries.push(Entry::Error(origin.error("", yaml_error(&e, doc.line))));
                    continue;
                }
            };
            parsed.add_value(&origin, value);
        }
        parsed
    }

    fn has_errors(&self) -> bool {
        self.entries.iter().any(|e| matches!(e, Entry::Error(_)))
    }

    fn unreadable(path: &Path, e: &std::io::Error) -> Self {
        let error = LoadError {
            file: path.display().to_string(),
            document: 0,
            line: 0,
            path: String::new(),
            message: format!("cannot read: {e}"),
        };
        ParsedFile { entries: vec![Entry::Error(error)], ignored_kinds: BTreeMap::new() }
    }

    /// Adds an already parsed document (also used for `kind: List` items).
    fn add_value(&mut self, origin: &Origin, value: Value) {
        if value.is_null() {
            return;
        }
        if !value.is_object() {
            self.error(origin.error("", "a document must be a mapping with apiVersion and kind"));
            return;
        }
        let kind = match value.get("kind") {
            Some(Value::String(k)) if !k.is_empty() => k.clone(),
            _ => {
                self.error(origin.error("kind", "missing or not a string"));
                return;
            }
        };
        let api_version = match value.get("apiVersion") {
            Some(Value::String(v)) if !v.is_empty() => v.clone(),
            _ => {
                self.error(origin.error("apiVersion", "missing or not a string"));
                return;
            }
        };
        if kind == "List" {
            let Some(Value::Array(items)) = value.get("items") else {
                self.error(origin.error("items", "a List needs a sequence of items"));
                return;
            };
            for (i, item) in items.clone().into_iter().enumerate() {
                let before = self.entries.len();
                self.add_value(origin, item);
                for entry in &mut self.entries[before..] {
                    if let Entry::Error(e) = entry {
                        e.path =
                            if e.path.is_empty() { format!("items[{i}]") } else { format!("items[{i}].{}", e.path) };
                    }
                }
            }
            return;
        }
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        match self.typed_object(origin, group, &api_version, &kind, value) {
            Ok(Some(parsed)) => self.entries.push(Entry::Object(Box::new(parsed))),
            Ok(None) => {}
            Err(e) => self.error(e),
        }
    }

    fn error(&mut self, e: LoadError) {
        self.entries.push(Entry::Error(e));
    }

    /// The typed object of a document, `None` for kinds Weft does not read.
    fn typed_object(
        &mut self,
        origin: &Origin,
        group: &str,
        api_version: &str,
        kind: &str,
        mut doc: Value,
    ) -> Result<Option<Parsed>, LoadError> {
        macro_rules! object {
            ($kind:literal, $variant:ident, $ty:ty, namespaced: $ns:expr, $defaults:expr) => {{
                defaults::metadata(&mut doc, $ns);
                let apply: fn(&mut Value) = $defaults;
                apply(&mut doc);
                schema_check(origin, api_version, $kind, &doc)?;
                let obj: $ty = typed(origin, doc)?;
                let key = key_of(origin, &obj.metadata, $ns)?;
                Object::$variant(Box::new(obj)).parsed(origin, $kind, key)
            }};
        }
        let parsed = match (group, kind) {
            ("gateway.networking.k8s.io", "GatewayClass") => {
                object!("GatewayClass", GatewayClass, weft_k8s_api::gateway::GatewayClass, namespaced: false, |_| {})
            }
            ("gateway.networking.k8s.io", "Gateway") => {
                object!("Gateway", Gateway, weft_k8s_api::gateway::Gateway, namespaced: true, defaults::gateway)
            }
            ("gateway.networking.k8s.io", "ListenerSet") => {
                object!("ListenerSet", ListenerSet, weft_k8s_api::gateway::ListenerSet, namespaced: true, defaults::listener_set)
            }
            ("gateway.networking.k8s.io", "HTTPRoute") => {
                object!("HTTPRoute", HttpRoute, weft_k8s_api::gateway::HttpRoute, namespaced: true, defaults::http_route)
            }
            ("gateway.networking.k8s.io", "GRPCRoute") => {
                object!("GRPCRoute", GrpcRoute, weft_k8s_api::gateway::GrpcRoute, namespaced: true, defaults::grpc_route)
            }
            ("gateway.networking.k8s.io", "TLSRoute") => {
                object!("TLSRoute", TlsRoute, weft_k8s_api::gateway::TlsRoute, namespaced: true, defaults::l4_route)
            }
            ("gateway.networking.k8s.io", "TCPRoute") => {
                object!("TCPRoute", TcpRoute, weft_k8s_api::gateway::TcpRoute, namespaced: true, defaults::l4_route)
            }
            ("gateway.networking.k8s.io", "ReferenceGrant") => {
                object!("ReferenceGrant", ReferenceGrant, weft_k8s_api::gateway::ReferenceGrant, namespaced: true, |_| {})
            }
            ("", "Service") => object!("Service", Service, Service, namespaced: true, defaults::service),
            ("discovery.k8s.io", "EndpointSlice") => {
                object!("EndpointSlice", EndpointSlice, EndpointSlice, namespaced: true, |_| {})
            }
            ("", "Namespace") => object!("Namespace", Namespace, Namespace, namespaced: false, defaults::namespace),
            ("weft.io", _) if api_version != weft_k8s_api::crds::API_VERSION => {
                return Err(origin.error(
                    "apiVersion",
                    format!("Weft serves {} only, not {api_version}", weft_k8s_api::crds::API_VERSION),
                ));
            }
            ("weft.io", "Mesh") => object!("Mesh", Mesh, weft_k8s_api::crds::Mesh, namespaced: false, |_| {}),
            ("weft.io", "MeshGatewayConfig") => {
                object!("MeshGatewayConfig", MeshGatewayConfig, weft_k8s_api::crds::MeshGatewayConfig, namespaced: false, |_| {})
            }
            ("weft.io", "MeshGatewayInstance") => {
                object!("MeshGatewayInstance", MeshGatewayInstance, weft_k8s_api::crds::MeshGatewayInstance, namespaced: true, |_| {})
            }
            ("weft.io", "MeshHTTPRoute") => {
                object!("MeshHTTPRoute", MeshHttpRoute, weft_k8s_api::crds::MeshHTTPRoute, namespaced: true, |_| {})
            }
            ("weft.io", "MeshTCPRoute") => {
                object!("MeshTCPRoute", MeshTcpRoute, weft_k8s_api::crds::MeshTCPRoute, namespaced: true, |_| {})
            }
            (
                "gateway.networking.k8s.io",
                "UDPRoute"
                | "BackendTLSPolicy"
                | "BackendTrafficPolicy"
                | "XBackendTrafficPolicy"
                | "XListenerSet"
                | "XMesh",
            ) => {
                // Gateway API kinds Weft does not implement.
                *self.ignored_kinds.entry(format!("{kind}.{group}")).or_default() += 1;
                return Ok(None);
            }
            ("gateway.networking.k8s.io", other) => {
                let known = [
                    "GatewayClass",
                    "Gateway",
                    "ListenerSet",
                    "HTTPRoute",
                    "GRPCRoute",
                    "TLSRoute",
                    "TCPRoute",
                    "ReferenceGrant",
                ];
                let lower = other.to_ascii_lowercase();
                let hint = known
                    .iter()
                    .find(|k| {
                        let k = k.to_ascii_lowercase();
                        k == lower || lower.starts_with(&k) || k.starts_with(&lower)
                    })
                    .map(|k| format!("; did you mean {k}?"))
                    .unwrap_or_default();
                return Err(origin.error("kind", format!("unknown Gateway API kind {other:?}{hint}")));
            }
            ("weft.io", "MeshGateway") => {
                // Generated by the translator from Gateways; reading it back
                // (e.g. from `kubectl get -o yaml` output) is harmless.
                *self.ignored_kinds.entry("MeshGateway.weft.io (generated by Weft, not read)".into()).or_default() += 1;
                return Ok(None);
            }
            ("weft.io", other) => {
                let known = ["Mesh", "MeshGatewayConfig", "MeshGatewayInstance", "MeshHTTPRoute", "MeshTCPRoute"];
                let lower = other.to_ascii_lowercase();
                let hint = known
                    .iter()
                    .find(|k| k.to_ascii_lowercase() == lower || k.to_ascii_lowercase().contains(&lower))
                    .map(|k| format!("; did you mean {k}?"))
                    .unwrap_or_default();
                return Err(origin.error("kind", format!("unknown Weft kind {other:?}{hint}")));
            }
            ("", "Secret") => {
                defaults::metadata(&mut doc, true);
                let secret: Secret = typed(origin, doc).map_err(redact_secret_error)?;
                let key = key_of(origin, &secret.metadata, true)?;
                let info = secret::summarize(&secret);
                let material = match info.tls {
                    Some(Ok(())) => secret::material(&secret),
                    _ => None,
                };
                Object::Secret(Box::new(info), material.map(Box::new)).parsed(origin, "Secret", key)
            }
            _ => {
                *self
                    .ignored_kinds
                    .entry(format!("{kind}.{}", if group.is_empty() { "core" } else { group }))
                    .or_default() += 1;
                return Ok(None);
            }
        };
        Ok(Some(parsed))
    }
}

/// The document against its CRD schema, as the API server checks it: the
/// first field error, with how many more there are.
fn schema_check(origin: &Origin, api_version: &str, kind: &str, doc: &Value) -> Result<(), LoadError> {
    // Status is written by controllers (the API server validates it only on
    // the status subresource); a document carrying one is checked without.
    let errors = match doc.get("status") {
        Some(_) => {
            let mut spec_only = doc.clone();
            if let Some(map) = spec_only.as_object_mut() {
                map.remove("status");
            }
            schemas::validate(api_version, kind, &spec_only)
        }
        None => schemas::validate(api_version, kind, doc),
    };
    let Some(first) = errors.first() else { return Ok(()) };
    let more = match errors.len() - 1 {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    };
    Err(origin.error(first.field.clone(), format!("{}{more}", first.detail_message())))
}

impl Loader {
    /// Reads a file or a directory.
    pub fn add_path(&mut self, path: &Path) {
        let files = match manifest_files(path) {
            Ok(files) => files,
            Err(e) => {
                self.files.push(ParsedFile::unreadable(path, &e));
                return;
            }
        };
        for file in files {
            match read_manifest(&file) {
                Ok(text) => self.add_str(&file.display().to_string(), &text),
                Err(e) => self.files.push(ParsedFile::unreadable(&file, &e)),
            }
        }
    }

    /// Reads one YAML stream; `file` names it in errors.
    pub fn add_str(&mut self, file: &str, text: &str) {
        self.files.push(ParsedFile::parse(file, text));
    }

    /// Adds one already parsed document; `file` and `document` name it in
    /// errors. Used by sources that hold objects as JSON (tests, watchers).
    pub fn add_document(&mut self, file: &str, document: usize, value: Value) {
        let origin = Origin { file: file.to_string(), document, line: 1 };
        let mut parsed = ParsedFile::default();
        parsed.add_value(&origin, value);
        self.files.push(parsed);
    }

    /// The snapshot and what happened while loading it.
    pub fn finish(self) -> (Snapshot, LoadReport) {
        assemble(self.files)
    }
}

/// Puts parsed files together in order: the first definition of an object
/// wins and later copies are reported.
fn assemble(files: impl IntoIterator<Item = ParsedFile>) -> (Snapshot, LoadReport) {
    let mut snapshot = Snapshot::default();
    let mut report = LoadReport::default();
    let mut seen: BTreeMap<(&'static str, ObjectKey), Origin> = BTreeMap::new();
    for file in files {
        for (kind, n) in file.ignored_kinds {
            *report.ignored_kinds.entry(kind).or_default() += n;
        }
        for entry in file.entries {
            match entry {
                Entry::Error(e) => report.errors.push(e),
                Entry::Object(parsed) => {
                    let Parsed { origin, kind, key, object } = *parsed;
                    if let Some(first) = seen.get(&(kind, key.clone())) {
                        report.errors.push(origin.error(
                            "metadata.name",
                            format!(
                                "{kind} {key} is already defined in {} document {}; this copy is ignored",
                                first.file, first.document
                            ),
                        ));
                        continue;
                    }
                    seen.insert((kind, key.clone()), origin);
                    object.insert_into(&mut snapshot, key, &mut report.tls_materials);
                    report.loaded += 1;
                }
            }
        }
    }
    (snapshot, report)
}

/// A typed object of one of the kinds a [`Snapshot`] holds.
#[derive(Clone, Debug)]
enum Object {
    GatewayClass(Box<weft_k8s_api::gateway::GatewayClass>),
    Gateway(Box<weft_k8s_api::gateway::Gateway>),
    ListenerSet(Box<weft_k8s_api::gateway::ListenerSet>),
    HttpRoute(Box<weft_k8s_api::gateway::HttpRoute>),
    GrpcRoute(Box<weft_k8s_api::gateway::GrpcRoute>),
    TlsRoute(Box<weft_k8s_api::gateway::TlsRoute>),
    TcpRoute(Box<weft_k8s_api::gateway::TcpRoute>),
    ReferenceGrant(Box<weft_k8s_api::gateway::ReferenceGrant>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Namespace(Box<Namespace>),
    Secret(Box<crate::snapshot::SecretInfo>, Option<Box<secret::TlsMaterial>>),
    Mesh(Box<weft_k8s_api::crds::Mesh>),
    MeshGatewayConfig(Box<weft_k8s_api::crds::MeshGatewayConfig>),
    MeshGatewayInstance(Box<weft_k8s_api::crds::MeshGatewayInstance>),
    MeshHttpRoute(Box<weft_k8s_api::crds::MeshHTTPRoute>),
    MeshTcpRoute(Box<weft_k8s_api::crds::MeshTCPRoute>),
}

impl Object {
    /// The object's metadata (none for Secrets, which keep only what the
    /// translator reads).
    fn meta_mut(&mut self) -> Option<&mut ObjectMeta> {
        Some(match self {
            Object::GatewayClass(o) => &mut o.metadata,
            Object::Gateway(o) => &mut o.metadata,
            Object::ListenerSet(o) => &mut o.metadata,
            Object::HttpRoute(o) => &mut o.metadata,
            Object::GrpcRoute(o) => &mut o.metadata,
            Object::TlsRoute(o) => &mut o.metadata,
            Object::TcpRoute(o) => &mut o.metadata,
            Object::ReferenceGrant(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::Namespace(o) => &mut o.metadata,
            Object::Secret(..) => return None,
            Object::Mesh(o) => &mut o.metadata,
            Object::MeshGatewayConfig(o) => &mut o.metadata,
            Object::MeshGatewayInstance(o) => &mut o.metadata,
            Object::MeshHttpRoute(o) => &mut o.metadata,
            Object::MeshTcpRoute(o) => &mut o.metadata,
        })
    }

    fn parsed(self, origin: &Origin, kind: &'static str, key: ObjectKey) -> Parsed {
        Parsed { origin: origin.clone(), kind, key, object: self }
    }

    /// Cluster-scoped kinds are keyed by name (their key has no namespace).
    fn insert_into(self, s: &mut Snapshot, key: ObjectKey, tls: &mut BTreeMap<ObjectKey, secret::TlsMaterial>) {
        match self {
            Object::GatewayClass(o) => insert(&mut s.gateway_classes, key.name, *o),
            Object::Gateway(o) => insert(&mut s.gateways, key, *o),
            Object::ListenerSet(o) => insert(&mut s.listener_sets, key, *o),
            Object::HttpRoute(o) => insert(&mut s.http_routes, key, *o),
            Object::GrpcRoute(o) => insert(&mut s.grpc_routes, key, *o),
            Object::TlsRoute(o) => insert(&mut s.tls_routes, key, *o),
            Object::TcpRoute(o) => insert(&mut s.tcp_routes, key, *o),
            Object::ReferenceGrant(o) => insert(&mut s.reference_grants, key, *o),
            Object::Service(o) => insert(&mut s.services, key, *o),
            Object::EndpointSlice(o) => insert(&mut s.endpoint_slices, key, *o),
            Object::Namespace(o) => insert(&mut s.namespaces, key.name, *o),
            Object::Secret(o, material) => {
                match material {
                    Some(m) => tls.insert(key.clone(), *m),
                    None => tls.remove(&key),
                };
                insert(&mut s.secrets, key, *o)
            }
            Object::Mesh(o) => insert(&mut s.meshes, key.name, *o),
            Object::MeshGatewayConfig(o) => insert(&mut s.mesh_gateway_configs, key.name, *o),
            Object::MeshGatewayInstance(o) => insert(&mut s.mesh_gateway_instances, key, *o),
            Object::MeshHttpRoute(o) => insert(&mut s.mesh_http_routes, key, *o),
            Object::MeshTcpRoute(o) => insert(&mut s.mesh_tcp_routes, key, *o),
        }
    }
}

fn insert<K: Ord, T>(map: &mut BTreeMap<K, T>, key: K, obj: T) {
    map.insert(key, obj);
}

/// Deserializes with the failing field's path in the error.
fn typed<T: DeserializeOwned>(origin: &Origin, doc: Value) -> Result<T, LoadError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        origin.error(path, e.into_inner().to_string())
    })
}

/// Secret values must never reach a log or a terminal: serde's messages
/// quote the offending value, so for Secrets only the field and what was
/// expected are kept.
fn redact_secret_error(mut e: LoadError) -> LoadError {
    if e.path.starts_with("data") || e.path.starts_with("stringData") {
        e.message = if e.path.starts_with("data.") {
            "must be base64-encoded (the value is not shown)".into()
        } else if e.path.starts_with("stringData.") {
            "must be a string (the value is not shown)".into()
        } else {
            "must be a map of key to value (the value is not shown)".into()
        };
    }
    e
}

/// A YAML syntax error, with its line counted from the start of the file.
fn yaml_error(e: &serde_saphyr::Error, document_line: usize) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("invalid YAML");
    // Drop the "error: line L column C: " prefix; the location is added
    // below, relative to the file.
    let message = first.strip_prefix("error: ").unwrap_or(first);
    let message = match message.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map(|(_, m)| m).unwrap_or(rest),
        None => message,
    };
    match e.location() {
        Some(loc) if loc.line() > 0 => {
            format!("invalid YAML at line {} column {}: {message}", document_line as u64 + loc.line() - 1, loc.column())
        }
        _ => format!("invalid YAML: {message}"),
    }
}

fn key_of(
    origin: &Origin,
    meta: &weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    namespaced: bool,
) -> Result<ObjectKey, LoadError> {
    let name = meta.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| origin.error("metadata.name", "missing"))?;
    let namespace = if namespaced { meta.namespace.clone().unwrap_or_default() } else { String::new() };
    Ok(ObjectKey::new(namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_document_is_reported_and_the_others_load() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {ports: [{port: 80}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRefs: [{name: a, port: \"eighty\"}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\n";
        let (snap, report) = load_str("in.yaml", text);
        assert_eq!(snap.services.len(), 2, "{report:?}");
        assert_eq!(report.errors.len(), 1);
        let err = &report.errors[0];
        assert_eq!((err.document, err.line), (2, 6));
        assert_eq!(err.path, "spec.rules[0].backendRefs[0].port");
        let shown = err.to_string();
        assert!(
            shown.starts_with("in.yaml: document 2 (line 6): field `spec.rules[0].backendRefs[0].port`: "),
            "{shown}"
        );
    }

    #[test]
    fn defaults_and_namespace_are_applied() {
        let (snap, report) =
            load_str("x", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n");
        assert!(report.errors.is_empty());
        let svc = &snap.services[&ObjectKey::new("default", "a")];
        let port = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        assert_eq!(svc.metadata.generation, Some(1));
    }

    #[test]
    fn duplicates_and_unknown_kinds() {
        let doc = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
        let text = format!(
            "{doc}---\n{doc}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n---\n- 1\n---\nkind: Service\n"
        );
        let (snap, report) = load_str("x", &text);
        assert_eq!(snap.namespaces.len(), 1);
        assert_eq!(report.ignored_kinds.get("Deployment.apps"), Some(&1));
        let messages: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].contains("already defined in x document 1"));
        assert!(messages[1].contains("must be a mapping"));
        assert!(messages[2].contains("field `apiVersion`"));
    }

    #[test]
    fn secrets_keep_no_data() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\ndata: {tls.crt: SGVsbG8K, tls.key: SGVsbG8K}\n";
        let (snap, report) = load_str("x", text);
        assert!(report.errors.is_empty(), "{report:?}");
        let info = &snap.secrets[&ObjectKey::new("default", "s")];
        assert_eq!(info.keys.iter().cloned().collect::<Vec<_>>(), vec!["tls.crt", "tls.key"]);
        let err = info.tls.clone().unwrap().unwrap_err();
        assert!(!err.contains("SGVsbG8"), "{err}");
    }

    #[test]
    fn the_cache_reparses_changed_files_and_forgets_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let svc = |name: &str, port: u16| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: x}}\nspec: {{ports: [{{port: {port}}}]}}\n"
            )
        };
        std::fs::write(dir.path().join("a.yaml"), svc("a", 80)).unwrap();
        std::fs::write(dir.path().join("b.yaml"), svc("b", 80)).unwrap();
        let paths = [dir.path().to_path_buf()];
        let mut cache = ManifestCache::default();
        let (first, report) = cache.load(&paths);
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(undated(first), load_paths(&paths).0);

        // Same length, different content: still re-read.
        std::fs::write(dir.path().join("b.yaml"), svc("b", 81)).unwrap();
        // A copy of `a` in a later file is a duplicate even though `a.yaml`
        // itself comes from the cache.
        std::fs::write(dir.path().join("c.yaml"), svc("a", 90)).unwrap();
        let (second, report) = cache.load(&paths);
        let second = undated(second);
        assert_eq!(second, load_paths(&paths).0);
        let b = &second.services[&ObjectKey::new("x", "b")];
        assert_eq!(b.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port, 81);
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert!(report.errors[0].message.contains("already defined in"), "{}", report.errors[0]);

        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        let (third, report) = cache.load(&paths);
        assert!(!third.services.contains_key(&ObjectKey::new("x", "b")));
        assert_eq!(third.services.len(), 1);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(cache.files.len(), 2);
    }

    /// The snapshot without the creation times the cache stamps.
    fn undated(mut s: Snapshot) -> Snapshot {
        for svc in s.services.values_mut() {
            svc.metadata.creation_timestamp = None;
        }
        s
    }

    #[test]
    fn the_cache_dates_objects_when_first_loaded_and_keeps_the_date() {
        let dir = tempfile::tempdir().unwrap();
        let route = |name: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: {name}, namespace: x}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: a, port: 80}}]}}]\n"
            )
        };
        std::fs::write(dir.path().join("old.yaml"), route("zz-old")).unwrap();
        let paths = [dir.path().to_path_buf()];
        let mut cache = ManifestCache::default();
        let created =
            |s: &Snapshot, name: &str| s.tcp_routes[&ObjectKey::new("x", name)].metadata.creation_timestamp.clone();
        let (first, _) = cache.load(&paths);
        let old = created(&first, "zz-old").expect("dated on first load");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("new.yaml"), route("aa-new")).unwrap();
        let (second, _) = cache.load(&paths);
        assert_eq!(created(&second, "zz-old"), Some(old.clone()), "a reload keeps the first date");
        assert!(created(&second, "aa-new").expect("dated") > old, "a later object is newer");
        // A date given in the file is kept.
        std::fs::write(
            dir.path().join("dated.yaml"),
            route("dated").replace("namespace: x}", "namespace: x, creationTimestamp: '2020-01-01T00:00:00Z'}"),
        )
        .unwrap();
        let (third, _) = cache.load(&paths);
        assert_eq!(created(&third, "dated").unwrap().0.to_string(), "2020-01-01T00:00:00Z");
    }

    const SERVICE_A: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {ports: [{port: 80}]}\n";
    const SERVICE_B: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: x}\nspec: {ports: [{port: 80}]}\n";

    #[test]
    fn a_broken_file_keeps_its_last_good_objects_and_the_others_move_on() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), SERVICE_A).unwrap();
        std::fs::write(dir.path().join("b.yaml"), SERVICE_B).unwrap();
        let mut cache = ManifestCache::default();
        let (snap, report) = cache.load(&[dir.path().to_path_buf()]);
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(snap.services.len(), 2);

        // a.yaml breaks; b.yaml changes: b's change applies, a keeps its
        // last good Service, and a's error is reported.
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {ports: [{port: eighty}]}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.yaml"), SERVICE_B.replace("port: 80", "port: 81")).unwrap();
        let (snap, report) = cache.load(&[dir.path().to_path_buf()]);
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert!(report.errors[0].to_string().contains("a.yaml"), "{}", report.errors[0]);
        let port = |name: &str| {
            let key = ObjectKey { namespace: "x".into(), name: name.into() };
            snap.services[&key].spec.as_ref().and_then(|s| s.ports.as_ref()).map(|p| p[0].port)
        };
        assert_eq!(port("a"), Some(80), "the broken file's last good version");
        assert_eq!(port("b"), Some(81), "the other file's change");
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read_and_misspelt_kinds_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), SERVICE_A).unwrap();
        let fifo = dir.path().join("fifo.yaml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(made.success());
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling.yaml")).unwrap();
        let big = "#".repeat(MAX_FILE_BYTES as usize + 1);
        std::fs::write(dir.path().join("big.yaml"), big).unwrap();
        std::fs::write(
            dir.path().join("typo.yaml"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoutes\nmetadata: {name: r, namespace: x}\n",
        )
        .unwrap();
        let started = std::time::Instant::now();
        let (snap, report) = ManifestCache::default().load(&[dir.path().to_path_buf()]);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "the load blocked");
        assert_eq!(snap.services.len(), 1, "{report:?}");
        let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        let find = |file: &str, text: &str| errors.iter().any(|e| e.contains(file) && e.contains(text));
        assert!(find("fifo.yaml", "not a regular file"), "{errors:#?}");
        assert!(find("zero.yaml", "not a regular file"), "{errors:#?}");
        assert!(find("dangling.yaml", "cannot read"), "{errors:#?}");
        assert!(find("big.yaml", "larger than"), "{errors:#?}");
        assert!(find("typo.yaml", "did you mean HTTPRoute?"), "{errors:#?}");
        assert_eq!(errors.len(), 5, "{errors:#?}");
    }

    #[test]
    fn values_outside_the_crd_schema_are_refused_with_their_field() {
        let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: x}\nspec:\n  rules:\n  - backendRefs: [{name: a, port: 80, weight: 2000000}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: ok, namespace: x}\nspec:\n  rules:\n  - backendRefs: [{name: a, port: 80, weight: 5}]\n";
        let (snap, report) = load_str("weights.yaml", text);
        assert_eq!(snap.http_routes.len(), 1, "{report:?}");
        assert_eq!(report.errors.len(), 1);
        let shown = report.errors[0].to_string();
        assert!(
            shown.contains("field `spec.rules[0].backendRefs[0].weight`")
                && shown.contains("less than or equal to 1000000"),
            "{shown}"
        );
    }
}
