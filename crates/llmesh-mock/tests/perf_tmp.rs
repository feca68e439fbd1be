mod support;
use std::time::{Duration, Instant};
use bytes::Bytes;
use http::Method;
use llmesh_mock::{MockConfig, MockServer};
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn perf() {
    let m = MockServer::start(MockConfig { record: false, ..Default::default() }).await.unwrap();
    for stream in [false, true] {
        for h2 in [false, true] {
            let url = format!("{}/v1/chat/completions", m.url());
            let mut body = openai_chat("m", "hello world this is a prompt");
            body["stream"] = json!(stream);
            body["stream_options"] = json!({"include_usage": true});
            let body = Bytes::from(body.to_string());
            let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
            conn.set_nodelay(true);
            let c: HttpClient = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(h2).build(conn);
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let (c, url, body) = (c.clone(), url.clone(), body.clone());
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let r = send_with(&c, Method::POST, &url, &[], body.clone()).await;
                        assert_eq!(r.status, 200);
                        n += 1;
                    }
                    n
                }));
            }
            let mut total = 0;
            for t in tasks { total += t.await.unwrap(); }
            println!("stream={stream} h2={h2}: {} req/s (client+server on 2 threads)", total / 2);
        }
    }
}
