//! A walk through dreamnet-db: users, API keys and events.
//!
//! ```text
//! cargo run --example quickstart                    # in memory, nothing to install
//! DATABASE_URL=postgres://postgres@127.0.0.1/test \
//!     cargo run --example quickstart                # PostgreSQL: connects, migrates, runs the same
//! DATABASE_URL=… DATABASE_REPLICA_URLS=postgres://…replica1/test,postgres://…replica2/test \
//!     cargo run --example quickstart                # lists and counts read from the replicas
//! ```

use dreamnet_db::{
    Error, EventFilter, NewEvent, NewUser, PassportTier, Store, TimeBucket, TimeRange, UserUpdate,
};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            println!("Connecting to PostgreSQL (DATABASE_URL is set) and applying migrations…");
            // Read replicas, comma-separated: lists and counts go to them.
            let replicas = std::env::var("DATABASE_REPLICA_URLS").unwrap_or_default();
            let store = Store::builder()
                .database_url(url)
                .replica_urls(replicas.split(','))
                .connect()
                .await?;
            let applied = store.migrate().await?;
            println!("  migrations applied now: {applied:?}");
            store
        }
        Err(_) => {
            println!("DATABASE_URL is not set: using the in-memory backend.");
            Store::in_memory()
        }
    };

    // A unique address per run, so the walk-through can run again on the
    // same database.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("ada+{}@example.com", &run[..8]);

    println!("\n1. Create a user");
    let user = store
        .users()
        .create(NewUser::with_email(email.parse()?).metadata(json!({"source": "quickstart"})))
        .await?;
    println!(
        "   created {} <{}> tier={}",
        user.id, email, user.passport_tier
    );

    println!("\n2. The same email in other case is taken");
    match store
        .users()
        .create(NewUser::with_email(email.to_uppercase().parse()?))
        .await
    {
        Err(Error::Conflict { field }) => println!("   refused: conflict on {field}"),
        other => println!("   unexpected: {other:?}"),
    }

    println!("\n3. Promote the user and merge a preference");
    let user = store
        .users()
        .update(
            user.id,
            UserUpdate::new()
                .passport_tier(PassportTier::parse("citizen")?)
                .merge_preferences(json!({"theme": "dark"})),
        )
        .await?;
    println!(
        "   tier={} preferences={}",
        user.passport_tier, user.preferences
    );

    println!("\n4. Issue an API key for the `billing` service (shown this once)");
    let issued = store.api_keys().issue(user.id, "billing", None).await?;
    println!("   key: {}", issued.secret.expose_secret());
    println!(
        "   stored: only its SHA-256, shown as {:?}",
        issued.key.prefix
    );

    println!("\n5. Validate it");
    let key = store
        .api_keys()
        .validate_for(issued.secret.expose_secret(), "billing")
        .await?;
    println!(
        "   valid: key {} of user {} for {}",
        key.id, key.user_id, key.service
    );
    match store
        .api_keys()
        .validate_for(issued.secret.expose_secret(), "analytics")
        .await
    {
        Err(e) => println!("   for another service: {e}"),
        Ok(_) => println!("   unexpected: accepted for another service"),
    }

    println!("\n6. Revoke it, and validate again");
    store.api_keys().revoke(key.id).await?;
    match store
        .api_keys()
        .validate(issued.secret.expose_secret())
        .await
    {
        Err(e) => println!("   refused: {e}"),
        Ok(_) => println!("   unexpected: still valid"),
    }

    println!("\n7. Record events");
    let login = "user.login".parse()?;
    let login_event = store
        .events()
        .record(
            NewEvent::new(
                "user.login".parse()?,
                json!({"ip": "203.0.113.7", "country": "NZ"}),
            )
            .user(user.id),
        )
        .await?;
    let batch: Vec<NewEvent> = (0..3)
        .map(|i| {
            NewEvent::new("page.view".parse().expect("valid type"), json!({"page": i}))
                .user(user.id)
        })
        .collect();
    let ids = store.events().record_many(batch).await?;
    println!(
        "   recorded 1 login and {} page views in one batch",
        ids.len()
    );

    println!("\n8. List and count them");
    let page = store
        .events()
        .list(&EventFilter::for_user(user.id), 10, None)
        .await?;
    for e in &page.items {
        println!(
            "   {} {} {}",
            e.created_at.format("%H:%M:%S%.3f"),
            e.event_type,
            e.payload
        );
    }
    let from_nz = store
        .events()
        .list(
            &EventFilter::for_user(user.id).payload_contains(json!({"country": "NZ"})),
            10,
            None,
        )
        .await?;
    println!(
        "   events whose payload contains {{\"country\":\"NZ\"}}: {}",
        from_nz.items.len()
    );
    let since = user.created_at;
    println!(
        "   logins since the user was created: {}",
        store
            .events()
            .count(&login, TimeRange::since(since))
            .await?
    );
    for b in store
        .events()
        .count_by_bucket(TimeBucket::Hour, TimeRange::since(since), None)
        .await?
    {
        println!(
            "   {} {:<10} {}",
            b.bucket.format("%Y-%m-%d %H:00"),
            b.event_type,
            b.count
        );
    }

    println!("\n9. Delete the user: their keys go, their events stay, detached");
    store.users().delete(user.id).await?;
    println!(
        "   user gone: {}",
        matches!(
            store.users().get(user.id).await,
            Err(Error::NotFound { .. })
        )
    );
    let still = store
        .events()
        .list(
            &EventFilter::all()
                .event_type(login)
                .payload_contains(json!({"country": "NZ"})),
            100,
            None,
        )
        .await?;
    if let Some(e) = still.items.iter().find(|e| e.id == login_event.id) {
        println!("   the login event is kept, user_id = {:?}", e.user_id);
    }

    println!("\nDone.");
    Ok(())
}
