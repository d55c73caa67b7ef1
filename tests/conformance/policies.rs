//! API keys that carry their own policy: permissions, disable and enable,
//! name and metadata, credits with refills, per-key rate limits, one
//! verdict, usage counts and the batched `last_used`.

use std::time::Duration as StdDuration;

use chrono::{Duration, TimeZone};
use dreamnet_db::{
    Field, Json, KeyCheck, KeyCredits, KeyOutcome, KeyPolicy, KeyRateLimit, KeyRejection, KeyUsage,
    ManualClock, NewUser, RateLimitPolicy, Refill, Store, TimeBucket, TimeRange, User,
};
use serde_json::json;

use super::*;

async fn user(store: &Store, name: &str) -> User {
    store
        .users()
        .create(NewUser::with_email(email(&format!("{name}@example.com"))))
        .await
        .unwrap()
}

fn any() -> KeyCheck {
    KeyCheck::new()
}

#[track_caller]
fn refused(verdict: &dreamnet_db::KeyVerdict, why: KeyRejection) {
    assert_eq!(verdict.rejection, Some(why), "{verdict:?}");
    assert!(!verdict.is_valid());
}

pub async fn keys_without_a_policy_verify_as_before(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    let issued = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    let secret = issued.secret.expose_secret();
    assert!(issued.key.policy.is_empty());

    let verdict = store
        .api_keys()
        .verify(secret, &any().service("billing"))
        .await
        .unwrap();
    assert!(verdict.is_valid(), "{verdict:?}");
    assert_eq!(verdict.credits_remaining, None);
    assert!(verdict.rate_limits.is_empty());
    assert_eq!(verdict.key.as_ref().unwrap().id, issued.key.id);
    // They hold no permissions.
    let verdict = store
        .api_keys()
        .verify(secret, &any().require_all(["billing.read"]))
        .await
        .unwrap();
    refused(&verdict, KeyRejection::InsufficientPermissions);
    // validate and validate_for are unchanged.
    let key = store.api_keys().validate(secret).await.unwrap();
    assert_eq!(key.id, issued.key.id);
    expect_rejected(
        store.api_keys().validate_for(secret, "search").await,
        KeyRejection::WrongService,
    );
}

