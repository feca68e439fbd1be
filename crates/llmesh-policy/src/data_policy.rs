//! `LLMDataPolicy` validation: class names, the built-in / custom split,
//! and every custom pattern compiled once so a bad regex is named here
//! rather than found on the request path later.

use http::header::HeaderName;
use llmesh_api::{LLMDataPolicySpec, Resource, ResourceKind, BUILTIN_CLASSES};
use regex::RegexBuilder;

use crate::compile::Ctx;

/// A validated `LLMDataPolicy`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPolicy {
    /// `metadata.name`.
    pub name: String,
    /// Namespace the resource came from.
    pub namespace: String,
    /// The spec as written, every field checked.
    pub spec: LLMDataPolicySpec,
}

const K: ResourceKind = ResourceKind::DataPolicy;

/// Compiled size a single custom pattern may reach: generous for real
/// detectors, small enough that a policy cannot make every sidecar build a
/// huge automaton.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Lowercase DNS-label-like: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
pub(crate) fn is_class_name(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    !b.is_empty() && b.len() <= 63 && b.iter().all(inner) && b[0] != b'-' && b[b.len() - 1] != b'-'
}

pub(crate) fn check_header_name(h: &str) -> Result<(), String> {
    HeaderName::try_from(h)
        .map(|_| ())
        .map_err(|_| format!("{h:?} is not a valid header name"))
}

pub(crate) fn compile_data_policy(
    cx: &mut Ctx<'_>,
    d: &Resource<LLMDataPolicySpec>,
) -> Option<DataPolicy> {
    let name = &d.metadata.name;
    let spec = &d.spec;
    let before = cx.errors.len();

    if spec.rules.is_empty() {
        cx.err(K, name, "spec.rules", "must have at least one rule");
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let class = rule.class.as_str();
        if !is_class_name(class) {
            cx.err(
                K,
                name,
                &format!("{field}.class"),
                format!(
                    "{class:?} is not a class name (lowercase letters, digits and '-', at most 63)"
                ),
            );
        } else if seen.contains(&class) {
            cx.err(
                K,
                name,
                &format!("{field}.class"),
                format!("class {class:?} has a rule already"),
            );
        }
        seen.push(class);

        let has_patterns = !rule.patterns.is_empty();
        let has_dictionary = !rule.dictionary.is_empty();
        if BUILTIN_CLASSES.contains(&class) {
            for (set, what) in [(has_patterns, "patterns"), (has_dictionary, "dictionary")] {
                if set {
                    cx.err(
                        K,
                        name,
                        &format!("{field}.{what}"),
                        format!("built-in class {class:?} takes no {what}"),
                    );
                }
            }
        } else if has_patterns == has_dictionary {
            let message = if has_patterns {
                format!("custom class {class:?}: set patterns or dictionary, not both")
            } else {
                format!(
                    "custom class {class:?} needs patterns or dictionary (built-in classes: {})",
                    BUILTIN_CLASSES.join(", ")
                )
            };
            cx.err(K, name, &field, message);
        }

        for (j, p) in rule.patterns.iter().enumerate() {
            let pfield = format!("{field}.patterns[{j}]");
            if p.is_empty() {
                cx.err(K, name, &pfield, "must not be empty");
                continue;
            }
            let built = RegexBuilder::new(p)
                .case_insensitive(rule.case_insensitive)
                .size_limit(PATTERN_SIZE_LIMIT)
                .build();
            if let Err(e) = built {
                cx.err(
                    K,
                    name,
                    &pfield,
                    format!("invalid regex: {}", regex_reason(&e)),
                );
            }
        }
        for (j, w) in rule.dictionary.iter().enumerate() {
            if w.trim().is_empty() {
                cx.err(
                    K,
                    name,
                    &format!("{field}.dictionary[{j}]"),
                    "must not be empty",
                );
            }
        }
    }
    if let Err(e) = check_header_name(&spec.request_class_header) {
        cx.err(K, name, "spec.requestClassHeader", e);
    }

    if cx.errors.len() > before {
        return None;
    }
    Some(DataPolicy {
        name: name.clone(),
        namespace: cx.namespace.to_string(),
        spec: spec.clone(),
    })
}

/// The regex crate explains a syntax error over several lines (the
/// pattern, a caret, the reason); a field error is one line, so keep the
/// reason.
fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("compiles to more than {limit} bytes; simplify it")
        }
        other => {
            let text = other.to_string();
            let last = text.lines().last().unwrap_or("").trim();
            last.strip_prefix("error: ").unwrap_or(last).to_string()
        }
    }
}

