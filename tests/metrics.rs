//! Metrics, captured by a recording `metrics` recorder: every family the
//! crate documents is recorded with the names, types and labels it
//! documents, on the in-memory backend, on PostgreSQL (the pool) and with
//! the Redis cache; and every label of every captured metric is one of the
//! finite values `dreamnet_db::telemetry::FAMILIES` lists, so none carries an
//! id, an email, a key, a token or a URL.
//!
//! The recorder is set for the test's thread, and the tests run on a
//! current-thread runtime, so they see every metric their calls record and
//! nothing of the tests running beside them.

mod common;

use std::time::Duration;

use dreamnet_db::telemetry::{self, FAMILIES, MetricType};
use dreamnet_db::{
    Error, NewSession, NewUser, RateLimitPolicy, RateLimiter, SessionId, Sessions, Store,
    UserUpdate,
};
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;

const HOUR: Duration = Duration::from_secs(3600);

/// One captured metric.
#[derive(Debug)]
struct Sample {
    name: String,
    kind: MetricKind,
    labels: Vec<(String, String)>,
    help: Option<String>,
    value: DebugValue,
}

/// Everything recorded so far, each sample checked against `FAMILIES`: a
/// documented name and type, exactly the family's label keys, each value
/// from its finite set, and none of `secrets` anywhere in a name or label.
fn captured(snapshotter: &Snapshotter, secrets: &[&str]) -> Vec<Sample> {
    let samples: Vec<Sample> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _unit, help, value)| {
            let (kind, key) = key.into_parts();
            Sample {
                name: key.name().to_owned(),
                kind,
                labels: key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                help: help.map(|h| h.to_string()),
                value,
            }
        })
        .collect();
    for s in &samples {
        let family = FAMILIES
            .iter()
            .find(|f| f.name == s.name)
            .unwrap_or_else(|| panic!("{} is not a documented family", s.name));
        let kind = match family.kind {
            MetricType::Counter => MetricKind::Counter,
            MetricType::Gauge => MetricKind::Gauge,
            MetricType::Histogram => MetricKind::Histogram,
        };
        assert_eq!(s.kind, kind, "{}", s.name);
        let keys: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
        let allowed: Vec<&str> = family.labels.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, allowed, "the label keys of {}", s.name);
        for ((key, value), (_, values)) in s.labels.iter().zip(family.labels) {
            assert!(
                values.contains(&value.as_str()),
                "{}: {key}={value:?} is outside the documented values {values:?}",
                s.name
            );
        }
        for secret in secrets {
            assert!(!s.name.contains(secret), "a secret in a metric name: {s:?}");
            for (k, v) in &s.labels {
                assert!(
                    !k.contains(secret) && !v.contains(secret),
                    "a secret in a label: {s:?}"
                );
            }
        }
    }
    samples
}

/// The sample of `name` with exactly `labels`.
fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && s.labels.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
    })
}

fn counter(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> u64 {
    match find(samples, name, labels).map(|s| &s.value) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        Some(other) => panic!("{name} {labels:?} is not a counter: {other:?}"),
    }
}

fn gauge(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(samples, name, labels).map(|s| &s.value) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{name} {labels:?} is not a recorded gauge: {other:?}"),
    }
}

fn observations(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    match find(samples, name, labels).map(|s| &s.value) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
        other => panic!("{name} {labels:?} is not a recorded histogram: {other:?}"),
    }
}

/// Three labels, keys and values given apart.
type Labels = [(&'static str, &'static str); 3];
const CALL: [&str; 3] = ["op", "table", "outcome"];
const SESSION: [&str; 3] = ["backend", "op", "result"];
const DECISION: [&str; 3] = ["backend", "decision", "degraded"];

fn labels(keys: [&'static str; 3], values: [&'static str; 3]) -> Labels {
    std::array::from_fn(|i| (keys[i], values[i]))
}

