//! Sessions, step by step: create one at login, load it on each request,
//! save and extend it, log out everywhere, clean up.
//!
//! ```text
//! cargo run --example sessions                                   # in memory
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --features redis --example sessions
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example sessions
//! ```
//!
//! With `REDIS_URL` set (and the `redis` feature) the sessions live in
//! Redis; otherwise with `DATABASE_URL` set, in PostgreSQL's `sessions`
//! table (the database is migrated first); otherwise in memory.

use std::time::Duration;

use dreamnet_db::{NewSession, SessionId, Sessions, Store};
use serde_json::json;

async fn sessions() -> dreamnet_db::Result<(Sessions, &'static str)> {
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("REDIS_URL") {
        let sessions = Sessions::redis(&url, Default::default()).await?;
        return Ok((sessions, "Redis"));
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let store = Store::builder()
            .database_url(url)
            .run_migrations(true)
            .connect()
            .await?;
        return Ok((Sessions::postgres(&store)?, "PostgreSQL"));
    }
    Ok((Sessions::in_memory(), "memory"))
}

#[tokio::main]
async fn main() -> dreamnet_db::Result<()> {
    let (sessions, backend) = sessions().await?;
    println!("sessions in {backend}\n");
    let user = uuid::Uuid::now_v7();

    // Login: a session for the user, with a token for the cookie.
    let laptop = sessions
        .create(
            NewSession::new(Duration::from_secs(30 * 60))
                .user(user)
                .data(json!({"theme": "dark"})),
        )
        .await?;
    let cookie = laptop.id.expose_secret().to_owned();
    println!(
        "1. logged in on a laptop; the cookie holds a {}-character token",
        cookie.len()
    );
    println!(
        "   (Debug shows {:?}; only the SHA-256 of the token is stored)",
        laptop.id
    );

    // Each request: the cookie's token loads the session.
    let id = SessionId::parse(&cookie)?;
    let session = sessions.load(&id).await?.expect("a live session");
    println!(
        "2. next request loads it: user {}, data {}",
        session.user_id.unwrap(),
        session.data
    );

    // The handler changes the data; activity extends the session.
    let saved = sessions
        .save(
            &id,
            json!({"theme": "dark", "cart": ["tea"]}),
            Duration::from_secs(30 * 60),
        )
        .await?
        .expect("still live");
    println!(
        "3. saved new data {}; expires at {}",
        saved.data, saved.expires_at
    );
    let until = sessions.extend(&id, Duration::from_secs(60 * 60)).await?;
    println!(
        "4. extended on activity until {}",
        until.expect("still live")
    );

    // A second device, then "log out everywhere".
    let phone = sessions
        .create(NewSession::new(Duration::from_secs(30 * 60)).user(user))
        .await?;
    let ended = sessions.delete_user(user).await?;
    println!("5. logged in on a phone too, then out everywhere: {ended} sessions ended");
    println!(
        "   the laptop's cookie now loads {:?}, the phone's {:?}",
        sessions.load(&id).await?,
        sessions.load(&phone.id).await?
    );

    // Bad input is refused before anything is stored.
    let err = sessions
        .create(NewSession::new(Duration::from_secs(60)).data(json!(["not", "an", "object"])))
        .await
        .unwrap_err();
    println!("6. data that is not an object: {err}");
    let err = SessionId::parse("not a token").unwrap_err();
    println!("7. a malformed cookie: {err}");

    // Short sessions expire; cleanup frees their space.
    let short = sessions
        .create(NewSession::new(Duration::from_millis(200)))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "8. a 200 ms session, 300 ms later: {:?}; delete_expired removed {}",
        sessions.load(&short.id).await?,
        sessions.delete_expired().await?
    );
    Ok(())
}
