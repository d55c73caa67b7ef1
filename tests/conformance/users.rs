//! Users: create, find, update, delete, list.

use std::collections::HashSet;

use chrono::Duration;
use dreamnet_db::{
    Entity, Error, EventFilter, Field, KeyRejection, ManualClock, NewEvent, NewUser, PassportTier,
    Store, UserUpdate,
};
use serde_json::json;

use super::*;

pub async fn create_and_get(store: &Store, clock: &ManualClock) {
    let t0 = now(clock);
    let user = store
        .users()
        .create(
            NewUser::with_email(email("Ada@Example.com"))
                .wallet_address(wallet(EIP55[0]))
                .passport_tier(PassportTier::parse("citizen").unwrap())
                .metadata(json!({"source": "signup", "n": 1, "nested": {"a": [1, 2]}}))
                .preferences(json!({"theme": "dark"})),
        )
        .await
        .unwrap();
    // The email is kept as given, the wallet in canonical lower case.
    assert_eq!(user.email.as_ref().unwrap().as_str(), "Ada@Example.com");
    assert_eq!(
        user.wallet_address.as_ref().unwrap().as_str(),
        EIP55[0].to_ascii_lowercase()
    );
    assert_eq!(user.passport_tier.as_str(), "citizen");
    assert_eq!(
        user.created_at, t0,
        "created_at comes from the clock, in µs"
    );
    assert_eq!(user.updated_at, t0);
    assert_eq!(
        user.metadata,
        json!({"source": "signup", "n": 1, "nested": {"a": [1, 2]}})
    );
    assert_eq!(user.preferences, json!({"theme": "dark"}));

    let got = store.users().get(user.id).await.unwrap();
    assert_eq!(got, user);
    assert_eq!(got.email.as_ref().unwrap().as_str(), "Ada@Example.com");
    assert_eq!(
        got.wallet_address.as_ref().unwrap().as_str(),
        EIP55[0].to_ascii_lowercase()
    );

    // Defaults: visitor, empty documents.
    let plain = store
        .users()
        .create(NewUser::with_email(email("bob@example.com")))
        .await
        .unwrap();
    assert_eq!(plain.passport_tier, PassportTier::visitor());
    assert_eq!(plain.metadata, json!({}));
    assert_eq!(plain.preferences, json!({}));
    assert_eq!(plain.wallet_address, None);
    assert_ne!(plain.id, user.id);
    assert_eq!(store.users().get(plain.id).await.unwrap(), plain);
}

