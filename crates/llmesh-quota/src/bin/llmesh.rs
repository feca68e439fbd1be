//! `llmesh`: operator commands. `llmesh cost` prints requests, tokens and
//! spend per namespace, workload, model or provider for a time window,
//! from the usage stream the sidecars write to Redis.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use llmesh_quota::cost::{aggregate, parse_since, read_records, render, GroupBy};
use llmesh_quota::USAGE_STREAM;

#[derive(Debug, Parser)]
#[command(name = "llmesh", version, about = "llmesh operator commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Spend per namespace, workload, model or provider over a time window.
    Cost {
        /// The Redis the sidecars write usage records to.
        #[arg(long, env = "LLMESH_REDIS", default_value = "redis://127.0.0.1:6379/0")]
        redis: String,
        /// How far back: 90s, 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        since: String,
        /// namespace | workload | model | provider
        #[arg(long, default_value = "namespace")]
        by: String,
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// The usage stream.
        #[arg(long, default_value = USAGE_STREAM)]
        stream: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llmesh: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("llmesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<String> {
    match cli.command {
        Command::Cost {
            redis,
            since,
            by,
            namespace,
            stream,
        } => {
            let window = parse_since(&since).map_err(|e| anyhow!("--since: {e}"))?;
            let by = GroupBy::parse(&by).ok_or_else(|| {
                anyhow!("--by: {by:?} is not namespace, workload, model or provider")
            })?;
            let client = redis::Client::open(redis.as_str()).context("--redis")?;
            let mut conn = tokio::time::timeout(
                Duration::from_secs(5),
                client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| anyhow!("{redis}: connection timed out"))?
            .with_context(|| format!("{redis}: cannot connect"))?;
            let from = SystemTime::now() - window;
            let mut records = read_records(&mut conn, &stream, from)
                .await
                .with_context(|| format!("reading {stream}"))?;
            if let Some(ns) = &namespace {
                records.retain(|r| &r.namespace == ns);
            }
            let mut out = format!(
                "{} usage records in {stream} over the last {since}\n",
                records.len()
            );
            out.push_str(&render(&aggregate(&records, by), by));
            Ok(out)
        }
    }
}
