//! Pods as network namespaces on a Linux bridge, for tests that run real processes.
//!
//! A [`Cluster`] is a bridge in the root namespace holding the gateway address (`.1`) of a /24;
//! each [`Pod`] is a network namespace wired to the bridge with a veth pair, so pods reach each
//! other and the root namespace reaches every pod. Processes run inside pods through
//! `ip netns exec` (entering a namespace directly needs `setns`, i.e. `unsafe`).
//!
//! Names embed the test process id, and a per-process sequence number, so that concurrent runs
//! (and concurrent tests of one binary) never collide, and so that leftovers of a run that died
//! without cleaning up (SIGKILL, a CI timeout) are recognisable and swept by the next run:
//! bridge `wb{pid}-{seq}`, host-side veth `v{pid}-{seq}-{index}` (both base-36 suffixes, to stay
//! within the 15 bytes of an interface name), namespace `weft-{pid}-{seq}-{pod}`.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::process::{
    ChildHandle, HARNESS_COMMAND_TIMEOUT, check_output, poll_budget, run_bounded, run_ok, signal_pids, sweep_orphans,
};

/// How long [`Pod::exec`] lets a command run.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Where iproute2 mounts named network namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Subnets are 10.{200..=250}.x.0/24: private, and unlikely to be used by the machine itself.
const SECOND_OCTETS: std::ops::RangeInclusive<u8> = 200..=250;

/// Pods get .2 up to .254.
const MAX_PODS: usize = 253;

/// Longest pod name; keeps namespace names and log file names readable.
const MAX_POD_NAME: usize = 40;

/// Interface names are limited to IFNAMSIZ - 1 bytes.
const MAX_IFNAME: usize = 15;

/// Sequence numbers are written in at most three base-36 digits.
const MAX_SEQ: u32 = 36 * 36 * 36;

/// Serialises sweeping and subnet selection between concurrent runs on this machine.
const LOCK_FILE: &str = "weft-e2e-netns.lock";

static NEXT_SEQ: AtomicU32 = AtomicU32::new(0);

/// A bridge and the pods on it; dropping it kills every process in its pods and deletes the
/// namespaces, veths and bridge, also when a test panics.
#[derive(Debug)]
pub struct Cluster {
    pid: u32,
    seq: u32,
    bridge: String,
    /// The /24's network address, once assigned.
    subnet: Option<Ipv4Addr>,
    pods: Vec<Pod>,
    log_dir: PathBuf,
}

/// A network namespace with one interface (`eth0`) on the cluster bridge. A plain handle: the
/// [`Cluster`] owns the namespace and tears it down.
#[derive(Debug, Clone)]
pub struct Pod {
    name: String,
    netns: String,
    veth: String,
    ip: Ipv4Addr,
    gateway: Ipv4Addr,
    log_dir: PathBuf,
}

impl Cluster {
    /// True when this process can create namespaces: it runs as root and `ip netns` works.
    pub fn is_supported() -> bool {
        Self::require_supported().is_ok()
    }

    /// Explains what is missing when namespaces cannot be created, so a test fails with a
    /// message instead of a puzzling `ip` error (CI runs these tests as root).
    pub fn require_supported() -> anyhow::Result<()> {
        let euid = effective_uid().context("reading the effective uid from /proc/self/status")?;
        if euid != 0 {
            bail!(
                "network-namespace e2e tests must run as root (effective uid is {euid}); \
                 CI runs them as root, locally use `sudo -E cargo test --workspace ...`"
            );
        }
        let mut command = Command::new("ip");
        command.args(["netns", "list"]);
        run_ok(command, HARNESS_COMMAND_TIMEOUT)
            .context("`ip netns list` does not work; network-namespace e2e tests need iproute2 and root")?;
        Ok(())
    }

