//! Application probes under mutual TLS.
//!
//! The kubelet probes from the node, in plaintext, to the pod's address.
//! With inbound capture that connection reaches the proxy, which in a
//! Strict mesh refuses plaintext — the classic "pod never ready after
//! injection". Two ways out: leave probe ports out of the capture (which
//! leaves the application's serving port open in plaintext to anyone, since
//! probes usually hit the serving port), or send probes to the proxy and let
//! it probe the application over loopback. Weft does the second, as Istio
//! does: every `httpGet`, `tcpSocket` and `grpc` probe of an application
//! container becomes an `httpGet` on the proxy's health port
//! ([`HEALTH_PORT`], never captured), at `/app-probe/<container>/<probe>`,
//! and the proxy receives the original probes in [`APP_PROBES_ENV`]. A TCP
//! probe rewritten this way also becomes truthful: with capture, a TCP
//! connect to the pod always reaches the proxy, whether the application
//! listens or not. `exec` probes and probes aimed at another host are left
//! alone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use crate::InjectError;
use crate::settings::{APP_PROBE_PATH, HEALTH_PORT};

/// One original probe, as the proxy performs it against the application
/// on loopback. The JSON form is the contract with `weft-proxy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProbe {
    Http {
        port: u16,
        path: String,
        /// `HTTP` or `HTTPS` (certificates are not verified, as the
        /// kubelet does not verify them).
        scheme: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers: Vec<(String, String)>,
    },
    Tcp {
        port: u16,
    },
    Grpc {
        port: u16,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        service: String,
    },
}

fn resolve_port(container: &Container, port: &IntOrString, what: &str) -> Result<u16, InjectError> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| InjectError::Probe {
                container: container.name.clone(),
                probe: what.to_string(),
                message: format!("the port name {name:?} is not a port of the container"),
            })?,
    };
    u16::try_from(n).ok().filter(|p| *p > 0).ok_or_else(|| InjectError::Probe {
        container: container.name.clone(),
        probe: what.to_string(),
        message: format!("{n} is not a port"),
    })
}

/// What a probe becomes; `None` when it stays as it is.
fn original(container: &Container, probe: &Probe, what: &str) -> Result<Option<AppProbe>, InjectError> {
    if let Some(http) = &probe.http_get {
        if http.host.as_deref().is_some_and(|h| !h.is_empty()) {
            return Ok(None);
        }
        return Ok(Some(AppProbe::Http {
            port: resolve_port(container, &http.port, what)?,
            path: http.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into()),
            scheme: http.scheme.clone().unwrap_or_else(|| "HTTP".into()).to_ascii_uppercase(),
            headers: http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect(),
        }));
    }
    if let Some(tcp) = &probe.tcp_socket {
        if tcp.host.as_deref().is_some_and(|h| !h.is_empty()) {
            return Ok(None);
        }
        return Ok(Some(AppProbe::Tcp { port: resolve_port(container, &tcp.port, what)? }));
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).ok().filter(|p| *p > 0).ok_or_else(|| InjectError::Probe {
            container: container.name.clone(),
            probe: what.to_string(),
            message: format!("{} is not a port", grpc.port),
        })?;
        return Ok(Some(AppProbe::Grpc { port, service: grpc.service.clone().unwrap_or_default() }));
    }
    Ok(None)
}

/// The path of a rewritten probe on the health port.
pub fn probe_path(container: &str, probe: &str) -> String {
    format!("{APP_PROBE_PATH}/{container}/{probe}")
}

/// Rewrites the probes of `containers` in place; returns the originals by
/// `<container>/<probe>`.
pub fn rewrite(containers: &mut [Container]) -> Result<BTreeMap<String, AppProbe>, InjectError> {
    let mut originals = BTreeMap::new();
    for c in containers.iter_mut() {
        let snapshot = c.clone();
        for (what, probe) in [
            ("liveness", &mut c.liveness_probe),
            ("readiness", &mut c.readiness_probe),
            ("startup", &mut c.startup_probe),
        ] {
            let Some(p) = probe.as_mut() else { continue };
            let Some(app) = original(&snapshot, p, what)? else { continue };
            originals.insert(format!("{}/{what}", snapshot.name), app);
            p.http_get = Some(HTTPGetAction {
                path: Some(probe_path(&snapshot.name, what)),
                port: IntOrString::Int(HEALTH_PORT),
                scheme: Some("HTTP".into()),
                ..Default::default()
            });
            p.tcp_socket = None;
            p.grpc = None;
        }
    }
    Ok(originals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_contract_with_the_proxy() {
        let probes = BTreeMap::from([
            (
                "app/readiness".to_string(),
                AppProbe::Http {
                    port: 8080,
                    path: "/ready".into(),
                    scheme: "HTTP".into(),
                    headers: vec![("X-Probe".into(), "1".into())],
                },
            ),
            ("app/liveness".to_string(), AppProbe::Tcp { port: 8080 }),
            ("app/startup".to_string(), AppProbe::Grpc { port: 9090, service: "store".into() }),
        ]);
        assert_eq!(
            serde_json::to_string(&probes).unwrap(),
            r#"{"app/liveness":{"tcp":{"port":8080}},"app/readiness":{"http":{"port":8080,"path":"/ready","scheme":"HTTP","headers":[["X-Probe","1"]]}},"app/startup":{"grpc":{"port":9090,"service":"store"}}}"#
        );
    }
}
