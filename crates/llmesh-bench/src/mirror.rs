//! `llmesh-bench --mirror`: what shadow traffic costs the primary request.
//!
//! Through the sidecar binary on loopback, one client: the same request to
//! a route without a mirror and to one mirroring every request
//! (`percent: 100`) to a candidate on the same mock, in alternating blocks
//! so drift on the machine hits both alike. The client-observed p50 and
//! p99 of each, and the difference: the shadow path's cost on the primary
//! (sampling, the caps, copying the body, spawning the shadow task; the
//! shadow call itself runs beside it and competes for the same cores).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::bail;

use crate::cache::{body, metric, sequential};
use crate::procs::{cpu_affinity, cpu_model, Stack};

/// Counts for one run.
pub struct MirrorPlan {
    pub quick: bool,
    pub proxy_bin: Option<std::path::PathBuf>,
    pub mock_bin: Option<std::path::PathBuf>,
}

fn policy(mock_port: u16) -> String {
    crate::policy_yaml(mock_port)
        + "---
apiVersion: llmesh.io/v1alpha1
kind: LLMRoute
metadata: {name: mirrored}
spec:
  models: [mirrored]
  backends: [{provider: mock, model: gpt-4o-mini}]
  mirror: {backend: {provider: mock, model: gpt-4o-mini}, percent: 100}
"
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One configuration's client-observed times without and with the
/// mirror, and the shadow calls answered.
struct Measured {
    off: Vec<Duration>,
    on: Vec<Duration>,
    shadows: f64,
}

fn measure(
    plan: &MirrorPlan,
    mock_args: &[&str],
    blocks: usize,
    per_block: usize,
) -> anyhow::Result<Measured> {
    let stack = Stack::start(
        plan.proxy_bin.as_deref(),
        plan.mock_bin.as_deref(),
        mock_args,
        policy,
    )?;
    let addrs = stack.addrs;
    let target = crate::load::Target::new("proxy", addrs.llm, None)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let warm = 20;
    let m = rt.block_on(async {
        sequential(&target, warm, |i| body("gpt-4o-mini", &format!("warm {i}"))).await?;
        sequential(&target, warm, |i| body("mirrored", &format!("warm {i}"))).await?;
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for b in 0..blocks {
            // Alternate which goes first.
            for mirrored in [b % 2 == 0, b % 2 != 0] {
                let model = if mirrored { "mirrored" } else { "gpt-4o-mini" };
                let times = crate::cache::each(&target, per_block, |i| {
                    body(model, &format!("question {b}-{i}: what does a sidecar do?"))
                })
                .await?;
                if mirrored {
                    on.extend(times);
                } else {
                    off.extend(times);
                }
            }
        }
        // The last shadow calls finish after their primaries.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let shadows = metric(
            addrs.metrics,
            "llmesh_shadow_requests_total",
            ("outcome", "answered"),
        )
        .await?;
        Ok::<_, anyhow::Error>(Measured { off, on, shadows })
    })?;
    let expected = (blocks * per_block + warm) as f64;
    if m.shadows < expected * 0.99 {
        bail!(
            "only {} of {expected} mirrored requests had a shadow call answered",
            m.shadows
        );
    }
    Ok(m)
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (
        crate::load::percentile(&v, 50.0),
        crate::load::percentile(&v, 99.0),
    )
}

/// Runs both configurations and returns the markdown report.
pub fn run(plan: &MirrorPlan) -> anyhow::Result<String> {
    let mut md = String::new();
    let _ = writeln!(md, "## Shadow traffic (`llmesh-bench --mirror`)\n");
    let _ = writeln!(
        md,
        "CPU: {} ({}); release build; the sidecar on one worker thread; one client, keep-alive, loopback; the candidate is the same mock model, so each mirrored request makes two upstream calls, the shadow one started once the primary has answered. Blocks with and without the mirror alternate.\n",
        cpu_model(),
        cpu_affinity()
    );
    let _ = writeln!(
        md,
        "| Provider (mock) | Requests each | p50 no mirror | p50 mirror 100% | added p50 | p99 no mirror | p99 mirror 100% | added p99 | shadow calls |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let configs: [(&str, &[&str], usize, usize); 2] = if plan.quick {
        [
            ("answers at once (CPU-bound sidecar)", &[], 4, 200),
            ("answers after 20 ms", &["--latency-ms", "20"], 2, 50),
        ]
    } else {
        [
            ("answers at once (CPU-bound sidecar)", &[], 10, 1000),
            ("answers after 20 ms", &["--latency-ms", "20"], 6, 150),
        ]
    };
    for (name, args, blocks, per_block) in configs {
        let m = measure(plan, args, blocks, per_block)?;
        let (off50, off99) = stats(m.off);
        let (on50, on99) = stats(m.on);
        let _ = writeln!(
            md,
            "| {name} | {} | {:.1} µs | {:.1} µs | {:+.1} µs | {:.1} µs | {:.1} µs | {:+.1} µs | {:.0} |",
            blocks * per_block,
            us(off50),
            us(on50),
            us(on50) - us(off50),
            us(off99),
            us(on99),
            us(on99) - us(off99),
            m.shadows
        );
    }
    Ok(md)
}
