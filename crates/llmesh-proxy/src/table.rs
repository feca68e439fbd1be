//! The published routing table: the compiled snapshot plus, for each route
//! backend, the upstream client it uses. Built off the request path and
//! swapped in whole.

use std::path::Path;
use std::sync::Arc;

use llmesh_policy::{compile, CompileError, EnvFileSecrets, SecretSource, Snapshot};

use crate::runtime::{self, BackendRuntime, Registry, RouteRuntime};
use crate::upstream::ClientCache;

/// One immutable table. A request loads it once and keeps that `Arc` to the
/// end, so it never sees half of one policy and half of another.
pub struct Table {
    /// The compiled policy.
    pub snap: Snapshot,
    /// Live state of each route, parallel to `snap.routes`.
    pub routes: Vec<RouteRuntime>,
    /// Quota engine of this snapshot (set when published); `None` when the
    /// policy has no quota and no provider limits.
    pub quota: Option<Arc<llmesh_quota::QuotaEngine>>,
}

/// Why a policy file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is invalid.
    #[error("policy file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parse error.
        source: llmesh_api::ParseError,
    },
    /// Resources failed to compile; file mode takes a file whole or not at all.
    #[error("policy file {path} has {} invalid field(s): {}", .errors.len(), .errors.join("; "))]
    Compile {
        /// The file.
        path: String,
        /// One message per error.
        errors: Vec<String>,
    },
}

/// Reads, parses and compiles a policy file into a table. The returned
/// builder holds the live state the table uses; commit it when the table
/// is published.
pub fn load_file<'r>(
    path: &Path,
    secrets_dir: &Path,
    namespace: &str,
    clients: &ClientCache,
    registry: &'r Registry,
) -> Result<(Table, runtime::Builder<'r>), LoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: shown.clone(),
        source,
    })?;
    let docs = llmesh_api::parse_documents(&text).map_err(|source| LoadError::Parse {
        path: shown.clone(),
        source,
    })?;
    let base_dir = path.parent().map(Path::to_path_buf);
    let secrets = EnvFileSecrets {
        base_dir: base_dir.clone(),
        secrets_dir: secrets_dir.to_path_buf(),
    };
    let built = build(
        &docs,
        namespace,
        base_dir.as_deref(),
        &secrets,
        clients,
        registry,
    );
    if !built.errors.is_empty() || !built.wiring_errors.is_empty() {
        let errors = built
            .errors
            .iter()
            .map(ToString::to_string)
            .chain(built.wiring_errors)
            .collect();
        return Err(LoadError::Compile {
            path: shown,
            errors,
        });
    }
    Ok((built.table, built.builder))
}

/// A table built from resources, with what was left out of it.
pub struct Built<'r> {
    /// The table (resources with errors are left out).
    pub table: Table,
    /// Live state to commit when the table is published.
    pub builder: runtime::Builder<'r>,
    /// Resources that failed to compile, with the field and reason.
    pub errors: Vec<CompileError>,
    /// Backends left out because their upstream client could not be made
    /// (e.g. an unreadable `caFile`).
    pub wiring_errors: Vec<String>,
}

/// Compiles resources into a table. Relative `caFile` paths start at
/// `base_dir`. Never fails: what cannot be used is reported and left out.
pub fn build<'r>(
    docs: &[llmesh_api::AnyResource],
    namespace: &str,
    base_dir: Option<&Path>,
    secrets: &dyn SecretSource,
    clients: &ClientCache,
    registry: &'r Registry,
) -> Built<'r> {
    let (snap, errors) = compile(docs, namespace, secrets);
    let mut wiring_errors = Vec::new();
    let mut builder = registry.builder();
    let mut routes = Vec::with_capacity(snap.routes.len());
    for route in &snap.routes {
        let mut wire = |chain: &str, b: &llmesh_policy::Backend, errors: &mut Vec<String>| {
            // Relative CA paths, like credential files, start at the policy file.
            let ca = b.provider.ca_file.as_deref().map(|f| match base_dir {
                Some(dir) if f.is_relative() => dir.join(f),
                _ => f.to_path_buf(),
            });
            match clients.get(ca.as_deref(), route.timeouts.connect) {
                Ok(client) => Some(BackendRuntime {
                    backend: b.clone(),
                    client,
                    state: builder.backend_state(route, chain, b),
                    series: Arc::default(),
                }),
                Err(e) => {
                    errors.push(format!("LLMProvider/{}: spec.caFile: {e}", b.provider.name));
                    None
                }
            }
        };
        let backends = route
            .backends
            .iter()
            .filter_map(|b| wire("", b, &mut wiring_errors))
            .collect();
        let fallbacks = route
            .fallbacks
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let chain = format!("fallback-{i}");
                f.backends
                    .iter()
                    .filter_map(|b| wire(&chain, b, &mut wiring_errors))
                    .collect()
            })
            .collect();
        routes.push(RouteRuntime {
            backends,
            fallbacks,
            budget: builder.budget(route),
            rr: builder.counter(route),
        });
    }
    Built {
        table: Table {
            snap,
            routes,
            quota: None,
        },
        builder,
        errors,
        wiring_errors,
    }
}

/// Shared handle to the active table.
pub type SharedTable = arc_swap::ArcSwap<Table>;

/// Convenience for places holding an `Arc<Table>`.
pub type TableRef = Arc<Table>;
