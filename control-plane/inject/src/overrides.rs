//! Per-pod settings from `weft.io/` annotations. A value that cannot be
//! used is an error naming the annotation: a pod whose capture exclusions
//! or resources silently fell back to defaults would fail later, far from
//! the typo.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::InjectError;

/// Inbound ports that bypass the proxy.
pub const EXCLUDE_INBOUND_PORTS: &str = "weft.io/exclude-inbound-ports";
/// Outbound ports that bypass the proxy.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "weft.io/exclude-outbound-ports";
/// Outbound IPv4 CIDRs that bypass the proxy.
pub const EXCLUDE_OUTBOUND_CIDRS: &str = "weft.io/exclude-outbound-cidrs";
/// Proxy resources.
pub const PROXY_CPU_REQUEST: &str = "weft.io/proxy-cpu-request";
pub const PROXY_MEMORY_REQUEST: &str = "weft.io/proxy-memory-request";
pub const PROXY_CPU_LIMIT: &str = "weft.io/proxy-cpu-limit";
pub const PROXY_MEMORY_LIMIT: &str = "weft.io/proxy-memory-limit";
/// Proxy log level (`error`, `warn`, `info`, `debug`, `trace`).
pub const PROXY_LOG_LEVEL: &str = "weft.io/proxy-log-level";
/// `false` puts the proxy in a regular container (for nodes older than
/// 1.29, whose kubelets ignore `restartPolicy` on init containers).
pub const NATIVE_SIDECAR: &str = "weft.io/native-sidecar";
/// The proxy version a pod was injected with (written by injection).
pub const PROXY_VERSION: &str = "weft.io/proxy-version";

/// What annotations of one pod ask for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<String>,
    pub requests: BTreeMap<String, Quantity>,
    pub limits: BTreeMap<String, Quantity>,
    pub log_level: Option<String>,
    pub native_sidecar: Option<bool>,
}

fn ports(annotation: &str, value: &str) -> Result<Vec<u16>, InjectError> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u16>() {
            Ok(p) if p > 0 => out.push(p),
            _ => return Err(InjectError::annotation(annotation, value, format!("{part:?} is not a port (1-65535)"))),
        }
    }
    Ok(out)
}

fn cidrs(annotation: &str, value: &str) -> Result<Vec<String>, InjectError> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (ip, prefix) = part.split_once('/').unwrap_or((part, "32"));
        let prefix_ok = prefix.parse::<u8>().is_ok_and(|p| p <= 32);
        if ip.parse::<Ipv4Addr>().is_err() || !prefix_ok {
            return Err(InjectError::annotation(annotation, value, format!("{part:?} is not an IPv4 address or CIDR")));
        }
        out.push(part.to_string());
    }
    Ok(out)
}

/// Whether `s` is a Kubernetes quantity (decimal number with an optional
/// binary, decimal or exponent suffix).
fn is_quantity(s: &str) -> bool {
    let s = s.trim();
    let digits_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number = number.strip_prefix(['+', '-']).unwrap_or(number);
    let valid_number = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit())
        && number.chars().all(|c| c.is_ascii_digit() || c == '.');
    let valid_suffix =
        matches!(suffix, "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei")
            || (suffix.starts_with(['e', 'E'])
                && suffix[1..].strip_prefix(['+', '-']).unwrap_or(&suffix[1..]).chars().all(|c| c.is_ascii_digit())
                && suffix.len() > 1);
    valid_number && valid_suffix
}

impl Overrides {
    /// Reads the pod's annotations.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Result<Self, InjectError> {
        let mut o = Overrides::default();
        if let Some(v) = annotations.get(EXCLUDE_INBOUND_PORTS) {
            o.exclude_inbound_ports = ports(EXCLUDE_INBOUND_PORTS, v)?;
        }
        if let Some(v) = annotations.get(EXCLUDE_OUTBOUND_PORTS) {
            o.exclude_outbound_ports = ports(EXCLUDE_OUTBOUND_PORTS, v)?;
        }
        if let Some(v) = annotations.get(EXCLUDE_OUTBOUND_CIDRS) {
            o.exclude_outbound_cidrs = cidrs(EXCLUDE_OUTBOUND_CIDRS, v)?;
        }
        for (annotation, resource, limit) in [
            (PROXY_CPU_REQUEST, "cpu", false),
            (PROXY_MEMORY_REQUEST, "memory", false),
            (PROXY_CPU_LIMIT, "cpu", true),
            (PROXY_MEMORY_LIMIT, "memory", true),
        ] {
            let Some(v) = annotations.get(annotation) else { continue };
            if !is_quantity(v) {
                return Err(InjectError::annotation(annotation, v, "not a Kubernetes quantity (e.g. 100m, 64Mi)"));
            }
            let target = if limit { &mut o.limits } else { &mut o.requests };
            target.insert(resource.to_string(), Quantity(v.trim().to_string()));
        }
        if let Some(v) = annotations.get(PROXY_LOG_LEVEL) {
            let level = v.trim().to_ascii_lowercase();
            if !matches!(level.as_str(), "error" | "warn" | "info" | "debug" | "trace") {
                return Err(InjectError::annotation(PROXY_LOG_LEVEL, v, "use error, warn, info, debug or trace"));
            }
            o.log_level = Some(level);
        }
        if let Some(v) = annotations.get(NATIVE_SIDECAR) {
            o.native_sidecar = Some(match v.trim() {
                "true" => true,
                "false" => false,
                _ => return Err(InjectError::annotation(NATIVE_SIDECAR, v, "use \"true\" or \"false\"")),
            });
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Overrides, InjectError> {
        Overrides::from_annotations(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn good_values_are_read_and_bad_ones_name_their_annotation() {
        let o = parse(&[
            (EXCLUDE_INBOUND_PORTS, "8081, 9090"),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/8,169.254.169.254"),
            (PROXY_MEMORY_LIMIT, "64Mi"),
            (PROXY_CPU_REQUEST, "0.1"),
            (PROXY_LOG_LEVEL, "DEBUG"),
            (NATIVE_SIDECAR, "false"),
        ])
        .unwrap();
        assert_eq!(o.exclude_inbound_ports, vec![8081, 9090]);
        assert_eq!(o.exclude_outbound_cidrs, vec!["10.0.0.0/8", "169.254.169.254"]);
        assert_eq!(o.limits["memory"].0, "64Mi");
        assert_eq!(o.requests["cpu"].0, "0.1");
        assert_eq!((o.log_level.as_deref(), o.native_sidecar), (Some("debug"), Some(false)));
        for (annotation, value) in [
            (EXCLUDE_INBOUND_PORTS, "80,http"),
            (EXCLUDE_OUTBOUND_PORTS, "70000"),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/33"),
            (PROXY_MEMORY_LIMIT, "lots"),
            (PROXY_CPU_LIMIT, "1.2.3"),
            (PROXY_LOG_LEVEL, "loud"),
            (NATIVE_SIDECAR, "yes"),
        ] {
            let e = parse(&[(annotation, value)]).unwrap_err().to_string();
            assert!(e.contains(annotation), "{e}");
        }
    }

    #[test]
    fn quantities() {
        for ok in ["1", "100m", "0.5", "64Mi", "1Gi", "1e3", "2E-2", "128974848"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "1x", "1.2.3", "Mi", "1e", "--1"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
