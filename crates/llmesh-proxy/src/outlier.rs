//! Outlier ejection: a periodic look at each route's backends that takes
//! out the ones much slower than their peers, the way a breaker takes out
//! the failing ones. It runs off the request path; requests only see the
//! breaker it opens.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::shared::Shared;

/// How often backends are compared.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Runs until `shutdown` flips.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => eject_slow(&shared),
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass over the active table.
pub fn eject_slow(shared: &Shared) {
    let table = shared.table.load();
    let now = tokio::time::Instant::now().into_std();
    for (route, rt) in table.snap.routes.iter().zip(&table.routes) {
        let Some(settings) = route.breaker.filter(|b| b.slow_outlier_factor > 0.0) else {
            continue;
        };
        let ewmas: Vec<Option<Duration>> = rt.backends.iter().map(|b| b.state.ttft.get()).collect();
        // Like Envoy's max ejection percent: never more than half at once.
        let limit = rt.backends.len() / 2;
        let mut out = rt
            .backends
            .iter()
            .filter(|b| !b.state.breaker.would_admit(now))
            .count();
        for i in llmesh_resilience::slow_outliers(&ewmas, settings.slow_outlier_factor, 2) {
            let b = &rt.backends[i];
            if out >= limit || !b.state.breaker.would_admit(now) {
                continue;
            }
            b.state.breaker.force_open(now, settings.open_for);
            // Forget the slow average so the probe after ejection is judged
            // on fresh samples.
            b.state.ttft.reset();
            out += 1;
            let model = b.backend.model.as_deref().unwrap_or("");
            let m = &shared.metrics;
            m.outlier_ejections
                .with_label_values(&[&route.name, &b.backend.provider.name, model])
                .inc();
            m.breaker_state
                .with_label_values(&[&route.name, &b.backend.provider.name, model])
                .set(b.state.breaker.state(now).as_gauge());
            tracing::warn!(
                route = route.name.as_str(),
                provider = b.backend.provider.name.as_str(),
                model,
                "backend ejected as a slow outlier"
            );
        }
    }
}
