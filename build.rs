//! Rebuilds the crate when a migration is added or changed: the migrations
//! are embedded by `embed_migrations!` (and the role scripts of `sql/` by
//! `include_str!`), which cargo does not track by itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=sql");
}
