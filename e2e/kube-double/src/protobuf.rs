//! Request bodies in Kubernetes protobuf (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed clients send for imperative commands (`kubectl
//! create token|serviceaccount|namespace|configmap|secret`). Only those
//! kinds (and TokenRequest) are decoded, into the JSON the rest of the double
//! works on; other kinds answer 415 (send JSON or YAML instead).

use crate::error::ApiError;
use base64::Engine as _;
use serde_json::{Map, Value, json};

type Field<'a> = (u64, Result<u64, &'a [u8]>);

/// Reads protobuf fields: (number, varint or length-delimited bytes).
fn fields(mut b: &[u8]) -> Option<Vec<Field<'_>>> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        match tag & 7 {
            0 => out.push((tag >> 3, Ok(varint(&mut b)?))),
            2 => {
                let len = varint(&mut b)? as usize;
                if len > b.len() {
                    return None;
                }
                out.push((tag >> 3, Err(&b[..len])));
                b = &b[len..];
            }
            1 => b = b.get(8..)?,
            5 => b = b.get(4..)?,
            _ => return None,
        }
    }
    Some(out)
}

fn bytes_of<'a>(fs: &[Field<'a>], n: u64) -> Option<&'a [u8]> {
    fs.iter().find_map(|(k, v)| (*k == n).then_some(*v).and_then(|v| v.err()))
}

fn str_of(b: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

/// A `map<string,string>` (or `map<string,bytes>` as base64) field.
fn map_of(fs: &[Field<'_>], n: u64, as_base64: bool) -> Option<Value> {
    let mut m = Map::new();
    for (k, v) in fs {
        if *k != n {
            continue;
        }
        let entry = fields(v.err()?)?;
        let key = String::from_utf8_lossy(bytes_of(&entry, 1).unwrap_or(&[])).into_owned();
        let val = bytes_of(&entry, 2).unwrap_or(&[]);
        let val =
            if as_base64 { Value::String(base64::engine::general_purpose::STANDARD.encode(val)) } else { str_of(val) };
        m.insert(key, val);
    }
    (!m.is_empty()).then_some(Value::Object(m))
}

fn strings_of(fs: &[Field<'_>], n: u64) -> Vec<Value> {
    fs.iter().filter(|(k, _)| *k == n).filter_map(|(_, v)| v.err().map(str_of)).collect()
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let fs = fields(b)?;
    let mut m = json!({});
    for (n, key) in [(1, "name"), (2, "generateName"), (3, "namespace")] {
        if let Some(v) = bytes_of(&fs, n) {
            m[key] = str_of(v);
        }
    }
    if let Some(l) = map_of(&fs, 11, false) {
        m["labels"] = l;
    }
    if let Some(a) = map_of(&fs, 12, false) {
        m["annotations"] = a;
    }
    let fin = strings_of(&fs, 14);
    if !fin.is_empty() {
        m["finalizers"] = Value::Array(fin);
    }
    Some(m)
}

/// The envelope: `k8s\0` + runtime.Unknown{typeMeta{apiVersion, kind}, raw}.
fn envelope(body: &[u8]) -> Option<(String, String, &[u8])> {
    let unknown = fields(body.strip_prefix(b"k8s\0")?)?;
    let tm = fields(bytes_of(&unknown, 1).unwrap_or(&[]))?;
    let api_version = String::from_utf8_lossy(bytes_of(&tm, 1).unwrap_or(&[])).into_owned();
    let kind = String::from_utf8_lossy(bytes_of(&tm, 2).unwrap_or(&[])).into_owned();
    Some((api_version, kind, bytes_of(&unknown, 2)?))
}

pub fn is_protobuf(body: &[u8]) -> bool {
    body.starts_with(b"k8s\0")
}

/// Decodes a protobuf body into JSON, for the kinds kubectl creates
/// imperatively.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let bad = || ApiError::bad_request("invalid protobuf body");
    let (api_version, kind, raw) = envelope(body).ok_or_else(bad)?;
    let fs = fields(raw).ok_or_else(bad)?;
    let meta = bytes_of(&fs, 1).and_then(object_meta).unwrap_or(json!({}));
    let mut obj = json!({"apiVersion": if api_version.is_empty() { "v1".to_string() } else { api_version.clone() }, "kind": kind, "metadata": meta});
    match kind.as_str() {
        "Namespace" | "ServiceAccount" => {
            if kind == "ServiceAccount"
                && let Some(Ok(v)) = fs.iter().find(|(n, _)| *n == 4).map(|(_, v)| *v)
            {
                obj["automountServiceAccountToken"] = json!(v != 0);
            }
        }
        "ConfigMap" => {
            if let Some(d) = map_of(&fs, 2, false) {
                obj["data"] = d;
            }
            if let Some(d) = map_of(&fs, 3, true) {
                obj["binaryData"] = d;
            }
        }
        "Secret" => {
            if let Some(d) = map_of(&fs, 2, true) {
                obj["data"] = d;
            }
            if let Some(t) = bytes_of(&fs, 3) {
                obj["type"] = str_of(t);
            }
            if let Some(d) = map_of(&fs, 4, false) {
                obj["stringData"] = d;
            }
        }
        "TokenRequest" => {
            let spec_raw = bytes_of(&fs, 2).unwrap_or(&[]);
            let sfs = fields(spec_raw).ok_or_else(bad)?;
            let mut spec = json!({"audiences": strings_of(&sfs, 1)});
            if let Some(Ok(x)) = sfs.iter().find(|(n, _)| *n == 4).map(|(_, v)| *v) {
                spec["expirationSeconds"] = json!(x);
            }
            if let Some(r) = bytes_of(&sfs, 3) {
                let bfs = fields(r).ok_or_else(bad)?;
                let mut bound = json!({});
                for (n, key) in [(1, "kind"), (2, "apiVersion"), (3, "name"), (4, "uid")] {
                    if let Some(v) = bytes_of(&bfs, n) {
                        bound[key] = str_of(v);
                    }
                }
                spec["boundObjectRef"] = bound;
            }
            obj["spec"] = spec;
        }
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the kube double decodes protobuf only for Namespace, ServiceAccount, ConfigMap, Secret and TokenRequest (got {other}); send JSON or YAML"
            )));
        }
    }
    Ok(obj)
}
