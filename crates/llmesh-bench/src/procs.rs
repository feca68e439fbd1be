//! The two child processes (mock and proxy) and what `/proc` tells about
//! them: CPU time and resident memory.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// Lines of a child's output kept for error messages.
const TAIL_LINES: usize = 40;
/// Longest line kept in the tail (JSON logs can be long).
const TAIL_LINE_CHARS: usize = 400;
/// How long a child gets to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(15);

type Tail = Arc<Mutex<VecDeque<String>>>;

/// A running child. Dropping it kills the process (SIGKILL) and reaps it,
/// so no exit path of the bench leaves a mock or proxy behind.
pub struct ChildGuard {
    name: &'static str,
    child: Child,
    tail: Tail,
    /// The first stdout line starting with the expected prefix.
    pub announce: String,
}

impl ChildGuard {
    /// Starts `cmd`, drains its stdout and stderr on two threads for its
    /// whole life (so a full pipe never blocks it), and waits for the
    /// first stdout line starting with `prefix`.
    pub fn spawn(
        name: &'static str,
        mut cmd: Command,
        prefix: &'static str,
    ) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let tail: Tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        // From here on the guard owns the child: an early return kills it.
        let mut guard = ChildGuard {
            name,
            child,
            tail: tail.clone(),
            announce: String::new(),
        };
        let stdout = stdout.ok_or_else(|| anyhow!("{name}: no stdout pipe"))?;
        let stderr = stderr.ok_or_else(|| anyhow!("{name}: no stderr pipe"))?;
        drain(stdout, tail.clone(), Some((prefix, tx)));
        drain(stderr, tail, None);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    guard.announce = line;
                    return Ok(guard);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting.
                    std::thread::sleep(Duration::from_millis(100));
                    bail!("{name} exited before listening\n{}", guard.describe());
                }
            }
            if let Ok(Some(status)) = guard.child.try_wait() {
                bail!(
                    "{name} exited ({status}) before listening\n{}",
                    guard.describe()
                );
            }
            if left.is_zero() {
                bail!(
                    "{name} did not print its listening line within {START_TIMEOUT:?}\n{}",
                    guard.describe()
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the child has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited during the run ({status})\n{}",
                self.name,
                self.describe()
            ),
            Err(e) => bail!("{}: cannot poll the process: {e}", self.name),
        }
    }

    /// The last lines the child printed, for error messages.
    pub fn describe(&self) -> String {
        let tail = match self.tail.lock() {
            Ok(t) => t.iter().cloned().collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
        if tail.is_empty() {
            format!("({} printed nothing)", self.name)
        } else {
            format!("last output of {}:\n  {}", self.name, tail.join("\n  "))
        }
    }

    /// Log lines the child printed, apart from its listening line.
    pub fn output_lines(&self) -> Vec<String> {
        match self.tail.lock() {
            Ok(t) => t.iter().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `from` line by line until EOF on a detached thread (it ends when
/// the child dies and the pipe closes). The first line starting with the
/// prefix goes to the channel; the others into the tail.
fn drain<R: Read + Send + 'static>(
    from: R,
    tail: Tail,
    announce: Option<(&'static str, mpsc::Sender<String>)>,
) {
    let _ = std::thread::Builder::new()
        .name("bench-drain".into())
        .spawn(move || {
            let mut announce = announce;
            let reader = BufReader::new(from);
            for line in reader.split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if let Some((prefix, tx)) = &announce {
                    if line.starts_with(prefix) {
                        let _ = tx.send(line);
                        announce = None;
                        continue;
                    }
                }
                if let Ok(mut t) = tail.lock() {
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line.chars().take(TAIL_LINE_CHARS).collect());
                }
            }
        });
}

/// `http://127.0.0.1:PORT[/...]` → the socket address; refuses anything
/// that is not loopback.
pub fn loopback_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http:// URL: {url:?}"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = hostport
        .parse()
        .with_context(|| format!("not an IP:port address: {url:?}"))?;
    if !addr.ip().is_loopback() {
        bail!("refusing non-loopback target {addr}");
    }
    Ok(addr)
}

/// Finds a sibling binary of the running executable (all workspace
/// binaries are built into the same target/<profile> directory).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found next to the bench; build it (cargo build --release -p {name}) or pass its path",
            path.display()
        );
    }
    Ok(path)
}

