//! Several nodes on one PostgreSQL and NATS (`actors/src/cluster`): joining, start-up
//! refusals, shard ownership and its movement when nodes come and go.
//!
//! Runs when `TEST_POSTGRES_URL` and `TEST_NATS_URL` are both set (CI sets them) and fails,
//! rather than skips, when either is unreachable.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::common::cluster::{nats_url, spawn_cluster};
use crate::common::fixtures;
use crate::common::proxy::CuttableProxy;
use crate::common::test_config;
use crate::presence::{expect_no_presence, expect_presence};

macro_rules! cluster_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(not(palaver_cluster), ignore = "set TEST_POSTGRES_URL and TEST_NATS_URL to run the cluster suite")]
            async fn $name() {
                super::$name().await
            }
        )*
    };
}

async fn three_nodes_started_together_share_every_shard_once() {
    let cluster = spawn_cluster(3).await;
    let statuses = cluster.settle(Duration::from_secs(15)).await;
    for (i, status) in statuses.iter().enumerate() {
        assert_eq!(status["node_id"], format!("n{}", i + 1));
        assert_eq!(status["moving"], 0);
        // Rendezvous placement over three nodes: about a third each.
        let owned = status["shards_owned"].as_u64().unwrap();
        assert!((250..=430).contains(&owned), "{status}");
    }
    // The database agrees with what the nodes say: every shard has exactly one owner, each
    // took its shards once (fencing epoch 1), and the counts match.
    let owners = cluster.owners().await;
    assert_eq!(owners.len(), 1024);
    let mut per_node: HashMap<String, u64> = HashMap::new();
    for (shard, node, epoch) in &owners {
        let node = node.clone().unwrap_or_else(|| panic!("shard {shard} has no owner"));
        assert_eq!(*epoch, 1, "shard {shard} changed hands while settling");
        *per_node.entry(node).or_default() += 1;
    }
    for status in &statuses {
        assert_eq!(per_node[status["node_id"].as_str().unwrap()], status["shards_owned"].as_u64().unwrap());
    }
    // Nodes starting together on an empty data dir end up with the same keys: a token one
    // node issued is accepted by another.
    let user = cluster.nodes[0].register("alice").await;
    let me = cluster.nodes[2].get(&format!("/users/{}", user.id), &user.token).await.expect(200);
    assert_eq!(me["username"], "alice");
    cluster.stop().await;
}

async fn a_node_that_leaves_hands_its_shards_to_the_others() {
    let mut cluster = spawn_cluster(3).await;
    cluster.settle(Duration::from_secs(15)).await;
    let before = cluster.owners().await;
    cluster.stop_node(1).await;
    let statuses = cluster.settle(Duration::from_secs(15)).await;
    assert!(statuses.iter().all(|s| s["nodes"] == 2));
    let after = cluster.owners().await;
    for ((shard, was, epoch_before), (_, now, epoch_after)) in before.iter().zip(&after) {
        let (was, now) = (was.as_deref().unwrap(), now.as_deref().unwrap());
        assert_ne!(now, "n2", "shard {shard} still owned by the node that left");
        if was == "n2" {
            // Taken over: a new fencing epoch, so n2 could not have committed after.
            assert!(epoch_after > epoch_before, "shard {shard}");
        } else {
            // Rendezvous moves only the leaver's shards.
            assert_eq!(was, now, "shard {shard} moved between nodes that stayed");
            assert_eq!(epoch_after, epoch_before);
        }
    }
    cluster.stop().await;
}

async fn a_node_that_joins_takes_about_a_quarter() {
    let mut cluster = spawn_cluster(3).await;
    cluster.settle(Duration::from_secs(15)).await;
    let before = cluster.owners().await;
    cluster.start_node("n4").await.expect("n4 joins");
    let statuses = cluster.settle(Duration::from_secs(15)).await;
    assert!(statuses.iter().all(|s| s["nodes"] == 4));
    let after = cluster.owners().await;
    let mut moved = 0;
    for ((shard, was, _), (_, now, _)) in before.iter().zip(&after) {
        if was != now {
            assert_eq!(now.as_deref(), Some("n4"), "shard {shard} moved between old nodes");
            moved += 1;
        }
    }
    assert!((180..=340).contains(&moved), "{moved} shards moved to the new node");
    cluster.stop().await;
}

async fn duplicate_node_id_refuses_to_start() {
    let mut cluster = spawn_cluster(1).await;
    cluster.settle(Duration::from_secs(15)).await;
    let err = cluster.start_node("n1").await.err().expect("a second n1 must not start");
    assert!(err.contains("node id n1 is already live"), "{err}");
    // Once the first n1 is gone, the id is free again.
    cluster.stop_node(0).await;
    cluster.start_node("n1").await.expect("n1 starts again after the first one left");
    cluster.settle(Duration::from_secs(15)).await;
    cluster.stop().await;
}

async fn cluster_on_sqlite_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.cluster = Some(palaver::config::ClusterSettings::new(nats_url(), &config.database_url));
    let err = palaver::serve(config).await.err().expect("a cluster on SQLite must not start");
    assert_eq!(err, "a cluster needs PostgreSQL: PALAVER_NATS_URL is set but DATABASE_URL is SQLite");
}

async fn unreachable_nats_refuses_to_start() {
    let mut cluster = spawn_cluster(0).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config = test_config(cluster.data_dir.path());
    config.database_url = cluster.database_url.clone();
    let mut settings = cluster.settings("n1");
    settings.nats_url = format!("nats://{closed}");
    config.cluster = Some(settings);
    let err = palaver::serve(config).await.err().expect("no NATS, no cluster");
    assert!(err.starts_with(&format!("cannot reach NATS at nats://{closed} (PALAVER_NATS_URL)")), "{err}");
    // A bad node id is refused before anything is contacted.
    let err = cluster.start_node("not a node").await.err().expect("bad node id");
    assert!(err.contains("PALAVER_NODE_ID"), "{err}");
    cluster.stop().await;
}

async fn nodes_with_different_keys_refuse_to_join() {
    let cluster = spawn_cluster(1).await;
    cluster.settle(Duration::from_secs(15)).await;
    // n2 has a data dir of its own: other signing and TOTP keys.
    let other_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(other_dir.path());
    config.database_url = cluster.database_url.clone();
    config.cluster = Some(cluster.settings("n2"));
    let err = palaver::serve(config).await.err().expect("other keys must not join");
    assert!(err.contains("node n1 uses other signing/TOTP keys"), "{err}");
    cluster.stop().await;
}

async fn an_owner_whose_lock_connection_dies_loses_its_shards_to_a_new_epoch() {
    use sea_orm::{ConnectionTrait, Database};
    let cluster = spawn_cluster(2).await;
    cluster.settle(Duration::from_secs(15)).await;
    let before = cluster.owners().await;
    // The database ends n2's lock connection (as a network cut or a failover would): every
    // advisory lock it held is gone at once.
    let db = Database::connect(&cluster.database_url).await.unwrap();
    let killed = db
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND objsubid = 2 AND classid = {} AND objid = {} \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            palaver_actors::cluster::locks::NODE_LOCK_CLASS,
            palaver_actors::cluster::shards::node_lock_key("n2"),
        ))
        .await
        .unwrap();
    assert_eq!(killed.rows_affected(), 1, "n2's lock connection was found");
    db.close().await.ok();
    // n2 notices, reconnects and rejoins; whoever holds its old shards now took them under a
    // new fencing epoch, so a write n2 began before the cut cannot commit. (Settled alone is
    // not enough: right after the cut the cluster still reports the state from before it.)
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let after = loop {
        cluster.settle(Duration::from_secs(15)).await;
        let after = cluster.owners().await;
        let moved = before
            .iter()
            .zip(&after)
            .filter(|((_, was, _), _)| was.as_deref() == Some("n2"))
            .all(|((_, _, epoch_before), (_, _, epoch_after))| epoch_after > epoch_before);
        if moved || std::time::Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for ((shard, was, epoch_before), (_, _, epoch_after)) in before.iter().zip(&after) {
        if was.as_deref() == Some("n2") {
            assert!(epoch_after > epoch_before, "shard {shard} kept epoch {epoch_before}");
        } else {
            assert_eq!(epoch_after, epoch_before, "shard {shard} of n1 changed hands");
        }
    }
    cluster.stop().await;
}

