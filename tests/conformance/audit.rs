//! The audit log: every change to users and keys recorded with its actor,
//! nothing recorded for a change that failed, no secret in any record,
//! reading by entity, actor, action and time in keyset pages, verification,
//! retention purges and erasure of personal values.

use std::collections::{BTreeSet, HashSet};

use chrono::Duration;
use dreamnet_db::{
    Actor, AuditAction, AuditEntity, AuditQuery, AuditRecord, Field, IssuedKey, KeyCredits,
    ManualClock, NewUser, PassportTier, Store, TimeRange, UserUpdate,
};
use serde_json::json;

use super::*;

/// Every record, newest first, through pages of `page`.
async fn all_records(store: &Store, query: &AuditQuery, page: usize) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let p = store.audit().list(query, page, after).await.unwrap();
        out.extend(p.items);
        match p.next {
            Some(c) => after = Some(c),
            None => return out,
        }
    }
}

/// Whether `result` is the refusal a store gets where its database role
/// may only read and append to `audit_log` (the application role of a
/// least-privilege deployment): purges and erasures are then the owner's
/// to run. The caller checks that nothing changed.
fn lacks_privilege<T: std::fmt::Debug>(result: &dreamnet_db::Result<T>) -> bool {
    matches!(result, Err(dreamnet_db::Error::PermissionDenied { .. }))
}

fn actions(records: &[AuditRecord]) -> Vec<&str> {
    records.iter().rev().map(|r| r.action.as_str()).collect()
}

fn about(kind: AuditEntity, id: uuid::Uuid) -> AuditQuery {
    AuditQuery::new().entity(kind, id)
}

pub async fn every_change_is_recorded_with_its_actor(store: &Store, clock: &ManualClock) {
    let billing = store.acting_as(Actor::service("billing").unwrap());
    let user = billing
        .users()
        .create(NewUser::with_email(email("audit-ada@example.com")))
        .await
        .unwrap();
    clock.advance(Duration::seconds(1));
    billing
        .users()
        .update(
            user.id,
            UserUpdate::new().passport_tier(PassportTier::parse("citizen").unwrap()),
        )
        .await
        .unwrap();
    let issued = billing
        .api_keys()
        .issue(user.id, "billing", None)
        .await
        .unwrap();
    let k = issued.key.id;
    let keys = billing.api_keys();
    keys.disable(k).await.unwrap();
    keys.enable(k).await.unwrap();
    keys.set_permissions(k, ["billing.read"]).await.unwrap();
    keys.set_details(k, Some("ci"), Some(json!({"team": "payments"}).into()))
        .await
        .unwrap();
    keys.set_credits(k, Some(KeyCredits::new(10)))
        .await
        .unwrap();
    keys.set_rate_limits(k, vec![]).await.unwrap();
    let rotated = keys.rotate(k, None).await.unwrap();
    keys.revoke(rotated.key.id).await.unwrap();
    let (other, other_key) = billing
        .users()
        .create_with_key(
            NewUser::with_email(email("audit-bob@example.com")),
            "mail",
            None,
        )
        .await
        .unwrap();
    billing.users().delete(other.id).await.unwrap();

    let of_user = all_records(store, &about(AuditEntity::User, user.id), 100).await;
    assert_eq!(actions(&of_user), ["user.created", "user.updated"]);
    let of_key = all_records(store, &about(AuditEntity::ApiKey, k), 100).await;
    assert_eq!(
        actions(&of_key),
        [
            "api_key.issued",
            "api_key.disabled",
            "api_key.enabled",
            "api_key.permissions_set",
            "api_key.details_set",
            "api_key.credits_set",
            "api_key.rate_limits_set",
            "api_key.rotated",
        ]
    );
    assert_eq!(
        of_key.last().unwrap().entity_id,
        Some(k),
        "records are about the entity asked for"
    );
    let rotation = &of_key[0];
    assert_eq!(rotation.changes["replaced_by"], json!(rotated.key.id));
    let of_new_key = all_records(store, &about(AuditEntity::ApiKey, rotated.key.id), 100).await;
    assert_eq!(actions(&of_new_key), ["api_key.issued", "api_key.revoked"]);
    let of_other = all_records(store, &about(AuditEntity::User, other.id), 100).await;
    assert_eq!(actions(&of_other), ["user.created", "user.deleted"]);
    assert_eq!(of_other[0].changes["api_keys_deleted"], json!(1));
    let of_other_key = all_records(store, &about(AuditEntity::ApiKey, other_key.key.id), 100).await;
    assert_eq!(actions(&of_other_key), ["api_key.issued"]);

    let everything = all_records(store, &AuditQuery::new(), 100).await;
    assert_eq!(everything.len(), 2 + 8 + 2 + 3);
    for r in &everything {
        assert_eq!(r.actor, Actor::service("billing").unwrap(), "{}", r.action);
    }
    let by_actor = all_records(
        store,
        &AuditQuery::new().actor(Actor::service("billing").unwrap()),
        100,
    )
    .await;
    assert_eq!(by_actor.len(), everything.len());
    assert!(
        all_records(
            store,
            &AuditQuery::new().actor(Actor::service("mail").unwrap()),
            100
        )
        .await
        .is_empty()
    );
    // The issue record says what the key allows; the time is the store's.
    let issue = of_key.last().unwrap();
    assert_eq!(issue.changes["service"], json!("billing"));
    assert_eq!(issue.changes["user_id"], json!(user.id));
    assert_eq!(issue.created_at, now(clock));
}

