use super::*;

fn route(yaml: &str) -> LLMRouteSpec {
    serde_yaml::from_str(yaml).unwrap()
}

const ROUTE: &str = "
models: [chat, gpt-4o*]
backends: [{provider: a, model: m-a}, {provider: b}]
fallbacks: [{when: [server-error], backends: [{provider: d}, {provider: b}]}]
mirror: {backend: {provider: c, model: m-c}}
canary: {backend: {provider: a, model: m-a}}
probes:
  interval: 30s
  maxCostPerDay: '0.25'
  prompts:
    - name: json-answer
      messages: [{role: system, content: answer in JSON}, {role: user, content: give me n}]
      maxTokens: 50
      expect:
        jsonSchema: {type: object, properties: {n: {type: integer}}, required: [n]}
        maxTokens: 20
    - name: capital
      messages: [{role: user, content: capital of France?}]
      expect: {contains: [Paris], notContains: [sorry], regex: '(?i)paris'}
    - name: weather
      messages: [{role: user, content: weather in Paris?}]
      tools: [{name: get_weather, parameters: {type: object}}]
      expect: {toolCalled: get_weather}
";

fn set() -> ProbeSet {
    let r = route(ROUTE);
    build(&r, r.probes.as_ref().unwrap()).unwrap()
}

fn answer(text: &str, tokens: u64) -> Value {
    json!({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": tokens}})
}

#[test]
fn a_set_builds_with_its_settings_and_requests() {
    let s = set();
    assert_eq!(s.interval, Duration::from_secs(30));
    assert_eq!(s.timeout, DEFAULT_TIMEOUT);
    assert_eq!(s.model, "chat", "the first model that is not a pattern");
    assert_eq!(s.max_cost_per_day, Some(0.25));
    let names: Vec<_> = s.prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["json-answer", "capital", "weather"]);
    let b = &s.prompts[0].body;
    assert_eq!(b["model"], "chat");
    assert_eq!(b["max_tokens"], 50);
    assert_eq!(b["messages"][0]["role"], "system");
    assert_eq!(b["response_format"]["type"], "json_schema");
    assert_eq!(
        b["response_format"]["json_schema"]["schema"]["required"][0],
        "n"
    );
    let w = &s.prompts[2].body;
    assert_eq!(w["tools"][0]["function"]["name"], "get_weather");
}

#[test]
fn every_check_is_decided_on_the_answer_and_names_no_text() {
    let s = set();
    let json = &s.prompts[0];
    assert!(json.check(200, &answer(r#"{"n": 3}"#, 5)).is_empty());
    assert_eq!(
        json.check(200, &answer("here you go: three", 5)),
        ["the answer is not JSON"]
    );
    let wrong = json.check(200, &answer(r#"{"n": "secret words"}"#, 30));
    assert_eq!(wrong.len(), 2, "{wrong:?}");
    assert!(wrong[0].starts_with("the answer does not match jsonSchema at /n"));
    assert!(!wrong[0].contains("secret"), "no answer text: {wrong:?}");
    assert_eq!(wrong[1], "30 output tokens (at most 20)");

    let capital = &s.prompts[1];
    assert!(capital.check(200, &answer("It is Paris.", 3)).is_empty());
    assert_eq!(
        capital.check(200, &answer("I am sorry, I cannot.", 3)),
        [
            "the answer does not match regex",
            "the answer does not contain \"Paris\"",
            "the answer contains \"sorry\""
        ]
    );

    let weather = &s.prompts[2];
    let called = json!({"choices": [{"message": {"content": null, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}}]});
    assert!(weather.check(200, &called).is_empty());
    assert_eq!(
        weather.check(200, &answer("sunny", 1)),
        ["\"get_weather\" was not called"]
    );
    let err =
        json!({"error": {"type": "upstream_error", "message": "the prompt said secret words"}});
    assert_eq!(weather.check(503, &err), ["HTTP 503 (upstream_error)"]);
}

#[test]
fn targets_are_the_backends_then_the_candidates_each_once() {
    let got: Vec<String> = targets(&route(ROUTE))
        .iter()
        .map(crate::canary::candidate_key)
        .collect();
    assert_eq!(got, ["a/m-a", "b", "d", "c/m-c"]);
}

#[test]
fn a_bad_set_gets_every_error_with_its_field() {
    let r = route(
        "
models: [gpt-4o*]
backends: [{provider: a}]
probes:
  interval: 0s
  timeout: soon
  maxCostPerDay: lots
  prompts:
    - name: Twice
      messages: []
      tools: [{name: f}, {name: f, parameters: [1]}]
      expect: {jsonSchema: {type: 12}, regex: '(', contains: [''], toolCalled: g}
    - name: Twice
      messages: [{role: user, content: hi}]
",
    );
    let errors = build(&r, r.probes.as_ref().unwrap()).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.probes.interval",
            "spec.probes.timeout",
            "spec.probes.maxCostPerDay",
            "spec.probes.model",
            "spec.probes.prompts[0].name",
            "spec.probes.prompts[0].messages",
            "spec.probes.prompts[0].tools[1].name",
            "spec.probes.prompts[0].tools[1].parameters",
            "spec.probes.prompts[0].expect.jsonSchema",
            "spec.probes.prompts[0].expect.regex",
            "spec.probes.prompts[0].expect.contains",
            "spec.probes.prompts[0].expect.toolCalled",
            "spec.probes.prompts[1].name",
            "spec.probes.prompts[1].name",
        ],
        "{errors:#?}"
    );
    let model = &errors[3].1;
    assert!(
        model.contains("every entry of spec.models is a pattern"),
        "{model}"
    );

    let r = route(
        "
models: [chat]
backends: [{provider: a}]
probes: {model: other, prompts: [{name: p, messages: [{role: user, content: hi}]}]}
",
    );
    let errors = build(&r, r.probes.as_ref().unwrap()).unwrap_err();
    assert_eq!(errors[0].0, "spec.probes.model");
    assert!(errors[0].1.contains("not one of the route's spec.models"));
}
