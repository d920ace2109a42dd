//! Fixtures shared by the test modules: rows written straight into the database (fast set-up
//! that depends only on the schema), set-ups through the public API, and socket helpers.
//! A module's own helpers stay in that module; anything two modules need lives here.

use std::time::Duration;

use palaver_entity::{
    audit_log, channel_members, channels, communities, community_members, group_members, groups, messages,
};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Backend, TestApp, TestUser, WsClient, spawn_app_with};

// ---------------------------------------------------------------------------------------
// The database behind the server

pub fn db(app: &TestApp) -> &DatabaseConnection {
    &app.server.as_ref().expect("server running").state.db
}

/// Inserts a message row directly (fast history); `id` must grow with each call for order.
pub async fn insert_message(app: &TestApp, id: Uuid, channel: Uuid, sender: Option<Uuid>, payload: &[u8]) {
    messages::ActiveModel {
        id: Set(id),
        channel_id: Set(channel),
        sender_id: Set(sender),
        ciphertext: Set(payload.to_vec()),
        nonce: Set(vec![7]),
        message_type: Set("text".into()),
        reply_to_id: Set(None),
        sender_key_id: Set(None),
        thread_id: Set(None),
        edited_at: Set(None),
        deleted_at: Set(None),
        quarantined_at: Set(None),
        expires_at: Set(None),
        webhook_content: Set(None),
        created_at: Set(palaver_entity::now()),
        client_nonce: Set(None),
    }
    .insert(db(app))
    .await
    .expect("insert message");
    // Written behind the server's back: the channel actor's held history pages are stale.
    app.server.as_ref().expect("server running").state.hub.history_changed(channel);
}

/// `n` ids in increasing order, newer than now and than every id handed out before.
pub fn ordered_ids(n: usize) -> Vec<Uuid> {
    static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let base = Uuid::now_v7().as_u128().max(*last + 1);
    let ids: Vec<Uuid> = (0..n).map(|i| Uuid::from_u128(base + i as u128)).collect();
    *last = base + n as u128;
    ids
}

// ---------------------------------------------------------------------------------------
// People

/// Registers the instance owner first (the first account owns the instance), so the users a
/// test registers afterwards are ordinary.
pub async fn users(app: &TestApp, names: &[&str]) -> (TestUser, Vec<TestUser>) {
    let root = app.register("root").await;
    let mut out = Vec::new();
    for name in names {
        out.push(app.register(name).await);
    }
    (root, out)
}

// ---------------------------------------------------------------------------------------
// Rows written directly (schema-only set-up)

/// Puts `members` into a new community (rows go in directly; the first member owns it).
pub async fn community(app: &TestApp, members: &[Uuid]) -> Uuid {
    let db = db(app);
    let id = Uuid::now_v7();
    let now = palaver_entity::now();
    communities::ActiveModel {
        id: Set(id),
        name: Set(format!("community {}", &id.simple().to_string()[..8])),
        description: Set(None),
        icon_url: Set(None),
        banner_url: Set(None),
        owner_id: Set(members[0]),
        who_can_create_groups: Set("admin".into()),
        who_can_create_invites: Set("admin".into()),
        discoverable: Set(false),
        community_theme: Set(None),
        welcome_message: Set(None),
        created_at: Set(now),
    }
    .insert(db)
    .await
    .expect("insert community");
    for (i, user) in members.iter().enumerate() {
        community_members::ActiveModel {
            community_id: Set(id),
            user_id: Set(*user),
            role: Set(if i == 0 { "owner" } else { "member" }.into()),
            nickname: Set(None),
            joined_at: Set(now),
        }
        .insert(db)
        .await
        .expect("insert community member");
    }
    id
}

/// A group in `community_id` with `members` (the first owns it).
pub async fn group(app: &TestApp, community_id: Uuid, members: &[Uuid]) -> Uuid {
    let db = db(app);
    let id = Uuid::now_v7();
    let now = palaver_entity::now();
    groups::ActiveModel {
        id: Set(id),
        community_id: Set(community_id),
        name: Set("group".into()),
        description: Set(None),
        icon_url: Set(None),
        banner_url: Set(None),
        accent_color: Set(None),
        owner_id: Set(members[0]),
        visibility: Set("public".into()),
        discoverable: Set(true),
        assigned_member_id: Set(None),
        allow_invites: Set(true),
        created_at: Set(now),
    }
    .insert(db)
    .await
    .expect("insert group");
    for (i, user) in members.iter().enumerate() {
        group_members::ActiveModel {
            group_id: Set(id),
            user_id: Set(*user),
            role: Set(if i == 0 { "owner" } else { "member" }.into()),
            joined_at: Set(now),
        }
        .insert(db)
        .await
        .expect("insert group member");
    }
    id
}

