//! Gateway API types, from the experimental channel of the `gateway-api` crate.
//!
//! The experimental types accept every field of the standard channel plus the
//! newer ones, so an object written for a newer Gateway API parses instead of
//! failing the whole snapshot (Linkerd hit this with closed enums).

pub use gateway_api::Duration as GatewayDuration;
pub use gateway_api::experimental::gatewayclasses::{
    GatewayClass, GatewayClassParametersRef, GatewayClassSpec, GatewayClassStatus, GatewayClassStatusSupportedFeatures,
};
pub use gateway_api::experimental::gateways;
pub use gateway_api::experimental::gateways::{
    Gateway, GatewayAddresses, GatewayListeners, GatewayListenersAllowedRoutes, GatewayListenersAllowedRoutesKinds,
    GatewayListenersAllowedRoutesNamespaces, GatewayListenersAllowedRoutesNamespacesFrom,
    GatewayListenersAllowedRoutesNamespacesSelector, GatewayListenersTls, GatewayListenersTlsCertificateRefs,
    GatewayListenersTlsMode, GatewaySpec, GatewayStatus, GatewayStatusAddresses, GatewayStatusListeners,
    GatewayStatusListenersSupportedKinds,
};
pub use gateway_api::experimental::grpcroutes::{self, GrpcRoute, GrpcRouteSpec, GrpcRouteStatus};
pub use gateway_api::experimental::httproutes::{self, HttpRoute, HttpRouteSpec, HttpRouteStatus};
pub use gateway_api::experimental::listenersets::{self, ListenerSet, ListenerSetSpec, ListenerSetStatus};
pub use gateway_api::experimental::referencegrants::{
    ReferenceGrant, ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo,
};
pub use gateway_api::experimental::tcproutes::{self, TcpRoute, TcpRouteSpec, TcpRouteStatus};
pub use gateway_api::experimental::tlsroutes::{self, TlsRoute, TlsRouteSpec, TlsRouteStatus};

/// API group of the Gateway API.
pub const GROUP: &str = "gateway.networking.k8s.io";
