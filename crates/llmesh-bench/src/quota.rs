//! `llmesh-bench --quota`: the latency a quota check adds, in process:
//! `admit` and `settle` of the quota engine (llmesh-quota) over the memory
//! store, and over Redis on loopback next to the round trip of a bare PING.
//! Redis is a redis-server this run starts on a free port, or the one
//! named by `LLMESH_BENCH_REDIS`.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use llmesh_api::parse_documents;
use llmesh_policy::{compile, EnvFileSecrets};
use llmesh_quota::{
    Admission, AnyStore, MemoryStore, QuotaEngine, QuotaRuntime, QuotaStore, RedisConfig,
    RedisStore,
};

use crate::load::percentile;
use crate::procs::{cpu_affinity, cpu_model};

// The issue's targets at p50.
const TARGET_MEMORY_US: f64 = 5.0;
const TARGET_REDIS_EXTRA_US: f64 = 20.0;

/// Counts for one run.
pub struct QuotaPlan {
    pub quick: bool,
}

/// A namespace quota with four limits, none of which the run reaches.
const POLICY: &str = r#"
apiVersion: llmesh.io/v1alpha1
kind: LLMQuota
metadata: {name: team-budget}
spec:
  limits:
    requestsPerMinute: 1000000000
    tokensPerMinute: 1000000000000
    costPerDay: "1000000"
    concurrentRequests: 100000
"#;

struct Row {
    store: &'static str,
    op: &'static str,
    calls: usize,
    p50: Duration,
    p99: Duration,
    target: Option<f64>,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A redis-server on a free loopback port, killed on drop.
struct RedisChild(Child);

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> anyhow::Result<(String, RedisChild)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server (make deps installs it; or set LLMESH_BENCH_REDIS)")?;
    Ok((format!("redis://127.0.0.1:{port}/0"), RedisChild(child)))
}

/// One admission of a typical chat request and its settlement: (time to
/// admit, time to admit and settle). Without `settle_too` the reservation
/// is still settled, untimed, so no background release interferes.
async fn admit_settle<S: QuotaStore>(
    e: &QuotaEngine<S>,
    settle_too: bool,
) -> anyhow::Result<(Duration, Duration)> {
    let callers = [];
    let a = Admission {
        namespace: "bench",
        workload: "checkout",
        pod: "checkout-7d9f",
        callers: &callers,
        model: "gpt-4o-mini",
        input_tokens: 812,
        output_tokens: 256,
        est_cost_usd: 0.0003,
        now: SystemTime::now(),
    };
    let t0 = Instant::now();
    let r = e
        .admit(&a)
        .await
        .into_reservation()
        .ok_or_else(|| anyhow!("the bench quota refused a request"))?;
    let admit = t0.elapsed();
    r.settle(812, 143, 0.0002).await;
    let both = t0.elapsed();
    Ok((admit, if settle_too { both } else { admit }))
}

/// p50 and p99 over `n` calls, after a tenth more to warm up.
async fn measure<S: QuotaStore>(
    e: &QuotaEngine<S>,
    n: usize,
    settle_too: bool,
) -> anyhow::Result<(Duration, Duration)> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let (admit, both) = admit_settle(e, settle_too).await?;
        if i >= n / 10 {
            samples.push(if settle_too { both } else { admit });
        }
    }
    samples.sort();
    Ok((percentile(&samples, 50.0), percentile(&samples, 99.0)))
}

