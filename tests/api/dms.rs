//! `/dms`: opening a DM (once per pair, also under concurrency), the refusals (self, unknown,
//! blocked, no shared community — instance owner exempt) and the list.

use palaver_entity::{blocked_users, channel_members, channels, dm_pairs};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{community, db, live, send_text, users};
use crate::common::{Backend, TestApp, TestUser, spawn_app};

async fn open(app: &TestApp, from: &TestUser, to: &TestUser) -> Value {
    app.post("/dms", &from.token, json!({"target_user_id": to.id})).await.expect(200)
}

async fn post(app: &TestApp, from: &TestUser, body: Value) -> crate::common::Reply {
    app.post("/dms", &from.token, body).await
}

async fn dm_channel_count(app: &TestApp) -> u64 {
    channels::Entity::find().filter(channels::Column::ChannelType.eq("dm")).count(db(app)).await.unwrap()
}

async fn opening_a_dm_is_idempotent_and_listed(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    community(&app, &[alice.id, bob.id, carol.id]).await;

    let dm = open(&app, alice, bob).await;
    let channel = &dm["channel"];
    assert_eq!(channel["channel_type"], "dm");
    assert!(channel["name"].is_null() && channel["group_id"].is_null() && channel["topic"].is_null());
    assert_eq!(
        (channel["read_only"].as_bool(), channel["slow_mode_seconds"].as_i64()),
        (Some(false), Some(0))
    );
    assert_eq!((channel["discoverable"].as_bool(), channel["archived"].as_bool()), (Some(true), Some(false)));
    assert!(channel.get("voice_background").is_none());
    assert_eq!(dm["other_user"]["id"], bob.id.to_string());
    assert_eq!(dm["other_user"]["username"], "bob");
    assert_eq!(dm["other_user"]["display_name"], "bob display");
    let id = channel["id"].as_str().unwrap().to_string();

    assert_eq!(open(&app, alice, bob).await["channel"]["id"], id, "the same DM again");
    let from_bob = open(&app, bob, alice).await;
    assert_eq!(from_bob["channel"]["id"], id, "either direction");
    assert_eq!(from_bob["other_user"]["id"], alice.id.to_string());
    assert_eq!(dm_channel_count(&app).await, 1);

    let second = open(&app, alice, carol).await;
    let list = app.get("/dms", &alice.token).await.expect(200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["channel"]["id"], second["channel"]["id"], "newest first");
    assert_eq!(list[1]["channel"]["id"], id);
    assert_eq!(list[1]["other_user"]["username"], "bob");
    let bobs = app.get("/dms", &bob.token).await.expect(200);
    assert_eq!(bobs.as_array().unwrap().len(), 1);
    assert_eq!(bobs[0]["other_user"]["username"], "alice");

    // A DM is a channel both members see and read; nobody else may join or read it.
    let channels = app.get("/channels", &bob.token).await.expect(200);
    assert_eq!(channels[0]["id"], id);
    let history = format!("/channels/{id}/messages");
    app.get(&history, &bob.token).await.expect(200);
    assert_eq!(app.get(&history, &carol.token).await.expect_error(403), "forbidden");
    assert_eq!(
        app.post(&format!("/channels/{id}/join"), &carol.token, json!({})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.post(&format!("/channels/{id}/leave"), &bob.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        channel_members::Entity::find()
            .filter(channel_members::Column::ChannelId.eq(id.parse::<Uuid>().unwrap()))
            .count(db(&app))
            .await
            .unwrap(),
        2
    );

    // Messages flow: the recipient learns of the DM with its first message.
    let dm_id: Uuid = id.parse().unwrap();
    let mut alice_ws = live(&app, alice, dm_id).await;
    let mut bob_ws = app.ws(&bob.token).await;
    send_text(&mut alice_ws, dm_id, "hi bob").await;
    assert_eq!(bob_ws.expect("new_dm_channel").await["channel_id"], id);
    assert_eq!(bob_ws.expect("new_message").await["ciphertext"], json!(b"hi bob".to_vec()));
    assert_eq!(app.get(&history, &bob.token).await.expect(200)[0]["ciphertext"], json!(b"hi bob".to_vec()));
    assert_eq!(app.get("/dms", &carol.token).await.expect(200)[0]["other_user"]["username"], "alice");
    app.stop().await;
}

async fn dm_refusals_write_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob", "carol", "stranger"]).await;
    let (alice, bob, carol, stranger) = (&u[0], &u[1], &u[2], &u[3]);
    community(&app, &[alice.id, bob.id, carol.id]).await;

    assert_eq!(
        post(&app, alice, json!({"target_user_id": alice.id})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        post(&app, alice, json!({"target_user_id": Uuid::now_v7()})).await.expect_error(404),
        "not_found"
    );
    assert_eq!(
        post(&app, alice, json!({"target_user_id": "bob"})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(post(&app, alice, json!({})).await.expect_error(400), "validation_error");
    assert_eq!(
        post(&app, alice, json!({"target_user_id": stranger.id})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        post(&app, stranger, json!({"target_user_id": alice.id})).await.expect_error(403),
        "forbidden"
    );

    // A block in either direction refuses.
    blocked_users::ActiveModel {
        blocker_id: Set(bob.id),
        blocked_id: Set(alice.id),
        created_at: Set(palaver_entity::now()),
    }
    .insert(db(&app))
    .await
    .unwrap();
    assert_eq!(
        post(&app, alice, json!({"target_user_id": bob.id})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        post(&app, bob, json!({"target_user_id": alice.id})).await.expect_error(400),
        "validation_error"
    );
    let anon =
        app.request(reqwest::Method::POST, "/dms", None, Some(json!({"target_user_id": bob.id}))).await;
    assert_eq!(anon.expect_error(401), "unauthorized");
    assert_eq!(app.request(reqwest::Method::GET, "/dms", None, None).await.expect_error(401), "unauthorized");
    assert_eq!(dm_channel_count(&app).await, 0, "nothing half-written");
    assert_eq!(dm_pairs::Entity::find().count(db(&app)).await.unwrap(), 0);
    assert_eq!(app.get("/dms", &alice.token).await.expect(200), json!([]));

    // The instance owner is exempt from the shared-community rule, in both directions.
    let to_root = open(&app, stranger, &root).await;
    assert_eq!(to_root["other_user"]["id"], root.id.to_string());
    assert_eq!(open(&app, &root, stranger).await["channel"]["id"], to_root["channel"]["id"]);
    open(&app, &root, carol).await;
    assert_eq!(dm_channel_count(&app).await, 2);
    app.stop().await;
}

async fn concurrent_opens_make_one_dm(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    community(&app, &[alice.id, bob.id]).await;
    let attempts = (0..8).map(|i| {
        let (from, to) = if i % 2 == 0 { (alice, bob) } else { (bob, alice) };
        app.post("/dms", &from.token, json!({"target_user_id": to.id}))
    });
    let replies = futures_util::future::join_all(attempts).await;
    let ids: std::collections::HashSet<String> =
        replies.into_iter().map(|r| r.expect(200)["channel"]["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 1, "one DM for the pair: {ids:?}");
    assert_eq!(dm_channel_count(&app).await, 1, "losers' channels rolled back");
    assert_eq!(channel_members::Entity::find().count(db(&app)).await.unwrap(), 2);
    app.stop().await;
}

crate::both_backends!(
    opening_a_dm_is_idempotent_and_listed,
    dm_refusals_write_nothing,
    concurrent_opens_make_one_dm
);
