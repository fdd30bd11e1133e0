//! `sqlx::migrate!` embeds the migrations at compile time; rebuild this crate when a
//! migration is added or changed (cargo does not see new files in the folder otherwise).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
