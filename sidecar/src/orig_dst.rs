//! Where a redirected connection was going.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The destination before iptables redirected the connection, or `None`
/// when it was not redirected (the client connected to the proxy itself).
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let sock = socket2::SockRef::from(stream);
    let orig = if local.is_ipv4() { sock.original_dst_v4() } else { sock.original_dst_v6() };
    orig.ok().and_then(|a| a.as_socket()).filter(|a| *a != local)
}