async fn a_node_cut_from_nats_detaches_and_its_shards_move() {
    let mut cluster = spawn_cluster(1).await;
    let nats: std::net::SocketAddr =
        nats_url().trim_start_matches("nats://").parse().expect("TEST_NATS_URL is nats://host:port");
    let proxy = CuttableProxy::start(nats).await;
    cluster
        .start_node_with("n2", |settings| {
            settings.nats_url = format!("nats://{}", proxy.addr);
            settings.detach_after = Duration::from_secs(1);
        })
        .await
        .expect("n2 joins through the proxy");
    cluster.settle(Duration::from_secs(15)).await;
    proxy.cut().await;
    // n2 detaches: 503, no shards; n1 takes everything.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let n1 = cluster.nodes[0].get_public("/health").await;
        let n2 = cluster.nodes[1].get_public("/health").await;
        if n2.status == 503
            && n2.body["cluster"]["state"] == "detached"
            && n2.body["cluster"]["shards_owned"] == 0
            && n1.body["cluster"]["shards_owned"] == 1024
            && n1.body["cluster"]["state"] == "settled"
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "n1 {:?} / n2 {} {:?}", n1.body, n2.status, n2.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // NATS back: n2 rejoins and takes its share again.
    proxy.restore();
    let statuses = cluster.settle(Duration::from_secs(30)).await;
    assert!(statuses.iter().all(|s| s["nodes"] == 2));
    cluster.stop().await;
}

/// Polls `check` every 50 ms until it holds; panics with `what` after 5 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn revocations_made_on_one_node_reach_every_node() {
    let cluster = spawn_cluster(3).await;
    cluster.settle(Duration::from_secs(15)).await;
    let (n1, n2, n3) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let owner = n1.register("owner").await;
    let alice = n1.register("alice").await;
    let bob = n1.register("bob").await;
    let mut alice_ws = n2.ws(&alice.token).await;
    let mut bob_ws = n3.ws(&bob.token).await;

    // Suspended on n1: her socket on n2 closes at once and n2 refuses her unexpired token.
    n1.post(&format!("/admin/users/{}/suspend", alice.id), &owner.token, json!({"reason": null}))
        .await
        .expect(200);
    assert_eq!(alice_ws.expect_close(Duration::from_secs(5)).await, Some(4001));
    assert_eq!(n2.get("/account/me", &alice.token).await.expect_error(401), "unauthorized");
    eventually("n3 refuses the suspended token", || async {
        n3.get("/account/me", &alice.token).await.status == 401
    })
    .await;
    // Lifted on n3: n2 takes the token again.
    n3.post(&format!("/admin/users/{}/unsuspend", alice.id), &owner.token, json!({})).await.expect(200);
    eventually("n2 accepts the unsuspended token", || async {
        n2.get("/account/me", &alice.token).await.status == 200
    })
    .await;

    // Bob changes his password on n1: his socket on n3 closes, and his old access token opens
    // no socket on n2 (REST keeps taking it until it expires, as on one node).
    n1.put(
        "/account/password",
        &bob.token,
        json!({"current_password": bob.password, "new_password": "Battery-Staple-7"}),
    )
    .await
    .expect(200);
    assert_eq!(bob_ws.expect_close(Duration::from_secs(5)).await, Some(4001));
    eventually("n2 refuses a socket to the revoked login", || async {
        let mut ws = n2.ws_raw().await;
        ws.send(json!({"type": "authenticate", "token": bob.token})).await;
        match ws.next_frame(Duration::from_secs(2)).await {
            Some(frame) => frame["type"] == "error" && frame["code"] == "unauthorized",
            None => false,
        }
    })
    .await;
    cluster.stop().await;
}

async fn user_and_instance_frames_reach_sockets_on_every_node() {
    let cluster = spawn_cluster(3).await;
    cluster.settle(Duration::from_secs(15)).await;
    let (n1, n2, n3) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let owner = n1.register("owner").await;
    let alice = n1.register("alice").await;
    let bob = n1.register("bob").await;
    let mut owner_ws = n1.ws(&owner.token).await;
    let mut alice_ws = n2.ws(&alice.token).await;
    let mut bob_ws = n3.ws(&bob.token).await;

    // Everyone scope: an announcement made on n1 reaches n2 and n3, and n1's own socket once.
    n1.post("/admin/announcements", &owner.token, json!({"title": "T", "body": "B"})).await.expect(200);
    for ws in [&mut owner_ws, &mut alice_ws, &mut bob_ws] {
        assert_eq!(ws.expect("announcement").await["title"], "T");
        ws.expect_no("announcement", Duration::from_millis(300)).await;
    }
    // A profile change on n3 reaches the socket on n1.
    n3.put("/account/profile", &alice.token, json!({"display_name": "Alice Live"})).await.expect(200);
    let frame = owner_ws.expect("user_profile_updated").await;
    assert_eq!(frame["display_name"], "Alice Live");

    // Community scope: members are told on whichever node their socket is; others are not.
    let cid = fixtures::create(n1, &owner, "Garden").await;
    fixtures::join(n1, &owner, cid, &bob).await;
    n2.patch(&format!("/communities/{cid}"), &owner.token, json!({"name": "Rose Garden"})).await.expect(200);
    assert_eq!(bob_ws.expect_eventually("community_updated").await["name"], "Rose Garden");
    assert_eq!(owner_ws.expect_eventually("community_updated").await["name"], "Rose Garden");
    alice_ws.expect_no("community_updated", Duration::from_millis(300)).await;
    cluster.stop().await;
}

async fn settings_changed_on_one_node_apply_on_every_node() {
    let cluster = spawn_cluster(2).await;
    cluster.settle(Duration::from_secs(15)).await;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let owner = n1.register("owner").await;
    // n2 has the settings cached before the change.
    n2.get("/admin/settings", &owner.token).await.expect(200);
    n1.put("/admin/settings", &owner.token, json!({"max_pins_per_channel": "7"})).await.expect(200);
    eventually("n2 serves the new setting", || async {
        n2.get("/admin/settings", &owner.token).await.body["max_pins_per_channel"] == "7"
    })
    .await;
    cluster.stop().await;
}