pub async fn user_updates_record_fields_old_and_new(store: &Store, _clock: &ManualClock) {
    let user = store
        .users()
        .create(NewUser::with_email(email("old@example.com")))
        .await
        .unwrap();
    store
        .users()
        .update(
            user.id,
            UserUpdate::new()
                .email(email("new@example.com"))
                .passport_tier(PassportTier::parse("citizen").unwrap()),
        )
        .await
        .unwrap();
    let records = all_records(
        store,
        &about(AuditEntity::User, user.id).action(AuditAction::UserUpdated),
        10,
    )
    .await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.changes["fields"], json!(["email", "passport_tier"]));
    assert_eq!(
        r.changes["passport_tier"],
        json!({"old": "visitor", "new": "citizen"})
    );
    // Personal values are kept apart from the rest.
    assert!(!r.changes.to_string().contains("example.com"));
    assert_eq!(
        r.personal.as_ref().unwrap()["email"],
        json!({"old": "old@example.com", "new": "new@example.com"})
    );
    assert_eq!(r.subject, Some(user.id));
    assert_eq!(r.actor, Actor::Unknown, "no actor was given");
}

pub async fn failed_changes_write_no_record(store: &Store, _clock: &ManualClock) {
    let user = store
        .users()
        .create(NewUser::with_email(email("taken@example.com")))
        .await
        .unwrap();
    let issued = store
        .api_keys()
        .issue(user.id, "billing", None)
        .await
        .unwrap();
    store.api_keys().revoke(issued.key.id).await.unwrap();
    let before = all_records(store, &AuditQuery::new(), 100).await.len();
    let missing = unknown_id();

    expect_conflict(
        store
            .users()
            .create(NewUser::with_email(email("TAKEN@example.com")))
            .await,
        Field::Email,
    );
    expect_not_found(
        store
            .users()
            .update(
                missing,
                UserUpdate::new().passport_tier(PassportTier::parse("citizen").unwrap()),
            )
            .await,
        Entity::User,
        missing,
    );
    expect_not_found(store.users().delete(missing).await, Entity::User, missing);
    expect_invalid(
        store.api_keys().rotate(issued.key.id, None).await,
        Field::Id,
    );
    expect_not_found(
        store.api_keys().disable(missing).await,
        Entity::ApiKey,
        missing,
    );
    expect_not_found(
        store.api_keys().issue(missing, "billing", None).await,
        Entity::User,
        missing,
    );
    assert_eq!(
        all_records(store, &AuditQuery::new(), 100).await.len(),
        before
    );
    assert!(
        store
            .audit()
            .verify(TimeRange::all())
            .await
            .unwrap()
            .is_intact()
    );
}