pub async fn a_policy_is_stored_and_read_back(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let policy = KeyPolicy::new()
        .name("billing worker")
        .metadata(json!({"team": "payments", "big": 12345678901234567890u64}))
        .permissions(["billing.read", "billing.write"])
        .credits(500)
        .refill(Refill::monthly(1000))
        .rate_limit("default", RateLimitPolicy::per_second(50).unwrap())
        .rate_limit("minute", RateLimitPolicy::per_minute(600, 100).unwrap());
    let issued = store
        .api_keys()
        .issue_with(u.id, "billing", None, policy.clone())
        .await
        .unwrap();
    let mut expected = policy;
    let credits = expected.credits.as_mut().unwrap();
    assert_eq!(credits.remaining, 500);
    // The first refill period is the one holding the issue time.
    credits.refilled_at = Some(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
    assert_eq!(issued.key.policy, expected);
    assert_eq!(
        store.api_keys().get(issued.key.id).await.unwrap().policy,
        expected
    );
    assert_eq!(
        store.api_keys().list_for_user(u.id).await.unwrap()[0].policy,
        expected
    );
    let verdict = store
        .api_keys()
        .verify(issued.secret.expose_secret(), &any())
        .await
        .unwrap();
    assert_eq!(verdict.key.as_ref().unwrap().policy, expected);
    assert_eq!(now(clock), issued.key.created_at);

    // Name and metadata are updatable, and clearable.
    let key = store
        .api_keys()
        .set_details(issued.key.id, Some("renamed"), Some(json!({"v": 2}).into()))
        .await
        .unwrap();
    assert_eq!(key.policy.name.as_deref(), Some("renamed"));
    assert_eq!(key.policy.metadata, Some(Json::from(json!({"v": 2}))));
    assert_eq!(
        key.policy.permissions, expected.permissions,
        "the rest stays"
    );
    let key = store
        .api_keys()
        .set_details(issued.key.id, None, None)
        .await
        .unwrap();
    assert_eq!((key.policy.name, key.policy.metadata), (None, None));
    assert_eq!(
        store
            .api_keys()
            .get(issued.key.id)
            .await
            .unwrap()
            .policy
            .name,
        None
    );
}

pub async fn permissions_all_and_any(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    let issued = store
        .api_keys()
        .issue_with(
            u.id,
            "billing",
            None,
            KeyPolicy::new().permissions(["billing.read", "media.read"]),
        )
        .await
        .unwrap();
    let secret = issued.secret.expose_secret();
    let verify =
        |check: KeyCheck| async move { store.api_keys().verify(secret, &check).await.unwrap() };

    assert!(verify(any().require_all(["billing.read"])).await.is_valid());
    assert!(
        verify(any().require_all(["billing.read", "media.read"]))
            .await
            .is_valid()
    );
    refused(
        &verify(any().require_all(["billing.read", "billing.write"])).await,
        KeyRejection::InsufficientPermissions,
    );
    assert!(
        verify(any().require_any(["billing.write", "media.read"]))
            .await
            .is_valid()
    );
    refused(
        &verify(any().require_any(["billing.write", "media.write"])).await,
        KeyRejection::InsufficientPermissions,
    );
    assert!(
        verify(
            any()
                .require_all(["billing.read"])
                .require_any(["media.read", "x"])
        )
        .await
        .is_valid()
    );
    // Permissions are exact strings: no prefix matching.
    refused(
        &verify(any().require_all(["billing"])).await,
        KeyRejection::InsufficientPermissions,
    );

    // A change holds from the next verification on.
    let key = store
        .api_keys()
        .set_permissions(issued.key.id, ["billing.write"])
        .await
        .unwrap();
    assert_eq!(
        key.policy.permissions.iter().collect::<Vec<_>>(),
        vec!["billing.write"]
    );
    refused(
        &verify(any().require_all(["billing.read"])).await,
        KeyRejection::InsufficientPermissions,
    );
    assert!(
        verify(any().require_all(["billing.write"]))
            .await
            .is_valid()
    );
    // The verdict carries what the key holds.
    let verdict = verify(any()).await;
    assert!(
        verdict
            .key
            .unwrap()
            .policy
            .permissions
            .contains("billing.write")
    );
}

pub async fn disable_and_enable(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let issued = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    let secret = issued.secret.expose_secret();
    let id = issued.key.id;

    let t = now(clock);
    let key = store.api_keys().disable(id).await.unwrap();
    assert_eq!(key.policy.disabled_at, Some(t));
    refused(
        &store.api_keys().verify(secret, &any()).await.unwrap(),
        KeyRejection::Disabled,
    );
    expect_rejected(
        store.api_keys().validate(secret).await,
        KeyRejection::Disabled,
    );
    // Disabling again keeps the first time.
    clock.advance(Duration::seconds(5));
    assert_eq!(
        store
            .api_keys()
            .disable(id)
            .await
            .unwrap()
            .policy
            .disabled_at,
        Some(t)
    );

    let key = store.api_keys().enable(id).await.unwrap();
    assert_eq!(key.policy.disabled_at, None);
    assert!(
        store
            .api_keys()
            .verify(secret, &any())
            .await
            .unwrap()
            .is_valid()
    );
    store.api_keys().validate(secret).await.unwrap();

    // Revocation stays final: enabling a revoked key does not bring it back.
    store.api_keys().disable(id).await.unwrap();
    store.api_keys().revoke(id).await.unwrap();
    store.api_keys().enable(id).await.unwrap();
    refused(
        &store.api_keys().verify(secret, &any()).await.unwrap(),
        KeyRejection::Revoked,
    );
}

pub async fn credits_are_spent_and_run_out(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    let issued = store
        .api_keys()
        .issue_with(u.id, "billing", None, KeyPolicy::new().credits(5))
        .await
        .unwrap();
    let secret = issued.secret.expose_secret();
    let verify = |cost: i64| async move {
        store
            .api_keys()
            .verify(secret, &any().cost(cost))
            .await
            .unwrap()
    };
    let v = verify(1).await;
    assert!(v.is_valid());
    assert_eq!(v.credits_remaining, Some(4));
    let v = verify(3).await;
    assert!(v.is_valid());
    assert_eq!(v.credits_remaining, Some(1));
    // Not enough for a cost of 2: refused, and nothing spent.
    let v = verify(2).await;
    refused(&v, KeyRejection::UsageExceeded);
    assert_eq!(v.credits_remaining, Some(1));
    // A cost of 0 checks without spending.
    let v = verify(0).await;
    assert!(v.is_valid());
    assert_eq!(v.credits_remaining, Some(1));
    let v = verify(1).await;
    assert_eq!(v.credits_remaining, Some(0));
    // At zero, refused, whatever the cost.
    for cost in [1, 0] {
        let v = verify(cost).await;
        refused(&v, KeyRejection::UsageExceeded);
        assert_eq!(v.credits_remaining, Some(0));
    }
    assert_eq!(
        store
            .api_keys()
            .get(issued.key.id)
            .await
            .unwrap()
            .policy
            .credits,
        Some(KeyCredits::new(0))
    );
    // validate spends nothing and ignores the budget.
    store.api_keys().validate(secret).await.unwrap();

    // New credits, then unlimited.
    store
        .api_keys()
        .set_credits(issued.key.id, Some(KeyCredits::new(1)))
        .await
        .unwrap();
    assert_eq!(verify(1).await.credits_remaining, Some(0));
    store
        .api_keys()
        .set_credits(issued.key.id, None)
        .await
        .unwrap();
    for _ in 0..3 {
        let v = verify(1).await;
        assert!(v.is_valid());
        assert_eq!(v.credits_remaining, None);
    }
}

pub async fn credits_refill_daily_and_monthly(store: &Store, clock: &ManualClock) {
    // The clock starts at 2026-03-01T12:00.
    let u = user(store, "ada").await;
    let daily = store
        .api_keys()
        .issue_with(
            u.id,
            "billing",
            None,
            KeyPolicy::new().credits(2).refill(Refill::daily(3)),
        )
        .await
        .unwrap();
    let monthly = store
        .api_keys()
        .issue_with(
            u.id,
            "billing",
            None,
            KeyPolicy::new().refill(Refill::monthly(1)),
        )
        .await
        .unwrap();
    assert_eq!(monthly.key.policy.credits.unwrap().remaining, 1);
    let spend = |secret: String| async move {
        let v = store.api_keys().verify(&secret, &any()).await.unwrap();
        (v.rejection, v.credits_remaining)
    };
    let d = daily.secret.expose_secret().to_owned();
    let m = monthly.secret.expose_secret().to_owned();
    assert_eq!(spend(d.clone()).await, (None, Some(1)));
    assert_eq!(spend(d.clone()).await, (None, Some(0)));
    assert_eq!(
        spend(d.clone()).await,
        (Some(KeyRejection::UsageExceeded), Some(0))
    );
    assert_eq!(spend(m.clone()).await, (None, Some(0)));
    assert_eq!(
        spend(m.clone()).await,
        (Some(KeyRejection::UsageExceeded), Some(0))
    );

    // 23:59:59 the same day: no refill yet.
    clock.advance(Duration::hours(11) + Duration::minutes(59) + Duration::seconds(59));
    assert_eq!(
        spend(d.clone()).await,
        (Some(KeyRejection::UsageExceeded), Some(0))
    );
    // Midnight: set back to the amount (not added), then spent from.
    clock.advance(Duration::seconds(1));
    assert_eq!(spend(d.clone()).await, (None, Some(2)));
    assert_eq!(
        store
            .api_keys()
            .get(daily.key.id)
            .await
            .unwrap()
            .policy
            .credits
            .unwrap()
            .refilled_at,
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap())
    );
    // The monthly key waits for April.
    assert_eq!(
        spend(m.clone()).await,
        (Some(KeyRejection::UsageExceeded), Some(0))
    );
    clock.advance(Duration::days(30));
    assert_eq!(spend(m.clone()).await, (None, Some(0)));
    // Unused credits do not pile up: a month later the daily key has 3.
    assert_eq!(spend(d.clone()).await, (None, Some(2)));
}