async fn presence_crosses_nodes_and_a_silent_nodes_users_go_offline() {
    let mut cluster = spawn_cluster(1).await;
    let nats: std::net::SocketAddr =
        nats_url().trim_start_matches("nats://").parse().expect("TEST_NATS_URL is nats://host:port");
    let proxy = CuttableProxy::start(nats).await;
    cluster
        .start_node_with("n2", |settings| settings.nats_url = format!("nats://{}", proxy.addr))
        .await
        .expect("n2 joins through the proxy");
    cluster.start_node("n3").await.expect("n3 joins");
    cluster.settle(Duration::from_secs(15)).await;
    let (n1, n2, n3) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let owner = n1.register("owner").await;
    let alice = n1.register("alice").await;
    let bob = n1.register("bob").await;
    // Memberships made on n1 after every node started: n2 and n3 learn them over the bus.
    let cid = fixtures::create(n1, &owner, "Garden").await;
    fixtures::join(n1, &owner, cid, &alice).await;
    fixtures::join(n1, &owner, cid, &bob).await;
    let mut bob_ws = n1.ws(&bob.token).await;

    // Alice comes online on n2; Bob, on n1, hears it, and so does a socket he opens on n3.
    let mut alice_on_n2 = n2.ws(&alice.token).await;
    expect_presence(&mut bob_ws, alice.id, "online").await;
    let mut bob_on_n3 = n3.ws(&bob.token).await;
    expect_presence(&mut bob_on_n3, alice.id, "online").await;
    drop(bob_on_n3);
    alice_on_n2.send(json!({"type": "update_presence", "status": "dnd"})).await;
    expect_presence(&mut bob_ws, alice.id, "dnd").await;

    // She moves to n3: the latest status told wins, and closing n2's socket does not show her
    // offline while n3 lists her.
    let alice_on_n3 = n3.ws(&alice.token).await;
    expect_presence(&mut bob_ws, alice.id, "online").await;
    drop(alice_on_n2);
    expect_no_presence(&mut bob_ws, Duration::from_secs(1)).await;
    drop(alice_on_n3);
    expect_presence(&mut bob_ws, alice.id, "offline").await;

    // Back on n2, which is then cut off from NATS: n1 stops hearing it and, after the TTL,
    // no longer lists her.
    let _alice_on_n2 = n2.ws(&alice.token).await;
    expect_presence(&mut bob_ws, alice.id, "online").await;
    proxy.cut().await;
    expect_presence(&mut bob_ws, alice.id, "offline").await;
    proxy.restore();
    cluster.stop().await;
}

/// The node that owns a channel's shard, by index into `cluster.nodes`.
async fn owner_index(cluster: &crate::common::cluster::TestCluster, channel: uuid::Uuid) -> usize {
    let shard = palaver_actors::cluster::shards::shard_of(channel) as i16;
    let owners = cluster.owners().await;
    let node = owners.iter().find(|(s, _, _)| *s == shard).and_then(|(_, n, _)| n.clone()).expect("owned");
    let index: usize = node.trim_start_matches('n').parse().expect("node ids are n1..");
    index - 1
}

/// Subscribes an open socket (a ping round trip proves the subscribe was handled).
async fn subscribe(ws: &mut crate::common::WsClient, channel: uuid::Uuid) {
    ws.send(json!({"type": "subscribe", "channel_ids": [channel]})).await;
    ws.send(json!({"type": "ping", "timestamp": 77})).await;
    loop {
        let frame = ws.next_frame(Duration::from_secs(5)).await.expect("pong");
        if frame["type"] == "pong" && frame["timestamp"] == 77 {
            return;
        }
    }
}

/// Two settled nodes, a channel of `owner` and `alice`, and Alice's socket subscribed to it on
/// the node that does not own it.
struct TwoNodes {
    cluster: crate::common::cluster::TestCluster,
    owner: crate::common::TestUser,
    alice: crate::common::TestUser,
    channel: uuid::Uuid,
    /// Index of the node owning the channel, and of the other one.
    owning: usize,
    other: usize,
    alice_ws: crate::common::WsClient,
}

async fn two_nodes() -> TwoNodes {
    let cluster = spawn_cluster(2).await;
    cluster.settle(Duration::from_secs(15)).await;
    let owner = cluster.nodes[0].register("owner").await;
    let alice = cluster.nodes[0].register("alice").await;
    let channel = fixtures::channel_with(&cluster.nodes[0], &owner, &[&alice]).await;
    let owning = owner_index(&cluster, channel).await;
    let other = 1 - owning;
    let mut alice_ws = cluster.nodes[other].ws(&alice.token).await;
    subscribe(&mut alice_ws, channel).await;
    TwoNodes { cluster, owner, alice, channel, owning, other, alice_ws }
}

fn send_frame(channel: uuid::Uuid, n: u8) -> serde_json::Value {
    json!({"type": "send_message", "channel_id": channel, "ciphertext": [n, 1, 2], "nonce": [n],
           "message_type": "text"})
}

async fn message_sent_on_one_node_reaches_subscribers_on_every_node() {
    let cluster = spawn_cluster(3).await;
    cluster.settle(Duration::from_secs(15)).await;
    let (n1, n2, n3) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let owner = n1.register("owner").await;
    let alice = n1.register("alice").await;
    let bob = n1.register("bob").await;
    let channel = fixtures::channel_with(n1, &owner, &[&alice, &bob]).await;
    let mut sockets = [n1.ws(&owner.token).await, n2.ws(&alice.token).await, n3.ws(&bob.token).await];
    for ws in sockets.iter_mut() {
        subscribe(ws, channel).await;
    }
    // Each node sends once: at least two of the three sends are forwarded to the owner.
    for sender in 0..3 {
        sockets[sender].send(send_frame(channel, sender as u8)).await;
        let ack = sockets[sender].expect("message_sent").await;
        let mut seen = Vec::new();
        for (i, ws) in sockets.iter_mut().enumerate() {
            if i == sender {
                continue;
            }
            let frame = ws.expect("new_message").await;
            assert_eq!(frame["id"], ack["id"]);
            assert_eq!(frame["ciphertext"], json!([sender as u8, 1, 2]));
            seen.push(frame);
        }
        // The same bytes everywhere (the owner's serialization), position included.
        assert_eq!(seen[0], seen[1]);
        sockets[sender].expect_no("new_message", Duration::from_millis(200)).await;
    }
    cluster.stop().await;
}