/// Asserts each counter of `name` with labels `keys` = values has its count.
fn expect_counts(
    samples: &[Sample],
    name: &str,
    keys: [&'static str; 3],
    expected: &[([&'static str; 3], u64)],
) {
    for (values, n) in expected {
        let got = counter(samples, name, &labels(keys, *values));
        assert_eq!(got, *n, "{name} {values:?}");
    }
}

fn email(tag: &str) -> dreamnet_db::Email {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
        .parse()
        .unwrap()
}

#[tokio::test]
async fn calls_sessions_and_rate_limits_in_memory() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    telemetry::describe();

    let store = Store::in_memory();
    let address = email("metrics");
    let user = store
        .users()
        .create(NewUser::with_email(address.clone()))
        .await
        .unwrap();
    store.users().get(user.id).await.unwrap();
    let unknown = uuid::Uuid::now_v7();
    assert!(matches!(
        store.users().get(unknown).await,
        Err(Error::NotFound { .. })
    ));
    let issued = store
        .api_keys()
        .issue(user.id, "billing", None)
        .await
        .unwrap();
    let secret = issued.secret.expose_secret().to_owned();
    store.api_keys().validate(&secret).await.unwrap();
    let wrong = common::wrong_key(&secret);
    assert_ne!(wrong, secret);
    assert!(store.api_keys().validate(&wrong).await.is_err());
    store.record_metrics(); // in memory: no pool, nothing recorded

    let sessions = Sessions::in_memory();
    let created = sessions
        .create(NewSession::new(HOUR).user(user.id))
        .await
        .unwrap();
    let token = created.id.expose_secret().to_owned();
    sessions.load(&created.id).await.unwrap().expect("live");
    let stranger = SessionId::parse(&"ab".repeat(32)).unwrap();
    assert!(sessions.load(&stranger).await.unwrap().is_none());
    assert!(sessions.save(&created.id, json!([]), HOUR).await.is_err());
    assert!(sessions.delete(&created.id).await.unwrap());

    let limiter = RateLimiter::in_memory(RateLimitPolicy::per_minute(1, 1).unwrap());
    assert!(limiter.check(&user.id.to_string()).await.unwrap().allowed);
    assert!(!limiter.check(&user.id.to_string()).await.unwrap().allowed);

    let user_id = user.id.to_string();
    let hash = issued.secret.hash();
    let secrets = [
        secret.as_str(),
        &secret[4..20],
        wrong.as_str(),
        hash.as_str(),
        token.as_str(),
        &token[..16],
        address.as_str(),
        user_id.as_str(),
        "example.com",
    ];
    let s = captured(&snapshotter, &secrets);

    expect_counts(
        &s,
        telemetry::CALLS,
        CALL,
        &[
            (["create", "users", "ok"], 1),
            (["get", "users", "ok"], 1),
            (["get", "users", "not_found"], 1),
            (["issue", "api_keys", "ok"], 1),
            (["validate", "api_keys", "ok"], 1),
            (["validate", "api_keys", "unauthorized"], 1),
            (["load", "sessions", "ok"], 2),
            (["save", "sessions", "invalid_input"], 1),
        ],
    );
    let took = observations(
        &s,
        telemetry::CALL_DURATION,
        &labels(CALL, ["get", "users", "ok"]),
    );
    assert_eq!(took.len(), 1);
    assert!(took[0] >= 0.0 && took[0] < 60.0, "{took:?} seconds");
    assert_eq!(
        observations(
            &s,
            telemetry::CALL_DURATION,
            &labels(CALL, ["get", "users", "not_found"])
        )
        .len(),
        1
    );

    expect_counts(
        &s,
        telemetry::SESSION_OPERATIONS,
        SESSION,
        &[
            (["memory", "create", "ok"], 1),
            (["memory", "load", "ok"], 1),
            (["memory", "load", "absent"], 1),
            (["memory", "save", "error"], 1),
            (["memory", "delete", "ok"], 1),
        ],
    );
    expect_counts(
        &s,
        telemetry::RATE_LIMIT_DECISIONS,
        DECISION,
        &[
            (["memory", "allowed", "false"], 1),
            (["memory", "refused", "false"], 1),
        ],
    );

    assert!(
        !s.iter().any(|x| x.name.starts_with("dreamnet_db_pool_")),
        "an in-memory store has no pool"
    );
    let help = find(&s, telemetry::CALLS, &labels(CALL, ["get", "users", "ok"]))
        .unwrap()
        .help
        .clone();
    assert!(help.is_some_and(|h| h.starts_with("Calls of the store")));
}

#[tokio::test]
async fn pool_metrics_and_calls_on_postgres() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    // One connection, so that concurrent calls wait for it.
    let store = db.store_with(Store::builder().max_connections(1)).await;
    let address = email("pool");
    let user = store
        .users()
        .create(NewUser::with_email(address.clone()))
        .await
        .unwrap();
    let reads = (0..4).map(|_| async { store.users().get(user.id).await });
    for read in futures_util::future::join_all(reads).await {
        read.unwrap();
    }
    let sessions = Sessions::postgres(&store).unwrap();
    let created = sessions.create(NewSession::new(HOUR)).await.unwrap();
    let token = created.id.expose_secret().to_owned();
    assert!(sessions.extend(&created.id, HOUR).await.unwrap().is_some());
    store.record_metrics();
    let state = store.pool_state().unwrap();
    assert!(state.waits >= 1, "{state:?}");

    let user_id = user.id.to_string();
    let secrets = [
        address.as_str(),
        user_id.as_str(),
        token.as_str(),
        db.name.as_str(),
        "postgres://",
        "127.0.0.1",
    ];
    let s = captured(&snapshotter, &secrets);
    let connections = telemetry::POOL_CONNECTIONS;
    assert_eq!(
        gauge(&s, connections, &[("state", "idle")]),
        f64::from(state.idle)
    );
    assert_eq!(
        gauge(&s, connections, &[("state", "in_use")]),
        f64::from(state.in_use)
    );
    assert!(state.idle + state.in_use >= 1, "{state:?}");
    assert_eq!(counter(&s, telemetry::POOL_WAITS, &[]), state.waits);
    assert!(find(&s, telemetry::POOL_TIMEOUTS, &[]).is_some());
    assert_eq!(counter(&s, telemetry::POOL_TIMEOUTS, &[]), state.timeouts);

    assert_eq!(
        counter(&s, telemetry::CALLS, &labels(CALL, ["get", "users", "ok"])),
        4
    );
    assert_eq!(
        observations(
            &s,
            telemetry::CALL_DURATION,
            &labels(CALL, ["get", "users", "ok"])
        )
        .len(),
        4
    );
    expect_counts(
        &s,
        telemetry::SESSION_OPERATIONS,
        SESSION,
        &[
            (["postgres", "create", "ok"], 1),
            (["postgres", "extend", "ok"], 1),
        ],
    );
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use dreamnet_db::{FailureMode, RedisLimiterOptions, RedisSessionOptions};

    fn prefix() -> String {
        format!("dreamnet-test:{}:", uuid::Uuid::new_v4().simple())
    }

    #[tokio::test]
    async fn cache_sessions_and_limits_on_redis() {
        let Some(redis_url) = common::redis_available().await else {
            return;
        };
        let Some(db) = common::pg_db().await else {
            return;
        };
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);

        // A cache that works: miss (and fill), hit, invalidation.
        let store = db
            .store_with(
                Store::builder()
                    .redis_url(redis_url.clone())
                    .cache_prefix(prefix())
                    .max_connections(4),
            )
            .await;
        let address = email("cache");
        let user = store
            .users()
            .create(NewUser::with_email(address.clone()))
            .await
            .unwrap();
        store.users().get(user.id).await.unwrap();
        store.users().get(user.id).await.unwrap();
        store
            .users()
            .update(user.id, UserUpdate::new().merge_metadata(json!({"a": 1})))
            .await
            .unwrap();
        let stats = store.cache_stats().unwrap();
        assert!(
            stats.hits >= 1 && stats.misses >= 1 && stats.fills >= 1,
            "{stats:?}"
        );

        // A cache whose Redis is gone: errors, bypassed reads, a deferred
        // invalidation left pending.
        let dead_url = format!("redis://127.0.0.1:{}", common::free_port());
        let dead = db
            .store_with(
                Store::builder()
                    .redis_url(dead_url.clone())
                    .cache_prefix(prefix())
                    .redis_timeout(Duration::from_millis(200))
                    .max_connections(4),
            )
            .await;
        dead.users().get(user.id).await.unwrap();
        dead.users()
            .update(user.id, UserUpdate::new().merge_metadata(json!({"b": 2})))
            .await
            .unwrap();
        let dead_stats = dead.cache_stats().unwrap();
        assert!(dead_stats.pending_invalidations >= 1, "{dead_stats:?}");

        // Sessions and rate limits on Redis, and a limiter whose Redis is
        // gone.
        let sessions = Sessions::redis(
            &redis_url,
            RedisSessionOptions {
                prefix: prefix(),
                ..RedisSessionOptions::default()
            },
        )
        .await
        .unwrap();
        let created = sessions.create(NewSession::new(HOUR)).await.unwrap();
        let token = created.id.expose_secret().to_owned();
        assert!(sessions.load(&created.id).await.unwrap().is_some());
        let options = |failure_mode| RedisLimiterOptions {
            prefix: prefix(),
            timeout: Duration::from_millis(200),
            failure_mode,
        };
        let policy = RateLimitPolicy::per_minute(10, 10).unwrap();
        let limiter = RateLimiter::redis(&redis_url, policy, options(FailureMode::Open))
            .await
            .unwrap();
        assert!(limiter.check(&address.to_string()).await.unwrap().allowed);
        let cut_off = RateLimiter::redis(&dead_url, policy, options(FailureMode::Closed))
            .await
            .unwrap();
        let refused = cut_off.check(&address.to_string()).await.unwrap();
        assert!(refused.degraded && !refused.allowed);

        let user_id = user.id.to_string();
        let secrets = [
            address.as_str(),
            user_id.as_str(),
            token.as_str(),
            redis_url.as_str(),
            dead_url.as_str(),
            "dreamnet-test:",
        ];
        let s = captured(&snapshotter, &secrets);
        let both = |name| {
            let a = store.cache_stats().unwrap();
            let b = dead.cache_stats().unwrap();
            match name {
                "hit" => a.hits + b.hits,
                "miss" => a.misses + b.misses,
                "bypassed" => a.bypassed + b.bypassed,
                "errors" => a.errors + b.errors,
                "filled" => a.fills + b.fills,
                "applied" => a.invalidations + b.invalidations,
                "deferred" => a.invalidations_deferred + b.invalidations_deferred,
                "pending" => a.pending_invalidations + b.pending_invalidations,
                _ => unreachable!(),
            }
        };
        let reads = telemetry::CACHE_READS;
        for result in ["hit", "miss", "bypassed"] {
            let n = counter(&s, reads, &[("result", result)]);
            assert!(n >= 1, "{result}");
            assert_eq!(n, both(result), "{result}");
        }
        let errors = counter(&s, telemetry::CACHE_ERRORS, &[]);
        assert!(errors >= 1);
        assert!(errors <= both("errors"), "the flusher may fail again after");
        assert_eq!(
            counter(&s, telemetry::CACHE_FILLS, &[("result", "filled")]),
            both("filled")
        );
        let invalidations = telemetry::CACHE_INVALIDATIONS;
        assert!(counter(&s, invalidations, &[("result", "applied")]) >= 1);
        assert_eq!(
            counter(&s, invalidations, &[("result", "deferred")]),
            both("deferred")
        );
        assert_eq!(
            gauge(&s, telemetry::CACHE_PENDING, &[]),
            both("pending") as f64
        );

        expect_counts(
            &s,
            telemetry::SESSION_OPERATIONS,
            SESSION,
            &[(["redis", "create", "ok"], 1), (["redis", "load", "ok"], 1)],
        );
        expect_counts(
            &s,
            telemetry::RATE_LIMIT_DECISIONS,
            DECISION,
            &[
                (["redis", "allowed", "false"], 1),
                (["redis", "refused", "true"], 1),
            ],
        );
    }
}
