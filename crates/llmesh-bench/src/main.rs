//! `llmesh-bench` (`make bench`): starts `llmesh-mock` and `llmesh-proxy`
//! as child processes, drives the mock directly and through the proxy in
//! the same run (blocks of each interleaved, so both see the same machine),
//! and prints markdown tables of latency, throughput, the proxy's CPU time
//! per request and its memory.
//!
//! `llmesh-bench --faults` (`make bench-faults`) is a separate run: success
//! rate and latency when an upstream fails, through llmesh and directly
//! (see `faults.rs`).
//!
//! `llmesh-bench --dlp` times the data-classification engine (llmesh-dlp)
//! in process, without starting anything (see `dlp.rs`).
//!
//! `llmesh-bench --quota` times a quota check (llmesh-quota) in process,
//! with the memory store and with Redis on loopback (see `quota.rs`).
//!
//! `llmesh-bench --cache` times a response-cache hit (in process and
//! through the sidecar) and replays a workload with repeated requests to
//! measure the cost saved (see `cache.rs`). `llmesh-bench --mirror` compares
//! the primary's latency with and without shadow traffic (see `mirror.rs`).
#![forbid(unsafe_code)]

mod cache;
mod dlp;
mod faults;
mod load;
mod mirror;
mod procs;
mod quota;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Parser;

use crate::load::{open_conns, run_block, BlockResult, RequestSpec, Target};
use crate::procs::{
    cpu_time, rss_kib, run_key, sibling_binary, spawn_mock, spawn_proxy, ChildGuard, CpuTime,
    RssSampler,
};
use crate::report::{PathResult, PhaseResult, Report, StreamsResult};

/// Benchmark llmesh-proxy against llmesh-mock (direct vs. through the proxy).
#[derive(Debug, Parser)]
#[command(name = "llmesh-bench", version)]
struct Args {
    /// llmesh-proxy binary (default: next to this executable).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// llmesh-mock binary (default: next to this executable).
    #[arg(long)]
    mock_bin: Option<PathBuf>,
    /// Phase 1: non-streamed requests per path, 1 client [default: 3000].
    #[arg(long)]
    requests: Option<u64>,
    /// Phase 2: seconds of load per path, 32 clients [default: 10].
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Phase 2: at most this many requests per path [default: 20000].
    #[arg(long)]
    saturation_requests: Option<u64>,
    /// Phase 2: clients in flight.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Phase 3: streamed requests per path, 1 client (each takes ~200 ms)
    /// [default: 150].
    #[arg(long)]
    stream_requests: Option<u64>,
    /// Phase 4: concurrent streams through the proxy.
    #[arg(long, default_value_t = 64)]
    streams: usize,
    /// Phase 4: rounds of concurrent streams [default: 2].
    #[arg(long)]
    stream_rounds: Option<u32>,
    /// Worker threads of the proxy's runtime.
    #[arg(long, default_value_t = 1)]
    proxy_threads: usize,
    /// Log filter passed to the proxy (`info` adds one JSON access line per
    /// request on its stdout).
    #[arg(long, default_value = "warn")]
    proxy_log: String,
    /// Worker threads of the load generator (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Small counts (about 15 s in all), for a smoke test.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, conflicts_with_all = ["faults", "dlp", "quota", "cache"])]
    json: Option<PathBuf>,
    /// Run the reliability benchmark instead: failing upstreams, through
    /// the proxy (retries, breaker, second backend) and directly.
    #[arg(long)]
    faults: bool,
    /// --faults: requests per scenario [default: 2000, --quick 400].
    #[arg(long, requires = "faults")]
    fault_requests: Option<u64>,
    /// Run the data-classification benchmark instead: llmesh-dlp in
    /// process (scan and redact of chat bodies, detector throughput).
    #[arg(long, conflicts_with = "faults")]
    dlp: bool,
    /// Run the quota benchmark instead: llmesh-quota's admit and settle
    /// with the memory store and with Redis on loopback (a redis-server it
    /// starts, or LLMESH_BENCH_REDIS).
    #[arg(long, conflicts_with_all = ["faults", "dlp"])]
    quota: bool,
    /// Run the response-cache benchmark instead: a hit in process and
    /// through the sidecar, and a replayed workload's saved cost.
    #[arg(long, conflicts_with_all = ["faults", "dlp", "quota"])]
    cache: bool,
    /// Run the shadow-traffic benchmark instead: the primary's latency on a
    /// route mirroring every request against one without a mirror.
    #[arg(long, conflicts_with_all = ["faults", "dlp", "quota", "cache"])]
    mirror: bool,
    /// --cache: share of replayed requests that repeat an earlier one.
    #[arg(long, default_value_t = 0.3, requires = "cache")]
    duplicate_rate: f64,
    /// --faults: clients in flight.
    #[arg(long, default_value_t = 8, requires = "faults")]
    fault_clients: usize,
}

