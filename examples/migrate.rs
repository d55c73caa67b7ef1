//! Applies the crate's pending migrations to the database at `DATABASE_URL`
//! and prints the ones it applied, one per line. What a deploy runs before
//! the services that share the database adopt a new schema.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example migrate
//! ```

use dreamnet_db::Store;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL to the database to migrate")?;
    let store = Store::builder()
        .database_url(url)
        .max_connections(1)
        .connect()
        .await?;
    let applied = store.migrate().await?;
    if applied.is_empty() {
        println!("no pending migrations");
    }
    for version in applied {
        println!("applied {version}");
    }
    Ok(())
}