pub async fn records_hold_no_secret(store: &Store, _clock: &ManualClock) {
    let (user, first) = store
        .users()
        .create_with_key(NewUser::with_email(email("s@example.com")), "billing", None)
        .await
        .unwrap();
    let second: IssuedKey = store.api_keys().issue(user.id, "mail", None).await.unwrap();
    let third = store.api_keys().rotate(second.key.id, None).await.unwrap();
    let mut secrets = Vec::new();
    for k in [&first, &second, &third] {
        let plain = k.secret.expose_secret().to_owned();
        secrets.push(k.secret.hash());
        // Not even the part shown for display.
        secrets.push(plain[dreamnet_db::KEY_PREFIX.len()..][..8].to_owned());
        secrets.push(plain);
    }
    let records = all_records(store, &AuditQuery::new(), 100).await;
    assert!(records.len() >= 5);
    for r in &records {
        let text = format!(
            "{r:?} {} {}",
            r.changes,
            r.personal.clone().unwrap_or_default()
        );
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret in {}", r.action);
        }
    }
}

pub async fn actors_are_recorded_as_given(store: &Store, _clock: &ManualClock) {
    let admin = Actor::admin("root@ops").unwrap();
    let someone = store
        .users()
        .create(NewUser::with_email(email("someone@example.com")))
        .await
        .unwrap();
    let actors = [
        Actor::system(),
        admin.clone(),
        Actor::user(someone.id),
        Actor::service("billing").unwrap(),
    ];
    for (i, actor) in actors.iter().enumerate() {
        store
            .acting_as(actor.clone())
            .users()
            .create(NewUser::with_email(email(&format!("actor{i}@example.com"))))
            .await
            .unwrap();
    }
    for actor in actors.iter().chain([&Actor::Unknown]) {
        let found = all_records(store, &AuditQuery::new().actor(actor.clone()), 10).await;
        assert_eq!(found.len(), 1, "{actor}");
        assert_eq!(&found[0].actor, actor);
    }
    assert_eq!(store.acting_as(admin.clone()).actor(), &admin);
    expect_invalid(Actor::service(""), Field::Actor);
    expect_invalid(Actor::admin("x".repeat(101)), Field::Actor);
}

pub async fn list_filters_by_time_and_pages_with_equal_timestamps(
    store: &Store,
    clock: &ManualClock,
) {
    let t0 = now(clock);
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            store
                .users()
                .create(NewUser::with_email(email(&format!("p{i}@example.com"))))
                .await
                .unwrap()
                .id,
        );
    }
    clock.advance(Duration::hours(1));
    let t1 = now(clock);
    for i in 7..10 {
        store
            .users()
            .create(NewUser::with_email(email(&format!("p{i}@example.com"))))
            .await
            .unwrap();
    }
    // Seven records share one time: pages of two still see each once.
    let early = all_records(
        store,
        &AuditQuery::new().range(TimeRange::between(t0, t1)),
        2,
    )
    .await;
    assert_eq!(early.len(), 7);
    let seen: HashSet<_> = early.iter().map(|r| r.entity_id.unwrap()).collect();
    assert_eq!(seen, ids.iter().copied().collect());
    let late = all_records(store, &AuditQuery::new().range(TimeRange::since(t1)), 2).await;
    assert_eq!(late.len(), 3);
    let all = all_records(store, &AuditQuery::new(), 3).await;
    assert_eq!(all.len(), 10);
    assert!(
        all.windows(2)
            .all(|w| w[0].cursor().created_at >= w[1].cursor().created_at),
        "newest first"
    );
    let by_action = all_records(
        store,
        &AuditQuery::new().action(AuditAction::UserCreated),
        4,
    )
    .await;
    assert_eq!(by_action.len(), 10);
    assert!(
        all_records(
            store,
            &AuditQuery::new().action(AuditAction::UserDeleted),
            4
        )
        .await
        .is_empty()
    );
    expect_invalid(
        store.audit().list(&AuditQuery::new(), 0, None).await,
        Field::Limit,
    );
    expect_invalid(
        store
            .audit()
            .list(
                &AuditQuery::new().range(TimeRange::between(t1, t0)),
                10,
                None,
            )
            .await,
        Field::TimeRange,
    );
}

