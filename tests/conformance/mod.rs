//! The behaviour every backend of [`Store`] must have, written once.
//!
//! Each behaviour is a plain async function taking the [`Store`] under test
//! and the [`ManualClock`] it was built with, in [`users`], [`keys`] and
//! [`events`]; the behaviours in [`outside`] take the whole [`Harness`]
//! (which derefs to its store), for its SQL connection when the backend
//! has one. A backend's test file (`tests/memory.rs`,
//! `tests/postgres_conformance.rs`, …) declares `mod conformance;` and
//! invokes [`conformance_tests!`] once with a factory that builds a store of
//! that backend from a [`StoreBuilder`]; the macro generates one
//! `#[tokio::test]` per behaviour. A behaviour that one backend passes and
//! another fails is a bug in a backend, never a reason to fork this suite.
//!
//! ```ignore
//! mod conformance;
//! use conformance::Harness;
//!
//! async fn memory(builder: dreamnet_db::StoreBuilder) -> Option<Harness> {
//!     Some(Harness::new(builder.in_memory(), ()))
//! }
//! conformance_tests!(memory);
//! ```
//!
//! The factory returns `None` to skip (a server it needs is unreachable
//! outside CI); whatever it must keep alive for the test (a database that is
//! dropped afterwards) rides in the [`Harness`], and a backend on PostgreSQL
//! gives it the database's URL ([`Harness::with_sql`]) so that behaviours
//! can write rows the way other services do, with plain SQL.
#![allow(dead_code)]

pub mod analytics;
pub mod audit;
pub mod events;
pub mod keys;
pub mod outside;
pub mod policies;
pub mod users;

use std::collections::HashSet;
use std::fmt::Debug;

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use dreamnet_db::{
    ApiKey, Email, Entity, Error, Event, EventFilter, EventType, KeyRejection, MAX_PAGE_SIZE,
    ManualClock, Result, Store, User, WalletAddress,
};
use uuid::Uuid;

/// Generates one test per behaviour for the backend that `$factory`
/// builds: `async fn(StoreBuilder) -> Option<Harness>`. The builder it gets
/// already carries the test's [`ManualClock`] (and, for some behaviours,
/// other settings); the factory only adds what its backend needs.
///
/// Tests are grouped in modules (`users::`, `keys::`, `events::`), so
/// `cargo test --test memory keys::` runs one group.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests! { @expand $factory;
            users {
                create_and_get,
                find_by_email_is_case_insensitive,
                find_by_wallet_accepts_any_case,
                email_only_and_wallet_only_users,
                user_needs_an_email_or_a_wallet,
                duplicate_email_is_a_conflict,
                duplicate_wallet_is_a_conflict,
                email_conflict_is_reported_before_wallet,
                concurrent_creates_of_one_email_one_wins,
                invalid_documents_are_refused,
                update_each_field,
                updated_at_always_moves_forward,
                merge_and_replace_documents,
                update_to_a_taken_identity_is_a_conflict,
                update_cannot_remove_both_identities,
                merged_document_over_the_limit_is_refused
                    (|b: dreamnet_db::StoreBuilder| b.max_payload_bytes(64)),
                unknown_ids_are_not_found,
                delete_removes_keys_and_detaches_events,
                delete_while_recording_and_issuing,
                list_pages_through_users_with_equal_timestamps,
                concurrent_merges_lose_nothing,
            }
            keys {
                issue_shows_the_secret_once_and_stores_its_hash,
                validate_returns_the_key_record,
                validate_for_refuses_other_services,
                malformed_and_unknown_keys_are_refused,
                revoked_keys_are_refused,
                expired_keys_are_refused,
                expiry_must_be_in_the_future,
                issue_for_unknown_user_is_not_found,
                invalid_service_is_refused,
                last_used_is_written_at_most_once_per_resolution,
                last_used_resolution_is_configurable
                    (|b: dreamnet_db::StoreBuilder| {
                        b.last_used_resolution(std::time::Duration::from_secs(5))
                    }),
                list_for_user_is_oldest_first_with_revoked_keys,
                rotate_replaces_the_key,
                rotate_refuses_revoked_and_unknown_keys,
                create_with_key_is_atomic,
            }
            events {
                record_with_and_without_a_user,
                record_for_unknown_user_is_not_found,
                record_many_thousands_then_count,
                record_many_is_all_or_nothing,
                payload_limit_default,
                payload_limit_configured
                    (|b: dreamnet_db::StoreBuilder| b.max_payload_bytes(64)),
                payload_with_nul_is_refused,
                list_is_newest_first_with_type_filter,
                list_honours_the_time_range,
                list_pages_through_events_with_equal_timestamps,
                payload_containment,
                count_in_a_range,
                count_by_bucket_across_a_day_boundary,
                invalid_limits_and_ranges_are_refused,
                instants_outside_what_postgresql_stores_are_refused,
                health_and_migrate,
                purge_before_deletes_only_older_events_of_the_type,
                purge_runs_in_batches_stops_and_resumes,
                purge_refuses_bad_batch_sizes,
            }
            analytics {
                active_users_per_day_week_and_month,
                funnel_counts_users_in_order_within_the_window,
                retention_by_weekly_cohort,
                breakdown_by_payload_key_with_top_rest_and_missing,
                top_event_types_in_a_range,
                rollups_change_no_answer,
                analytics_input_is_validated,
                search_events_by_words_ranked_with_pages,
                search_relevance_ranks_only_the_newest_candidates,
                search_users_by_email_wallet_and_display_name,
            }
            policies {
                keys_without_a_policy_verify_as_before,
                a_policy_is_stored_and_read_back,
                permissions_all_and_any,
                disable_and_enable,
                credits_are_spent_and_run_out,
                credits_refill_daily_and_monthly,
                rate_limits_refuse_with_retry_after,
                one_verdict_for_every_rejection,
                bad_policy_input_writes_nothing,
                policy_changes_of_unknown_keys_are_not_found,
                usage_is_counted_per_hour_and_day,
                last_used_is_written_by_the_flush,
                rotate_carries_the_policy,
            }
            audit {
                every_change_is_recorded_with_its_actor,
                user_updates_record_fields_old_and_new,
                failed_changes_write_no_record,
                records_hold_no_secret,
                actors_are_recorded_as_given,
                list_filters_by_time_and_pages_with_equal_timestamps,
                verify_passes_and_purges_keep_chains_checkable,
                erasing_personal_values_keeps_the_chain,
                auditing_can_be_switched_off
                    (|b: dreamnet_db::StoreBuilder| b.audit(false)),
                media_uploads_and_deletions_are_recorded
                    (|b: dreamnet_db::StoreBuilder| {
                        b.media_storage(dreamnet_db::MediaStorage::in_memory())
                    }),
            }
            outside {
                documents_written_outside_read_back_exactly,
                event_payloads_of_every_type_read_back_exactly,
                sessions_written_outside_read_back_exactly,
                limits_agree_with_postgres,
                documents_past_the_crate_limits_stay_readable,
            }
        }
    };
    (@expand $factory:path;
        $( $group:ident { $( $name:ident $( ($config:expr) )? ),* $(,)? } )*
    ) => {
        $(
            mod $group {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let clock = dreamnet_db::ManualClock::new($crate::conformance::start());
                        let builder = dreamnet_db::Store::builder().clock(clock.clone());
                        $( let builder = ($config)(builder); )?
                        let Some(harness) = $factory(builder).await else {
                            return;
                        };
                        // A backend that deadlocks fails here instead of hanging
                        // the run.
                        let limit = std::time::Duration::from_secs(300);
                        tokio::time::timeout(
                            limit,
                            $crate::conformance::$group::$name(&harness, &clock),
                        )
                        .await
                        .expect("the behaviour finished within 300 s");
                    }
                )*
            }
        )*
    };
}

