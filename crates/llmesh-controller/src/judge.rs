//! What the controller concludes about each object: pure, no I/O.
//!
//! Each namespace is compiled the way its sidecars compile it: its own
//! objects, plus the platform namespace's objects whose kind and name it
//! does not also have, through `llmesh_policy::compile`. A verdict is then
//! made for each object of the namespace itself. The platform namespace's
//! objects are judged on their own, in the platform namespace: that is the
//! one verdict that does not depend on which namespace inherits them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kube::api::DynamicObject;
use llmesh_api::{
    AnyResource, BackendRef, CredentialRef, LLMRouteSpec, ResourceKey, ResourceKind,
    CONDITION_ACCEPTED, CONDITION_ENFORCED, CONDITION_RESOLVED_REFS, REASON_ACCEPTED,
    REASON_BACKEND_NOT_FOUND, REASON_ENFORCED, REASON_INVALID, REASON_INVALID_BACKEND,
    REASON_MODEL_NOT_ROUTED, REASON_NOT_ENFORCED, REASON_RESOLVED_REFS,
};
use llmesh_kube::{Object, ShapeError};
use llmesh_policy::{SecretError, SecretSource, Snapshot};

/// `status` of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`: the controller cannot tell.
    Unknown,
}

impl Status {
    /// As written in a condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// One condition as the controller means it, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// `Accepted`, `ResolvedRefs` or `Enforced`.
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: Status,
    /// One CamelCase word.
    pub reason: &'static str,
    /// For people: which fields, which references.
    pub message: String,
}

/// Every condition type this controller owns; others on an object (from
/// a future writer) are kept as they are.
pub const MANAGED: [&str; 3] = [
    CONDITION_ACCEPTED,
    CONDITION_RESOLVED_REFS,
    CONDITION_ENFORCED,
];

/// What the controller concludes about one object.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// `LLMRoute`, ...
    pub kind: &'static str,
    /// The object as watched (its status is what is there now).
    pub object: Arc<DynamicObject>,
    /// Its conditions, in a fixed order.
    pub conditions: Vec<Cond>,
    /// `status.ruleCount` of an `LLMDataPolicy`: `Some(None)` removes it
    /// (no accepted spec), `None` for the other kinds.
    pub rule_count: Option<Option<i64>>,
}

impl Verdict {
    /// `metadata.generation`.
    pub fn generation(&self) -> Option<i64> {
        self.object.metadata.generation
    }

    /// The `Accepted` condition.
    pub fn accepted(&self) -> Option<&Cond> {
        self.conditions
            .iter()
            .find(|c| c.type_ == CONDITION_ACCEPTED)
    }

    /// `Kind/namespace/name`, for logs.
    pub fn full_name(&self) -> String {
        format!(
            "{}/{}/{}",
            self.kind,
            self.object.metadata.namespace.as_deref().unwrap_or(""),
            self.object.metadata.name.as_deref().unwrap_or("")
        )
    }
}

/// Judges every object. `platform` is the namespace whose objects are
/// merged under every other namespace's.
pub fn judge(objects: &[Object], platform: Option<&str>) -> Vec<Verdict> {
    let mut by_ns: BTreeMap<&str, Vec<&Object>> = BTreeMap::new();
    for o in objects {
        let ns = o.object.metadata.namespace.as_deref().unwrap_or("");
        by_ns.entry(ns).or_default().push(o);
    }
    let inherited: &[&Object] = platform
        .and_then(|p| by_ns.get(p))
        .map_or(&[], Vec::as_slice);
    let mut out = Vec::with_capacity(objects.len());
    for (ns, own) in &by_ns {
        let inherited = if Some(*ns) == platform {
            &[]
        } else {
            inherited
        };
        out.extend(judge_namespace(ns, own, inherited, platform));
    }
    out
}

/// Credentials judged on their spec only: the controller cannot read the
/// files and environment of sidecars, and has no RBAC to read Secrets.
/// The placeholder key never leaves this module's compile call.
struct SpecOnly;

impl SecretSource for SpecOnly {
    fn resolve(&self, r: &CredentialRef) -> Result<String, SecretError> {
        let placeholder = || Ok("not-read-by-the-controller".to_string());
        match (&r.env, &r.file, &r.secret_key_ref) {
            (Some(var), None, None) if var.is_empty() => Err(SecretError::EmptyEnvName),
            (None, Some(file), None) if file.is_empty() => Err(SecretError::EmptyFilePath),
            (Some(_), None, None) | (None, Some(_), None) => placeholder(),
            (None, None, Some(s)) => {
                // The sidecar turns both parts into path components and
                // refuses these; so does the controller, without reading.
                let bad =
                    |p: &str| p.is_empty() || p == "." || p == ".." || p.contains(['/', '\\']);
                if bad(&s.name) || bad(&s.key) {
                    Err(SecretError::NotASecretKey {
                        name: s.name.clone(),
                        key: s.key.clone(),
                    })
                } else {
                    placeholder()
                }
            }
            _ => Err(SecretError::NotExactlyOne),
        }
    }
}

