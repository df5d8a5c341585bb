//! Small helpers shared by the modules: time stamps, identifiers, JSON access.

use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 3339 time in whole seconds (`2026-01-02T03:04:05Z`), the precision the
/// API server uses for `metav1.Time`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64;
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// RFC 3339 with microseconds, as `metav1.MicroTime` (used for the recorder).
pub fn rfc3339_micros(t: SystemTime) -> String {
    let dur = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let (y, mo, d, h, mi, s) = civil(dur.as_secs() as i64);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:06}Z", dur.subsec_micros())
}

pub fn now() -> String {
    rfc3339(SystemTime::now())
}

/// Seconds since the epoch to civil date and time (Howard Hinnant's algorithm).
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d, (rem / 3600) as u32, ((rem % 3600) / 60) as u32, (rem % 60) as u32)
}

/// A random version-4 UUID string, the shape of `metadata.uid`.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = fastrand::u8(..);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The alphabet the API server uses for `generateName` suffixes (no vowels,
/// no confusable characters).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn random_suffix(n: usize) -> String {
    (0..n).map(|_| ALPHANUMS[fastrand::usize(..ALPHANUMS.len())] as char).collect()
}

/// A stable suffix derived from a string (used for names that must not change
/// between reconciliations, e.g. an EndpointSlice per Service).
pub fn stable_suffix(seed: &str, n: usize) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seed.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (0..n)
        .map(|_| {
            let c = ALPHANUMS[(h % ALPHANUMS.len() as u64) as usize] as char;
            h /= ALPHANUMS.len() as u64;
            c
        })
        .collect()
}

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn namespace_of(obj: &Value) -> &str {
    meta_str(obj, "namespace").unwrap_or("")
}

pub fn uid_of(obj: &Value) -> &str {
    meta_str(obj, "uid").unwrap_or("")
}

/// `metadata` as a mutable map, created when absent.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let m = obj.as_object_mut().expect("object");
    let entry = m.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("object")
}

pub fn labels_of(obj: &Value) -> Option<&Map<String, Value>> {
    meta(obj).and_then(|m| m.get("labels")).and_then(Value::as_object)
}

pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    labels_of(obj).and_then(|l| l.get(key)).and_then(Value::as_str)
}

/// Follows a dotted path of object keys.
pub fn path<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in dotted.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

pub fn path_str<'a>(obj: &'a Value, dotted: &str) -> Option<&'a str> {
    path(obj, dotted).and_then(Value::as_str)
}

/// `group/version`, or `version` for the core group.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
}

/// Splits an apiVersion into (group, version).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Parses a multi-document YAML (or JSON) text into JSON values, skipping
/// empty documents.
pub fn parse_yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Parses a request body that may be JSON or YAML (server-side apply accepts both).
pub fn parse_json_or_yaml(body: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(json_err) => {
            let text = std::str::from_utf8(body).map_err(|_| format!("body is not UTF-8: {json_err}"))?;
            serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
        }
    }
}
