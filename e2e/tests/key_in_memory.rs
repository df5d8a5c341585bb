//! A proxy never writes its private key to disk: the real `weft-proxy`
//! runs under `strace` and obtains a certificate from a real control plane
//! (making its key pair and CSR on the way), and the trace of every file-system call it made
//! shows no file opened for writing, created, renamed or linked. Reading
//! its token file is traced too, which shows the tracing itself works.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use weft_e2e::netns::{spawn_on_host, wait_for_tcp_from_root};
use weft_e2e::workspace_bin;

const MANIFESTS: &str =
    "apiVersion: weft.io/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec:\n  mtls: {mode: Strict}\n";

/// Loopback addresses of this run: 127.84.<pid-derived>.<host>.
fn addr(host: u8, port: u16) -> SocketAddr {
    let [.., a, b] = std::process::id().to_be_bytes();
    SocketAddr::new(Ipv4Addr::new(127, 84 ^ (a & 0x0f), b, host).into(), port)
}

/// A GET over plain HTTP/1.1 from the host; the status and body.
fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let response = weft_e2e::http1::Response::parse(&raw)?;
    Ok((response.status, response.text()))
}

/// File-system calls in an strace log that write: opens for writing or
/// creating, and calls that create, rename, link or remove names. Device
/// files (`/dev/null`) are not disk.
fn writes(trace: &str) -> Vec<&str> {
    const WRITE_FLAGS: [&str; 4] = ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"];
    const NAMING_CALLS: [&str; 10] =
        ["creat(", "rename", "link(", "linkat(", "symlink", "mknod", "unlink", "mkdir", "truncate(", "rmdir("];
    trace
        .lines()
        .filter(|line| {
            let call = line.split_once(' ').map_or(*line, |(_, rest)| rest.trim_start());
            let opens_for_writing = (call.starts_with("open(") || call.starts_with("openat"))
                && WRITE_FLAGS.iter().any(|f| call.contains(f));
            (opens_for_writing || NAMING_CALLS.iter().any(|c| call.starts_with(c))) && !call.contains("\"/dev/")
        })
        .collect()
}

#[test]
fn the_proxy_writes_nothing_to_disk_while_it_makes_its_key_and_obtains_its_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (config, state, logs) = (dir.path().join("config"), dir.path().join("state"), dir.path().join("logs"));
    for d in [&config, &logs] {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(config.join("mesh.yaml"), MANIFESTS)?;
    let (grpc, admin) = (addr(1, 15010), addr(1, 15000));
    let cp_args = weft_e2e::control_plane_args(&config, grpc, admin, &state);
    let cp_refs: Vec<&str> = cp_args.iter().map(String::as_str).collect();
    let _cp = spawn_on_host(&workspace_bin("weft-cp")?, &cp_refs, &[("RUST_LOG", "warn")], &logs.join("weft-cp.log"))?;
    wait_for_tcp_from_root(grpc, Duration::from_secs(20)).context("the control plane did not start")?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, weft_e2e::join_token(&state, "shop", "default", "default")?)?;

    let trace = dir.path().join("proxy.strace");
    let proxy = workspace_bin("weft-proxy")?;
    let (proxy_ip, proxy_admin) = (addr(2, 0).ip().to_string(), addr(2, 15020));
    let mut args: Vec<String> = ["-f", "-qq", "-e", "trace=%file", "-o"].map(String::from).to_vec();
    args.push(trace.to_string_lossy().into_owned());
    args.push(proxy.to_string_lossy().into_owned());
    args.extend(
        ["run", "--control-plane", &format!("http://{grpc}"), "--name", "cart-1", "--namespace", "shop"]
            .map(String::from),
    );
    args.extend(["--ip".into(), proxy_ip, "--admin".into(), proxy_admin.to_string()]);
    args.extend(["--outbound".into(), addr(2, 15001).to_string(), "--inbound".into(), addr(2, 15006).to_string()]);
    args.extend(["--token-file".into(), token_file.to_string_lossy().into_owned()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let strace = which("strace").context("strace is needed (apt-get install -y strace)")?;
    let mut traced = spawn_on_host(&strace, &refs, &[("WEFT_LOG", "info")], &logs.join("proxy.log"))?;

    // Certified: the config dump names the identity the certificate holds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let dump = loop {
        traced.ensure_running()?;
        if let Ok((200, body)) = get(proxy_admin, "/config_dump") {
            let dump: serde_json::Value = serde_json::from_str(&body)?;
            if dump["certificate"]["identity"].is_string() {
                break dump;
            }
        }
        if Instant::now() > deadline {
            bail!("the proxy held no certificate within 30 s; its log:\n{}", traced.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(dump["certificate"]["identity"], "spiffe://default.weft.local/ns/shop/sa/default");
    traced.stop(Duration::from_secs(5))?;

    let log = std::fs::read_to_string(&trace).with_context(|| format!("reading {}", trace.display()))?;
    let token_path = token_file.to_string_lossy();
    assert!(
        log.lines().any(|l| l.contains(token_path.as_ref()) && l.contains("O_RDONLY")),
        "the trace does not show the token file being read, so it cannot show what was written:\n{log}"
    );
    let written = writes(&log);
    println!("{} file-system calls traced; writing ones: {written:?}", log.lines().count());
    assert!(written.is_empty(), "the proxy wrote to the file system:\n{}", written.join("\n"));
    Ok(())
}

#[test]
fn the_trace_filter_finds_writes() {
    let trace = "12 openat(AT_FDCWD, \"/etc/hosts\", O_RDONLY|O_CLOEXEC) = 3\n\
                 12 openat(AT_FDCWD, \"/tmp/key.pem\", O_WRONLY|O_CREAT|O_TRUNC, 0600) = 4\n\
                 13 openat(AT_FDCWD, \"/dev/null\", O_RDWR) = 5\n\
                 13 renameat2(AT_FDCWD, \"/tmp/a\", AT_FDCWD, \"/tmp/b\", 0) = 0\n";
    let found = writes(trace);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("key.pem") && found[1].contains("renameat2"));
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}
