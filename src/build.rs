//! Build script: the migrations are embedded in the binary (`embed_migrations!`), and cargo
//! does not watch a folder a macro reads. Without this, a migration added or edited after a
//! build is missing from the next incremental build.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
