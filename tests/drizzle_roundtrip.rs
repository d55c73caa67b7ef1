//! Drizzle ORM and the crate on one database, both ways: the crate writes a
//! user, a key and an event that `compat/drizzle/roundtrip.ts` reads through
//! Drizzle and the shipped `schema.ts`; that program writes a user, a key
//! issued the services' way and events, which the crate reads and validates.
//!
//! It also shows what the TypeScript side loses: JavaScript numbers above
//! 2^53 in JSON documents, and the microseconds of timestamps read as `Date`.
//!
//! Needs Node.js and the packages of `compat/drizzle` (`compat/drizzle/check-push.sh
//! install`): without them the test skips with one line, or fails under
//! `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::{DateTime, TimeZone, Utc};
use dreamnet_db::{
    Error, Event, EventFilter, KeyRejection, ManualClock, NewEvent, NewUser, Store, WalletAddress,
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// 2^53 + 1: the smallest positive integer a JavaScript number cannot hold.
const BIG: u64 = 9_007_199_254_740_993;

fn drizzle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/drizzle")
}

/// `tsx` from compat/drizzle's packages, or `None` after one line saying
/// why (a panic under `CI=true`).
fn tsx() -> Option<PathBuf> {
    let missing = |why: String| {
        if common::ci() {
            panic!("CI=true and the Drizzle round trip cannot run: {why}");
        }
        eprintln!(
            "skipped: {why}; install Node.js and run `compat/drizzle/check-push.sh install` to run it"
        );
        None
    };
    if let Err(e) = std::process::Command::new("node").arg("--version").output() {
        return missing(format!("Node.js is not installed ({e})"));
    }
    let tsx = drizzle_dir().join("node_modules/.bin/tsx");
    if !tsx.exists() {
        return missing(format!("{} is missing", tsx.display()));
    }
    Some(tsx)
}

