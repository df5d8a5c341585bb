//! `weft-fwd`: the floor of the data-plane benchmarks. A bare L4 forwarder
//! (accept, connect, copy both ways) on one tokio worker: what any proxy
//! pair costs at the least, before HTTP parsing, routing and telemetry.
//! With `--tls-out` it speaks mutual TLS to the next hop (the client side
//! of a pair); with `--tls-in` it terminates mutual TLS (the server side).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser, Debug)]
#[command(about = "A bare TCP (or mutual TLS) forwarder, the benchmarks' floor")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Address every accepted connection is forwarded to.
    #[arg(long)]
    to: SocketAddr,
    /// Speak mutual TLS to `--to`: CA, certificate and key files (PEM).
    #[arg(long, num_args = 3, value_names = ["CA", "CERT", "KEY"])]
    tls_out: Option<Vec<PathBuf>>,
    /// Terminate mutual TLS on `--listen`: CA, certificate and key files.
    #[arg(long, num_args = 3, value_names = ["CA", "CERT", "KEY"])]
    tls_in: Option<Vec<PathBuf>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(serve(args))
}

struct Material {
    roots: Arc<rustls::RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn material(files: &[PathBuf]) -> anyhow::Result<Material> {
    let [ca, cert, key] = files else { anyhow::bail!("three files: CA, certificate, key") };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}", ca.display()))? {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("{}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}", key.display()))?;
    Ok(Material { roots: Arc::new(roots), chain, key })
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let connector = match &args.tls_out {
        Some(files) => {
            let m = material(files)?;
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(m.roots)
                .with_client_auth_cert(m.chain, m.key)?;
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        }
        None => None,
    };
    let acceptor = match &args.tls_in {
        Some(files) => {
            let m = material(files)?;
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(m.roots, provider.clone()).build()?;
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_client_cert_verifier(verifier)
                .with_single_cert(m.chain, m.key)?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
        None => None,
    };
    let listener = TcpListener::bind(args.listen).await?;
    loop {
        let (inbound, _) = listener.accept().await?;
        let (to, connector, acceptor) = (args.to, connector.clone(), acceptor.clone());
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            let Ok(outbound) = TcpStream::connect(to).await else { return };
            let _ = outbound.set_nodelay(true);
            match (acceptor, connector) {
                (Some(acceptor), _) => {
                    let Ok(mut tls) = acceptor.accept(inbound).await else { return };
                    let mut outbound = outbound;
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
                }
                (None, Some(connector)) => {
                    let name = ServerName::IpAddress(to.ip().into());
                    let Ok(mut tls) = connector.connect(name, outbound).await else { return };
                    let mut inbound = inbound;
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut tls).await;
                }
                (None, None) => {
                    let (mut inbound, mut outbound) = (inbound, outbound);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            }
        });
    }
}
