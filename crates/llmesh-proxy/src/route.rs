//! The route stage: the model name and the request's headers pick a route
//! of the table; a request carrying data classes must have a backend
//! cleared for them.

use std::sync::Arc;

use http::HeaderMap;
use llmesh_policy::Route;

use crate::error::ProxyError;
use crate::inbound::truncate_path;
use crate::table::Table;

/// The route a request goes to.
pub struct Routed {
    /// Position in the table.
    pub index: usize,
    /// The route.
    pub route: Arc<Route>,
    /// Which entry of `route.models` matched (the metric label).
    pub pattern_index: usize,
}

/// The route serving `model` with `headers` in `table`.
pub fn resolve(table: &Table, model: &str, headers: &HeaderMap) -> Result<Routed, ProxyError> {
    let Some(m) = table.snap.route_for(model, headers) else {
        let known = table.snap.known_models();
        return Err(ProxyError::UnknownModel {
            message: format!(
                "The model `{}` is not served here. Known models: {}",
                truncate_path(model),
                if known.is_empty() {
                    "(none)".to_string()
                } else {
                    known.join(", ")
                }
            ),
        });
    };
    crate::trace::routed(model, &m.route.name);
    Ok(Routed {
        index: m.index,
        route: m.route.clone(),
        pattern_index: m
            .route
            .models
            .iter()
            .position(|p| p == m.pattern)
            .unwrap_or(0),
    })
}

/// Refuses a request carrying data classes no backend of `route` is
/// cleared for.
pub fn check_cleared(route: &Route, restricted: &[String]) -> Result<(), ProxyError> {
    if restricted.is_empty() {
        return Ok(());
    }
    let mut all = route
        .backends
        .iter()
        .chain(route.fallbacks.iter().flat_map(|f| f.backends.iter()));
    if all.any(|b| crate::dataguard::cleared(&b.provider, restricted)) {
        return Ok(());
    }
    Err(ProxyError::NotCleared {
        route: route.name.clone(),
        classes: restricted.join(", "),
    })
}