    /// Creates the bridge and picks a free /24. `tag` names the log directory (use the test's
    /// name). Sweeps leftovers of dead runs first.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        Self::require_supported()?;
        // Held while sweeping and choosing a subnet, so concurrent runs neither sweep the same
        // leftovers nor pick the same /24.
        let lock = lock_harness()?;
        sweep_stale();
        let pid = std::process::id();
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        if seq >= MAX_SEQ {
            bail!("more than {MAX_SEQ} clusters in one test process");
        }
        let bridge = format!("wb{pid}-{}", base36(seq));
        if bridge.len() > MAX_IFNAME {
            bail!("bridge name {bridge} exceeds {MAX_IFNAME} bytes");
        }
        let keep = std::env::var_os("WEFT_E2E_LOG_DIR").map(PathBuf::from);
        let log_root = keep.unwrap_or_else(|| std::env::temp_dir().join("weft-e2e"));
        let log_dir = log_root.join(format!("{}-{pid}-{seq}", sanitize(tag)));
        if log_dir.exists() {
            std::fs::remove_dir_all(&log_dir).with_context(|| format!("clearing {}", log_dir.display()))?;
        }
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        // From here on, Drop cleans up whatever was created.
        let mut cluster = Self { pid, seq, bridge, subnet: None, pods: Vec::new(), log_dir };
        // A fixed MAC: a bridge left to choose takes the lowest MAC of its
        // ports, so adding a pod could change it under the pods that already
        // resolved the gateway, cutting their connections to the control
        // plane until their ARP entries went stale (seen as resets and
        // connect timeouts of the next request).
        ip(&["link", "add", &cluster.bridge, "address", &bridge_mac(pid, seq), "type", "bridge"])?;
        ip(&["link", "set", &cluster.bridge, "up"])?;
        cluster.assign_subnet()?;
        drop(lock);
        warn_if_bridge_traffic_is_filtered();
        tracing::info!(bridge = %cluster.bridge, gateway = %cluster.gateway(), "cluster created");
        Ok(cluster)
    }

    /// Creates a pod: a namespace with loopback up and `eth0` holding the next address of the
    /// /24, its default route via the bridge. `name` is lower-case letters, digits and `-`.
    pub fn pod(&mut self, name: &str) -> anyhow::Result<Pod> {
        validate_pod_name(name)?;
        if self.pods.iter().any(|pod| pod.name == name) {
            bail!("pod {name:?} already exists in this cluster");
        }
        if self.pods.len() >= MAX_PODS {
            bail!("a cluster holds at most {MAX_PODS} pods");
        }
        let index = u32::try_from(self.pods.len()).context("pod index")?;
        let veth = format!("v{}-{}-{}", self.pid, base36(self.seq), base36(index));
        if veth.len() > MAX_IFNAME {
            bail!("veth name {veth} exceeds {MAX_IFNAME} bytes");
        }
        let [a, b, c, _] = self.subnet.context("the cluster has no subnet")?.octets();
        let host = u8::try_from(index + 2).context("pod address")?;
        let pod = Pod {
            name: name.to_owned(),
            netns: format!("weft-{}-{}-{name}", self.pid, self.seq),
            veth,
            ip: Ipv4Addr::new(a, b, c, host),
            gateway: self.gateway(),
            log_dir: self.log_dir.clone(),
        };
        // Registered before anything exists so that Drop removes a half-built pod.
        self.pods.push(pod.clone());
        let address = format!("{}/24", pod.ip);
        let gateway = pod.gateway.to_string();
        ip(&["netns", "add", &pod.netns])?;
        ip(&["link", "add", &pod.veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.netns])?;
        ip(&["link", "set", &pod.veth, "master", &self.bridge])?;
        ip(&["link", "set", &pod.veth, "up"])?;
        ip(&["-n", &pod.netns, "addr", "add", &address, "dev", "eth0"])?;
        ip(&["-n", &pod.netns, "link", "set", "lo", "up"])?;
        ip(&["-n", &pod.netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &pod.netns, "route", "add", "default", "via", &gateway])?;
        tracing::debug!(pod = %pod.name, ip = %pod.ip, netns = %pod.netns, "pod created");
        Ok(pod)
    }

    /// The bridge's address: the pods' default gateway, and where pods reach processes that run
    /// in the root namespace (see [`spawn_on_host`]).
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.subnet.unwrap_or(Ipv4Addr::UNSPECIFIED).octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The cluster's /24 (network address).
    pub fn subnet(&self) -> Ipv4Addr {
        self.subnet.unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// The bridge interface in the root namespace.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Every namespace of this cluster starts with this; lets tests check cleanup.
    pub fn netns_prefix(&self) -> String {
        format!("weft-{}-{}-", self.pid, self.seq)
    }

    /// Per-cluster directory for process logs; removed on drop unless the test panicked or
    /// `WEFT_E2E_LOG_DIR` chose where logs go.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The pods created so far.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Called with the harness lock held.
    fn assign_subnet(&mut self) -> anyhow::Result<()> {
        let candidates = SECOND_OCTETS.len() * 256;
        // Start where other runs are unlikely to, so that concurrent runs on machines without a
        // shared lock file rarely race for the same /24.
        let start = (self.pid as usize).wrapping_mul(7919).wrapping_add(self.seq as usize * 131) % candidates;
        let deadline = Instant::now() + HARNESS_COMMAND_TIMEOUT;
        let mut used = used_ipv4_prefixes()?;
        for step in 0..candidates {
            if Instant::now() >= deadline {
                break;
            }
            let index = (start + step) % candidates;
            let second = *SECOND_OCTETS.start() + u8::try_from(index / 256).context("subnet index")?;
            let third = u8::try_from(index % 256).context("subnet index")?;
            let network = Ipv4Addr::new(10, second, third, 0);
            if used.iter().any(|&(addr, len)| overlaps(addr, len, network, 24)) {
                continue;
            }
            let address = format!("10.{second}.{third}.1/24");
            if ip(&["addr", "add", &address, "dev", &self.bridge]).is_err() {
                used = used_ipv4_prefixes()?;
                continue;
            }
            // Another run (without our lock file, e.g. in another container) may have picked
            // the same /24 at the same moment; both then back off to a different one.
            let holders = interfaces_with_addresses_in(network)?;
            if holders.iter().all(|name| *name == self.bridge) {
                self.subnet = Some(network);
                return Ok(());
            }
            ip(&["addr", "del", &address, "dev", &self.bridge])?;
            used = used_ipv4_prefixes()?;
        }
        bail!("no free /24 in 10.200-250.x.0 (every candidate overlaps an address or route of this machine)")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for pod in self.pods.iter().rev() {
            for error in remove_netns(&pod.netns, Some(&pod.veth)) {
                eprintln!("weft-e2e: removing pod {}: {error:#}", pod.name);
            }
        }
        if link_exists(&self.bridge)
            && let Err(error) = ip(&["link", "del", &self.bridge])
        {
            eprintln!("weft-e2e: removing bridge {}: {error:#}", self.bridge);
        }
        if std::thread::panicking() || std::env::var_os("WEFT_E2E_LOG_DIR").is_some() {
            eprintln!("weft-e2e: logs of cluster {} kept in {}", self.bridge, self.log_dir.display());
        } else if let Err(error) = std::fs::remove_dir_all(&self.log_dir) {
            eprintln!("weft-e2e: removing {}: {error}", self.log_dir.display());
        }
    }
}

