//! The quota engine: compiled rules of one policy snapshot over a
//! [`QuotaRuntime`] that outlives snapshots, so a hot reload keeps every
//! count. Admission plans every limit of every covering quota and hands
//! the plan to the store in one atomic step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use llmesh_api::{ProviderLimits, QuotaAction, QuotaScope, StoreUnavailable};
use llmesh_policy::{Quota, Snapshot};
use smallvec::SmallVec;

use crate::decision::{
    Admission, Alert, Decision, LimitRef, QuotaUsage, RateLimitInfo, RejectReason, Rejection,
    Settled,
};
use crate::reservation::{Held, Reservation};
use crate::rules::{micro_usd, stable_hash, tokens_of, LimitName, Rule, Unit};
use crate::runtime::{lock, QuotaRuntime, RuntimeInner};
use crate::store::{Plan, PlanEntry, QuotaStore, Reserved, ScopeId, StoreStats, INLINE};
use crate::window::{unix_ms, Window};
use crate::AnyStore;

/// The rules of one snapshot.
#[derive(Debug, Default)]
pub(crate) struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    caller_headers: Vec<Arc<str>>,
    /// Provider name -> (namespace, published limits).
    pub(crate) providers: HashMap<Arc<str>, (Arc<str>, ProviderLimits)>,
}

/// A downgrade quota with no room for the request.
pub(crate) struct Full {
    rule: usize,
    entry: usize,
    used: i64,
    by: LimitRef,
    to: Arc<str>,
    alerts: Vec<Alert>,
}

/// Adds `alerts` to a decision's.
fn with_alerts<S: QuotaStore>(mut d: Decision<S>, alerts: Vec<Alert>) -> Decision<S> {
    if alerts.is_empty() {
        return d;
    }
    match &mut d {
        Decision::Allow(r)
        | Decision::Warn { reservation: r, .. }
        | Decision::Downgrade { reservation: r, .. } => r.add_alerts(alerts),
        Decision::Reject(rej) => rej.alerts.extend(alerts),
    }
    d
}

/// Per plan entry: which rule and limit it came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) rule: u16,
    pub(crate) limit: u8,
}

/// The quota engine of one policy snapshot. `Send + Sync`; share it in an
/// `Arc` next to the snapshot.
#[derive(Debug)]
pub struct QuotaEngine<S: QuotaStore = AnyStore> {
    pub(crate) rules: Arc<RuleSet>,
    pub(crate) rt: Arc<RuntimeInner<S>>,
}