pub fn run(plan: &QuotaPlan) -> anyhow::Result<String> {
    let docs = parse_documents(POLICY).context("policy")?;
    let (snap, errors) = compile(&docs, "bench", &EnvFileSecrets::default());
    anyhow::ensure!(errors.is_empty(), "policy: {errors:?}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mem_n = if plan.quick { 20_000 } else { 200_000 };
    let redis_n: usize = if plan.quick { 2_000 } else { 20_000 };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    rt.block_on(async {
        eprintln!("llmesh-bench: quota: memory store");
        let mem = QuotaRuntime::new(AnyStore::Memory(MemoryStore::new()));
        let e = QuotaEngine::from_snapshot(&snap, &mem);
        let (p50, p99) = measure(&e, mem_n, false).await?;
        rows.push(Row {
            store: "memory",
            op: "admit",
            calls: mem_n,
            p50,
            p99,
            target: Some(TARGET_MEMORY_US),
        });
        let (p50, p99) = measure(&e, mem_n, true).await?;
        rows.push(Row {
            store: "memory",
            op: "admit + settle",
            calls: mem_n,
            p50,
            p99,
            target: Some(TARGET_MEMORY_US),
        });

        let (url, _child) = match std::env::var("LLMESH_BENCH_REDIS") {
            Ok(url) => (url, None),
            Err(_) => match start_redis() {
                Ok((url, child)) => (url, Some(child)),
                Err(e) => {
                    notes.push(format!("Redis rows skipped: {e:#}"));
                    return Ok::<_, anyhow::Error>(());
                }
            },
        };
        eprintln!("llmesh-bench: quota: redis at {url}");
        // PING and an empty script on a plain connection: the floors.
        let client = redis::Client::open(url.as_str())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = loop {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => return Err(anyhow!("redis: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let store = RedisStore::new(RedisConfig {
            url: url.clone(),
            // A loaded VM must not push the bench onto the fallback.
            command_timeout: Duration::from_secs(1),
            ..RedisConfig::default()
        })?;
        let shared = QuotaRuntime::new(AnyStore::Redis(store));
        let e = QuotaEngine::from_snapshot(&snap, &shared);
        // Blocks of each operation in turn, so all four see the same
        // machine (this VM is shared with builds) while each block runs
        // back to back on a warm connection, as a busy sidecar's would.
        let empty = redis::Script::new("return 1");
        let mut s: [Vec<Duration>; 4] = Default::default();
        const BLOCK: usize = 500;
        let rounds = redis_n.div_ceil(BLOCK) + 1;
        for round in 0..rounds {
            let warm = round > 0;
            for (op, samples) in s.iter_mut().enumerate() {
                for _ in 0..BLOCK {
                    let t0 = Instant::now();
                    let d = match op {
                        0 => {
                            redis::cmd("PING").query_async::<String>(&mut conn).await?;
                            t0.elapsed()
                        }
                        1 => {
                            empty.invoke_async::<_, i64>(&mut conn).await?;
                            t0.elapsed()
                        }
                        2 => admit_settle(&e, false).await?.0,
                        _ => admit_settle(&e, true).await?.1,
                    };
                    if warm {
                        samples.push(d);
                    }
                }
            }
        }
        for v in &mut s {
            v.sort();
        }
        let p = |v: &Vec<Duration>| (percentile(v, 50.0), percentile(v, 99.0));
        let ping50 = percentile(&s[0], 50.0);
        for (i, op, target) in [
            (0, "PING round trip (floor)", None),
            (1, "EVALSHA of `return 1` (script floor)", None),
            (
                2,
                "admit (1 round trip)",
                Some(us(ping50) + TARGET_REDIS_EXTRA_US),
            ),
            // Settling runs when the answer has ended: off the client's path.
            (3, "admit + settle (2 round trips)", None),
        ] {
            let (p50, p99) = p(&s[i]);
            rows.push(Row {
                store: "redis (loopback)",
                op,
                calls: s[i].len(),
                p50,
                p99,
                target,
            });
        }
        let stats = e.store_stats();
        anyhow::ensure!(
            stats.local_admissions == 0,
            "the Redis store fell back to local counting during the run: {stats:?}"
        );
        Ok(())
    })?;

    let mut md = String::new();
    let _ = writeln!(md, "### Quota check (llmesh-quota)\n");
    let _ = writeln!(
        md,
        "{} (CPUs {}); one namespace quota with 4 limits (requests/min, tokens/min, cost/day, concurrency); a current-thread runtime; Redis without persistence on loopback.\n",
        cpu_model(),
        cpu_affinity()
    );
    let _ = writeln!(
        md,
        "| store | operation | calls | p50 µs | p99 µs | target p50 µs | |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---|");
    for r in &rows {
        let (target, verdict) = match r.target {
            Some(t) => (
                format!("≤ {t:.1}"),
                if us(r.p50) <= t { "met" } else { "missed" },
            ),
            None => ("—".into(), ""),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} | {} | {} |",
            r.store,
            r.op,
            r.calls,
            us(r.p50),
            us(r.p99),
            target,
            verdict
        );
    }
    for n in notes {
        let _ = writeln!(md, "\n{n}");
    }
    Ok(md)
}
