//! `spawn_cluster(n)`: n Palaver nodes on 127.0.0.1:0 sharing one fresh PostgreSQL database,
//! one data dir and the machine's NATS (`TEST_NATS_URL`) under a subject prefix of their own,
//! with the cluster's clocks shortened so tests settle in about a second.

use std::time::Duration;

use palaver::config::ClusterSettings;
use palaver_actors::cluster::ClusterTimers;
use serde_json::Value;
use uuid::Uuid;

use super::{PgDatabase, TestApp, postgres_url, test_config};
use crate::common::Backend;

/// The NATS the cluster suite runs against (CI: `nats://127.0.0.1:4222`).
pub fn nats_url() -> String {
    match std::env::var("TEST_NATS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("TEST_NATS_URL is not set; the cluster suite needs NATS"),
    }
}

/// Test clocks: heartbeats every 100 ms, placement every 100 ms. Silence and the join grace
/// are longer than the clocks alone need: CI runs hundreds of tests on two cores, where a
/// heartbeat task can stall for most of a second and nodes "started together" finish their
/// start-up (migrations under one lock) far apart. Shorter values made shards flap there.
pub fn fast_timers() -> ClusterTimers {
    ClusterTimers {
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_millis(2000),
        tick: Duration::from_millis(100),
        join_grace: Duration::from_millis(1500),
        moves_per_tick: 1024,
        presence_digest: Duration::from_millis(300),
        presence_ttl: Duration::from_secs(2),
        ..ClusterTimers::default()
    }
}

pub struct TestCluster {
    pub nodes: Vec<TestApp>,
    pub database_url: String,
    pub prefix: String,
    pub data_dir: tempfile::TempDir,
    _pg: PgDatabase,
}

impl TestCluster {
    /// The cluster settings node `node_id` starts with.
    pub fn settings(&self, node_id: &str) -> ClusterSettings {
        let mut settings = ClusterSettings::new(nats_url(), &self.database_url);
        settings.node_id = node_id.to_string();
        settings.prefix = self.prefix.clone();
        settings.timers = fast_timers();
        settings
    }

    /// Starts another node (or tries to: the error is the server's refusal).
    pub async fn start_node(&mut self, node_id: &str) -> Result<&TestApp, String> {
        self.start_node_with(node_id, |_| {}).await
    }

    /// `start_node` with its cluster settings changed first.
    pub async fn start_node_with(
        &mut self,
        node_id: &str,
        tweak: impl FnOnce(&mut ClusterSettings),
    ) -> Result<&TestApp, String> {
        let mut config = test_config(self.data_dir.path());
        config.database_url = self.database_url.clone();
        let mut settings = self.settings(node_id);
        tweak(&mut settings);
        config.cluster = Some(settings);
        let server = palaver::serve(config.clone()).await?;
        self.nodes.push(TestApp::borrowing(server, config, Backend::Postgres(postgres_url())));
        Ok(self.nodes.last().expect("just pushed"))
    }

    /// Each node's `/api/health` `cluster` section.
    pub async fn statuses(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let health = node.get_public("/health").await;
            out.push(health.body["cluster"].clone());
        }
        out
    }

    /// Waits until every node reports `settled` with `n` live nodes and the shards are all
    /// owned exactly once; panics after `within`.
    pub async fn settle(&self, within: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let statuses = self.statuses().await;
            let total: u64 = statuses.iter().map(|s| s["shards_owned"].as_u64().unwrap_or(0)).sum();
            let settled = statuses.iter().all(|s| s["state"] == "settled" && s["nodes"] == self.nodes.len());
            if settled && total == 1024 {
                return statuses;
            }
            assert!(tokio::time::Instant::now() < deadline, "cluster did not settle: {statuses:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops node `index` gracefully (it leaves the cluster).
    pub async fn stop_node(&mut self, index: usize) {
        let node = self.nodes.remove(index);
        node.stop().await;
    }

    /// `channel_shards` as the database records it: shard → owning node.
    pub async fn owners(&self) -> Vec<(i16, Option<String>, i64)> {
        use sea_orm::{ConnectionTrait, Database, Statement};
        let db = Database::connect(&self.database_url).await.expect("connect");
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT shard, node, shard_epoch FROM channel_shards ORDER BY shard",
            ))
            .await
            .expect("read channel_shards");
        let owners = rows
            .iter()
            .map(|r| {
                (
                    r.try_get::<i16>("", "shard").unwrap(),
                    r.try_get::<Option<String>>("", "node").unwrap(),
                    r.try_get::<i64>("", "shard_epoch").unwrap(),
                )
            })
            .collect();
        db.close().await.ok();
        owners
    }

    pub async fn stop(mut self) {
        while !self.nodes.is_empty() {
            self.stop_node(0).await;
        }
    }
}

/// `n` nodes `n1..nn` on one fresh database; not yet settled.
pub async fn spawn_cluster(n: usize) -> TestCluster {
    let (pg, database_url) = PgDatabase::create(&postgres_url()).await;
    let mut cluster = TestCluster {
        nodes: Vec::new(),
        database_url,
        prefix: format!("test{}", Uuid::new_v4().simple()),
        data_dir: tempfile::tempdir().expect("temp dir"),
        _pg: pg,
    };
    // Started together, as an operator's orchestrator would: migrations and key files must
    // cope with nodes racing on an empty database and data dir.
    let mut configs = Vec::new();
    for i in 1..=n {
        let mut config = test_config(cluster.data_dir.path());
        config.database_url = cluster.database_url.clone();
        config.cluster = Some(cluster.settings(&format!("n{i}")));
        configs.push(config);
    }
    let servers = futures_util::future::join_all(configs.iter().cloned().map(palaver::serve)).await;
    for (server, config) in servers.into_iter().zip(configs) {
        let server = server.expect("cluster node starts");
        cluster.nodes.push(TestApp::borrowing(server, config, Backend::Postgres(postgres_url())));
    }
    cluster
}