pub async fn rate_limits_refuse_with_retry_after(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    // 2 at once, then one per 30 s; and a budget, to see that a refusal by
    // a rate limit spends no credit.
    let policy = KeyPolicy::new()
        .credits(10)
        .rate_limit("default", RateLimitPolicy::per_minute(2, 2).unwrap());
    let issued = store
        .api_keys()
        .issue_with(u.id, "billing", None, policy)
        .await
        .unwrap();
    let secret = issued.secret.expose_secret();
    for left in [1, 0] {
        let v = store.api_keys().verify(secret, &any()).await.unwrap();
        assert!(v.is_valid(), "{v:?}");
        assert_eq!(v.rate_limits.len(), 1);
        assert_eq!(v.rate_limits[0].0, "default");
        assert_eq!(v.rate_limit().unwrap().remaining, left);
        assert_eq!(v.rate_limit().unwrap().limit, 2);
    }
    let v = store.api_keys().verify(secret, &any()).await.unwrap();
    refused(
        &v,
        KeyRejection::RateLimited {
            retry_after: StdDuration::from_secs(30),
        },
    );
    let decision = v.rate_limit().unwrap();
    assert!(!decision.allowed);
    assert!(
        decision
            .headers()
            .contains(&("Retry-After", "30".to_owned()))
    );
    assert_eq!(v.credits_remaining, None);
    assert_eq!(
        store
            .api_keys()
            .get(issued.key.id)
            .await
            .unwrap()
            .policy
            .credits
            .unwrap()
            .remaining,
        8,
        "a rate-limited verification spends no credit"
    );
    clock.advance(Duration::seconds(30));
    let v = store.api_keys().verify(secret, &any()).await.unwrap();
    assert!(v.is_valid());
    assert_eq!(v.credits_remaining, Some(7));

    // Limits can be replaced, and removed.
    store
        .api_keys()
        .set_rate_limits(
            issued.key.id,
            vec![KeyRateLimit {
                name: "wide".into(),
                policy: RateLimitPolicy::per_second(100).unwrap(),
            }],
        )
        .await
        .unwrap();
    let v = store.api_keys().verify(secret, &any()).await.unwrap();
    assert!(v.is_valid());
    assert_eq!(v.rate_limits[0].0, "wide");
    store
        .api_keys()
        .set_rate_limits(issued.key.id, Vec::new())
        .await
        .unwrap();
    let v = store.api_keys().verify(secret, &any()).await.unwrap();
    assert!(v.is_valid() && v.rate_limits.is_empty());
}

