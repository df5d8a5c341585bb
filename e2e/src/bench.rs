//! Tools for the data-plane benchmarks: an open-loop load at a fixed rate
//! with latency measured from each request's due time (so a stalled proxy
//! cannot hide its queue, as in wrk2), a closed-loop load for maximum
//! throughput, and the measurements the benchmark protocol in the
//! performance notes asks for: CPU time per process, RSS, and the CPU that
//! *other* processes used during a round (the quiet-machine guard).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the load goes: the address dialled and the Host header sent (an
/// explicit-proxy sidecar routes by Host); with `tls`, each connection is
/// an HTTPS session (SNI = `host`, verified against the config's roots).
#[derive(Debug, Clone)]
pub struct Target {
    pub connect: SocketAddr,
    pub host: String,
    pub path: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A TLS client trusting only the CA certificates in `ca_pem`, offering
/// HTTP/1.1 by ALPN (TLS 1.3 and 1.2, ring).
pub fn tls_client(ca_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Latencies of one open-loop run, in microseconds, sorted.
#[derive(Debug, Default)]
pub struct Latencies {
    pub sorted_us: Vec<u64>,
    pub errors: u64,
}

impl Latencies {
    /// The `q` quantile (0..=1) in milliseconds; 0 when nothing was measured.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.sorted_us.is_empty() {
            return 0.0;
        }
        let rank = ((self.sorted_us.len() as f64 * q).ceil() as usize).clamp(1, self.sorted_us.len());
        self.sorted_us[rank - 1] as f64 / 1000.0
    }
}

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn open_connection(target: &Target) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(target.connect).await?;
    stream.set_nodelay(true)?;
    if let Some(tls) = &target.tls {
        let host = target.host.split(':').next().unwrap_or_default().to_owned();
        let name = rustls::pki_types::ServerName::try_from(host)?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, stream).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        return Ok(sender);
    }
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn one_request(sender: &mut Sender, target: &Target) -> anyhow::Result<()> {
    sender.ready().await?;
    let request =
        http::Request::get(target.path.as_str()).header(http::header::HOST, target.host.as_str()).body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    anyhow::ensure!(status == http::StatusCode::OK, "status {status}");
    Ok(())
}

/// Sends `rate` requests a second over `connections` keep-alive HTTP/1.1
/// connections for `warmup + duration`, recording latencies after the
/// warm-up. Request k of connection c is due at
/// `start + (k * connections + c) / rate`; when a slow response delays it,
/// its latency runs from that due time, so time spent queued counts (as in
/// wrk2).
pub async fn open_loop(
    target: &Target,
    rate: u32,
    connections: u32,
    warmup: Duration,
    duration: Duration,
) -> Latencies {
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let end = warmup + duration;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let target = target.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut sender = None;
            for k in 0u64.. {
                let offset = interval * u32::try_from(k * u64::from(connections) + u64::from(c)).unwrap_or(u32::MAX);
                if offset >= end {
                    break;
                }
                let due = start + offset;
                // Latency runs from the due time when the previous response
                // made this request late (the proxy's queue), and from the
                // actual send otherwise (the timer's own lateness, up to a
                // millisecond, is the generator's, not the proxy's).
                let queued = tokio::time::Instant::now() > due;
                tokio::time::sleep_until(due).await;
                let sent = if queued { due } else { tokio::time::Instant::now() };
                if sender.is_none() {
                    sender = open_connection(&target).await.ok();
                }
                let ok = match sender.as_mut() {
                    Some(s) => one_request(s, &target).await.is_ok(),
                    None => false,
                };
                if offset < warmup {
                    continue;
                }
                if ok {
                    latencies.push(sent.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                    sender = None;
                }
            }
            (latencies, errors)
        });
    }
    let mut all = Latencies::default();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((latencies, errors)) = joined {
            all.sorted_us.extend(latencies);
            all.errors += errors;
        }
    }
    all.sorted_us.sort_unstable();
    all
}

