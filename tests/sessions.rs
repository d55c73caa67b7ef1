#![cfg(all(feature = "memory", feature = "redis", feature = "tower-sessions"))]
//! Sessions: the behaviour written once and run on every backend (in
//! memory, PostgreSQL and Redis, the real servers), then the
//! `tower-sessions` adapter on each.
//!
//! Time is a `ManualClock` on every backend, so expiry is tested exactly
//! and instantly (on Redis the keys themselves still expire by Redis's
//! clock, an hour or a minute later, after the test is over).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use dreamnet_db::{
    Error, Field, Json, ManualClock, NewSession, RedisSessionOptions, SessionId, Sessions, Store,
    TowerSessionStore,
};
use serde_json::{Value, json};
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::{ExpiredDeletion, SessionStore};
use uuid::Uuid;

const HOUR: Duration = Duration::from_secs(3600);

/// Sessions on one backend, with whatever must live as long as they do.
struct Backend {
    sessions: Sessions,
    /// The clock the sessions are timed by.
    clock: ManualClock,
    /// Whether `delete_expired` counts what it removes (Redis removes
    /// expired sessions by itself and reports 0).
    counts_expired: bool,
    _keep: Box<dyn Send>,
}

fn clock() -> ManualClock {
    ManualClock::new(chrono::Utc::now())
}

async fn memory() -> Option<Backend> {
    let clock = clock();
    Some(Backend {
        sessions: Sessions::in_memory_with_clock(clock.clone()),
        clock,
        counts_expired: true,
        _keep: Box::new(()),
    })
}

async fn postgres() -> Option<Backend> {
    let db = common::pg_db().await?;
    let clock = clock();
    let store = db
        .store_with(Store::builder().max_connections(8).clock(clock.clone()))
        .await;
    Some(Backend {
        sessions: Sessions::postgres(&store).expect("a PostgreSQL store"),
        clock,
        counts_expired: true,
        _keep: Box::new((db, store)),
    })
}

async fn redis() -> Option<Backend> {
    let url = common::redis_available().await?;
    let options = RedisSessionOptions {
        prefix: format!("dreamnet:test:sess:{}:", Uuid::new_v4().simple()),
        // What is tested here is the sessions, not the timeout: a loaded
        // machine may take longer than the default 250 ms to answer (the
        // first call connects, too), and that must not fail the test.
        timeout: Duration::from_secs(10),
    };
    let clock = clock();
    Some(Backend {
        sessions: Sessions::redis(&url, options)
            .await
            .expect("Redis sessions")
            .with_clock(clock.clone()),
        clock,
        counts_expired: false,
        _keep: Box::new(()),
    })
}

/// One test per behaviour per backend.
macro_rules! session_tests {
    ($backend:ident: $($behaviour:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let Some(b) = super::$backend().await else { return };
                    super::$behaviour(&b).await;
                }
            )*
        }
    };
}

macro_rules! all_backends {
    ($($behaviour:ident),* $(,)?) => {
        session_tests!(memory: $($behaviour),*);
        session_tests!(postgres: $($behaviour),*);
        session_tests!(redis: $($behaviour),*);
    };
}

all_backends!(
    create_then_load,
    unknown_and_malformed_tokens,
    save_replaces_data_and_expiry,
    extend_moves_only_the_expiry,
    delete_ends_the_session,
    log_out_everywhere,
    expired_sessions_are_gone,
    bad_input_is_refused_and_nothing_is_stored,
    concurrent_sessions_of_one_user,
    tokens_never_show,
    tower_create_load_save_delete,
    tower_ids_that_collide_are_redrawn,
    tower_user_field_and_expiry,
    data_keeps_every_number_exactly,
    tower_refuses_to_round_what_it_cannot_hold,
);

fn token_of(s: &str) -> SessionId {
    SessionId::parse(s).expect("well-formed")
}

