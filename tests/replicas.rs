//! Read replicas, on a real streaming replica: a private primary (`initdb`)
//! and a replica of it (`pg_basebackup -R`), each in its own directory on a
//! spare port, owned by the test. Checks that reads that may go to a
//! replica reach it (and only a server in recovery), that a replica whose
//! replay is paused is left once its lag passes the bound and used again
//! after it catches up, that stopping it under load loses no read, that a
//! store reads its own writes with replay paused, and that the pool state
//! and the metrics say which server served what.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::private_pg::{PrivatePg, StopMode};
use dreamnet_db::telemetry;
use dreamnet_db::{
    Event, EventFilter, EventSearch, EventType, NewEvent, NewUser, Period, PoolState,
    ReplicaStatus, Store, TimeBucket, TimeRange,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;
use uuid::Uuid;

/// A primary with the crate's schema in database `app`, and a streaming
/// replica of it.
struct Pair {
    primary: PrivatePg,
    replica: PrivatePg,
}

impl Pair {
    async fn new() -> Option<Pair> {
        let primary = PrivatePg::started(&["wal_level = replica"]).await?;
        let url = primary.create_database("app").await;
        Store::builder()
            .database_url(url)
            .max_connections(1)
            .run_migrations(true)
            .connect()
            .await
            .expect("migrate the private primary");
        let replica = PrivatePg::replica_of(&primary).await?;
        Some(Pair { primary, replica })
    }

    fn primary_url(&self) -> String {
        self.primary.url("postgres", None, "app")
    }

    fn replica_url(&self) -> String {
        self.replica.url("postgres", None, "app")
    }

    /// A store on the primary with the replica, measuring every 50 ms.
    async fn store(&self, max_lag: Duration) -> Store {
        Store::builder()
            .database_url(self.primary_url())
            .replica_url(self.replica_url())
            .max_connections(3)
            .max_replica_lag(max_lag)
            .replica_poll_interval(Duration::from_millis(50))
            .connect()
            .await
            .expect("connect with a replica")
    }

    /// A store on the primary alone: another service's writes.
    async fn writer(&self) -> Store {
        Store::builder()
            .database_url(self.primary_url())
            .max_connections(2)
            .connect()
            .await
            .expect("connect to the primary")
    }

    async fn replica_sql(&self, sql: &str) {
        let client = self.replica.admin().await;
        client.batch_execute(sql).await.unwrap();
    }

    /// Waits until the replica has replayed everything the primary has
    /// written so far (its insert position, less a page header the
    /// position may point past).
    async fn caught_up(&self) {
        let primary = self.primary.admin().await;
        let row = primary
            .query_one(
                "SELECT (CASE \
                   WHEN (l - '0/0'::pg_lsn) % 16777216 = 40 THEN l - 40 \
                   WHEN (l - '0/0'::pg_lsn) % 8192 = 24 THEN l - 24 \
                   ELSE l END)::text \
                 FROM pg_current_wal_insert_lsn() AS l",
                &[],
            )
            .await
            .unwrap();
        let lsn: String = row.get(0);
        let replica = self.replica.admin().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row = replica
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&lsn],
                )
                .await
                .unwrap();
            if row.get::<_, bool>(0) {
                return;
            }
            assert!(Instant::now() < deadline, "the replica never caught up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn replica(store: &Store) -> dreamnet_db::ReplicaState {
    state(store).replicas[0].clone()
}

fn state(store: &Store) -> PoolState {
    store.pool_state().expect("a PostgreSQL store has a pool")
}

/// Waits (at most 30 s) until the replica's status is `want`.
async fn until_status(store: &Store, want: ReplicaStatus) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica(store).status != want {
        assert!(
            Instant::now() < deadline,
            "the replica never became {want:?}: {:?}",
            state(store)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(events: &[Event]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

async fn list(store: &Store, user: Uuid) -> Vec<Uuid> {
    ids(&store
        .events()
        .list(&EventFilter::for_user(user), 100, None)
        .await
        .expect("list events")
        .items)
}

fn kind() -> EventType {
    "replica.test".parse().unwrap()
}

/// Every kind of read that may go to a replica goes to it (and the pool
/// state and metrics say so); one another service wrote while replay is
/// paused is not seen there, so the answers came from the replica, whose
/// connections are refused unless in recovery; key validation goes to the
/// primary; this store's own write is read back from the primary while the
/// replica is behind it, and from the replica once it has replayed it.
#[tokio::test(flavor = "current_thread")]
async fn routed_reads_reach_the_replica_and_a_store_reads_its_own_writes() {
    let Some(pair) = Pair::new().await else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    // A bound no pause in this test reaches: the replica stays usable.
    let store = pair.store(Duration::from_secs(3600)).await;
    let writer = pair.writer().await;
    until_status(&store, ReplicaStatus::Usable).await;

    let user = writer
        .users()
        .create(NewUser::with_email("ada@example.com".parse().unwrap()))
        .await
        .unwrap();
    let first = writer
        .events()
        .record(NewEvent::new(kind(), json!({"n": 1})).user(user.id))
        .await
        .unwrap();
    pair.caught_up().await;

    let before = state(&store);
    assert_eq!(before.replicas[0].reads, 0);
    assert_eq!(list(&store, user.id).await, vec![first.id]);
    let all = TimeRange::between(
        first.created_at - chrono::Duration::hours(1),
        first.created_at + chrono::Duration::hours(1),
    );
    assert_eq!(store.events().count(&kind(), all).await.unwrap(), 1);
    let buckets = store
        .events()
        .count_by_bucket(TimeBucket::Hour, all, Some(&kind()))
        .await
        .unwrap();
    assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), 1);
    let contains = EventFilter::for_user(user.id).payload_contains(json!({"n": 1}));
    let found = store.events().list(&contains, 10, None).await.unwrap();
    assert_eq!(ids(&found.items), vec![first.id]);
    let users = store.users().list(10, None).await.unwrap();
    assert_eq!(users.items.len(), 1);
    assert!(
        store
            .api_keys()
            .list_for_user(user.id)
            .await
            .unwrap()
            .is_empty()
    );
    let after = state(&store);
    assert_eq!(after.replicas[0].reads, 6, "{after:?}");
    assert_eq!(after.primary_reads, 0, "{after:?}");
    assert_eq!(after.replicas[0].status, ReplicaStatus::Usable);
    assert!(after.replicas[0].connections >= 1);

    // Replay paused: another service's event and key are not on the
    // replica, so the lists (served by the replica) lack them; the key
    // validates all the same (on the primary).
    pair.replica_sql("SELECT pg_wal_replay_pause()").await;
    let second = writer
        .events()
        .record(NewEvent::new(kind(), json!({"n": 2})).user(user.id))
        .await
        .unwrap();
    let key = writer
        .api_keys()
        .issue(user.id, "billing", None)
        .await
        .unwrap();
    assert_eq!(list(&store, user.id).await, vec![first.id]);
    assert!(
        store
            .api_keys()
            .list_for_user(user.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(state(&store).replicas[0].reads, 8);
    assert_eq!(state(&store).primary_reads, 0);
    let validated = store
        .api_keys()
        .validate(key.secret.expose_secret())
        .await
        .unwrap();
    assert_eq!(validated.id, key.key.id);

    // This store's own write: read back at once, from the primary.
    let own = store
        .events()
        .record(NewEvent::new(kind(), json!({"n": 3})).user(user.id))
        .await
        .unwrap();
    assert_eq!(
        list(&store, user.id).await,
        vec![own.id, second.id, first.id]
    );
    let s = state(&store);
    assert_eq!((s.replicas[0].reads, s.primary_reads), (8, 1), "{s:?}");
    // Another store, without that write to wait for, still reads the
    // paused replica.
    let other = pair.store(Duration::from_secs(3600)).await;
    until_status(&other, ReplicaStatus::Usable).await;
    assert_eq!(list(&other, user.id).await, vec![first.id]);
    assert_eq!(replica(&other).reads, 1);

    // Resumed: once the replica has replayed the write, it serves again.
    pair.replica_sql("SELECT pg_wal_replay_resume()").await;
    pair.caught_up().await;
    assert_eq!(
        list(&store, user.id).await,
        vec![own.id, second.id, first.id]
    );
    let s = state(&store);
    assert_eq!((s.replicas[0].reads, s.primary_reads), (9, 1), "{s:?}");

    store.record_metrics();
    let samples: Vec<_> = snapshotter.snapshot().into_vec();
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(k, _, _, _)| {
                let key = k.key();
                key.name() == name
                    && key.labels().count() == labels.len()
                    && labels
                        .iter()
                        .all(|(lk, lv)| key.labels().any(|l| l.key() == *lk && l.value() == *lv))
            })
            .map(|(_, _, _, v)| v)
    };
    // `other` counted its read too: the counters are per process.
    assert_eq!(
        value(
            telemetry::ROUTED_READS,
            &[("server", "replica"), ("reason", "routed")]
        ),
        Some(&DebugValue::Counter(10))
    );
    assert_eq!(
        value(
            telemetry::ROUTED_READS,
            &[("server", "primary"), ("reason", "own_writes")]
        ),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        value(telemetry::REPLICA_READS, &[("replica", "0")]),
        Some(&DebugValue::Counter(9))
    );
    assert!(matches!(
        value(telemetry::REPLICA_USABLE, &[("replica", "0")]),
        Some(DebugValue::Gauge(v)) if v.into_inner() == 1.0
    ));
    assert!(matches!(
        value(telemetry::REPLICA_LAG, &[("replica", "0")]),
        Some(DebugValue::Gauge(v)) if v.into_inner() < 3600.0
    ));
}

/// Analytics and search are routed reads too: each question reaches the
/// replica, and with its replay paused it answers without another
/// service's newer event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_and_search_reach_the_replica() {
    let Some(pair) = Pair::new().await else {
        return;
    };
    let store = pair.store(Duration::from_secs(3600)).await;
    let writer = pair.writer().await;
    until_status(&store, ReplicaStatus::Usable).await;
    let user = writer
        .users()
        .create(NewUser::with_email("grace@example.com".parse().unwrap()))
        .await
        .unwrap();
    let first = writer
        .events()
        .record(NewEvent::new(kind(), json!({"note": "replicated words"})).user(user.id))
        .await
        .unwrap();
    pair.caught_up().await;
    pair.replica_sql("SELECT pg_wal_replay_pause()").await;
    writer
        .events()
        .record(NewEvent::new(kind(), json!({"note": "unreplicated words"})).user(user.id))
        .await
        .unwrap();

    let range = TimeRange::between(
        first.created_at - chrono::Duration::hours(1),
        first.created_at + chrono::Duration::hours(1),
    );
    let a = store.analytics();
    let top = a.top_event_types(range, 5).await.unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].count, 1, "{top:?}");
    let active = a.active_users(Period::Day, range, None).await.unwrap();
    assert_eq!(active.iter().map(|b| b.users).max(), Some(1), "{active:?}");
    let hits = a
        .search_events(&EventSearch::new("words"), 10, None)
        .await
        .unwrap();
    assert_eq!(hits.items.len(), 1);
    assert_eq!(hits.items[0].event.id, first.id);
    let found = a.search_users("grace", 10, None).await.unwrap();
    assert_eq!(found.items.len(), 1);
    let s = state(&store);
    assert_eq!((s.replicas[0].reads, s.primary_reads), (4, 0), "{s:?}");
    pair.replica_sql("SELECT pg_wal_replay_resume()").await;
}

