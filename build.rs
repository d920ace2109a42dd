//! Compiles the PostgreSQL variants of the tests as ignored unless `TEST_POSTGRES_URL` is set,
//! so a run without PostgreSQL reports them as `ignored` instead of counting empty passes.
//! CI sets the variable: then they are compiled in and fail if the database is unreachable.
//! The cluster suite (`tests/api/cluster.rs`) likewise needs `TEST_NATS_URL` as well.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TEST_POSTGRES_URL");
    println!("cargo::rerun-if-env-changed=TEST_NATS_URL");
    println!("cargo::rustc-check-cfg=cfg(palaver_pg)");
    println!("cargo::rustc-check-cfg=cfg(palaver_cluster)");
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.is_empty());
    if set("TEST_POSTGRES_URL") {
        println!("cargo::rustc-cfg=palaver_pg");
        // The cluster suite needs PostgreSQL and NATS both.
        if set("TEST_NATS_URL") {
            println!("cargo::rustc-cfg=palaver_cluster");
        }
    }
}