impl Pod {
    /// The name given to [`Cluster::pod`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace, for `ip netns exec` in commands the harness does not wrap.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The address of `eth0`, reachable from other pods and from the root namespace.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The bridge address, i.e. the root namespace as seen from the pod.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// A log file path in the cluster's log directory, named after the pod and `what`.
    pub fn log_file(&self, what: &str) -> PathBuf {
        self.log_dir.join(format!("{}.{}.log", self.name, sanitize(what)))
    }

    /// A command that runs `program` inside the pod, as `uid` (and the same gid, no
    /// supplementary groups) when given. The environment gets `POD_NAME` and `POD_IP`, like the
    /// Kubernetes downward API would provide; callers' `env` entries override them.
    pub fn command(&self, uid: Option<u32>, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]);
        if let Some(uid) = uid {
            command.args(["setpriv", &format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "--"]);
        }
        command.arg(program).env("POD_NAME", &self.name).env("POD_IP", self.ip.to_string());
        command
    }

    /// Starts a long-running process in the pod as root, stdout and stderr appended to `log`.
    pub fn spawn(
        &self,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<ChildHandle> {
        self.spawn_inner(None, program, args, env, log)
    }

    /// Like [`Pod::spawn`] but as `uid` (e.g. the sidecar's dedicated uid, which its iptables
    /// rules exclude from capture).
    pub fn spawn_as(
        &self,
        uid: u32,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<ChildHandle> {
        self.spawn_inner(Some(uid), program, args, env, log)
    }

    fn spawn_inner(
        &self,
        uid: Option<u32>,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<ChildHandle> {
        let mut command = self.command(uid, program);
        command.args(args).envs(env.iter().copied());
        let name = program.file_name().unwrap_or(program.as_os_str()).to_string_lossy();
        ChildHandle::spawn(command, format!("{name} in pod {}", self.name), log)
    }

    /// Runs `args` (program first) to completion in the pod as root, within [`EXEC_TIMEOUT`].
    /// A non-zero exit is not an error; see [`Pod::exec_ok`].
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.exec_with(None, args, None, EXEC_TIMEOUT)
    }

    /// Like [`Pod::exec`] but as `uid`.
    pub fn exec_as(&self, uid: u32, args: &[&str]) -> anyhow::Result<Output> {
        self.exec_with(Some(uid), args, None, EXEC_TIMEOUT)
    }

    /// Runs `args` in the pod and returns stdout; a non-zero exit is an error quoting stderr.
    pub fn exec_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.exec(args)?;
        check_output(&format!("{} (in pod {})", args.join(" "), self.name), &output)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The general form: optional uid, optional stdin, explicit time limit.
    pub fn exec_with(
        &self,
        uid: Option<u32>,
        args: &[&str],
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let Some((program, rest)) = args.split_first() else {
            bail!("exec needs a program");
        };
        let mut command = self.command(uid, program);
        command.args(rest);
        run_bounded(command, input, timeout)
    }

    /// Connects from inside the pod (as `uid`, when given) to `addr`, sends `request`, and
    /// returns everything received until the server closes the connection. Uses bash's
    /// `/dev/tcp`, so nothing beyond bash is needed in the pod; an HTTP/1.1 request should say
    /// `Connection: close`.
    pub fn tcp_exchange(
        &self,
        uid: Option<u32>,
        addr: SocketAddr,
        request: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        let script = r#"exec 3<>"/dev/tcp/$0/$1" || exit 97; cat >&3; cat <&3"#;
        let (host, port) = (addr.ip().to_string(), addr.port().to_string());
        let output = self.exec_with(uid, &["bash", "-c", script, &host, &port], Some(request), timeout)?;
        check_output(&format!("a TCP exchange with {addr} from pod {}", self.name), &output)?;
        Ok(output.stdout)
    }
}

/// Starts a long-running process in the root namespace (e.g. a control plane that pods reach at
/// [`Cluster::gateway`]), with the same cleanup guarantees as pod processes.
pub fn spawn_on_host(program: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> anyhow::Result<ChildHandle> {
    let mut command = Command::new(program);
    command.args(args).envs(env.iter().copied());
    let name = program.file_name().unwrap_or(program.as_os_str()).to_string_lossy();
    ChildHandle::spawn(command, format!("{name} on the host"), log)
}

/// Waits until a TCP connection from inside `pod` to `addr` succeeds, e.g. until a server bound
/// to the pod's loopback is ready. Each attempt starts a process, so prefer
/// [`wait_for_tcp_from_root`] for addresses the root namespace can reach.
pub fn wait_for_tcp(pod: &Pod, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    const INTERVAL: Duration = Duration::from_millis(50);
    let script = r#"exec 3<>"/dev/tcp/$0/$1""#;
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no attempt made");
    for attempt in 1..=poll_budget(timeout, INTERVAL) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt_timeout = remaining.clamp(Duration::from_millis(200), Duration::from_secs(2));
        match pod.exec_with(None, &["bash", "-c", script, &host, &port], None, attempt_timeout) {
            Ok(output) if output.status.success() => return Ok(()),
            Ok(output) => last_error = String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            Err(error) => last_error = format!("{error:#}"),
        }
        if Instant::now() >= deadline {
            bail!("{addr} not reachable from pod {} after {attempt} attempts in {timeout:?}: {last_error}", pod.name);
        }
        std::thread::sleep(INTERVAL);
    }
    bail!("{addr} not reachable from pod {} within {timeout:?}: {last_error}", pod.name)
}

/// Waits until a TCP connection from the root namespace to `addr` succeeds (pod addresses are
/// reachable through the bridge).
pub fn wait_for_tcp_from_root(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    const INTERVAL: Duration = Duration::from_millis(25);
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no attempt made");
    for attempt in 1..=poll_budget(timeout, INTERVAL) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(&addr, remaining.clamp(Duration::from_millis(100), Duration::from_secs(1))) {
            Ok(_) => return Ok(()),
            Err(error) => last_error = error.to_string(),
        }
        if Instant::now() >= deadline {
            bail!("{addr} not reachable after {attempt} attempts in {timeout:?}: {last_error}");
        }
        std::thread::sleep(INTERVAL);
    }
    bail!("{addr} not reachable within {timeout:?}: {last_error}")
}