pub async fn find_by_email_is_case_insensitive(store: &Store, _clock: &ManualClock) {
    let ada = store
        .users()
        .create(NewUser::with_email(email("Ada.Lovelace@Example.com")))
        .await
        .unwrap();
    let decoy = store
        .users()
        .create(NewUser::with_email(email("ada.lovelace@example.org")))
        .await
        .unwrap();
    for probe in [
        "ada.lovelace@example.com",
        "ADA.LOVELACE@EXAMPLE.COM",
        "Ada.Lovelace@Example.com",
        "aDa.LoVeLaCe@eXaMpLe.CoM",
    ] {
        let found = store
            .users()
            .find_by_email(&email(probe))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{probe} should find the user"));
        assert_eq!(found.id, ada.id, "{probe}");
        assert_eq!(found.email.unwrap().as_str(), "Ada.Lovelace@Example.com");
    }
    let found = store
        .users()
        .find_by_email(&email("ADA.lovelace@EXAMPLE.org"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, decoy.id);
    for absent in ["lovelace@example.com", "ada.lovelace@example.co"] {
        assert_eq!(
            store.users().find_by_email(&email(absent)).await.unwrap(),
            None,
            "{absent}"
        );
    }
}

pub async fn find_by_wallet_accepts_any_case(store: &Store, _clock: &ManualClock) {
    let mixed = EIP55[1];
    let lower = mixed.to_ascii_lowercase();
    let upper = format!("0x{}", mixed[2..].to_ascii_uppercase());
    let user = store
        .users()
        .create(NewUser::with_wallet(wallet(mixed)))
        .await
        .unwrap();
    assert_eq!(user.wallet_address.as_ref().unwrap().as_str(), lower);
    for probe in [mixed, lower.as_str(), upper.as_str()] {
        let found = store
            .users()
            .find_by_wallet(&wallet(probe))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{probe} should find the user"));
        assert_eq!(found.id, user.id);
        assert_eq!(found.wallet_address.unwrap().as_str(), lower);
    }
    // Created from upper case, found from the checksum form.
    let other = store
        .users()
        .create(NewUser::with_wallet(wallet(&format!(
            "0x{}",
            EIP55[2][2..].to_ascii_uppercase()
        ))))
        .await
        .unwrap();
    let found = store
        .users()
        .find_by_wallet(&wallet(EIP55[2]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, other.id);
    assert_eq!(
        store
            .users()
            .find_by_wallet(&wallet(EIP55[3]))
            .await
            .unwrap(),
        None
    );
}

pub async fn email_only_and_wallet_only_users(store: &Store, _clock: &ManualClock) {
    let by_wallet = store
        .users()
        .create(NewUser::with_wallet(nth_wallet(1)))
        .await
        .unwrap();
    let by_email = store
        .users()
        .create(NewUser::with_email(email("mail@example.com")))
        .await
        .unwrap();
    assert_eq!(by_wallet.email, None);
    assert_eq!(by_email.wallet_address, None);
    let got = store.users().get(by_wallet.id).await.unwrap();
    assert_eq!(got.email, None);
    assert_eq!(got.wallet_address, Some(nth_wallet(1)));
    let got = store.users().get(by_email.id).await.unwrap();
    assert_eq!(got.wallet_address, None);
    assert_eq!(
        store
            .users()
            .find_by_wallet(&nth_wallet(1))
            .await
            .unwrap()
            .map(|u| u.id),
        Some(by_wallet.id)
    );
    // Several users without an email (or without a wallet) may coexist.
    store
        .users()
        .create(NewUser::with_wallet(nth_wallet(2)))
        .await
        .unwrap();
    store
        .users()
        .create(NewUser::with_email(email("mail2@example.com")))
        .await
        .unwrap();
    assert_eq!(all_users(store, 10).await.len(), 4);
}

pub async fn user_needs_an_email_or_a_wallet(store: &Store, _clock: &ManualClock) {
    store
        .users()
        .create(NewUser::with_email(email("existing@example.com")))
        .await
        .unwrap();
    let before = snapshot(store).await;
    expect_invalid(store.users().create(NewUser::default()).await, Field::Email);
    let no_identity = NewUser {
        passport_tier: Some(PassportTier::parse("citizen").unwrap()),
        metadata: Some(json!({"a": 1}).into()),
        ..NewUser::default()
    };
    expect_invalid(store.users().create(no_identity).await, Field::Email);
    assert_unchanged(&before, &snapshot(store).await);
}

pub async fn duplicate_email_is_a_conflict(store: &Store, _clock: &ManualClock) {
    store
        .users()
        .create(NewUser::with_email(email("ada@example.com")).wallet_address(nth_wallet(1)))
        .await
        .unwrap();
    let before = snapshot(store).await;
    for taken in ["ada@example.com", "ADA@Example.COM"] {
        expect_conflict(
            store
                .users()
                .create(NewUser::with_email(email(taken)).wallet_address(nth_wallet(2)))
                .await,
            Field::Email,
        );
    }
    assert_unchanged(&before, &snapshot(store).await);
    assert_eq!(
        store.users().find_by_wallet(&nth_wallet(2)).await.unwrap(),
        None
    );
}

pub async fn duplicate_wallet_is_a_conflict(store: &Store, _clock: &ManualClock) {
    let lower = EIP55[0].to_ascii_lowercase();
    let upper = format!("0x{}", EIP55[0][2..].to_ascii_uppercase());
    store
        .users()
        .create(NewUser::with_wallet(wallet(&lower)))
        .await
        .unwrap();
    let before = snapshot(store).await;
    for (i, taken) in [lower.as_str(), upper.as_str(), EIP55[0]]
        .into_iter()
        .enumerate()
    {
        let mail = format!("second{i}@example.com");
        expect_conflict(
            store
                .users()
                .create(NewUser::with_email(email(&mail)).wallet_address(wallet(taken)))
                .await,
            Field::WalletAddress,
        );
        assert_eq!(
            store.users().find_by_email(&email(&mail)).await.unwrap(),
            None
        );
    }
    assert_unchanged(&before, &snapshot(store).await);
}

pub async fn email_conflict_is_reported_before_wallet(store: &Store, _clock: &ManualClock) {
    store
        .users()
        .create(NewUser::with_email(email("ada@example.com")).wallet_address(nth_wallet(7)))
        .await
        .unwrap();
    let before = snapshot(store).await;
    expect_conflict(
        store
            .users()
            .create(NewUser::with_email(email("Ada@Example.com")).wallet_address(nth_wallet(7)))
            .await,
        Field::Email,
    );
    assert_unchanged(&before, &snapshot(store).await);
}

pub async fn concurrent_creates_of_one_email_one_wins(store: &Store, _clock: &ManualClock) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let address = if i % 2 == 0 {
                    "race@example.com"
                } else {
                    "RACE@example.com"
                };
                store
                    .users()
                    .create(NewUser::with_email(email(address)).wallet_address(nth_wallet(i)))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(Error::Conflict {
                field: Field::Email,
            }) => {}
            Err(e) => panic!("expected success or an email conflict, got {e:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one of the racing creates wins");
    assert_eq!(all_users(store, 100).await.len(), 1);
}

pub async fn invalid_documents_are_refused(store: &Store, _clock: &ManualClock) {
    store
        .users()
        .create(NewUser::with_email(email("existing@example.com")))
        .await
        .unwrap();
    let before = snapshot(store).await;
    let base = || NewUser::with_email(email("new@example.com"));
    expect_invalid(
        store.users().create(base().metadata(json!([1, 2]))).await,
        Field::Metadata,
    );
    expect_invalid(
        store.users().create(base().metadata(json!(null))).await,
        Field::Metadata,
    );
    expect_invalid(
        store
            .users()
            .create(base().preferences(json!("dark")))
            .await,
        Field::Preferences,
    );
    expect_invalid(
        store
            .users()
            .create(base().metadata(json!({"a": "nul\u{0}"})))
            .await,
        Field::Metadata,
    );
    expect_invalid(
        store
            .users()
            .create(base().preferences(json!({"big": "x".repeat(70 * 1024)})))
            .await,
        Field::Preferences,
    );
    assert_unchanged(&before, &snapshot(store).await);
    assert_eq!(
        store
            .users()
            .find_by_email(&email("new@example.com"))
            .await
            .unwrap(),
        None
    );
}

pub async fn update_each_field(store: &Store, clock: &ManualClock) {
    let users = store.users();
    let user = users
        .create(NewUser::with_email(email("old@example.com")).wallet_address(nth_wallet(1)))
        .await
        .unwrap();
    clock.advance(Duration::seconds(1));

    let u = users
        .update(
            user.id,
            UserUpdate::new().passport_tier(PassportTier::parse("citizen").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(u.passport_tier.as_str(), "citizen");
    assert_eq!(u.updated_at, now(clock));
    assert_eq!(u.created_at, user.created_at);
    assert_eq!(u.email, user.email);
    assert_eq!(users.get(user.id).await.unwrap(), u);

    let u = users
        .update(user.id, UserUpdate::new().email(email("New@Example.com")))
        .await
        .unwrap();
    assert_eq!(u.email.as_ref().unwrap().as_str(), "New@Example.com");
    assert_eq!(u.passport_tier.as_str(), "citizen");
    assert_eq!(
        users
            .find_by_email(&email("old@example.com"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        users
            .find_by_email(&email("new@example.com"))
            .await
            .unwrap()
            .map(|u| u.id),
        Some(user.id)
    );

    // The same address in another case is not a conflict with oneself.
    let u = users
        .update(user.id, UserUpdate::new().email(email("new@example.COM")))
        .await
        .unwrap();
    assert_eq!(u.email.as_ref().unwrap().as_str(), "new@example.COM");
    assert_eq!(
        users.get(user.id).await.unwrap().email.unwrap().as_str(),
        "new@example.COM"
    );

    let upper = format!("0x{}", EIP55[3][2..].to_ascii_uppercase());
    let u = users
        .update(user.id, UserUpdate::new().wallet_address(wallet(&upper)))
        .await
        .unwrap();
    assert_eq!(
        u.wallet_address.as_ref().unwrap().as_str(),
        EIP55[3].to_ascii_lowercase()
    );
    assert_eq!(users.find_by_wallet(&nth_wallet(1)).await.unwrap(), None);
    assert_eq!(
        users
            .find_by_wallet(&wallet(EIP55[3]))
            .await
            .unwrap()
            .map(|u| u.id),
        Some(user.id)
    );

    let u = users
        .update(
            user.id,
            UserUpdate::new()
                .replace_metadata(json!({"m": 1}))
                .replace_preferences(json!({"p": true})),
        )
        .await
        .unwrap();
    assert_eq!(u.metadata, json!({"m": 1}));
    assert_eq!(u.preferences, json!({"p": true}));
    assert_eq!(users.get(user.id).await.unwrap(), u);

    // The old email and wallet are free again.
    users
        .create(NewUser::with_email(email("OLD@example.com")).wallet_address(nth_wallet(1)))
        .await
        .unwrap();
}

pub async fn updated_at_always_moves_forward(store: &Store, clock: &ManualClock) {
    let users = store.users();
    let user = users
        .create(NewUser::with_email(email("a@example.com")))
        .await
        .unwrap();
    // The clock stands still: each update still moves updated_at, by 1 µs.
    let u1 = users.update(user.id, UserUpdate::new()).await.unwrap();
    assert_eq!(u1.updated_at, user.updated_at + Duration::microseconds(1));
    let u2 = users
        .update(
            user.id,
            UserUpdate::new().passport_tier(PassportTier::parse("citizen").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(u2.updated_at, u1.updated_at + Duration::microseconds(1));
    assert_eq!(users.get(user.id).await.unwrap().updated_at, u2.updated_at);
    // When the clock moves, updated_at is the clock's time.
    clock.advance(Duration::seconds(5));
    let u3 = users.update(user.id, UserUpdate::new()).await.unwrap();
    assert_eq!(u3.updated_at, now(clock));
    assert_eq!(u3.created_at, user.created_at);
    assert_eq!(users.get(user.id).await.unwrap(), u3);
}

pub async fn merge_and_replace_documents(store: &Store, _clock: &ManualClock) {
    let users = store.users();
    let user = users
        .create(
            NewUser::with_email(email("a@example.com"))
                .metadata(json!({"a": 1, "nested": {"x": 1, "y": 2}, "drop": true}))
                .preferences(json!({"theme": "dark", "lang": "en"})),
        )
        .await
        .unwrap();
    let u = users
        .update(
            user.id,
            UserUpdate::new()
                .merge_metadata(json!({"b": 2, "nested": {"y": null, "z": 3}, "drop": null}))
                .merge_preferences(json!({"lang": null})),
        )
        .await
        .unwrap();
    assert_eq!(
        u.metadata,
        json!({"a": 1, "b": 2, "nested": {"x": 1, "z": 3}})
    );
    assert_eq!(u.preferences, json!({"theme": "dark"}));
    assert_eq!(users.get(user.id).await.unwrap(), u);

    // Arrays are replaced, not merged.
    let u = users
        .update(
            user.id,
            UserUpdate::new().merge_metadata(json!({"a": [1, 2], "nested": "flat"})),
        )
        .await
        .unwrap();
    assert_eq!(u.metadata, json!({"a": [1, 2], "b": 2, "nested": "flat"}));

    let u = users
        .update(
            user.id,
            UserUpdate::new()
                .replace_metadata(json!({"only": true}))
                .replace_preferences(json!({})),
        )
        .await
        .unwrap();
    assert_eq!(u.metadata, json!({"only": true}));
    assert_eq!(u.preferences, json!({}));
    assert_eq!(users.get(user.id).await.unwrap(), u);

    // Patches and replacements must be objects; nothing is written.
    let before = snapshot(store).await;
    expect_invalid(
        users
            .update(user.id, UserUpdate::new().merge_metadata(json!([1])))
            .await,
        Field::Metadata,
    );
    expect_invalid(
        users
            .update(user.id, UserUpdate::new().replace_preferences(json!("x")))
            .await,
        Field::Preferences,
    );
    expect_invalid(
        users
            .update(
                user.id,
                UserUpdate::new()
                    .passport_tier(PassportTier::parse("citizen").unwrap())
                    .merge_metadata(json!({"k": "\u{0}"})),
            )
            .await,
        Field::Metadata,
    );
    assert_unchanged(&before, &snapshot(store).await);
}

pub async fn update_to_a_taken_identity_is_a_conflict(store: &Store, _clock: &ManualClock) {
    let users = store.users();
    users
        .create(NewUser::with_email(email("a@example.com")).wallet_address(nth_wallet(1)))
        .await
        .unwrap();
    let b = users
        .create(NewUser::with_email(email("b@example.com")).wallet_address(nth_wallet(2)))
        .await
        .unwrap();
    let before = snapshot(store).await;
    expect_conflict(
        users
            .update(b.id, UserUpdate::new().email(email("A@EXAMPLE.com")))
            .await,
        Field::Email,
    );
    expect_conflict(
        users
            .update(b.id, UserUpdate::new().wallet_address(nth_wallet(1)))
            .await,
        Field::WalletAddress,
    );
    expect_conflict(
        users
            .update(
                b.id,
                UserUpdate::new()
                    .email(email("a@example.com"))
                    .wallet_address(nth_wallet(1))
                    .passport_tier(PassportTier::parse("citizen").unwrap())
                    .merge_metadata(json!({"changed": true})),
            )
            .await,
        Field::Email,
    );
    // Email is reported first even when only its case differs (so only
    // the case-insensitive index sees it) and the wallet matches exactly.
    expect_conflict(
        users
            .update(
                b.id,
                UserUpdate::new()
                    .email(email("A@Example.COM"))
                    .wallet_address(nth_wallet(1)),
            )
            .await,
        Field::Email,
    );
    assert_unchanged(&before, &snapshot(store).await);
    assert_eq!(users.get(b.id).await.unwrap(), b);
}

pub async fn update_cannot_remove_both_identities(store: &Store, _clock: &ManualClock) {
    let users = store.users();
    let mail_only = users
        .create(NewUser::with_email(email("mail@example.com")))
        .await
        .unwrap();
    let wallet_only = users
        .create(NewUser::with_wallet(nth_wallet(1)))
        .await
        .unwrap();
    let both = users
        .create(NewUser::with_email(email("both@example.com")).wallet_address(nth_wallet(2)))
        .await
        .unwrap();
    let before = snapshot(store).await;
    expect_invalid(
        users
            .update(mail_only.id, UserUpdate::new().remove_email())
            .await,
        Field::Email,
    );
    expect_invalid(
        users
            .update(wallet_only.id, UserUpdate::new().remove_wallet_address())
            .await,
        Field::Email,
    );
    expect_invalid(
        users
            .update(
                both.id,
                UserUpdate::new().remove_email().remove_wallet_address(),
            )
            .await,
        Field::Email,
    );
    assert_unchanged(&before, &snapshot(store).await);

    // Removing one of two is fine, and frees it.
    let u = users
        .update(both.id, UserUpdate::new().remove_email())
        .await
        .unwrap();
    assert_eq!(u.email, None);
    assert_eq!(users.get(both.id).await.unwrap().email, None);
    assert_eq!(
        users
            .find_by_email(&email("both@example.com"))
            .await
            .unwrap(),
        None
    );
    users
        .create(NewUser::with_email(email("Both@example.com")))
        .await
        .unwrap();
    // Swapping wallet for email in one update is fine too.
    let u = users
        .update(
            wallet_only.id,
            UserUpdate::new()
                .remove_wallet_address()
                .email(email("swap@example.com")),
        )
        .await
        .unwrap();
    assert_eq!(u.wallet_address, None);
    assert_eq!(users.find_by_wallet(&nth_wallet(1)).await.unwrap(), None);
}

/// Run with `max_payload_bytes(64)`.
pub async fn merged_document_over_the_limit_is_refused(store: &Store, _clock: &ManualClock) {
    let users = store.users();
    // {"a":"xxx…"} with 30 x's is 38 bytes: under the limit.
    let user = users
        .create(NewUser::with_email(email("a@example.com")).metadata(json!({"a": "x".repeat(30)})))
        .await
        .unwrap();
    expect_invalid(
        users
            .create(
                NewUser::with_email(email("b@example.com")).metadata(json!({"a": "x".repeat(60)})),
            )
            .await,
        Field::Metadata,
    );
    let before = snapshot(store).await;
    // Each patch is small; the merged document (over 64 bytes) is not.
    expect_invalid(
        users
            .update(
                user.id,
                UserUpdate::new().merge_metadata(json!({"b": "y".repeat(30)})),
            )
            .await,
        Field::Metadata,
    );
    assert_unchanged(&before, &snapshot(store).await);
    // A merge that stays under the limit is fine.
    let u = users
        .update(user.id, UserUpdate::new().merge_metadata(json!({"b": 1})))
        .await
        .unwrap();
    assert_eq!(u.metadata, json!({"a": "x".repeat(30), "b": 1}));
}

pub async fn unknown_ids_are_not_found(store: &Store, _clock: &ManualClock) {
    let user = store
        .users()
        .create(NewUser::with_email(email("a@example.com")))
        .await
        .unwrap();
    store
        .api_keys()
        .issue(user.id, "billing", None)
        .await
        .unwrap();
    let before = snapshot(store).await;
    let id = unknown_id();
    expect_not_found(store.users().get(id).await, Entity::User, id);
    expect_not_found(
        store
            .users()
            .update(id, UserUpdate::new().merge_metadata(json!({"a": 1})))
            .await,
        Entity::User,
        id,
    );
    expect_not_found(store.users().delete(id).await, Entity::User, id);
    expect_not_found(store.api_keys().get(id).await, Entity::ApiKey, id);
    expect_not_found(store.api_keys().revoke(id).await, Entity::ApiKey, id);
    expect_not_found(store.api_keys().rotate(id, None).await, Entity::ApiKey, id);
    assert!(store.api_keys().list_for_user(id).await.unwrap().is_empty());
    assert_unchanged(&before, &snapshot(store).await);
}

pub async fn delete_removes_keys_and_detaches_events(store: &Store, _clock: &ManualClock) {
    let users = store.users();
    let a = users
        .create(NewUser::with_email(email("a@example.com")).wallet_address(nth_wallet(1)))
        .await
        .unwrap();
    let b = users
        .create(NewUser::with_email(email("b@example.com")))
        .await
        .unwrap();
    let ka = store.api_keys().issue(a.id, "billing", None).await.unwrap();
    let ka2 = store.api_keys().issue(a.id, "search", None).await.unwrap();
    store.api_keys().revoke(ka2.key.id).await.unwrap();
    let kb = store.api_keys().issue(b.id, "billing", None).await.unwrap();
    let login = event_type("user.login");
    let mut a_events = Vec::new();
    for i in 0..3 {
        a_events.push(
            store
                .events()
                .record(NewEvent::new(login.clone(), json!({"i": i})).user(a.id))
                .await
                .unwrap(),
        );
    }
    let b_event = store
        .events()
        .record(NewEvent::new(login.clone(), json!({"b": true})).user(b.id))
        .await
        .unwrap();
    let system = store
        .events()
        .record(NewEvent::new(event_type("system.boot"), json!({})))
        .await
        .unwrap();

    users.delete(a.id).await.unwrap();

    expect_not_found(users.get(a.id).await, Entity::User, a.id);
    expect_rejected(
        store.api_keys().validate(ka.secret.expose_secret()).await,
        KeyRejection::Unknown,
    );
    expect_rejected(
        store.api_keys().validate(ka2.secret.expose_secret()).await,
        KeyRejection::Unknown,
    );
    expect_not_found(
        store.api_keys().get(ka.key.id).await,
        Entity::ApiKey,
        ka.key.id,
    );
    assert!(
        store
            .api_keys()
            .list_for_user(a.id)
            .await
            .unwrap()
            .is_empty()
    );
    // The other user's key is untouched.
    assert_eq!(
        store
            .api_keys()
            .validate(kb.secret.expose_secret())
            .await
            .unwrap()
            .user_id,
        b.id
    );

    // The events stay, detached.
    let all = all_events(store, &EventFilter::all(), 100).await;
    assert_eq!(all.len(), 5);
    for e in &a_events {
        let kept = all.iter().find(|x| x.id == e.id).expect("event kept");
        assert_eq!(kept.user_id, None);
        assert_eq!(kept.payload, e.payload);
        assert_eq!(kept.created_at, e.created_at);
    }
    assert_eq!(
        all.iter().find(|x| x.id == b_event.id).unwrap().user_id,
        Some(b.id)
    );
    assert_eq!(all.iter().find(|x| x.id == system.id).unwrap(), &system);
    assert!(
        all_events(store, &EventFilter::for_user(a.id), 100)
            .await
            .is_empty()
    );
    assert_eq!(
        store
            .events()
            .count(&login, dreamnet_db::TimeRange::all())
            .await
            .unwrap(),
        4
    );

    expect_not_found(users.delete(a.id).await, Entity::User, a.id);
    // The email and wallet are free; the new user inherits nothing.
    let again = users
        .create(NewUser::with_email(email("A@example.com")).wallet_address(nth_wallet(1)))
        .await
        .unwrap();
    assert!(
        all_events(store, &EventFilter::for_user(again.id), 100)
            .await
            .is_empty()
    );
    assert!(
        store
            .api_keys()
            .list_for_user(again.id)
            .await
            .unwrap()
            .is_empty()
    );
    // Recording for the deleted user is refused.
    expect_not_found(
        store
            .events()
            .record(NewEvent::new(login, json!({})).user(a.id))
            .await,
        Entity::User,
        a.id,
    );
}

pub async fn list_pages_through_users_with_equal_timestamps(store: &Store, clock: &ManualClock) {
    let users = store.users();
    let mut created = Vec::new();
    // Three instants, nine users each: ties on created_at are broken by id.
    for t in 0..3 {
        for i in 0..9 {
            created.push(
                users
                    .create(NewUser::with_email(email(&format!("u{t}-{i}@example.com"))))
                    .await
                    .unwrap(),
            );
        }
        clock.advance(Duration::seconds(1));
    }
    let mut expected = created.clone();
    expected.sort_by_key(|u| (u.created_at, u.id));
    let expected: Vec<_> = expected.iter().map(|u| u.id).collect();

    for page in [1, 4, 9, 26, 27, 28, 1000] {
        let got: Vec<_> = all_users(store, page).await.iter().map(|u| u.id).collect();
        assert_eq!(got, expected, "page size {page}");
    }
    // A page that ends exactly at the last user says there is no more.
    let p = users.list(27, None).await.unwrap();
    assert_eq!(p.items.len(), 27);
    assert_eq!(p.next, None);
    let p = users.list(26, None).await.unwrap();
    let last = users.list(26, p.next).await.unwrap();
    assert_eq!(last.items.len(), 1);
    assert_eq!(last.next, None);
    // Updates do not move a user in the list.
    clock.advance(Duration::seconds(1));
    users
        .update(
            expected[0],
            UserUpdate::new().merge_metadata(json!({"x": 1})),
        )
        .await
        .unwrap();
    let got: Vec<_> = all_users(store, 5).await.iter().map(|u| u.id).collect();
    assert_eq!(got, expected);
    let distinct: HashSet<_> = got.into_iter().collect();
    assert_eq!(distinct.len(), 27);
}

pub async fn concurrent_merges_lose_nothing(store: &Store, _clock: &ManualClock) {
    let user = store
        .users()
        .create(NewUser::with_email(email("busy@example.com")).metadata(json!({"base": 0})))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .users()
                    .update(
                        user.id,
                        UserUpdate::new().merge_metadata(json!({format!("k{i}"): i})),
                    )
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let after = store.users().get(user.id).await.unwrap();
    let meta = after.metadata.to_value().unwrap();
    let meta = meta.as_object().unwrap();
    assert_eq!(meta.len(), 51, "every merge survives: {meta:?}");
    for i in 0..50 {
        assert_eq!(meta[&format!("k{i}")], json!(i));
    }
    // Each update moved updated_at by exactly 1 µs (the clock stood still),
    // so 50 updates were applied one after another, none overwritten.
    assert_eq!(
        after.updated_at,
        user.updated_at + Duration::microseconds(50)
    );
}

/// Deleting a user while other tasks record events and issue keys for them
/// succeeds, and leaves nothing pointing at the deleted user: every event
/// that was recorded is kept, detached, and every key that was issued is
/// gone.
pub async fn delete_while_recording_and_issuing(store: &Store, _clock: &ManualClock) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let user = store
        .users()
        .create(NewUser::with_email(email("doomed@example.com")))
        .await
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let recorder = {
        let (store, started) = (store.clone(), started.clone());
        tokio::spawn(async move {
            let mut recorded = 0;
            for i in 0..2_000 {
                let new = NewEvent::new(event_type("doomed.tick"), json!({"i": i})).user(user.id);
                match store.events().record(new).await {
                    Ok(_) => recorded += 1,
                    Err(Error::NotFound {
                        entity: Entity::User,
                        id,
                    }) if id == user.id => break,
                    Err(e) => panic!("recording during a delete: {e:?}"),
                }
                started.fetch_add(1, Ordering::SeqCst);
            }
            recorded
        })
    };
    let issuer = {
        let (store, started) = (store.clone(), started.clone());
        tokio::spawn(async move {
            let mut issued = Vec::new();
            for _ in 0..500 {
                match store.api_keys().issue(user.id, "billing", None).await {
                    Ok(k) => issued.push(k),
                    Err(Error::NotFound {
                        entity: Entity::User,
                        id,
                    }) if id == user.id => break,
                    Err(e) => panic!("issuing during a delete: {e:?}"),
                }
                started.fetch_add(1, Ordering::SeqCst);
            }
            issued
        })
    };
    while started.load(Ordering::SeqCst) < 20 {
        tokio::task::yield_now().await;
    }
    store
        .users()
        .delete(user.id)
        .await
        .expect("a delete never fails because of rows pointing at the user");
    let recorded = recorder.await.unwrap();
    let issued = issuer.await.unwrap();

    let events = all_events(store, &EventFilter::all(), 1_000).await;
    assert_eq!(events.len(), recorded, "every recorded event is kept");
    assert!(
        events.iter().all(|e| e.user_id.is_none()),
        "an event still points at the deleted user"
    );
    for k in &issued {
        expect_rejected(
            store.api_keys().validate(k.secret.expose_secret()).await,
            KeyRejection::Unknown,
        );
    }
    assert!(
        store
            .api_keys()
            .list_for_user(user.id)
            .await
            .unwrap()
            .is_empty()
    );
    expect_not_found(store.users().get(user.id).await, Entity::User, user.id);
}