pub async fn one_verdict_for_every_rejection(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let api = store.api_keys();
    let malformed = api.verify("has space", &any()).await.unwrap();
    refused(&malformed, KeyRejection::Malformed);
    assert!(malformed.key.is_none());
    let unknown = api
        .verify(
            &format!("{}{}", dreamnet_db::KEY_PREFIX, "0".repeat(64)),
            &any(),
        )
        .await
        .unwrap();
    refused(&unknown, KeyRejection::Unknown);
    assert!(unknown.key.is_none());

    let revoked = api.issue(u.id, "billing", None).await.unwrap();
    api.revoke(revoked.key.id).await.unwrap();
    let v = api
        .verify(revoked.secret.expose_secret(), &any())
        .await
        .unwrap();
    refused(&v, KeyRejection::Revoked);
    assert_eq!(v.key.unwrap().id, revoked.key.id);

    let expiring = api
        .issue(u.id, "billing", Some(now(clock) + Duration::seconds(10)))
        .await
        .unwrap();
    let wrong = api
        .verify(expiring.secret.expose_secret(), &any().service("search"))
        .await
        .unwrap();
    refused(&wrong, KeyRejection::WrongService);
    clock.advance(Duration::seconds(10));
    let v = api
        .verify(expiring.secret.expose_secret(), &any())
        .await
        .unwrap();
    refused(&v, KeyRejection::Expired);

    // The order: a disabled key without the permission is refused as
    // disabled; a rate limit is applied before credits.
    let k = api
        .issue_with(u.id, "billing", None, KeyPolicy::new().credits(0))
        .await
        .unwrap();
    api.disable(k.key.id).await.unwrap();
    let v = api
        .verify(k.secret.expose_secret(), &any().require_all(["x"]))
        .await
        .unwrap();
    refused(&v, KeyRejection::Disabled);
    api.enable(k.key.id).await.unwrap();
    let v = api
        .verify(k.secret.expose_secret(), &any().require_all(["x"]))
        .await
        .unwrap();
    refused(&v, KeyRejection::InsufficientPermissions);
    let v = api.verify(k.secret.expose_secret(), &any()).await.unwrap();
    refused(&v, KeyRejection::UsageExceeded);
    // into_key gives the rejection as an error.
    expect_rejected(v.into_key(), KeyRejection::UsageExceeded);
}