/// Result of a closed-loop run.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// As many requests as `connections` keep-alive connections complete in
/// `duration`, each sending the next as soon as the previous answered.
pub async fn closed_loop(target: &Target, connections: u32, duration: Duration) -> Throughput {
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (target, requests, errors) = (target.clone(), requests.clone(), errors.clone());
        tasks.spawn(async move {
            let mut sender = None;
            while tokio::time::Instant::now() < deadline {
                if sender.is_none() {
                    sender = open_connection(&target).await.ok();
                }
                let ok = match sender.as_mut() {
                    Some(s) => tokio::time::timeout_at(deadline, one_request(s, &target)).await,
                    None => Ok(Err(anyhow::anyhow!("no connection"))),
                };
                match ok {
                    Ok(Ok(())) => {
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(_)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        sender = None;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => break,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Throughput {
        requests: requests.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    }
}

/// Clock ticks per second of /proc's CPU counters (USER_HZ; 100 on every
/// Linux architecture this project builds for).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (user + system) of a process and all its threads, in seconds.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    ticks as f64 / TICKS_PER_SECOND
}

/// The process and its descendants (nginx's master and workers), found by
/// parent pid in /proc.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let ppid = stat.rfind(')').and_then(|i| stat[i + 2..].split_whitespace().nth(1)?.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    tree
}

/// Resident set size of a process, in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Busy CPU time of the whole machine (everything but idle and iowait), in
/// seconds, from /proc/stat.
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return 0.0 };
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    let values: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest
    // time is already counted in user, and steal is the hypervisor's (read
    // apart by machine_steal_seconds).
    let busy: u64 = values.iter().take(7).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy as f64 / TICKS_PER_SECOND
}

/// CPU time the hypervisor gave to other guests while this machine wanted
/// it (steal), in seconds: a noisy host slows every peer alike but not
/// evenly, so a round with much of it is repeated too.
pub fn machine_steal_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return 0.0 };
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    cpu.split_whitespace().nth(8).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) as f64 / TICKS_PER_SECOND
}

/// Measures, over one round, the CPU the machine spent outside the
/// processes under test (and this one): the quiet-machine guard.
#[derive(Debug)]
pub struct CpuWindow {
    started: Instant,
    machine: f64,
    steal: f64,
    ours: f64,
    pids: Vec<u32>,
}

impl CpuWindow {
    /// Starts a window; `pids` are the processes taking part (this process
    /// is always counted as ours).
    pub fn start(pids: Vec<u32>) -> Self {
        let ours = Self::ours(&pids);
        CpuWindow {
            started: Instant::now(),
            machine: machine_busy_seconds(),
            steal: machine_steal_seconds(),
            ours,
            pids,
        }
    }

    fn ours(pids: &[u32]) -> f64 {
        process_cpu_seconds(std::process::id()) + pids.iter().map(|p| process_cpu_seconds(*p)).sum::<f64>()
    }

    /// Foreign CPU during the window, as a percentage of one core.
    pub fn foreign_percent(&self) -> f64 {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let machine = machine_busy_seconds() - self.machine;
        let ours = Self::ours(&self.pids) - self.ours;
        ((machine - ours).max(0.0) / wall) * 100.0
    }

    /// Hypervisor steal during the window, as a percentage of one core.
    pub fn steal_percent(&self) -> f64 {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        ((machine_steal_seconds() - self.steal).max(0.0) / wall) * 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let l = Latencies { sorted_us: (1..=100).map(|v| v * 1000).collect(), errors: 0 };
        assert_eq!(l.quantile_ms(0.5), 50.0);
        assert_eq!(l.quantile_ms(0.99), 99.0);
        assert_eq!(l.quantile_ms(1.0), 100.0);
        assert_eq!(Latencies::default().quantile_ms(0.5), 0.0);
    }

    #[test]
    fn own_process_is_visible_in_proc() {
        let me = std::process::id();
        assert!(rss_kib(me) > 0);
        assert!(process_tree(me).contains(&me));
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(60) {
            std::hint::black_box(spin.elapsed());
        }
        // 60 ms of spinning is at least a few 10 ms ticks of this process.
        assert!(process_cpu_seconds(me) >= 0.02, "{}", process_cpu_seconds(me));
        assert!(machine_busy_seconds() >= process_cpu_seconds(me));
    }
}