/// A standalone text channel with `members` (the first is its owner), created directly in
/// the database so these tests depend only on the live side.
pub async fn channel_in_db(app: &TestApp, members: &[&TestUser]) -> Uuid {
    let db = &app.server.as_ref().unwrap().state.db;
    let id = Uuid::now_v7();
    channels::ActiveModel {
        id: Set(id),
        name: Set(Some("general".into())),
        channel_type: Set("text".into()),
        topic: Set(None),
        created_by: Set(Some(members[0].id)),
        group_id: Set(None),
        read_only: Set(false),
        slow_mode_seconds: Set(0),
        discoverable: Set(true),
        archived: Set(false),
        voice_background: Set(None),
        message_ttl_seconds: Set(None),
        created_at: Set(palaver_entity::now()),
    }
    .insert(db)
    .await
    .unwrap();
    for (i, member) in members.iter().enumerate() {
        channel_members::ActiveModel {
            channel_id: Set(id),
            user_id: Set(member.id),
            role: Set(if i == 0 { "owner" } else { "member" }.into()),
            joined_at: Set(palaver_entity::now()),
        }
        .insert(db)
        .await
        .unwrap();
    }
    id
}

// ---------------------------------------------------------------------------------------
// Set-ups through the public API

/// A server where anyone may create communities.
pub async fn open_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |c| c.open_community_creation = true).await
}

/// `POST /communities` by `owner`; returns the id.
pub async fn create(app: &TestApp, owner: &TestUser, name: &str) -> Uuid {
    let c = app.post("/communities", &owner.token, json!({"name": name})).await.expect(200);
    c["id"].as_str().unwrap().parse().unwrap()
}

/// An invite of `cid` made by `by` (unlimited, never expires); returns its code.
pub async fn invite(app: &TestApp, by: &TestUser, cid: Uuid) -> String {
    let inv = app.post(&format!("/communities/{cid}/invites"), &by.token, json!({})).await.expect(200);
    inv["code"].as_str().unwrap().to_string()
}

/// `user` joins `cid` through a fresh invite made by `by`.
pub async fn join(app: &TestApp, by: &TestUser, cid: Uuid, user: &TestUser) {
    let code = invite(app, by, cid).await;
    app.post(&format!("/community-invites/{code}/accept"), &user.token, json!({})).await.expect(200);
}

/// Sets a member's community role (by the owner).
pub async fn set_role(app: &TestApp, owner: &TestUser, cid: Uuid, user: &TestUser, role: &str) {
    app.put(&format!("/communities/{cid}/members/{}/role", user.id), &owner.token, json!({"role": role}))
        .await
        .expect(200);
}

/// A public group row in `cid` owned by `owner` (the group routes live elsewhere).
pub async fn public_group(app: &TestApp, cid: Uuid, owner: Uuid, visibility: &str) -> Uuid {
    let id = Uuid::now_v7();
    groups::ActiveModel {
        id: Set(id),
        community_id: Set(cid),
        name: Set(format!("group {visibility}")),
        description: Set(None),
        icon_url: Set(None),
        banner_url: Set(None),
        accent_color: Set(None),
        owner_id: Set(owner),
        visibility: Set(visibility.into()),
        discoverable: Set(true),
        assigned_member_id: Set(None),
        allow_invites: Set(true),
        created_at: Set(palaver_entity::now()),
    }
    .insert(db(app))
    .await
    .expect("insert group");
    group_members::ActiveModel {
        group_id: Set(id),
        user_id: Set(owner),
        role: Set("owner".into()),
        joined_at: Set(palaver_entity::now()),
    }
    .insert(db(app))
    .await
    .expect("insert group owner");
    id
}

/// A text channel in `group` created through `POST /channels` (creator = channel owner).
pub async fn group_channel(app: &TestApp, creator: &TestUser, group: Uuid, discoverable: bool) -> Uuid {
    let body =
        json!({"name": "general", "channel_type": "text", "group_id": group, "discoverable": discoverable});
    let c = app.post("/channels", &creator.token, body).await.expect(200);
    c["id"].as_str().unwrap().parse().unwrap()
}