pub async fn verify_passes_and_purges_keep_chains_checkable(store: &Store, clock: &ManualClock) {
    let old_day = now(clock);
    let mut users = Vec::new();
    for i in 0..20 {
        users.push(
            store
                .users()
                .create(NewUser::with_email(email(&format!("v{i}@example.com"))))
                .await
                .unwrap(),
        );
    }
    clock.advance(Duration::days(10));
    let cutoff = now(clock) - Duration::days(5);
    for u in &users[..5] {
        store
            .users()
            .update(u.id, UserUpdate::new().replace_metadata(json!({"n": 1})))
            .await
            .unwrap();
    }
    let report = store.audit().verify(TimeRange::all()).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, 25);
    let recent = store
        .audit()
        .verify(TimeRange::since(cutoff))
        .await
        .unwrap();
    assert!(recent.is_intact(), "{recent:?}");
    assert_eq!(recent.checked, 5);

    let ops = store.acting_as(Actor::service("retention").unwrap());
    let mut progress = Vec::new();
    let purged = ops
        .audit()
        .purge_before(cutoff)
        .batch_size(3)
        .run_with(|n| {
            progress.push(n);
            std::ops::ControlFlow::Continue(())
        })
        .await;
    if lacks_privilege(&purged) {
        assert_eq!(all_records(store, &AuditQuery::new(), 100).await.len(), 25);
        assert!(
            store
                .audit()
                .verify(TimeRange::all())
                .await
                .unwrap()
                .is_intact()
        );
        return;
    }
    let purged = purged.unwrap();
    assert_eq!(purged, 20);
    assert!(progress.len() >= 7, "batches of three: {progress:?}");
    let left = all_records(store, &AuditQuery::new(), 100).await;
    assert!(left.iter().all(|r| r.created_at >= cutoff));
    let purges = all_records(
        store,
        &AuditQuery::new().action(AuditAction::AuditPurged),
        100,
    )
    .await;
    assert_eq!(
        purges
            .iter()
            .map(|r| r.changes["count"].as_u64().unwrap())
            .sum::<u64>(),
        20,
        "every batch is on the record"
    );
    assert!(
        purges
            .iter()
            .all(|r| r.actor == Actor::service("retention").unwrap())
    );
    let after = store.audit().verify(TimeRange::all()).await.unwrap();
    assert!(after.is_intact(), "{after:?}");
    // Nothing older is left: a second run deletes nothing, records nothing.
    assert_eq!(store.audit().purge_before(cutoff).run().await.unwrap(), 0);
    assert_eq!(
        all_records(store, &AuditQuery::new(), 100).await.len(),
        left.len()
    );
    assert!(old_day < cutoff);
    expect_invalid(
        store.audit().purge_before(cutoff).batch_size(0).run().await,
        Field::Limit,
    );
    expect_invalid(
        store
            .audit()
            .purge_before(cutoff)
            .batch_size(dreamnet_db::MAX_AUDIT_PURGE_BATCH + 1)
            .run()
            .await,
        Field::Limit,
    );
}

