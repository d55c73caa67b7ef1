//! Analytics and search: active users, funnels, retention, breakdowns,
//! top types, full-text search over events and users.

use chrono::{DateTime, Duration, TimeZone, Utc};
use dreamnet_db::{
    EventSearch, Field, Funnel, ManualClock, NewEvent, NewUser, Period, Retention, SearchOrder,
    SearchPage, Store, TimeRange, User,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;

/// Monday 2026-03-02 00:00 UTC: the first day of the tests' weeks.
fn d0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
}

fn day(n: i64) -> Duration {
    Duration::days(n)
}

async fn user(store: &Store, name: &str) -> User {
    store
        .users()
        .create(NewUser::with_email(email(&format!("{name}@example.com"))))
        .await
        .unwrap()
}

/// Records an event at `at`.
async fn at(
    store: &Store,
    clock: &ManualClock,
    at: DateTime<Utc>,
    kind: &str,
    user: Option<Uuid>,
    payload: Value,
) -> Event {
    clock.set(at);
    let mut new = NewEvent::new(event_type(kind), payload);
    if let Some(u) = user {
        new = new.user(u);
    }
    store.events().record(new).await.unwrap()
}

fn users_per_bucket(answer: &[dreamnet_db::ActiveUsers]) -> Vec<(DateTime<Utc>, u64)> {
    answer.iter().map(|a| (a.bucket, a.users)).collect()
}