/// CPU time of a process in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// Sum of the first field of `/proc/PID/task/*/schedstat` (ns on CPU
    /// of every live thread); `None` when the kernel has no schedstat.
    pub schedstat_ns: Option<u64>,
    /// `utime + stime` of `/proc/PID/stat`, converted assuming 100 ticks/s
    /// (the USER_HZ of every Linux architecture the bench runs on).
    pub stat_ns: u64,
}

impl CpuTime {
    /// Best available value: schedstat (ns resolution) when present, else
    /// stat ticks (10 ms resolution).
    pub fn best_ns(&self) -> u64 {
        self.schedstat_ns.unwrap_or(self.stat_ns)
    }
    pub fn source(&self) -> &'static str {
        if self.schedstat_ns.is_some() {
            "schedstat"
        } else {
            "stat"
        }
    }
}

/// `USER_HZ`, assumed (reading it needs sysconf and therefore libc).
const CLK_TCK: u64 = 100;

pub fn cpu_time(pid: u32) -> anyhow::Result<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: fields restart after
    // the last ')'. utime and stime are fields 14 and 15 overall, i.e. the
    // 12th and 13th after the state field.
    let after = stat
        .rsplit_once(')')
        .map(|(_, a)| a)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat format"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat format"))
    };
    let stat_ns = (ticks(11)? + ticks(12)?) * (1_000_000_000 / CLK_TCK);
    Ok(CpuTime {
        schedstat_ns: schedstat_ns(pid),
        stat_ns,
    })
}

fn schedstat_ns(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    let mut any = false;
    for entry in dir.flatten() {
        let Ok(s) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
        {
            sum += ns;
            any = true;
        }
    }
    any.then_some(sum)
}

/// Resident set size (`VmRSS` of `/proc/PID/status`) in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// Samples a process's RSS on a thread every `every` until stopped (or
/// `max` has passed), keeping the peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(u64, u32)>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration, max: Duration) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("bench-rss".into())
            .spawn(move || {
                let end = Instant::now() + max;
                let mut peak = 0u64;
                let mut samples = 0u32;
                while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                    if let Ok(kib) = rss_kib(pid) {
                        peak = peak.max(kib);
                        samples += 1;
                    }
                    std::thread::sleep(every);
                }
                (peak, samples)
            })
            .context("starting the RSS sampler thread")?;
        Ok(RssSampler {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops sampling; returns (peak KiB, number of samples).
    pub fn finish(mut self) -> anyhow::Result<(u64, u32)> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self
            .handle
            .take()
            .ok_or_else(|| anyhow!("sampler already finished"))?;
        handle
            .join()
            .map_err(|_| anyhow!("the RSS sampler thread panicked"))
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Machine description for the report header.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// The CPUs this process may run on (children inherit them), e.g. `0-1`.
pub fn cpu_affinity() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

pub fn display(p: &Path) -> String {
    p.display().to_string()
}

/// What waking up costs on this machine: a thread sleeps `n` times for
/// `every` and reads its own schedstat. Returns (CPU µs per wake-up,
/// median lateness µs); `None` without schedstat.
pub fn wakeup_cost(n: u32, every: Duration) -> Option<(f64, f64)> {
    let handle = std::thread::Builder::new()
        .name("bench-calibrate".into())
        .spawn(move || {
            let own = || -> Option<u64> {
                std::fs::read_to_string("/proc/thread-self/schedstat")
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            };
            let mut late = Vec::with_capacity(n as usize);
            let start = own()?;
            for _ in 0..n {
                let t = Instant::now();
                std::thread::sleep(every);
                late.push(t.elapsed().saturating_sub(every));
            }
            let cpu = own()?.saturating_sub(start);
            late.sort_unstable();
            let median = late.get(late.len() / 2).copied().unwrap_or_default();
            Some((
                cpu as f64 / 1000.0 / f64::from(n.max(1)),
                median.as_secs_f64() * 1e6,
            ))
        })
        .ok()?;
    handle.join().ok().flatten()
}

/// An API key only this run knows, for the mock (and the proxy's policy).
pub fn run_key() -> String {
    format!(
        "llmesh-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    )
}

/// Starts `llmesh-mock` on a free loopback port, one worker thread,
/// requiring `key`; returns it and its address.
pub fn spawn_mock(bin: &Path, key: &str) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    spawn_mock_with(bin, key, &[])
}

/// As [`spawn_mock`], with more arguments (e.g. `--latency-ms 20`).
pub fn spawn_mock_with(
    bin: &Path,
    key: &str,
    extra: &[&str],
) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--api-key",
        key,
    ])
    .args(extra)
    .env("RUST_LOG", "warn");
    let mock = ChildGuard::spawn("llmesh-mock", cmd, "llmesh-mock listening on ")?;
    let url = mock
        .announce
        .strip_prefix("llmesh-mock listening on ")
        .unwrap_or_default()
        .trim()
        .to_string();
    let addr = loopback_addr(&url)?;
    Ok((mock, addr))
}

