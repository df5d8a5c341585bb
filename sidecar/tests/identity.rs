//! What the proxy's signing request carries: a CSR and the join token,
//! never its private key. A stand-in control plane (the real signer behind
//! a tonic server on loopback) records every request it receives.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prost::Message;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use weft_api::config as api;
use weft_identity::signer::MeshSigning;
use weft_identity::{Claims, MeshCa, Signer, SpiffeId, TokenKey};

struct Recorder {
    signer: Signer,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

#[tonic::async_trait]
impl weft_api::server::certificates_server::Certificates for Recorder {
    async fn sign(
        &self,
        request: tonic::Request<api::SignRequest>,
    ) -> Result<tonic::Response<api::SignResponse>, tonic::Status> {
        let req = request.into_inner();
        self.seen.lock().unwrap().push(req.encode_to_vec());
        let issued = self
            .signer
            .sign(&req.csr_pem, &req.token, &req.mesh, OffsetDateTime::now_utc())
            .map_err(|e| tonic::Status::permission_denied(e.to_string()))?;
        Ok(tonic::Response::new(api::SignResponse {
            chain_pem: issued.chain_pem,
            not_after_unix: issued.not_after_unix,
            roots_pem: issued.roots_pem,
        }))
    }
}

#[tokio::test]
async fn the_signing_request_carries_a_csr_and_the_token_but_no_private_key() {
    let key = TokenKey::generate();
    let token = key.issue(&Claims {
        mesh: "default".into(),
        namespace: "shop".into(),
        service_account: "cart".into(),
        expires_unix: OffsetDateTime::now_utc().unix_timestamp() + 60,
    });
    let mut signer = Signer::new(Box::new(key));
    let ca = MeshCa::generate("default.weft.local", OffsetDateTime::now_utc(), time::Duration::days(1)).unwrap();
    signer.set_mesh("default", MeshSigning { ca, extra_roots_pem: vec![], lifetime: time::Duration::minutes(5) });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(weft_api::server::certificates_server::CertificatesServer::new(Recorder {
                signer,
                seen: seen.clone(),
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let mut client = api::certificates_client::CertificatesClient::new(channel);
    let identity = SpiffeId::new("default.weft.local", "shop", "cart");
    let state =
        weft_proxy::identity::request_certificate(&mut client, &identity, "default", token.clone(), &[]).await.unwrap();
    server.abort();

    assert_eq!(state.identity, identity);
    assert!(state.not_after > SystemTime::now());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let wire = &seen[0];
    let request = api::SignRequest::decode(wire.as_slice()).unwrap();
    // Exactly three fields, and nothing else on the wire.
    assert_eq!(request.encode_to_vec(), *wire);
    assert_eq!(request.token, token);
    assert_eq!(request.mesh, "default");
    let text = String::from_utf8_lossy(wire);
    assert!(!text.contains("PRIVATE"), "the request holds PEM private key material");
    assert!(request.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    assert_eq!(request.csr_pem.matches("-----BEGIN").count(), 1, "the CSR field holds more than one PEM block");
    // The CSR's public key is the one in the certificate the proxy now
    // uses: the private half was used here and stayed here.
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&request.csr_pem).unwrap();
    let csr_key = rcgen::PublicKeyData::der_bytes(&csr.public_key).to_vec();
    let cert_pem = state.chain_pem().first().cloned().unwrap();
    let cert_der = <rustls::pki_types::CertificateDer<'static> as rustls::pki_types::pem::PemObject>::from_pem_slice(
        cert_pem.as_bytes(),
    )
    .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
    assert_eq!(cert.public_key().subject_public_key.data.as_ref(), csr_key.as_slice());
}
