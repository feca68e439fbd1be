//! Prometheus' own tools, as CI has them from Debian's `prometheus`
//! package (`make deps` installs it): `promtool`, and a throwaway
//! `prometheus` server on a free loopback port with its config and
//! storage in a temporary folder, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use llmesh_tests::Http;
use serde_json::Value;

/// Set to 1 to let these tests pass, loudly skipped, on a machine without
/// Prometheus. Unset (CI), a missing binary fails them.
pub const ALLOW_MISSING: &str = "LLMESH_ALLOW_MISSING_PROMETHEUS";

/// `name` on the PATH. When it is missing the calling test fails, unless
/// [`ALLOW_MISSING`] is 1: then `None`, and the test returns early.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_some() {
        return found;
    }
    if std::env::var(ALLOW_MISSING).as_deref() == Ok("1") {
        eprintln!(
            "\n{bar}\nSKIPPED: `{name}` is not installed and {ALLOW_MISSING}=1.\n\
             The dashboard, alert and metrics checks did NOT run.\n\
             `make deps` installs Debian's prometheus package.\n{bar}\n",
            bar = "!".repeat(72)
        );
        return None;
    }
    panic!(
        "`{name}` is not on the PATH. `make deps` installs it (Debian package \
         `prometheus`); set {ALLOW_MISSING}=1 to skip these checks instead."
    );
}

/// Runs `promtool` with `args` in `dir`, `stdin` piped in; returns
/// whether it succeeded and everything it printed.
pub fn promtool(bin: &Path, dir: &Path, args: &[&str], stdin: &[u8]) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin)
        .expect("write promtool stdin");
    let out = child.wait_with_output().expect("promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A running Prometheus server.
pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    http: Http,
}

impl Prometheus {
    /// Starts `bin` on `config` (prometheus.yml text) and waits until it
    /// is ready. The port is picked free just before; should another
    /// process take it in between, the start is tried again.
    pub async fn start(bin: &Path, config: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let http = Http::new();
        let log_path = dir.path().join("prometheus.log");
        let mut log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log_file = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(bin)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("spawn prometheus");
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if ready(&http, &url).await {
                    return Prometheus {
                        child,
                        dir,
                        url,
                        http,
                    };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
            log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if !log.contains("address already in use") {
                break;
            }
        }
        panic!("prometheus did not start:\n{log}");
    }

    /// Its base URL, `http://127.0.0.1:port` (`tests/canary.rs` points
    /// the controller at it).
    #[allow(dead_code)]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` (with its query string) on the HTTP API, parsed.
    pub async fn api(&self, path: &str) -> Value {
        let (_, _, body) = self.http.get(&format!("{}{}", self.url, path)).await;
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("not JSON from {path}: {}", String::from_utf8_lossy(&body)))
    }

    /// An instant query at the current time: the result's samples (a
    /// scalar comes back as one sample), or Prometheus' error.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .await;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        let data = &v["data"];
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => Ok(data["result"].as_array().cloned().unwrap()),
            Some("scalar") | Some("string") => Ok(vec![serde_json::json!({
                "metric": {},
                "value": data["result"]
            })]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// Values of `label` on the series matching `selector`.
    pub async fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, String> {
        let v = self
            .api(&format!(
                "/api/v1/label/{label}/values?match[]={}",
                encode(selector)
            ))
            .await;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect())
    }

    /// Waits until `instance` has been scraped by a scrape that started
    /// after `t` (Unix seconds), so everything up to `t` is stored.
    pub async fn wait_scraped_after(&self, instance: &str, t: f64) {
        let expr = format!("timestamp(up{{instance=\"{instance}\"}})");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(samples) = self.query(&expr).await {
                if samples.iter().any(|s| sample_value(s) > t) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{instance} was not scraped after {t} within 20 s:\n{}",
            self.log()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the server at `url` says it is ready. Connection errors
/// count as not ready (the shared client panics on them, so probe with
/// a plain TCP connect first).
async fn ready(http: &Http, url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    if tokio::net::TcpStream::connect(addr).await.is_err() {
        return false;
    }
    let ready = format!("{url}/-/ready");
    let req = http.send(http::Method::GET, &ready, Default::default(), &[]);
    match tokio::time::timeout(Duration::from_secs(2), req).await {
        Ok((s, _, _)) => s == 200,
        Err(_) => false,
    }
}

/// The number in an instant-query sample (`"value": [time, "number"]`);
/// NaN when it is not one.
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Percent-encoding for a URL query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