pub async fn audit_count(app: &TestApp, action: &str) -> u64 {
    audit_log::Entity::find().filter(audit_log::Column::Action.eq(action)).count(db(app)).await.unwrap()
}

/// `POST /channels` (text, standalone) by `owner`; returns the id.
pub async fn new_channel(app: &TestApp, owner: &TestUser, name: &str) -> Uuid {
    let c =
        app.post("/channels", &owner.token, json!({"name": name, "channel_type": "text"})).await.expect(200);
    c["id"].as_str().unwrap().parse().unwrap()
}

/// A channel owned by `owner` that every one of `others` has joined.
pub async fn channel_with(app: &TestApp, owner: &TestUser, others: &[&TestUser]) -> Uuid {
    let id = new_channel(app, owner, "general").await;
    for user in others {
        app.post(&format!("/channels/{id}/join"), &user.token, json!({})).await.expect(200);
    }
    id
}

/// A community owned by `owner` with one public group and a discoverable channel that every
/// one of `members` joins through an invite; returns (community, group, channel).
pub async fn community_with_channel(
    app: &TestApp,
    owner: &TestUser,
    members: &[&TestUser],
) -> (Uuid, Uuid, Uuid) {
    let cid = create(app, owner, "Garden").await;
    let group = public_group(app, cid, owner.id, "public").await;
    let channel = group_channel(app, owner, group, true).await;
    for user in members {
        join(app, owner, cid, user).await;
    }
    (cid, group, channel)
}

// ---------------------------------------------------------------------------------------
// Sockets

/// Subscribes and waits until the server has processed it (a ping answered after it).
pub async fn subscribe(ws: &mut WsClient, channel: Uuid) {
    ws.send(json!({"type": "subscribe", "channel_ids": [channel]})).await;
    sync(ws).await;
}

/// Round trip: every frame sent before has been handled when this returns.
pub async fn sync(ws: &mut WsClient) {
    ws.send(json!({"type": "ping", "timestamp": 42})).await;
    let pong = ws.expect("pong").await;
    assert_eq!(pong["timestamp"], 42);
}

/// A socket for `user`, subscribed to `channel`.
pub async fn live(app: &TestApp, user: &TestUser, channel: Uuid) -> WsClient {
    let mut ws = app.ws(&user.token).await;
    subscribe(&mut ws, channel).await;
    ws
}

/// Sends a text message over the socket; returns the `message_sent` ack.
pub async fn send_text(ws: &mut WsClient, channel: Uuid, text: &str) -> Value {
    ws.send(json!({
        "type": "send_message",
        "channel_id": channel,
        "ciphertext": text.as_bytes(),
        "nonce": [1, 2, 3],
        "message_type": "text",
    }))
    .await;
    ws.expect("message_sent").await
}

/// Asserts that nothing but heartbeats and presence arrives within `wait`.
pub async fn expect_quiet(ws: &mut WsClient, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Some(frame) =
        ws.next_frame(deadline.saturating_duration_since(tokio::time::Instant::now())).await
    {
        let kind = frame["type"].as_str().unwrap_or_default();
        assert!(matches!(kind, "pong" | "presence_update" | "presence_bulk"), "unexpected frame {frame}");
    }
}

pub async fn subscribed(app: &TestApp, user: &TestUser, channel: Uuid) -> WsClient {
    subscribed_with(app, &user.token, channel).await
}

/// A socket authenticated with `token` and subscribed to `channel`.
pub async fn subscribed_with(app: &TestApp, token: &str, channel: Uuid) -> WsClient {
    let mut ws = app.ws(token).await;
    ws.send(json!({"type": "subscribe", "channel_ids": [channel]})).await;
    // Subscribing has no ack; a ping round trip proves the subscribe frame was processed.
    ws.send(json!({"type": "ping", "timestamp": 7})).await;
    let pong = ws.expect("pong").await;
    assert_eq!(pong["timestamp"], 7);
    ws
}

pub fn send_frame(channel: Uuid, text: &str) -> Value {
    json!({"type": "send_message", "channel_id": channel, "ciphertext": text.as_bytes(), "nonce": [1, 2, 3], "message_type": "text"})
}