async fn create_then_load(b: &Backend) {
    let s = &b.sessions;
    let user = Uuid::now_v7();
    let created = s
        .create(
            NewSession::new(HOUR)
                .user(user)
                .data(json!({"cart": ["tea"], "n": 1})),
        )
        .await
        .unwrap();
    let token = created.id.expose_secret();
    assert_eq!(token.len(), 64, "256 bits as hex");
    assert!(token.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(created.session.user_id, Some(user));
    assert_eq!(created.session.data, json!({"cart": ["tea"], "n": 1}));
    assert_eq!(
        (created.session.expires_at - created.session.created_at).num_seconds(),
        3600
    );

    // The client presents the token as a string.
    let loaded = s.load(&token_of(token)).await.unwrap().expect("live");
    assert_eq!(loaded, created.session);

    let other = s.create(NewSession::new(HOUR)).await.unwrap();
    assert_ne!(other.id.expose_secret(), token);
    assert_eq!(other.session.user_id, None);
    assert_eq!(other.session.data, json!({}));
    assert_eq!(s.load(&other.id).await.unwrap(), Some(other.session));
}

async fn unknown_and_malformed_tokens(b: &Backend) {
    let s = &b.sessions;
    let unknown = token_of(&"ab".repeat(32));
    assert_eq!(s.load(&unknown).await.unwrap(), None);
    assert_eq!(s.save(&unknown, json!({}), HOUR).await.unwrap(), None);
    assert_eq!(s.extend(&unknown, HOUR).await.unwrap(), None);
    assert!(!s.delete(&unknown).await.unwrap());
    // Nothing was created by asking.
    assert_eq!(s.load(&unknown).await.unwrap(), None);

    for bad in [
        "",
        "short",
        "has spaces in it, which tokens never do",
        "non-ascii-ééééééééééééééééééééééééé",
        &"x".repeat(129),
        "semi;colon;and=equals;cookie;injection",
    ] {
        match SessionId::parse(bad) {
            Err(
                e @ Error::InvalidInput {
                    field: Field::SessionId,
                    ..
                },
            ) => {
                if bad.len() >= 5 {
                    assert!(!e.to_string().contains(bad), "the error quotes the token");
                }
            }
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}

async fn save_replaces_data_and_expiry(b: &Backend) {
    let s = &b.sessions;
    let user = Uuid::now_v7();
    let created = s
        .create(
            NewSession::new(HOUR)
                .user(user)
                .data(json!({"a": 1, "b": 2})),
        )
        .await
        .unwrap();
    let saved = s
        .save(&created.id, json!({"a": 3}), 2 * HOUR)
        .await
        .unwrap()
        .expect("live");
    assert_eq!(saved.data, json!({"a": 3}), "replaced, not merged");
    assert_eq!(saved.user_id, Some(user));
    assert_eq!(saved.created_at, created.session.created_at);
    assert!(saved.expires_at > created.session.expires_at + chrono::Duration::minutes(59));
    assert_eq!(s.load(&created.id).await.unwrap(), Some(saved));
}

async fn extend_moves_only_the_expiry(b: &Backend) {
    let s = &b.sessions;
    let created = s
        .create(NewSession::new(Duration::from_secs(60)).data(json!({"k": "v"})))
        .await
        .unwrap();
    let until = s.extend(&created.id, HOUR).await.unwrap().expect("live");
    assert!(until > created.session.expires_at + chrono::Duration::minutes(58));
    let loaded = s.load(&created.id).await.unwrap().expect("live");
    assert_eq!(loaded.expires_at, until);
    assert_eq!(loaded.data, json!({"k": "v"}));
    assert_eq!(loaded.created_at, created.session.created_at);
}

async fn delete_ends_the_session(b: &Backend) {
    let s = &b.sessions;
    let user = Uuid::now_v7();
    let created = s.create(NewSession::new(HOUR).user(user)).await.unwrap();
    let kept = s.create(NewSession::new(HOUR).user(user)).await.unwrap();
    assert!(s.delete(&created.id).await.unwrap());
    assert_eq!(s.load(&created.id).await.unwrap(), None);
    assert!(!s.delete(&created.id).await.unwrap(), "already ended");
    assert_eq!(s.save(&created.id, json!({}), HOUR).await.unwrap(), None);
    assert_eq!(s.extend(&created.id, HOUR).await.unwrap(), None);
    assert_eq!(s.load(&created.id).await.unwrap(), None, "not brought back");
    assert!(s.load(&kept.id).await.unwrap().is_some());
    // The deleted session no longer counts as the user's.
    assert_eq!(s.delete_user(user).await.unwrap(), 1);
}

async fn log_out_everywhere(b: &Backend) {
    let s = &b.sessions;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let mut adas = Vec::new();
    for i in 0..3 {
        let c = s
            .create(NewSession::new(HOUR).user(ada).data(json!({"device": i})))
            .await
            .unwrap();
        adas.push(c.id);
    }
    let bobs = s.create(NewSession::new(HOUR).user(bob)).await.unwrap();
    let visitor = s.create(NewSession::new(HOUR)).await.unwrap();

    assert_eq!(s.delete_user(ada).await.unwrap(), 3);
    for id in &adas {
        assert_eq!(s.load(id).await.unwrap(), None);
    }
    assert!(s.load(&bobs.id).await.unwrap().is_some());
    assert!(s.load(&visitor.id).await.unwrap().is_some());
    assert_eq!(s.delete_user(ada).await.unwrap(), 0);
    assert_eq!(s.delete_user(Uuid::now_v7()).await.unwrap(), 0);

    // A user who logs in again after logging out everywhere.
    let again = s.create(NewSession::new(HOUR).user(ada)).await.unwrap();
    assert!(s.load(&again.id).await.unwrap().is_some());
    assert_eq!(s.delete_user(ada).await.unwrap(), 1);
}

async fn expired_sessions_are_gone(b: &Backend) {
    let s = &b.sessions;
    let minute = Duration::from_secs(60);
    let user = Uuid::now_v7();
    let short = s.create(NewSession::new(minute).user(user)).await.unwrap();
    let extended = s.create(NewSession::new(minute)).await.unwrap();
    let long = s.create(NewSession::new(HOUR).user(user)).await.unwrap();
    let other = Uuid::now_v7();
    s.create(NewSession::new(minute).user(other)).await.unwrap();
    s.create(NewSession::new(HOUR).user(other)).await.unwrap();

    // Activity keeps a session alive past its first expiry.
    b.clock.advance(chrono::Duration::seconds(30));
    s.extend(&extended.id, minute).await.unwrap().expect("live");
    // One microsecond before its end a session is live; at its end, not.
    b.clock
        .advance(chrono::Duration::seconds(30) - chrono::Duration::microseconds(1));
    assert!(s.load(&short.id).await.unwrap().is_some());
    b.clock.advance(chrono::Duration::microseconds(1));
    assert_eq!(s.load(&short.id).await.unwrap(), None);
    assert_eq!(s.save(&short.id, json!({}), HOUR).await.unwrap(), None);
    assert_eq!(s.extend(&short.id, HOUR).await.unwrap(), None);
    assert_eq!(s.load(&short.id).await.unwrap(), None, "not brought back");
    assert!(s.load(&extended.id).await.unwrap().is_some());
    // Logging out everywhere counts only the sessions that were live.
    assert_eq!(s.delete_user(other).await.unwrap(), 1);

    let removed = s.delete_expired().await.unwrap();
    if b.counts_expired {
        assert_eq!(
            removed, 1,
            "the short session (the other user's went with them)"
        );
    } else {
        assert_eq!(removed, 0);
    }
    assert_eq!(s.delete_expired().await.unwrap(), 0);
    assert_eq!(s.load(&short.id).await.unwrap(), None);
    assert!(s.load(&long.id).await.unwrap().is_some());
    assert_eq!(s.delete_user(user).await.unwrap(), 1);

    b.clock.advance(chrono::Duration::seconds(30));
    assert_eq!(s.load(&extended.id).await.unwrap(), None);
}

fn expect_invalid<T: std::fmt::Debug>(r: dreamnet_db::Result<T>, field: Field) {
    match r {
        Err(Error::InvalidInput { field: f, .. }) if f == field => {}
        other => panic!("expected invalid {field}, got {other:?}"),
    }
}

async fn bad_input_is_refused_and_nothing_is_stored(b: &Backend) {
    let s = b.sessions.clone().max_data_bytes(1024);
    let user = Uuid::now_v7();
    let new = || NewSession::new(HOUR).user(user);
    expect_invalid(
        s.create(new().data(json!([1, 2]))).await,
        Field::SessionData,
    );
    expect_invalid(
        s.create(new().data(json!("text"))).await,
        Field::SessionData,
    );
    expect_invalid(
        s.create(new().data(json!({"big": "x".repeat(2000)}))).await,
        Field::SessionData,
    );
    expect_invalid(
        s.create(new().data(json!({"nul": "a\u{0}b"}))).await,
        Field::SessionData,
    );
    s.create(new()).await.expect("a valid session");
    expect_invalid(
        s.create(NewSession::new(Duration::ZERO).user(user)).await,
        Field::SessionTtl,
    );
    expect_invalid(
        s.create(NewSession::new(Duration::from_secs(401 * 24 * 3600)).user(user))
            .await,
        Field::SessionTtl,
    );
    // Only the one valid create above stored anything.
    assert_eq!(s.delete_user(user).await.unwrap(), 1);

    let live = s.create(new().data(json!({"keep": true}))).await.unwrap();
    expect_invalid(
        s.save(&live.id, json!({"big": "x".repeat(2000)}), HOUR)
            .await,
        Field::SessionData,
    );
    expect_invalid(
        s.save(&live.id, json!({}), Duration::ZERO).await,
        Field::SessionTtl,
    );
    expect_invalid(s.extend(&live.id, Duration::ZERO).await, Field::SessionTtl);
    assert_eq!(
        s.load(&live.id).await.unwrap().unwrap().data,
        json!({"keep": true}),
        "a refused save changes nothing"
    );
}

async fn concurrent_sessions_of_one_user(b: &Backend) {
    let s = &b.sessions;
    let user = Uuid::now_v7();
    let shared = s.create(NewSession::new(HOUR).user(user)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = s.clone();
        let shared = shared.id.clone();
        tasks.push(tokio::spawn(async move {
            let own = s.create(NewSession::new(HOUR).user(user)).await.unwrap();
            s.save(&shared, json!({"writer": i, "payload": [i, i, i]}), HOUR)
                .await
                .unwrap()
                .expect("live");
            own.id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    // Every save landed whole: the data is one writer's, never a mix.
    let data = s.load(&shared.id).await.unwrap().unwrap().data;
    let i: i64 = data.get("writer").expect("a writer").deserialize().unwrap();
    assert_eq!(data.get("payload").unwrap(), json!([i, i, i]));
    assert_eq!(s.delete_user(user).await.unwrap(), 41);
    for id in &ids {
        assert_eq!(s.load(id).await.unwrap(), None);
    }
}

async fn tokens_never_show(b: &Backend) {
    let s = &b.sessions;
    let created = s.create(NewSession::new(HOUR)).await.unwrap();
    let token = created.id.expose_secret().to_owned();
    for shown in [
        format!("{created:?}"),
        format!("{:?}", created.id),
        format!("{}", created.id),
        format!("{s:?}"),
    ] {
        assert!(!shown.contains(&token), "{shown}");
    }
}

/// `b`'s clock as a `tower-sessions` date: records expire by the clock
/// the sessions are timed by, never by the wall clock, however long the
/// test takes.
fn clock_now(b: &Backend) -> time::OffsetDateTime {
    use dreamnet_db::Clock;
    let nanos = b
        .clock
        .now()
        .timestamp_nanos_opt()
        .expect("a date near now");
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos.into()).unwrap()
}

/// A record with `data`, expiring `ttl` from now by `b`'s clock.
fn record(b: &Backend, data: Value, ttl: time::Duration) -> Record {
    let data: HashMap<String, Value> = match data {
        Value::Object(m) => m.into_iter().collect(),
        _ => unreachable!("objects only"),
    };
    Record {
        id: Id::default(),
        data,
        expiry_date: clock_now(b) + ttl,
    }
}

/// Expiry dates come back at microsecond precision.
fn same_instant(a: time::OffsetDateTime, b: time::OffsetDateTime) {
    assert!(
        (a - b).abs() < time::Duration::microseconds(1),
        "{a} vs {b}"
    );
}

async fn tower_create_load_save_delete(b: &Backend) {
    let store = TowerSessionStore::new(b.sessions.clone());
    let mut rec = record(b, json!({"count": 1}), time::Duration::hours(1));
    store.create(&mut rec).await.unwrap();
    // The cookie tower-sessions sets is a session token too.
    let token = SessionId::parse(&rec.id.to_string()).unwrap();
    let created_at = b.sessions.load(&token).await.unwrap().unwrap().created_at;
    let loaded = store.load(&rec.id).await.unwrap().expect("stored");
    assert_eq!(loaded.id, rec.id);
    assert_eq!(loaded.data, rec.data);
    same_instant(loaded.expiry_date, rec.expiry_date);

    b.clock.advance(chrono::Duration::seconds(5));
    rec.data.insert("count".into(), json!(2));
    rec.expiry_date += time::Duration::hours(1);
    store.save(&rec).await.unwrap();
    let loaded = store.load(&rec.id).await.unwrap().unwrap();
    assert_eq!(loaded.data["count"], json!(2));
    same_instant(loaded.expiry_date, rec.expiry_date);
    let native = b.sessions.load(&token).await.unwrap().unwrap();
    assert_eq!(
        native.created_at, created_at,
        "a save keeps the creation time"
    );
    assert_eq!(native.data, json!({"count": 2}));

    // `save` of a record the store has never seen stores it (tower-sessions
    // saves a session whose stored copy expired meanwhile).
    let fresh = record(b, json!({"new": true}), time::Duration::hours(1));
    store.save(&fresh).await.unwrap();
    assert!(store.load(&fresh.id).await.unwrap().is_some());

    store.delete(&rec.id).await.unwrap();
    assert!(store.load(&rec.id).await.unwrap().is_none());
    store.delete(&rec.id).await.unwrap();

    // Over the data limit: an error, and nothing stored.
    let small = TowerSessionStore::new(b.sessions.clone().max_data_bytes(256));
    let mut big = record(
        b,
        json!({"big": "x".repeat(1000)}),
        time::Duration::hours(1),
    );
    let err = small.create(&mut big).await.unwrap_err();
    assert!(err.to_string().contains("session data"), "{err}");
    assert!(store.load(&big.id).await.unwrap().is_none());
}

async fn tower_ids_that_collide_are_redrawn(b: &Backend) {
    let store = TowerSessionStore::new(b.sessions.clone());
    let mut first = record(b, json!({"who": "first"}), time::Duration::hours(1));
    store.create(&mut first).await.unwrap();
    let mut second = record(b, json!({"who": "second"}), time::Duration::hours(1));
    second.id = first.id;
    store.create(&mut second).await.unwrap();
    assert_ne!(second.id, first.id, "a taken id is replaced");
    assert_eq!(
        store.load(&first.id).await.unwrap().unwrap().data["who"],
        json!("first")
    );
    assert_eq!(
        store.load(&second.id).await.unwrap().unwrap().data["who"],
        json!("second")
    );
}

async fn tower_user_field_and_expiry(b: &Backend) {
    let store = TowerSessionStore::new(b.sessions.clone()).user_field("user_id");
    let user = Uuid::now_v7();
    let mut logged_in = record(
        b,
        json!({"user_id": user.to_string()}),
        time::Duration::hours(1),
    );
    store.create(&mut logged_in).await.unwrap();
    let mut visitor = record(
        b,
        json!({"user_id": "not a uuid"}),
        time::Duration::hours(1),
    );
    store.create(&mut visitor).await.unwrap();
    assert_eq!(b.sessions.delete_user(user).await.unwrap(), 1);
    assert!(store.load(&logged_in.id).await.unwrap().is_none());
    assert!(store.load(&visitor.id).await.unwrap().is_some());

    // Saving a record that has expired ends it.
    visitor.expiry_date = clock_now(b) - time::Duration::seconds(1);
    store.save(&visitor).await.unwrap();
    assert!(store.load(&visitor.id).await.unwrap().is_none());

    let mut short = record(b, json!({}), time::Duration::minutes(1));
    store.create(&mut short).await.unwrap();
    b.clock.advance(chrono::Duration::seconds(61));
    assert!(store.load(&short.id).await.unwrap().is_none());
    // An expired session's id is free again, even before cleanup.
    let mut again = record(b, json!({"again": true}), time::Duration::hours(1));
    again.id = short.id;
    store.create(&mut again).await.unwrap();
    assert_eq!(again.id, short.id);
    assert_eq!(
        store.load(&short.id).await.unwrap().unwrap().data["again"],
        json!(true)
    );
    store.delete_expired().await.unwrap();
    assert!(store.load(&again.id).await.unwrap().is_some());
}

/// Numbers no `f64` holds, deep nesting and escapes come back exactly,
/// as PostgreSQL's `jsonb` prints them, from every backend.
async fn data_keeps_every_number_exactly(b: &Backend) {
    let s = &b.sessions;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let text = format!(
        r#"{{"wei": 123456789012345678901234567890, "u": 18446744073709551617, "big": 1e400, "x": 1.50, "deep": {deep}, "s": "\u00e9\n"}}"#
    );
    let printed = format!(
        r#"{{"s": "é\n", "u": 18446744073709551617, "x": 1.50, "big": 1{}, "wei": 123456789012345678901234567890, "deep": {deep}}}"#,
        "0".repeat(400)
    );
    let data = Json::parse(&text).unwrap();
    let created = s
        .create(NewSession::new(HOUR).data(data.clone()))
        .await
        .unwrap();
    assert_eq!(created.session.data.as_str(), printed);
    let loaded = s.load(&created.id).await.unwrap().unwrap();
    assert_eq!(loaded.data.as_str(), printed);
    assert_eq!(loaded.data, data);
    assert_eq!(
        loaded.data.get("wei").unwrap().as_number(),
        Some("123456789012345678901234567890")
    );
    let saved = s
        .save(&created.id, loaded.data.clone(), HOUR)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.data.as_str(), printed);
    s.extend(&created.id, 2 * HOUR).await.unwrap().unwrap();
    let loaded = s.load(&created.id).await.unwrap().unwrap();
    assert_eq!(loaded.data.as_str(), printed);
}

/// `tower-sessions` holds data as `serde_json::Value`s: what they hold
/// exactly goes through, and a number they would round is a decoding error
/// naming its path, never a rounded value.
async fn tower_refuses_to_round_what_it_cannot_hold(b: &Backend) {
    let store = TowerSessionStore::new(b.sessions.clone());
    let mut rec = record(
        b,
        json!({"n": 18446744073709551615u64, "f": 0.1}),
        time::Duration::hours(1),
    );
    store.create(&mut rec).await.unwrap();
    let loaded = store.load(&rec.id).await.unwrap().unwrap();
    assert_eq!(loaded.data, rec.data);

    // A session whose data another writer filled with a number no `Value`
    // holds: saved through the native API under the tower id's token.
    let token = SessionId::parse(&rec.id.to_string()).unwrap();
    b.sessions
        .save(
            &token,
            Json::parse(r#"{"wallet": {"wei": 123456789012345678901234567890}}"#).unwrap(),
            HOUR,
        )
        .await
        .unwrap()
        .expect("live");
    match store.load(&rec.id).await {
        Err(tower_sessions_core::session_store::Error::Decode(why)) => {
            assert!(why.contains("/wallet/wei"), "{why}")
        }
        other => panic!("expected a decoding error, got {other:?}"),
    }
    // The data is still there, exactly, for the native API.
    let native = b.sessions.load(&token).await.unwrap().unwrap();
    assert_eq!(
        native.data.pointer("/wallet/wei").unwrap().as_number(),
        Some("123456789012345678901234567890")
    );
}

#[tokio::test]
async fn a_dead_redis_is_a_typed_error_in_bounded_time() {
    // Nothing listens on port 1.
    let options = RedisSessionOptions {
        timeout: Duration::from_millis(200),
        ..RedisSessionOptions::default()
    };
    let sessions = Sessions::redis("redis://127.0.0.1:1", options)
        .await
        .expect("connecting is lazy");
    let started = std::time::Instant::now();
    let err = sessions.create(NewSession::new(HOUR)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unavailable {
                backend: dreamnet_db::Backend::Redis,
                ..
            }
        ),
        "{err:?}"
    );
    let id = token_of(&"cd".repeat(32));
    let err = sessions.load(&id).await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains(id.expose_secret()));
    // A guard against hanging, not a measure of speed (each call gives up
    // after 200 ms; a loaded machine may take longer to get there).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn postgres_sessions_need_a_postgres_store() {
    let err = Sessions::postgres(&dreamnet_db::Store::in_memory()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

/// Tokio's clock is paused: the cleanup task's timer and the wait below
/// advance together, with no race against real time.
#[tokio::test(start_paused = true)]
async fn cleanup_runs_by_itself() {
    let clock = dreamnet_db::ManualClock::new(chrono::Utc::now());
    let sessions = Sessions::in_memory_with_clock(clock.clone());
    for _ in 0..3 {
        sessions
            .create(NewSession::new(Duration::from_secs(60)))
            .await
            .unwrap();
    }
    let kept = sessions.create(NewSession::new(HOUR)).await.unwrap();
    clock.advance(chrono::Duration::seconds(61));
    let cleanup = sessions.spawn_cleanup(Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(200)).await;
    cleanup.abort();
    // The three expired sessions are gone already: nothing left to remove.
    assert_eq!(sessions.delete_expired().await.unwrap(), 0);
    assert!(sessions.load(&kept.id).await.unwrap().is_some());
}
