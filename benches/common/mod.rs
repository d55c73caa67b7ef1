//! What the PostgreSQL-backed benchmarks share: a raw `tokio-postgres`
//! client, and users with one API key each, seeded once by binary `COPY`.
#![allow(dead_code)]

use std::time::Instant;

use chrono::Utc;
use dreamnet_db::{ApiKeySecret, Store};
use serde_json::json;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// A hand-written program's connection: no pool, no TLS.
pub async fn raw(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("raw connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The `i`th seeded key of `tag`: deterministic and well formed, so a
/// re-run finds it again.
pub fn key_for(tag: &str, i: usize) -> String {
    let digest = ApiKeySecret::parse(&format!("{tag}-seed-{i}"))
        .expect("printable")
        .hash();
    format!("dnk_{digest}")
}

/// Users seeded for one benchmark.
pub struct Seeded {
    /// User `i` is `<tag>-<i>@example.com`.
    pub users: Vec<Uuid>,
    /// User `i`'s key ([`key_for`]), issued for the service `<tag>`.
    pub keys: Vec<String>,
    /// Whether this run seeded them (or found them from an earlier run).
    pub fresh: bool,
}

/// Migrates the database at `url` and makes sure it holds `n` users tagged
/// `tag` with one key each, seeding them (after removing what an earlier
/// run left, events of those users included) when they are not all there.
pub async fn users_and_keys(url: &str, tag: &str, n: usize) -> Seeded {
    let store = Store::builder()
        .database_url(url)
        .max_connections(2)
        .connect()
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let client = raw(url).await;
    let pattern = format!("{tag}-%@example.com");
    let last_key = ApiKeySecret::parse(&key_for(tag, n - 1)).unwrap().hash();
    let present: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM users WHERE email LIKE $1)
                  + (SELECT count(*) FROM api_keys WHERE hashed_key = $2)",
            &[&pattern, &last_key],
        )
        .await
        .unwrap()
        .get(0);
    let fresh = present as usize != n + 1;
    if fresh {
        println!("seeding {n} users and keys (once)…");
        let started = Instant::now();
        client
            .execute(
                "DELETE FROM events WHERE user_id IN (SELECT id FROM users WHERE email LIKE $1)",
                &[&pattern],
            )
            .await
            .unwrap();
        client
            .execute("DELETE FROM api_keys WHERE service = $1", &[&tag])
            .await
            .unwrap();
        client
            .execute("DELETE FROM users WHERE email LIKE $1", &[&pattern])
            .await
            .unwrap();
        let now = Utc::now();
        let ids = copy_users(
            &client,
            n,
            |i| format!("{tag}-{i}@example.com"),
            &json!({"source": "signup", "plan": "free"}),
            &json!({"theme": "dark", "lang": "en"}),
        )
        .await;
        let sink = client
            .copy_in(
                "COPY api_keys (id, user_id, service, hashed_key, created_at, key_prefix) \
                 FROM STDIN BINARY",
            )
            .await
            .unwrap();
        let types = [
            Type::UUID,
            Type::UUID,
            Type::VARCHAR,
            Type::VARCHAR,
            Type::TIMESTAMPTZ,
            Type::VARCHAR,
        ];
        let w = BinaryCopyInWriter::new(sink, &types);
        tokio::pin!(w);
        for (i, user) in ids.iter().enumerate() {
            let key = ApiKeySecret::parse(&key_for(tag, i)).unwrap();
            let row: [&(dyn ToSql + Sync); 6] = [
                &Uuid::now_v7(),
                user,
                &tag,
                &key.hash(),
                &now,
                &key.display_prefix(),
            ];
            w.as_mut().write(&row).await.unwrap();
        }
        w.finish().await.unwrap();
        client
            .batch_execute("ANALYZE users; ANALYZE api_keys;")
            .await
            .unwrap();
        println!("seeded users and keys in {:.1?}", started.elapsed());
    }
    let rows = client
        .query(
            "SELECT id, substring(email from '-([0-9]+)@')::int AS i FROM users WHERE email LIKE $1",
            &[&pattern],
        )
        .await
        .unwrap();
    let mut users = vec![Uuid::nil(); n];
    for r in rows {
        let i: i32 = r.get(1);
        users[i as usize] = r.get(0);
    }
    Seeded {
        users,
        keys: (0..n).map(|i| key_for(tag, i)).collect(),
        fresh,
    }
}

/// Adds `n` `visitor` users by binary `COPY`, the `i`th with email
/// `email(i)` and the given metadata and preferences; returns their ids.
pub async fn copy_users(
    client: &tokio_postgres::Client,
    n: usize,
    email: impl Fn(usize) -> String,
    metadata: &serde_json::Value,
    preferences: &serde_json::Value,
) -> Vec<Uuid> {
    let now = Utc::now();
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let sink = client
        .copy_in(
            "COPY users (id, email, passport_tier, created_at, updated_at, metadata, preferences) \
             FROM STDIN BINARY",
        )
        .await
        .unwrap();
    let types = [
        Type::UUID,
        Type::VARCHAR,
        Type::VARCHAR,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::JSONB,
        Type::JSONB,
    ];
    let w = BinaryCopyInWriter::new(sink, &types);
    tokio::pin!(w);
    for (i, id) in ids.iter().enumerate() {
        let email = email(i);
        let row: [&(dyn ToSql + Sync); 7] =
            [id, &email, &"visitor", &now, &now, metadata, preferences];
        w.as_mut().write(&row).await.unwrap();
    }
    w.finish().await.unwrap();
    ids
}
