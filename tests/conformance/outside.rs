//! Documents written from outside the crate: rows that other services
//! insert with plain SQL into the shared tables. Every read path returns
//! them exactly as PostgreSQL holds them, and a crate write that does not
//! touch a value leaves it equal, as `jsonb` compares, and with the same
//! text.
//!
//! With SQL (the PostgreSQL suites) the rows go in with `INSERT`s and every
//! check is made in SQL afterwards too. On the in-memory backend the same
//! documents go in through the crate's own writes and must read back the
//! same: each document carries the text PostgreSQL's `jsonb` prints for it,
//! which every backend must return.

use std::collections::BTreeMap;

use dreamnet_db::{
    Error, EventFilter, Field, Json, MAX_JSON_DEPTH, ManualClock, NewEvent, NewSession, NewUser,
    SessionId, Sessions, UserUpdate,
};
use serde_json::json;
use serde_json::value::RawValue;
use tokio_postgres::Client;
use uuid::Uuid;

use super::*;

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

/// A document as another service writes it, and as PostgreSQL's `jsonb`
/// prints it back.
struct Doc {
    text: String,
    jsonb: String,
}

fn doc(text: impl Into<String>, jsonb: impl Into<String>) -> Doc {
    Doc {
        text: text.into(),
        jsonb: jsonb.into(),
    }
}

/// `inner` inside `depth` arrays.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

/// `1e400` as `numeric` prints it.
fn e400() -> String {
    format!("1{}", "0".repeat(400))
}

fn parse(text: &str) -> Json {
    Json::parse(text).expect("a JSON document")
}

