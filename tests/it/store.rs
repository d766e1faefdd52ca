//! The event store through its library API: appends, idempotency, concurrency, reads, tails,
//! migrations and reopening.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Duration;
use futures_util::StreamExt;
use healstore::{
    Error, EventFilter, ExpectedVersion, ManualClock, NewEvent, RecordedEvent, Store, StoreOptions,
};
use sqlx::Connection;

use crate::common::{ev, open, t0, temp_db};

async fn all(store: &Store, filter: EventFilter) -> Vec<RecordedEvent> {
    let mut s = store.read(filter);
    let mut out = Vec::new();
    while let Some(e) = s.next().await {
        out.push(e.unwrap());
    }
    out
}

#[tokio::test]
async fn appending_an_id_again_writes_nothing_and_returns_the_original_position() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let first = store.append_one("s", ev("a", t0())).await.unwrap();
    store.append_one("s", ev("b", t0())).await.unwrap();

    let again = store.append_one("s", ev("a", t0())).await.unwrap();

    assert!(again.duplicate);
    assert_eq!(again.position, first.position);
    assert_eq!(again.stream_version, 1);
    assert_eq!(store.head_position().await.unwrap(), 2);
    // A retry is idempotent whatever version it states: the first attempt was committed.
    let retry = store
        .append("s", ExpectedVersion::NoStream, vec![ev("a", t0())])
        .await
        .unwrap();
    assert_eq!(retry[0].position, first.position);
    store.close().await.unwrap();
}

#[tokio::test]
async fn reusing_an_id_for_different_content_is_an_error() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    store.append_one("s", ev("a", t0())).await.unwrap();

    let other =
        NewEvent::new("test_happened", t0(), serde_json::json!({"n": "different"})).with_id("a");
    let err = store.append_one("s", other).await.unwrap_err();

    assert!(
        matches!(err, Error::EventIdReused { position: 1, .. }),
        "{err}"
    );
    assert_eq!(store.head_position().await.unwrap(), 1);
}

#[tokio::test]
async fn an_append_mixing_stored_and_new_ids_writes_nothing() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    store.append_one("s", ev("a", t0())).await.unwrap();

    let err = store
        .append(
            "s",
            ExpectedVersion::Any,
            vec![ev("a", t0()), ev("b", t0())],
        )
        .await
        .unwrap_err();

    assert!(matches!(err, Error::InvalidEvent(_)), "{err}");
    assert_eq!(store.head_position().await.unwrap(), 1);
}

#[tokio::test]
async fn a_stale_expected_version_is_a_typed_conflict_and_writes_nothing() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    store
        .append(
            "s",
            ExpectedVersion::NoStream,
            vec![ev("a", t0()), ev("b", t0())],
        )
        .await
        .unwrap();

    let err = store
        .append("s", ExpectedVersion::Exact(1), vec![ev("c", t0())])
        .await
        .unwrap_err();
    match err {
        Error::WrongExpectedVersion { stream, actual, .. } => {
            assert_eq!(stream, "s");
            assert_eq!(actual, 2);
        }
        other => panic!("expected a version conflict, got {other}"),
    }
    let err = store
        .append("s", ExpectedVersion::NoStream, vec![ev("d", t0())])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { .. }));
    let err = store
        .append("new", ExpectedVersion::StreamExists, vec![ev("e", t0())])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { .. }));

    let ok = store
        .append("s", ExpectedVersion::Exact(2), vec![ev("c", t0())])
        .await
        .unwrap();
    assert_eq!(ok[0].stream_version, 3);
    assert_eq!(store.head_position().await.unwrap(), 3);
}

#[tokio::test]
async fn concurrent_writers_racing_for_one_version_have_exactly_one_winner() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(
                        "contested",
                        ExpectedVersion::NoStream,
                        vec![ev(&format!("racer-{i}"), t0())],
                    )
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::WrongExpectedVersion { actual: 1, .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.stream_version("contested").await.unwrap(), 1);
}

#[tokio::test]
async fn concurrent_appenders_get_a_total_order_without_gaps() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..40 {
                    let stream = format!("stream-{}", (t + i) % 5);
                    let a = store
                        .append_one(&stream, ev(&format!("t{t}-{i}"), t0()))
                        .await
                        .unwrap();
                    mine.push(a.position);
                }
                mine
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        // Each appender's events are in the order it appended them.
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
        acknowledged.extend(mine);
    }
    acknowledged.sort_unstable();
    assert_eq!(acknowledged, (1..=1280).collect::<Vec<i64>>());

    let events = all(&store, EventFilter::default()).await;
    assert_eq!(events.len(), 1280);
    let mut versions: HashMap<String, u64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, i as i64 + 1);
        let v = versions.entry(e.stream_id.clone()).or_default();
        *v += 1;
        assert_eq!(e.stream_version, *v, "stream versions are dense");
    }
}

