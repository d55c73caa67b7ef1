//! Rebuilds the crate when a migration is added or changed: the migrations
//! are embedded by `embed_migrations!`, which cargo does not track by itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