/// A mock and a one-thread sidecar in front of it on `policy(mock port)`,
/// for the benches that drive the sidecar binary on one route or two.
pub struct Stack {
    pub addrs: ProxyAddrs,
    _mock: ChildGuard,
    _proxy: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Starts both (the binaries given, else the ones beside this one);
    /// `mock_args` go to the mock.
    pub fn start(
        proxy_bin: Option<&Path>,
        mock_bin: Option<&Path>,
        mock_args: &[&str],
        policy: impl Fn(u16) -> String,
    ) -> anyhow::Result<Stack> {
        use anyhow::Context as _;
        let mock_bin = match mock_bin {
            Some(p) => p.to_path_buf(),
            None => sibling_binary("llmesh-mock")?,
        };
        let proxy_bin = match proxy_bin {
            Some(p) => p.to_path_buf(),
            None => sibling_binary("llmesh-proxy")?,
        };
        let dir = tempfile::tempdir().context("creating a temp dir")?;
        let key = run_key();
        let (mock, mock_addr) = spawn_mock_with(&mock_bin, &key, mock_args)?;
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, policy(mock_addr.port())).context("writing the policy file")?;
        let (proxy, addrs) = spawn_proxy(&proxy_bin, &file, 1, "warn", &key)?;
        Ok(Stack {
            addrs,
            _mock: mock,
            _proxy: proxy,
            _dir: dir,
        })
    }
}

/// Where a started proxy listens.
#[derive(Debug, Clone, Copy)]
pub struct ProxyAddrs {
    pub llm: SocketAddr,
    pub metrics: SocketAddr,
}

/// Starts `llmesh-proxy` on `policy` with every port on a free loopback
/// port; `key` is exported as `LLMESH_BENCH_KEY` for the policy's
/// credentials.
pub fn spawn_proxy(
    bin: &Path,
    policy: &Path,
    threads: usize,
    log: &str,
    key: &str,
) -> anyhow::Result<(ChildGuard, ProxyAddrs)> {
    let mut cmd = Command::new(bin);
    cmd.arg("--policy-file")
        .arg(policy)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--threads",
            &threads.to_string(),
            "--log",
            log,
        ])
        .env("LLMESH_BENCH_KEY", key)
        .env_remove("LLMESH_LOG")
        .env_remove("LLMESH_THREADS");
    let proxy = ChildGuard::spawn("llmesh-proxy", cmd, "llmesh-proxy listening ")?;
    let field = |name: &str| -> anyhow::Result<SocketAddr> {
        let url = proxy
            .announce
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .ok_or_else(|| anyhow!("no {name} address in {:?}", proxy.announce))?;
        loopback_addr(url)
    };
    let addrs = ProxyAddrs {
        llm: field("llm=")?,
        metrics: field("metrics=")?,
    };
    Ok((proxy, addrs))
}
