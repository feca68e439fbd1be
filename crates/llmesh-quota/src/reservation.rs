//! A reservation: what an admitted request holds until it is settled with
//! its real usage. Dropping one unsettled (the client went away, a task
//! was cancelled) frees its concurrency slots and keeps the reserved
//! tokens and cost counted, so a leaked slot is impossible and an unknown
//! usage is never counted as zero.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use crate::decision::{Alert, RateLimitInfo, Settled};
use crate::engine::{Meta, RuleSet};
use crate::rules::{micro_usd, tokens_of, Unit};
use crate::runtime::RuntimeInner;
use crate::store::{QuotaStore, INLINE};
use crate::AnyStore;

/// One counted limit of a reservation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub(crate) meta: Meta,
    pub(crate) counter_id: u64,
    pub(crate) window: (u64, u64),
    pub(crate) add: u64,
    pub(crate) used: i64,
    pub(crate) max: u64,
}

/// What an admitted request reserved. Settle it with
/// [`Reservation::settle`] when the call ends (streams: when the stream
/// ends or breaks).
#[must_use = "settle the reservation with the real usage when the call ends"]
pub struct Reservation<S: QuotaStore = AnyStore> {
    rt: Arc<RuntimeInner<S>>,
    rules: Arc<RuleSet>,
    ticket: Option<S::Ticket>,
    held: SmallVec<[Held; INLINE]>,
    downgraded_to: Option<Arc<str>>,
    alerts: Vec<Alert>,
    local: bool,
    now_ms: u64,
}

impl<S: QuotaStore> Reservation<S> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rt: Arc<RuntimeInner<S>>,
        rules: Arc<RuleSet>,
        ticket: S::Ticket,
        held: SmallVec<[Held; INLINE]>,
        downgraded_to: Option<Arc<str>>,
        alerts: Vec<Alert>,
        local: bool,
        now_ms: u64,
    ) -> Self {
        Reservation {
            rt,
            rules,
            ticket: Some(ticket),
            held,
            downgraded_to,
            alerts,
            local,
            now_ms,
        }
    }

    /// A request no quota covers: settling it does nothing.
    pub(crate) fn empty(
        rt: Arc<RuntimeInner<S>>,
        rules: Arc<RuleSet>,
        downgraded_to: Option<Arc<str>>,
    ) -> Self {
        Reservation {
            rt,
            rules,
            ticket: None,
            held: SmallVec::new(),
            downgraded_to,
            alerts: Vec::new(),
            local: false,
            now_ms: 0,
        }
    }

    /// The model a downgrade serves the request as; `None` when it is
    /// served as asked.
    pub fn downgraded_to(&self) -> Option<&Arc<str>> {
        self.downgraded_to.as_ref()
    }

    pub(crate) fn add_alerts(&mut self, alerts: Vec<Alert>) {
        self.alerts.splice(0..0, alerts);
    }

    /// Thresholds this admission went past: raise the alert metric.
    pub fn alerts(&self) -> &[Alert] {
        &self.alerts
    }

    /// Counted on the local fallback because the shared store was
    /// unreachable.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// No quota covers the request.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The tightest limit (least share remaining) after this admission,
    /// for `x-ratelimit-*` headers on the answer.
    pub fn rate_limit(&self) -> Option<RateLimitInfo> {
        self.held
            .iter()
            .filter(|h| h.max > 0)
            .min_by(|a, b| {
                let left = |h: &Held| (h.max as f64 - h.used as f64) / h.max as f64;
                left(a).total_cmp(&left(b))
            })
            .map(|h| {
                let rule = &self.rules.rules[h.meta.rule as usize];
                RateLimitInfo {
                    limit: h.max,
                    remaining: (h.max as i64 - h.used).max(0) as u64,
                    reset: if h.window.1 == u64::MAX {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(h.window.1.saturating_sub(self.now_ms))
                    },
                    unit: rule.limits[h.meta.limit as usize].name.unit(),
                }
            })
    }

    /// Settles with the real usage: token and cost counters move by
    /// (actual - reserved) in the windows they were reserved in, and the
    /// concurrency slots are freed. After a failed call, pass what the
    /// provider billed (often 0 tokens and 0 cost). Returns the thresholds
    /// the correction went past.
    pub async fn settle(mut self, input_tokens: u64, output_tokens: u64, cost_usd: f64) -> Settled {
        let Some(ticket) = self.ticket.take() else {
            return Settled::default();
        };
        let cost = micro_usd(cost_usd) as i64;
        let deltas: SmallVec<[i64; INLINE]> = self
            .held
            .iter()
            .map(|h| {
                let rule = &self.rules.rules[h.meta.rule as usize];
                let actual = match rule.limits[h.meta.limit as usize].name.unit() {
                    // Requests were counted on admission; slots are freed
                    // by the store.
                    Unit::Requests | Unit::InFlight => return 0,
                    Unit::Tokens => tokens_of(rule.token_kind, input_tokens, output_tokens) as i64,
                    Unit::MicroUsd => cost,
                };
                actual - h.add as i64
            })
            .collect();
        let after = self.rt.store.settle(ticket, &deltas).await;
        let mut settled = Settled::default();
        for ((h, &delta), value) in self.held.iter().zip(&deltas).zip(after) {
            let Some(value) = value else { continue };
            let rule = &self.rules.rules[h.meta.rule as usize];
            let limit_id = rule.limits[h.meta.limit as usize].id;
            self.rt.note(h.counter_id, limit_id, h.window, value);
            if delta > 0 {
                self.rt.crossings(
                    &self.rules,
                    h.meta,
                    h.counter_id,
                    h.window,
                    value - delta,
                    value,
                    &mut settled.alerts,
                );
            }
        }
        settled
    }
}

impl<S: QuotaStore> Drop for Reservation<S> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.rt.store.release(ticket);
        }
    }
}

impl<S: QuotaStore> fmt::Debug for Reservation<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("downgraded_to", &self.downgraded_to)
            .field("limits", &self.held.len())
            .field("local", &self.local)
            .field("settled", &self.ticket.is_none())
            .finish()
    }
}