fn judge_namespace(
    ns: &str,
    own: &[&Object],
    inherited: &[&Object],
    platform: Option<&str>,
) -> Vec<Verdict> {
    let own_keys: HashSet<ResourceKey> = own.iter().map(|o| o.key()).collect();
    let merged: Vec<&Object> = own
        .iter()
        .copied()
        .chain(
            inherited
                .iter()
                .copied()
                .filter(|o| !own_keys.contains(&o.key())),
        )
        .collect();

    let mut read: HashMap<ResourceKey, Result<AnyResource, ShapeError>> = HashMap::new();
    let mut docs = Vec::with_capacity(merged.len());
    // Provider name -> namespace it comes from, read or not: tells a
    // missing provider from an invalid one.
    let mut providers: HashMap<String, String> = HashMap::new();
    for o in &merged {
        let r = o.to_resource();
        if let Ok(doc) = &r {
            docs.push(doc.clone());
        }
        if o.kind == ResourceKind::Provider {
            let name = o.object.metadata.name.clone().unwrap_or_default();
            let from = o.object.metadata.namespace.clone().unwrap_or_default();
            providers.insert(name, from);
        }
        read.insert(o.key(), r);
    }
    let (snap, errors) = llmesh_policy::compile(&docs, ns, &SpecOnly);
    let mut field_errors: HashMap<ResourceKey, Vec<String>> = HashMap::new();
    for e in errors {
        field_errors
            .entry(e.key())
            .or_default()
            .push(format!("{}: {}", e.field, e.reason));
    }

    let where_ = Where {
        ns,
        is_platform: platform == Some(ns),
        platform: platform.filter(|p| *p != ns),
        providers: &providers,
        snap: &snap,
    };
    own.iter()
        .map(|o| {
            let key = o.key();
            let resource = read.get(&key);
            let errors = field_errors.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            verdict(o, resource, errors, &where_)
        })
        .collect()
}

/// What one namespace's compile says, for the verdicts of its objects.
struct Where<'a> {
    ns: &'a str,
    /// `ns` is the platform namespace.
    is_platform: bool,
    /// The platform namespace, when it is not `ns`.
    platform: Option<&'a str>,
    providers: &'a HashMap<String, String>,
    snap: &'a Snapshot,
}

fn verdict(
    o: &Object,
    resource: Option<&Result<AnyResource, ShapeError>>,
    errors: &[String],
    w: &Where<'_>,
) -> Verdict {
    let name = o.object.metadata.name.as_deref().unwrap_or("");
    let mut conditions = Vec::new();
    let readable = match resource {
        Some(Ok(r)) => Some(r),
        _ => None,
    };
    let accepted = match resource {
        Some(Err(e)) => false_cond(CONDITION_ACCEPTED, REASON_INVALID, e.to_string()),
        _ if !errors.is_empty() => {
            false_cond(CONDITION_ACCEPTED, REASON_INVALID, errors.join("; "))
        }
        _ => Cond {
            type_: CONDITION_ACCEPTED,
            status: Status::True,
            reason: REASON_ACCEPTED,
            message: if w.is_platform {
                format!(
                    "valid; a default for every namespace without its own {} {name:?}",
                    o.kind
                )
            } else {
                format!(
                    "valid; part of the policy of the sidecars in namespace {}",
                    w.ns
                )
            },
        },
    };
    let is_accepted = accepted.status == Status::True;
    conditions.push(accepted);

    let mut rule_count = None;
    match o.kind {
        ResourceKind::Route => conditions.push(match readable {
            Some(AnyResource::Route(r)) => route_refs(&r.spec, w),
            _ => Cond {
                type_: CONDITION_RESOLVED_REFS,
                status: Status::Unknown,
                reason: REASON_INVALID,
                message: "the spec cannot be read, so its references are not checked".into(),
            },
        }),
        ResourceKind::Quota => {
            let downgrade = match readable {
                Some(AnyResource::Quota(q)) => Ok(q.spec.downgrade_to.as_deref()),
                _ => Err(()),
            };
            conditions.push(quota_refs(downgrade, w));
            conditions.push(enforced(o.kind.as_str(), is_accepted));
        }
        ResourceKind::DataPolicy => {
            conditions.push(enforced(o.kind.as_str(), is_accepted));
            rule_count = Some(match readable {
                Some(AnyResource::DataPolicy(d)) if is_accepted => {
                    Some(i64::try_from(d.spec.rules.len()).unwrap_or(i64::MAX))
                }
                _ => None,
            });
        }
        ResourceKind::Provider => {}
    }
    Verdict {
        kind: o.kind.as_str(),
        object: o.object.clone(),
        conditions,
        rule_count,
    }
}