pub async fn bad_policy_input_writes_nothing(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    let good = store
        .api_keys()
        .issue_with(
            u.id,
            "billing",
            None,
            KeyPolicy::new().permissions(["a"]).credits(3),
        )
        .await
        .unwrap();
    let before = snapshot(store).await;
    let api = store.api_keys();
    let issue =
        |policy: KeyPolicy| async move { api.issue_with(u.id, "billing", None, policy).await };

    expect_invalid(
        issue(KeyPolicy::new().permissions([""])).await,
        Field::Permission,
    );
    expect_invalid(
        issue(KeyPolicy::new().permissions(["has space"])).await,
        Field::Permission,
    );
    expect_invalid(issue(KeyPolicy::new().credits(-1)).await, Field::Credits);
    expect_invalid(
        issue(KeyPolicy::new().refill(Refill::daily(0))).await,
        Field::Refill,
    );
    expect_invalid(
        issue(KeyPolicy::new().credits(5).refill(Refill::monthly(-3))).await,
        Field::Refill,
    );
    expect_invalid(issue(KeyPolicy::new().name("")).await, Field::KeyName);
    expect_invalid(
        issue(KeyPolicy::new().metadata(json!([1, 2]))).await,
        Field::Metadata,
    );
    let limit = RateLimitPolicy::per_second(5).unwrap();
    expect_invalid(
        issue(
            KeyPolicy::new()
                .rate_limit("a", limit)
                .rate_limit("a", limit),
        )
        .await,
        Field::RateLimitPolicy,
    );
    // A limit of zero cannot even be built.
    expect_invalid(
        RateLimitPolicy::new(0, StdDuration::from_secs(1), 1),
        Field::RateLimitPolicy,
    );
    expect_invalid(
        RateLimitPolicy::new(1, StdDuration::from_secs(1), 0),
        Field::RateLimitPolicy,
    );

    let id = good.key.id;
    expect_invalid(api.set_permissions(id, ["ok", ""]).await, Field::Permission);
    expect_invalid(
        api.set_credits(id, Some(KeyCredits::new(-5))).await,
        Field::Credits,
    );
    expect_invalid(
        api.set_credits(id, Some(KeyCredits::new(5).with_refill(Refill::daily(0))))
            .await,
        Field::Refill,
    );
    expect_invalid(
        api.set_details(id, Some("x"), Some(json!("not an object").into()))
            .await,
        Field::Metadata,
    );
    expect_invalid(
        api.set_rate_limits(
            id,
            vec![KeyRateLimit {
                name: String::new(),
                policy: limit,
            }],
        )
        .await,
        Field::RateLimitPolicy,
    );
    // Bad checks are refused before anything is looked up or spent.
    let secret = good.secret.expose_secret();
    expect_invalid(api.verify(secret, &any().cost(-1)).await, Field::Cost);
    expect_invalid(
        api.verify(secret, &any().require_all([""])).await,
        Field::Permission,
    );
    expect_invalid(
        api.verify(secret, &any().require_any(["a b"])).await,
        Field::Permission,
    );
    api.flush_usage().await.unwrap();
    assert_unchanged(&before, &snapshot(store).await);
    assert!(
        api.usage(id, TimeBucket::Day, TimeRange::all())
            .await
            .unwrap()
            .is_empty(),
        "refused input counts no usage"
    );
}