/// Replay paused while another service writes: once the measured lag
/// passes the bound, reads go to the primary (and see the new events);
/// after replay resumes and the replica catches up, they go back to it.
#[tokio::test]
async fn a_replica_past_the_lag_bound_is_skipped_until_it_catches_up() {
    let Some(pair) = Pair::new().await else {
        return;
    };
    let store = pair.store(Duration::from_millis(500)).await;
    let writer = pair.writer().await;
    let user = writer
        .users()
        .create(NewUser::with_email("bob@example.com".parse().unwrap()))
        .await
        .unwrap();
    pair.caught_up().await;
    until_status(&store, ReplicaStatus::Usable).await;
    assert!(list(&store, user.id).await.is_empty());
    assert_eq!(replica(&store).reads, 1);

    pair.replica_sql("SELECT pg_wal_replay_pause()").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn({
        let stop = stop.clone();
        let user = user.id;
        async move {
            let mut recorded = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let e = writer
                    .events()
                    .record(NewEvent::new(kind(), json!({})).user(user))
                    .await
                    .unwrap();
                recorded.push(e.id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            recorded
        }
    });
    until_status(&store, ReplicaStatus::Lagging).await;
    let lag = replica(&store).lag.expect("a lagging replica has a lag");
    assert!(lag > Duration::from_millis(500), "{lag:?}");
    stop.store(true, Ordering::Relaxed);
    let recorded = writing.await.unwrap();
    let reads = replica(&store).reads;
    let primary = state(&store).primary_reads;
    // Served by the primary: every event, the newest first.
    let mut newest_first = recorded.clone();
    newest_first.reverse();
    assert_eq!(list(&store, user.id).await, newest_first);
    assert_eq!(replica(&store).reads, reads);
    assert_eq!(state(&store).primary_reads, primary + 1);

    pair.replica_sql("SELECT pg_wal_replay_resume()").await;
    until_status(&store, ReplicaStatus::Usable).await;
    pair.caught_up().await;
    assert_eq!(list(&store, user.id).await, newest_first);
    assert_eq!(replica(&store).reads, reads + 1);
    assert_eq!(state(&store).primary_reads, primary + 1);
}

/// Readers keep reading while the replica is stopped as a crash would
/// (and started again): every read succeeds with the right answer, the
/// primary serves while the replica is down, and the replica serves again
/// once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_replica_under_load_loses_no_read() {
    let Some(mut pair) = Pair::new().await else {
        return;
    };
    let store = pair.store(Duration::from_secs(5)).await;
    let writer = pair.writer().await;
    let user = writer
        .users()
        .create(NewUser::with_email("cy@example.com".parse().unwrap()))
        .await
        .unwrap();
    let batch = (0..25)
        .map(|i| NewEvent::new(kind(), json!({ "i": i })).user(user.id))
        .collect();
    let expected = writer.events().record_many(batch).await.unwrap();
    let mut expected_newest_first = expected.clone();
    expected_newest_first.reverse();
    pair.caught_up().await;
    until_status(&store, ReplicaStatus::Usable).await;

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            let stop = stop.clone();
            let want = expected_newest_first.clone();
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let page = store
                        .events()
                        .list(&EventFilter::for_user(user.id), 100, None)
                        .await
                        .expect("a read failed while the replica stopped");
                    assert_eq!(ids(&page.items), want);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica(&store).reads < 50 {
        assert!(Instant::now() < deadline, "{:?}", state(&store));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pair.replica.stop(StopMode::Immediate).await;
    let primary_before = state(&store).primary_reads;
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&store).primary_reads < primary_before + 50 {
        assert!(Instant::now() < deadline, "{:?}", state(&store));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(replica(&store).status, ReplicaStatus::Down);
    let down_reads = replica(&store).reads;

    pair.replica.start().await;
    until_status(&store, ReplicaStatus::Usable).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica(&store).reads < down_reads + 50 {
        assert!(Instant::now() < deadline, "{:?}", state(&store));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for r in readers {
        total += r.await.expect("a reader failed");
    }
    let s = state(&store);
    assert_eq!(s.replicas[0].reads + s.primary_reads, total, "{s:?}");
}

/// A replica URL that names a primary (not in recovery) or a server that
/// is not there: connecting succeeds, the replica takes no read, and every
/// read is answered by the primary.
#[tokio::test]
async fn a_replica_url_naming_no_usable_replica_takes_no_reads() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let nothing = format!("postgres://postgres@127.0.0.1:{}/app", common::free_port());
    let store = Store::builder()
        .database_url(db.url.clone())
        .replica_url(db.url.clone())
        .replica_url(nothing)
        .max_connections(2)
        .replica_poll_interval(Duration::from_millis(50))
        .connect()
        .await
        .expect("connect with unusable replicas");
    let user = store
        .users()
        .create(NewUser::with_email("dee@example.com".parse().unwrap()))
        .await
        .unwrap();
    let e = store
        .events()
        .record(NewEvent::new(kind(), json!({})).user(user.id))
        .await
        .unwrap();
    assert_eq!(list(&store, user.id).await, vec![e.id]);
    assert_eq!(store.users().list(10, None).await.unwrap().items.len(), 1);
    let s = state(&store);
    assert_eq!(s.replicas.len(), 2);
    assert_eq!(s.replicas[0].status, ReplicaStatus::NotReplica, "{s:?}");
    assert_eq!(s.replicas[1].status, ReplicaStatus::Down, "{s:?}");
    assert_eq!(s.replicas[0].reads + s.replicas[1].reads, 0);
    assert_eq!(s.primary_reads, 2);
}

/// Too many replicas, or a malformed replica URL, is a configuration
/// error at connect that never quotes the URL.
#[tokio::test]
async fn bad_replica_configuration_is_refused_at_connect() {
    let too_many = Store::builder()
        .database_url("postgres://postgres@127.0.0.1:1/none")
        .replica_urls((0..=dreamnet_db::MAX_REPLICAS).map(|_| "postgres://u@127.0.0.1:1/x"))
        .connect()
        .await;
    assert!(
        matches!(&too_many, Err(dreamnet_db::Error::Config(m)) if m.contains("at most")),
        "{too_many:?}"
    );
    let bad = Store::builder()
        .database_url("postgres://postgres@127.0.0.1:1/none")
        .replica_url("mysql://u:hunter2@h/db")
        .connect()
        .await;
    match bad {
        Err(dreamnet_db::Error::Config(m)) => {
            assert!(m.contains("replica URL 0"), "{m}");
            assert!(!m.contains("hunter2"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}