/// Counts and durations after `--quick` and the defaults are applied.
#[derive(Debug, Clone)]
pub struct Plan {
    pub requests: u64,
    pub blocks1: u32,
    pub duration: Duration,
    pub saturation_requests: u64,
    pub blocks2: u32,
    pub clients: usize,
    pub stream_requests: u64,
    pub blocks3: u32,
    pub streams: usize,
    pub stream_rounds: u32,
    pub proxy_threads: usize,
    pub proxy_log: String,
    pub client_threads: usize,
    pub quick: bool,
}

// Phase 3 and 4 answer shapes.
const STREAM_TOKENS: u32 = 8;
const STREAM_CHUNK_DELAY_MS: u64 = 20;
const MANY_TOKENS: u32 = 40;
const MANY_CHUNK_DELAY_MS: u64 = 50;
const CHAT_TOKENS: u32 = 16;

impl Plan {
    fn from_args(a: &Args) -> anyhow::Result<Plan> {
        let q = a.quick;
        let plan = Plan {
            requests: a.requests.unwrap_or(if q { 300 } else { 3000 }),
            blocks1: if q { 2 } else { 6 },
            duration: Duration::from_secs_f64(a.duration_secs.unwrap_or(if q {
                1.5
            } else {
                10.0
            })),
            saturation_requests: a
                .saturation_requests
                .unwrap_or(if q { 4000 } else { 20000 }),
            blocks2: if q { 2 } else { 4 },
            clients: a.clients,
            stream_requests: a.stream_requests.unwrap_or(if q { 16 } else { 150 }),
            blocks3: if q { 2 } else { 3 },
            streams: a.streams,
            stream_rounds: a.stream_rounds.unwrap_or(if q { 1 } else { 2 }),
            proxy_threads: a.proxy_threads,
            proxy_log: a.proxy_log.clone(),
            client_threads: a.client_threads,
            quick: q,
        };
        anyhow::ensure!(plan.requests > 0, "--requests must be > 0");
        anyhow::ensure!(
            plan.saturation_requests > 0,
            "--saturation-requests must be > 0"
        );
        anyhow::ensure!(plan.stream_requests > 0, "--stream-requests must be > 0");
        anyhow::ensure!(
            plan.duration > Duration::ZERO && plan.duration <= Duration::from_secs(600),
            "--duration-secs must be in (0, 600]"
        );
        anyhow::ensure!(
            (1..=256).contains(&plan.clients),
            "--clients must be in 1..=256"
        );
        anyhow::ensure!(
            (1..=1024).contains(&plan.streams),
            "--streams must be in 1..=1024"
        );
        anyhow::ensure!(
            (1..=10).contains(&plan.stream_rounds),
            "--stream-rounds must be in 1..=10"
        );
        anyhow::ensure!(
            (1..=64).contains(&plan.proxy_threads),
            "--proxy-threads must be in 1..=64"
        );
        anyhow::ensure!(
            (1..=64).contains(&plan.client_threads),
            "--client-threads must be in 1..=64"
        );
        Ok(plan)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.dlp {
        return match dlp::run(&dlp::DlpPlan { quick: args.quick }) {
            Ok(md) => {
                println!("{md}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("llmesh-bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.cache {
        let plan = cache::CachePlan {
            quick: args.quick,
            proxy_bin: args.proxy_bin.clone(),
            mock_bin: args.mock_bin.clone(),
            duplicate_rate: args.duplicate_rate.clamp(0.0, 1.0),
        };
        return match cache::run(&plan) {
            Ok(md) => {
                println!("{md}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("llmesh-bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.mirror {
        let plan = mirror::MirrorPlan {
            quick: args.quick,
            proxy_bin: args.proxy_bin.clone(),
            mock_bin: args.mock_bin.clone(),
        };
        return match mirror::run(&plan) {
            Ok(md) => {
                println!("{md}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("llmesh-bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.quota {
        return match quota::run(&quota::QuotaPlan { quick: args.quick }) {
            Ok(md) => {
                println!("{md}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("llmesh-bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.faults {
        return main_faults(&args);
    }
    let plan = match Plan::from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("llmesh-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = if plan.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(plan.client_threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llmesh-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Ctrl-C or SIGTERM drops the bench future, whose guards kill the
    // children.
    let outcome = rt.block_on(async {
        tokio::select! {
            r = run(&args, &plan) => r,
            e = interrupted() => Err(e),
        }
    });
    match outcome {
        Ok(0) => ExitCode::SUCCESS,
        Ok(errors) => {
            eprintln!("llmesh-bench: {errors} request(s) failed (see the errors columns)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("llmesh-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn fault_plan(a: &Args) -> anyhow::Result<faults::FaultPlan> {
    let plan = faults::FaultPlan {
        requests: a.fault_requests.unwrap_or(if a.quick { 400 } else { 2000 }),
        clients: a.fault_clients,
        proxy_threads: a.proxy_threads,
        proxy_log: a.proxy_log.clone(),
    };
    anyhow::ensure!(
        (1..=100_000).contains(&plan.requests),
        "--fault-requests must be in 1..=100000"
    );
    anyhow::ensure!(
        (1..=256).contains(&plan.clients),
        "--fault-clients must be in 1..=256"
    );
    anyhow::ensure!(
        (1..=64).contains(&plan.proxy_threads),
        "--proxy-threads must be in 1..=64"
    );
    Ok(plan)
}

/// `--faults`: the reliability run. Fails when the run could not be
/// completed or when scenario a. (no failures injected) saw any error.
fn main_faults(args: &Args) -> ExitCode {
    let plan = match fault_plan(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("llmesh-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llmesh-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(async {
        let bins = async {
            let mock_bin = match &args.mock_bin {
                Some(p) => p.clone(),
                None => sibling_binary("llmesh-mock")?,
            };
            let proxy_bin = match &args.proxy_bin {
                Some(p) => p.clone(),
                None => sibling_binary("llmesh-proxy")?,
            };
            faults::run(&mock_bin, &proxy_bin, &plan).await
        };
        // Ctrl-C or SIGTERM drops the run, whose guards kill the children.
        tokio::select! {
            r = bins => r,
            e = interrupted() => Err(e),
        }
    });
    match outcome {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => {
            eprintln!("llmesh-bench: {n} request(s) failed in scenario a. (no failures injected)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("llmesh-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() -> anyhow::Error {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return anyhow!("interrupted (SIGINT)"),
                _ = term.recv() => return anyhow!("terminated (SIGTERM)"),
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    anyhow!("interrupted (SIGINT)")
}

/// The processes under test.
struct Rig {
    mock: ChildGuard,
    proxy: ChildGuard,
    direct: Target,
    through: Target,
}

impl Rig {
    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.mock.check_alive()?;
        self.proxy.check_alive()
    }
    fn cpu(&self) -> anyhow::Result<(CpuTime, CpuTime)> {
        Ok((cpu_time(self.proxy.pid())?, cpu_time(self.mock.pid())?))
    }
}

async fn run(args: &Args, plan: &Plan) -> anyhow::Result<u64> {
    let run_start = Instant::now();
    let mock_bin = match &args.mock_bin {
        Some(p) => p.clone(),
        None => sibling_binary("llmesh-mock")?,
    };
    let proxy_bin = match &args.proxy_bin {
        Some(p) => p.clone(),
        None => sibling_binary("llmesh-proxy")?,
    };
    // Declared before the children: dropped after them.
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let key = run_key();
    let (mock, mock_addr) = spawn_mock(&mock_bin, &key)?;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, policy_yaml(mock_addr.port())).context("writing the policy file")?;
    let (proxy, proxy_addrs) = spawn_proxy(
        &proxy_bin,
        &policy,
        plan.proxy_threads,
        &plan.proxy_log,
        &key,
    )?;
    let proxy_addr = proxy_addrs.llm;

    let mut rig = Rig {
        direct: Target::new("direct", mock_addr, Some(&key))?,
        through: Target::new("proxy", proxy_addr, None)?,
        mock,
        proxy,
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.check_alive()?;
    let rss_start = rss_kib(rig.proxy.pid())?;
    let cpu_source = cpu_time(rig.proxy.pid())?.source();

    let mut report = Report::new(
        plan,
        &mock_bin,
        &proxy_bin,
        RequestSpec::chat(CHAT_TOKENS).body_len(),
        cpu_source,
    );
    report.rss_start_kib = rss_start;
    report.wakeup = procs::wakeup_cost(if plan.quick { 10 } else { 25 }, Duration::from_millis(20));

    // Phase 1: non-streamed, one client.
    let spec = RequestSpec::chat(CHAT_TOKENS);
    report.phase1 = Some(
        interleaved(
            &mut rig,
            "1. non-streaming, 1 client",
            &Interleave {
                conns: 1,
                spec: &spec,
                warm_spec: &spec,
                warm_requests: if plan.quick { 30 } else { 100 },
                warm_time: Duration::from_secs(5),
                requests: plan.requests,
                time: Duration::from_secs(120),
                blocks: plan.blocks1,
            },
        )
        .await?,
    );

    // Phase 2: non-streamed, saturation.
    report.phase2 = Some(
        interleaved(
            &mut rig,
            "2. non-streaming, saturation",
            &Interleave {
                conns: plan.clients,
                spec: &spec,
                warm_spec: &spec,
                warm_requests: (plan.clients as u64) * 20,
                warm_time: Duration::from_millis(if plan.quick { 200 } else { 500 }),
                requests: plan.saturation_requests,
                time: plan.duration,
                blocks: plan.blocks2,
            },
        )
        .await?,
    );

    // Phase 3: a slowly streamed answer, one client.
    let stream = RequestSpec::stream(STREAM_TOKENS, STREAM_CHUNK_DELAY_MS);
    let stream_warm = RequestSpec::stream(STREAM_TOKENS, 0);
    report.phase3 = Some(
        interleaved(
            &mut rig,
            "3. streaming, 1 client",
            &Interleave {
                conns: 1,
                spec: &stream,
                warm_spec: &stream_warm,
                warm_requests: 20,
                warm_time: Duration::from_secs(5),
                requests: plan.stream_requests,
                // ~200 ms per stream; generous bound.
                time: Duration::from_millis(plan.stream_requests * 400 + 5000),
                blocks: plan.blocks3,
            },
        )
        .await?,
    );

    // Phase 4: many concurrent streams through the proxy; peak RSS.
    report.phase4 = Some(many_streams(&mut rig, plan).await?);

    // Idle again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.check_alive()?;
    report.rss_end_kib = rss_kib(rig.proxy.pid())?;
    report.proxy_log = rig.proxy.output_lines();
    report.mock_log = rig.mock.output_lines();
    report.wall = run_start.elapsed();

    let md = report.markdown();
    println!("{md}");
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report.json()).context("encoding JSON")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("llmesh-bench: wrote {}", path.display());
    }
    Ok(report.total_errors())
}

fn policy_yaml(mock_port: u16) -> String {
    format!(
        "apiVersion: llmesh.io/v1alpha1
kind: LLMProvider
metadata: {{name: mock}}
spec:
  schema: openai
  baseUrl: http://127.0.0.1:{mock_port}/v1
  credential: {{env: LLMESH_BENCH_KEY}}
  models:
    - name: gpt-4o-mini
      pricing: {{input: 0.15, output: 0.6}}
---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {{name: bench}}
spec:
  models: [gpt-4o-mini]
  backends: [{{provider: mock}}]
"
    )
}

/// One interleaved phase: `blocks` rounds, each running a block on the
/// mock and one through the proxy (order alternating, ABBA), each block on
/// fresh connections that are warmed up first.
struct Interleave<'a> {
    conns: usize,
    spec: &'a RequestSpec,
    warm_spec: &'a RequestSpec,
    /// Warm-up requests per block (all connections together).
    warm_requests: u64,
    warm_time: Duration,
    /// Measured requests per path (split over the blocks).
    requests: u64,
    /// Measured time per path (split over the blocks).
    time: Duration,
    blocks: u32,
}

async fn interleaved(rig: &mut Rig, name: &str, p: &Interleave<'_>) -> anyhow::Result<PhaseResult> {
    let blocks = p.blocks.max(1);
    let mut direct = PathResult::default();
    let mut proxy = PathResult::default();
    let per_block_requests = p.requests.div_ceil(u64::from(blocks));
    let per_block_time = p.time / blocks;
    let t0 = Instant::now();
    for b in 0..blocks {
        let order = if b % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for through in order {
            let target = if through { &rig.through } else { &rig.direct };
            let done = if through {
                proxy.attempted()
            } else {
                direct.attempted()
            };
            let requests = per_block_requests.min(p.requests.saturating_sub(done));
            if requests == 0 {
                continue;
            }
            eprintln!(
                "llmesh-bench: phase {name}: {} block {}/{} ({} clients)",
                target.name,
                b + 1,
                blocks,
                p.conns
            );
            let conns = open_conns(target, p.conns).await?;
            let (conns, warm) =
                run_block(target, p.warm_spec, conns, p.warm_requests, p.warm_time).await;
            let (cpu_proxy0, cpu_mock0) = rig.cpu()?;
            let (conns, measured) =
                run_block(target, p.spec, conns, requests, per_block_time).await;
            let (cpu_proxy1, cpu_mock1) = rig.cpu()?;
            drop(conns);
            let path = if through { &mut proxy } else { &mut direct };
            path.add_warmup(warm);
            path.add_block(measured, &cpu_proxy0, &cpu_proxy1, &cpu_mock0, &cpu_mock1);
        }
        rig.check_alive()?;
    }
    direct.finish();
    proxy.finish();
    Ok(PhaseResult {
        concurrency: p.conns,
        direct,
        proxy,
        wall: t0.elapsed(),
    })
}

async fn many_streams(rig: &mut Rig, plan: &Plan) -> anyhow::Result<StreamsResult> {
    let n = plan.streams;
    eprintln!(
        "llmesh-bench: phase 4. {n} concurrent streams through the proxy, {} round(s)",
        plan.stream_rounds
    );
    let target = rig.through.clone();
    let conns = open_conns(&target, n).await?;
    let warm_spec = RequestSpec::stream(MANY_TOKENS, 0);
    let (mut conns, warm) = run_block(
        &target,
        &warm_spec,
        conns,
        n as u64,
        Duration::from_secs(10),
    )
    .await;
    let spec = RequestSpec::stream(MANY_TOKENS, MANY_CHUNK_DELAY_MS);
    let mut result = PathResult::default();
    result.add_warmup(warm);
    let rss_before = rss_kib(rig.proxy.pid())?;
    let sampler = RssSampler::start(
        rig.proxy.pid(),
        Duration::from_millis(50),
        Duration::from_secs(120),
    )?;
    let t0 = Instant::now();
    for _ in 0..plan.stream_rounds {
        let (cpu_proxy0, cpu_mock0) = rig.cpu()?;
        // Every connection runs one stream: ~2.1 s of 41 events, 50 ms apart.
        let (c, r): (_, BlockResult) =
            run_block(&target, &spec, conns, n as u64, Duration::from_secs(30)).await;
        let (cpu_proxy1, cpu_mock1) = rig.cpu()?;
        conns = c;
        result.add_block(r, &cpu_proxy0, &cpu_proxy1, &cpu_mock0, &cpu_mock1);
    }
    let wall = t0.elapsed();
    let (peak, samples) = sampler.finish()?;
    drop(conns);
    result.finish();
    rig.check_alive()?;
    Ok(StreamsResult {
        streams: n,
        rounds: plan.stream_rounds,
        result,
        rss_before_kib: rss_before,
        rss_peak_kib: peak.max(rss_before),
        rss_samples: samples,
        wall,
    })
}
