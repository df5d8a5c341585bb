//! Child processes for end-to-end tests: every one is bounded in time and cleaned up on drop.
//!
//! Tests start real proxies, control planes and workloads; a test that fails must not leave them
//! running (they would hold ports and namespaces of later runs), and a hung command must fail the
//! test instead of hanging CI. Processes get their own process group so a whole tree can be
//! signalled, and the group is signalled only while its leader is unreaped, so the group id can
//! never have been recycled for an unrelated process.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long commands the harness runs for itself (`ip ...`, `kill`) may take.
pub(crate) const HARNESS_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Polling interval of every wait loop; loops also carry a count derived from their time limit.
const POLL: Duration = Duration::from_millis(20);

/// How long a killed process may take to be reaped before the harness gives up on it.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Environment variable naming the test process that started a child, so that children of a
/// run that died without cleaning up can be found and killed by the next run.
pub const OWNER_ENV: &str = "WEFT_E2E_OWNER";

/// Lines of a child's log printed when a test panics, so CI output shows why without the file.
const LOG_TAIL_LINES: usize = 40;

/// Upper bound of polls for a wait of `timeout`, so no loop depends on the clock alone.
pub(crate) fn poll_budget(timeout: Duration, interval: Duration) -> u64 {
    (timeout.as_millis() / interval.as_millis().max(1)) as u64 + 2
}

/// A long-running process started by a test, killed (with its process group) on drop.
#[derive(Debug)]
pub struct ChildHandle {
    child: Child,
    label: String,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl ChildHandle {
    /// Starts `command` in its own process group with stdout and stderr appended to `log`.
    pub(crate) fn spawn(mut command: Command, label: String, log: &Path) -> anyhow::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log file {}", log.display()))?;
        writeln!(file, "# weft-e2e: {label}: {}", describe(&command))
            .with_context(|| format!("writing log file {}", log.display()))?;
        let stderr = file.try_clone().with_context(|| format!("duplicating log file {}", log.display()))?;
        command
            .env(OWNER_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .process_group(0);
        let child = command.spawn().with_context(|| format!("starting {label}: {}", describe(&command)))?;
        tracing::debug!(%label, pid = child.id(), log = %log.display(), "started");
        Ok(Self { child, label, log: log.to_owned(), status: None })
    }

    /// Process id, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process logged so far, for assertions and failure messages.
    pub fn log(&self) -> String {
        std::fs::read(&self.log).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
    }

    /// The exit status if the process has exited (reaping it).
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().with_context(|| format!("checking on {}", self.label))?;
        }
        Ok(self.status)
    }

    /// Fails with the log's tail when the process has exited, so a readiness wait that times out
    /// because the server crashed says so.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited ({status}); log {}:\n{}", self.label, self.log.display(), self.log_tail()),
        }
    }

    /// Sends `signal` (a name as `kill -s` takes it, e.g. `TERM`, `HUP`) to the process group.
    pub fn signal(&mut self, signal: &str) -> anyhow::Result<()> {
        if self.try_wait()?.is_some() || self.leader_exited() {
            bail!("{} has already exited", self.label);
        }
        signal_group(self.pid(), signal)
    }

    /// Asks the process group to stop with SIGTERM, then kills it after `grace`; returns how the
    /// process ended. Use to test graceful shutdown; drop is enough for cleanup.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if !self.leader_exited() {
            signal_group(self.pid(), "TERM")?;
        }
        let deadline = Instant::now() + grace;
        for _ in 0..poll_budget(grace, POLL) {
            if self.leader_exited() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        self.kill_and_reap()
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        for _ in 0..poll_budget(timeout, POLL) {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        self.try_wait()
    }

    /// Kills the whole group while the leader is unreaped (so the group id is still ours), then
    /// reaps the leader within [`REAP_TIMEOUT`].
    fn kill_and_reap(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if let Err(error) = signal_group(self.pid(), "KILL") {
            // The group may be gone already; fall back to the leader alone.
            tracing::debug!(label = %self.label, %error, "killing the process group");
            let _ = self.child.kill();
        }
        match self.wait_timeout(REAP_TIMEOUT)? {
            Some(status) => Ok(status),
            None => bail!("{} did not exit within {REAP_TIMEOUT:?} of SIGKILL", self.label),
        }
    }

    /// True once the leader is a zombie or gone, checked without reaping it.
    fn leader_exited(&self) -> bool {
        if self.status.is_some() {
            return true;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) {
            // The state follows the parenthesised command name, which may itself contain ") ".
            Ok(stat) => stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
            Err(_) => true,
        }
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- weft-e2e: last lines of {} (log {}) ---\n{}\n--- end of {} ---",
                self.label,
                self.log.display(),
                self.log_tail(),
                self.label
            );
        }
        if let Err(error) = self.kill_and_reap() {
            eprintln!("weft-e2e: cleaning up {}: {error:#}", self.label);
        }
    }
}