async fn three_senders_on_three_nodes_are_seen_in_one_order_everywhere() {
    const SENDS: usize = 40;
    let cluster = spawn_cluster(3).await;
    cluster.settle(Duration::from_secs(15)).await;
    let owner = cluster.nodes[0].register("owner").await;
    let mut users = vec![owner.clone()];
    for name in ["alice", "bob"] {
        users.push(cluster.nodes[0].register(name).await);
    }
    let channel = fixtures::channel_with(&cluster.nodes[0], &owner, &[&users[1], &users[2]]).await;
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let mut reader = cluster.nodes[i].ws(&user.token).await;
        subscribe(&mut reader, channel).await;
        readers.push(reader);
        senders.push(cluster.nodes[i].ws(&user.token).await);
    }
    // Three senders at once, one per node, each waiting for its ack before the next send.
    let acks =
        futures_util::future::join_all(senders.into_iter().enumerate().map(|(i, mut ws)| async move {
            let mut acked = Vec::new();
            for n in 0..SENDS {
                ws.send(send_frame(channel, (i * SENDS + n) as u8)).await;
                acked.push(ws.expect_eventually("message_sent").await["id"].as_str().unwrap().to_owned());
            }
            acked
        }))
        .await;
    let acked: std::collections::HashSet<String> = acks.into_iter().flatten().collect();
    assert_eq!(acked.len(), 3 * SENDS);
    let mut orders = Vec::new();
    for reader in readers.iter_mut() {
        let mut order = Vec::new();
        let mut last_cseq = 0;
        while order.len() < 3 * SENDS {
            let frame = reader.expect_eventually("new_message").await;
            let cseq = frame["cseq"].as_u64().expect("cseq");
            assert!(cseq > last_cseq, "positions rise: {cseq} after {last_cseq}");
            last_cseq = cseq;
            order.push(frame["id"].as_str().unwrap().to_owned());
        }
        orders.push(order);
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
    assert_eq!(orders[0].iter().cloned().collect::<std::collections::HashSet<_>>(), acked);
    // The stored order is the order everyone saw (history is newest first).
    let history =
        cluster.nodes[1].get(&format!("/channels/{channel}/messages?limit=100"), &owner.token).await;
    let mut stored: Vec<String> = history
        .expect(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    stored.reverse();
    assert_eq!(stored, orders[0][3 * SENDS - 100..]);
    cluster.stop().await;
}

async fn changes_made_over_rest_on_any_node_reach_every_subscriber_in_order() {
    let cluster = spawn_cluster(3).await;
    cluster.settle(Duration::from_secs(15)).await;
    let owner = cluster.nodes[0].register("owner").await;
    let alice = cluster.nodes[0].register("alice").await;
    let channel = fixtures::channel_with(&cluster.nodes[0], &owner, &[&alice]).await;
    let owning = owner_index(&cluster, channel).await;
    let other = (owning + 1) % 3;
    let mut watchers = Vec::new();
    for node in &cluster.nodes {
        let mut ws = node.ws(&alice.token).await;
        subscribe(&mut ws, channel).await;
        watchers.push(ws);
    }
    let mut sender = cluster.nodes[other].ws(&owner.token).await;
    sender.send(send_frame(channel, 9)).await;
    let id = sender.expect("message_sent").await["id"].as_str().unwrap().to_owned();
    // Pinned through a node that does not own the channel: the owner orders and announces it.
    cluster.nodes[other]
        .post(&format!("/channels/{channel}/pins/{id}"), &owner.token, json!({}))
        .await
        .expect(200);
    for ws in watchers.iter_mut() {
        let message = ws.expect("new_message").await;
        let pinned = ws.expect("message_pinned").await;
        assert_eq!(pinned["message_id"].as_str(), Some(id.as_str()));
        assert_eq!(pinned["cseq"].as_u64(), message["cseq"].as_u64().map(|c| c + 1));
    }
    cluster.stop().await;
}

async fn a_nodes_sessions_get_a_channels_frames_exactly_as_on_the_owner() {
    // Alice has three sockets on the node that does not own the channel: two subscribed, one
    // not. That node fans the owner's frames out to its own subscribers: each must get what
    // it would get on the owner, no more.
    let TwoNodes { cluster, owner, alice, channel, owning, other, mut alice_ws } = two_nodes().await;
    let mut second = cluster.nodes[other].ws(&alice.token).await;
    subscribe(&mut second, channel).await;
    let mut idle = cluster.nodes[other].ws(&alice.token).await;
    let mut owner_ws = cluster.nodes[owning].ws(&owner.token).await;
    subscribe(&mut owner_ws, channel).await;
    // Alice's send: her socket gets the ack and not the message; everyone subscribed else does.
    alice_ws.send(send_frame(channel, 1)).await;
    let ack = alice_ws.expect_eventually("message_sent").await;
    assert_eq!(second.expect_eventually("new_message").await["id"], ack["id"]);
    assert_eq!(owner_ws.expect_eventually("new_message").await["id"], ack["id"]);
    alice_ws.expect_no("new_message", Duration::from_millis(300)).await;
    idle.expect_no("new_message", Duration::from_millis(10)).await;
    // The droppable class goes the same way.
    owner_ws.send(json!({"type": "typing", "channel_id": channel})).await;
    assert_eq!(second.expect_eventually("user_typing").await["user_id"], json!(owner.id));
    assert_eq!(alice_ws.expect_eventually("user_typing").await["user_id"], json!(owner.id));
    idle.expect_no("user_typing", Duration::from_millis(300)).await;
    // One socket unsubscribes: the other still gets the channel's messages, it does not.
    second.send(json!({"type": "unsubscribe", "channel_ids": [channel]})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    owner_ws.send(send_frame(channel, 2)).await;
    let ack = owner_ws.expect_eventually("message_sent").await;
    assert_eq!(alice_ws.expect_eventually("new_message").await["id"], ack["id"]);
    second.expect_no("new_message", Duration::from_millis(300)).await;
    idle.expect_no("new_message", Duration::from_millis(10)).await;
    // A socket that closes drops out; the rest go on.
    drop(alice_ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    subscribe(&mut second, channel).await;
    owner_ws.send(send_frame(channel, 3)).await;
    let ack = owner_ws.expect_eventually("message_sent").await;
    assert_eq!(second.expect_eventually("new_message").await["id"], ack["id"]);
    cluster.stop().await;
}

async fn kicked_user_on_another_node_stops_receiving_at_once() {
    // Alice's socket is on the node that does not own the channel; the kick is made there too.
    let TwoNodes { cluster, owner, alice, channel, owning, other, mut alice_ws } = two_nodes().await;
    let mut owner_ws = cluster.nodes[owning].ws(&owner.token).await;
    subscribe(&mut owner_ws, channel).await;
    cluster.nodes[other]
        .post(&format!("/channels/{channel}/members/{}/kick", alice.id), &owner.token, json!({}))
        .await
        .expect(200);
    assert_eq!(alice_ws.expect("member_kicked").await["user_id"], json!(alice.id));
    owner_ws.send(send_frame(channel, 1)).await;
    owner_ws.expect("member_kicked").await;
    owner_ws.expect_eventually("message_sent").await;
    alice_ws.expect_no("new_message", Duration::from_millis(500)).await;
    // Nor can she send there any more.
    alice_ws.send(send_frame(channel, 2)).await;
    assert_eq!(alice_ws.expect("error").await["code"], "forbidden");
    cluster.stop().await;
}

async fn a_ban_made_on_another_node_is_ordered_against_the_users_sends() {
    use palaver_entity::{channel_bans, messages};
    use sea_orm::{ColumnTrait, Database, EntityTrait, QueryFilter};
    let TwoNodes { cluster, owner, alice, channel, owning, other, .. } = two_nodes().await;
    // Alice keeps sending on the owner's node (a send every millisecond) from before the owner
    // bans her on the other node until after the ban is answered.
    let mut sender = cluster.nodes[owning].ws(&alice.token).await;
    let banned = std::sync::atomic::AtomicBool::new(false);
    let burst = async {
        let mut after = 0;
        for n in 0..2000u32 {
            sender.send(send_frame(channel, n as u8)).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            if banned.load(std::sync::atomic::Ordering::SeqCst) {
                after += 1;
                if after == 20 {
                    break;
                }
            }
        }
    };
    let ban = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        cluster.nodes[other]
            .post(&format!("/channels/{channel}/members/{}/ban", alice.id), &owner.token, json!({}))
            .await
            .expect(200);
        banned.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    tokio::join!(burst, ban);
    let mut acked = 0;
    while let Some(frame) = sender.next_frame(Duration::from_millis(1500)).await {
        match frame["type"].as_str() {
            Some("message_sent") => acked += 1,
            Some("error") => assert_eq!(frame["code"], "forbidden", "{frame}"),
            _ => {}
        }
    }
    // The ban's write ran while the owner's actor held the channel: every message it accepted
    // from her was accepted before the ban was written, and none after.
    let db = Database::connect(&cluster.database_url).await.unwrap();
    let ban =
        channel_bans::Entity::find_by_id((channel, alice.id)).one(&db).await.unwrap().expect("ban stored");
    let stored = messages::Entity::find()
        .filter(messages::Column::ChannelId.eq(channel))
        .filter(messages::Column::SenderId.eq(alice.id))
        .all(&db)
        .await
        .unwrap();
    assert_eq!(stored.len(), acked, "every acked message is stored, nothing else");
    for message in &stored {
        assert!(message.created_at <= ban.created_at, "accepted after the ban: {message:?} vs {ban:?}");
    }
    db.close().await.ok();
    cluster.stop().await;
}

async fn the_session_cap_counts_sessions_on_every_node() {
    let cluster = spawn_cluster(2).await;
    cluster.settle(Duration::from_secs(15)).await;
    let alice = cluster.nodes[0].register("alice").await;
    // Eight sessions (the cap), alternating between the nodes; each node hears of the other's.
    let mut sockets = Vec::new();
    for i in 0..8 {
        sockets.push(cluster.nodes[i % 2].ws(&alice.token).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // A ninth on the second node evicts the oldest, which is on the first node.
    let mut ninth = cluster.nodes[1].ws(&alice.token).await;
    assert_eq!(sockets[0].expect("error").await["code"], "too_many_sessions");
    assert_eq!(
        sockets[0].expect_close(Duration::from_secs(5)).await,
        Some(palaver_actors::outbox::CLOSE_EVICTED)
    );
    // Everything newer stays open, on both nodes.
    for (i, ws) in sockets.iter_mut().enumerate().skip(1) {
        ws.send(json!({"type": "ping", "timestamp": i})).await;
        assert_eq!(ws.expect("pong").await["timestamp"], i, "session {i}");
    }
    ninth.send(json!({"type": "ping", "timestamp": 9})).await;
    assert_eq!(ninth.expect("pong").await["timestamp"], 9);
    // A session closed on one node frees its place everywhere: a tenth evicts nobody.
    drop(sockets.remove(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _tenth = cluster.nodes[0].ws(&alice.token).await;
    sockets[1].send(json!({"type": "ping", "timestamp": 2})).await;
    assert_eq!(sockets[1].expect("pong").await["timestamp"], 2, "the oldest left was not evicted");
    cluster.stop().await;
}

async fn one_subscribe_to_many_channels_of_another_node_stays_in_one_stream() {
    let TwoNodes { cluster, owner, alice, owning, other, .. } = two_nodes().await;
    // Channels owned by the node Alice's socket is not on, all asked in one `subscribe` (the
    // session asks them concurrently).
    // Created by each of the two in turn: a user may create 30 channels an hour, and about
    // half of the channels land on the wanted node.
    let mut creators = [(&owner, &alice), (&alice, &owner)].into_iter().cycle();
    let mut remote = Vec::new();
    while remote.len() < 8 {
        let (creator, member) = creators.next().unwrap();
        let channel = fixtures::channel_with(&cluster.nodes[0], creator, &[member]).await;
        if owner_index(&cluster, channel).await == owning {
            remote.push(channel);
        }
    }
    let mut alice_ws = cluster.nodes[other].ws(&alice.token).await;
    alice_ws.send(json!({"type": "subscribe", "channel_ids": remote})).await;
    alice_ws.send(json!({"type": "ping", "timestamp": 78})).await;
    alice_ws.expect("pong").await;
    let mut owner_ws = cluster.nodes[owning].ws(&owner.token).await;
    for (n, channel) in remote.iter().enumerate() {
        owner_ws.send(send_frame(*channel, n as u8)).await;
        owner_ws.expect_eventually("message_sent").await;
    }
    for channel in &remote {
        assert_eq!(alice_ws.expect("new_message").await["channel_id"], json!(channel));
    }
    cluster.stop().await;
}

async fn a_lost_forwarded_frame_is_repaired_from_the_owner() {
    let TwoNodes { cluster, owner, channel, owning, other, mut alice_ws, .. } = two_nodes().await;
    let mut owner_ws = cluster.nodes[owning].ws(&owner.token).await;
    let router =
        cluster.nodes[other].server.as_ref().unwrap().state.cluster.as_ref().unwrap().router().unwrap();
    router.drop_next_forwarded();
    // (Apart, so that each goes in a batch of its own.)
    let mut positions = Vec::new();
    for n in 0..3 {
        owner_ws.send(send_frame(channel, n)).await;
        positions.push(owner_ws.expect("message_sent").await["cseq"].clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The first message's batch was dropped on the way: the second showed the gap, the
    // other node asked the owner for the lost one again, and the socket got every message,
    // in order, without a reconnect.
    for (n, position) in positions.iter().enumerate() {
        let live = alice_ws.expect("new_message").await;
        assert_eq!((&live["ciphertext"], &live["cseq"]), (&json!([n, 1, 2]), position), "{live}");
    }
    // Operators see it: one gap, repaired; no session closed.
    let metrics = reqwest::get(format!("http://{}/metrics", cluster.nodes[other].addr)).await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("palaver_cluster_gaps_total{outcome=\"repaired\"} 1\n"), "{metrics}");
    assert!(metrics.contains("palaver_cluster_gaps_total{outcome=\"sessions_closed\"} 0\n"), "{metrics}");
    cluster.stop().await;
}

async fn an_unrepairable_lost_frame_is_never_a_silent_gap() {
    let TwoNodes { cluster, owner, channel, owning, other, mut alice_ws, .. } = two_nodes().await;
    let mut owner_ws = cluster.nodes[owning].ws(&owner.token).await;
    let state = &cluster.nodes[other].server.as_ref().unwrap().state;
    state.cluster.as_ref().unwrap().router().unwrap().lose_next_forwarded();
    for n in 0..2 {
        owner_ws.send(send_frame(channel, n)).await;
        owner_ws.expect("message_sent").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The first message's batch was lost for good: the second shows the gap, and the
    // socket is closed (4008: reconnect and resync) instead of silently missing a message.
    assert_eq!(alice_ws.expect_close(Duration::from_secs(5)).await, Some(4008));
    cluster.stop().await;
}

async fn voice_participants_on_different_nodes_signal_each_other() {
    let TwoNodes { cluster, owner, alice, channel, owning, mut alice_ws, .. } = two_nodes().await;
    // Alice's socket is on the node that does not own the channel, the owner's on the one that
    // does: each node must know who is in the voice session to relay signalling.
    let mut owner_ws = cluster.nodes[owning].ws(&owner.token).await;
    subscribe(&mut owner_ws, channel).await;
    alice_ws.send(json!({"type": "join_voice", "channel_id": channel})).await;
    assert_eq!(alice_ws.expect("voice_state_update").await["participants"], json!([alice.id]));
    owner_ws.send(json!({"type": "join_voice", "channel_id": channel})).await;
    owner_ws.expect("voice_state_update").await;
    let call = uuid::Uuid::new_v4();
    let offer = json!({"type": "rtc_offer", "target_user_id": owner.id, "session_id": call, "sdp": "v=0"});
    // The owner's join reaches Alice's node over the bus: until it has, her offer is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        alice_ws.send(offer.clone()).await;
        let mut refused = false;
        while let Some(frame) = alice_ws.next_frame(Duration::from_millis(300)).await {
            refused |= frame["type"] == "error" && frame["code"] == "forbidden";
        }
        if !refused {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the join never reached Alice's node");
    }
    assert_eq!(owner_ws.expect_eventually("rtc_offer").await["from_user_id"], json!(alice.id));
    owner_ws
        .send(json!({"type": "rtc_answer", "target_user_id": alice.id, "session_id": call, "sdp": "v=0 a"}))
        .await;
    assert_eq!(alice_ws.expect_eventually("rtc_answer").await["sdp"], "v=0 a");
    // Leaving is told too: signalling to someone who left is refused on the other node. (One
    // voice join or leave per user per 2 s.)
    tokio::time::sleep(Duration::from_millis(2100)).await;
    owner_ws.send(json!({"type": "leave_voice", "channel_id": channel})).await;
    owner_ws.expect_eventually("user_left_voice").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice_ws.send(offer).await;
    assert_eq!(alice_ws.expect_eventually("error").await["code"], "forbidden");
    cluster.stop().await;
}

async fn a_stale_owner_cannot_commit_once_its_shard_changed_hands() {
    let TwoNodes { cluster, owner, channel, owning, .. } = two_nodes().await;
    let mut owner_ws = cluster.nodes[owning].ws(&owner.token).await;
    owner_ws.send(send_frame(channel, 1)).await;
    let first = owner_ws.expect("message_sent").await["id"].clone();
    // Another node takes the shard (bumping its fencing epoch) while this one still believes it
    // owns it, as after a pause longer than the lock's keepalives.
    bump_shard_epoch(&cluster, channel).await;
    // Its actor's next commit checks the fence: refused, not acked, not stored.
    owner_ws.send(send_frame(channel, 2)).await;
    assert_eq!(owner_ws.expect("error").await["code"], "unavailable");
    let stored = cluster.nodes[owning]
        .get(&format!("/channels/{channel}/messages?before={}", uuid::Uuid::max()), &owner.token)
        .await
        .expect(200);
    assert_eq!(stored.as_array().unwrap().len(), 1, "{stored}");
    // Nor can it change what is stored: edits, reactions and deletes are fenced too.
    let changes = [
        json!({"type": "edit_message", "message_id": first, "ciphertext": [9, 9], "nonce": [9]}),
        json!({"type": "add_reaction", "message_id": first, "emoji": "👍"}),
        json!({"type": "delete_message", "message_id": first}),
    ];
    for change in changes {
        owner_ws.send(change.clone()).await;
        assert_eq!(owner_ws.expect("error").await["code"], "unavailable", "{change}");
    }
    let stored = cluster.nodes[owning]
        .get(&format!("/channels/{channel}/messages?before={}", uuid::Uuid::max()), &owner.token)
        .await
        .expect(200);
    let message = &stored[0];
    assert_eq!(message["id"], first);
    assert_eq!(message["ciphertext"], json!([1, 1, 2]), "not edited: {message}");
    assert!(message["edited_at"].is_null(), "{message}");
    assert_eq!(message["reactions"].as_array().map_or(0, Vec::len), 0, "{message}");
    cluster.stop().await;
}

/// Another node takes the shard of `id` (its fencing epoch bumped) while the owner still
/// believes it owns it, as after a pause longer than the lock's keepalives.
async fn bump_shard_epoch(cluster: &crate::common::cluster::TestCluster, id: uuid::Uuid) {
    use sea_orm::{ConnectionTrait, Database};
    let shard = palaver_actors::cluster::shards::shard_of(id) as i16;
    let db = Database::connect(&cluster.database_url).await.unwrap();
    db.execute_unprepared(&format!(
        "UPDATE channel_shards SET shard_epoch = shard_epoch + 1 WHERE shard = {shard}"
    ))
    .await
    .unwrap();
    db.close().await.ok();
}

/// Sends `send_message` with `key` as its `client_nonce` until it is acked (an `unavailable`
/// answer is retried with the same key, as a client would); returns the message id.
async fn send_until_acked(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    channel: uuid::Uuid,
    key: &str,
) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let frame = json!({"type": "send_message", "channel_id": channel, "ciphertext": key.as_bytes(),
        "nonce": [1], "message_type": "text", "client_nonce": key});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        ws.send(Message::text(frame.to_string())).await.unwrap();
        loop {
            let next = tokio::time::timeout_at(deadline, ws.next()).await.expect("an answer in time");
            let Some(Ok(Message::Text(text))) = next else { continue };
            let answer: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            match answer["type"].as_str() {
                // (An earlier attempt's ack may come too: the same id, for the same key.)
                Some("message_sent") if answer["client_nonce"] == key => {
                    return answer["id"].as_str().unwrap().to_owned();
                }
                // (A `subscribe` to a channel between owners is refused the same way.)
                Some("error") => {
                    assert_eq!(answer["code"], "unavailable", "{answer}");
                    break;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn killed_owner_is_replaced_and_no_acked_message_is_lost() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let harness = crate::common::process::ProcessHarness::new(&crate::common::Backend::Postgres(
        crate::common::postgres_url(),
    ))
    .await;
    let prefix = format!("test{}", uuid::Uuid::new_v4().simple());
    let nats = nats_url();
    let env = |id: &'static str| {
        [
            ("PALAVER_NATS_URL", nats.clone()),
            ("PALAVER_NODE_ID", id.to_owned()),
            ("PALAVER_NATS_PREFIX", prefix.clone()),
        ]
    };
    let start = |id: &'static str| {
        let env = env(id);
        let harness = &harness;
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            harness.start_with(&env).await
        }
    };
    let mut nodes = vec![start("n1").await, start("n2").await];
    let http = reqwest::Client::new();
    let settled = |base: String| {
        let http = http.clone();
        async move {
            let health: serde_json::Value =
                http.get(format!("{base}/health")).send().await.unwrap().json().await.unwrap();
            health["cluster"]["state"] == "settled" && health["cluster"]["nodes"] == 2
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(settled(nodes[0].api("")).await && settled(nodes[1].api("")).await) {
        assert!(tokio::time::Instant::now() < deadline, "the two processes did not settle");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let identity = ed25519_dalek::SigningKey::from_bytes(&crate::common::rand_bytes());
    let body = crate::common::TestApp::registration_body("alice", &identity);
    let alice: serde_json::Value =
        http.post(nodes[0].api("/auth/register")).json(&body).send().await.unwrap().json().await.unwrap();
    let token = alice["access_token"].as_str().unwrap().to_owned();
    let channel: serde_json::Value = http
        .post(nodes[0].api("/channels"))
        .bearer_auth(&token)
        .json(&json!({"name": "failover", "channel_type": "text"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let channel: uuid::Uuid = channel["id"].as_str().unwrap().parse().unwrap();
    // Which process owns the channel's shard: that one is killed, the socket is on the other.
    let owner: String = {
        use sea_orm::{ConnectionTrait, Database, Statement};
        let db = Database::connect(harness.database_url().unwrap()).await.unwrap();
        let shard = palaver_actors::cluster::shards::shard_of(channel) as i16;
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT node FROM channel_shards WHERE shard = {shard}"),
            ))
            .await
            .unwrap()
            .unwrap();
        db.close().await.ok();
        row.try_get::<String>("", "node").unwrap()
    };
    let owning = if owner == "n1" { 0 } else { 1 };
    let survivor = nodes.remove(1 - owning);
    let owner_process = nodes.remove(0);
    let connect = || async {
        let (mut ws, _) = tokio_tungstenite::connect_async(survivor.ws_url()).await.unwrap();
        ws.send(Message::text(json!({"type": "authenticate", "token": token}).to_string())).await.unwrap();
        ws.send(Message::text(json!({"type": "subscribe", "channel_ids": [channel]}).to_string()))
            .await
            .unwrap();
        ws
    };
    let mut ws = connect().await;
    // Two more sockets of hers on the survivor that only listen: one resume-capable
    // (subscribed with `since`), one like the Chatalot client (no positions).
    let listener = |since: bool| {
        let (url, token) = (survivor.ws_url(), token.clone());
        async move {
            let (stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let mut ws = crate::common::WsClient { stream };
            ws.send(json!({"type": "authenticate", "token": token})).await;
            ws.expect("authenticated").await;
            let mut subscribe = json!({"type": "subscribe", "channel_ids": [channel]});
            if since {
                subscribe["since"] = json!({});
            }
            ws.send(subscribe).await;
            ws
        }
    };
    let mut capable = listener(true).await;
    let old_epoch = capable.expect_eventually("subscribed").await["epoch"].clone();
    let mut plain = listener(false).await;
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(send_until_acked(&mut ws, channel, &format!("before-{i}")).await);
    }
    for listening in [&mut capable, &mut plain] {
        while listening.expect_eventually("new_message").await["ciphertext"] != json!(b"before-9") {}
    }
    // SIGKILL: its lock connection dies with it, the survivor takes the shard under a new epoch.
    owner_process.kill().await;
    let killed_at = tokio::time::Instant::now();
    // The sending socket's last acks could have been lost with the owner, and the plain
    // listener cannot resync in place: both are told they may have missed frames and
    // closed (4008), never left silently without them.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt;
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the sender through the dead owner is closed within 10 s");
    assert_eq!(closed, Some(4008));
    assert_eq!(plain.expect_close(Duration::from_secs(10)).await, Some(4008));
    // The resume-capable listener stays: it is told the stream restarted under a new epoch,
    // with the new owner's position, and goes on from there (resume.md, loss signals).
    let resync = loop {
        let frame = capable.next_frame(Duration::from_secs(10)).await.expect("resync_required, not a close");
        if frame["type"] == "resync_required" {
            break frame;
        }
    };
    assert_eq!(resync["channel_id"], json!(channel), "{resync}");
    assert_eq!(resync["reason"], "restarted", "{resync}");
    assert_ne!(resync["epoch"], old_epoch, "a dead owner's stream ends: {resync}");
    // The sender's client reconnects and sends again.
    let mut ws = connect().await;
    acked.push(send_until_acked(&mut ws, channel, "after-0").await);
    let unavailable_for = killed_at.elapsed();
    assert!(unavailable_for < Duration::from_secs(10), "sends acked again only after {unavailable_for:?}");
    for i in 1..10 {
        acked.push(send_until_acked(&mut ws, channel, &format!("after-{i}")).await);
    }
    // Everything sent after the resync reaches the listener live, in order, in the new epoch.
    let mut position = resync["cseq"].as_u64().expect("a cseq");
    for i in 0..10 {
        let live = capable.expect_eventually("new_message").await;
        assert_eq!(live["ciphertext"], json!(format!("after-{i}").as_bytes()), "{live}");
        let cseq = live["cseq"].as_u64().expect("a cseq");
        assert!(cseq > position, "{live} after position {position}");
        position = cseq;
    }
    // Every acked message is stored exactly once (retries with the same key were not doubled).
    let page: Vec<serde_json::Value> = http
        .get(survivor.api(&format!("/channels/{channel}/messages?limit=100")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut stored: Vec<String> = page.iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    stored.reverse();
    assert_eq!(stored, acked);
    survivor.kill().await;
}

/// Sends until the channel's (new) owner acks: refused `unavailable` until it has taken the
/// shard. Returns the ack.
async fn send_until_owned(ws: &mut crate::common::WsClient, channel: uuid::Uuid, n: u8) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        ws.send(send_frame(channel, n)).await;
        match ws.next_frame(Duration::from_secs(3)).await {
            Some(f) if f["type"] == "message_sent" => return f,
            other => assert!(tokio::time::Instant::now() < deadline, "no ack after the move: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A socket subscribed (without positions) to a channel whose owner leaves gracefully stays
/// open and keeps receiving: the leaving owner hands the channel and its subscribers on.
async fn subscribers_of_a_leaving_owner_follow_the_channel_to_the_new_one() {
    let TwoNodes { mut cluster, owner, channel, owning, mut alice_ws, .. } = two_nodes().await;
    cluster.stop_node(owning).await;
    let survivor = &cluster.nodes[0];
    let mut owner_ws = survivor.ws(&owner.token).await;
    let ack = send_until_owned(&mut owner_ws, channel, 6).await;
    // No close, no `out_of_sync`, no resubscribe: the next frame is the message.
    let live = alice_ws.expect("new_message").await;
    assert_eq!((&live["id"], &live["ciphertext"]), (&ack["id"], &json!([6, 1, 2])));
    assert_eq!(live["cseq"], ack["cseq"]);
    alice_ws.expect_no("error", Duration::from_millis(300)).await;
    cluster.stop().await;
}

/// A node that leaves hands its channels' streams over (a planned move, unlike a crash): the
/// positions go on in the same epoch on the subscriber's socket, and a client that reconnects
/// resumes through the new owner with `recovered: true`.
async fn a_leaving_owner_hands_its_channel_streams_to_the_next_one() {
    let TwoNodes { mut cluster, owner, alice, channel, owning, mut alice_ws, .. } = two_nodes().await;
    alice_ws.send(json!({"type": "subscribe", "channel_ids": [channel], "since": {}})).await;
    let first = alice_ws.expect_eventually("subscribed").await;
    let epoch = first["epoch"].as_str().expect("an epoch").to_owned();
    let mut owner_ws = cluster.nodes[owning].ws(&owner.token).await;
    let mut last = 0;
    for n in 1..=3 {
        owner_ws.send(send_frame(channel, n)).await;
        last = owner_ws.expect_eventually("message_sent").await["cseq"].as_u64().expect("a cseq");
        assert_eq!(alice_ws.expect_eventually("new_message").await["cseq"], json!(last));
    }
    cluster.stop_node(owning).await;

    let survivor = &cluster.nodes[0];
    let mut owner_ws = survivor.ws(&owner.token).await;
    let next = send_until_owned(&mut owner_ws, channel, 4).await["cseq"].as_u64().expect("a cseq");
    assert_eq!(next, last + 1, "positions go on from where they were");
    // The open socket: the very next position, no `resync_required`, no `subscribed`.
    let live = alice_ws.expect("new_message").await;
    assert_eq!((live["cseq"].as_u64(), &live["ciphertext"]), (Some(next), &json!([4, 1, 2])));
    alice_ws.expect_no("resync_required", Duration::from_millis(300)).await;

    // A client that reconnects with the position it held before the move: same epoch, the
    // one message since replayed from the new owner.
    let mut again = survivor.ws(&alice.token).await;
    let since = json!({ channel.to_string(): {"epoch": epoch, "cseq": last} });
    again.send(json!({"type": "subscribe", "channel_ids": [channel], "since": since})).await;
    let resumed = again.expect_eventually("subscribed").await;
    assert_eq!(resumed["epoch"], json!(epoch), "a planned move keeps the epoch: {resumed}");
    assert_eq!(
        (&resumed["cseq"], &resumed["recovered"], &resumed["replayed"]),
        (&json!(next), &json!(true), &json!(1))
    );
    assert_eq!(again.expect("new_message").await["cseq"], json!(next));

    // A position from before the move is not in the new owner's ring: not recoverable
    // (the client refetches), never a silent gap.
    let mut late_ws = survivor.ws(&alice.token).await;
    let older = json!({ channel.to_string(): {"epoch": epoch, "cseq": last - 1} });
    late_ws.send(json!({"type": "subscribe", "channel_ids": [channel], "since": older})).await;
    let answer = late_ws.expect_eventually("subscribed").await;
    assert_eq!((answer["epoch"].as_str(), &answer["recovered"]), (Some(epoch.as_str()), &json!(false)));
    cluster.stop().await;
}

/// A node joins and takes about a third of the shards from two live nodes: every socket
/// subscribed to a moved channel — on the old owner itself and behind another node — stays
/// open and gets the next message at the next position.
async fn subscribers_stay_attached_when_a_joining_node_takes_their_channel() {
    let mut cluster = spawn_cluster(2).await;
    cluster.settle(Duration::from_secs(15)).await;
    let owner = cluster.nodes[0].register("owner").await;
    let alice = cluster.nodes[0].register("alice").await;
    let mut channels = Vec::new();
    for _ in 0..12 {
        channels.push(fixtures::channel_with(&cluster.nodes[0], &owner, &[&alice]).await);
    }
    let mut sockets = [cluster.nodes[0].ws(&alice.token).await, cluster.nodes[1].ws(&alice.token).await];
    for ws in sockets.iter_mut() {
        ws.send(json!({"type": "subscribe", "channel_ids": channels, "since": {}})).await;
        for _ in &channels {
            ws.expect_eventually("subscribed").await;
        }
    }
    let mut owner_ws = cluster.nodes[0].ws(&owner.token).await;
    let mut last = std::collections::HashMap::new();
    for (n, channel) in channels.iter().enumerate() {
        owner_ws.send(send_frame(*channel, n as u8)).await;
        let ack = owner_ws.expect_eventually("message_sent").await;
        last.insert(*channel, ack["cseq"].as_u64().expect("a cseq"));
        for ws in sockets.iter_mut() {
            assert_eq!(ws.expect_eventually("new_message").await["cseq"], ack["cseq"]);
        }
    }
    let before = cluster.owners().await;
    cluster.start_node("n3").await.expect("n3 joins");
    cluster.settle(Duration::from_secs(15)).await;
    let after = cluster.owners().await;
    let shard = |c: &uuid::Uuid| palaver_actors::cluster::shards::shard_of(*c) as usize;
    let moved: Vec<uuid::Uuid> =
        channels.iter().copied().filter(|c| before[shard(c)].1 != after[shard(c)].1).collect();
    assert!(!moved.is_empty(), "no channel moved to the new node (12 channels, ~1/3 of shards move)");
    for (n, channel) in moved.iter().enumerate() {
        let ack = send_until_owned(&mut owner_ws, *channel, 100 + n as u8).await;
        assert_eq!(ack["cseq"].as_u64(), Some(last[channel] + 1), "the stream goes on");
        for ws in sockets.iter_mut() {
            let live = ws.expect("new_message").await;
            assert_eq!((&live["id"], &live["cseq"]), (&ack["id"], &ack["cseq"]));
        }
    }
    for ws in sockets.iter_mut() {
        ws.expect_no("resync_required", Duration::from_millis(300)).await;
    }
    cluster.stop().await;
}

/// A community's members, roles and bans are held by one actor on its shard's owner, whatever
/// node a command reaches: a moderator demoted through one node cannot still kick through
/// another (each node used to keep its own copy, and the other node's copy still said
/// "moderator").
async fn community_commands_run_on_one_owner_whatever_node_they_reach() {
    let cluster = spawn_cluster(2).await;
    cluster.settle(Duration::from_secs(15)).await;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let owner = n1.register("owner").await;
    let moderator = n1.register("mod").await;
    let amy = n1.register("amy").await;
    let ben = n1.register("ben").await;
    let cid = fixtures::create(n1, &owner, "Garden").await;
    for user in [&moderator, &amy, &ben] {
        fixtures::join(n1, &owner, cid, user).await;
    }
    let kick = |user: &crate::common::TestUser| format!("/communities/{cid}/members/{}", user.id);
    fixtures::set_role(n1, &owner, cid, &moderator, "moderator").await;
    // The moderator kicks through the other node: allowed.
    n2.delete(&kick(&amy), &moderator.token).await.expect(200);
    // Demoted through the first node, refused through either.
    fixtures::set_role(n1, &owner, cid, &moderator, "member").await;
    assert_eq!(n2.delete(&kick(&ben), &moderator.token).await.expect_error(403), "forbidden");
    assert_eq!(n1.delete(&kick(&ben), &moderator.token).await.expect_error(403), "forbidden");
    // A ban made through one node is known through the other at once: the invite is refused.
    n2.post(&format!("/communities/{cid}/bans/{}", ben.id), &owner.token, json!({})).await.expect(200);
    let code = fixtures::invite(n1, &owner, cid).await;
    n1.post(&format!("/community-invites/{code}/accept"), &ben.token, json!({})).await.expect_error(403);
    // Bad input is refused by the owner as on one node.
    let unknown = format!("/communities/{cid}/members/{}", uuid::Uuid::now_v7());
    assert_eq!(n2.delete(&unknown, &owner.token).await.expect_error(404), "not_found");
    let members = n2.get(&format!("/communities/{cid}/members"), &owner.token).await.expect(200);
    let ids: Vec<String> =
        members.as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap().to_owned()).collect();
    assert!(ids.contains(&moderator.id.to_string()) && !ids.contains(&amy.id.to_string()));
    assert!(!ids.contains(&ben.id.to_string()));
    cluster.stop().await;
}

/// A community's owner that no longer holds the shard's epoch (another node took it) changes
/// nothing: its actor's writes check the fence, the caller is told `unavailable`.
async fn a_stale_community_owner_cannot_write() {
    let cluster = spawn_cluster(2).await;
    cluster.settle(Duration::from_secs(15)).await;
    let n1 = &cluster.nodes[0];
    let owner = n1.register("owner").await;
    let amy = n1.register("amy").await;
    let cid = fixtures::create(n1, &owner, "Garden").await;
    fixtures::join(n1, &owner, cid, &amy).await;
    let owning = &cluster.nodes[owner_index(&cluster, cid).await];
    fixtures::set_role(owning, &owner, cid, &amy, "moderator").await;
    bump_shard_epoch(&cluster, cid).await;
    let role = format!("/communities/{cid}/members/{}/role", amy.id);
    let refused = owning.put(&role, &owner.token, json!({"role": "admin"})).await;
    assert_eq!(refused.expect_error(503), "unavailable");
    let kick = format!("/communities/{cid}/members/{}", amy.id);
    assert_eq!(owning.delete(&kick, &owner.token).await.expect_error(503), "unavailable");
    let members = owning.get(&format!("/communities/{cid}/members"), &owner.token).await.expect(200);
    let amy_row = members.as_array().unwrap().iter().find(|m| m["user_id"] == amy.id.to_string()).cloned();
    assert_eq!(amy_row.expect("still a member")["role"], "moderator");
    cluster.stop().await;
}

mod cluster_suite {
    cluster_tests!(
        message_sent_on_one_node_reaches_subscribers_on_every_node,
        three_senders_on_three_nodes_are_seen_in_one_order_everywhere,
        changes_made_over_rest_on_any_node_reach_every_subscriber_in_order,
        a_nodes_sessions_get_a_channels_frames_exactly_as_on_the_owner,
        kicked_user_on_another_node_stops_receiving_at_once,
        a_ban_made_on_another_node_is_ordered_against_the_users_sends,
        community_commands_run_on_one_owner_whatever_node_they_reach,
        a_stale_community_owner_cannot_write,
        the_session_cap_counts_sessions_on_every_node,
        a_lost_forwarded_frame_is_repaired_from_the_owner,
        an_unrepairable_lost_frame_is_never_a_silent_gap,
        one_subscribe_to_many_channels_of_another_node_stays_in_one_stream,
        subscribers_of_a_leaving_owner_follow_the_channel_to_the_new_one,
        a_leaving_owner_hands_its_channel_streams_to_the_next_one,
        subscribers_stay_attached_when_a_joining_node_takes_their_channel,
        voice_participants_on_different_nodes_signal_each_other,
        killed_owner_is_replaced_and_no_acked_message_is_lost,
        a_stale_owner_cannot_commit_once_its_shard_changed_hands,
        presence_crosses_nodes_and_a_silent_nodes_users_go_offline,
        revocations_made_on_one_node_reach_every_node,
        user_and_instance_frames_reach_sockets_on_every_node,
        settings_changed_on_one_node_apply_on_every_node,
        an_owner_whose_lock_connection_dies_loses_its_shards_to_a_new_epoch,
        a_node_cut_from_nats_detaches_and_its_shards_move,
        three_nodes_started_together_share_every_shard_once,
        a_node_that_leaves_hands_its_shards_to_the_others,
        a_node_that_joins_takes_about_a_quarter,
        duplicate_node_id_refuses_to_start,
        cluster_on_sqlite_refuses_to_start,
        unreachable_nats_refuses_to_start,
        nodes_with_different_keys_refuse_to_join,
    );
}
