//! The PostgreSQL backend: migrations under the advisory lock, the log's semantics, positions
//! and the hash chain with several stores appending at once, live tails woken by NOTIFY, and
//! the command line. Each test runs in a database of its own, created here and dropped
//! afterwards. The server is `HEALSTORE_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/test`,
//! trust authentication); an unreachable server fails these tests.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use healstore::{Error, EventFilter, ExpectedVersion, Store, StoreOptions, StreamAppend};
use sqlx::Connection;

use crate::common::{ev, healstore, t0};

mod heal;
mod serve;

fn server() -> String {
    std::env::var("HEALSTORE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database of its own for one test, dropped when the value is.
pub struct PgDb {
    pub url: String,
    name: String,
}

impl PgDb {
    pub async fn new() -> PgDb {
        PgDb::with("").await
    }

    /// A database created with these options of `CREATE DATABASE` (a collation...).
    pub async fn with(options: &str) -> PgDb {
        let name = format!("healstore_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&server())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the PostgreSQL tests need a server at {} (set HEALSTORE_TEST_PG): {e}",
                    server()
                )
            });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} {options}"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
        let base = server();
        let root = base.rsplit_once('/').map(|(r, _)| r).unwrap_or(&base);
        PgDb {
            url: format!("{root}/{name}"),
            name,
        }
    }

    pub async fn connect(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.url).await.unwrap()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // (a runtime of its own: Drop cannot await, and the test's runtime may be ending)
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&server()).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            })
        })
        .join();
    }
}

async fn open(db: &PgDb) -> Store {
    Store::open(&db.url, StoreOptions::default()).await.unwrap()
}

#[tokio::test]
async fn many_stores_opening_a_new_database_at_once_migrate_it_once() {
    let db = PgDb::new().await;
    let opens = (0..6).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move { Store::open(&url, StoreOptions::default()).await })
    });
    let stores: Vec<Store> = futures_util::future::join_all(opens)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    let mut conn = db.connect().await;
    let history: Vec<(i32, String)> =
        sqlx::query_as("SELECT version, name FROM refinery_schema_history ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        history,
        vec![
            (1, "event_log".to_owned()),
            (2, "snapshots_at_rest_and_failures".to_owned()),
            (3, "stream_ids_in_byte_order".to_owned()),
            (4, "payload_fields_beside_nul_escapes".to_owned()),
        ]
    );
    let ready = stores[0].readiness().await.unwrap();
    assert!(ready.ready(), "{ready:?}");
    for s in stores {
        s.close().await.unwrap();
    }
    // Opening again (`init` twice) changes nothing.
    open(&db).await.close().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM refinery_schema_history")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 4);
}

#[tokio::test]
async fn a_database_that_is_not_healstores_is_refused_untouched() {
    let db = PgDb::new().await;
    let mut conn = db.connect().await;
    sqlx::raw_sql("CREATE TABLE orders (id int primary key); INSERT INTO orders VALUES (1)")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = Store::open(&db.url, StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotHealstore { .. }), "{err}");
    assert!(err.to_string().contains("\"orders\""), "{err}");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, vec!["orders".to_owned()]);

    // An empty database is not made healstore's by a store that may not create one.
    let empty = PgDb::new().await;
    let err = Store::open(
        &empty.url,
        StoreOptions {
            create: false,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotHealstore { .. }), "{err}");
}

#[tokio::test]
async fn the_log_is_append_only_idempotent_and_checks_versions_atomically() {
    let db = PgDb::new().await;
    let store = open(&db).await;
    let a = store
        .append(
            "s-1",
            ExpectedVersion::NoStream,
            vec![ev("e1", t0()), ev("e2", t0())],
        )
        .await
        .unwrap();
    assert_eq!(
        a.iter()
            .map(|a| (a.position, a.stream_version))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)]
    );
    // A retry is answered with the stored positions, whatever version it states.
    let again = store
        .append(
            "s-1",
            ExpectedVersion::NoStream,
            vec![ev("e1", t0()), ev("e2", t0())],
        )
        .await
        .unwrap();
    assert!(again.iter().all(|a| a.duplicate));
    assert_eq!(again[1].position, 2);
    // The same id for other content is refused.
    let reused = store.append_one("s-9", ev("e1", t0())).await.unwrap_err();
    assert!(matches!(reused, Error::EventIdReused { .. }), "{reused}");
    // A stale version is refused.
    let stale = store
        .append("s-1", ExpectedVersion::Exact(1), vec![ev("e3", t0())])
        .await
        .unwrap_err();
    assert!(
        matches!(stale, Error::WrongExpectedVersion { actual: 2, .. }),
        "{stale}"
    );
    // An atomic append with one stale part writes none of its parts.
    let atomic = store
        .append_atomic(vec![
            StreamAppend {
                stream_id: "s-2".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![ev("e4", t0())],
            },
            StreamAppend {
                stream_id: "s-1".into(),
                expected: ExpectedVersion::Exact(5),
                events: vec![ev("e5", t0())],
            },
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(atomic, Error::WrongExpectedVersion { .. }),
        "{atomic}"
    );
    assert_eq!(store.stream_version("s-2").await.unwrap(), 0);
    assert!(!store.event_exists("e4").await.unwrap());
    assert_eq!(store.head_position().await.unwrap(), 2);

    // The database itself refuses to rewrite history.
    let mut conn = db.connect().await;
    for sql in [
        "UPDATE events SET payload = '{}' WHERE position = 1",
        "DELETE FROM events WHERE position = 2",
        "TRUNCATE events",
    ] {
        let e = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    let report = store.verify(&Default::default()).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 2);
    store.close().await.unwrap();
}

