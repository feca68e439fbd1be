use super::*;

fn spec() -> LLMRouteSpec {
    serde_json::from_value(json!({
        "models": ["chat"],
        "headers": {"x-team": "a"},
        "backends": [{"provider": "old", "model": "m-old", "weight": 3}, {"provider": "next"}],
        "fallbacks": [{"when": ["server-error"], "backends": [{"provider": "other"}]}],
        "retries": {"attempts": 2},
        "cache": {"exact": {"ttl": "1m"}},
        "mirror": {"backend": {"provider": "next"}},
        "canary": {"backend": {"provider": "next", "model": "m-new"}},
        "probes": {"prompts": [{"name": "p", "messages": [{"role": "user", "content": "hi"}]}]},
    }))
    .unwrap()
}

#[test]
fn the_probe_policy_pins_the_route_to_one_backend_and_keeps_its_retries() {
    let target = MirrorBackend {
        provider: "next".into(),
        model: Some("m-new".into()),
    };
    let provider = json!({"schema": "openai", "baseUrl": "http://127.0.0.1:1/v1", "credential": {"env": "on"}});
    let text = policy("chat", &spec(), "chat", &target, &provider).unwrap();
    let docs = llmesh_api::parse_documents(&text).unwrap();
    assert_eq!(docs.len(), 2, "{text}");
    let route: Vec<Value> = text
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // A scalar YAML 1.1 would read as a boolean stays a string.
    assert_eq!(route[0]["spec"]["credential"]["env"], "on");
    let r = &route[1]["spec"];
    assert_eq!(
        r["backends"],
        json!([{"provider": "next", "model": "m-new"}])
    );
    assert_eq!(r["models"], json!(["chat"]));
    assert_eq!(r["retries"]["attempts"], 2);
    assert_eq!(r["structuredOutput"]["mode"], "ignore");
    for gone in [
        "fallbacks",
        "cache",
        "mirror",
        "canary",
        "probes",
        "headers",
    ] {
        assert!(r.get(gone).is_none(), "{gone} in {r}");
    }
}