/// Runs `command` to completion within `timeout`, feeding it `input`, and collects its output.
/// On timeout the command's process group is killed and an error names the command.
pub(crate) fn run_bounded(mut command: Command, input: Option<&[u8]>, timeout: Duration) -> anyhow::Result<Output> {
    let what = describe(&command);
    command
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().with_context(|| format!("starting `{what}`"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        // A command that stops reading must not block the harness; the writer ends with the pipe.
        std::thread::spawn(move || stdin.write_all(&input));
    }
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut status = None;
    for _ in 0..poll_budget(timeout, POLL / 4) {
        status = child.try_wait().with_context(|| format!("waiting for `{what}`"))?;
        if status.is_some() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL / 4);
    }
    let Some(status) = status else {
        // Unreaped, so the group id is still this command's.
        let _ = signal_group(child.id(), "KILL");
        let _ = child.kill();
        let _ = child.wait();
        let stderr = stderr.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
        bail!("`{what}` did not finish within {timeout:?}; stderr: {}", String::from_utf8_lossy(&stderr).trim());
    };
    // A leftover grandchild may hold the pipes open; do not wait for it past the deadline.
    let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    let stdout = stdout
        .recv_timeout(remaining)
        .with_context(|| format!("`{what}` exited but a leftover process kept its stdout open"))?;
    let stderr = stderr.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

/// Like [`run_bounded`], but a non-zero exit is an error carrying stderr; returns stdout.
pub(crate) fn run_ok(command: Command, timeout: Duration) -> anyhow::Result<String> {
    let what = describe(&command);
    let output = run_bounded(command, None, timeout)?;
    check_output(&what, &output)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Turns a failed exit into an error naming the command and quoting its stderr.
pub(crate) fn check_output(what: &str, output: &Output) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let mut message = format!("`{what}` failed ({})", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        let _ = write!(message, ": {}", stderr.trim());
    }
    bail!(message)
}

/// Signals a process group through bash's `kill` builtin: std can only SIGKILL a single process,
/// the workspace forbids `unsafe` (so no libc), and bash is on every machine that runs these
/// tests, unlike procps' `kill`.
pub(crate) fn signal_pids(signal: &str, targets: &[String]) -> anyhow::Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let mut command = Command::new("bash");
    command.args(["-c", r#"kill -s "$0" -- "$@""#, signal]).args(targets);
    let what = describe(&command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{what}`"))?;
    let stderr = read_in_background(child.stderr.take());
    let mut status = None;
    for _ in 0..poll_budget(HARNESS_COMMAND_TIMEOUT, POLL / 4) {
        status = child.try_wait().with_context(|| format!("waiting for `{what}`"))?;
        if status.is_some() {
            break;
        }
        std::thread::sleep(POLL / 4);
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("`{what}` did not finish");
    };
    let stderr = stderr.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    check_output(&what, &Output { status, stdout: Vec::new(), stderr })
}

/// Kills processes started by [`ChildHandle`]s of test processes that no longer exist.
pub(crate) fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let marker = format!("{OWNER_ENV}=");
    let mut orphans = Vec::new();
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Unreadable for exited processes and kernel threads; those are not ours.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let owner = environ
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(marker.as_bytes()))
            .and_then(|owner| std::str::from_utf8(owner).ok())
            .and_then(|owner| owner.parse::<u32>().ok());
        if let Some(owner) = owner
            && !Path::new(&format!("/proc/{owner}")).exists()
        {
            tracing::info!(pid, owner, "killing a process left by a dead run");
            orphans.push(pid);
        }
    }
    if let Err(error) = signal_pids("KILL", &orphans) {
        // Some may have exited meanwhile; the rest are reported.
        tracing::debug!(%error, "killing orphans");
    }
}

fn signal_group(pgid: u32, signal: &str) -> anyhow::Result<()> {
    signal_pids(signal, &[format!("-{pgid}")])
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let _ = pipe.read_to_end(&mut buffer);
            let _ = sender.send(buffer);
        });
    } else {
        let _ = sender.send(Vec::new());
    }
    receiver
}

/// The command line, for logs and error messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut out = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_bounded_collects_output_and_input() {
        let mut command = Command::new("bash");
        command.args(["-c", "cat; echo err >&2; exit 3"]);
        let output = run_bounded(command, Some(b"hello"), Duration::from_secs(10)).expect("runs");
        assert_eq!(output.stdout, b"hello");
        assert_eq!(output.stderr, b"err\n");
        assert_eq!(output.status.code(), Some(3));
    }

    #[test]
    fn run_bounded_kills_on_timeout() {
        let mut command = Command::new("bash");
        command.args(["-c", "sleep 30"]);
        let started = Instant::now();
        let error = run_bounded(command, None, Duration::from_millis(200)).expect_err("times out");
        assert!(error.to_string().contains("did not finish"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn child_handle_stops_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("weft-e2e-process-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("child.log");
        let mut command = Command::new("bash");
        // A grandchild that would outlive a kill of the leader alone.
        command.args(["-c", "sleep 60 & echo \"started $!\"; wait"]);
        let mut child = ChildHandle::spawn(command, "sleeper".into(), &log).expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        let grandchild = loop {
            let log = child.log();
            if let Some(pid) = log.lines().find_map(|line| line.strip_prefix("started ")) {
                break pid.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "the child never started: {log}");
            std::thread::sleep(POLL);
        };
        child.ensure_running().expect("running");
        let status = child.stop(Duration::from_secs(5)).expect("stops");
        assert!(!status.success());
        // Gone, or a zombie waiting for whatever reaps orphans here.
        let stat = format!("/proc/{grandchild}/stat");
        let alive = || {
            std::fs::read_to_string(&stat).is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with('Z')))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert!(!alive(), "the grandchild was killed with the group");
        assert!(child.log().contains("# weft-e2e: sleeper: bash -c"));
        drop(child);
        let _ = std::fs::remove_dir_all(dir);
    }
}