#[tokio::test]
async fn reads_by_stream_position_and_time_page_through_everything() {
    let (_dir, path) = temp_db();
    let options = StoreOptions {
        page_size: 7, // small pages: every read below crosses page boundaries
        ..Default::default()
    };
    let store = Store::open(&path, options).await.unwrap();
    for i in 0..50 {
        let mut e = ev(&format!("e{i}"), t0() + Duration::minutes(i));
        if i % 3 == 0 {
            e.event_type = "other_happened".into();
        }
        store
            .append_one(if i % 2 == 0 { "even" } else { "odd" }, e)
            .await
            .unwrap();
    }

    let even = all(&store, EventFilter::stream("even")).await;
    assert_eq!(even.len(), 25);
    assert!(
        even.iter()
            .enumerate()
            .all(|(i, e)| e.stream_version == i as u64 + 1)
    );

    let after = all(
        &store,
        EventFilter {
            up_to_position: Some(30),
            ..EventFilter::after(20)
        },
    )
    .await;
    assert_eq!(
        after.iter().map(|e| e.position).collect::<Vec<_>>(),
        (21..=30).collect::<Vec<_>>()
    );

    // Start inclusive, end exclusive.
    let window = all(
        &store,
        EventFilter::time_range(
            Some(t0() + Duration::minutes(10)),
            Some(t0() + Duration::minutes(20)),
        ),
    )
    .await;
    assert_eq!(window.len(), 10);
    assert_eq!(window[0].occurred_at, t0() + Duration::minutes(10));
    assert_eq!(window[9].occurred_at, t0() + Duration::minutes(19));

    let typed = all(
        &store,
        EventFilter::time_range(Some(t0()), None).with_types(["other_happened"]),
    )
    .await;
    assert_eq!(typed.len(), 17);
    assert!(typed.iter().all(|e| e.event_type == "other_happened"));

    let limited = all(
        &store,
        EventFilter {
            limit: Some(9),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(limited.len(), 9);
}

#[tokio::test]
async fn time_range_reads_come_in_time_order_even_for_historical_events() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    // Appended newest first: occurred_at is the caller's, possibly long ago.
    for i in (0..5).rev() {
        store
            .append_one("s", ev(&format!("e{i}"), t0() - Duration::days(i)))
            .await
            .unwrap();
    }
    let events = all(
        &store,
        EventFilter::time_range(Some(t0() - Duration::days(30)), None),
    )
    .await;
    let times: Vec<_> = events.iter().map(|e| e.occurred_at).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    // In position order they are newest first, and their times were not re-stamped.
    let by_position = all(&store, EventFilter::default()).await;
    assert_eq!(by_position[0].occurred_at, t0() - Duration::days(4));
}

#[tokio::test]
async fn a_live_tail_delivers_events_appended_after_it_started() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    store.append_one("s", ev("before", t0())).await.unwrap();

    let mut tail = store.follow(EventFilter::after(1));
    let writer = store.clone();
    tokio::spawn(async move {
        for i in 0..3 {
            writer
                .append_one("s", ev(&format!("after-{i}"), t0()))
                .await
                .unwrap();
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), tail.next())
            .await
            .expect("the tail delivers within the timeout")
            .unwrap()
            .unwrap();
        seen.push(e.event_id);
    }
    assert_eq!(seen, ["after-0", "after-1", "after-2"]);
}

#[tokio::test]
async fn recorded_at_comes_from_the_injected_clock_and_imports_keep_theirs() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let options = StoreOptions {
        clock: clock.clone(),
        ..Default::default()
    };
    let store = Store::open(&path, options).await.unwrap();
    let historical = t0() - Duration::days(7);
    store.append_one("s", ev("a", historical)).await.unwrap();
    clock.advance(Duration::hours(1));
    let mut imported = ev("b", historical);
    imported.recorded_at = Some(historical + Duration::seconds(1));
    store.append_one("s", imported).await.unwrap();

    let events = all(&store, EventFilter::default()).await;
    assert_eq!(events[0].occurred_at, historical);
    assert_eq!(events[0].recorded_at, t0());
    assert_eq!(events[1].recorded_at, historical + Duration::seconds(1));
}

#[tokio::test]
async fn unknown_event_types_and_versions_read_back_as_data() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let mut future = NewEvent::new(
        "failure_detected",
        t0(),
        serde_json::json!({"shape": "from a newer healstore"}),
    );
    future.schema_version = 7;
    store.append_one("s", future).await.unwrap();
    store
        .append_one(
            "s",
            NewEvent::new("never_heard_of", t0(), serde_json::json!({"x": 1})),
        )
        .await
        .unwrap();

    let events = all(&store, EventFilter::default()).await;
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.decode().is_none()));
    assert_eq!(events[0].payload["shape"], "from a newer healstore");
}

