#![forbid(unsafe_code)]
//! `llmesh-mock`: the fake LLM provider as a standalone process, for
//! `make run` demos and `make bench`. Drive it at runtime through the
//! `/_mock/` control API.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use llmesh_mock::{Behavior, MockConfig, MockServer};

const ENDPOINTS: &str = "\
Endpoints (all under /v1; Gemini under /v1beta):
  OpenAI     POST chat/completions, embeddings, completions, moderations,
             images/generations, audio/speech;
             POST audio/transcriptions, audio/translations (multipart);
             GET models
  Responses  POST responses, responses/input_tokens;
             GET|DELETE responses/{id}; GET responses/{id}/input_items
  Files      POST files (multipart); GET files; GET|DELETE files/{id};
             GET files/{id}/content
  Batches    POST batches; GET batches, batches/{id};
             POST batches/{id}/cancel
  Anthropic  POST messages, messages/count_tokens, messages/batches;
             GET messages/batches, messages/batches/{id},
             messages/batches/{id}/results; DELETE messages/batches/{id};
             POST messages/batches/{id}/cancel; GET models (anthropic-version)
  Gemini     POST models/{m}:generateContent, :streamGenerateContent; GET models
  Realtime   GET realtime?model=... (WebSocket: session.created, then echo)
  Control    /_mock/health, stats, behavior, models[/{model}], requests

Faults per request: x-mock-* headers (e.g. x-mock-status: 429,
x-mock-latency-ms, x-mock-reset-after-chunks, x-mock-tool-call: false) or
x-mock-behavior: {json}.";

#[derive(Debug, Parser)]
#[command(
    name = "llmesh-mock",
    version,
    about = "Fake OpenAI/Anthropic/Gemini provider with fault injection",
    after_help = ENDPOINTS
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the real address is
    /// printed on stdout).
    #[arg(long, default_value = "127.0.0.1:18080", env = "LLMESH_MOCK_LISTEN")]
    listen: SocketAddr,
    /// Require this API key in each dialect's auth header.
    #[arg(long, env = "LLMESH_MOCK_API_KEY")]
    api_key: Option<String>,
    /// Default delay before response headers.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Default delay before the first streamed event.
    #[arg(long)]
    ttft_ms: Option<u64>,
    /// Default delay between streamed events.
    #[arg(long)]
    chunk_delay_ms: Option<u64>,
    /// Default number of generated words / output tokens.
    #[arg(long)]
    output_tokens: Option<u32>,
    /// Default reported cached input tokens.
    #[arg(long)]
    cached_tokens: Option<u32>,
    /// Default share of requests, in percent (0..=100), answered with an
    /// error (`status` of the behavior, else 503), each drawn independently.
    #[arg(long)]
    fail_percent: Option<f64>,
    /// Default behavior as JSON (fields given by their own flags win).
    #[arg(long)]
    behavior: Option<String>,
    /// Keep a log of requests (GET /_mock/requests). Off by default: the
    /// log grows without bound under load.
    #[arg(long)]
    record: bool,
    /// Tokio worker threads (the bench shares 2 cores with the proxy and
    /// the load generator, hence 1).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let mut default = match args
        .behavior
        .as_deref()
        .map(|s| Behavior::from_json(s.as_bytes()))
    {
        None => Behavior::default(),
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            eprintln!("llmesh-mock: --behavior: {e}");
            return ExitCode::from(2);
        }
    };
    default.merge(&Behavior {
        latency_ms: args.latency_ms,
        ttft_ms: args.ttft_ms,
        chunk_delay_ms: args.chunk_delay_ms,
        output_tokens: args.output_tokens,
        cached_tokens: args.cached_tokens,
        fail_percent: args.fail_percent,
        ..Behavior::default()
    });
    if let Err(e) = default.validate() {
        eprintln!("llmesh-mock: {e}");
        return ExitCode::from(2);
    }

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llmesh-mock: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = MockConfig {
        listen: args.listen,
        api_key: args.api_key,
        default,
        record: args.record,
    };
    rt.block_on(async move {
        let server = match MockServer::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("llmesh-mock: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        // Printed only after bind so scripts can wait for this line and
        // read the real port.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "llmesh-mock listening on {}", server.url());
        let _ = out.flush();
        drop(out);
        wait_for_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the mock");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
