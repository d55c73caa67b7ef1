//! Every repository call is traced with its operation, table, outcome and
//! duration, and no trace ever carries a secret.

mod common;

use std::time::Duration;

use dreamnet_db::{Error, KeyRejection, NewEvent, NewSession, NewUser, Sessions, Store};
use serde_json::json;

#[tokio::test]
async fn calls_are_traced_without_secrets() {
    let (captured, _guard) = common::Captured::start();

    let store = Store::in_memory();
    let user = store
        .users()
        .create(NewUser::with_email("trace@example.com".parse().unwrap()))
        .await
        .unwrap();
    let issued = store
        .api_keys()
        .issue(user.id, "billing", None)
        .await
        .unwrap();
    let secret = issued.secret.expose_secret().to_owned();
    store.api_keys().validate(&secret).await.unwrap();
    let wrong = common::wrong_key(&secret);
    assert_ne!(wrong, secret);
    assert!(matches!(
        store.api_keys().validate(&wrong).await,
        Err(Error::Unauthorized(KeyRejection::Unknown))
    ));
    store
        .events()
        .record(
            NewEvent::new("user.login".parse().unwrap(), json!({"ip": "203.0.113.7"}))
                .user(user.id),
        )
        .await
        .unwrap();
    let sessions = Sessions::in_memory();
    let session = sessions
        .create(NewSession::new(Duration::from_secs(60)).user(user.id))
        .await
        .unwrap();
    let token = session.id.expose_secret().to_owned();
    sessions.load(&session.id).await.unwrap();
    assert!(
        sessions
            .save(&session.id, json!([]), Duration::from_secs(60))
            .await
            .is_err()
    );
    sessions.delete(&session.id).await.unwrap();

    let out = captured.text();
    for expected in [
        "op=\"create\"",
        "table=\"users\"",
        "op=\"issue\"",
        "op=\"validate\"",
        "table=\"api_keys\"",
        "outcome=\"ok\"",
        "outcome=\"unauthorized\"",
        "op=\"record\"",
        "table=\"events\"",
        "duration_us=",
        "table=\"sessions\"",
        "op=\"load\"",
        "outcome=\"invalid_input\"",
    ] {
        assert!(
            out.contains(expected),
            "{expected} missing from the traces:\n{out}"
        );
    }
    for secret_text in [
        secret.as_str(),
        &secret[4..],
        wrong.as_str(),
        &issued.secret.hash(),
        token.as_str(),
        &token[..16],
    ] {
        assert!(
            !out.contains(secret_text),
            "a secret reached the traces:\n{out}"
        );
    }
    assert!(!out.contains("203.0.113.7"), "arguments are not traced");
}
