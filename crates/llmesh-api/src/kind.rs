//! The four kinds as a value, and the key objects are merged and matched by.

use std::fmt;

/// One of the four llmesh kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// `LLMProvider`.
    Provider,
    /// `LLMRoute`.
    Route,
    /// `LLMQuota`.
    Quota,
    /// `LLMDataPolicy`.
    DataPolicy,
}

impl ResourceKind {
    /// Every kind, in a fixed order (provider, route, quota, data policy).
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::Provider,
        ResourceKind::Route,
        ResourceKind::Quota,
        ResourceKind::DataPolicy,
    ];

    /// The kind as written in `kind:` (`LLMRoute`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Provider => "LLMProvider",
            ResourceKind::Route => "LLMRoute",
            ResourceKind::Quota => "LLMQuota",
            ResourceKind::DataPolicy => "LLMDataPolicy",
        }
    }

    /// The plural resource name of the API (`llmroutes`).
    pub const fn plural(self) -> &'static str {
        match self {
            ResourceKind::Provider => "llmproviders",
            ResourceKind::Route => "llmroutes",
            ResourceKind::Quota => "llmquotas",
            ResourceKind::DataPolicy => "llmdatapolicies",
        }
    }

    /// The kind named `kind` (as in `kind:`), if it is one of the four.
    pub fn from_name(kind: &str) -> Option<ResourceKind> {
        ResourceKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Kind/name`: what identifies an object within one namespace's policy,
/// and what a platform-namespace object is shadowed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// The kind.
    pub kind: ResourceKind,
    /// `metadata.name`.
    pub name: String,
}

impl ResourceKey {
    /// The key of object `name` of kind `kind`.
    pub fn new(kind: ResourceKind, name: impl Into<String>) -> ResourceKey {
        ResourceKey {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ResourceKind::ALL {
            assert_eq!(ResourceKind::from_name(k.as_str()), Some(k));
            assert_eq!(k.to_string(), k.as_str());
        }
        assert_eq!(ResourceKind::from_name("Pod"), None);
        assert_eq!(
            ResourceKey::new(ResourceKind::Route, "chat").to_string(),
            "LLMRoute/chat"
        );
    }
}
