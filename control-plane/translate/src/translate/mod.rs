//! The translation itself: [`translate`] turns a [`Snapshot`] into an
//! [`Output`]. Pure and deterministic: the same snapshot (in any insertion
//! order) and the same `now` give the same output.

mod class;
mod conditions;
mod context;
mod gateway;
mod handwritten;
mod hostnames;
mod kinds;
mod listeners;
mod meta;
pub mod names;
mod routes;
mod selector;
mod variant;

use std::collections::BTreeMap;

use weft_k8s_api::crds::{MeshGateway, MeshGatewayInstance, MeshHTTPRoute, MeshRouteStatus, MeshTCPRoute};
use weft_k8s_api::gateway::{
    GatewayClassStatus, GatewayStatus, GrpcRouteStatus, HttpRouteStatus, ListenerSetStatus, TcpRouteStatus,
    TlsRouteStatus,
};
use weft_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use class::SUPPORTED_FEATURES;
pub use hostnames::{intersect as intersect_hostnames, matches as hostname_matches};

use crate::snapshot::{ObjectKey, Snapshot};

/// The computed status of every input object Weft owns a part of.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Statuses {
    pub gateway_classes: BTreeMap<String, GatewayClassStatus>,
    pub gateways: BTreeMap<ObjectKey, GatewayStatus>,
    pub listener_sets: BTreeMap<ObjectKey, ListenerSetStatus>,
    pub http_routes: BTreeMap<ObjectKey, HttpRouteStatus>,
    pub grpc_routes: BTreeMap<ObjectKey, GrpcRouteStatus>,
    pub tls_routes: BTreeMap<ObjectKey, TlsRouteStatus>,
    pub tcp_routes: BTreeMap<ObjectKey, TcpRouteStatus>,
    /// Hand-written MeshHTTPRoutes.
    pub mesh_http_routes: BTreeMap<ObjectKey, MeshRouteStatus>,
    /// Hand-written MeshTCPRoutes.
    pub mesh_tcp_routes: BTreeMap<ObjectKey, MeshRouteStatus>,
}

/// What translation produces: generated Weft objects, sorted by namespace
/// and name, and statuses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    pub mesh_gateways: Vec<MeshGateway>,
    pub mesh_gateway_instances: Vec<MeshGatewayInstance>,
    pub mesh_http_routes: Vec<MeshHTTPRoute>,
    pub mesh_tcp_routes: Vec<MeshTCPRoute>,
    pub status: Statuses,
}

fn sort_by_key<T: kube::Resource>(items: &mut [T]) {
    items.sort_by(|a, b| {
        let ka = (a.meta().namespace.as_deref().unwrap_or(""), a.meta().name.as_deref().unwrap_or(""));
        let kb = (b.meta().namespace.as_deref().unwrap_or(""), b.meta().name.as_deref().unwrap_or(""));
        ka.cmp(&kb)
    });
}

use weft_k8s_api::kube;

/// Translates a snapshot. `now` stamps conditions whose status changed.
pub fn translate(snapshot: &Snapshot, now: &Time) -> Output {
    let ctx = context::Ctx::new(snapshot, now);
    let mut out = Output::default();

    let classes = class::translate(&ctx, &mut out.status.gateway_classes);
    let mut index = gateway::build(&ctx, &classes);

    let mut route_out = routes::RouteOutputs::default();
    routes::translate(&ctx, &mut index, &mut route_out);

    let mut gw_out = gateway::GatewayOutputs::default();
    gateway::emit(&ctx, &index, &mut gw_out);

    handwritten::translate(&ctx, &index, &mut out.status.mesh_http_routes, &mut out.status.mesh_tcp_routes);

    out.mesh_gateways = gw_out.mesh_gateways;
    out.mesh_gateway_instances = gw_out.instances;
    out.mesh_http_routes = route_out.mesh_http_routes;
    out.mesh_tcp_routes = route_out.mesh_tcp_routes;
    out.status.gateways = gw_out.gateway_statuses;
    out.status.listener_sets = gw_out.listener_set_statuses;
    out.status.http_routes = route_out.http_statuses;
    out.status.grpc_routes = route_out.grpc_statuses;
    out.status.tls_routes = route_out.tls_statuses;
    out.status.tcp_routes = route_out.tcp_statuses;
    sort_by_key(&mut out.mesh_gateways);
    sort_by_key(&mut out.mesh_gateway_instances);
    sort_by_key(&mut out.mesh_http_routes);
    sort_by_key(&mut out.mesh_tcp_routes);
    out
}
