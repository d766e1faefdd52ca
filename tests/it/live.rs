//! Live subscriptions to the log: from a position, resumed after a drop, never skipping or
//! repeating an event, however slow the subscriber.

use std::time::Duration;

use futures_util::StreamExt;
use healstore::live::LiveLog;
use healstore::{ExpectedVersion, Store, StoreOptions};

use crate::common::{ev, read_all, t0, temp_db};

async fn append_n(store: &Store, from: usize, n: usize) {
    for i in from..from + n {
        store
            .append(
                &format!("s-{}", i % 7),
                ExpectedVersion::Any,
                vec![ev(&format!("e-{i}"), t0())],
            )
            .await
            .unwrap();
    }
}

/// Reads `n` events from a subscription, with a deadline (a missing event fails the test
/// rather than hanging it).
async fn take(
    sub: &mut (
             impl futures_util::Stream<
        Item = healstore::Result<std::sync::Arc<healstore::live::LiveEvent>>,
    > + Unpin
         ),
    n: usize,
) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("an event within the deadline")
            .expect("the stream goes on")
            .unwrap();
        let line: serde_json::Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(line["position"], e.position);
        assert_eq!(line["event_type"], e.event_type.as_str());
        out.push((e.position, line["event_id"].as_str().unwrap().to_owned()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_dropped_and_resumed_sees_every_event_once_while_appends_go_on() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, StoreOptions::default()).await.unwrap();
    append_n(&store, 0, 50).await;
    let live = LiveLog::new(&store);

    // From position 10: the log's events, then new ones as they come.
    let mut sub = live.subscribe(10).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { append_n(&store, 50, 300).await })
    };
    let mut seen = take(&mut sub, 100).await;
    drop(sub);
    // Resumed after the last one seen, while appends go on.
    let last = seen.last().unwrap().0;
    let mut sub = live.subscribe(last).await.unwrap();
    writer.await.unwrap();
    seen.extend(take(&mut sub, 350 - 10 - 100).await);

    let log: Vec<(i64, String)> = read_all(&path)
        .await
        .into_iter()
        .filter(|e| e.position > 10)
        .map(|e| (e.position, e.event_id))
        .collect();
    assert_eq!(seen, log, "exactly the log's events after 10, in order");
    // Nothing more than the log holds.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err()
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_the_ring_reads_the_log_and_misses_nothing() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, StoreOptions::default()).await.unwrap();
    let live = LiveLog::with_ring(&store, 4);
    let mut slow = live.subscribe(0).await.unwrap();
    let mut fast = live.subscribe(0).await.unwrap();
    append_n(&store, 0, 5).await;
    // The fast one keeps up; the slow one reads nothing while 200 events pass a ring of 4.
    let mut fast_seen = take(&mut fast, 5).await;
    let mut slow_seen = take(&mut slow, 5).await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { append_n(&store, 5, 195).await })
    };
    fast_seen.extend(take(&mut fast, 195).await);
    writer.await.unwrap();
    slow_seen.extend(take(&mut slow, 195).await);
    let log: Vec<(i64, String)> = read_all(&path)
        .await
        .into_iter()
        .map(|e| (e.position, e.event_id))
        .collect();
    assert_eq!(slow_seen, log);
    assert_eq!(fast_seen, log);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_appends_reach_a_subscriber() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, StoreOptions::default()).await.unwrap();
    append_n(&store, 0, 3).await;
    let live = LiveLog::new(&store);
    let mut sub = live.subscribe(3).await.unwrap();
    let line = crate::common::test_line("other-1", "s-other", 1);
    let out = crate::common::run_with_input(&path, &["append"], format!("{line}\n").as_bytes());
    crate::common::expect_success(&out);
    let got = take(&mut sub, 1).await;
    assert_eq!(got, vec![(4, "other-1".to_owned())]);
    assert!(live.subscribe(-1).await.is_err());
    store.close().await.unwrap();
}
