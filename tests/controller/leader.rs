//! Leader election: one writer among replicas, takeover on shutdown, on a
//! crash, and stepping down on a lost Lease or a lost API server.

use std::time::Instant;

use llmesh_tests::fake_kube::FakeKube;
use llmesh_tests::metric_value;
use serde_json::json;

use super::*;

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over_when_it_stops() {
    let kube = FakeKube::start().await;
    kube.apply_yaml(&route("team", "lost", "x"));
    let (a, b) = two_replicas(&kube).await;
    assert_eq!(holder(&kube).as_deref(), Some("a"));
    until("one event", || {
        Some(events_for(&kube, "lost")).filter(|e| e.len() == 1)
    })
    .await;
    // Let b evaluate a few times: it must stay quiet.
    let before = evaluations(&b).await;
    kube.apply_yaml(&route("team", "second", "y"));
    evaluated_after(&b, before).await;
    until("second event", || {
        Some(events_for(&kube, "second")).filter(|e| e.len() == 1)
    })
    .await;
    assert!(!b.is_leader());
    assert!(kube.events().iter().all(|e| e["reportingInstance"] == "a"));
    let m = metrics(&b).await;
    assert_eq!(metric_value(&m, "llmesh_controller_leader", &[]), Some(0.0));
    assert_eq!(
        metric_value(&metrics(&a).await, "llmesh_controller_leader", &[]),
        Some(1.0)
    );
    let (s, _, _) = Http::new()
        .get(&format!("http://{}/readyz", b.metrics_addr()))
        .await;
    assert_eq!(s, 200, "a synced standby is ready");

    // The leader shuts down and gives the Lease up: b takes over at its
    // next attempt, well within the lease duration.
    let t0 = Instant::now();
    a.shutdown().await;
    until("b leads", || b.is_leader().then_some(())).await;
    let took = t0.elapsed();
    assert!(took < LEASE_DURATION, "took {took:?}");
    assert_eq!(holder(&kube).as_deref(), Some("b"));
    kube.apply_yaml(&route("team", "third", "z"));
    let e = until("b's event", || {
        events_for(&kube, "third").into_iter().next()
    })
    .await;
    assert_eq!(e["reportingInstance"], "b");
    // b found a's work in status: no repeated Events.
    assert_eq!(events_for(&kube, "lost").len(), 1);
    let lease = kube.lease(LEASE_NS, LEASE).unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    b.shutdown().await;
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_once_its_lease_expires() {
    let kube = FakeKube::start().await;
    let (a, b) = two_replicas(&kube).await;
    // Dropping stops every task without giving the Lease up.
    let t0 = Instant::now();
    drop(a);
    until("b leads", || b.is_leader().then_some(())).await;
    let took = t0.elapsed();
    // Not before the lease has expired (its last renewal was at most one
    // renew interval before the crash), and within the lease time plus
    // one attempt.
    assert!(took >= LEASE_DURATION - LEASE_RENEW * 2, "took {took:?}");
    assert!(took < LEASE_DURATION + LEASE_RENEW * 3, "took {took:?}");
    assert_eq!(holder(&kube).as_deref(), Some("b"));
    b.shutdown().await;
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_stops_writing_at_once() {
    let kube = FakeKube::start().await;
    let c = start(&kube, "a").await;
    until("a leads", || c.is_leader().then_some(())).await;

    // Another holder takes the Lease over (as after a long pause of ours).
    let mut lease = kube.lease(LEASE_NS, LEASE).unwrap();
    lease["spec"]["holderIdentity"] = json!("intruder");
    // Its renewTime is the leader's last renewal, a moment ago.
    lease["spec"]["leaseDurationSeconds"] = json!(3600);
    kube.put_lease(lease);
    until("a steps down", || (!c.is_leader()).then_some(())).await;
    let before = evaluations(&c).await;
    kube.apply_yaml(&route("team", "lost", "x"));
    evaluated_after(&c, before).await;
    assert_eq!(kube.status_patch_count(), 0);
    assert!(kube.events().is_empty());
    assert_eq!(
        metric_value(&metrics(&c).await, "llmesh_controller_leader", &[]),
        Some(0.0)
    );
    c.shutdown().await;
    // A standby does not give up a Lease it does not hold.
    assert_eq!(holder(&kube).as_deref(), Some("intruder"));
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_steps_down_before_its_lease_expires() {
    let kube = FakeKube::start().await;
    let c = start(&kube, "a").await;
    until("a leads", || c.is_leader().then_some(())).await;
    let t0 = Instant::now();
    kube.set_down(true);
    until("a steps down", || (!c.is_leader()).then_some(())).await;
    let took = t0.elapsed();
    assert!(took < LEASE_DURATION, "took {took:?}");
    kube.set_down(false);
    until("a leads again", || c.is_leader().then_some(())).await;
    c.shutdown().await;
}
