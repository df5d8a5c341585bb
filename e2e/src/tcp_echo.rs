//! The TCP echo of the Gateway API conformance backends (`echo-basic` with
//! `TCP_ECHO_SERVER=1`), for the TCPRoute and TLSRoute cases: on every
//! connection (after the TLS handshake, on a TLS port) it writes the
//! welcome line, then answers `PING` with `PONG`, `IS_TLS` with
//! `true`/`false` and `TEST` with one JSON line naming the serving pod and,
//! on a TLS port, the SNI it was reached with. Other lines get no answer.
//! Also the TLS server configuration the echo's TLS listeners (TCP echo
//! and HTTPS echo) use.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::echo::Identity;

/// What the echo writes first on every connection.
pub const WELCOME: &str = "Gateway API Test TCP Server";

/// A TLS acceptor serving the certificate chain and key in these PEM
/// files (TLS 1.2 and 1.3, no client certificates), offering `alpn`.
pub fn acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("{}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The ports reported in every `TEST` record.
#[derive(Debug, Clone)]
pub struct Ports {
    pub tcp: u16,
    pub tls: u16,
}

/// Accepts connections until the listener fails; with `tls`, each
/// connection is a TLS session first.
pub async fn serve(
    listener: TcpListener,
    identity: Arc<Identity>,
    ports: Ports,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let (identity, ports, tls) = (identity.clone(), ports.clone(), tls.clone());
        tokio::spawn(async move {
            let result = match tls {
                None => session(stream, &identity, &ports, None).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        let (_, conn) = stream.get_ref();
                        let facts = json!({
                            "version": match conn.protocol_version() {
                                Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
                                Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
                                _ => "",
                            },
                            "serverName": conn.server_name().unwrap_or_default(),
                            "cipherSuite": conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default(),
                        });
                        session(stream, &identity, &ports, Some(facts)).await
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "tcp echo connection ended with an error");
            }
        });
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    identity: &Identity,
    ports: &Ports,
    tls: Option<serde_json::Value>,
) -> std::io::Result<()> {
    let (read, mut write) = tokio::io::split(stream);
    write.write_all(format!("{WELCOME}\n").as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let answer = match line.trim() {
            "PING" => "PONG".to_owned(),
            "IS_TLS" => tls.is_some().to_string(),
            "TEST" => {
                let mut record = json!({
                    "namespace": identity.namespace, "ingress": "", "service": "", "pod": identity.pod,
                    "tcpport": ports.tcp.to_string(), "tlsport": ports.tls.to_string(), "isTLS": tls.is_some(),
                });
                if let Some(facts) = &tls {
                    record["tls"] = facts.clone();
                }
                record.to_string()
            }
            _ => continue,
        };
        write.write_all(format!("{answer}\n").as_bytes()).await?;
        write.flush().await?;
    }
    Ok(())
}
