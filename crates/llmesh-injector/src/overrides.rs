//! Per-pod annotations: whether to inject, and validated overrides of the
//! sidecar's image, log level, resources and credential Secrets.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::{
    validate_image, validate_log_level, validate_resources, validate_secret_name, InvalidSetting,
    Resources, SidecarConfig,
};

/// `"true"` asks for the sidecar, `"false"` refuses it even in a labelled namespace.
pub const INJECT: &str = "llmesh.io/inject";
/// Set by the injector on every pod it changed; a pod carrying it is never injected again.
pub const STATUS: &str = "llmesh.io/status";
/// Overrides the sidecar image.
pub const IMAGE: &str = "llmesh.io/sidecar-image";
/// Overrides the sidecar's log filter.
pub const LOG_LEVEL: &str = "llmesh.io/log-level";
/// Overrides the sidecar's CPU request.
pub const CPU_REQUEST: &str = "llmesh.io/sidecar-cpu-request";
/// Overrides the sidecar's CPU limit.
pub const CPU_LIMIT: &str = "llmesh.io/sidecar-cpu-limit";
/// Overrides the sidecar's memory request.
pub const MEMORY_REQUEST: &str = "llmesh.io/sidecar-memory-request";
/// Overrides the sidecar's memory limit.
pub const MEMORY_LIMIT: &str = "llmesh.io/sidecar-memory-limit";
/// Comma-separated Secrets mounted into the sidecar besides the configured ones.
pub const CREDENTIAL_SECRETS: &str = "llmesh.io/credential-secrets";
/// `"false"` leaves the app containers' environment alone (no `*_BASE_URL`).
pub const BASE_URLS: &str = "llmesh.io/base-urls";
/// The namespace label that turns injection on for every pod of a namespace.
pub const NAMESPACE_LABEL: &str = "llmesh.io/injection";

/// Every `llmesh.io/` pod annotation the injector reads or writes.
pub const KNOWN: [&str; 10] = [
    INJECT,
    STATUS,
    IMAGE,
    LOG_LEVEL,
    CPU_REQUEST,
    CPU_LIMIT,
    MEMORY_REQUEST,
    MEMORY_LIMIT,
    CREDENTIAL_SECRETS,
    BASE_URLS,
];

/// What a pod's annotations ask of the injector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// `llmesh.io/inject: "true"`.
    Yes,
    /// `llmesh.io/inject: "false"`.
    No,
    /// No annotation: the namespace label decides.
    Unset,
}

/// Reads `llmesh.io/inject`; any value but `"true"` or `"false"` is refused.
pub fn selection(
    annotations: Option<&serde_json::Map<String, Value>>,
) -> Result<Selection, InvalidSetting> {
    match annotations.and_then(|a| a.get(INJECT)) {
        None => Ok(Selection::Unset),
        Some(Value::String(s)) if s == "true" => Ok(Selection::Yes),
        Some(Value::String(s)) if s == "false" => Ok(Selection::No),
        Some(other) => Err(InvalidSetting::new(
            INJECT,
            format!("{other} is neither \"true\" nor \"false\""),
        )),
    }
}

/// The sidecar settings for one pod: the configured ones with the pod's
/// overrides applied, every override validated.
pub fn effective(
    base: &SidecarConfig,
    annotations: Option<&serde_json::Map<String, Value>>,
) -> Result<SidecarConfig, InvalidSetting> {
    let mut cfg = base.clone();
    let Some(ann) = annotations else {
        return Ok(cfg);
    };
    let get = |key: &str| -> Result<Option<&str>, InvalidSetting> {
        match ann.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim())),
            Some(_) => Err(InvalidSetting::new(key, "must be a string")),
        }
    };
    for key in ann.keys() {
        if key.starts_with("llmesh.io/") && !KNOWN.contains(&key.as_str()) {
            return Err(InvalidSetting::new(
                key.as_str(),
                format!(
                    "unknown llmesh annotation; known ones are {}",
                    KNOWN.join(", ")
                ),
            ));
        }
    }
    if let Some(image) = get(IMAGE)? {
        validate_image(IMAGE, image)?;
        cfg.image = image.to_string();
    }
    if let Some(level) = get(LOG_LEVEL)? {
        validate_log_level(LOG_LEVEL, level)?;
        cfg.log_level = level.to_string();
    }
    let mut resources: Resources = cfg.resources.clone();
    let mut touched = false;
    for (key, kind, name) in [
        (CPU_REQUEST, "requests", "cpu"),
        (CPU_LIMIT, "limits", "cpu"),
        (MEMORY_REQUEST, "requests", "memory"),
        (MEMORY_LIMIT, "limits", "memory"),
    ] {
        if let Some(v) = get(key)? {
            crate::quantity::Quantity::parse(v)
                .map_err(|e| InvalidSetting::new(key, e.to_string()))?;
            let map: &mut BTreeMap<String, String> = if kind == "requests" {
                &mut resources.requests
            } else {
                &mut resources.limits
            };
            map.insert(name.to_string(), v.to_string());
            touched = true;
        }
    }
    if touched {
        validate_resources("sidecar resources (after the pod's overrides)", &resources)?;
        cfg.resources = resources;
    }
    if let Some(list) = get(CREDENTIAL_SECRETS)? {
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            validate_secret_name(CREDENTIAL_SECRETS, name)?;
            if !cfg.credential_secrets.iter().any(|s| s == name) {
                cfg.credential_secrets.push(name.to_string());
            }
        }
    }
    match get(BASE_URLS)? {
        None => {}
        Some("true") => cfg.base_urls = true,
        Some("false") => cfg.base_urls = false,
        Some(other) => {
            return Err(InvalidSetting::new(
                BASE_URLS,
                format!("{other:?} is neither \"true\" nor \"false\""),
            ))
        }
    }
    Ok(cfg)
}