#[tokio::test]
async fn invalid_events_are_refused_before_anything_is_written() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let cases = [
        ev("", t0()),
        NewEvent::new("test_happened", t0(), serde_json::json!([1, 2])),
        NewEvent::new(
            "failure_detected",
            t0(),
            serde_json::json!({"no": "failure_id"}),
        ),
        NewEvent::new("", t0(), serde_json::json!({})),
        ev(&"x".repeat(300), t0()),
    ];
    for bad in cases {
        let err = store.append_one("s", bad).await.unwrap_err();
        assert!(matches!(err, Error::InvalidEvent(_)), "{err}");
    }
    let err = store.append_one("", ev("a", t0())).await.unwrap_err();
    assert!(matches!(err, Error::InvalidEvent(_)));
    assert_eq!(store.head_position().await.unwrap(), 0);
}

#[tokio::test]
async fn an_import_is_all_or_nothing() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    store.append_one("s", ev("existing", t0())).await.unwrap();

    let mut sink = store.begin_import().await.unwrap();
    for i in 0..1500 {
        sink.send(i + 1, "s".into(), ev(&format!("i{i}"), t0()))
            .await
            .unwrap();
    }
    // Line 1501 reuses an id with different content: the whole import must roll back.
    let clash =
        NewEvent::new("test_happened", t0(), serde_json::json!({"other": true})).with_id("i3");
    let _ = sink.send(1501, "s".into(), clash).await;
    let err = sink.finish().await.unwrap_err();
    assert!(err.to_string().contains("line 1501"), "{err}");
    assert_eq!(store.head_position().await.unwrap(), 1);

    // The writer is still healthy afterwards, and a clean import commits.
    let mut sink = store.begin_import().await.unwrap();
    for i in 0..3 {
        sink.send(i + 1, "t".into(), ev(&format!("j{i}"), t0()))
            .await
            .unwrap();
    }
    sink.send(4, "s".into(), ev("existing", t0()))
        .await
        .unwrap();
    let report = sink.finish().await.unwrap();
    assert_eq!((report.imported, report.duplicates), (3, 1));
    assert_eq!(store.head_position().await.unwrap(), 4);
}

#[tokio::test]
async fn reopening_keeps_every_event_and_the_position_counter() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    for i in 0..10 {
        store
            .append_one("s", ev(&format!("e{i}"), t0()))
            .await
            .unwrap();
    }
    let before = all(&store, EventFilter::default()).await;
    store.close().await.unwrap();

    let store = open(&path).await;
    let after = all(&store, EventFilter::default()).await;
    assert_eq!(before, after);
    let next = store.append_one("s", ev("e10", t0())).await.unwrap();
    assert_eq!((next.position, next.stream_version), (11, 11));
}

#[tokio::test]
async fn appends_after_close_fail_cleanly() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let other_handle = store.clone();
    store.close().await.unwrap();
    let err = other_handle
        .append_one("s", ev("late", t0()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed), "{err}");
}

