//! The real binaries as child processes: output collected line by line,
//! killed on drop so a failing test leaves nothing running.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bin_path;

/// A child process whose stdout and stderr lines are collected.
pub struct Proc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Proc { child, lines }
    }

    /// The first output line starting with `prefix`, waiting up to 20 s.
    pub fn wait_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no line starting with {prefix:?}; got {:?}",
            self.lines.lock().unwrap()
        );
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// SIGTERM, then the exit status (killed and a panic after 10 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy binary on `policy`, every port ephemeral on loopback.
pub fn proxy_command(policy: &Path) -> Command {
    let mut cmd = Command::new(bin_path("llmesh-proxy"));
    cmd.arg("--policy-file").arg(policy).args([
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    cmd
}

/// `python3` set up as an injected app: the SDKs' base URLs point at the
/// sidecar's LLM API `llm` (`http://127.0.0.1:PORT`), any key will do, and
/// no proxy or organisation variable of this machine leaks in.
pub fn sdk_command(llm: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.env("OPENAI_BASE_URL", format!("{llm}/v1"))
        .env("ANTHROPIC_BASE_URL", llm)
        .env("OPENAI_API_KEY", "unused")
        .env("ANTHROPIC_API_KEY", "unused")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("PYTHONUNBUFFERED", "1");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "OPENAI_WEBSOCKET_BASE_URL",
        "ANTHROPIC_AUTH_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The value of `key=` in a `key=value key2=value2` line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(&format!("{key}="))
        .map(|i| i + key.len() + 1)
        .unwrap();
    line[start..].split_whitespace().next().unwrap()
}

/// The mock binary on an ephemeral port requiring `key`, and its base URL.
pub fn spawn_mock(key: &str) -> (Proc, String) {
    let mock = Proc::spawn(Command::new(bin_path("llmesh-mock")).args([
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        key,
    ]));
    let line = mock.wait_line("llmesh-mock listening on ");
    let url = line
        .trim_start_matches("llmesh-mock listening on ")
        .trim()
        .to_string();
    (mock, url)
}

/// A started proxy binary and the base URLs it printed.
pub struct ProxyProc {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT` of the LLM API.
    pub llm: String,
    /// `http://127.0.0.1:PORT` of `/metrics`.
    pub metrics: String,
}

/// Starts `cmd` (from [`proxy_command`]) and waits for its listening line.
pub fn spawn_proxy(cmd: &mut Command) -> ProxyProc {
    let proc = Proc::spawn(cmd);
    let line = proc.wait_line("llmesh-proxy listening ");
    let llm = field(&line, "llm").to_string();
    let metrics = field(&line, "metrics").to_string();
    ProxyProc { proc, llm, metrics }
}