/// Every data policy of the namespace compiled into one detection engine:
/// the rules of all `LLMDataPolicy` objects (by name order), scanned in one
/// pass per request.
pub struct DataGuard {
    /// The compiled detectors.
    pub engine: llmesh_dlp::Engine,
    /// Header an app uses to declare data classes for the whole request.
    pub class_header: HeaderName,
    /// Restore redacted values in answers.
    pub restore: bool,
    /// Names of the policies merged here.
    pub policies: Vec<String>,
    /// Classes whose rule says `unscannable: deny`.
    pub unscannable_deny: Vec<String>,
    /// Classes whose rule says `cacheable: true`: requests where only
    /// these were found may be answered from, and stored in, a route's
    /// response cache.
    pub cacheable: Vec<String>,
}

impl std::fmt::Debug for DataGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataGuard")
            .field("rules", &self.engine.len())
            .field("class_header", &self.class_header)
            .field("restore", &self.restore)
            .field("policies", &self.policies)
            .finish()
    }
}

/// Default header for declared data classes.
pub const DEFAULT_CLASS_HEADER: &str = "x-llmesh-data-class";

fn action_of(a: llmesh_api::DataAction) -> llmesh_dlp::Action {
    match a {
        llmesh_api::DataAction::Redact => llmesh_dlp::Action::Redact,
        llmesh_api::DataAction::Mask => llmesh_dlp::Action::Mask,
        llmesh_api::DataAction::Block => llmesh_dlp::Action::Block,
        llmesh_api::DataAction::Restrict => llmesh_dlp::Action::Restrict,
    }
}

/// Builds the namespace's engine. A class ruled by two policies keeps the
/// first policy's rule (name order) and the second gets a field error;
/// header and restore settings come from the first policy.
pub(crate) fn build_guard(
    cx: &mut Ctx<'_>,
    policies: &[std::sync::Arc<DataPolicy>],
) -> Option<DataGuard> {
    let first = policies.first()?;
    let mut rules = Vec::new();
    let mut owner: Vec<(String, usize)> = Vec::new(); // class -> policy index
    let mut unscannable_deny = Vec::new();
    let mut cacheable = Vec::new();
    for (pi, p) in policies.iter().enumerate() {
        for (i, r) in p.spec.rules.iter().enumerate() {
            if let Some((_, other)) = owner.iter().find(|(c, _)| *c == r.class) {
                cx.err(
                    K,
                    &p.name,
                    &format!("spec.rules[{i}].class"),
                    format!(
                        "class {:?} is already ruled by LLMDataPolicy {}; this rule is ignored",
                        r.class, policies[*other].name
                    ),
                );
                continue;
            }
            owner.push((r.class.clone(), pi));
            if r.unscannable == llmesh_api::Unscannable::Deny {
                unscannable_deny.push(r.class.clone());
            }
            if r.cacheable {
                cacheable.push(r.class.clone());
            }
            let source = match llmesh_dlp::Builtin::from_name(&r.class) {
                Some(b) => llmesh_dlp::ClassSource::Builtin(b),
                None if !r.patterns.is_empty() => {
                    llmesh_dlp::ClassSource::Patterns(r.patterns.clone())
                }
                None => llmesh_dlp::ClassSource::Dictionary {
                    words: r.dictionary.clone(),
                    case_insensitive: r.case_insensitive,
                },
            };
            rules.push(llmesh_dlp::ClassRule {
                class: r.class.clone(),
                source,
                action: action_of(r.action),
            });
        }
    }
    let engine = match llmesh_dlp::Engine::new(rules) {
        Ok(e) => e,
        Err(e) => {
            cx.err(K, &first.name, "spec.rules", e.to_string());
            return None;
        }
    };
    let header = first.spec.request_class_header.as_str();
    let header = if header.is_empty() {
        DEFAULT_CLASS_HEADER
    } else {
        header
    };
    let class_header = HeaderName::try_from(header.to_ascii_lowercase())
        .unwrap_or_else(|_| HeaderName::from_static(DEFAULT_CLASS_HEADER));
    Some(DataGuard {
        engine,
        class_header,
        restore: first.spec.restore_responses,
        policies: policies.iter().map(|p| p.name.clone()).collect(),
        unscannable_deny,
        cacheable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names() {
        for good in ["email", "project-names", "a", "x9", "employee-id"] {
            assert!(is_class_name(good), "{good}");
        }
        for bad in ["", "-a", "a-", "Email", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_class_name(bad), "{bad}");
        }
    }

    #[test]
    fn regex_errors_are_one_line() {
        // Built at run time, as policy patterns are (clippy checks literals).
        let pattern = String::from("EMP-[0-9");
        let e = regex::Regex::new(&pattern).unwrap_err();
        let reason = regex_reason(&e);
        assert!(!reason.contains('\n'), "{reason}");
        assert!(reason.contains("unclosed"), "{reason}");
    }
}