/// Runs `ip ARGS` and fails with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new("ip");
    command.args(args);
    run_ok(command, HARNESS_COMMAND_TIMEOUT)
}

/// Kills every process in the namespace, then deletes the veth and the namespace. Returns the
/// errors instead of stopping at the first, so that teardown goes as far as it can.
fn remove_netns(netns: &str, veth: Option<&str>) -> Vec<anyhow::Error> {
    const INTERVAL: Duration = Duration::from_millis(20);
    const LIMIT: Duration = Duration::from_secs(5);
    let mut errors = Vec::new();
    let mounted = Path::new(NETNS_DIR).join(netns).exists();
    if mounted {
        let deadline = Instant::now() + LIMIT;
        let mut remaining_pids = Vec::new();
        for _ in 0..poll_budget(LIMIT, INTERVAL) {
            remaining_pids = match ip(&["netns", "pids", netns]) {
                Ok(pids) => pids.split_whitespace().map(str::to_owned).collect(),
                Err(error) => {
                    errors.push(error);
                    break;
                }
            };
            if remaining_pids.is_empty() || Instant::now() >= deadline {
                break;
            }
            // A process may exit between listing and killing; that error is expected.
            let _ = signal_pids("KILL", &remaining_pids);
            std::thread::sleep(INTERVAL);
        }
        if !remaining_pids.is_empty() {
            errors.push(anyhow::anyhow!("processes {remaining_pids:?} in {netns} survived SIGKILL for {LIMIT:?}"));
        }
    }
    if let Some(veth) = veth
        && link_exists(veth)
        && let Err(error) = ip(&["link", "del", veth])
    {
        errors.push(error);
    }
    if mounted && let Err(error) = ip(&["netns", "del", netns]) {
        errors.push(error);
    }
    errors
}