#[tokio::test]
async fn opening_twice_migrates_once_and_a_newer_schema_is_refused() {
    let (_dir, path) = temp_db();
    open(&path).await.close().await.unwrap();
    open(&path).await.close().await.unwrap();

    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM refinery_schema_history")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, healstore::SCHEMA_VERSION);
    sqlx::query(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let err = Store::open(&path, StoreOptions::default())
        .await
        .unwrap_err();
    match err {
        Error::SchemaTooNew { found, supported } => {
            assert_eq!(found, 999);
            assert_eq!(supported, healstore::SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other}"),
    }
}

#[tokio::test]
async fn the_log_refuses_updates_and_deletes() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    store.append_one("s", ev("a", t0())).await.unwrap();
    store.close().await.unwrap();

    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for sql in [
        "UPDATE events SET payload = '{}' WHERE position = 1",
        "DELETE FROM events WHERE position = 1",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
}

#[tokio::test]
async fn an_atomic_append_across_streams_commits_all_parts_or_none() {
    use healstore::StreamAppend;
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    store.append_one("b", ev("b0", t0())).await.unwrap();
    let part = |stream: &str, expected, id: &str| StreamAppend {
        stream_id: stream.into(),
        expected,
        events: vec![ev(id, t0())],
    };

    // The second part's expectation is stale: the first part must not be written either.
    let err = store
        .append_atomic(vec![
            part("a", ExpectedVersion::NoStream, "a1"),
            part("b", ExpectedVersion::NoStream, "b1"),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { .. }), "{err}");
    assert_eq!(store.stream_version("a").await.unwrap(), 0);
    assert_eq!(store.head_position().await.unwrap(), 1);

    let ok = store
        .append_atomic(vec![
            part("a", ExpectedVersion::NoStream, "a1"),
            part("b", ExpectedVersion::Exact(1), "b1"),
        ])
        .await
        .unwrap();
    assert_eq!(
        ok.iter()
            .map(|a| (a.position, a.stream_version))
            .collect::<Vec<_>>(),
        [(2, 1), (3, 2)]
    );
}

/// A size-limited database file (SQLite's own "database or disk is full"): the append that does
/// not fit fails with `DiskFull` and writes nothing, every acknowledged event stays, the store
/// still answers reads, and appending resumes once the limit is lifted.
#[tokio::test]
async fn a_full_database_file_refuses_appends_cleanly_and_resumes_when_space_returns() {
    let (_dir, path) = temp_db();
    open(&path).await.close().await.unwrap();
    let mut c = crate::common::raw_connection(&path).await;
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let capped = |pages: u32| healstore::StoreOptions {
        max_pages: Some(pages),
        ..healstore::StoreOptions::default()
    };
    let store = healstore::Store::open(&path, capped(pages as u32 + 40))
        .await
        .unwrap();
    let big = "x".repeat(2000);
    let mut acknowledged = Vec::new();
    let mut full = None;
    for i in 0..2000 {
        let e = healstore::NewEvent::new("note", t0(), serde_json::json!({"i": i, "pad": big}))
            .with_id(format!("n-{i}"));
        match store
            .append(&format!("s-{}", i % 5), ExpectedVersion::Any, vec![e])
            .await
        {
            Ok(a) => acknowledged.push((format!("n-{i}"), a[0].position)),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("the cap is reached");
    assert!(matches!(err, Error::DiskFull(_)), "{err:?}");
    assert!(err.to_string().contains("full"), "{err}");
    assert!(acknowledged.len() > 10, "{}", acknowledged.len());
    // The store still answers reads.
    assert_eq!(
        store.head_position().await.unwrap(),
        acknowledged.last().unwrap().1
    );
    store.close().await.unwrap();

    // Space returns: the same file, no cap.
    let store = open(&path).await;
    for (id, position) in &acknowledged {
        assert!(
            store.event_exists(id).await.unwrap(),
            "{id} at {position} lost"
        );
    }
    let a = store
        .append("s-0", ExpectedVersion::Any, vec![ev("after", t0())])
        .await
        .unwrap();
    assert_eq!(a[0].position, acknowledged.last().unwrap().1 + 1);
    let report = store
        .verify(&healstore::VerifyOptions::default())
        .await
        .unwrap();
    assert!(report.ok, "{:?}", report.first_problem());
    store.close().await.unwrap();
    assert_eq!(crate::common::integrity_check(&path).await, "ok");
}

#[tokio::test]
async fn two_stores_on_one_file_see_each_others_stream_versions() {
    // Given two stores on one file, each with its own writer (as two processes would have),
    let (_dir, path) = temp_db();
    let a = open(&path).await;
    let b = open(&path).await;
    // when they take turns appending to one stream, each stating the version it expects,
    for n in 0..20u64 {
        let (writer, other) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let appended = writer
            .append(
                "shared",
                ExpectedVersion::Exact(n),
                vec![ev(&format!("e{n}"), t0())],
            )
            .await
            .unwrap();
        // then each append lands on the version after the other writer's last one,
        assert_eq!(appended[0].stream_version, n + 1);
        // and a writer that states a version the other has already taken is refused, even
        // though the stream was at that version when it last appended itself.
        let stale = other
            .append(
                "shared",
                ExpectedVersion::Exact(n.saturating_sub(1)),
                vec![ev(&format!("stale{n}"), t0())],
            )
            .await;
        assert!(
            matches!(stale, Err(Error::WrongExpectedVersion { actual, .. }) if actual == n + 1),
            "{stale:?}"
        );
    }
    assert_eq!(a.stream_version("shared").await.unwrap(), 20);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn two_stores_taking_turns_on_their_own_streams_keep_positions_dense_and_the_chain_whole() {
    // Given two stores on one file, each appending to streams only it writes (so that each
    // one's cached versions stay right, and only the log's head moves behind its back),
    let (_dir, path) = temp_db();
    let a = open(&path).await;
    let b = open(&path).await;
    // when they take turns, each appending to a stream it has appended to before,
    for n in 0..30u64 {
        let (writer, name) = if n % 3 == 0 { (&b, "b") } else { (&a, "a") };
        let stream = format!("{name}-{}", n % 2);
        let appended = writer
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![ev(&format!("e{n}"), t0())],
            )
            .await
            .unwrap();
        // then every append lands right after the other's,
        assert_eq!(appended[0].position, n as i64 + 1, "append {n}");
    }
    // and the log is dense, its streams numbered without gaps, and its hash chain verifies.
    let log = all(&a, EventFilter::default()).await;
    assert_eq!(log.len(), 30);
    crate::common::assert_log_invariants(&log);
    let report = b.verify(&Default::default()).await.unwrap();
    assert!(report.ok, "{report:?}");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_failure_detected_twice_is_stored_twice_and_counted_once_in_the_read_model() {
    // Given a store (its writer warmed up on the failure's stream),
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let detected = |id: &str, minute: i64| {
        NewEvent::new(
            "failure_detected",
            t0() + Duration::minutes(minute),
            serde_json::json!({
                "failure_id": "f1", "failure_type": "timeout", "severity": "high", "agent_id": "a"
            }),
        )
        .with_id(id)
    };
    store
        .append_one("other", ev("warm-up", t0()))
        .await
        .unwrap();
    // when the same failure is detected twice, by separate appends and then in one group with
    // other events (the read model's trigger ignores the second detection),
    store
        .append_one("failure-f1", detected("d1", 0))
        .await
        .unwrap();
    store
        .append_one("failure-f1", detected("d2", 1))
        .await
        .unwrap();
    let mut pending = Vec::new();
    for (stream, event) in [
        ("other", ev("x", t0())),
        ("failure-f1", detected("d3", 2)),
        ("other", ev("y", t0())),
    ] {
        pending.push(
            store
                .submit(stream, ExpectedVersion::Any, vec![event])
                .await
                .unwrap(),
        );
    }
    for p in pending {
        p.await.unwrap();
    }
    // then every event is stored, in order,
    let log = all(&store, EventFilter::default()).await;
    let ids: Vec<&str> = log.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["warm-up", "d1", "d2", "x", "d3", "y"]);
    store.close().await.unwrap();
    // and the read model holds the failure once, as first detected.
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT failure_id, position FROM failures")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, [("f1".to_owned(), 2)]);
}

#[tokio::test]
async fn a_retry_queued_among_new_appends_is_answered_and_the_new_ones_are_written() {
    // Given a store holding event "a",
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let first = store.append_one("s", ev("a", t0())).await.unwrap();
    // when its retry is queued between new appends (so that they may share a group commit),
    let mut pending = Vec::new();
    for id in ["b", "a", "c"] {
        pending.push(
            store
                .submit("s", ExpectedVersion::Any, vec![ev(id, t0())])
                .await
                .unwrap(),
        );
    }
    let mut answers = Vec::new();
    for p in pending {
        answers.push(p.await.unwrap().remove(0));
    }
    // then the retry gets the original position, and the new events are written after it.
    assert!(answers[1].duplicate);
    assert_eq!(answers[1].position, first.position);
    assert!(!answers[0].duplicate && !answers[2].duplicate);
    assert_eq!(
        (answers[0].stream_version, answers[2].stream_version),
        (2, 3)
    );
    assert_eq!(store.head_position().await.unwrap(), 3);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_a_steady_stream_of_appends() {
    // Given a store,
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    // when 64 appenders write 16,000 events to their own streams without pause (about 9 KB
    // of WAL per event when every group touches every stream's index pages: about 140 MB if
    // the WAL never started over),
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..250 {
                    let e = NewEvent::new(
                        "test_happened",
                        t0(),
                        serde_json::json!({"agent_id": format!("agent-{w}"), "n": n}),
                    );
                    store
                        .append(&format!("agent-{w}"), ExpectedVersion::Any, vec![e])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut largest = 0;
    let mut done = 0;
    for t in tasks {
        t.await.unwrap();
        done += 1;
        if done % 8 == 0 {
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
    }
    largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    // then the WAL started over along the way and never grew past a few restarts' worth.
    assert_eq!(store.head_position().await.unwrap(), 16_000);
    assert!(
        largest < 48 * 1024 * 1024,
        "the WAL reached {largest} bytes"
    );
    store.close().await.unwrap();
}

/// Events every path must refuse, each with the words its error names: values that would
/// overflow a read model's sums, oversized ids, unknown fields in a known payload, times that
/// RFC 3339 cannot write.
pub fn out_of_range_events() -> Vec<(&'static str, NewEvent, &'static str)> {
    use serde_json::json;
    let typed = |ty: &str, payload: serde_json::Value| NewEvent::new(ty, t0(), payload);
    let completed = |duration: serde_json::Value| {
        typed(
            "healing_completed",
            json!({"failure_id": "f", "strategy": "AgentRestart", "success": true,
                   "duration_ms": duration}),
        )
    };
    let long = "a".repeat(healstore::event::MAX_ID_LEN + 1);
    let mut far_future = ev("far-future", t0());
    far_future.occurred_at = chrono::DateTime::from_timestamp(260_000_000_000, 0).unwrap();
    let mut recorded_far = ev("recorded-far", t0());
    recorded_far.recorded_at = Some(far_future.occurred_at);
    vec![
        (
            "a healing duration that overflows a sum",
            completed(json!(6_000_000_000_000_000_000i64)),
            "duration_ms is 6000000000000000000",
        ),
        (
            "the largest healing duration",
            completed(json!(i64::MAX)),
            "between 0 and 31536000000",
        ),
        (
            "a negative healing duration",
            completed(json!(-1)),
            "duration_ms is -1",
        ),
        (
            "an action duration over a year",
            typed(
                "action_executed",
                json!({"strategy": "AgentRestart", "action": "restart_agent", "success": true,
                       "duration_ms": 31_536_000_001i64}),
            ),
            "duration_ms is 31536000001",
        ),
        (
            "a prediction window that overflows its end time",
            typed(
                "prediction_made",
                json!({"prediction_id": "p", "failure_type": "agent_down", "probability": 0.9,
                       "source": "sequence", "basis": "b", "expected_at": "x",
                       "expected_by": "y", "expected_in_ms": 0,
                       "window_ms": 9_000_000_000_000_000i64, "recommended_action": "r"}),
            ),
            "window_ms is 9000000000000000",
        ),
        (
            "a negative usage",
            typed(
                "resource_usage_reported",
                json!({"resource_type": "memory", "current_usage": -1.0, "limit": 10.0}),
            ),
            "not a valid measurement",
        ),
        (
            "an agent id over 256 bytes in a known payload",
            typed(
                "failure_detected",
                json!({"failure_id": "f", "failure_type": "agent_down", "severity": "high",
                       "agent_id": long}),
            ),
            "agent_id is 257 bytes long; at most 256",
        ),
        (
            "an agent id over 256 bytes in a payload of any type (it is indexed)",
            typed("custom_fact", json!({"agent_id": long})),
            "agent_id is 257 bytes long; at most 256",
        ),
        (
            "an empty failure type in a known payload",
            typed(
                "failure_resolved",
                json!({"failure_id": "f", "failure_type": "",
                       "detected_at": "2026-11-01T12:00:00Z"}),
            ),
            "failure_type must not be empty",
        ),
        (
            "an unknown field in a known payload",
            typed(
                "agent_succeeded",
                json!({"agent_id": "a-1", "colour": "red"}),
            ),
            "unknown field `colour`",
        ),
        (
            "an occurred_at after the year 9999",
            far_future,
            "outside the years 0000 to 9999",
        ),
        (
            "a recorded_at after the year 9999",
            recorded_far,
            "outside the years 0000 to 9999",
        ),
    ]
}

#[tokio::test]
async fn appends_and_imports_refuse_values_that_would_overflow_and_oversized_fields() {
    // Given a store,
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    for (what, event, needle) in out_of_range_events() {
        // each bad event is refused by an append, with an error naming the problem,
        let err = store.append_one("s", event.clone()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidEvent(_)), "{what}: {err}");
        assert!(err.to_string().contains(needle), "{what}: {err}");
        // and by an import, with the same error,
        let mut sink = store.begin_import().await.unwrap();
        let sent = sink.send(1, "s".into(), event).await;
        let same = sent.expect_err(what);
        assert_eq!(same.to_string(), err.to_string(), "{what}");
        sink.abort().await;
    }
    // and nothing was written.
    assert_eq!(store.head_position().await.unwrap(), 0);
    // The bounds themselves are accepted.
    let at_most = NewEvent::new(
        "healing_completed",
        t0(),
        serde_json::json!({"failure_id": "f", "strategy": "AgentRestart", "success": true,
                           "duration_ms": healstore::events::MAX_DURATION_MS}),
    );
    store.append_one("s", at_most).await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test]
async fn events_of_unknown_schema_versions_are_stored_and_skipped_by_the_read_models() {
    use healstore::analytics::{Analytics, read_model_digests};
    // Given a store,
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let detected = |id: &str, version: u32| {
        let mut e = NewEvent::new(
            "failure_detected",
            t0(),
            serde_json::json!({"failure_id": id, "failure_type": "agent_down",
                               "severity": "high"}),
        );
        e.schema_version = version;
        e
    };
    // when events of versions the read models do not know are appended among known ones
    // (a pattern whose support is text, a healing result whose duration overflows, a failure
    // of another version),
    let mut pattern = NewEvent::new(
        "pattern_learned",
        t0(),
        serde_json::json!({"pattern_id": "p-2", "kind": "sequence", "support": "many",
                           "confidence": "high"}),
    );
    pattern.schema_version = 2;
    let mut completed = NewEvent::new(
        "healing_completed",
        t0(),
        serde_json::json!({"failure_id": "f-1", "strategy": "AgentRestart", "success": true,
                           "duration_ms": i64::MAX}),
    );
    completed.schema_version = 2;
    store
        .append_one("failure-f-1", detected("f-1", 1))
        .await
        .unwrap();
    store.append_one("patterns", pattern).await.unwrap();
    store
        .append_one("failure-f-1", completed.clone())
        .await
        .unwrap();
    completed.event_id = "again".into();
    store.append_one("failure-f-1", completed).await.unwrap();
    store
        .append_one("failure-f-2", detected("f-2", 3))
        .await
        .unwrap();
    // then every one is stored,
    assert_eq!(store.head_position().await.unwrap(), 5);
    // the read models hold only what the known versions say,
    let mut conn = crate::common::raw_connection(&path).await;
    let failures: Vec<(String, i64)> =
        sqlx::query_as("SELECT failure_id, results FROM failures ORDER BY position")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(failures, [("f-1".to_owned(), 0)]);
    let (patterns, healings): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM patterns), (SELECT COUNT(*) FROM healing_hourly)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((patterns, healings), (0, 0));
    conn.close().await.unwrap();
    // the analytics over the hour work,
    let a = Analytics::new(&store);
    let window = healstore::Window::new(t0(), t0() + Duration::hours(1)).unwrap();
    let s = a.stats(&window).await.unwrap();
    assert_eq!((s.total_failures, s.total_healings), (1, 0));
    // and a rebuild gives the same read models.
    let before = read_model_digests(store.read_pool()).await.unwrap();
    a.rebuild().await.unwrap();
    assert_eq!(read_model_digests(store.read_pool()).await.unwrap(), before);
    store.close().await.unwrap();
}

/// Installs a trigger that refuses events with this id, as a read model's trigger or a
/// constraint refuses an event it cannot take.
pub async fn refuse_event_id(path: &std::path::Path, id: &str) {
    let mut conn = crate::common::raw_connection(path).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TRIGGER test_refuses_{id} BEFORE INSERT ON events WHEN NEW.event_id = '{id}' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test''s trigger'); END"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_fails_alone_and_the_rest_of_its_group_commits() {
    // Given a store whose database refuses one event id (on insert, as a trigger would),
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    store.append_one("warm-up", ev("w", t0())).await.unwrap();
    refuse_event_id(&path, "bad").await;
    // when many appends are queued at once (so that they share group commits), the refused
    // one among them,
    let mut pending = Vec::new();
    for i in 0..64 {
        let id = if i == 20 {
            "bad".to_owned()
        } else {
            format!("ok-{i}")
        };
        let stream = format!("s-{}", i % 4);
        pending.push((
            id.clone(),
            store
                .submit(&stream, ExpectedVersion::Any, vec![ev(&id, t0())])
                .await
                .unwrap(),
        ));
    }
    let mut stored = Vec::new();
    for (id, p) in pending {
        match p.await {
            Ok(a) => stored.push(a[0].event_id.clone()),
            Err(e) => {
                // then only that one fails, with the database's reason,
                assert_eq!(id, "bad", "{id}: {e}");
                assert!(e.to_string().contains("refused by the test"), "{e}");
            }
        }
    }
    // and every other one is committed and acknowledged, in a dense, chained log.
    assert_eq!(stored.len(), 63, "{stored:?}");
    let log = all(&store, EventFilter::default()).await;
    assert_eq!(log.len(), 64);
    assert!(log.iter().all(|e| e.event_id != "bad"));
    crate::common::assert_log_invariants(&log);
    store.close().await.unwrap();
}

fn part(stream: &str, expected: ExpectedVersion, id: &str) -> healstore::StreamAppend {
    healstore::StreamAppend {
        stream_id: stream.into(),
        expected,
        events: vec![ev(id, t0())],
    }
}

#[tokio::test]
async fn an_append_decided_after_one_that_is_not_stored_is_not_stored_either() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    // Queued together (one group, most likely): a refused append, one decided after it, one
    // decided after nothing, and one decided after an append that is stored.
    let refused = store
        .submit_atomic(vec![part("s", ExpectedVersion::Exact(5), "a")])
        .await
        .unwrap();
    let stored = store
        .submit_atomic(vec![part("t", ExpectedVersion::NoStream, "b")])
        .await
        .unwrap();
    let dependent = store
        .submit_atomic_after(
            vec![part("u", ExpectedVersion::Any, "c")],
            vec![refused.ticket()],
        )
        .await
        .unwrap();
    let chained = store
        .submit_atomic_after(
            vec![part("u", ExpectedVersion::Any, "d")],
            vec![dependent.ticket()],
        )
        .await
        .unwrap();
    let independent = store
        .submit_atomic_after(
            vec![part("u", ExpectedVersion::Any, "e")],
            vec![stored.ticket()],
        )
        .await
        .unwrap();
    let refused_ticket = refused.ticket();
    let dependent_ticket = dependent.ticket();
    assert!(matches!(
        refused.await,
        Err(Error::WrongExpectedVersion { .. })
    ));
    assert!(stored.await.is_ok());
    match dependent.await {
        Err(e @ Error::DependencyFailed { ticket }) => {
            assert_eq!(ticket, refused_ticket);
            assert_eq!(e.kind(), healstore::ErrorKind::Conflict);
        }
        other => panic!("expected a failed dependency, got {other:?}"),
    }
    assert!(
        matches!(chained.await, Err(Error::DependencyFailed { ticket }) if ticket == dependent_ticket),
        "a dependency of a dependency that failed fails too"
    );
    assert_eq!(independent.await.unwrap()[0].stream_version, 1);

    // Queued after the refusal was answered: the writer still knows it.
    let later = store
        .submit_atomic_after(
            vec![part("u", ExpectedVersion::Any, "f")],
            vec![refused_ticket],
        )
        .await
        .unwrap();
    assert!(matches!(later.await, Err(Error::DependencyFailed { .. })));
    let ids: Vec<String> = all(&store, EventFilter::default())
        .await
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        ids,
        ["b", "e"],
        "only the appends not depending on a refusal"
    );
}

/// The writer presumes that a stream an append creates (expecting no stream) is new, rather
/// than looking it up: a stream that exists (stored before this store opened, by another
/// store on the same file, or whose events are archived) must still refuse the append.
#[tokio::test]
async fn creating_a_stream_that_exists_is_refused_whatever_the_writer_remembers() {
    let (dir, path) = temp_db();
    let hour = Duration::hours(1);
    let store = open(&path).await;
    store
        .append("gone", ExpectedVersion::NoStream, vec![ev("g1", t0())])
        .await
        .unwrap();
    let old = store
        .append(
            "old",
            ExpectedVersion::NoStream,
            vec![ev("o1", t0() + hour)],
        )
        .await
        .unwrap();
    store.close().await.unwrap();

    let store = open(&path).await;
    // The first append looks the log up; the next ones rely on what the writer remembers.
    store
        .append_one("warm", ev("w1", t0() + hour))
        .await
        .unwrap();
    let err = store
        .append(
            "old",
            ExpectedVersion::NoStream,
            vec![ev("o2", t0() + hour)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::WrongExpectedVersion { actual: 1, .. }),
        "{err}"
    );
    // A retry of the stored append is still answered with its position.
    let retry = store
        .append(
            "old",
            ExpectedVersion::NoStream,
            vec![ev("o1", t0() + hour)],
        )
        .await
        .unwrap();
    assert!(retry[0].duplicate);
    assert_eq!(retry[0].position, old[0].position);

    // Another store on the same file creates a stream this writer has never seen.
    let other = open(&path).await;
    other
        .append(
            "theirs",
            ExpectedVersion::NoStream,
            vec![ev("t1", t0() + hour)],
        )
        .await
        .unwrap();
    let err = store
        .append(
            "theirs",
            ExpectedVersion::NoStream,
            vec![ev("t2", t0() + hour)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::WrongExpectedVersion { actual: 1, .. }),
        "{err}"
    );
    other.close().await.unwrap();

    // "gone" is archived: no row of it is left in the log.
    let report = store
        .archive(
            t0() + Duration::minutes(30),
            &dir.path().join("a.gz"),
            t0() + hour,
        )
        .await
        .unwrap()
        .expect("something to archive");
    assert_eq!(report.events, 1);
    store
        .append_one("warm", ev("w2", t0() + hour))
        .await
        .unwrap();
    let err = store
        .append(
            "gone",
            ExpectedVersion::NoStream,
            vec![ev("g2", t0() + hour)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::WrongExpectedVersion { actual: 1, .. }),
        "{err}"
    );
    let next = store
        .append(
            "gone",
            ExpectedVersion::Exact(1),
            vec![ev("g2", t0() + hour)],
        )
        .await
        .unwrap();
    assert_eq!(next[0].stream_version, 2);
    store.close().await.unwrap();
}