pub async fn erasing_personal_values_keeps_the_chain(store: &Store, _clock: &ManualClock) {
    let user = store
        .users()
        .create(
            NewUser::with_email(email("erase-me@example.com"))
                .wallet_address(wallet("0x52908400098527886e0f7030069857d2e4169ee7")),
        )
        .await
        .unwrap();
    store
        .users()
        .update(
            user.id,
            UserUpdate::new().email(email("erase-me-2@example.com")),
        )
        .await
        .unwrap();
    let kept = store
        .users()
        .create(NewUser::with_email(email("keep-me@example.com")))
        .await
        .unwrap();
    store.users().delete(user.id).await.unwrap();
    let admin = store.acting_as(Actor::admin("dpo").unwrap());
    let before = all_records(store, &AuditQuery::new(), 100).await;
    let erased = admin.audit().erase_personal(user.id).await;
    if lacks_privilege(&erased) {
        assert_eq!(all_records(store, &AuditQuery::new(), 100).await, before);
        return;
    }
    assert_eq!(erased.unwrap(), 2);

    let records = all_records(store, &AuditQuery::new(), 100).await;
    for r in &records {
        let text = format!("{r:?}");
        assert!(!text.contains("erase-me"), "{}", r.action);
        assert!(!text.to_lowercase().contains("52908400098527886e0f"));
    }
    let of_user = all_records(store, &about(AuditEntity::User, user.id), 100).await;
    assert_eq!(
        actions(&of_user),
        [
            "user.created",
            "user.updated",
            "user.deleted",
            "audit.personal_erased"
        ]
    );
    // What changed is still said, without the values.
    assert_eq!(of_user[2].changes["fields"], json!(["email"]));
    assert_eq!(of_user[0].actor, Actor::admin("dpo").unwrap());
    let other = all_records(store, &about(AuditEntity::User, kept.id), 100).await;
    assert_eq!(
        other[0].personal.as_ref().unwrap()["email"],
        json!("keep-me@example.com"),
        "other users' values stay"
    );
    let report = store.audit().verify(TimeRange::all()).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
}

pub async fn auditing_can_be_switched_off(store: &Store, _clock: &ManualClock) {
    let user = store
        .users()
        .create(NewUser::with_email(email("quiet@example.com")))
        .await
        .unwrap();
    let k = store
        .api_keys()
        .issue(user.id, "billing", None)
        .await
        .unwrap();
    store
        .api_keys()
        .set_permissions(k.key.id, BTreeSet::from(["a".to_owned()]))
        .await
        .unwrap();
    store.users().delete(user.id).await.unwrap();
    assert!(all_records(store, &AuditQuery::new(), 10).await.is_empty());
    assert!(
        store
            .audit()
            .verify(TimeRange::all())
            .await
            .unwrap()
            .is_intact()
    );
}

/// A small PNG (its signature and header chunk, then zeros).
fn png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.resize(256, 0);
    v
}

pub async fn media_uploads_and_deletions_are_recorded(store: &Store, _clock: &ManualClock) {
    let owner = store
        .users()
        .create(NewUser::with_email(email("media@example.com")))
        .await
        .unwrap();
    let app = store.acting_as(Actor::service("gallery").unwrap());
    let data = png();
    let kept = app
        .media()
        .upload_reader(
            dreamnet_db::NewMedia::for_user(owner.id, "holiday.png"),
            &data[..],
        )
        .await
        .unwrap();
    let gone = app
        .media()
        .upload_reader(dreamnet_db::NewMedia::system("logo.png"), &data[..])
        .await
        .unwrap();
    app.media().delete(gone.id).await.unwrap();
    assert_eq!(app.media().delete_owner(owner.id).await.unwrap(), 1);

    let of_kept = all_records(store, &about(AuditEntity::Media, kept.id), 10).await;
    assert_eq!(actions(&of_kept), ["media.uploaded", "media.deleted"]);
    let upload = &of_kept[1];
    assert_eq!(upload.actor, Actor::service("gallery").unwrap());
    assert_eq!(upload.changes["content_type"], json!("image/png"));
    assert_eq!(upload.changes["size_bytes"], json!(data.len()));
    assert_eq!(upload.changes["owner_id"], json!(owner.id));
    // A user's file name is theirs: kept apart, erasable.
    assert!(!upload.changes.to_string().contains("holiday"));
    assert_eq!(
        upload.personal.as_ref().unwrap()["file_name"],
        json!("holiday.png")
    );
    let of_gone = all_records(store, &about(AuditEntity::Media, gone.id), 10).await;
    assert_eq!(actions(&of_gone), ["media.uploaded", "media.deleted"]);
    assert_eq!(of_gone[1].changes["file_name"], json!("logo.png"));
    let erased = store.audit().erase_personal(owner.id).await;
    if !lacks_privilege(&erased) {
        erased.unwrap();
        let upload = &all_records(store, &about(AuditEntity::Media, kept.id), 10).await[1];
        assert!(upload.personal.is_none());
    }
    assert!(
        store
            .audit()
            .verify(TimeRange::all())
            .await
            .unwrap()
            .is_intact()
    );
}