impl<S: QuotaStore> QuotaEngine<S> {
    /// Compiles `quotas` and the providers' published limits over
    /// `runtime`. Providers are `(name, namespace, limits)`.
    pub fn new<'a>(
        quotas: &[Arc<Quota>],
        providers: impl IntoIterator<Item = (&'a str, &'a str, Option<ProviderLimits>)>,
        runtime: &QuotaRuntime<S>,
    ) -> QuotaEngine<S> {
        let rules: Vec<Rule> = quotas.iter().map(|q| Rule::from_quota(q)).collect();
        let mut caller_headers: Vec<Arc<str>> = Vec::new();
        for h in rules.iter().filter_map(|r| r.caller_header.clone()) {
            if !caller_headers.contains(&h) {
                caller_headers.push(h);
            }
        }
        let providers = providers
            .into_iter()
            .filter_map(|(name, ns, limits)| limits.map(|l| (Arc::from(name), (Arc::from(ns), l))))
            .collect();
        QuotaEngine {
            rules: Arc::new(RuleSet {
                rules,
                caller_headers,
                providers,
            }),
            rt: runtime.inner.clone(),
        }
    }

    /// The engine of a compiled snapshot: its quotas and its providers'
    /// limits.
    pub fn from_snapshot(snap: &Snapshot, runtime: &QuotaRuntime<S>) -> QuotaEngine<S> {
        QuotaEngine::new(
            &snap.quotas,
            snap.providers
                .values()
                .map(|p| (p.name.as_str(), p.namespace.as_str(), p.limits)),
            runtime,
        )
    }

    /// No quota at all: the proxy may skip admission.
    pub fn is_empty(&self) -> bool {
        self.rules.rules.is_empty()
    }

    /// What admitting a request for `model` needs: `None` when no quota
    /// covers it (admission can be skipped), `Some(true)` when a covering
    /// quota, or the quota a downgrade would land on, counts tokens or
    /// cost (count the prompt first), `Some(false)` when only requests
    /// and slots are counted.
    pub fn coverage(&self, namespace: &str, workload: &str, model: &str) -> Option<bool> {
        let counts_tokens = |r: &Rule| {
            r.limits
                .iter()
                .any(|l| matches!(l.name.unit(), Unit::Tokens | Unit::MicroUsd))
        };
        let mut covered = None;
        for rule in self.rules.rules.iter() {
            if !rule.covers(namespace, workload, model) {
                continue;
            }
            let mut tokens = counts_tokens(rule);
            if let Some(to) = &rule.downgrade_to {
                tokens |= self
                    .rules
                    .rules
                    .iter()
                    .any(|r| r.covers(namespace, workload, to) && counts_tokens(r));
            }
            covered = Some(covered.unwrap_or(false) | tokens);
        }
        covered
    }

    /// Whether `provider` has published limits this engine paces.
    pub fn paces(&self, provider: &str) -> bool {
        self.rules.providers.contains_key(provider)
    }

    /// Whether any provider has published limits.
    pub fn paces_any(&self) -> bool {
        !self.rules.providers.is_empty()
    }

    /// The compiled rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules.rules
    }

    /// Request headers naming callers (lower case) that `caller` quotas
    /// read; hash their values with a [`crate::CallerHasher`] into
    /// [`Admission::callers`].
    pub fn caller_headers(&self) -> &[Arc<str>] {
        &self.rules.caller_headers
    }

    /// The store's health and counters.
    pub fn store_stats(&self) -> StoreStats {
        self.rt.store.stats()
    }

    /// Checks the request against every quota covering it and reserves its
    /// requests, tokens, cost and concurrency slot in one atomic store
    /// operation.
    pub async fn admit(&self, req: &Admission<'_>) -> Decision<S> {
        let now_ms = unix_ms(req.now);
        let (plan, meta) = self.plan(req, req.model, None, now_ms);
        match self.reserve(&plan, &meta, None).await {
            Ok(d) => d,
            Err(full) => {
                // A downgrade quota is full: try again as the cheaper
                // model, without the quota that downgraded it. On this
                // second round a full downgrade quota refuses.
                let (plan2, meta2) = self.plan(req, &full.to, Some(full.rule), now_ms);
                let decision = match self.reserve(&plan2, &meta2, Some(&full.to)).await {
                    Ok(Decision::Allow(reservation)) | Ok(Decision::Warn { reservation, .. }) => {
                        Decision::Downgrade {
                            to_model: full.to,
                            by: full.by,
                            reservation,
                        }
                    }
                    Ok(other) => other,
                    // Not returned with `downgraded` set; refusing is the
                    // safe reading all the same.
                    Err(again) => Decision::Reject(self.rejection(
                        &plan2,
                        &meta2,
                        again.entry,
                        Some(again.used),
                        now_ms,
                    )),
                };
                // The downgrade quota's limit was reached: its alerts go
                // with whatever the second round decided.
                with_alerts(decision, full.alerts)
            }
        }
    }

    /// Settles `reservation` with the real usage (see
    /// [`Reservation::settle`]).
    pub async fn settle(
        &self,
        reservation: Reservation<S>,
        input_tokens: u64,
        output_tokens: u64,
        cost_usd: f64,
    ) -> Settled {
        reservation
            .settle(input_tokens, output_tokens, cost_usd)
            .await
    }

    /// `Err` when a downgrade quota refused on the first round.
    async fn reserve(
        &self,
        plan: &Plan<'_>,
        meta: &[Meta],
        downgraded: Option<&Arc<str>>,
    ) -> Result<Decision<S>, Full> {
        let now_ms = plan.now_ms;
        if plan.entries.is_empty() {
            return Ok(Decision::Allow(Reservation::empty(
                self.rt.clone(),
                self.rules.clone(),
                downgraded.cloned(),
            )));
        }
        match self.rt.store.reserve(plan).await {
            Reserved::Admitted {
                ticket,
                used,
                local,
            } => {
                let mut alerts = Vec::new();
                let mut exceeded = Vec::new();
                let mut held: SmallVec<[Held; INLINE]> = SmallVec::new();
                for ((e, m), &after) in plan.entries.iter().zip(meta).zip(&used) {
                    self.rt
                        .note(e.counter_id, self.limit_id(*m), e.window, after);
                    let before = after - e.add as i64;
                    self.crossings(*m, e.counter_id, e.window, before, after, &mut alerts);
                    if !e.hard && after > e.max as i64 {
                        exceeded.push(self.limit_ref(*m));
                    }
                    held.push(Held {
                        meta: *m,
                        counter_id: e.counter_id,
                        window: e.window,
                        add: e.add,
                        used: after,
                        max: e.max,
                    });
                }
                let reservation = Reservation::new(
                    self.rt.clone(),
                    self.rules.clone(),
                    ticket,
                    held,
                    downgraded.cloned(),
                    alerts,
                    local,
                    now_ms,
                );
                Ok(if exceeded.is_empty() {
                    Decision::Allow(reservation)
                } else {
                    Decision::Warn {
                        reservation,
                        exceeded,
                    }
                })
            }
            Reserved::Refused { entry, used, .. } => {
                let rule_idx = meta[entry].rule as usize;
                let rule = &self.rules.rules[rule_idx];
                if let (QuotaAction::Downgrade, Some(to), None) =
                    (rule.action, &rule.downgrade_to, downgraded)
                {
                    let e = &plan.entries[entry];
                    let mut alerts = Vec::new();
                    self.crossings(
                        meta[entry],
                        e.counter_id,
                        e.window,
                        used,
                        e.max as i64,
                        &mut alerts,
                    );
                    return Err(Full {
                        rule: rule_idx,
                        entry,
                        used,
                        by: self.limit_ref(meta[entry]),
                        to: to.clone(),
                        alerts,
                    });
                }
                Ok(Decision::Reject(self.rejection(
                    plan,
                    meta,
                    entry,
                    Some(used),
                    now_ms,
                )))
            }
            Reserved::Unavailable { entry } => Ok(Decision::Reject(
                self.rejection(plan, meta, entry, None, now_ms),
            )),
        }
    }

    /// A refusal of `entry`; `used: None` means the store was unavailable.
    fn rejection(
        &self,
        plan: &Plan<'_>,
        meta: &[Meta],
        entry: usize,
        used: Option<i64>,
        now_ms: u64,
    ) -> Rejection {
        let e = &plan.entries[entry];
        let m = meta[entry];
        let limit = self.limit_ref(m);
        let Some(used) = used else {
            return Rejection {
                limit,
                reason: RejectReason::StoreUnavailable,
                retry_after: Duration::from_secs(1),
                rate: None,
                alerts: Vec::new(),
            };
        };
        let reset = if e.window.1 == u64::MAX {
            // A slot frees when a call ends: a second is a fair guess.
            Duration::from_secs(1)
        } else {
            Duration::from_millis(e.window.1.saturating_sub(now_ms))
        };
        // A refusal means the limit is reached: it raises the thresholds
        // up to 100% that usage had not reached yet.
        let mut alerts = Vec::new();
        self.crossings(m, e.counter_id, e.window, used, e.max as i64, &mut alerts);
        Rejection {
            limit,
            reason: RejectReason::LimitReached,
            retry_after: reset,
            rate: Some(RateLimitInfo {
                limit: e.max,
                remaining: (e.max as i64 - used).max(0) as u64,
                reset,
                unit: m_unit(&self.rules, m),
            }),
            alerts,
        }
    }

    /// The plan of `req` as `model`: every limit of every covering rule
    /// (but `skip`), reject quotas first.
    fn plan<'a>(
        &'a self,
        req: &Admission<'a>,
        model: &str,
        skip: Option<usize>,
        now_ms: u64,
    ) -> (Plan<'a>, SmallVec<[Meta; INLINE]>) {
        let mut plan = Plan {
            now_ms,
            lease: self.rt.next_lease(),
            entries: SmallVec::new(),
        };
        let mut meta = SmallVec::new();
        for pass in [
            QuotaAction::Reject,
            QuotaAction::Downgrade,
            QuotaAction::Warn,
        ] {
            for (ri, rule) in self.rules.rules.iter().enumerate() {
                if rule.action != pass
                    || Some(ri) == skip
                    || !rule.covers(req.namespace, req.workload, model)
                {
                    continue;
                }
                let scope = match rule.scope {
                    QuotaScope::Namespace => ScopeId::Namespace,
                    QuotaScope::Workload => ScopeId::Workload(req.workload),
                    QuotaScope::Pod => ScopeId::Pod(req.pod),
                    QuotaScope::Caller => {
                        ScopeId::Caller(rule.caller_header.as_deref().and_then(|h| {
                            req.callers.iter().find(|(n, _)| *n == h).map(|(_, id)| *id)
                        }))
                    }
                };
                for (li, limit) in rule.limits.iter().enumerate() {
                    let add = match limit.name.unit() {
                        Unit::Requests | Unit::InFlight => 1,
                        Unit::Tokens => {
                            tokens_of(rule.token_kind, req.input_tokens, req.output_tokens)
                        }
                        Unit::MicroUsd => micro_usd(req.est_cost_usd),
                    };
                    let window = limit
                        .name
                        .window()
                        .map_or((0, u64::MAX), |w: Window| w.bounds(now_ms));
                    plan.entries.push(PlanEntry {
                        namespace: &rule.namespace,
                        quota: &rule.name,
                        scope,
                        limit: limit.name,
                        counter_id: stable_hash(&(limit.id, scope)),
                        window,
                        max: limit.max,
                        add,
                        hard: rule.action != QuotaAction::Warn,
                        fail_closed: rule.on_store_unavailable == StoreUnavailable::FailClosed,
                    });
                    meta.push(Meta {
                        rule: ri as u16,
                        limit: li as u8,
                    });
                }
            }
        }
        (plan, meta)
    }

    pub(crate) fn limit_ref(&self, m: Meta) -> LimitRef {
        self.rules.limit_ref(m)
    }

    fn limit_id(&self, m: Meta) -> u64 {
        self.rules.rules[m.rule as usize].limits[m.limit as usize].id
    }

    fn crossings(
        &self,
        m: Meta,
        counter_id: u64,
        window: (u64, u64),
        before: i64,
        after: i64,
        out: &mut Vec<Alert>,
    ) {
        self.rt
            .crossings(&self.rules, m, counter_id, window, before, after, out);
    }

    /// Usage of every limit of every quota as this sidecar last saw it,
    /// for gauges.
    pub fn usage(&self, now: SystemTime) -> Vec<QuotaUsage> {
        let now_ms = unix_ms(now);
        let board = lock(&self.rt.board);
        let mut highest: HashMap<u64, i64> = HashMap::new();
        for b in board.values() {
            if b.window.0 <= now_ms && now_ms < b.window.1 {
                let v = highest.entry(b.limit_id).or_insert(i64::MIN);
                *v = (*v).max(b.used);
            }
        }
        let mut out = Vec::new();
        for (ri, rule) in self.rules.rules.iter().enumerate() {
            for (li, limit) in rule.limits.iter().enumerate() {
                let used = highest.get(&limit.id).copied().unwrap_or(0).max(0);
                let resets_in = limit
                    .name
                    .window()
                    .map(|w| Duration::from_millis(w.bounds(now_ms).1.saturating_sub(now_ms)));
                out.push(QuotaUsage {
                    limit: self.limit_ref(Meta {
                        rule: ri as u16,
                        limit: li as u8,
                    }),
                    scope: scope_label(rule.scope),
                    used,
                    max: limit.max,
                    ratio: used as f64 / limit.max as f64,
                    resets_in,
                });
            }
        }
        out
    }
}

impl RuleSet {
    pub(crate) fn limit_ref(&self, m: Meta) -> LimitRef {
        let rule = &self.rules[m.rule as usize];
        LimitRef {
            namespace: rule.namespace.clone(),
            quota: rule.name.clone(),
            limit: rule.limits[m.limit as usize].name,
        }
    }
}

fn m_unit(rules: &RuleSet, m: Meta) -> Unit {
    rules.rules[m.rule as usize].limits[m.limit as usize]
        .name
        .unit()
}

fn scope_label(s: QuotaScope) -> &'static str {
    match s {
        QuotaScope::Namespace => "namespace",
        QuotaScope::Workload => "workload",
        QuotaScope::Pod => "pod",
        QuotaScope::Caller => "caller",
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<QuotaEngine<crate::MemoryStore>>();
    is::<QuotaEngine<AnyStore>>();
    // Reservations travel with the response body to wherever it ends.
    is::<Reservation<AnyStore>>();
    is::<Decision<AnyStore>>();
    is::<LimitName>();
}