pub async fn active_users_per_day_week_and_month(store: &Store, clock: &ManualClock) {
    let (a, b, c) = (
        user(store, "a").await.id,
        user(store, "b").await.id,
        user(store, "c").await.id,
    );
    let h = Duration::hours;
    at(store, clock, d0() + h(1), "user.login", Some(a), json!({})).await;
    at(store, clock, d0() + h(2), "user.login", Some(a), json!({})).await;
    at(store, clock, d0() + h(3), "page.view", Some(b), json!({})).await;
    at(store, clock, d0() + h(4), "page.view", None, json!({})).await;
    at(
        store,
        clock,
        d0() + day(1) + h(1),
        "page.view",
        Some(a),
        json!({}),
    )
    .await;
    at(
        store,
        clock,
        d0() + day(8),
        "user.login",
        Some(c),
        json!({}),
    )
    .await;
    let analytics = store.analytics();

    let three_days = TimeRange::between(d0(), d0() + day(3));
    let daily = analytics
        .active_users(Period::Day, three_days, None)
        .await
        .unwrap();
    assert_eq!(
        users_per_bucket(&daily),
        vec![(d0(), 2), (d0() + day(1), 1), (d0() + day(2), 0)]
    );
    let logins = analytics
        .active_users(Period::Day, three_days, Some(&event_type("user.login")))
        .await
        .unwrap();
    assert_eq!(
        users_per_bucket(&logins),
        vec![(d0(), 1), (d0() + day(1), 0), (d0() + day(2), 0)]
    );

    let weekly = analytics
        .active_users(Period::Week, TimeRange::between(d0(), d0() + day(14)), None)
        .await
        .unwrap();
    assert_eq!(
        users_per_bucket(&weekly),
        vec![(d0(), 2), (d0() + day(7), 1)]
    );

    // 2026-03-01 is a Sunday: its week started on Monday 2026-02-23.
    let monthly = analytics
        .active_users(
            Period::Month,
            TimeRange::between(d0() - day(1), d0() + day(14)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(users_per_bucket(&monthly), vec![(d0() - day(1), 3)]);
    let sunday = analytics
        .active_users(
            Period::Week,
            TimeRange::between(d0() - day(1), d0() + day(1)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        users_per_bucket(&sunday),
        vec![(d0() - day(7), 0), (d0(), 2)]
    );

    // Partial buckets count only the events within the range.
    let partial = analytics
        .active_users(
            Period::Day,
            TimeRange::between(d0() + Duration::minutes(150), d0() + day(1) + h(2)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        users_per_bucket(&partial),
        vec![(d0(), 1), (d0() + day(1), 1)]
    );
}

pub async fn funnel_counts_users_in_order_within_the_window(store: &Store, clock: &ManualClock) {
    let mut u = Vec::new();
    for i in 0..8 {
        u.push(Some(user(store, &format!("f{i}")).await.id));
    }
    let (signup, key, call) = ("user.signup", "key.issued", "api.call");
    let e = json!({});
    // u0: every step in order.
    at(store, clock, d0(), signup, u[0], e.clone()).await;
    at(store, clock, d0() + day(1), key, u[0], e.clone()).await;
    at(store, clock, d0() + day(2), call, u[0], e.clone()).await;
    // u1: the call came before the key: two steps.
    at(store, clock, d0(), signup, u[1], e.clone()).await;
    at(store, clock, d0() + day(1), call, u[1], e.clone()).await;
    at(store, clock, d0() + day(2), key, u[1], e.clone()).await;
    // u2: the key came after the window: one step.
    at(store, clock, d0(), signup, u[2], e.clone()).await;
    at(store, clock, d0() + day(8), key, u[2], e.clone()).await;
    // u3: entered late in the range; later steps after it, in the window.
    at(store, clock, d0() + day(9), signup, u[3], e.clone()).await;
    at(store, clock, d0() + day(11), key, u[3], e.clone()).await;
    at(store, clock, d0() + day(12), call, u[3], e.clone()).await;
    // u4: a key before signing up does not count.
    at(store, clock, d0(), key, u[4], e.clone()).await;
    at(store, clock, d0() + day(1), signup, u[4], e.clone()).await;
    // u5: signed up before the range too; enters at the first in range.
    at(store, clock, d0() - day(1), signup, u[5], e.clone()).await;
    at(store, clock, d0() + day(1), signup, u[5], e.clone()).await;
    at(store, clock, d0() + day(2), key, u[5], e.clone()).await;
    // u6: the key at the very instant of signing up is not after it.
    at(store, clock, d0() + day(3), signup, u[6], e.clone()).await;
    at(store, clock, d0() + day(3), key, u[6], e.clone()).await;
    // u7: entered after the range: not counted.
    at(store, clock, d0() + day(10), signup, u[7], e.clone()).await;
    // No user: never counted.
    at(store, clock, d0(), signup, None, e.clone()).await;

    let range = TimeRange::between(d0(), d0() + day(10));
    let steps = [event_type(signup), event_type(key), event_type(call)];
    let answer = store
        .analytics()
        .funnel(&Funnel::new(steps.clone(), day(7), range))
        .await
        .unwrap();
    let counts: Vec<(String, u64)> = answer
        .iter()
        .map(|s| (s.event_type.to_string(), s.users))
        .collect();
    assert_eq!(
        counts,
        vec![
            (signup.to_owned(), 7),
            (key.to_owned(), 4),
            (call.to_owned(), 2)
        ]
    );

    // The window's end is excluded: u0's key exactly one day after.
    let two = [event_type(signup), event_type(key)];
    let one_day = store
        .analytics()
        .funnel(&Funnel::new(two.clone(), day(1), range))
        .await
        .unwrap();
    assert_eq!(one_day[1].users, 0);
    let just_over = store
        .analytics()
        .funnel(&Funnel::new(two, day(1) + Duration::microseconds(1), range))
        .await
        .unwrap();
    assert_eq!((just_over[0].users, just_over[1].users), (7, 2));
}

pub async fn retention_by_weekly_cohort(store: &Store, clock: &ManualClock) {
    let names = ["a", "b", "c", "d", "e"];
    let mut ids = Vec::new();
    for n in names {
        ids.push(Some(user(store, &format!("r{n}")).await.id));
    }
    let [a, b, c, d, e] = [ids[0], ids[1], ids[2], ids[3], ids[4]];
    let h = Duration::hours;
    let (signup, call) = ("user.signup", "api.call");
    let p = json!({});
    at(store, clock, d0() - day(3), signup, d, p.clone()).await;
    at(store, clock, d0(), signup, a, p.clone()).await;
    at(store, clock, d0() + day(1), signup, b, p.clone()).await;
    at(store, clock, d0() + day(2), call, d, p.clone()).await;
    at(store, clock, d0() + day(8), signup, c, p.clone()).await;
    at(store, clock, d0() + day(8) + h(1), call, c, p.clone()).await;
    at(store, clock, d0() + day(9), call, a, p.clone()).await;
    at(store, clock, d0() + day(15), call, b, p.clone()).await;
    at(store, clock, d0() + day(16), call, c, p.clone()).await;
    at(store, clock, d0() + day(22), signup, e, p.clone()).await;
    at(store, clock, d0() + day(2), call, None, p.clone()).await;

    let range = TimeRange::between(d0(), d0() + day(21));
    let table = |cohorts: Vec<dreamnet_db::Cohort>| -> Vec<(DateTime<Utc>, u64, Vec<u64>)> {
        cohorts
            .into_iter()
            .map(|c| (c.start, c.users, c.active))
            .collect()
    };
    let any = store
        .analytics()
        .retention(&Retention::new(Period::Week, range))
        .await
        .unwrap();
    assert_eq!(
        table(any.clone()),
        vec![
            (d0(), 2, vec![2, 1, 1]),
            (d0() + day(7), 1, vec![1, 1]),
            (d0() + day(14), 0, vec![0]),
        ]
    );
    assert_eq!(any[0].retained(1), Some(0.5));
    assert_eq!(any[2].retained(0), Some(0.0));
    assert_eq!(any[1].retained(2), None);

    let calls = store
        .analytics()
        .retention(
            &Retention::new(Period::Week, range)
                .cohort_event(event_type(signup))
                .active_event(event_type(call)),
        )
        .await
        .unwrap();
    assert_eq!(
        table(calls),
        vec![
            (d0(), 2, vec![0, 1, 1]),
            (d0() + day(7), 1, vec![1, 1]),
            (d0() + day(14), 0, vec![0]),
        ]
    );
}

pub async fn breakdown_by_payload_key_with_top_rest_and_missing(
    store: &Store,
    clock: &ManualClock,
) {
    let mut t = d0();
    let mut next = || {
        t += Duration::minutes(1);
        t
    };
    for country in ["FR", "US", "DE", "US", "FR", "JP", "US", "DE", "FR"] {
        let when = next();
        at(
            store,
            clock,
            when,
            "page.view",
            None,
            json!({"country": country}),
        )
        .await;
    }
    let when = next();
    at(
        store,
        clock,
        when,
        "page.view",
        None,
        json!({"country": 33}),
    )
    .await;
    let when = next();
    at(
        store,
        clock,
        when,
        "page.view",
        None,
        json!({"other": "FR"}),
    )
    .await;
    let when = next();
    at(store, clock, when, "page.view", None, json!("FR")).await;
    let when = next();
    at(
        store,
        clock,
        when,
        "user.login",
        None,
        json!({"country": "FR", "a'b\"c": "x"}),
    )
    .await;
    at(
        store,
        clock,
        d0() + day(2),
        "page.view",
        None,
        json!({"country": "JP"}),
    )
    .await;

    let day_range = TimeRange::between(d0(), d0() + day(1));
    let views = event_type("page.view");
    let top2 = store
        .analytics()
        .breakdown("country", day_range, Some(&views), 2)
        .await
        .unwrap();
    let values: Vec<(&str, u64)> = top2
        .values
        .iter()
        .map(|v| (v.value.as_str(), v.count))
        .collect();
    // FR and US tie: bytewise order.
    assert_eq!(values, vec![("FR", 3), ("US", 3)]);
    assert_eq!((top2.other, top2.missing), (3, 3));

    let all = store
        .analytics()
        .breakdown("country", day_range, None, 10)
        .await
        .unwrap();
    let values: Vec<(&str, u64)> = all
        .values
        .iter()
        .map(|v| (v.value.as_str(), v.count))
        .collect();
    assert_eq!(values, vec![("FR", 4), ("US", 3), ("DE", 2), ("JP", 1)]);
    assert_eq!((all.other, all.missing), (0, 3));

    let odd_key = store
        .analytics()
        .breakdown("a'b\"c", day_range, None, 1)
        .await
        .unwrap();
    assert_eq!(odd_key.values.len(), 1);
    assert_eq!(odd_key.values[0].value, "x");
    assert_eq!((odd_key.other, odd_key.missing), (0, 12));
}

pub async fn top_event_types_in_a_range(store: &Store, clock: &ManualClock) {
    let mut minute = 0;
    for kind in [
        "user.login",
        "page.view",
        "user.signup",
        "page.view",
        "user.login",
        "page.view",
        "user.login",
    ] {
        minute += 1;
        at(
            store,
            clock,
            d0() + Duration::minutes(minute),
            kind,
            None,
            json!({}),
        )
        .await;
    }
    at(store, clock, d0() + day(3), "user.signup", None, json!({})).await;
    at(store, clock, d0() + day(3), "user.signup", None, json!({})).await;
    let range = TimeRange::between(d0(), d0() + day(1));
    let top = |n| async move {
        store
            .analytics()
            .top_event_types(range, n)
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.event_type.to_string(), t.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        top(2).await,
        vec![("page.view".to_owned(), 3), ("user.login".to_owned(), 3)]
    );
    assert_eq!(top(5).await.len(), 3);
    assert_eq!(top(5).await[2], ("user.signup".to_owned(), 1));
}

pub async fn analytics_input_is_validated(store: &Store, _clock: &ManualClock) {
    let a = store.analytics();
    let range = TimeRange::between(d0(), d0() + day(7));
    let open = TimeRange::since(d0());
    let backwards = TimeRange::between(d0(), d0());
    let view = event_type("page.view");

    expect_invalid(
        a.active_users(Period::Day, open, None).await,
        Field::TimeRange,
    );
    expect_invalid(
        a.active_users(Period::Day, backwards, None).await,
        Field::TimeRange,
    );
    expect_invalid(
        a.active_users(
            Period::Day,
            TimeRange::between(d0(), d0() + day(1001)),
            None,
        )
        .await,
        Field::Period,
    );
    assert_eq!(
        a.active_users(
            Period::Day,
            TimeRange::between(d0(), d0() + day(1000)),
            None
        )
        .await
        .unwrap()
        .len(),
        1000
    );

    let funnel = |steps: Vec<&str>, window: Duration, range: TimeRange| {
        Funnel::new(steps.into_iter().map(event_type), window, range)
    };
    expect_invalid(a.funnel(&funnel(vec![], day(7), range)).await, Field::Steps);
    expect_invalid(
        a.funnel(&funnel(vec!["a.b"], day(7), range)).await,
        Field::Steps,
    );
    expect_invalid(
        a.funnel(&funnel(vec!["a.b"; 11], day(7), range)).await,
        Field::Steps,
    );
    for window in [Duration::zero(), -day(1), day(367)] {
        expect_invalid(
            a.funnel(&funnel(vec!["a.b", "c.d"], window, range)).await,
            Field::Window,
        );
    }
    expect_invalid(
        a.funnel(&funnel(vec!["a.b", "c.d"], day(7), open)).await,
        Field::TimeRange,
    );

    expect_invalid(
        a.retention(&Retention::new(
            Period::Day,
            TimeRange::between(d0(), d0() + day(200)),
        ))
        .await,
        Field::Period,
    );
    expect_invalid(
        a.retention(&Retention::new(Period::Week, open)).await,
        Field::TimeRange,
    );

    expect_invalid(a.breakdown("", range, None, 5).await, Field::PayloadKey);
    expect_invalid(
        a.breakdown(&"k".repeat(256), range, None, 5).await,
        Field::PayloadKey,
    );
    expect_invalid(a.breakdown("country", range, None, 0).await, Field::Limit);
    expect_invalid(
        a.breakdown("country", range, Some(&view), 101).await,
        Field::Limit,
    );
    expect_invalid(
        a.breakdown("country", open, None, 5).await,
        Field::TimeRange,
    );
    expect_invalid(a.top_event_types(range, 0).await, Field::Limit);
    expect_invalid(a.top_event_types(range, 101).await, Field::Limit);
    expect_invalid(a.top_event_types(open, 5).await, Field::TimeRange);

    let many: Vec<String> = (0..17).map(|i| format!("w{i}")).collect();
    for text in ["", "  ,;- ", &many.join(" "), &"x".repeat(257)] {
        expect_invalid(
            a.search_events(&EventSearch::new(text), 10, None).await,
            Field::Query,
        );
    }
    expect_invalid(
        a.search_events(&EventSearch::new("word"), 0, None).await,
        Field::Limit,
    );
    expect_invalid(
        a.search_events(&EventSearch::new("word").range(backwards), 10, None)
            .await,
        Field::TimeRange,
    );
    for n in [0, dreamnet_db::MAX_SEARCH_CANDIDATES + 1] {
        expect_invalid(
            a.search_events(&EventSearch::new("word").candidates(n), 10, None)
                .await,
            Field::Candidates,
        );
    }
    expect_invalid(a.search_users("ab", 10, None).await, Field::Query);
    expect_invalid(a.search_users("ada", 1001, None).await, Field::Limit);
}

/// Every hit of `search`, a page of `limit` at a time.
async fn all_pages(store: &Store, search: &EventSearch, limit: usize) -> Vec<Uuid> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let SearchPage { items, next } = store
            .analytics()
            .search_events(search, limit, after)
            .await
            .unwrap();
        assert!(items.len() <= limit);
        out.extend(items.iter().map(|h| h.event.id));
        match next {
            Some(c) => after = Some(c.to_string().parse().unwrap()),
            None => return out,
        }
    }
}

pub async fn search_events_by_words_ranked_with_pages(store: &Store, clock: &ManualClock) {
    let m = Duration::minutes;
    let e1 = at(
        store,
        clock,
        d0() + m(1),
        "note.added",
        None,
        json!({"title": "Payment failed", "body": "card declined"}),
    )
    .await;
    let e2 = at(
        store,
        clock,
        d0() + m(2),
        "note.added",
        None,
        json!({"title": "payment retried", "meta": {"tags": ["Failed", "retry"]}}),
    )
    .await;
    let e3 = at(
        store,
        clock,
        d0() + m(3),
        "alert.raised",
        None,
        json!({"msg": "failed, failed and failed: payment"}),
    )
    .await;
    let e4 = at(
        store,
        clock,
        d0() + m(4),
        "note.added",
        None,
        json!({"failed": 1, "count": 42, "n": "42"}),
    )
    .await;
    let e5 = at(
        store,
        clock,
        d0() + m(5),
        "alert.raised",
        None,
        json!({"x": "FAILED"}),
    )
    .await;
    let ids = |v: &[&Event]| v.iter().map(|e| e.id).collect::<Vec<_>>();
    let set = |mut v: Vec<Uuid>| {
        v.sort();
        v
    };

    // Every word must match, in any string value at any depth, any case.
    let both = all_pages(store, &EventSearch::new("PAYMENT failed"), 10).await;
    assert_eq!(set(both), set(ids(&[&e1, &e2, &e3])));
    // Keys and numbers are not searched; words are whole.
    assert_eq!(
        all_pages(store, &EventSearch::new("42"), 10).await,
        ids(&[&e4])
    );
    assert!(
        all_pages(store, &EventSearch::new("title"), 10)
            .await
            .is_empty()
    );
    assert!(
        all_pages(store, &EventSearch::new("pay"), 10)
            .await
            .is_empty()
    );

    // Best first: e3 holds the word three times; ties newest first.
    let ranked = ids(&[&e3, &e5, &e2, &e1]);
    let newest = ids(&[&e5, &e3, &e2, &e1]);
    for limit in [1, 2, 3, 10] {
        assert_eq!(
            all_pages(store, &EventSearch::new("failed"), limit).await,
            ranked,
            "pages of {limit}"
        );
        assert_eq!(
            all_pages(
                store,
                &EventSearch::new("failed").order(SearchOrder::Newest),
                limit
            )
            .await,
            newest,
            "pages of {limit}"
        );
    }
    let first = store
        .analytics()
        .search_events(&EventSearch::new("failed"), 4, None)
        .await
        .unwrap();
    assert!(first.next.is_none());
    assert!(first.items[0].rank > first.items[1].rank);
    assert_eq!(first.items[1].rank, first.items[3].rank);
    assert_eq!(first.items[0].event, e3);

    // Type and range narrow it.
    let alerts = EventSearch::new("failed").event_type(event_type("alert.raised"));
    assert_eq!(all_pages(store, &alerts, 10).await, ids(&[&e3, &e5]));
    let window = EventSearch::new("failed")
        .range(TimeRange::between(e2.created_at, e4.created_at))
        .order(SearchOrder::Newest);
    assert_eq!(all_pages(store, &window, 10).await, ids(&[&e3, &e2]));
}

pub async fn search_users_by_email_wallet_and_display_name(store: &Store, clock: &ManualClock) {
    let create = async |new: NewUser| {
        clock.advance(Duration::seconds(1));
        store.users().create(new).await.unwrap()
    };
    let ada = create(
        NewUser::with_email(email("Ada.Lovelace@Example.com"))
            .metadata(json!({"display_name": "Countess"})),
    )
    .await;
    let wallet_user = create(
        NewUser::with_wallet(wallet("0xABCDEF0000000000000000000000000000000001"))
            .metadata(json!({"display_name": "ADA L."})),
    )
    .await;
    let bob =
        create(NewUser::with_email(email("bob@example.com")).metadata(json!({"display_name": 7})))
            .await;
    let sure =
        create(NewUser::with_wallet(nth_wallet(9)).metadata(json!({"display_name": "100%_sure"})))
            .await;
    let underscore = create(NewUser::with_email(email("a_b@example.com"))).await;
    create(NewUser::with_email(email("axb@example.com"))).await;
    let search = async |text: &str, limit: usize| {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .analytics()
                .search_users(text, limit, after)
                .await
                .unwrap();
            out.extend(page.items.iter().map(|u| u.id));
            match page.next {
                Some(c) => after = Some(c),
                None => return out,
            }
        }
    };
    // Email prefix or display-name words, any case, oldest first.
    assert_eq!(search("ada", 10).await, vec![ada.id, wallet_user.id]);
    assert_eq!(search("ada", 1).await, vec![ada.id, wallet_user.id]);
    assert_eq!(search("ADA.LOVE", 1).await, vec![ada.id]);
    assert_eq!(search("bob@ex", 10).await, vec![bob.id]);
    assert!(search("example.com", 10).await.is_empty());
    assert_eq!(search("count", 10).await, vec![ada.id]);
    assert_eq!(search("l. ad", 10).await, vec![wallet_user.id]);
    assert_eq!(search("sure 100", 10).await, vec![sure.id]);
    assert!(search("ada zed", 10).await.is_empty());
    // Wallets match by prefix only.
    assert_eq!(search("0xAbCdEf", 10).await, vec![wallet_user.id]);
    assert!(search("bcdef", 10).await.is_empty());
    // LIKE's wildcards are plain characters.
    assert_eq!(search("a_b", 10).await, vec![underscore.id]);
    assert!(search("b%m", 10).await.is_empty());
    assert!(search("nobody", 10).await.is_empty());
}

/// Every question that rollups serve, over ranges that cut days, weeks and
/// months, as one comparable value.
async fn rolled_up_questions(store: &Store) -> Vec<String> {
    let a = store.analytics();
    let h = Duration::hours;
    let view = event_type("page.view");
    let signup = event_type("user.signup");
    let cut = TimeRange::between(d0() + day(1) + h(5), d0() + day(20) + h(3));
    let weeks = TimeRange::between(d0() - day(7), d0() + day(28));
    let months = TimeRange::between(d0() - day(14), d0() + day(40));
    let mut out = Vec::new();
    for (period, range, kind) in [
        (Period::Day, cut, None),
        (Period::Day, cut, Some(&view)),
        (Period::Week, weeks, None),
        (Period::Week, cut, Some(&view)),
        (Period::Month, months, None),
        (Period::Month, months, Some(&signup)),
    ] {
        let answer = a.active_users(period, range, kind).await.unwrap();
        out.push(format!(
            "{period:?} {kind:?}: {:?}",
            users_per_bucket(&answer)
        ));
    }
    for retention in [
        Retention::new(Period::Week, TimeRange::between(d0(), d0() + day(28))),
        Retention::new(Period::Week, cut)
            .cohort_event(signup.clone())
            .active_event(view.clone()),
        Retention::new(Period::Month, months),
    ] {
        out.push(format!("{:?}", a.retention(&retention).await.unwrap()));
    }
    for range in [cut, months] {
        out.push(format!("{:?}", a.top_event_types(range, 3).await.unwrap()));
    }
    out
}

/// Weekly active users over the tests' four weeks from `d0`.
async fn weekly(store: &Store) -> Vec<u64> {
    let range = TimeRange::between(d0(), d0() + day(28));
    let answer = store
        .analytics()
        .active_users(Period::Week, range, None)
        .await
        .unwrap();
    answer.iter().map(|a| a.users).collect()
}

/// Rolling up days changes no answer: before and after `refresh_rollups`,
/// after a user is deleted (by another service, where there is SQL), and
/// after a purge, the answers are those a rebuild from the events gives.
pub async fn rollups_change_no_answer(h: &Harness, clock: &ManualClock) {
    let store: &Store = h;
    let users = [
        user(store, "ann").await.id,
        user(store, "bob").await.id,
        user(store, "cat").await.id,
        user(store, "dan").await.id,
    ];
    // Six weeks from two weeks before d0, at hours that vary; bob every
    // day, the others in a fixed pattern; some events without a user.
    for i in 0..42i64 {
        let t = d0() - day(14) + day(i) + Duration::hours(1 + i % 20);
        at(store, clock, t, "page.view", Some(users[1]), json!({})).await;
        let other = users[[0, 2, 3][(i % 3) as usize]];
        let kind = ["user.signup", "api.call", "page.view"][(i % 4) as usize % 3];
        at(
            store,
            clock,
            t + Duration::minutes(7),
            kind,
            Some(other),
            json!({}),
        )
        .await;
        if i % 5 == 0 {
            at(
                store,
                clock,
                t + Duration::minutes(9),
                "page.view",
                None,
                json!({}),
            )
            .await;
        }
    }
    let before = rolled_up_questions(store).await;
    // Mid-week and mid-month, inside the events: part of a week and of a
    // month rolled up, the rest read from the events.
    clock.set(d0() + day(10) + Duration::hours(3));
    store.analytics().refresh_rollups().await.unwrap();
    assert_eq!(rolled_up_questions(store).await, before, "partly rolled up");
    clock.set(d0() + day(60));
    let sealed = store.analytics().refresh_rollups().await.unwrap();
    if h.sql().await.is_some() {
        assert!(sealed >= 42, "every day with events is rolled up: {sealed}");
    } else {
        assert_eq!(sealed, 0, "the in-memory backend keeps no rollups");
    }
    assert_eq!(store.analytics().refresh_rollups().await.unwrap(), 0);
    assert_eq!(rolled_up_questions(store).await, before, "after rolling up");

    // bob is active every week; his deletion takes him out of every count.
    let weeks_before = weekly(store).await;
    match h.sql().await {
        Some(db) => {
            db.execute(
                "UPDATE events SET user_id = NULL WHERE user_id = $1",
                &[&users[1]],
            )
            .await
            .unwrap();
            db.execute("DELETE FROM users WHERE id = $1", &[&users[1]])
                .await
                .unwrap();
        }
        None => store.users().delete(users[1]).await.unwrap(),
    }
    let weeks_after = weekly(store).await;
    assert_eq!(
        weeks_after,
        weeks_before.iter().map(|n| n - 1).collect::<Vec<_>>(),
        "a deleted user leaves the rolled-up weeks"
    );
    let after_delete = rolled_up_questions(store).await;
    let everything = TimeRange::between(d0() - day(30), d0() + day(60));
    store.analytics().rebuild_rollups(everything).await.unwrap();
    assert_eq!(
        rolled_up_questions(store).await,
        after_delete,
        "after a user's deletion"
    );

    // A purge forgets the days it touches; a refresh rolls them up again.
    store
        .events()
        .purge_before(d0() + day(3) + Duration::hours(12))
        .run()
        .await
        .unwrap();
    let after_purge = rolled_up_questions(store).await;
    assert_ne!(
        after_purge, after_delete,
        "the purge removed counted events"
    );
    store.analytics().refresh_rollups().await.unwrap();
    assert_eq!(
        rolled_up_questions(store).await,
        after_purge,
        "after a purge"
    );
    store.analytics().rebuild_rollups(everything).await.unwrap();
    assert_eq!(
        rolled_up_questions(store).await,
        after_purge,
        "after a rebuild"
    );
}

pub async fn search_relevance_ranks_only_the_newest_candidates(store: &Store, clock: &ManualClock) {
    // The older a note, the more often it holds the word: ranking every
    // match would put the oldest first.
    let m = Duration::minutes;
    let mut notes = Vec::new();
    for (i, times) in [4, 3, 1, 2, 1].into_iter().enumerate() {
        let text = vec!["quokka"; times].join(" ");
        let e = at(
            store,
            clock,
            d0() + m(i as i64 + 1),
            "note.added",
            None,
            json!({"text": text}),
        )
        .await;
        notes.push(e.id);
    }
    let [e1, e2, e3, e4, e5] = notes[..] else {
        unreachable!()
    };
    // Newer than every note, of another type.
    let alert = at(
        store,
        clock,
        d0() + m(6),
        "alert.raised",
        None,
        json!({"text": "quokka quokka quokka quokka quokka"}),
    )
    .await
    .id;
    let notes_only = EventSearch::new("quokka").event_type(event_type("note.added"));

    // As many candidates as matches, or more: every match is ranked.
    for n in [5, 6, 10_000] {
        for limit in [1, 2, 10] {
            assert_eq!(
                all_pages(store, &notes_only.clone().candidates(n), limit).await,
                vec![e1, e2, e4, e5, e3],
                "{n} candidates, pages of {limit}"
            );
        }
    }
    // Three candidates: the newest three notes only, ranked; the older
    // notes are left out however well they match. Pages agree.
    for limit in [1, 2, 3, 10] {
        assert_eq!(
            all_pages(store, &notes_only.clone().candidates(3), limit).await,
            vec![e4, e5, e3],
            "pages of {limit}"
        );
    }
    // The candidates are the newest matches of the type and range asked.
    let before_e5 = notes_only
        .clone()
        .range(TimeRange::between(d0(), d0() + m(5)))
        .candidates(3);
    assert_eq!(all_pages(store, &before_e5, 2).await, vec![e2, e4, e3]);
    let any_type = EventSearch::new("quokka").candidates(2);
    assert_eq!(all_pages(store, &any_type, 1).await, vec![alert, e5]);
    // One candidate: the newest match alone.
    assert_eq!(
        all_pages(store, &notes_only.clone().candidates(1), 10).await,
        vec![e5]
    );

    // Newest first returns every match, whatever the candidates.
    let check = async || {
        for limit in [1, 2, 3, 10] {
            assert_eq!(
                all_pages(store, &notes_only.clone().candidates(3), limit).await,
                vec![e4, e5, e3],
                "pages of {limit}"
            );
            assert_eq!(
                all_pages(store, &notes_only.clone().candidates(5), limit).await,
                vec![e1, e2, e4, e5, e3],
                "pages of {limit}"
            );
            for n in [1, 3, 10_000] {
                assert_eq!(
                    all_pages(
                        store,
                        &notes_only.clone().order(SearchOrder::Newest).candidates(n),
                        limit
                    )
                    .await,
                    vec![e5, e4, e3, e2, e1],
                    "{n} candidates, pages of {limit}"
                );
            }
        }
    };
    check().await;

    // The same answers once thousands of newer events hold other words:
    // on PostgreSQL the matches then sit in the first of many heap blocks,
    // so the searches with few candidates walk the events newest first
    // rather than fetch every match.
    clock.set(d0() + day(1));
    let filler = "lorem ipsum dolor sit amet consectetur adipiscing elit ".repeat(6);
    for _ in 0..3 {
        let batch = (0..1_000)
            .map(|i| NewEvent::new(event_type("page.view"), json!({"text": filler, "n": i})))
            .collect();
        store.events().record_many(batch).await.unwrap();
    }
    check().await;
    let lorem = EventSearch::new("lorem").candidates(10);
    let newest = all_pages(store, &lorem.clone().order(SearchOrder::Newest), 100).await;
    assert_eq!(newest.len(), 3_000);
    assert_eq!(all_pages(store, &lorem, 4).await, newest[..10]);
}