/// Several stores (as on several hosts) append at once: positions are dense and unique, the
/// chain verifies, and a follower in yet another store sees every event exactly once, in
/// position order, woken by NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_keep_one_order_that_followers_and_the_chain_see() {
    const WRITERS: usize = 4;
    const EACH: usize = 150;
    let db = PgDb::new().await;
    let follower = Store::open(
        &db.url,
        StoreOptions {
            // Long: the follower must be woken by the notifications, not by polling.
            poll_interval: Duration::from_secs(3600),
            page_size: 7,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let mut tail = follower.follow(EventFilter::after(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = open(&db).await;
        writers.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            for i in 0..EACH {
                let id = format!("w{w}-{i}");
                // Streams shared between writers, at any version; and appends in flight.
                let p = store
                    .submit(
                        &format!("s-{}", i % 5),
                        ExpectedVersion::Any,
                        vec![ev(&id, t0())],
                    )
                    .await
                    .unwrap();
                pending.push(p);
                if pending.len() >= 16 {
                    for p in pending.drain(..) {
                        p.await.unwrap();
                    }
                }
            }
            for p in pending {
                p.await.unwrap();
            }
            store.close().await.unwrap();
        }));
    }
    let total = WRITERS * EACH;
    let mut seen = HashSet::new();
    let mut last = 0;
    let read = tokio::time::timeout(Duration::from_secs(120), async {
        while seen.len() < total {
            let e = tail.next().await.unwrap().unwrap();
            assert_eq!(
                e.position,
                last + 1,
                "positions come once, in order, without gaps"
            );
            last = e.position;
            assert!(seen.insert(e.event_id.clone()), "{} twice", e.event_id);
        }
    })
    .await;
    read.expect("the follower saw every event");
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(follower.head_position().await.unwrap(), total as i64);
    // Each stream's versions are dense.
    let mut conn = db.connect().await;
    let bad: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT stream_id, count(*) AS n, MAX(stream_version) AS v \
         FROM events GROUP BY stream_id) t WHERE n <> v",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(bad, 0);
    let report = follower.verify(&Default::default()).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, total as i64);
    drop(tail);
    follower.close().await.unwrap();
}

#[tokio::test]
async fn an_import_is_all_or_nothing_and_the_chain_notices_tampering() {
    let db = PgDb::new().await;
    let store = open(&db).await;
    let mut sink = store.begin_import().await.unwrap();
    for i in 0..1200 {
        let id = format!("i{i}");
        sink.send(i + 1, format!("s-{}", i % 3), ev(&id, t0()))
            .await
            .unwrap();
    }
    let report = sink.finish().await.unwrap();
    assert_eq!(report.imported, 1200);
    assert_eq!(store.head_position().await.unwrap(), 1200);
    let ok = store.verify(&Default::default()).await.unwrap();
    assert!(ok.ok, "{ok:?}");

    // Behind healstore's back, with the trigger disabled: verify names the position.
    let mut conn = db.connect().await;
    sqlx::raw_sql(
        "ALTER TABLE events DISABLE TRIGGER events_refuse_rewrite; \
         UPDATE events SET payload = '{\"n\":\"forged\"}' WHERE position = 700; \
         ALTER TABLE events ENABLE TRIGGER events_refuse_rewrite",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let bad = store.verify(&Default::default()).await.unwrap();
    assert!(!bad.ok);
    assert_eq!(bad.first_problem().unwrap().position, Some(700), "{bad:?}");
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_command_line_selects_postgres_by_url() {
    let db = PgDb::new().await;
    let url = std::path::PathBuf::from(&db.url);
    let run = |args: &[&str], input: Option<&str>| {
        let mut c = healstore(&url);
        c.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            if let Some(text) = input {
                stdin.write_all(text.as_bytes()).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    };
    for _ in 0..2 {
        let init = run(&["init"], None);
        assert!(init.status.success(), "{init:?}");
    }
    let lines = (1..=3)
        .map(|i| {
            format!(
                "{{\"event_id\":\"c{i}\",\"stream_id\":\"cli\",\"event_type\":\"test_happened\",\
                 \"occurred_at\":\"2026-11-01T12:00:0{i}Z\",\"payload\":{{\"i\":{i}}}}}\n"
            )
        })
        .collect::<String>();
    let append = run(&["append"], Some(&lines));
    assert!(append.status.success(), "{append:?}");
    let events = run(&["--format", "json", "events"], None);
    assert!(events.status.success(), "{events:?}");
    let out = String::from_utf8(events.stdout).unwrap();
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("\"event_id\":\"c3\""), "{out}");
    let verify = run(&["verify"], None);
    assert!(verify.status.success(), "{verify:?}");
    let stats = run(&["stats"], None);
    assert_eq!(stats.status.code(), Some(2), "{stats:?}");
    let err = String::from_utf8(stats.stderr).unwrap();
    assert!(
        err.starts_with("healstore: error: not yet available on PostgreSQL: ")
            && err.lines().count() == 1,
        "{err}"
    );
}