/// Runs roundtrip.ts on `url` with `input` on its stdin; its JSON output.
async fn roundtrip(tsx: &Path, url: &str, input: &Value) -> Value {
    let mut child = tokio::process::Command::new(tsx)
        .arg("roundtrip.ts")
        .current_dir(drizzle_dir())
        .env("DATABASE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start roundtrip.ts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "roundtrip.ts failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "roundtrip.ts printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The one event of `event_type` in the database.
async fn only_event_of_type(store: &Store, event_type: &str) -> Event {
    let page = store
        .events()
        .list(
            &EventFilter::all().event_type(event_type.parse().unwrap()),
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "events of type {event_type}");
    page.items.into_iter().next().unwrap()
}

fn instant(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn drizzle_and_the_crate_read_what_the_other_wrote() {
    let Some(tsx) = tsx() else { return };
    let Some(db) = common::pg_db().await else {
        return;
    };
    // A time with microseconds, which a JavaScript Date cannot hold.
    let t0 = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap()
        + chrono::Duration::microseconds(123_456);
    let store = db
        .store_with(
            Store::builder()
                .max_connections(2)
                .clock(ManualClock::new(t0)),
        )
        .await;

    // The crate writes.
    let ada = store
        .users()
        .create(
            NewUser::with_email("Ada.Lovelace@Example.com".parse().unwrap())
                .wallet_address(
                    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
                        .parse()
                        .unwrap(),
                )
                .metadata(json!({"big": BIG, "kept": "yes"})),
        )
        .await
        .unwrap();
    let issued = store
        .api_keys()
        .issue(ada.id, "billing", None)
        .await
        .unwrap();
    let event = store
        .events()
        .record(
            NewEvent::new(
                "user.login".parse().unwrap(),
                json!({"ip": "203.0.113.7", "big": BIG, "ratio": 0.1}),
            )
            .user(ada.id),
        )
        .await
        .unwrap();
    let bob = store
        .users()
        .create(
            NewUser::with_email("bob@example.com".parse().unwrap()).metadata(json!({"big": BIG})),
        )
        .await
        .unwrap();

    let out = roundtrip(
        &tsx,
        &db.url,
        &json!({
            "adaId": ada.id,
            "adaEmailOtherCase": "ADA.LOVELACE@EXAMPLE.COM",
            "adaWalletChecksum": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "adaKeySecret": issued.secret.expose_secret(),
            "eventId": event.id,
            "bobId": bob.id,
        }),
    )
    .await;

    // Drizzle read the crate's rows as the crate wrote them.
    let read = &out["read"];
    assert_eq!(read["ada"]["email"], "Ada.Lovelace@Example.com");
    assert_eq!(
        read["ada"]["walletAddress"],
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
    );
    assert_eq!(read["ada"]["passportTier"], "visitor");
    assert_eq!(read["ada"]["preferences"], json!({}));
    assert_eq!(read["foundByEmail"], json!(ada.id));
    assert_eq!(read["foundByWallet"], json!(ada.id));
    assert_eq!(
        read["adaKey"],
        json!({"id": issued.key.id, "userId": ada.id, "service": "billing", "keyPrefix": issued.key.prefix})
    );
    assert_eq!(read["event"]["userId"], json!(ada.id));
    assert_eq!(read["event"]["eventType"], "user.login");
    assert_eq!(read["event"]["payloadIp"], "203.0.113.7");
    assert_eq!(read["event"]["payloadRatio"], 0.1);

    // Losses on the TypeScript side. A Date keeps milliseconds only...
    assert_eq!(read["ada"]["createdAtDate"], "2026-11-25T10:00:00.123Z");
    assert_eq!(read["event"]["createdAtDate"], "2026-11-25T10:00:00.123Z");
    // ...while `mode: "string"` keeps PostgreSQL's microseconds.
    let precise = read["ada"]["createdAtString"].as_str().unwrap();
    let precise = DateTime::parse_from_str(precise, "%Y-%m-%d %H:%M:%S%.f%#z")
        .unwrap_or_else(|e| panic!("{precise}: {e}"));
    assert_eq!(precise, t0);
    // JSON numbers become JavaScript numbers: 2^53 + 1 reads as 2^53.
    assert_eq!(read["ada"]["metadataBig"], "9007199254740992");
    assert_eq!(read["event"]["payloadBig"], "9007199254740992");
    assert_eq!(read["event"]["payloadBigIsSafeInteger"], false);
    // Merged inside PostgreSQL (`metadata || patch`), Ada's document kept
    // the number; Bob's, read and written back whole, lost it.
    let ada_after = store.users().get(ada.id).await.unwrap();
    assert_eq!(
        ada_after.metadata,
        json!({"big": BIG, "kept": "yes", "seenBy": "drizzle"})
    );
    assert!(ada_after.updated_at > ada.updated_at);
    let bob_after = store.users().get(bob.id).await.unwrap();
    assert_eq!(
        bob_after.metadata,
        json!({"big": 9_007_199_254_740_992_u64, "seenBy": "drizzle"})
    );
    assert!(bob_after.updated_at > bob.updated_at);

    // The crate reads what Drizzle wrote.
    let wrote = &out["wrote"];
    let id = |v: &Value| v.as_str().unwrap().parse::<uuid::Uuid>().unwrap();
    let grace_id = id(&wrote["graceId"]);
    assert_eq!(wrote["gracePassportTier"], "visitor");
    assert_eq!(wrote["gracePreferences"], json!({}));
    let grace = store.users().get(grace_id).await.unwrap();
    assert_eq!(
        grace.email.as_ref().unwrap().as_str(),
        "Grace.Hopper@Example.COM"
    );
    // Stored in the checksummed form the service sent; read in the crate's
    // canonical lower case, and found from either form.
    let checksummed = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";
    assert_eq!(
        grace.wallet_address.as_ref().unwrap().as_str(),
        checksummed.to_ascii_lowercase()
    );
    let wallet: WalletAddress = checksummed.parse().unwrap();
    assert_eq!(
        store
            .users()
            .find_by_wallet(&wallet)
            .await
            .unwrap()
            .map(|u| u.id),
        Some(grace_id)
    );
    assert_eq!(
        store
            .users()
            .find_by_email(&"grace.hopper@EXAMPLE.com".parse().unwrap())
            .await
            .unwrap()
            .map(|u| u.id),
        Some(grace_id)
    );
    assert_eq!(grace.passport_tier.as_str(), "visitor");
    assert_eq!(
        grace.metadata,
        json!({"source": "drizzle", "ratio": 0.1, "nested": {"list": [1, "two", null, true]}, "text": "日本語 ✓"})
    );
    assert_eq!(grace.preferences, json!({}));

    // The key issued the services' way validates, for its service only.
    let secret = wrote["legacySecret"].as_str().unwrap();
    let key = store
        .api_keys()
        .validate_for(secret, "billing")
        .await
        .unwrap();
    assert_eq!(key.id, id(&wrote["legacyKeyId"]));
    assert_eq!(key.user_id, grace_id);
    assert_eq!(key.prefix, None);
    assert!(matches!(
        store.api_keys().validate_for(secret, "search").await,
        Err(Error::Unauthorized(KeyRejection::WrongService))
    ));

    // Events: a Date's milliseconds arrive exactly; a system event has no user
    // and the default payload.
    let page = store
        .events()
        .list(&EventFilter::for_user(grace_id), 10, None)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let e = &page.items[0];
    assert_eq!(e.id, id(&wrote["graceEventId"]));
    assert_eq!(e.event_type.as_str(), "user.signup");
    assert_eq!(
        e.payload,
        json!({"plan": "pro", "amount": 12.5, "tags": ["a", "b"]})
    );
    assert_eq!(
        e.created_at,
        instant(wrote["graceEventAt"].as_str().unwrap())
    );
    let system = only_event_of_type(&store, "system.deploy").await;
    assert_eq!(system.id, id(&wrote["systemEventId"]));
    assert_eq!(system.user_id, None);
    assert_eq!(system.payload, json!({}));
    assert_eq!(wrote["systemEventPayload"], json!({}));

    // A user deleted through Drizzle: their key is gone, their event stays,
    // detached.
    assert!(matches!(
        store
            .api_keys()
            .validate(wrote["leavingSecret"].as_str().unwrap())
            .await,
        Err(Error::Unauthorized(KeyRejection::Unknown))
    ));
    let left = only_event_of_type(&store, "user.leaving").await;
    assert_eq!(left.id, id(&wrote["leavingEventId"]));
    assert_eq!(left.user_id, None);

    // The database holds Drizzle's writes to the crate's rules.
    let refused = &out["refused"];
    assert_eq!(
        refused["emailOtherCase"],
        json!({"code": "23505", "constraint": "users_email_lower_key"})
    );
    assert_eq!(
        refused["walletLowerCase"],
        json!({"code": "23505", "constraint": "users_wallet_address_lower_key"})
    );
    assert_eq!(
        refused["neitherEmailNorWallet"],
        json!({"code": "23514", "constraint": "users_email_or_wallet_check"})
    );
    assert_eq!(
        refused["keyWithoutUser"],
        json!({"code": "23503", "constraint": "api_keys_user_id_users_id_fk"})
    );
}
