//! The audit log on PostgreSQL, where it can be attacked and broken from
//! outside: a record that cannot be written takes its change with it,
//! records modified or deleted by hand are found by `verify`, writers about
//! different entities do not wait for each other, and no secret reaches
//! the table. Each test has its own database (see `common`).

mod common;

use std::time::Duration;

use dreamnet_db::{
    AUDIT_SHARDS, Actor, AuditBreakReason, AuditEntity, AuditQuery, Error, NewUser, PassportTier,
    Store, TimeRange, User, UserUpdate,
};

/// A hang guard, never a speed claim.
const GUARD: Duration = Duration::from_secs(30);

async fn user(store: &Store, name: &str) -> User {
    store
        .users()
        .create(NewUser::with_email(
            format!("{name}@example.com").parse().unwrap(),
        ))
        .await
        .unwrap()
}

fn shard(id: uuid::Uuid) -> i16 {
    (id.as_u128() % AUDIT_SHARDS as u128) as i16
}

fn citizen() -> UserUpdate {
    UserUpdate::new().passport_tier(PassportTier::parse("citizen").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_written_takes_its_change_with_it() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    let ada = user(&store, "ada").await;
    // Refuse every audit record of an update, as a full disk or a broken
    // constraint would.
    db.sql(
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.action IN ('user.updated', 'user.created', 'api_key.issued') THEN \
         RAISE EXCEPTION 'audit refused'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
         FOR EACH ROW EXECUTE FUNCTION refuse_audit();",
    )
    .await;
    let refused = store.users().update(ada.id, citizen()).await;
    assert!(
        matches!(refused, Err(Error::Database { .. })),
        "{refused:?}"
    );
    assert_eq!(store.users().get(ada.id).await.unwrap(), ada, "rolled back");
    let bob = store
        .users()
        .create(NewUser::with_email("bob@example.com".parse().unwrap()))
        .await;
    assert!(bob.is_err());
    assert!(
        store
            .users()
            .find_by_email(&"bob@example.com".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .api_keys()
            .issue(ada.id, "billing", None)
            .await
            .is_err()
    );
    assert!(
        store
            .api_keys()
            .list_for_user(ada.id)
            .await
            .unwrap()
            .is_empty()
    );
    // Without auditing, the same change goes through.
    let quiet = db.store_with(Store::builder().audit(false)).await;
    quiet.users().update(ada.id, citizen()).await.unwrap();
    let records = store
        .audit()
        .list(&AuditQuery::new(), 100, None)
        .await
        .unwrap();
    assert_eq!(records.items.len(), 1, "only ada's creation");
    assert!(
        store
            .audit()
            .verify(TimeRange::all())
            .await
            .unwrap()
            .is_intact()
    );
}

/// `(shard, seq)` of the record of `action` about `id`.
async fn place(store: &Store, id: uuid::Uuid, action: &str) -> (i16, i64) {
    let page = store
        .audit()
        .list(&AuditQuery::new().entity(AuditEntity::User, id), 100, None)
        .await
        .unwrap();
    let r = page.items.iter().find(|r| r.action == action).unwrap();
    (r.shard, r.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_changed_or_deleted_by_hand_are_found() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    let mut users = Vec::new();
    for i in 0..24 {
        let u = user(&store, &format!("t{i}")).await;
        store.users().update(u.id, citizen()).await.unwrap();
        users.push(u);
    }
    assert!(
        store
            .audit()
            .verify(TimeRange::all())
            .await
            .unwrap()
            .is_intact()
    );

    // A modified record.
    let (s, seq) = place(&store, users[0].id, "user.updated").await;
    db.sql(&format!(
        "UPDATE audit_log SET changes = '{{\"fields\": []}}' WHERE shard = {s} AND seq = {seq}"
    ))
    .await;
    let report = store.audit().verify(TimeRange::all()).await.unwrap();
    let found = report.first_break.expect("a break");
    assert_eq!((found.shard, found.seq), (s, seq));
    assert_eq!(found.reason, AuditBreakReason::Modified);
    db.sql("TRUNCATE audit_log; UPDATE audit_chain_heads SET seq = 0, purged_seq = 0, hash = repeat('0', 64), prev_hash = repeat('0', 64)").await;

    // Fresh chains: a record deleted from the middle, then from the end.
    let a = user(&store, "a").await;
    store.users().update(a.id, citizen()).await.unwrap();
    store
        .users()
        .update(
            a.id,
            UserUpdate::new().replace_metadata(serde_json::json!({"k": 1})),
        )
        .await
        .unwrap();
    assert!(
        store
            .audit()
            .verify(TimeRange::all())
            .await
            .unwrap()
            .is_intact()
    );
    // Newest first: the second update, the first, the creation.
    let recs = store
        .audit()
        .list(&AuditQuery::new().entity(AuditEntity::User, a.id), 10, None)
        .await
        .unwrap()
        .items;
    assert_eq!(recs.len(), 3);
    db.sql(&format!(
        "DELETE FROM audit_log WHERE id = '{}'",
        recs[1].id
    ))
    .await;
    let found = store
        .audit()
        .verify(TimeRange::all())
        .await
        .unwrap()
        .first_break
        .expect("a break");
    assert_eq!((found.shard, found.seq), (recs[0].shard, recs[0].seq));
    assert_eq!(found.id, Some(recs[0].id));
    assert_eq!(found.reason, AuditBreakReason::Missing);
    db.sql(&format!(
        "DELETE FROM audit_log WHERE shard = {} AND seq <= {}",
        recs[0].shard, recs[0].seq
    ))
    .await;
    db.sql(&format!(
        "UPDATE audit_chain_heads SET purged_seq = seq WHERE shard = {}",
        recs[0].shard
    ))
    .await;

    // Personal values changed by hand.
    let b = user(&store, "b").await;
    let (s, seq) = place(&store, b.id, "user.created").await;
    db.sql(&format!(
        "UPDATE audit_log SET personal = jsonb_set(personal, '{{email}}', '\"x@example.com\"') \
         WHERE shard = {s} AND seq = {seq}"
    ))
    .await;
    let report = store
        .audit()
        .verify(TimeRange::since(b.created_at))
        .await
        .unwrap();
    let found = report.first_break.expect("a break");
    assert_eq!(found.reason, AuditBreakReason::PersonalModified);
    assert_eq!((found.shard, found.seq), (s, seq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_record_deleted_is_found() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    let a = user(&store, "a").await;
    store.users().update(a.id, citizen()).await.unwrap();
    let (s, seq) = place(&store, a.id, "user.updated").await;
    db.sql(&format!(
        "DELETE FROM audit_log WHERE shard = {s} AND seq = {seq}"
    ))
    .await;
    let found = store
        .audit()
        .verify(TimeRange::all())
        .await
        .unwrap()
        .first_break
        .expect("a break");
    assert_eq!(found.reason, AuditBreakReason::Truncated);
    assert_eq!((found.shard, found.seq), (s, seq));
}

/// Two users whose records go to different chains.
async fn users_in_two_chains(store: &Store) -> (User, User) {
    let first = user(store, "c0").await;
    for i in 1.. {
        let u = user(store, &format!("c{i}")).await;
        if shard(u.id) != shard(first.id) {
            return (first, u);
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_about_other_entities_do_not_wait_for_a_busy_chain() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    let (inside, outside) = users_in_two_chains(&store).await;
    // Another transaction holds the first user's chain head, as a slow
    // writer would.
    let mut holder = common::client(&db.url).await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SELECT 1 FROM audit_chain_heads WHERE shard = {} FOR UPDATE",
        shard(inside.id)
    ))
    .await
    .unwrap();

    // A writer on another chain goes through while it is held.
    tokio::time::timeout(GUARD, store.users().update(outside.id, citizen()))
        .await
        .expect("a write on another chain does not wait")
        .unwrap();
    // A writer on the held chain waits for it...
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.users().update(inside.id, citizen()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a write on the held chain waits");
    // ...and goes through once it is released.
    tx.rollback().await.unwrap();
    tokio::time::timeout(GUARD, waiting)
        .await
        .expect("released")
        .unwrap()
        .unwrap();
    assert!(
        store
            .audit()
            .verify(TimeRange::all())
            .await
            .unwrap()
            .is_intact()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_table() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db
        .store()
        .await
        .acting_as(Actor::service("billing").unwrap());
    let (u, first) = store
        .users()
        .create_with_key(
            NewUser::with_email("k@example.com".parse().unwrap()),
            "billing",
            None,
        )
        .await
        .unwrap();
    let second = store.api_keys().rotate(first.key.id, None).await.unwrap();
    store.api_keys().disable(second.key.id).await.unwrap();
    store.users().delete(u.id).await.unwrap();
    let client = common::client(&db.url).await;
    let text: String = client
        .query_one(
            "SELECT coalesce(string_agg(a::text, ' '), '') FROM audit_log a",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(text.contains("api_key.rotated"));
    for k in [&first, &second] {
        let plain = k.secret.expose_secret();
        assert!(!text.contains(plain));
        assert!(!text.contains(&k.secret.hash()));
        assert!(!text.contains(&plain[4..12]), "not even the display prefix");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_is_recorded_with_its_actor() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    let ada = user(&store, "ada").await;
    let admin = store.acting_as(Actor::admin("support").unwrap());
    let sessions = dreamnet_db::Sessions::postgres(&admin).unwrap();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let created = sessions
            .create(dreamnet_db::NewSession::new(Duration::from_secs(3600)).user(ada.id))
            .await
            .unwrap();
        tokens.push(created.id.expose_secret().to_owned());
    }
    assert_eq!(sessions.delete_user(ada.id).await.unwrap(), 2);
    let ended = store
        .audit()
        .list(
            &AuditQuery::new()
                .entity(AuditEntity::User, ada.id)
                .action(dreamnet_db::AuditAction::SessionsEnded),
            10,
            None,
        )
        .await
        .unwrap()
        .items;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].actor, Actor::admin("support").unwrap());
    assert_eq!(ended[0].changes["sessions"], serde_json::json!(2));
    let text = format!("{ended:?}");
    for t in &tokens {
        assert!(!text.contains(t.as_str()));
    }
    // Without auditing, nothing is recorded.
    let quiet = db.store_with(Store::builder().audit(false)).await;
    dreamnet_db::Sessions::postgres(&quiet)
        .unwrap()
        .delete_user(ada.id)
        .await
        .unwrap();
    let all = store
        .audit()
        .list(&AuditQuery::new(), 100, None)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2, "ada's creation and the one log-out");
    assert!(
        store
            .audit()
            .verify(TimeRange::all())
            .await
            .unwrap()
            .is_intact()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_while_others_write_finds_nothing_wrong() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(user(&store, &format!("w{i}")).await);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = users
        .into_iter()
        .map(|u| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store
                        .users()
                        .update(
                            u.id,
                            UserUpdate::new().merge_metadata(serde_json::json!({"n": n})),
                        )
                        .await
                        .unwrap();
                    n += 1;
                }
            })
        })
        .collect();
    for _ in 0..3 {
        let report = tokio::time::timeout(GUARD, store.audit().verify(TimeRange::all()))
            .await
            .unwrap()
            .unwrap();
        assert!(report.is_intact(), "{report:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
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