fn false_cond(type_: &'static str, reason: &'static str, message: String) -> Cond {
    Cond {
        type_,
        status: Status::False,
        reason,
        message,
    }
}

/// `Enforced`: the sidecars of the namespace apply an accepted object; a
/// rejected one is not applied (they keep its last valid version, if any).
fn enforced(kind: &str, accepted: bool) -> Cond {
    if accepted {
        Cond {
            type_: CONDITION_ENFORCED,
            status: Status::True,
            reason: REASON_ENFORCED,
            message: format!("the llmesh sidecars of the namespace enforce this {kind}"),
        }
    } else {
        false_cond(
            CONDITION_ENFORCED,
            REASON_NOT_ENFORCED,
            format!(
                "this {kind} is rejected (see Accepted); sidecars do not apply this generation"
            ),
        )
    }
}

fn route_refs(spec: &LLMRouteSpec, w: &Where<'_>) -> Cond {
    let mut lists: Vec<(String, &[BackendRef])> =
        vec![("spec.backends".to_string(), spec.backends.as_slice())];
    for (i, f) in spec.fallbacks.iter().enumerate() {
        lists.push((
            format!("spec.fallbacks[{i}].backends"),
            f.backends.as_slice(),
        ));
    }
    let mut missing = Vec::new();
    let mut invalid = Vec::new();
    for (field, refs) in lists {
        for (i, b) in refs.iter().enumerate() {
            let name = &b.provider;
            if w.snap.providers.contains_key(name) {
                continue;
            }
            let at = format!("{field}[{i}].provider");
            match w.providers.get(name) {
                Some(from) => invalid.push(format!(
                    "{at}: LLMProvider {name:?} in namespace {from} is not accepted (see its status)"
                )),
                None => {
                    let places = match w.platform {
                        Some(p) => format!("namespace {} or {p}", w.ns),
                        None => format!("namespace {}", w.ns),
                    };
                    missing.push(format!("{at}: no LLMProvider {name:?} in {places}"));
                }
            }
        }
    }
    if missing.is_empty() && invalid.is_empty() {
        return Cond {
            type_: CONDITION_RESOLVED_REFS,
            status: Status::True,
            reason: REASON_RESOLVED_REFS,
            message: "every backend names an accepted LLMProvider".into(),
        };
    }
    let reason = if missing.is_empty() {
        REASON_INVALID_BACKEND
    } else {
        REASON_BACKEND_NOT_FOUND
    };
    missing.extend(invalid);
    false_cond(CONDITION_RESOLVED_REFS, reason, missing.join("; "))
}

/// `downgradeTo` must be a model that some accepted route of the namespace
/// serves, or the downgrade would answer 404 once enforced.
fn quota_refs(downgrade: Result<Option<&str>, ()>, w: &Where<'_>) -> Cond {
    let model = match downgrade {
        Err(()) => {
            return Cond {
                type_: CONDITION_RESOLVED_REFS,
                status: Status::Unknown,
                reason: REASON_INVALID,
                message: "the spec cannot be read, so its references are not checked".into(),
            }
        }
        Ok(None) => {
            return Cond {
                type_: CONDITION_RESOLVED_REFS,
                status: Status::True,
                reason: REASON_RESOLVED_REFS,
                message: "no references (no downgradeTo)".into(),
            }
        }
        Ok(Some(m)) => m,
    };
    let serving = w.snap.routes.iter().find(|r| {
        r.models.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => p == model,
        })
    });
    match serving {
        Some(r) => Cond {
            type_: CONDITION_RESOLVED_REFS,
            status: Status::True,
            reason: REASON_RESOLVED_REFS,
            message: format!("downgradeTo {model:?} is served by LLMRoute {}", r.name),
        },
        None => false_cond(
            CONDITION_RESOLVED_REFS,
            REASON_MODEL_NOT_ROUTED,
            format!(
                "spec.downgradeTo: no accepted LLMRoute in namespace {} serves model {model:?}",
                w.ns
            ),
        ),
    }
}

#[cfg(test)]
mod tests;
