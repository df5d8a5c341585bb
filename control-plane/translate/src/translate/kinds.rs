//! Route kinds and which listener protocols serve them.

use weft_k8s_api::gateway::GROUP;

/// The Gateway API route kinds Weft translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RouteKind {
    Http,
    Grpc,
    Tls,
    Tcp,
}

impl RouteKind {
    pub const ALL: [RouteKind; 4] = [RouteKind::Http, RouteKind::Grpc, RouteKind::Tls, RouteKind::Tcp];

    /// The Kubernetes kind.
    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tls => "TLSRoute",
            RouteKind::Tcp => "TCPRoute",
        }
    }

    /// The kind named by `group`/`kind`, if it is one Weft translates.
    pub fn parse(group: Option<&str>, kind: &str) -> Option<RouteKind> {
        if group.is_some_and(|g| g != GROUP) {
            return None;
        }
        RouteKind::ALL.into_iter().find(|k| k.kind() == kind)
    }

    /// Whether routes of this kind carry HTTP (and so need HTTP ports).
    pub fn is_http(self) -> bool {
        matches!(self, RouteKind::Http | RouteKind::Grpc)
    }
}

/// The route kinds a listener of `protocol` can serve, in the order they
/// are reported in `supportedKinds`.
pub(crate) fn kinds_for_protocol(protocol: &str) -> &'static [RouteKind] {
    match protocol {
        "HTTP" | "HTTPS" => &[RouteKind::Http, RouteKind::Grpc],
        "TLS" => &[RouteKind::Tls],
        "TCP" => &[RouteKind::Tcp],
        _ => &[],
    }
}