/// A store under test and whatever must live as long as it (a test
/// database, a server). Derefs to the store, so a behaviour taking
/// `&Store` is called with `&harness`.
pub struct Harness {
    /// The store the behaviours run against.
    pub store: Store,
    /// The URL of the store's PostgreSQL database, if it has one.
    sql: Option<String>,
    _keep: Box<dyn Send>,
}

impl Harness {
    /// Wraps `store`, keeping `keep` alive until the test ends.
    pub fn new(store: Store, keep: impl Send + 'static) -> Self {
        Harness {
            store,
            sql: None,
            _keep: Box::new(keep),
        }
    }

    /// The store's data is in the PostgreSQL database at `url`.
    pub fn with_sql(mut self, url: String) -> Self {
        self.sql = Some(url);
        self
    }

    /// A plain SQL connection to the store's database, as another service
    /// would have; `None` for a backend without one.
    pub async fn sql(&self) -> Option<tokio_postgres::Client> {
        let url = self.sql.as_ref()?;
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database with SQL");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Some(client)
    }
}

impl std::ops::Deref for Harness {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

/// Where every test's clock starts: 2026-03-01T12:00:00.123456789Z. The
/// nanoseconds check that stored times are truncated to microseconds.
pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::nanoseconds(123_456_789)
}

/// The store's "now": the clock truncated to microseconds.
pub fn now(clock: &ManualClock) -> DateTime<Utc> {
    use dreamnet_db::Clock;
    clock.now().trunc_subsecs(6)
}

pub fn email(s: &str) -> Email {
    s.parse().expect("a valid email")
}

pub fn wallet(s: &str) -> WalletAddress {
    s.parse().expect("a valid wallet address")
}

/// The `i`th of many distinct lower-case wallet addresses.
pub fn nth_wallet(i: u64) -> WalletAddress {
    wallet(&format!("0x{i:040x}"))
}

pub fn event_type(s: &str) -> EventType {
    s.parse().expect("a valid event type")
}

/// EIP-55's own test vectors (mixed-case, checksummed).
pub const EIP55: [&str; 4] = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
];

/// An id no record has.
pub fn unknown_id() -> Uuid {
    Uuid::now_v7()
}

