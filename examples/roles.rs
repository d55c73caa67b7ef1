//! Prints the SQL of a least-privilege deployment, for psql:
//!
//! ```sh
//! # once per database, as an administrator (on Neon: neondb_owner)
//! cargo run --example roles -- setup | psql "$ADMIN_URL"
//! psql "$ADMIN_URL" -c '\password dreamnet_app'   # and the other two
//! # after each migration, as the owner (StoreBuilder::grant_roles does it
//! # for `run_migrations(true)`)
//! cargo run --example roles -- grant | psql "$OWNER_URL"
//! ```
//!
//! The roles are `dreamnet_owner`, `dreamnet_app` and `dreamnet_readonly`,
//! or the names in `DREAMNET_OWNER_ROLE`, `DREAMNET_APP_ROLE` and
//! `DREAMNET_READONLY_ROLE`. No password is part of the SQL.

use dreamnet_db::RoleNames;

fn main() -> dreamnet_db::Result<()> {
    let name = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let roles = RoleNames::new(
        name("DREAMNET_OWNER_ROLE", "dreamnet_owner"),
        name("DREAMNET_APP_ROLE", "dreamnet_app"),
        name("DREAMNET_READONLY_ROLE", "dreamnet_readonly"),
    )?;
    match std::env::args().nth(1).as_deref() {
        Some("setup") => print!("{}", roles.setup_sql()),
        Some("grant") => print!("{}", roles.grant_sql()),
        _ => {
            eprintln!("usage: cargo run --example roles -- setup|grant");
            std::process::exit(2);
        }
    }
    Ok(())
}
