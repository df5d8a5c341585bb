//! The gRPC side of the echo application: the Gateway API conformance
//! echo's `GrpcEcho` service (what the GATEWAY-GRPC cases call) and the
//! mesh echo's `EchoTestService` (what the MESH-GRPC cases call), served by
//! [`crate::echo::serve`] on the same ports as HTTP, for requests whose
//! content type is gRPC. Each reports what reached it, as the upstream echo
//! servers do: the method, the metadata, the `:authority` and which pod
//! answered.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::echo::Identity;

/// Messages and stubs of `conformance/echo/grpcecho.proto`.
pub mod conformance {
    #![allow(clippy::all, missing_docs, missing_debug_implementations, rust_2018_idioms)]
    tonic::include_proto!("gateway_api_conformance.echo_basic.grpcecho");
}

/// Messages and stubs of `proto/mesh_echo.proto`.
pub mod mesh {
    #![allow(clippy::all, missing_docs, missing_debug_implementations, rust_2018_idioms)]
    tonic::include_proto!("proto");
}

/// Full name of the conformance echo service.
pub const GRPC_ECHO_SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";
/// Full name of the mesh echo service.
pub const MESH_ECHO_SERVICE: &str = "proto.EchoTestService";

/// The `:authority` a call came with, put in the request's extensions by
/// the server (tonic's metadata leaves pseudo-headers out).
#[derive(Debug, Clone)]
pub struct CallAuthority(pub String);

/// The gRPC routes of the echo application.
pub fn routes(identity: Arc<Identity>) -> tonic::service::Routes {
    tonic::service::Routes::new(conformance::grpc_echo_server::GrpcEchoServer::new(ConformanceEcho {
        identity: identity.clone(),
    }))
    .add_service(mesh::echo_test_service_server::EchoTestServiceServer::new(MeshEcho { identity }))
}

/// The metadata of a call as (key, value) pairs, lowercase keys, binary
/// (`-bin`) entries left out.
fn metadata<T>(req: &Request<T>) -> Vec<(String, String)> {
    req.metadata()
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                Some((k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

fn authority<T>(req: &Request<T>) -> String {
    req.extensions().get::<CallAuthority>().map(|a| a.0.clone()).unwrap_or_default()
}

#[derive(Debug)]
struct ConformanceEcho {
    identity: Arc<Identity>,
}

impl ConformanceEcho {
    fn answer(
        &self,
        method: &str,
        req: &Request<conformance::EchoRequest>,
    ) -> Result<Response<conformance::EchoResponse>, Status> {
        let mut headers: Vec<conformance::Header> =
            metadata(req).into_iter().map(|(key, value)| conformance::Header { key, value }).collect();
        let authority = authority(req);
        headers.push(conformance::Header { key: ":authority".into(), value: authority.clone() });
        Ok(Response::new(conformance::EchoResponse {
            assertions: Some(conformance::Assertions {
                fully_qualified_method: format!("/{GRPC_ECHO_SERVICE}/{method}"),
                headers,
                authority,
                context: Some(conformance::Context {
                    namespace: self.identity.namespace.clone(),
                    ingress: String::new(),
                    service_name: String::new(),
                    pod: self.identity.pod.clone(),
                }),
                tls_assertions: None,
            }),
            request: Some(conformance::EchoRequest {}),
        }))
    }
}

#[tonic::async_trait]
impl conformance::grpc_echo_server::GrpcEcho for ConformanceEcho {
    async fn echo(
        &self,
        req: Request<conformance::EchoRequest>,
    ) -> Result<Response<conformance::EchoResponse>, Status> {
        self.answer("Echo", &req)
    }

    async fn echo_two(
        &self,
        req: Request<conformance::EchoRequest>,
    ) -> Result<Response<conformance::EchoResponse>, Status> {
        self.answer("EchoTwo", &req)
    }

    /// Deliberately unimplemented, as upstream's is.
    async fn echo_three(
        &self,
        _req: Request<conformance::EchoRequest>,
    ) -> Result<Response<conformance::EchoResponse>, Status> {
        Err(Status::unimplemented("EchoThree is not implemented"))
    }
}

#[derive(Debug)]
struct MeshEcho {
    identity: Arc<Identity>,
}

#[tonic::async_trait]
impl mesh::echo_test_service_server::EchoTestService for MeshEcho {
    /// Answers with the mesh echo's text lines: `StatusCode`, `Host` (the
    /// `:authority`), `Hostname` (the pod) and one `RequestHeader` per
    /// metadata value.
    async fn echo(&self, req: Request<mesh::EchoRequest>) -> Result<Response<mesh::EchoResponse>, Status> {
        let mut lines = vec![
            "StatusCode=200".to_owned(),
            format!("Host={}", authority(&req)),
            format!("Hostname={}", self.identity.pod),
            format!("Namespace={}", self.identity.namespace),
        ];
        for (k, v) in metadata(&req) {
            lines.push(format!("RequestHeader={k}:{v}"));
        }
        if !req.get_ref().message.is_empty() {
            lines.push(format!("Echo={}", req.get_ref().message));
        }
        Ok(Response::new(mesh::EchoResponse { message: lines.join("\n") }))
    }
}