pub async fn policy_changes_of_unknown_keys_are_not_found(store: &Store, _clock: &ManualClock) {
    let id = unknown_id();
    let api = store.api_keys();
    expect_not_found(api.disable(id).await, Entity::ApiKey, id);
    expect_not_found(api.enable(id).await, Entity::ApiKey, id);
    expect_not_found(api.set_permissions(id, ["a"]).await, Entity::ApiKey, id);
    expect_not_found(
        api.set_details(id, Some("n"), None).await,
        Entity::ApiKey,
        id,
    );
    expect_not_found(api.set_credits(id, None).await, Entity::ApiKey, id);
    expect_not_found(
        api.set_rate_limits(id, Vec::new()).await,
        Entity::ApiKey,
        id,
    );
}

pub async fn usage_is_counted_per_hour_and_day(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let api = store.api_keys();
    let issued = api
        .issue_with(
            u.id,
            "billing",
            None,
            KeyPolicy::new().permissions(["a"]).credits(3),
        )
        .await
        .unwrap();
    let other = api.issue(u.id, "billing", None).await.unwrap();
    let secret = issued.secret.expose_secret();
    let id = issued.key.id;
    // 12:00: two valid, one without the permission, one for another service.
    api.verify(secret, &any()).await.unwrap();
    api.validate(secret).await.unwrap();
    api.verify(secret, &any().require_all(["b"])).await.unwrap();
    expect_rejected(
        api.validate_for(secret, "x").await,
        KeyRejection::WrongService,
    );
    api.validate(other.secret.expose_secret()).await.unwrap();
    // 13:00: two valid (the credits left), then out of credits.
    clock.advance(Duration::hours(1));
    for _ in 0..3 {
        api.verify(secret, &any()).await.unwrap();
    }
    // The next day.
    clock.advance(Duration::days(1));
    api.verify(secret, &any()).await.unwrap();
    // Nothing written yet; then one flush.
    api.flush_usage().await.unwrap();

    let day1 = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let h12 = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let h13 = Utc.with_ymd_and_hms(2026, 3, 1, 13, 0, 0).unwrap();
    let day2 = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    let h13d2 = Utc.with_ymd_and_hms(2026, 3, 2, 13, 0, 0).unwrap();
    let u = |bucket, outcome, count| KeyUsage {
        bucket,
        outcome,
        count,
    };
    let hours = api
        .usage(id, TimeBucket::Hour, TimeRange::all())
        .await
        .unwrap();
    assert_eq!(
        hours,
        vec![
            u(h12, KeyOutcome::Valid, 2),
            u(h12, KeyOutcome::WrongService, 1),
            u(h12, KeyOutcome::InsufficientPermissions, 1),
            u(h13, KeyOutcome::Valid, 2),
            u(h13, KeyOutcome::UsageExceeded, 1),
            u(h13d2, KeyOutcome::UsageExceeded, 1),
        ]
    );
    let days = api
        .usage(id, TimeBucket::Day, TimeRange::all())
        .await
        .unwrap();
    assert_eq!(
        days,
        vec![
            u(day1, KeyOutcome::Valid, 4),
            u(day1, KeyOutcome::WrongService, 1),
            u(day1, KeyOutcome::InsufficientPermissions, 1),
            u(day1, KeyOutcome::UsageExceeded, 1),
            u(day2, KeyOutcome::UsageExceeded, 1),
        ]
    );
    let range = api
        .usage(id, TimeBucket::Hour, TimeRange::between(h13, day2))
        .await
        .unwrap();
    assert_eq!(
        range,
        vec![
            u(h13, KeyOutcome::Valid, 2),
            u(h13, KeyOutcome::UsageExceeded, 1)
        ]
    );
    // Flushing again adds what came since, nothing twice.
    api.verify(secret, &any().cost(0)).await.unwrap();
    api.flush_usage().await.unwrap();
    api.flush_usage().await.unwrap();
    let days = api
        .usage(
            id,
            TimeBucket::Day,
            TimeRange::between(day2, day2 + Duration::days(1)),
        )
        .await
        .unwrap();
    assert_eq!(days, vec![u(day2, KeyOutcome::UsageExceeded, 2)]);
    let others = api
        .usage(other.key.id, TimeBucket::Day, TimeRange::all())
        .await
        .unwrap();
    assert_eq!(others, vec![u(day1, KeyOutcome::Valid, 1)]);
    assert_eq!(api.usage_dropped(), 0);

    // Deleting the user takes the usage with the keys.
    store.users().delete(issued.key.user_id).await.unwrap();
    assert!(
        api.usage(id, TimeBucket::Day, TimeRange::all())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn last_used_is_written_by_the_flush(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let api = store.api_keys();
    let a = api.issue(u.id, "billing", None).await.unwrap();
    let b = api
        .issue_with(u.id, "billing", None, KeyPolicy::new().credits(10))
        .await
        .unwrap();
    let t1 = now(clock);
    api.validate(a.secret.expose_secret()).await.unwrap();
    let v = api.verify(b.secret.expose_secret(), &any()).await.unwrap();
    assert_eq!(v.key.unwrap().last_used, Some(t1));
    // Read back through this store before the flush: the buffered time.
    assert_eq!(api.get(a.key.id).await.unwrap().last_used, Some(t1));
    api.flush_usage().await.unwrap();
    for id in [a.key.id, b.key.id] {
        assert_eq!(api.get(id).await.unwrap().last_used, Some(t1));
    }
    let listed = api.list_for_user(u.id).await.unwrap();
    assert!(listed.iter().all(|k| k.last_used == Some(t1)));
    // Within the resolution: nothing new to write.
    clock.advance(Duration::seconds(59));
    let key = api.validate(a.secret.expose_secret()).await.unwrap();
    assert_eq!(key.last_used, Some(t1));
    // Past it: the new time, for both keys in the next flush.
    clock.advance(Duration::seconds(2));
    let t2 = now(clock);
    api.validate(a.secret.expose_secret()).await.unwrap();
    api.verify(b.secret.expose_secret(), &any()).await.unwrap();
    api.flush_usage().await.unwrap();
    for id in [a.key.id, b.key.id] {
        assert_eq!(api.get(id).await.unwrap().last_used, Some(t2));
    }
    // A refused verification does not move it.
    clock.advance(Duration::hours(1));
    api.disable(a.key.id).await.unwrap();
    api.verify(a.secret.expose_secret(), &any()).await.unwrap();
    store.shutdown().await.unwrap();
    assert_eq!(api.get(a.key.id).await.unwrap().last_used, Some(t2));
}

pub async fn rotate_carries_the_policy(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    let api = store.api_keys();
    let old = api
        .issue_with(
            u.id,
            "billing",
            None,
            KeyPolicy::new().name("w").permissions(["a"]).credits(4),
        )
        .await
        .unwrap();
    api.verify(old.secret.expose_secret(), &any())
        .await
        .unwrap();
    let new = api.rotate(old.key.id, None).await.unwrap();
    assert_eq!(new.key.policy.name.as_deref(), Some("w"));
    assert!(new.key.policy.permissions.contains("a"));
    assert_eq!(new.key.policy.credits.unwrap().remaining, 3);
    let v = api
        .verify(new.secret.expose_secret(), &any().require_all(["a"]))
        .await
        .unwrap();
    assert_eq!(v.credits_remaining, Some(2));
    refused(
        &api.verify(old.secret.expose_secret(), &any())
            .await
            .unwrap(),
        KeyRejection::Revoked,
    );
}
