//! Compiles the PostgreSQL variants of the tests as ignored unless `TEST_POSTGRES_URL` is set,
//! so a run without PostgreSQL reports them as `ignored` instead of counting empty passes.
//! CI sets the variable: then they are compiled in and fail if the database is unreachable.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TEST_POSTGRES_URL");
    println!("cargo::rustc-check-cfg=cfg(palaver_pg)");
    if std::env::var("TEST_POSTGRES_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=palaver_pg");
    }
}
