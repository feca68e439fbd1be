//! Leader election through a `coordination.k8s.io/v1` Lease.
//!
//! Every replica tries, every `renew` interval, to take or renew the Lease:
//! it creates it when absent, takes it when free (no holder) or expired
//! (`renewTime + leaseDurationSeconds` is past), and renews it when it
//! holds it. Every write is a replace carrying the `resourceVersion` just
//! read, so two replicas racing for an expired Lease cannot both win: the
//! API server answers 409 to the second.
//!
//! The leader may write only until `duration - renew` after the start of
//! its last successful renewal (the renew deadline). Other replicas see the
//! Lease expire `duration` after its `renewTime`, so the old leader has
//! stopped at least one renew interval before anyone else can start, even
//! when its API calls hang. On shutdown the leader gives the Lease up so
//! the next replica takes over at its next attempt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Where the Lease is and how it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's `holderIdentity` (its pod name).
    pub identity: String,
    /// `leaseDurationSeconds`: how long a Lease not renewed stays held.
    /// Whole seconds, at least 1.
    pub duration: Duration,
    /// How often the Lease is renewed, or tried by a standby. Less than
    /// `duration`.
    pub renew: Duration,
}

impl LeaseConfig {
    /// Checks the timings.
    pub fn validate(&self) -> Result<(), String> {
        if self.duration.as_secs() < 1 || self.duration.subsec_nanos() != 0 {
            return Err("the lease duration must be a whole number of seconds, at least 1".into());
        }
        if self.renew.is_zero() || self.renew >= self.duration {
            return Err("the renew interval must be above 0 and below the lease duration".into());
        }
        if self.identity.is_empty() {
            return Err("the identity must not be empty".into());
        }
        Ok(())
    }

    fn renew_deadline(&self) -> Duration {
        self.duration - self.renew
    }
}

/// Whether this replica may write now. Cheap to clone and to ask.
#[derive(Clone, Debug)]
pub struct Leadership {
    /// End of the current term, `None` when not leading.
    until: Arc<Mutex<Option<Instant>>>,
    changes: watch::Receiver<bool>,
}

impl Leadership {
    /// True while this replica holds the Lease and its renew deadline has
    /// not passed: checked right before every write.
    pub fn is_leader(&self) -> bool {
        let until = *self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    /// Flips when this replica gains or loses the Lease.
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.changes.clone()
    }
}

enum Attempt {
    /// This replica holds the Lease as of the attempt's start.
    Held,
    /// Another replica does.
    Other(Option<String>),
}

/// Starts the election loop. It runs until `shutdown` flips, then gives the
/// Lease up if it holds it.
pub fn spawn(
    client: Client,
    cfg: LeaseConfig,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let until = Arc::new(Mutex::new(None));
    let (tx, rx) = watch::channel(false);
    let leadership = Leadership {
        until: until.clone(),
        changes: rx,
    };
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mine = leadership.clone();
    let task = tokio::spawn(async move {
        let set = |value: Option<Instant>| {
            *until.lock().unwrap_or_else(|e| e.into_inner()) = value;
        };
        let mut leading = false;
        let mut warned = false;
        loop {
            let started = Instant::now();
            // An attempt that hangs counts as failed; the term runs out.
            let result = tokio::time::timeout(cfg.renew, attempt(&api, &cfg))
                .await
                .unwrap_or_else(|_| Err(kube::Error::Service("lease request timed out".into())));
            match result {
                Ok(Attempt::Held) => {
                    set(Some(started + cfg.renew_deadline()));
                    warned = false;
                }
                Ok(Attempt::Other(holder)) => {
                    set(None);
                    warned = false;
                    if leading {
                        tracing::warn!(
                            holder = holder.as_deref().unwrap_or(""),
                            "lost the lease to another replica; no more status writes"
                        );
                    }
                }
                // The term in hand runs out on its own at the deadline.
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, lease = cfg.name.as_str(), "lease request failed; retrying");
                        warned = true;
                    }
                }
            }
            let now_leading = mine.is_leader();
            if now_leading != leading {
                leading = now_leading;
                if leading {
                    tracing::info!(identity = cfg.identity.as_str(), "became leader");
                } else {
                    tracing::info!(identity = cfg.identity.as_str(), "no longer leader");
                }
                metrics.leader.set(i64::from(leading));
                let _ = tx.send(leading);
            }
            // Wake at the next attempt, or at the deadline if it comes
            // first, so the flag and the gauge drop on time.
            let mut next = started + cfg.renew;
            if let Some(t) = *until.lock().unwrap_or_else(|e| e.into_inner()) {
                if leading && t < next {
                    next = t;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.changed() => break,
            }
        }
        set(None);
        metrics.leader.set(0);
        let _ = tx.send(false);
        if leading {
            match tokio::time::timeout(cfg.renew, release(&api, &cfg)).await {
                Ok(Ok(())) => tracing::info!("lease released"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not release the lease; it expires on its own")
                }
                Err(_) => tracing::warn!("releasing the lease timed out; it expires on its own"),
            }
        }
    });
    (leadership, task)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_conflict() || s.is_already_exists())
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed
        .0
        .checked_add(SignedDuration::from_secs(secs))
        .map_or(true, |end| end < now)
}

fn duration_secs(cfg: &LeaseConfig) -> i32 {
    i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX)
}

async fn attempt(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<Attempt, kube::Error> {
    let now = Timestamp::now();
    let me = cfg.identity.as_str();
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.to_string()),
                lease_duration_seconds: Some(duration_secs(cfg)),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            Err(e) if is_conflict(&e) => Ok(Attempt::Other(None)),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let mine = holder.as_deref() == Some(me);
    if !mine && holder.is_some() && !expired(spec, now) {
        return Ok(Attempt::Other(holder));
    }
    if !mine {
        spec.holder_identity = Some(me.to_string());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration_secs(cfg));
    // `lease.metadata.resourceVersion` is the one just read: a concurrent
    // writer makes this a 409.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(Attempt::Held),
        Err(e) if is_conflict(&e) => Ok(Attempt::Other(holder)),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up: no holder, so a standby takes it at once.
async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    api.replace(&cfg.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let renewed = Timestamp::now() - SignedDuration::from_secs(renewed_secs_ago);
        LeaseSpec {
            holder_identity: Some("a".into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_expires_after_its_duration() {
        assert!(!expired(&spec(5, 15), Timestamp::now()));
        assert!(expired(&spec(16, 15), Timestamp::now()));
        assert!(expired(&LeaseSpec::default(), Timestamp::now()));
    }

    #[test]
    fn timings_are_checked() {
        let mut cfg = LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "me".into(),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        };
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(cfg.renew_deadline(), Duration::from_secs(10));
        cfg.renew = Duration::from_secs(15);
        assert!(cfg.validate().is_err());
        cfg.renew = Duration::from_millis(500);
        cfg.duration = Duration::from_millis(1500);
        assert!(cfg.validate().is_err());
    }
}
