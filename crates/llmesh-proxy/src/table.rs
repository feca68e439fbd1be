//! The published routing table: the compiled snapshot plus, for each route
//! backend, the upstream client it uses. Built off the request path and
//! swapped in whole.

use std::path::Path;
use std::sync::Arc;

use llmesh_policy::{compile, CompileError, EnvFileSecrets, SecretSource, Snapshot};

use crate::runtime::{self, BackendRuntime, Registry, RouteRuntime};
use crate::upstream::ClientCache;

/// One immutable table. A request loads it once and keeps that `Arc` to the
/// end, so it never sees half of one policy and half of another. It is
/// made whole in one place, [`Table::new`], right before it is published.
pub struct Table {
    /// The compiled policy, with its generation number.
    pub snap: Snapshot,
    /// Live state of each route, parallel to `snap.routes`.
    pub routes: Vec<RouteRuntime>,
    /// Quota engine of this snapshot; `None` when the policy has no quota
    /// and no provider limits.
    pub quota: Option<Arc<llmesh_quota::QuotaEngine>>,
}

/// A policy compiled and wired (clients, live state, series caches), not
/// yet numbered or given its quota engine.
pub struct Compiled {
    /// The compiled policy.
    pub snap: Snapshot,
    /// Live state of each route, parallel to `snap.routes`.
    pub routes: Vec<RouteRuntime>,
}

impl Table {
    /// The table of `compiled` as generation `generation`, with the quota
    /// engine `quota` made from its snapshot.
    pub fn new(
        compiled: Compiled,
        generation: u64,
        quota: impl FnOnce(&Snapshot) -> Option<Arc<llmesh_quota::QuotaEngine>>,
    ) -> Table {
        let Compiled { mut snap, routes } = compiled;
        snap.generation = generation;
        let quota = quota(&snap);
        Table {
            snap,
            routes,
            quota,
        }
    }

    /// The table before any policy is loaded.
    pub fn empty() -> Table {
        Table {
            snap: Snapshot::default(),
            routes: Vec::new(),
            quota: None,
        }
    }
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
) -> Result<(Compiled, runtime::Builder<'r>), LoadError> {
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
    Ok((built.compiled, built.builder))
}

/// A policy built from resources, with what was left out of it.
pub struct Built<'r> {
    /// The policy (resources with errors are left out).
    pub compiled: Compiled,
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
    // Token endpoints (STS, Entra, Google) are reached with the web roots
    // and the global CA.
    let token_client = match clients.get(None, std::time::Duration::from_secs(5)) {
        Ok(c) => Some(c),
        Err(e) => {
            wiring_errors.push(format!("the token endpoints' client: {e}"));
            None
        }
    };
    for route in &snap.routes {
        let route_name: Arc<str> = Arc::from(route.name.as_str());
        let mut wire = |chain: &str, b: &llmesh_policy::Backend, errors: &mut Vec<String>| {
            // Relative CA paths, like credential files, start at the policy file.
            let ca = b.provider.ca_file.as_deref().map(|f| match base_dir {
                Some(dir) if f.is_relative() => dir.join(f),
                _ => f.to_path_buf(),
            });
            match clients.get(ca.as_deref(), route.timeouts.connect) {
                Ok(client) => Some(BackendRuntime {
                    route: route_name.clone(),
                    backend: b.clone(),
                    client,
                    state: builder.backend_state(route, chain, b),
                    series: Arc::default(),
                    version: builder.model_version(route, b),
                    credential: token_client
                        .as_ref()
                        .and_then(|c| builder.credential(&b.provider, c)),
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
        let mirror_backend = route
            .mirror
            .as_ref()
            .and_then(|m| wire("mirror", &m.backend, &mut wiring_errors));
        let mirror = match (mirror_backend, builder.mirror_budget(route)) {
            (Some(backend), Some(budget)) => Some(crate::runtime::Mirror { backend, budget }),
            _ => None,
        };
        // The client of a provider the route calls outside its backends.
        let mut side_client = |provider: &llmesh_policy::Provider| {
            let ca = provider.ca_file.as_deref().map(|f| match base_dir {
                Some(dir) if f.is_relative() => dir.join(f),
                _ => f.to_path_buf(),
            });
            match clients.get(ca.as_deref(), route.timeouts.connect) {
                Ok(c) => Some(c),
                Err(e) => {
                    wiring_errors.push(format!("LLMProvider/{}: spec.caFile: {e}", provider.name));
                    None
                }
            }
        };
        let passthrough = route
            .passthrough
            .as_ref()
            .and_then(|pt| side_client(&pt.provider));
        let embedder = route
            .semantic_cache
            .as_ref()
            .and_then(|s| side_client(&s.provider));

        routes.push(RouteRuntime {
            backends,
            fallbacks,
            budget: builder.budget(route),
            rr: builder.counter(route),
            passthrough,
            cache: builder.cache(route),
            embedder,
            mirror,
        });
    }
    Built {
        compiled: Compiled { snap, routes },
        builder,
        errors,
        wiring_errors,
    }
}

/// Shared handle to the active table.
pub type SharedTable = arc_swap::ArcSwap<Table>;

/// Convenience for places holding an `Arc<Table>`.
pub type TableRef = Arc<Table>;
