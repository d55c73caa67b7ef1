//! API keys: issue, validate, revoke, expire, list, rotate.

use chrono::Duration;
use dreamnet_db::{
    ApiKeySecret, Entity, Field, KEY_PREFIX, KeyRejection, ManualClock, NewUser, Store, User,
};
use sha2::{Digest, Sha256};

use super::*;

async fn user(store: &Store, name: &str) -> User {
    store
        .users()
        .create(NewUser::with_email(email(&format!("{name}@example.com"))))
        .await
        .unwrap()
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A well-formed key that was never issued.
fn never_issued() -> String {
    format!("{KEY_PREFIX}{}", sha256_hex(&unknown_id().to_string()))
}

pub async fn issue_shows_the_secret_once_and_stores_its_hash(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let issued = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    let plain = issued.secret.expose_secret().to_owned();
    assert!(plain.starts_with(KEY_PREFIX), "{}", &plain[..4]);
    let digits = &plain[KEY_PREFIX.len()..];
    assert_eq!(digits.len(), 64, "256 bits as hex");
    assert!(
        digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    // What is stored and looked up is SHA-256 as lower-case hex.
    assert_eq!(issued.secret.hash(), sha256_hex(&plain));
    assert_eq!(
        ApiKeySecret::parse(&plain).unwrap().hash(),
        sha256_hex(&plain)
    );

    let key = &issued.key;
    assert_eq!(key.user_id, u.id);
    assert_eq!(key.service, "billing");
    assert_eq!(key.prefix.as_deref(), Some(&plain[..12]));
    assert_eq!(key.created_at, now(clock));
    assert_eq!(key.last_used, None);
    assert_eq!(key.expires_at, None);
    assert_eq!(key.revoked_at, None);
    assert_eq!(&store.api_keys().get(key.id).await.unwrap(), key);

    // The plain text never shows in Debug output of what issue returned.
    let shown = format!("{issued:?} {}", issued.secret);
    assert!(!shown.contains(&plain[12..]), "{shown}");

    let second = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    assert_ne!(second.secret.expose_secret(), plain);
    assert_ne!(second.key.id, key.id);
}

pub async fn validate_returns_the_key_record(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    let other = user(store, "bob").await;
    let issued = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    store
        .api_keys()
        .issue(other.id, "billing", None)
        .await
        .unwrap();
    let key = store
        .api_keys()
        .validate(issued.secret.expose_secret())
        .await
        .unwrap();
    assert_eq!(key.id, issued.key.id);
    assert_eq!(key.user_id, u.id);
    assert_eq!(key.service, "billing");
    let key = store
        .api_keys()
        .validate_for(issued.secret.expose_secret(), "billing")
        .await
        .unwrap();
    assert_eq!((key.id, key.user_id), (issued.key.id, u.id));
}

pub async fn validate_for_refuses_other_services(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    let issued = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    for other in ["search", "Billing", "billing2"] {
        expect_rejected(
            store
                .api_keys()
                .validate_for(issued.secret.expose_secret(), other)
                .await,
            KeyRejection::WrongService,
        );
    }
    // A refused validation does not count as a use.
    assert_eq!(
        store.api_keys().get(issued.key.id).await.unwrap().last_used,
        None
    );
}

pub async fn malformed_and_unknown_keys_are_refused(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    let issued = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    let plain = issued.secret.expose_secret();
    // The key in upper case, its last digit an upper-case letter so that
    // it differs from the key even if every random digit was 0-9.
    let upper = format!(
        "{KEY_PREFIX}{}F",
        plain[KEY_PREFIX.len()..plain.len() - 1].to_ascii_uppercase()
    );
    let malformed = [
        String::new(),
        " ".to_owned(),
        "dnk_short".to_owned(),
        plain[..plain.len() - 1].to_owned(),
        upper,
        format!("{plain} "),
        format!("{plain}\n"),
        "k".repeat(513),
    ];
    for bad in &malformed {
        expect_rejected(
            store.api_keys().validate(bad).await,
            KeyRejection::Malformed,
        );
    }
    let before = snapshot(store).await;
    let unknown = [
        never_issued(),
        "sk_live_legacy_but_never_issued".to_owned(),
        issued.secret.hash(), // the hash is not the key
    ];
    for unknown in &unknown {
        expect_rejected(
            store.api_keys().validate(unknown).await,
            KeyRejection::Unknown,
        );
        expect_rejected(
            store.api_keys().validate_for(unknown, "billing").await,
            KeyRejection::Unknown,
        );
    }
    assert_unchanged(&before, &snapshot(store).await);
}

pub async fn revoked_keys_are_refused(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let issued = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    let kept = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    clock.advance(Duration::seconds(10));
    let revoked = store.api_keys().revoke(issued.key.id).await.unwrap();
    let at = now(clock);
    assert_eq!(revoked.revoked_at, Some(at));
    assert_eq!(revoked.id, issued.key.id);
    for service in [None, Some("billing"), Some("search")] {
        let result = match service {
            None => {
                store
                    .api_keys()
                    .validate(issued.secret.expose_secret())
                    .await
            }
            Some(s) => {
                store
                    .api_keys()
                    .validate_for(issued.secret.expose_secret(), s)
                    .await
            }
        };
        expect_rejected(result, KeyRejection::Revoked);
    }
    // Revoking again changes nothing.
    clock.advance(Duration::minutes(1));
    let again = store.api_keys().revoke(issued.key.id).await.unwrap();
    assert_eq!(again.revoked_at, Some(at));
    assert_eq!(
        store
            .api_keys()
            .get(issued.key.id)
            .await
            .unwrap()
            .revoked_at,
        Some(at)
    );
    // It is still listed, as revoked; the other key still works.
    let listed = store.api_keys().list_for_user(u.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed
            .iter()
            .find(|k| k.id == issued.key.id)
            .unwrap()
            .revoked_at,
        Some(at)
    );
    store
        .api_keys()
        .validate(kept.secret.expose_secret())
        .await
        .unwrap();
}

pub async fn expired_keys_are_refused(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    // The clock has nanoseconds; the stored expiry is in microseconds.
    let expires = clock_now(clock) + Duration::hours(1);
    let issued = store
        .api_keys()
        .issue(u.id, "billing", Some(expires))
        .await
        .unwrap();
    assert_eq!(issued.key.expires_at, Some(now(clock) + Duration::hours(1)));
    assert_eq!(
        store
            .api_keys()
            .get(issued.key.id)
            .await
            .unwrap()
            .expires_at,
        issued.key.expires_at
    );
    store
        .api_keys()
        .validate(issued.secret.expose_secret())
        .await
        .unwrap();
    clock.advance(Duration::minutes(59) + Duration::seconds(59));
    store
        .api_keys()
        .validate_for(issued.secret.expose_secret(), "billing")
        .await
        .unwrap();
    // At the expiry instant the key is expired.
    clock.advance(Duration::seconds(1));
    expect_rejected(
        store
            .api_keys()
            .validate(issued.secret.expose_secret())
            .await,
        KeyRejection::Expired,
    );
    expect_rejected(
        store
            .api_keys()
            .validate_for(issued.secret.expose_secret(), "search")
            .await,
        KeyRejection::Expired,
    );
    // Moving the clock back makes it valid again: expiry is checked
    // against the store's clock, never the database's.
    clock.advance(Duration::seconds(-1));
    store
        .api_keys()
        .validate(issued.secret.expose_secret())
        .await
        .unwrap();
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    use dreamnet_db::Clock;
    clock.now()
}

pub async fn expiry_must_be_in_the_future(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let before = snapshot(store).await;
    for past in [
        now(clock),
        now(clock) - Duration::microseconds(1),
        now(clock) - Duration::days(1),
    ] {
        expect_invalid(
            store.api_keys().issue(u.id, "billing", Some(past)).await,
            Field::ExpiresAt,
        );
    }
    assert_unchanged(&before, &snapshot(store).await);
    assert!(
        store
            .api_keys()
            .list_for_user(u.id)
            .await
            .unwrap()
            .is_empty()
    );
    // One microsecond ahead is the future.
    let key = store
        .api_keys()
        .issue(
            u.id,
            "billing",
            Some(now(clock) + Duration::microseconds(1)),
        )
        .await
        .unwrap();
    store
        .api_keys()
        .validate(key.secret.expose_secret())
        .await
        .unwrap();
}

pub async fn issue_for_unknown_user_is_not_found(store: &Store, _clock: &ManualClock) {
    user(store, "ada").await;
    let before = snapshot(store).await;
    let id = unknown_id();
    expect_not_found(
        store.api_keys().issue(id, "billing", None).await,
        Entity::User,
        id,
    );
    assert_unchanged(&before, &snapshot(store).await);
    assert!(store.api_keys().list_for_user(id).await.unwrap().is_empty());
}

pub async fn invalid_service_is_refused(store: &Store, _clock: &ManualClock) {
    let u = user(store, "ada").await;
    let before = snapshot(store).await;
    let long = "s".repeat(101);
    for bad in ["", " billing", "billing ", "bill\ning", long.as_str()] {
        expect_invalid(
            store.api_keys().issue(u.id, bad, None).await,
            Field::Service,
        );
    }
    assert_unchanged(&before, &snapshot(store).await);
    // 100 characters is the most.
    let max = "s".repeat(100);
    let key = store.api_keys().issue(u.id, &max, None).await.unwrap();
    assert_eq!(
        store
            .api_keys()
            .validate_for(key.secret.expose_secret(), &max)
            .await
            .unwrap()
            .service,
        max
    );
}

pub async fn last_used_is_written_at_most_once_per_resolution(store: &Store, clock: &ManualClock) {
    // The default resolution: one minute.
    let u = user(store, "ada").await;
    let issued = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    let secret = issued.secret.expose_secret();
    let key_id = issued.key.id;
    let last_used = || async move { store.api_keys().get(key_id).await.unwrap().last_used };
    assert_eq!(last_used().await, None);

    clock.advance(Duration::seconds(1));
    let t1 = now(clock);
    let key = store.api_keys().validate(secret).await.unwrap();
    assert_eq!(key.last_used, Some(t1), "written on first validation");
    assert_eq!(last_used().await, Some(t1));

    clock.advance(Duration::seconds(30));
    let key = store.api_keys().validate(secret).await.unwrap();
    assert_eq!(
        key.last_used,
        Some(t1),
        "not rewritten within the resolution"
    );
    assert_eq!(last_used().await, Some(t1));

    // Exactly one resolution later: still fresh enough.
    clock.advance(Duration::seconds(30));
    store.api_keys().validate(secret).await.unwrap();
    assert_eq!(last_used().await, Some(t1));

    clock.advance(Duration::microseconds(1));
    let t2 = now(clock);
    let key = store
        .api_keys()
        .validate_for(secret, "billing")
        .await
        .unwrap();
    assert_eq!(key.last_used, Some(t2), "rewritten once stale");
    assert_eq!(last_used().await, Some(t2));

    // A refused validation does not touch it.
    clock.advance(Duration::hours(1));
    expect_rejected(
        store.api_keys().validate_for(secret, "search").await,
        KeyRejection::WrongService,
    );
    assert_eq!(last_used().await, Some(t2));
}

/// Run with `last_used_resolution(5 s)`.
pub async fn last_used_resolution_is_configurable(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let issued = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    let secret = issued.secret.expose_secret();
    let t0 = now(clock);
    store.api_keys().validate(secret).await.unwrap();
    clock.advance(Duration::seconds(5));
    store.api_keys().validate(secret).await.unwrap();
    assert_eq!(
        store.api_keys().get(issued.key.id).await.unwrap().last_used,
        Some(t0)
    );
    clock.advance(Duration::seconds(1));
    store.api_keys().validate(secret).await.unwrap();
    assert_eq!(
        store.api_keys().get(issued.key.id).await.unwrap().last_used,
        Some(now(clock))
    );
}

pub async fn list_for_user_is_oldest_first_with_revoked_keys(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let other = user(store, "bob").await;
    let mut issued = Vec::new();
    // Five at one instant (ordered by id among themselves), one later.
    for i in 0..5 {
        issued.push(
            store
                .api_keys()
                .issue(u.id, &format!("service-{i}"), None)
                .await
                .unwrap()
                .key,
        );
    }
    let others = store
        .api_keys()
        .issue(other.id, "billing", None)
        .await
        .unwrap();
    clock.advance(Duration::seconds(1));
    issued.push(
        store
            .api_keys()
            .issue(u.id, "late", None)
            .await
            .unwrap()
            .key,
    );
    let revoked = store.api_keys().revoke(issued[2].id).await.unwrap();
    issued[2] = revoked;

    let mut expected = issued.clone();
    expected.sort_by_key(|k| (k.created_at, k.id));
    assert_eq!(
        store.api_keys().list_for_user(u.id).await.unwrap(),
        expected
    );
    assert_eq!(
        store.api_keys().list_for_user(other.id).await.unwrap(),
        vec![others.key]
    );
    assert!(
        store
            .api_keys()
            .list_for_user(unknown_id())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn rotate_replaces_the_key(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let old = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    store
        .api_keys()
        .validate(old.secret.expose_secret())
        .await
        .unwrap();
    clock.advance(Duration::minutes(5));
    let expires = now(clock) + Duration::days(30);
    let new = store
        .api_keys()
        .rotate(old.key.id, Some(expires))
        .await
        .unwrap();
    assert_ne!(new.key.id, old.key.id);
    assert_ne!(new.secret.expose_secret(), old.secret.expose_secret());
    assert_eq!(new.key.user_id, u.id);
    assert_eq!(new.key.service, "billing");
    assert_eq!(new.key.created_at, now(clock));
    assert_eq!(new.key.expires_at, Some(expires));
    assert_eq!(new.key.revoked_at, None);
    assert_eq!(new.key.last_used, None);

    expect_rejected(
        store.api_keys().validate(old.secret.expose_secret()).await,
        KeyRejection::Revoked,
    );
    let valid = store
        .api_keys()
        .validate_for(new.secret.expose_secret(), "billing")
        .await
        .unwrap();
    assert_eq!((valid.id, valid.user_id), (new.key.id, u.id));
    assert_eq!(
        store.api_keys().get(old.key.id).await.unwrap().revoked_at,
        Some(now(clock))
    );
    let listed = store.api_keys().list_for_user(u.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![old.key.id, new.key.id]
    );
}

pub async fn rotate_refuses_revoked_and_unknown_keys(store: &Store, clock: &ManualClock) {
    let u = user(store, "ada").await;
    let live = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    let dead = store.api_keys().issue(u.id, "billing", None).await.unwrap();
    store.api_keys().revoke(dead.key.id).await.unwrap();
    let before = snapshot(store).await;

    expect_invalid(store.api_keys().rotate(dead.key.id, None).await, Field::Id);
    let id = unknown_id();
    expect_not_found(store.api_keys().rotate(id, None).await, Entity::ApiKey, id);
    expect_invalid(
        store
            .api_keys()
            .rotate(live.key.id, Some(now(clock) - Duration::seconds(1)))
            .await,
        Field::ExpiresAt,
    );
    assert_unchanged(&before, &snapshot(store).await);
    // The live key was not revoked by the refused rotation.
    store
        .api_keys()
        .validate(live.secret.expose_secret())
        .await
        .unwrap();
}

pub async fn create_with_key_is_atomic(store: &Store, clock: &ManualClock) {
    let (u, issued) = store
        .users()
        .create_with_key(
            NewUser::with_email(email("ada@example.com")).wallet_address(nth_wallet(1)),
            "billing",
            None,
        )
        .await
        .unwrap();
    assert_eq!(issued.key.user_id, u.id);
    assert_eq!(store.users().get(u.id).await.unwrap(), u);
    let key = store
        .api_keys()
        .validate_for(issued.secret.expose_secret(), "billing")
        .await
        .unwrap();
    assert_eq!(key.user_id, u.id);
    assert_eq!(
        store
            .api_keys()
            .list_for_user(u.id)
            .await
            .unwrap()
            .iter()
            .map(|k| k.id)
            .collect::<Vec<_>>(),
        vec![issued.key.id]
    );

    let before = snapshot(store).await;
    let fresh = || NewUser::with_email(email("bob@example.com"));
    expect_conflict(
        store
            .users()
            .create_with_key(
                NewUser::with_email(email("ADA@example.com")),
                "billing",
                None,
            )
            .await,
        Field::Email,
    );
    expect_conflict(
        store
            .users()
            .create_with_key(fresh().wallet_address(nth_wallet(1)), "billing", None)
            .await,
        Field::WalletAddress,
    );
    expect_invalid(
        store.users().create_with_key(fresh(), "", None).await,
        Field::Service,
    );
    expect_invalid(
        store
            .users()
            .create_with_key(fresh(), "billing", Some(now(clock)))
            .await,
        Field::ExpiresAt,
    );
    expect_invalid(
        store
            .users()
            .create_with_key(NewUser::default(), "billing", None)
            .await,
        Field::Email,
    );
    assert_unchanged(&before, &snapshot(store).await);
    assert_eq!(
        store
            .users()
            .find_by_email(&email("bob@example.com"))
            .await
            .unwrap(),
        None
    );
}
