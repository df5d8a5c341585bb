//! Sidecar injection as a pure function: a pod, its namespace and the
//! cluster's proxy settings in, the meshed pod out. The admission webhook
//! of `weft-cp` and `weftctl inject` both call it; nothing here does I/O.
//!
//! An injected pod gets:
//!
//! * an init container `weft-init` running `weft-proxy init` as root with
//!   only NET_ADMIN and NET_RAW, which redirects the pod's TCP traffic
//!   through the proxy (the proxy's uid, the control plane's port, the
//!   proxy's health port and the ports and CIDRs of the `weft.io/exclude-*`
//!   annotations excepted);
//! * `weft-proxy` as a native sidecar — an init container with
//!   `restartPolicy: Always` and a startup probe on its readiness, so the
//!   application starts only once the proxy is ready and Jobs still
//!   complete (Kubernetes 1.29 and later) — or, with
//!   `weft.io/native-sidecar: "false"` or when the cluster is older, as the
//!   first regular container whose `postStart` hook waits for its
//!   readiness (the kubelet starts the next container only when the hook
//!   returns);
//! * a projected ServiceAccount token for the audience `weft.io/identity`,
//!   which the proxy presents to get its certificate, and the downward-API
//!   environment it needs (pod name, namespace, ServiceAccount, IP);
//! * its application probes rewritten through the proxy ([`probes`]);
//! * the label `weft.io/mesh` (how the control plane finds meshed pods) and
//!   the annotation `weft.io/proxy-version`.
//!
//! Pods labelled `weft.io/sidecar-injection: disabled`, pods on the host
//! network and pods that already have a proxy are returned unchanged.

#![forbid(unsafe_code)]

pub mod manifest;
pub mod overrides;
mod pod;
pub mod probes;
pub mod settings;

pub use pod::{NamespaceInfo, inject};
pub use settings::Settings;

use k8s_openapi::api::core::v1::Pod;

/// Who asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The admission webhook: only pods whose namespace (or themselves)
    /// carry `weft.io/sidecar-injection: enabled`.
    Webhook,
    /// `weftctl inject`: the user asked for this pod; only opt-outs, host
    /// network and already injected pods are skipped.
    Explicit,
}

/// Why a pod was left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    OptedOut,
    HostNetwork,
    AlreadyInjected,
    NotEnabled,
}

impl Skip {
    /// A short reason, for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::OptedOut => "opted out (weft.io/sidecar-injection: disabled)",
            Skip::HostNetwork => "uses the host network",
            Skip::AlreadyInjected => "already has a weft-proxy",
            Skip::NotEnabled => "injection is not enabled for its namespace",
        }
    }
}

/// What injection did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Injected(Box<Pod>),
    Skipped(Skip),
}

/// Why a pod cannot be injected (the pod asks for something invalid).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("annotation {annotation}={value:?}: {message}")]
    Annotation { annotation: String, value: String, message: String },
    #[error("container {container:?}, {probe} probe: {message}")]
    Probe { container: String, probe: String, message: String },
    #[error("the pod has no spec")]
    NoSpec,
}

impl InjectError {
    pub(crate) fn annotation(annotation: &str, value: &str, message: impl Into<String>) -> Self {
        InjectError::Annotation { annotation: annotation.into(), value: value.into(), message: message.into() }
    }
}