/// Removes processes, namespaces, bridges and veths left by runs whose process no longer exists
/// (killed by a CI timeout, or interrupted: Ctrl-C does not reach children in their own process
/// groups).
fn sweep_stale() {
    sweep_orphans();
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = stale_owner(&name, ResourceKind::Netns) {
                tracing::info!(netns = %name, pid, "removing a namespace left by a dead run");
                for error in remove_netns(&name, None) {
                    eprintln!("weft-e2e: sweeping namespace {name}: {error:#}");
                }
            }
        }
    }
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return;
    };
    let mut links: Vec<String> =
        entries.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()).collect();
    // veths first: a bridge is only deleted once nothing is attached.
    links.sort_by_key(|name| name.starts_with("wb"));
    for name in links {
        let kind = if name.starts_with("wb") { ResourceKind::Bridge } else { ResourceKind::Veth };
        if let Some(pid) = stale_owner(&name, kind) {
            tracing::info!(link = %name, pid, "removing an interface left by a dead run");
            if let Err(error) = ip(&["link", "del", &name]) {
                eprintln!("weft-e2e: sweeping interface {name}: {error:#}");
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResourceKind {
    Netns,
    Bridge,
    Veth,
}

/// The pid of the run that created `name`, when `name` has this harness's format and that
/// process no longer exists.
fn stale_owner(name: &str, kind: ResourceKind) -> Option<u32> {
    let pid = owner_pid(name, kind)?;
    let alive = Path::new(&format!("/proc/{pid}")).exists();
    (!alive).then_some(pid)
}

/// Parses the creating pid out of a harness resource name; `None` for anything else.
fn owner_pid(name: &str, kind: ResourceKind) -> Option<u32> {
    let is_decimal = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let is_base36 = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    let pid = match kind {
        ResourceKind::Netns => {
            let (pid, rest) = name.strip_prefix("weft-")?.split_once('-')?;
            let (seq, pod) = rest.split_once('-')?;
            (is_decimal(seq) && !pod.is_empty()).then_some(pid)?
        }
        ResourceKind::Bridge => {
            let (pid, seq) = name.strip_prefix("wb")?.split_once('-')?;
            is_base36(seq).then_some(pid)?
        }
        ResourceKind::Veth => {
            let (pid, rest) = name.strip_prefix('v')?.split_once('-')?;
            let (seq, index) = rest.split_once('-')?;
            (is_base36(seq) && is_base36(index)).then_some(pid)?
        }
    };
    if !is_decimal(pid) {
        return None;
    }
    pid.parse().ok()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// An exclusive lock on a file in the temp directory, shared by all runs on this machine.
fn lock_harness() -> anyhow::Result<File> {
    const INTERVAL: Duration = Duration::from_millis(20);
    let path = std::env::temp_dir().join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + HARNESS_COMMAND_TIMEOUT;
    for _ in 0..poll_budget(HARNESS_COMMAND_TIMEOUT, INTERVAL) {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => std::thread::sleep(INTERVAL),
            Err(std::fs::TryLockError::WouldBlock) => break,
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
    bail!("{} stayed locked for {HARNESS_COMMAND_TIMEOUT:?}", path.display())
}

/// A locally administered unicast MAC for the bridge of cluster `seq` of
/// process `pid`, unique among concurrent runs (Linux pids fit in 22 bits,
/// and `seq` stays below `MAX_SEQ`).
fn bridge_mac(pid: u32, seq: u32) -> String {
    let [high, b, c, d] = pid.to_be_bytes();
    let [.., s1, s2] = seq.to_be_bytes();
    format!("02:{:02x}:{c:02x}:{d:02x}:{s1:02x}:{s2:02x}", b ^ high)
}

/// IPv4 prefixes this machine already uses: interface addresses (any overlap with them would
/// shadow someone's subnet) and routes of /24 or longer (shorter ones are less specific than the
/// cluster's connected route and harmless).
fn used_ipv4_prefixes() -> anyhow::Result<Vec<(Ipv4Addr, u8)>> {
    let addresses = ip(&["-o", "-4", "addr", "show"])?;
    let routes = ip(&["-4", "route", "show", "table", "all"])?;
    let mut used = parse_addresses(&addresses).into_iter().map(|(_, addr, len)| (addr, len)).collect::<Vec<_>>();
    used.extend(parse_routes(&routes).into_iter().filter(|&(_, len)| len >= 24));
    Ok(used)
}

fn interfaces_with_addresses_in(network: Ipv4Addr) -> anyhow::Result<Vec<String>> {
    let addresses = ip(&["-o", "-4", "addr", "show"])?;
    Ok(parse_addresses(&addresses)
        .into_iter()
        .filter(|&(_, addr, len)| overlaps(addr, len, network, 24))
        .map(|(name, _, _)| name)
        .collect())
}

/// Parses `ip -o -4 addr show`: `4: eth0    inet 192.0.2.2/24 brd ... scope global eth0\ ...`.
fn parse_addresses(output: &str) -> Vec<(String, Ipv4Addr, u8)> {
    output
        .lines()
        .filter_map(|line| {
            let mut tokens = line.split_whitespace();
            let _index = tokens.next()?;
            let name = tokens.next()?.split('@').next()?.to_owned();
            let mut tokens = tokens.skip_while(|token| *token != "inet");
            tokens.next()?;
            let (addr, len) = parse_prefix(tokens.next()?)?;
            Some((name, addr, len))
        })
        .collect()
}

/// Parses `ip -4 route show table all`, skipping the route type keyword and default routes.
fn parse_routes(output: &str) -> Vec<(Ipv4Addr, u8)> {
    const TYPES: [&str; 10] = [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "anycast",
        "blackhole",
        "unreachable",
        "prohibit",
        "throw",
        "nat",
    ];
    output
        .lines()
        .filter_map(|line| {
            let mut tokens = line.split_whitespace().peekable();
            if tokens.peek().is_some_and(|token| TYPES.contains(token)) {
                tokens.next();
            }
            parse_prefix(tokens.next()?)
        })
        .collect()
}

fn parse_prefix(text: &str) -> Option<(Ipv4Addr, u8)> {
    match text.split_once('/') {
        Some((addr, len)) => Some((addr.parse().ok()?, len.parse().ok().filter(|len| *len <= 32)?)),
        None => Some((text.parse().ok()?, 32)),
    }
}

fn overlaps(a: Ipv4Addr, a_len: u8, b: Ipv4Addr, b_len: u8) -> bool {
    let len = a_len.min(b_len);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    (u32::from(a) & mask) == (u32::from(b) & mask)
}

/// With `br_netfilter` loaded, bridged pod-to-pod traffic goes through the root namespace's
/// FORWARD chain; a DROP policy there (Docker sets one) silently breaks pod-to-pod tests.
fn warn_if_bridge_traffic_is_filtered() {
    let filtered =
        std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").is_ok_and(|value| value.trim() == "1");
    if !filtered {
        return;
    }
    let mut command = Command::new("iptables");
    command.args(["-w", "5", "-S", "FORWARD"]);
    if let Ok(rules) = run_ok(command, HARNESS_COMMAND_TIMEOUT)
        && !rules.lines().any(|line| line.trim() == "-P FORWARD ACCEPT")
    {
        eprintln!(
            "weft-e2e: bridge-nf-call-iptables is 1 and the FORWARD policy is not ACCEPT; pod-to-pod traffic \
             may be dropped (allow it with `iptables -I FORWARD -i wb+ -o wb+ -j ACCEPT`)"
        );
    }
}

fn effective_uid() -> anyhow::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find_map(|line| line.strip_prefix("Uid:")).context("no Uid line")?;
    // Real, effective, saved, filesystem.
    let euid = line.split_whitespace().nth(1).context("no effective uid")?;
    Ok(euid.parse()?)
}

fn validate_pod_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_POD_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !valid {
        bail!("pod name {name:?} must be 1 to {MAX_POD_NAME} lower-case letters, digits or '-', not starting with '-'");
    }
    Ok(())
}

/// Keeps a tag usable in a file name.
fn sanitize(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .take(MAX_POD_NAME)
        .collect();
    if cleaned.is_empty() { "cluster".to_owned() } else { cleaned }
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_are_parsed_only_from_harness_names() {
        use ResourceKind::*;
        for (name, kind, expected) in [
            ("weft-1234-0-app", Netns, Some(1234)),
            ("weft-1234-12-my-pod", Netns, Some(1234)),
            ("weft-1234-app", Netns, None),
            ("weft-abc-0-app", Netns, None),
            ("other-1234-0-app", Netns, None),
            ("wb1234-0", Bridge, Some(1234)),
            ("wb1234-a1", Bridge, Some(1234)),
            ("wb1234", Bridge, None),
            ("wbr0", Bridge, None),
            ("wb-1", Bridge, None),
            ("v1234-0-3", Veth, Some(1234)),
            ("v1234-0", Veth, None),
            ("veth0", Veth, None),
            ("vx-0-1", Veth, None),
        ] {
            assert_eq!(owner_pid(name, kind), expected, "{name}");
        }
    }

    #[test]
    fn parses_ip_output() {
        let addresses = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
                         4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever\n";
        assert_eq!(
            parse_addresses(addresses),
            [("lo".to_owned(), Ipv4Addr::new(127, 0, 0, 1), 8), ("eth0".to_owned(), Ipv4Addr::new(192, 0, 2, 2), 24)]
        );
        let routes = "default via 192.0.2.1 dev eth0 \n\
                      192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2 \n\
                      local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1 \n\
                      broadcast 127.255.255.255 dev lo table local proto kernel scope link src 127.0.0.1 \n";
        assert_eq!(
            parse_routes(routes),
            [
                (Ipv4Addr::new(192, 0, 2, 0), 24),
                (Ipv4Addr::new(127, 0, 0, 1), 32),
                (Ipv4Addr::new(127, 255, 255, 255), 32)
            ]
        );
    }

    #[test]
    fn prefix_overlap() {
        let net = Ipv4Addr::new(10, 200, 3, 0);
        assert!(overlaps(Ipv4Addr::new(10, 200, 3, 1), 24, net, 24));
        assert!(overlaps(Ipv4Addr::new(10, 200, 3, 77), 32, net, 24));
        assert!(overlaps(Ipv4Addr::new(10, 0, 0, 0), 8, net, 24));
        assert!(!overlaps(Ipv4Addr::new(10, 200, 4, 1), 24, net, 24));
        assert!(overlaps(Ipv4Addr::UNSPECIFIED, 0, net, 24));
    }

    #[test]
    fn names_fit_interface_limits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(MAX_SEQ - 1), "zzz");
        let longest_veth = format!("v{}-{}-{}", 4_194_304, base36(MAX_SEQ - 1), base36(MAX_PODS as u32));
        assert!(longest_veth.len() <= MAX_IFNAME, "{longest_veth}");
        let longest_bridge = format!("wb{}-{}", 4_194_304, base36(MAX_SEQ - 1));
        assert!(longest_bridge.len() <= MAX_IFNAME, "{longest_bridge}");
    }

    #[test]
    fn pod_names_are_validated() {
        assert!(validate_pod_name("app-1").is_ok());
        for bad in ["", "App", "a b", "-a", "a/b", &"x".repeat(MAX_POD_NAME + 1)] {
            assert!(validate_pod_name(bad).is_err(), "{bad:?}");
        }
    }
}