#[track_caller]
pub fn expect_invalid<T: Debug>(result: Result<T>, field: dreamnet_db::Field) {
    match result {
        Err(Error::InvalidInput { field: f, .. }) if f == field => {}
        other => panic!("expected InvalidInput on {field}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_conflict<T: Debug>(result: Result<T>, field: dreamnet_db::Field) {
    match result {
        Err(Error::Conflict { field: f }) if f == field => {}
        other => panic!("expected Conflict on {field}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_not_found<T: Debug>(result: Result<T>, entity: Entity, id: Uuid) {
    match result {
        Err(Error::NotFound { entity: e, id: i }) if e == entity && i == id => {}
        other => panic!("expected NotFound {entity} {id}, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_rejected<T: Debug>(result: Result<T>, why: KeyRejection) {
    match result {
        Err(Error::Unauthorized(w)) if w == why => {}
        other => panic!("expected Unauthorized({why:?}), got {other:?}"),
    }
}

/// Everything a store holds, as its public API shows it: every user (in
/// list order), every key of every user, every event (newest first).
/// Compared before and after a refused operation to show that nothing was
/// written.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub users: Vec<User>,
    pub keys: Vec<ApiKey>,
    pub events: Vec<Event>,
}

pub async fn snapshot(store: &Store) -> Snapshot {
    let users = all_users(store, MAX_PAGE_SIZE).await;
    let mut keys = Vec::new();
    for u in &users {
        keys.extend(store.api_keys().list_for_user(u.id).await.unwrap());
    }
    let events = all_events(store, &EventFilter::all(), MAX_PAGE_SIZE).await;
    Snapshot {
        users,
        keys,
        events,
    }
}

/// Asserts that the store holds exactly what `before` shows.
#[track_caller]
pub fn assert_unchanged(before: &Snapshot, after: &Snapshot) {
    assert_eq!(before.users.len(), after.users.len(), "users were written");
    assert_eq!(before.keys.len(), after.keys.len(), "keys were written");
    assert_eq!(
        before.events.len(),
        after.events.len(),
        "events were written"
    );
    assert_eq!(before, after, "rows were changed");
}

/// Every user, walking pages of `page` and checking each page's shape:
/// full pages until the last, `next` only when more follow, no repeats.
pub async fn all_users(store: &Store, page: usize) -> Vec<User> {
    let mut out: Vec<User> = Vec::new();
    let mut after = None;
    loop {
        let p = store.users().list(page, after).await.unwrap();
        assert!(p.items.len() <= page, "a page longer than its limit");
        check_progress(
            after,
            p.items.first().map(|u| (u.created_at, u.id)),
            out.len(),
        );
        if let Some(next) = p.next {
            assert_eq!(p.items.len(), page, "a short page that is not the last");
            let last = p.items.last().unwrap();
            assert_eq!((next.created_at, next.id), (last.created_at, last.id));
            // The cursor survives its string form.
            assert_eq!(
                next.to_string().parse::<dreamnet_db::Cursor>().unwrap(),
                next
            );
        }
        out.extend(p.items);
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let ids: HashSet<Uuid> = out.iter().map(|u| u.id).collect();
    assert_eq!(ids.len(), out.len(), "a user appeared on two pages");
    out
}

/// Fails (rather than looping for ever) when a page starts with the item
/// its cursor named, or a walk goes on far longer than any suite needs.
#[track_caller]
fn check_progress(
    after: Option<dreamnet_db::Cursor>,
    first: Option<(DateTime<Utc>, Uuid)>,
    seen: usize,
) {
    if let (Some(c), Some(first)) = (after, first) {
        assert_ne!(
            (c.created_at, c.id),
            first,
            "the page after a cursor repeats the cursor's item"
        );
    }
    assert!(seen <= 100_000, "a page walk that does not end");
}

/// Every event passing `filter`, walking pages as [`all_users`] does.
pub async fn all_events(store: &Store, filter: &EventFilter, page: usize) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    let mut after = None;
    loop {
        let p = store.events().list(filter, page, after).await.unwrap();
        assert!(p.items.len() <= page, "a page longer than its limit");
        check_progress(
            after,
            p.items.first().map(|e| (e.created_at, e.id)),
            out.len(),
        );
        if let Some(next) = p.next {
            assert_eq!(p.items.len(), page, "a short page that is not the last");
            let last = p.items.last().unwrap();
            assert_eq!((next.created_at, next.id), (last.created_at, last.id));
        }
        out.extend(p.items);
        match p.next {
            Some(n) => after = Some(n.to_string().parse().unwrap()),
            None => break,
        }
    }
    let ids: HashSet<Uuid> = out.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), out.len(), "an event appeared on two pages");
    out
}

/// The ids of `events`, in order.
pub fn ids(events: &[Event]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

/// `events` sorted newest first by `(created_at, id)`, the order every
/// event list has (ids compare by their bytes, as PostgreSQL's uuids do).
pub fn newest_first(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by_key(|e| std::cmp::Reverse((e.created_at, e.id)));
    events
}

/// A compile-time check: the store is cheap to share between tasks.
pub fn assert_shareable<T: Send + Sync + Clone + 'static>(_: &T) {}
