//! Events: record, list, filter, count.

use std::collections::HashSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use dreamnet_db::{
    BucketCount, Cursor, Entity, EventFilter, Field, ManualClock, NewEvent, NewUser, PurgeReport,
    Store, TimeBucket, TimeRange, User,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;

async fn user(store: &Store, name: &str) -> User {
    store
        .users()
        .create(NewUser::with_email(email(&format!("{name}@example.com"))))
        .await
        .unwrap()
}

async fn record(store: &Store, kind: &str, user: Option<Uuid>, payload: Value) -> Event {
    let mut new = NewEvent::new(event_type(kind), payload);
    if let Some(u) = user {
        new = new.user(u);
    }
    store.events().record(new).await.unwrap()
}

fn id_set(events: &[Event]) -> HashSet<Uuid> {
    events.iter().map(|e| e.id).collect()
}

pub async fn record_with_and_without_a_user(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let login = record(
        store,
        "user.login",
        Some(u.id),
        json!({"ip": "203.0.113.7"}),
    )
    .await;
    assert_eq!(login.user_id, Some(u.id));
    assert_eq!(login.event_type.as_str(), "user.login");
    assert_eq!(login.payload, json!({"ip": "203.0.113.7"}));
    assert_eq!(login.created_at, now(clock));
    let boot = record(store, "system.boot", None, json!({})).await;
    assert_eq!(boot.user_id, None);
    assert_ne!(boot.id, login.id);

    // Any JSON value is a payload, and comes back as it went in.
    let mut recorded = vec![login.clone(), boot];
    clock.advance(Duration::seconds(1));
    for payload in [
        json!(42),
        json!(-7),
        json!(1.5),
        json!("text"),
        json!(true),
        json!(null),
        json!([1, "a", {"b": null}]),
        json!({"unicode": "ü€𝄞 \"quoted\" \\ \n", "nested": {"deep": [{"x": 1}]}}),
    ] {
        let e = record(store, "payload.kind", None, payload.clone()).await;
        assert_eq!(e.payload, payload);
        recorded.push(e);
    }
    let all = all_events(store, &EventFilter::all(), 3).await;
    assert_eq!(all, newest_first(recorded));
    assert_eq!(
        all_events(store, &EventFilter::for_user(u.id), 10).await,
        vec![login]
    );
}

pub async fn record_for_unknown_user_is_not_found(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    record(store, "user.login", Some(u.id), json!({})).await;
    let before = snapshot(store).await;
    let id = unknown_id();
    expect_not_found(
        store
            .events()
            .record(NewEvent::new(event_type("user.login"), json!({})).user(id))
            .await,
        Entity::User,
        id,
    );
    assert_unchanged(&before, &snapshot(store).await);
    assert!(
        all_events(store, &EventFilter::for_user(id), 10)
            .await
            .is_empty()
    );
}

pub async fn record_many_thousands_then_count(store: &Store, clock: &ManualClock) {
    let u1 = user(store, "one").await;
    let u2 = user(store, "two").await;
    let batch: Vec<NewEvent> = (0..5_000)
        .map(|i| match i % 3 {
            0 => NewEvent::new(event_type("page.view"), json!({"i": i})).user(u1.id),
            1 => {
                NewEvent::new(event_type("api.call"), json!({"i": i, "path": "/v1/x"})).user(u2.id)
            }
            _ => NewEvent::new(event_type("system.tick"), json!({"i": i})),
        })
        .collect();
    let ids = store.events().record_many(batch).await.unwrap();
    assert_eq!(ids.len(), 5_000);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 5_000);

    let all = TimeRange::all();
    let count =
        |t: &'static str| async move { store.events().count(&event_type(t), all).await.unwrap() };
    assert_eq!(count("page.view").await, 1_667);
    assert_eq!(count("api.call").await, 1_667);
    assert_eq!(count("system.tick").await, 1_666);
    assert_eq!(count("user.login").await, 0);

    let hour = TimeBucket::Hour.start_of(now(clock));
    assert_eq!(
        store
            .events()
            .count_by_bucket(TimeBucket::Hour, all, None)
            .await
            .unwrap(),
        vec![
            BucketCount {
                bucket: hour,
                event_type: event_type("api.call"),
                count: 1_667
            },
            BucketCount {
                bucket: hour,
                event_type: event_type("page.view"),
                count: 1_667
            },
            BucketCount {
                bucket: hour,
                event_type: event_type("system.tick"),
                count: 1_666
            },
        ]
    );

    // The ids returned are in batch order, and each names its event.
    let views = all_events(store, &EventFilter::for_user(u1.id), 1_000).await;
    assert_eq!(views.len(), 1_667);
    for e in &views {
        assert_eq!(e.event_type.as_str(), "page.view");
        assert_eq!(e.user_id, Some(u1.id));
        assert_eq!(e.created_at, now(clock));
        let i: usize = e.payload.get("i").unwrap().deserialize().unwrap();
        assert_eq!(i % 3, 0);
        assert_eq!(ids[i], e.id);
    }
    assert_eq!(
        all_events(store, &EventFilter::all(), 1_000).await.len(),
        5_000
    );

    // An empty batch writes nothing.
    assert!(
        store
            .events()
            .record_many(Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(count("page.view").await, 1_667);
}

pub async fn record_many_is_all_or_nothing(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    record(store, "user.login", Some(u.id), json!({"n": 0})).await;
    record(store, "system.boot", None, json!({})).await;
    let before = snapshot(store).await;

    // Two unknown users: the error names the first in batch order (which
    // is the larger id, so sorting ids would name the wrong one).
    let first_unknown = Uuid::from_u128(u128::MAX - 1);
    let second_unknown = Uuid::from_u128(1);
    let batch = |bad: &dyn Fn(usize) -> Option<NewEvent>| -> Vec<NewEvent> {
        (0..10)
            .map(|i| {
                bad(i).unwrap_or_else(|| {
                    let e = NewEvent::new(event_type("user.click"), json!({"i": i}));
                    if i % 2 == 0 { e.user(u.id) } else { e }
                })
            })
            .collect()
    };
    expect_not_found(
        store
            .events()
            .record_many(batch(&|i| match i {
                3 => Some(NewEvent::new(event_type("user.click"), json!({})).user(first_unknown)),
                7 => Some(NewEvent::new(event_type("user.click"), json!({})).user(second_unknown)),
                _ => None,
            }))
            .await,
        Entity::User,
        first_unknown,
    );
    assert_unchanged(&before, &snapshot(store).await);

    expect_invalid(
        store
            .events()
            .record_many(batch(&|i| {
                (i == 5).then(|| {
                    NewEvent::new(
                        event_type("user.click"),
                        json!({"big": "x".repeat(70 * 1024)}),
                    )
                })
            }))
            .await,
        Field::Payload,
    );
    assert_unchanged(&before, &snapshot(store).await);

    expect_invalid(
        store
            .events()
            .record_many(batch(&|i| {
                (i == 9).then(|| NewEvent::new(event_type("user.click"), json!({"s": "\u{0}"})))
            }))
            .await,
        Field::Payload,
    );
    assert_unchanged(&before, &snapshot(store).await);
    assert_eq!(
        store
            .events()
            .count(&event_type("user.click"), TimeRange::all())
            .await
            .unwrap(),
        0
    );

    // The same batch without the bad event goes in whole.
    assert_eq!(
        store
            .events()
            .record_many(batch(&|_| None))
            .await
            .unwrap()
            .len(),
        10
    );
    assert_eq!(
        store
            .events()
            .count(&event_type("user.click"), TimeRange::all())
            .await
            .unwrap(),
        10
    );
}

/// `{"a":"xxx…"}` serialized is `n + 8` bytes.
fn payload_of_size(bytes: usize) -> Value {
    let v = json!({"a": "x".repeat(bytes - 8)});
    assert_eq!(serde_json::to_vec(&v).unwrap().len(), bytes);
    v
}

pub async fn payload_limit_default(store: &Store, _clock: &ManualClock) {
    let limit = dreamnet_db::DEFAULT_MAX_PAYLOAD_BYTES;
    assert_eq!(limit, 64 * 1024);
    let exact = record(store, "blob", None, payload_of_size(limit)).await;
    assert_eq!(exact.payload, payload_of_size(limit));
    let before = snapshot(store).await;
    expect_invalid(
        store
            .events()
            .record(NewEvent::new(
                event_type("blob"),
                payload_of_size(limit + 1),
            ))
            .await,
        Field::Payload,
    );
    assert_unchanged(&before, &snapshot(store).await);
    assert_eq!(
        store
            .events()
            .count(&event_type("blob"), TimeRange::all())
            .await
            .unwrap(),
        1
    );
}

/// Run with `max_payload_bytes(64)`.
pub async fn payload_limit_configured(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    record(store, "blob", Some(u.id), payload_of_size(64)).await;
    let before = snapshot(store).await;
    expect_invalid(
        store
            .events()
            .record(NewEvent::new(event_type("blob"), payload_of_size(65)).user(u.id))
            .await,
        Field::Payload,
    );
    expect_invalid(
        store
            .events()
            .record_many(vec![
                NewEvent::new(event_type("blob"), json!({})),
                NewEvent::new(event_type("blob"), payload_of_size(65)),
            ])
            .await,
        Field::Payload,
    );
    // The same limit holds for user documents and containment filters.
    expect_invalid(
        store
            .users()
            .create(NewUser::with_email(email("big@example.com")).metadata(payload_of_size(65)))
            .await,
        Field::Metadata,
    );
    expect_invalid(
        store
            .events()
            .list(
                &EventFilter::all().payload_contains(payload_of_size(65)),
                10,
                None,
            )
            .await,
        Field::Payload,
    );
    assert_unchanged(&before, &snapshot(store).await);
}

pub async fn payload_with_nul_is_refused(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    record(store, "user.login", Some(u.id), json!({"ok": true})).await;
    let before = snapshot(store).await;
    for bad in [
        json!({"s": "a\u{0}b"}),
        json!({"k\u{0}": 1}),
        json!(["x", {"deep": "\u{0}"}]),
        json!("\u{0}"),
    ] {
        expect_invalid(
            store
                .events()
                .record(NewEvent::new(event_type("user.login"), bad.clone()).user(u.id))
                .await,
            Field::Payload,
        );
        expect_invalid(
            store
                .events()
                .record_many(vec![
                    NewEvent::new(event_type("user.login"), json!({})),
                    NewEvent::new(event_type("user.login"), bad.clone()),
                ])
                .await,
            Field::Payload,
        );
        expect_invalid(
            store
                .events()
                .list(&EventFilter::all().payload_contains(bad), 10, None)
                .await,
            Field::Payload,
        );
    }
    assert_unchanged(&before, &snapshot(store).await);
}

pub async fn list_is_newest_first_with_type_filter(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let other = user(store, "bob").await;
    let e0 = record(store, "user.login", Some(u.id), json!({"n": 0})).await;
    clock.advance(Duration::seconds(1));
    let e1 = record(store, "page.view", Some(u.id), json!({"n": 1})).await;
    clock.advance(Duration::seconds(1));
    let e2 = record(store, "user.login", Some(u.id), json!({"n": 2})).await;
    clock.advance(Duration::seconds(1));
    let e3 = record(store, "user.login", Some(other.id), json!({"n": 3})).await;
    clock.advance(Duration::seconds(1));
    let e4 = record(store, "page.view", Some(u.id), json!({"n": 4})).await;
    let e5 = record(store, "user.login", None, json!({"n": 5})).await;

    let page = store
        .events()
        .list(&EventFilter::for_user(u.id), 10, None)
        .await
        .unwrap();
    assert_eq!(
        page.items,
        vec![e4.clone(), e2.clone(), e1.clone(), e0.clone()]
    );
    assert_eq!(page.next, None);

    let login = event_type("user.login");
    assert_eq!(
        all_events(
            store,
            &EventFilter::for_user(u.id).event_type(login.clone()),
            1
        )
        .await,
        vec![e2.clone(), e0.clone()]
    );
    assert_eq!(
        all_events(store, &EventFilter::all().event_type(login), 2).await,
        newest_first(vec![e0.clone(), e2.clone(), e3.clone(), e5.clone()])
    );
    assert_eq!(
        all_events(store, &EventFilter::all(), 4).await,
        newest_first(vec![e0, e1, e2, e3, e4, e5])
    );
    assert!(
        all_events(
            store,
            &EventFilter::for_user(u.id).event_type(event_type("nope")),
            10
        )
        .await
        .is_empty()
    );
    assert!(
        all_events(store, &EventFilter::for_user(unknown_id()), 10)
            .await
            .is_empty()
    );
}

pub async fn list_honours_the_time_range(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let t0 = now(clock);
    let at = |i: i64| t0 + Duration::seconds(i);
    let mut events = Vec::new();
    for i in 0..10 {
        events.push(record(store, "tick", Some(u.id), json!({"i": i})).await);
        clock.advance(Duration::seconds(1));
    }
    let pick = |idx: &[usize]| idx.iter().map(|&i| events[i].id).collect::<Vec<_>>();
    let list = |range: TimeRange, page: usize| async move {
        ids(&all_events(store, &EventFilter::for_user(u.id).range(range), page).await)
    };
    // `since` is included, `until` is not.
    assert_eq!(
        list(TimeRange::between(at(2), at(5)), 10).await,
        pick(&[4, 3, 2])
    );
    assert_eq!(list(TimeRange::since(at(8)), 10).await, pick(&[9, 8]));
    assert_eq!(list(TimeRange::until(at(1)), 10).await, pick(&[0]));
    assert_eq!(
        list(TimeRange::between(at(1), at(9)), 3).await,
        pick(&[8, 7, 6, 5, 4, 3, 2, 1])
    );
    assert!(list(TimeRange::since(at(10)), 10).await.is_empty());
    assert_eq!(
        list(
            TimeRange::between(
                at(3) - Duration::microseconds(1),
                at(3) + Duration::microseconds(1)
            ),
            10
        )
        .await,
        pick(&[3])
    );
    // The range applies without a user too.
    assert_eq!(
        ids(&all_events(
            store,
            &EventFilter::all().range(TimeRange::between(at(2), at(5))),
            2
        )
        .await),
        pick(&[4, 3, 2])
    );

    // A cursor below the range gives nothing; one above it, the range.
    let filter = EventFilter::for_user(u.id).range(TimeRange::since(at(5)));
    let below = Cursor::new(events[2].created_at, events[2].id);
    assert!(
        store
            .events()
            .list(&filter, 10, Some(below))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let filter = EventFilter::for_user(u.id).range(TimeRange::between(at(2), at(5)));
    let above = Cursor::new(events[8].created_at, events[8].id);
    assert_eq!(
        ids(&store
            .events()
            .list(&filter, 10, Some(above))
            .await
            .unwrap()
            .items),
        pick(&[4, 3, 2])
    );
}

type Row = (DateTime<Utc>, Uuid, Uuid, &'static str);

/// Records `n` events of `kind` for `who` in one batch, noting them in
/// `rows`.
async fn record_batch(
    store: &Store,
    clock: &ManualClock,
    rows: &mut Vec<Row>,
    kind: &'static str,
    who: Uuid,
    n: usize,
) {
    let events: Vec<_> = (0..n)
        .map(|i| NewEvent::new(event_type(kind), json!({"i": i})).user(who))
        .collect();
    let t = now(clock);
    for id in store.events().record_many(events).await.unwrap() {
        rows.push((t, id, who, kind));
    }
}

pub async fn list_pages_through_events_with_equal_timestamps(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let other = user(store, "bob").await;
    // (created_at, id, user, type) of everything recorded.
    let mut rows: Vec<Row> = Vec::new();
    record_batch(store, clock, &mut rows, "a", u.id, 23).await;
    record_batch(store, clock, &mut rows, "a", other.id, 4).await;
    clock.advance(Duration::seconds(1));
    record_batch(store, clock, &mut rows, "b", u.id, 7).await;
    clock.advance(Duration::seconds(1));
    // Separate calls at one instant tie too.
    for _ in 0..3 {
        record_batch(store, clock, &mut rows, "a", u.id, 1).await;
    }
    rows.sort_by_key(|r| std::cmp::Reverse((r.0, r.1)));

    let expect = |pred: &dyn Fn(&Row) -> bool| {
        rows.iter()
            .filter(|r| pred(r))
            .map(|r| r.1)
            .collect::<Vec<_>>()
    };
    let mine = expect(&|r| r.2 == u.id);
    assert_eq!(mine.len(), 33);
    for page in [1, 4, 5, 11, 32, 33, 34, 1000] {
        assert_eq!(
            ids(&all_events(store, &EventFilter::for_user(u.id), page).await),
            mine,
            "page size {page}"
        );
    }
    assert_eq!(
        ids(&all_events(store, &EventFilter::all(), 7).await),
        expect(&|_| true)
    );
    assert_eq!(
        ids(&all_events(store, &EventFilter::all().event_type(event_type("a")), 4).await),
        expect(&|r| r.3 == "a")
    );
    assert_eq!(
        ids(&all_events(
            store,
            &EventFilter::for_user(u.id).event_type(event_type("a")),
            6
        )
        .await),
        expect(&|r| r.2 == u.id && r.3 == "a")
    );
    // A page ending exactly at the last event says there is no more.
    let p = store
        .events()
        .list(&EventFilter::for_user(u.id), 33, None)
        .await
        .unwrap();
    assert_eq!(p.items.len(), 33);
    assert_eq!(p.next, None);
}

pub async fn payload_containment(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let other = user(store, "bob").await;
    let rec = async |kind: &str, who: Option<Uuid>, payload: Value| {
        clock.advance(Duration::seconds(1));
        record(store, kind, who, payload).await
    };
    let a = rec(
        "user.login",
        Some(u.id),
        json!({"country": "NZ", "device": {"os": "linux", "ver": 3}, "tags": ["x", "y"], "n": 1}),
    )
    .await;
    let b = rec(
        "page.view",
        Some(u.id),
        json!({"country": "NZ", "device": {"os": "mac"}, "tags": ["y"]}),
    )
    .await;
    let c = rec(
        "user.login",
        Some(other.id),
        json!({"country": "AU", "amount": 1.0, "nested": {"list": [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}]}}),
    )
    .await;
    let d = rec("system.raw", None, json!([1, 2, {"k": "v"}])).await;
    let e = rec("system.raw", None, json!("NZ")).await;
    let f = rec("system.raw", None, json!({"empty": {}, "nil": null})).await;

    let cases: Vec<(Value, Vec<&Event>)> = vec![
        (json!({"country": "NZ"}), vec![&a, &b]),
        (json!({"country": "nz"}), vec![]),
        (json!({"device": {"os": "linux"}}), vec![&a]),
        (json!({"device": {}}), vec![&a, &b]),
        (json!({"device": {"os": "linux", "ver": 4}}), vec![]),
        (json!({"tags": ["y"]}), vec![&a, &b]),
        (json!({"tags": ["y", "x", "x"]}), vec![&a]),
        (json!({"tags": []}), vec![&a, &b]),
        (json!({"tags": "y"}), vec![]),
        (json!({"amount": 1}), vec![&c]),
        (json!({"n": 1.0}), vec![&a]),
        (json!({"nested": {"list": [{"k": 2}]}}), vec![&c]),
        (json!({"nested": {"list": [{"k": 2, "v": "a"}]}}), vec![]),
        (
            json!({"nested": {"list": [{"v": "b"}, {"k": 1}]}}),
            vec![&c],
        ),
        (json!({}), vec![&a, &b, &c, &f]),
        (json!([2]), vec![&d]),
        (json!([{"k": "v"}, 1]), vec![&d]),
        (json!([]), vec![&d]),
        (json!(2), vec![&d]),
        (json!("NZ"), vec![&e]),
        (json!({"nil": null}), vec![&f]),
        (json!({"empty": {}}), vec![&f]),
        (json!({"missing": null}), vec![]),
    ];
    for (probe, want) in cases {
        let got = all_events(
            store,
            &EventFilter::all().payload_contains(probe.clone()),
            2,
        )
        .await;
        let want = newest_first(want.into_iter().cloned().collect());
        assert_eq!(ids(&got), ids(&want), "payload @> {probe}");
    }
    // Combined with the other filters.
    let nz = json!({"country": "NZ"});
    assert_eq!(
        all_events(
            store,
            &EventFilter::for_user(u.id)
                .event_type(event_type("page.view"))
                .payload_contains(nz.clone()),
            10
        )
        .await,
        vec![b.clone()]
    );
    assert_eq!(
        all_events(
            store,
            &EventFilter::all()
                .event_type(event_type("user.login"))
                .payload_contains(json!({"country": "AU"})),
            10
        )
        .await,
        vec![c]
    );
    assert_eq!(
        all_events(
            store,
            &EventFilter::for_user(u.id)
                .payload_contains(nz)
                .range(TimeRange::until(b.created_at)),
            10
        )
        .await,
        vec![a]
    );
}

pub async fn count_in_a_range(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let t0 = now(clock);
    let h = |n: i64| t0 + Duration::hours(n);
    record(store, "user.login", Some(u.id), json!({})).await;
    clock.advance(Duration::hours(1));
    record(store, "user.login", None, json!({})).await;
    record(store, "page.view", Some(u.id), json!({})).await;
    clock.advance(Duration::hours(1));
    record(store, "user.login", Some(u.id), json!({})).await;

    let login = event_type("user.login");
    let count = |range: TimeRange| {
        let login = login.clone();
        async move { store.events().count(&login, range).await.unwrap() }
    };
    assert_eq!(count(TimeRange::all()).await, 3);
    assert_eq!(count(TimeRange::between(h(1), h(2))).await, 1);
    assert_eq!(count(TimeRange::since(h(1))).await, 2);
    assert_eq!(count(TimeRange::until(h(1))).await, 1);
    assert_eq!(count(TimeRange::until(t0)).await, 0);
    assert_eq!(
        count(TimeRange::since(h(2) + Duration::microseconds(1))).await,
        0
    );
    assert_eq!(
        store
            .events()
            .count(&event_type("page.view"), TimeRange::all())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .events()
            .count(&event_type("never.seen"), TimeRange::all())
            .await
            .unwrap(),
        0
    );
}

pub async fn count_by_bucket_across_a_day_boundary(store: &Store, clock: &ManualClock) {
    let d1 = |h: u32, m: u32, s: u32| Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap();
    let d2 = |h: u32, m: u32, s: u32| Utc.with_ymd_and_hms(2026, 3, 2, h, m, s).unwrap();
    let micro = Duration::microseconds(1);
    let u = user(store, "ada").await;
    let at = async |t: DateTime<Utc>, kinds: &[&str]| {
        clock.set(t);
        for k in kinds {
            record(store, k, Some(u.id), json!({})).await;
        }
    };
    at(d1(22, 30, 0), &["login", "view"]).await;
    at(d1(23, 0, 0) - micro, &["login"]).await;
    at(d1(23, 0, 0), &["login"]).await;
    at(d2(0, 0, 0) - micro, &["view"]).await;
    at(d2(0, 0, 0), &["login"]).await;
    // Types are ordered by their bytes ("a_z" before "ab"), not by a
    // locale's collation.
    at(d2(1, 15, 0), &["view", "ab", "a_z"]).await;

    let bc = |bucket: DateTime<Utc>, t: &str, count: u64| BucketCount {
        bucket,
        event_type: event_type(t),
        count,
    };
    let buckets = |bucket: TimeBucket, range: TimeRange, only: Option<&str>| {
        let only = only.map(event_type);
        async move {
            store
                .events()
                .count_by_bucket(bucket, range, only.as_ref())
                .await
                .unwrap()
        }
    };
    assert_eq!(
        buckets(TimeBucket::Hour, TimeRange::all(), None).await,
        vec![
            bc(d1(22, 0, 0), "login", 2),
            bc(d1(22, 0, 0), "view", 1),
            bc(d1(23, 0, 0), "login", 1),
            bc(d1(23, 0, 0), "view", 1),
            bc(d2(0, 0, 0), "login", 1),
            bc(d2(1, 0, 0), "a_z", 1),
            bc(d2(1, 0, 0), "ab", 1),
            bc(d2(1, 0, 0), "view", 1),
        ]
    );
    assert_eq!(
        buckets(TimeBucket::Day, TimeRange::all(), None).await,
        vec![
            bc(d1(0, 0, 0), "login", 3),
            bc(d1(0, 0, 0), "view", 2),
            bc(d2(0, 0, 0), "a_z", 1),
            bc(d2(0, 0, 0), "ab", 1),
            bc(d2(0, 0, 0), "login", 1),
            bc(d2(0, 0, 0), "view", 1),
        ]
    );
    assert_eq!(
        buckets(TimeBucket::Day, TimeRange::all(), Some("login")).await,
        vec![bc(d1(0, 0, 0), "login", 3), bc(d2(0, 0, 0), "login", 1)]
    );
    assert_eq!(
        buckets(
            TimeBucket::Hour,
            TimeRange::between(d1(23, 0, 0), d2(1, 0, 0)),
            None
        )
        .await,
        vec![
            bc(d1(23, 0, 0), "login", 1),
            bc(d1(23, 0, 0), "view", 1),
            bc(d2(0, 0, 0), "login", 1),
        ]
    );
    assert_eq!(
        buckets(
            TimeBucket::Hour,
            TimeRange::between(d1(23, 0, 0) - micro, d1(23, 0, 0)),
            None
        )
        .await,
        vec![bc(d1(22, 0, 0), "login", 1)]
    );
    assert_eq!(
        buckets(TimeBucket::Day, TimeRange::since(d2(0, 0, 0)), Some("view")).await,
        vec![bc(d2(0, 0, 0), "view", 1)]
    );
    assert!(
        buckets(
            TimeBucket::Hour,
            TimeRange::between(d2(5, 0, 0), d2(6, 0, 0)),
            None
        )
        .await
        .is_empty()
    );
    assert!(
        buckets(TimeBucket::Day, TimeRange::all(), Some("never.seen"))
            .await
            .is_empty()
    );
}

pub async fn invalid_limits_and_ranges_are_refused(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    record(store, "user.login", Some(u.id), json!({})).await;
    let before = snapshot(store).await;
    let all = EventFilter::all();
    for bad in [0, dreamnet_db::MAX_PAGE_SIZE + 1] {
        expect_invalid(store.users().list(bad, None).await, Field::Limit);
        expect_invalid(store.events().list(&all, bad, None).await, Field::Limit);
    }
    let t = now(clock);
    let login = event_type("user.login");
    for range in [
        TimeRange::between(t, t),
        TimeRange::between(t, t - Duration::seconds(1)),
    ] {
        expect_invalid(
            store
                .events()
                .list(&EventFilter::for_user(u.id).range(range), 10, None)
                .await,
            Field::TimeRange,
        );
        expect_invalid(store.events().count(&login, range).await, Field::TimeRange);
        for bucket in [TimeBucket::Hour, TimeBucket::Day] {
            expect_invalid(
                store.events().count_by_bucket(bucket, range, None).await,
                Field::TimeRange,
            );
        }
    }
    assert_unchanged(&before, &snapshot(store).await);
    // The largest page is allowed.
    assert_eq!(
        store
            .events()
            .list(&all, dreamnet_db::MAX_PAGE_SIZE, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

pub async fn health_and_migrate(store: &Store, _clock: &ManualClock) {
    assert_shareable(store);
    store.health().await.unwrap();
    // Whatever the backend needed is in place: nothing left to apply.
    assert_eq!(store.migrate().await.unwrap(), Vec::<String>::new());
    store.health().await.unwrap();
}

pub async fn instants_outside_what_postgresql_stores_are_refused(
    store: &Store,
    clock: &ManualClock,
) {
    let u = user(store, "ada").await;
    let e = record(store, "user.login", Some(u.id), json!({})).await;
    let before = snapshot(store).await;
    let login = event_type("user.login");
    let earliest = dreamnet_db::earliest_timestamp();
    let too_early = [
        DateTime::<Utc>::MIN_UTC,
        earliest - Duration::microseconds(1),
    ];
    for t in too_early {
        for range in [
            TimeRange::since(t),
            TimeRange::until(t),
            TimeRange::between(t, now(clock)),
        ] {
            expect_invalid(
                store
                    .events()
                    .list(&EventFilter::all().range(range), 10, None)
                    .await,
                Field::TimeRange,
            );
            expect_invalid(store.events().count(&login, range).await, Field::TimeRange);
            expect_invalid(
                store
                    .events()
                    .count_by_bucket(TimeBucket::Day, range, None)
                    .await,
                Field::TimeRange,
            );
        }
        let cursor = Cursor::new(t, e.id);
        expect_invalid(
            store
                .events()
                .list(&EventFilter::all(), 10, Some(cursor))
                .await,
            Field::Cursor,
        );
        expect_invalid(store.users().list(10, Some(cursor)).await, Field::Cursor);
        expect_invalid(
            store.api_keys().issue(u.id, "billing", Some(t)).await,
            Field::ExpiresAt,
        );
        let text = format!("{}_{}", t.timestamp_micros(), e.id.simple());
        match text.parse::<Cursor>() {
            Err(Error::InvalidInput {
                field: Field::Cursor,
                ..
            }) => {}
            other => panic!("{text}: expected an invalid cursor, got {other:?}"),
        }
    }
    assert_unchanged(&before, &snapshot(store).await);
    // The edges themselves are fine everywhere: the earliest instant, and
    // the latest chrono can represent (PostgreSQL's range ends later).
    for range in [
        TimeRange::since(earliest),
        TimeRange::until(DateTime::<Utc>::MAX_UTC),
        TimeRange::between(earliest, DateTime::<Utc>::MAX_UTC),
    ] {
        let page = store
            .events()
            .list(&EventFilter::all().range(range), 10, None)
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1, "{range:?}");
        assert_eq!(
            store.events().count(&login, range).await.unwrap(),
            1,
            "{range:?}"
        );
    }
    let past_the_start = Cursor::new(DateTime::<Utc>::MAX_UTC, uuid::Uuid::max());
    let page = store
        .events()
        .list(&EventFilter::all(), 10, Some(past_the_start))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let before_everything = Cursor::new(earliest, uuid::Uuid::nil());
    assert_eq!(
        store
            .users()
            .list(10, Some(before_everything))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

/// Events recorded at `t` (the clock set there), `n` of them in one batch
/// so that they share one timestamp.
async fn record_at(
    store: &Store,
    clock: &ManualClock,
    t: DateTime<Utc>,
    kind: &str,
    user: Option<Uuid>,
    n: usize,
) -> Vec<Uuid> {
    clock.set(t);
    let batch = (0..n)
        .map(|i| {
            let new = NewEvent::new(event_type(kind), json!({ "i": i }));
            match user {
                Some(u) => new.user(u),
                None => new,
            }
        })
        .collect();
    store.events().record_many(batch).await.unwrap()
}

pub async fn purge_before_deletes_only_older_events_of_the_type(
    store: &Store,
    clock: &ManualClock,
) {
    let u = user(store, "ada").await;
    let t0 = now(clock);
    let day = Duration::days(1);
    let old_logins = record_at(store, clock, t0, "user.login", Some(u.id), 3).await;
    let old_views = record_at(store, clock, t0 + day, "page.view", None, 2).await;
    let cutoff = t0 + day * 2;
    // Exactly at the cutoff: kept (the cutoff is excluded).
    let at_cutoff = record_at(store, clock, cutoff, "user.login", Some(u.id), 2).await;
    let newer = record_at(store, clock, cutoff + day, "page.view", Some(u.id), 1).await;

    let only_logins = store
        .events()
        .purge_before(cutoff)
        .event_type(event_type("user.login"))
        .run()
        .await
        .unwrap();
    assert_eq!(only_logins.deleted, 3);
    assert!(only_logins.finished);
    assert_eq!(only_logins.reached, Some(t0));
    let left = id_set(&all_events(store, &EventFilter::all(), 50).await);
    let expected: HashSet<Uuid> = old_views
        .iter()
        .chain(&at_cutoff)
        .chain(&newer)
        .copied()
        .collect();
    assert_eq!(left, expected);
    assert!(old_logins.iter().all(|id| !left.contains(id)));

    let rest = store.events().purge_before(cutoff).run().await.unwrap();
    assert_eq!((rest.deleted, rest.finished), (2, true));
    let left = id_set(&all_events(store, &EventFilter::all(), 50).await);
    let expected: HashSet<Uuid> = at_cutoff.iter().chain(&newer).copied().collect();
    assert_eq!(left, expected);
    // The survivors are still counted and found by user.
    assert_eq!(
        store
            .events()
            .count(&event_type("user.login"), TimeRange::all())
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        all_events(store, &EventFilter::for_user(u.id), 50)
            .await
            .len(),
        3
    );

    // Nothing left to purge: one empty batch, finished.
    let again = store.events().purge_before(cutoff).run().await.unwrap();
    assert_eq!(
        again,
        PurgeReport {
            deleted: 0,
            batches: 1,
            reached: None,
            finished: true
        }
    );
}

pub async fn purge_runs_in_batches_stops_and_resumes(store: &Store, clock: &ManualClock) {
    let t0 = now(clock);
    // 12 events sharing one instant, then 13 a second apart: batches of 5
    // cut through the equal timestamps.
    let mut old: Vec<Uuid> = record_at(store, clock, t0, "job.run", None, 12).await;
    for i in 0..13 {
        old.extend(
            record_at(
                store,
                clock,
                t0 + Duration::seconds(1 + i),
                "job.run",
                None,
                1,
            )
            .await,
        );
    }
    let cutoff = t0 + Duration::hours(1);
    let kept = record_at(store, clock, cutoff, "job.run", None, 4).await;

    // Stopped after the second batch.
    let mut seen = Vec::new();
    let stopped = store
        .events()
        .purge_before(cutoff)
        .batch_size(5)
        .run_with(|p| {
            seen.push(p.deleted);
            if p.batches == 2 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .await
        .unwrap();
    assert_eq!(seen, vec![5, 10]);
    assert_eq!(
        (stopped.deleted, stopped.batches, stopped.finished),
        (10, 2, false)
    );
    assert_eq!(stopped.reached, Some(t0));
    let left = all_events(store, &EventFilter::all(), 100).await;
    assert_eq!(left.len(), 25 - 10 + 4);
    // Oldest first: what is left of the old ones is the newest 15 of them.
    let left_old: Vec<_> = left.iter().filter(|e| e.created_at < cutoff).collect();
    assert_eq!(left_old.len(), 15);
    assert_eq!(
        left_old.iter().filter(|e| e.created_at == t0).count(),
        2,
        "the 12 at t0 go first"
    );

    // Resumed: picks up the rest, in batches, and reports each.
    let mut seen = Vec::new();
    let resumed = store
        .events()
        .purge_before(cutoff)
        .batch_size(5)
        .run_with(|p| {
            seen.push(p.deleted);
            std::ops::ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assert_eq!(seen, vec![5, 10, 15]);
    assert_eq!((resumed.deleted, resumed.finished), (15, true));
    // A full last batch needs one more, empty, to know it is the end.
    assert_eq!(resumed.batches, 4);
    assert_eq!(resumed.reached, Some(t0 + Duration::seconds(13)));
    let left = id_set(&all_events(store, &EventFilter::all(), 100).await);
    assert_eq!(left, kept.iter().copied().collect::<HashSet<_>>());
    assert!(old.iter().all(|id| !left.contains(id)));
}

pub async fn purge_refuses_bad_batch_sizes(store: &Store, clock: &ManualClock) {
    let t0 = now(clock);
    let ids = record_at(store, clock, t0, "job.run", None, 3).await;
    let cutoff = t0 + Duration::seconds(1);
    for n in [0, dreamnet_db::MAX_PURGE_BATCH + 1] {
        expect_invalid(
            store
                .events()
                .purge_before(cutoff)
                .batch_size(n)
                .run()
                .await,
            Field::Limit,
        );
    }
    let too_early = dreamnet_db::earliest_timestamp() - Duration::microseconds(1);
    expect_invalid(
        store.events().purge_before(too_early).run().await,
        Field::TimeRange,
    );
    let left = id_set(&all_events(store, &EventFilter::all(), 10).await);
    assert_eq!(left, ids.iter().copied().collect::<HashSet<_>>());
    // The largest batch is accepted.
    let all = store
        .events()
        .purge_before(cutoff)
        .batch_size(dreamnet_db::MAX_PURGE_BATCH)
        .run()
        .await
        .unwrap();
    assert_eq!((all.deleted, all.batches, all.finished), (3, 1, true));
}
