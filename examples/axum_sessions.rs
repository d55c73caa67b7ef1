//! Sessions in an axum service through `tower-sessions`, on any of the
//! crate's session backends.
//!
//! ```text
//! cargo run --features tower-sessions --example axum_sessions
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --features tower-sessions --example axum_sessions
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --features tower-sessions,redis --example axum_sessions
//! ```
//!
//! The example sends its requests to the router in-process (no port, no
//! browser): log in, count visits, log out everywhere, and shows the
//! cookie and what each response says. In a real service the same router
//! goes to `axum::serve`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use dreamnet_db::{Sessions, Store, TowerSessionStore};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use uuid::Uuid;

const USER_ID: &str = "user_id";

async fn login(session: Session) -> Result<Json<Value>, StatusCode> {
    // A real login checks a password or a wallet signature first.
    let user = Uuid::now_v7();
    // A fresh id at login, so a session fixed before login is not reused.
    session
        .cycle_id()
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    session
        .insert(USER_ID, user.to_string())
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(json!({"logged_in": user})))
}

async fn visit(session: Session) -> Result<Json<Value>, StatusCode> {
    let user: Option<String> = session
        .get(USER_ID)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let Some(user) = user else {
        return Err(StatusCode::UNAUTHORIZED);
    };
    let visits: u64 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
    session
        .insert("visits", visits)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(json!({"user": user, "visits": visits})))
}

async fn logout_everywhere(
    State(sessions): State<Sessions>,
    session: Session,
) -> Result<Json<Value>, StatusCode> {
    let user: Option<String> = session
        .get(USER_ID)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let user = user
        .and_then(|u| Uuid::parse_str(&u).ok())
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let ended = sessions
        .delete_user(user)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(json!({"sessions_ended": ended})))
}

async fn sessions() -> dreamnet_db::Result<(Sessions, &'static str)> {
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Ok((Sessions::redis(&url, Default::default()).await?, "Redis"));
    }
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let store = Store::builder()
                .database_url(url)
                .run_migrations(true)
                .connect()
                .await?;
            Ok((Sessions::postgres(&store)?, "PostgreSQL"))
        }
        Err(_) => Ok((Sessions::in_memory(), "memory")),
    }
}

/// Sends one request and prints what came back; returns the response's
/// cookie, if it set one.
async fn send(app: &Router, method: &str, path: &str, cookie: Option<&str>) -> Option<String> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    println!(
        "{method:<5} {path:<19} -> {status} {}",
        String::from_utf8_lossy(&body)
    );
    set_cookie
}

#[tokio::main]
async fn main() -> dreamnet_db::Result<()> {
    let (sessions, backend) = sessions().await?;
    println!("sessions in {backend}\n");
    let store = TowerSessionStore::new(sessions.clone()).user_field(USER_ID);
    let layer = SessionManagerLayer::new(store)
        .with_secure(false) // this demo speaks plain HTTP; keep the default in production
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(30)));
    let app = Router::new()
        .route("/login", post(login))
        .route("/visit", get(visit))
        .route("/logout-everywhere", post(logout_everywhere))
        .layer(layer)
        .with_state(sessions.clone());

    send(&app, "GET", "/visit", None).await;
    let laptop = send(&app, "POST", "/login", None)
        .await
        .expect("a session cookie");
    let (name, token) = laptop.split_once('=').expect("name=value");
    println!(
        "      the cookie: {name}=<{} characters, not shown>",
        token.len()
    );
    send(&app, "GET", "/visit", Some(&laptop)).await;
    send(&app, "GET", "/visit", Some(&laptop)).await;
    send(&app, "POST", "/logout-everywhere", Some(&laptop)).await;
    send(&app, "GET", "/visit", Some(&laptop)).await;

    // Expired sessions are cleaned up by a periodic task in a real service:
    // tower_sessions::ExpiredDeletion::continuously_delete_expired, or
    // Sessions::delete_expired on a timer.
    let removed = sessions.delete_expired().await?;
    println!("\ndelete_expired removed {removed} expired sessions");
    Ok(())
}
