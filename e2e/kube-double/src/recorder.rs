//! The request recorder: one entry per request, named as the audit log
//! names them, so tests can assert what a controller did (and RBAC
//! coverage can be checked against the chart's roles).

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// The authenticated user (`system:anonymous` without a token).
    pub user: String,
    /// get, list, watch, create, update, patch, delete, deletecollection
    /// (audit-log verbs); non-resource requests are `get`/`post`...
    pub verb: String,
    pub group: String,
    pub version: String,
    /// The plural resource; empty for non-resource URLs.
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// `fieldManager` of writes (query, or derived from the User-Agent).
    pub field_manager: String,
    pub content_type: String,
    /// The HTTP status answered (200 for watches that started).
    pub code: u16,
    /// The request path (for non-resource URLs such as `/version`).
    pub path: String,
    pub user_agent: String,
    #[serde(with = "time_format")]
    pub at: SystemTime,
}

mod time_format {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::util::rfc3339_micros(*t))
    }

    /// Accepts the RFC 3339 form written by `serialize` (UTC, microseconds).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad time {s}")))
    }

    fn parse(s: &str) -> Option<SystemTime> {
        let s = s.strip_suffix('Z')?;
        let (date, time) = s.split_once('T')?;
        let mut d = date.split('-').map(|x| x.parse::<i64>());
        let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
        let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
        let mut t = hms.split(':').map(|x| x.parse::<i64>());
        let (h, mi, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
        let micros: u64 = format!("{frac:0<6}")[..6].parse().ok()?;
        let (yy, mm) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
        let era = yy.div_euclid(400);
        let yoe = yy - era * 400;
        let doy = (153 * mm + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
        Some(UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_micros(micros))
    }
}