/// Objects, for users' metadata and preferences and for session data.
fn objects() -> Vec<Doc> {
    vec![
        doc(
            r#"{"balance_wei": 123456789012345678901234567890}"#,
            r#"{"balance_wei": 123456789012345678901234567890}"#,
        ),
        doc(
            r#"{"n":18446744073709551617,"m":-18446744073709551617}"#,
            r#"{"m": -18446744073709551617, "n": 18446744073709551617}"#,
        ),
        doc(
            r#"{"huge": 1e400, "tiny": 1e-400, "scaled": 1.50, "e": 1E+2, "z": -0.0}"#,
            format!(
                r#"{{"e": 100, "z": 0.0, "huge": {}, "tiny": 0.{}1, "scaled": 1.50}}"#,
                e400(),
                "0".repeat(399)
            ),
        ),
        doc(
            format!(r#"{{"deep": {}}}"#, nested(200, r#""bottom""#)),
            format!(r#"{{"deep": {}}}"#, nested(200, r#""bottom""#)),
        ),
        doc(
            r#"{"emoji": "😀", "escaped": "\u00e9\ud83d\ude00\/", "ctl": "a\u001fb\n\t\"\\", "clé": "ü"}"#,
            r#"{"ctl": "a\u001fb\n\t\"\\", "clé": "ü", "emoji": "😀", "escaped": "é😀/"}"#,
        ),
        doc("{}", "{}"),
        doc(
            "{ \"a\" : 1 ,\n \"b\" : { \"x\" : 1, \"x\" : 2 } ,\t\"a\" : [ 3 , 4 ] }",
            r#"{"a": [3, 4], "b": {"x": 2}}"#,
        ),
    ]
}

/// Event payloads: every JSON type at the top.
fn payloads() -> Vec<Doc> {
    let same = |t: &str| doc(t, t);
    vec![
        same(r#"{"balance_wei": 123456789012345678901234567890}"#),
        doc(r#"{"huge": 1e400}"#, format!(r#"{{"huge": {}}}"#, e400())),
        same(r#"[1, "two", null, 18446744073709551617]"#),
        doc(r#""a string \u00e9""#, r#""a string é""#),
        same("123456789012345678901234567890"),
        doc("-1.50E+2", "-150"),
        same("true"),
        same("false"),
        same("null"),
        doc("1e400", e400()),
        same(&nested(200, "1")),
        same("[]"),
        same("{}"),
    ]
}

/// An object's members and their exact texts.
fn members(doc: &str) -> BTreeMap<String, String> {
    let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(doc).expect("an object");
    map.into_iter()
        .map(|(k, v)| (k, v.get().to_owned()))
        .collect()
}

/// One value of a query's single row.
async fn one<T>(db: &Client, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> T
where
    T: for<'r> tokio_postgres::types::FromSql<'r>,
{
    db.query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Writes a row as another service would, with plain SQL (`insert`), and
/// checks that PostgreSQL prints its document (the text `select` returns
/// for row `id`) as the expectation says `jsonb` does.
async fn insert_outside(
    db: &Client,
    insert: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    select: &str,
    id: &Uuid,
    jsonb: &str,
) {
    db.execute(insert, params)
        .await
        .unwrap_or_else(|e| panic!("{insert}: {e}"));
    let held: String = one(db, select, &[id]).await;
    assert_eq!(held, jsonb, "what PostgreSQL prints");
}

pub async fn documents_written_outside_read_back_exactly(h: &Harness, _clock: &ManualClock) {
    let db = h.sql().await;
    let docs = objects();
    let mut ids = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let address = format!("outside{i}@example.com");
        let id = match &db {
            Some(db) => {
                let id = Uuid::now_v7();
                insert_outside(
                    db,
                    "INSERT INTO users (id, email, metadata, preferences) \
                     VALUES ($1, $2, $3::text::jsonb, $3::text::jsonb)",
                    &[&id, &address, &d.text],
                    "SELECT metadata::text FROM users WHERE id = $1",
                    &id,
                    &d.jsonb,
                )
                .await;
                id
            }
            None => {
                let new = NewUser::with_email(email(&address))
                    .metadata(parse(&d.text))
                    .preferences(parse(&d.text));
                let created = h.users().create(new).await.unwrap();
                assert_eq!(created.metadata.as_str(), d.jsonb);
                created.id
            }
        };
        ids.push(id);
    }

    // Every read path: by id (twice: through a cache, a miss then a hit),
    // by email, and a whole listing in small pages.
    let listed = all_users(h, 3).await;
    for (d, &id) in docs.iter().zip(&ids) {
        for _ in 0..2 {
            let got = h.users().get(id).await.unwrap();
            assert_eq!(got.metadata.as_str(), d.jsonb);
            assert_eq!(got.preferences.as_str(), d.jsonb);
            assert_eq!(got.metadata, parse(&d.text), "equal as jsonb");
        }
        let got = h.users().get(id).await.unwrap();
        let found = h
            .users()
            .find_by_email(got.email.as_ref().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.metadata.as_str(), d.jsonb);
        let in_list = listed.iter().find(|u| u.id == id).expect("listed");
        assert_eq!(in_list.metadata.as_str(), d.jsonb);
    }
    if let Some(stats) = h.cache_stats() {
        assert!(stats.hits > 0, "reads came from the cache too: {stats:?}");
    }
    let wei = h.users().get(ids[0]).await.unwrap().metadata;
    let balance = wei.get("balance_wei").unwrap();
    assert_eq!(balance.as_number(), Some("123456789012345678901234567890"));
    assert!(
        matches!(
            balance.to_value(),
            Err(Error::InvalidInput {
                field: Field::Json,
                ..
            })
        ),
        "a serde_json::Value would round it"
    );
    let n = h.users().get(ids[1]).await.unwrap().metadata;
    assert_eq!(
        n.get("n").unwrap().as_number(),
        Some("18446744073709551617")
    );

    // A merge of an unrelated key leaves every other value as it was.
    for (d, &id) in docs.iter().zip(&ids) {
        let updated = h
            .users()
            .update(
                id,
                UserUpdate::new().merge_metadata(json!({"touched": true})),
            )
            .await
            .unwrap();
        let reread = h.users().get(id).await.unwrap();
        for user in [updated, reread] {
            let mut after = members(user.metadata.as_str());
            assert_eq!(after.remove("touched").as_deref(), Some("true"));
            assert_eq!(after, members(&d.jsonb), "untouched values keep their text");
            assert_eq!(user.preferences.as_str(), d.jsonb);
        }
        if let Some(db) = &db {
            let same: bool = one(
                db,
                "SELECT (metadata - 'touched') = $1::text::jsonb \
                        AND (metadata - 'touched')::text = $2 \
                        AND metadata -> 'touched' = 'true'::jsonb \
                        AND preferences = $1::text::jsonb \
                        AND preferences::text = $2 \
                 FROM users WHERE id = $3",
                &[&d.text, &d.jsonb, &id],
            )
            .await;
            assert!(same, "untouched values are equal as jsonb: {}", d.text);
        }
    }
    if let Some(db) = &db {
        // The numbers' text, as SQL reads it.
        for (id, key, text) in [
            (ids[0], "balance_wei", "123456789012345678901234567890"),
            (ids[1], "n", "18446744073709551617"),
        ] {
            let held: String = one(
                db,
                "SELECT metadata ->> $2 FROM users WHERE id = $1",
                &[&id, &key],
            )
            .await;
            assert_eq!(held, text);
        }
    }
}

pub async fn event_payloads_of_every_type_read_back_exactly(h: &Harness, clock: &ManualClock) {
    let db = h.sql().await;
    let docs = payloads();
    let mut ids = Vec::new();
    for d in &docs {
        let id = match &db {
            Some(db) => {
                let id = Uuid::now_v7();
                insert_outside(
                    db,
                    "INSERT INTO events (id, event_type, payload, created_at) \
                     VALUES ($1, 'outside.doc', $2::text::jsonb, $3)",
                    &[&id, &d.text, &now(clock)],
                    "SELECT payload::text FROM events WHERE id = $1",
                    &id,
                    &d.jsonb,
                )
                .await;
                id
            }
            None => {
                let new = NewEvent::new(event_type("outside.doc"), parse(&d.text));
                let recorded = h.events().record(new).await.unwrap();
                assert_eq!(recorded.payload.as_str(), d.jsonb);
                recorded.id
            }
        };
        ids.push(id);
    }

    // One page holding every one of them loads whole, and so does a walk
    // through small pages.
    let page = h
        .events()
        .list(&EventFilter::all(), 50, None)
        .await
        .unwrap();
    assert_eq!(page.items.len(), docs.len());
    let walked = all_events(h, &EventFilter::all(), 4).await;
    for (d, id) in docs.iter().zip(&ids) {
        for list in [&page.items, &walked] {
            let e = list.iter().find(|e| e.id == *id).expect("listed");
            assert_eq!(e.payload.as_str(), d.jsonb);
            assert_eq!(e.payload, parse(&d.text), "equal as jsonb");
        }
    }

    // Containment compares numbers by exact value.
    let matching = async |probe: Json| {
        let filter = EventFilter::all().payload_contains(probe);
        let mut got: Vec<Uuid> = all_events(h, &filter, 50)
            .await
            .iter()
            .map(|e| e.id)
            .collect();
        got.sort();
        got
    };
    let sorted = |mut v: Vec<Uuid>| {
        v.sort();
        v
    };
    let wei = r#"{"balance_wei": 123456789012345678901234567890}"#;
    assert_eq!(matching(parse(wei)).await, vec![ids[0]]);
    assert_eq!(
        matching(json!({"balance_wei": 123456789012345678901234567890.0}).into()).await,
        Vec::<Uuid>::new(),
        "the rounded number is another number"
    );
    assert_eq!(matching(parse(r#"{"huge": 10e399}"#)).await, vec![ids[1]]);
    assert_eq!(matching(json!("two").into()).await, vec![ids[2]]);
    assert_eq!(matching(parse("18446744073709551617")).await, vec![ids[2]]);
    assert_eq!(
        matching(parse("123456789012345678901234567890.0")).await,
        vec![ids[4]]
    );
    assert_eq!(matching(json!(true).into()).await, vec![ids[6]]);
    assert_eq!(
        matching(json!(null).into()).await,
        sorted(vec![ids[2], ids[8]])
    );
    assert_eq!(matching(parse(&e400())).await, vec![ids[9]]);
    if let Some(db) = &db {
        let count: i64 = one(
            db,
            "SELECT count(*) FROM events WHERE payload @> $1::text::jsonb",
            &[&"null"],
        )
        .await;
        assert_eq!(count, 2, "PostgreSQL agrees");
    }
}

pub async fn sessions_written_outside_read_back_exactly(h: &Harness, clock: &ManualClock) {
    let db = h.sql().await;
    let sessions = match &db {
        Some(_) => Sessions::postgres(h).expect("a PostgreSQL store"),
        None => Sessions::in_memory_with_clock(clock.clone()),
    };
    let docs = objects();
    for (i, d) in docs.iter().enumerate() {
        let token = match &db {
            Some(db) => {
                let token = format!("{:064x}", i + 1);
                let at = now(clock);
                db.execute(
                    "INSERT INTO sessions (id, data, created_at, expires_at) \
                     VALUES (encode(sha256(convert_to($1, 'UTF8')), 'hex'), $2::text::jsonb, $3, $4)",
                    &[&token, &d.text, &at, &(at + chrono::Duration::hours(1))],
                )
                .await
                .unwrap();
                SessionId::parse(&token).unwrap()
            }
            None => {
                sessions
                    .create(NewSession::new(HOUR).data(parse(&d.text)))
                    .await
                    .unwrap()
                    .id
            }
        };
        let loaded = sessions.load(&token).await.unwrap().expect("live");
        assert_eq!(loaded.data.as_str(), d.jsonb);
        assert_eq!(loaded.data, parse(&d.text));
        // Extending leaves the data alone.
        sessions
            .extend(&token, 2 * HOUR)
            .await
            .unwrap()
            .expect("live");
        let loaded = sessions.load(&token).await.unwrap().expect("live");
        assert_eq!(loaded.data.as_str(), d.jsonb);
        if let Some(db) = &db {
            let same: bool = one(
                db,
                "SELECT data = $1::text::jsonb AND data::text = $2 FROM sessions \
                 WHERE id = encode(sha256(convert_to($3, 'UTF8')), 'hex')",
                &[&d.text, &d.jsonb, &token.expose_secret()],
            )
            .await;
            assert!(same, "the data is as it was written: {}", d.text);
        }
    }
}

/// What PostgreSQL refuses, the crate refuses on every backend, naming the
/// field; what the crate accepts, every backend stores and reads back.
pub async fn limits_agree_with_postgres(h: &Harness, clock: &ManualClock) {
    let db = h.sql().await;
    let sessions = match &db {
        Some(_) => Sessions::postgres(h).expect("a PostgreSQL store"),
        None => Sessions::in_memory_with_clock(clock.clone()),
    };
    let before = snapshot(h).await;
    for refused in [
        r#"{"a": "\u0000"}"#,
        r#"{"\u0000": 1}"#,
        r#"{"s": "\ud800"}"#,
        r#"{"s": "\udc00\ud800"}"#,
        r#"{"n": 1e131072}"#,
        r#"{"n": 1e-16384}"#,
        r#"{"n": 0.1e-16383}"#,
        r#"{"n": 1e2147483647}"#,
    ] {
        if let Some(db) = &db {
            assert!(
                db.query_one("SELECT $1::text::jsonb", &[&refused])
                    .await
                    .is_err(),
                "PostgreSQL refuses {refused}"
            );
        }
        let doc = parse(refused);
        expect_invalid(
            h.events()
                .record(NewEvent::new(event_type("refused"), doc.clone()))
                .await,
            Field::Payload,
        );
        expect_invalid(
            h.users()
                .create(NewUser::with_email(email("refused@example.com")).metadata(doc.clone()))
                .await,
            Field::Metadata,
        );
        expect_invalid(
            h.events()
                .list(&EventFilter::all().payload_contains(doc.clone()), 10, None)
                .await,
            Field::Payload,
        );
        expect_invalid(
            sessions.create(NewSession::new(HOUR).data(doc)).await,
            Field::SessionData,
        );
    }

    // The crate's depth limit: refused alike on every backend (PostgreSQL
    // itself would take it).
    let too_deep = nested(MAX_JSON_DEPTH + 1, "1");
    if let Some(db) = &db {
        let depth: i64 = one(
            db,
            "SELECT length(($1::text::jsonb)::text)::bigint",
            &[&too_deep],
        )
        .await;
        assert_eq!(depth as usize, too_deep.len());
    }
    match h
        .events()
        .record(NewEvent::new(event_type("refused"), parse(&too_deep)))
        .await
    {
        Err(Error::InvalidInput {
            field: Field::Payload,
            reason,
        }) => assert!(reason.contains(&MAX_JSON_DEPTH.to_string()), "{reason}"),
        other => panic!("expected the depth limit, got {other:?}"),
    }
    // Over the size limit once printed as numeric prints it (131,072
    // digits), though PostgreSQL would take it.
    expect_invalid(
        h.events()
            .record(NewEvent::new(
                event_type("refused"),
                parse(r#"{"n": 9e131071}"#),
            ))
            .await,
        Field::Payload,
    );
    assert_unchanged(&before, &snapshot(h).await);

    // At the limits: accepted, stored and read back alike.
    let deepest = nested(MAX_JSON_DEPTH, "1");
    let smallest = format!("0.{}1", "0".repeat(16382));
    for (text, jsonb) in [
        (deepest.clone(), deepest),
        ("1e-16383".to_owned(), smallest),
    ] {
        let e = h
            .events()
            .record(NewEvent::new(event_type("edge"), parse(&text)))
            .await
            .unwrap();
        assert_eq!(e.payload.as_str(), jsonb);
        let listed = h
            .events()
            .list(&EventFilter::all().event_type(event_type("edge")), 10, None)
            .await
            .unwrap();
        let got = listed.items.iter().find(|x| x.id == e.id).unwrap();
        assert_eq!(got.payload.as_str(), jsonb);
        if let Some(db) = &db {
            let held: String = one(
                db,
                "SELECT payload::text FROM events WHERE id = $1",
                &[&e.id],
            )
            .await;
            assert_eq!(held, jsonb);
        }
    }
}

/// Rows other services wrote past what the crate itself would write (deeper
/// than [`MAX_JSON_DEPTH`], larger than the size limit) are still read
/// exactly; an update that would write one back is refused and changes
/// nothing. Only a backend with SQL can hold such rows.
pub async fn documents_past_the_crate_limits_stay_readable(h: &Harness, clock: &ManualClock) {
    let Some(db) = h.sql().await else {
        return;
    };
    let db = &db;
    let deep = format!(r#"{{"deep": {}}}"#, nested(5_000, "1"));
    let large = format!(r#"{{"blob": "{}"}}"#, "x".repeat(100_000));
    let mut users = Vec::new();
    for (i, text) in [&deep, &large].into_iter().enumerate() {
        let id = Uuid::now_v7();
        db.execute(
            "INSERT INTO users (id, email, metadata) VALUES ($1, $2, $3::text::jsonb)",
            &[&id, &format!("past{i}@example.com"), text],
        )
        .await
        .unwrap();
        let event = Uuid::now_v7();
        db.execute(
            "INSERT INTO events (id, user_id, event_type, payload, created_at) \
             VALUES ($1, $2, 'outside.past', $3::text::jsonb, $4)",
            &[&event, &id, text, &now(clock)],
        )
        .await
        .unwrap();
        users.push((id, text));
    }
    for &(id, text) in &users {
        let held: String = one(db, "SELECT metadata::text FROM users WHERE id = $1", &[&id]).await;
        assert_eq!(held, *text, "printed as written");
        let user = h.users().get(id).await.unwrap();
        assert_eq!(user.metadata.as_str(), held);
        let events = h
            .events()
            .list(&EventFilter::for_user(id), 10, None)
            .await
            .unwrap();
        assert_eq!(events.items.len(), 1);
        assert_eq!(events.items[0].payload.as_str(), held);

        // Writing it back would break the crate's limits: refused, and the
        // row is as it was.
        expect_invalid(
            h.users()
                .update(
                    id,
                    UserUpdate::new().merge_metadata(json!({"touched": true})),
                )
                .await,
            Field::Metadata,
        );
        let same: bool = one(
            db,
            "SELECT metadata = $1::text::jsonb FROM users WHERE id = $2",
            &[text, &id],
        )
        .await;
        assert!(same);
        // A change that leaves the metadata alone goes through.
        let tier = dreamnet_db::PassportTier::parse("citizen").unwrap();
        let updated = h
            .users()
            .update(id, UserUpdate::new().passport_tier(tier))
            .await
            .unwrap();
        assert_eq!(updated.metadata.as_str(), held);
        let same: bool = one(
            db,
            "SELECT metadata::text = $1 FROM users WHERE id = $2",
            &[&held, &id],
        )
        .await;
        assert!(same);
    }
}
