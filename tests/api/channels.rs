//! `/channels/*`: create / list / get / patch, join and leave, members and moderation
//! (role, kick, ban, unban, transfer), unread counts, read cursors and sender keys — with
//! the live effects the wire names (channel_updated, member_role_updated, member_kicked …).

use std::time::Duration;

use palaver_entity::{audit_log, channel_bans, channels, messages, sender_keys};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{
    channel_with, community, db, expect_quiet, group, insert_message, live, new_channel, ordered_ids,
    send_text, subscribe, users,
};
use crate::common::{Backend, TestApp, TestUser, spawn_app};

// ---------------------------------------------------------------------------------------
// Helpers shared with messages.rs and dms.rs

fn ids_of(list: &Value) -> Vec<String> {
    list.as_array().expect("array").iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
}

fn member_roles(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|m| (m["username"].as_str().unwrap().to_string(), m["role"].as_str().unwrap().to_string()))
        .collect()
}

async fn audit_count(app: &TestApp, action: &str) -> u64 {
    audit_log::Entity::find().filter(audit_log::Column::Action.eq(action)).count(db(app)).await.unwrap()
}

// ---------------------------------------------------------------------------------------
// Create, list, get

async fn create_list_and_get_channels(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);

    let c = app
        .post("/channels", &alice.token, json!({"name": "  general ", "channel_type": "text", "topic": "hi"}))
        .await
        .expect(200);
    assert_eq!(c["name"], "general");
    assert_eq!(c["channel_type"], "text");
    assert_eq!(c["topic"], "hi");
    assert_eq!(c["created_by"], alice.id.to_string());
    assert!(c["group_id"].is_null());
    assert_eq!(c["read_only"], false);
    assert_eq!(c["slow_mode_seconds"], 0);
    assert_eq!(c["discoverable"], true);
    assert_eq!(c["archived"], false);
    assert!(c.get("voice_background").is_none(), "omitted when null: {c}");
    assert!(c.get("message_ttl_seconds").is_none());
    assert!(c["created_at"].as_str().unwrap().ends_with("+00:00"));
    let id = c["id"].as_str().unwrap();

    let v = app
        .post(
            "/channels",
            &alice.token,
            json!({"name": "gallery", "channel_type": "gallery", "discoverable": false}),
        )
        .await
        .expect(200);
    assert_eq!(v["discoverable"], false);
    assert!(v["topic"].is_null());

    let listed = ids_of(&app.get("/channels", &alice.token).await.expect(200));
    assert_eq!(listed, vec![id.to_string(), v["id"].as_str().unwrap().to_string()], "oldest first");
    assert_eq!(app.get("/channels", &bob.token).await.expect(200), json!([]));

    assert_eq!(app.get(&format!("/channels/{id}"), &alice.token).await.expect(200), c);
    assert_eq!(app.get(&format!("/channels/{id}"), &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(
        app.get(&format!("/channels/{}", Uuid::now_v7()), &alice.token).await.expect_error(404),
        "not_found"
    );
    assert_eq!(app.get("/channels/not-a-uuid", &alice.token).await.expect_error(400), "validation_error");
    let no_token = app.request(reqwest::Method::GET, "/channels", None, None).await;
    assert_eq!(no_token.expect_error(401), "unauthorized");
    let no_token = app.request(
        reqwest::Method::POST,
        "/channels",
        None,
        Some(json!({"name": "x", "channel_type": "text"})),
    );
    assert_eq!(no_token.await.expect_error(401), "unauthorized");
    app.stop().await;
}

async fn create_channel_rejects_bad_input_and_foreign_groups(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    for body in [
        json!({"name": " ", "channel_type": "text"}),
        json!({"name": "x".repeat(65), "channel_type": "text"}),
        json!({"name": "ok", "channel_type": "dm"}),
        json!({"name": "ok", "channel_type": "text", "topic": "t".repeat(513)}),
        json!({"channel_type": "text"}),
        json!({"name": 5, "channel_type": "text"}),
    ] {
        assert_eq!(
            app.post("/channels", &alice.token, body.clone()).await.expect_error(400),
            "validation_error",
            "{body}"
        );
    }
    assert_eq!(app.get("/channels", &alice.token).await.expect(200), json!([]), "nothing half-written");
    assert_eq!(channels::Entity::find().count(db(&app)).await.unwrap(), 0);

    // Group channels: the group must exist and the caller be in its community.
    let body = |g: Uuid| json!({"name": "g", "channel_type": "voice", "group_id": g});
    assert_eq!(
        app.post("/channels", &alice.token, body(Uuid::now_v7())).await.expect_error(404),
        "not_found"
    );
    let cid = community(&app, &[alice.id]).await;
    let gid = group(&app, cid, &[alice.id]).await;
    assert_eq!(app.post("/channels", &bob.token, body(gid)).await.expect_error(403), "forbidden");
    let c = app.post("/channels", &alice.token, body(gid)).await.expect(200);
    assert_eq!(c["group_id"], gid.to_string());
    assert_eq!(c["channel_type"], "voice");
    let members =
        app.get(&format!("/channels/{}/members", c["id"].as_str().unwrap()), &alice.token).await.expect(200);
    assert_eq!(member_roles(&members), vec![("alice".into(), "owner".into())]);
    assert_eq!(channels::Entity::find().count(db(&app)).await.unwrap(), 1);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Patch

async fn patch_channel_updates_settings_and_announces(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let id = channel_with(&app, alice, &[bob]).await;
    let path = format!("/channels/{id}");
    let mut bob_ws = live(&app, bob, id).await;

    assert_eq!(app.patch(&path, &bob.token, json!({"name": "mine"})).await.expect_error(403), "forbidden");
    for body in [
        json!({"slow_mode_seconds": 86401}),
        json!({"slow_mode_seconds": -1}),
        json!({"message_ttl_seconds": 2592001}),
        json!({"name": ""}),
        json!({"topic": "t".repeat(513)}),
        json!({"voice_background": "javascript:alert(1)"}),
        json!({"read_only": "yes"}),
    ] {
        assert_eq!(
            app.patch(&path, &alice.token, body.clone()).await.expect_error(400),
            "validation_error",
            "{body}"
        );
    }
    assert_eq!(app.get(&path, &alice.token).await.expect(200)["name"], "general", "refusals changed nothing");

    let c = app
        .patch(
            &path,
            &alice.token,
            json!({"name": "renamed", "topic": "news", "read_only": true, "slow_mode_seconds": 30,
                   "voice_background": "https://example.com/bg.png", "message_ttl_seconds": 3600}),
        )
        .await
        .expect(200);
    assert_eq!((c["name"].as_str(), c["topic"].as_str()), (Some("renamed"), Some("news")));
    assert_eq!((c["read_only"].as_bool(), c["slow_mode_seconds"].as_i64()), (Some(true), Some(30)));
    assert_eq!(c["voice_background"], "https://example.com/bg.png");
    let frame = bob_ws.expect("channel_updated").await;
    assert_eq!(frame["channel_id"], id.to_string());
    assert_eq!(frame["name"], "renamed");
    assert_eq!(frame["topic"], "news");
    assert_eq!(frame["read_only"], true);
    assert_eq!(frame["slow_mode_seconds"], 30);
    assert_eq!(frame["archived"], false);
    assert_eq!(frame["voice_background"], "https://example.com/bg.png");
    let stored = channels::Entity::find_by_id(id).one(db(&app)).await.unwrap().unwrap();
    assert_eq!(stored.message_ttl_seconds, Some(3600));

    // The live channel applies the new rules before the response: bob may no longer post.
    bob_ws.send(json!({"type": "send_message", "channel_id": id, "ciphertext": [1], "nonce": [1], "message_type": "text"})).await;
    assert_eq!(bob_ws.expect("error").await["code"], "read_only");

    // "" clears topic and voice background; TTL 0 turns the TTL off.
    let c = app
        .patch(
            &path,
            &alice.token,
            json!({"topic": "", "voice_background": "", "message_ttl_seconds": 0, "read_only": false}),
        )
        .await
        .expect(200);
    assert!(c["topic"].is_null());
    assert!(c.get("voice_background").is_none());
    let frame = bob_ws.expect("channel_updated").await;
    assert!(frame["topic"].is_null() && frame["voice_background"].is_null());
    let stored = channels::Entity::find_by_id(id).one(db(&app)).await.unwrap().unwrap();
    assert_eq!(stored.message_ttl_seconds, None);

    // The instance owner acts on any channel; unknown channels are 404, no token 401.
    let c = app.patch(&path, &root.token, json!({"archived": true})).await.expect(200);
    assert_eq!(c["archived"], true);
    assert_eq!(bob_ws.expect("channel_updated").await["archived"], true);
    let unknown = format!("/channels/{}", Uuid::now_v7());
    assert_eq!(app.patch(&unknown, &alice.token, json!({"name": "x"})).await.expect_error(404), "not_found");
    let anon = app.request(reqwest::Method::PATCH, &path, None, Some(json!({"name": "x"}))).await;
    assert_eq!(anon.expect_error(401), "unauthorized");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Join and leave

async fn join_and_leave_take_effect_live(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = new_channel(&app, alice, "general").await;
    let mut alice_ws = live(&app, alice, id).await;

    // Not a member yet: subscribing gives nothing.
    let mut bob_ws = live(&app, bob, id).await;
    send_text(&mut alice_ws, id, "before").await;
    expect_quiet(&mut bob_ws, Duration::from_millis(300)).await;

    app.post(&format!("/channels/{id}/join"), &bob.token, json!({})).await.expect(200);
    app.post(&format!("/channels/{id}/join"), &bob.token, json!({})).await.expect(200);
    assert_eq!(ids_of(&app.get("/channels", &bob.token).await.expect(200)), vec![id.to_string()]);
    let members = app.get(&format!("/channels/{id}/members"), &alice.token).await.expect(200);
    assert_eq!(
        member_roles(&members),
        vec![("alice".into(), "owner".into()), ("bob".into(), "member".into())]
    );
    // The live channel knows at once: bob subscribes and receives.
    subscribe(&mut bob_ws, id).await;
    send_text(&mut alice_ws, id, "hello bob").await;
    assert_eq!(bob_ws.expect("new_message").await["ciphertext"], json!(b"hello bob".to_vec()));

    // Leaving: immediate, idempotent; the owner cannot leave.
    app.post(&format!("/channels/{id}/leave"), &bob.token, json!({})).await.expect(200);
    app.post(&format!("/channels/{id}/leave"), &bob.token, json!({})).await.expect(200);
    send_text(&mut alice_ws, id, "gone").await;
    expect_quiet(&mut bob_ws, Duration::from_millis(300)).await;
    assert_eq!(app.get(&format!("/channels/{id}"), &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(
        app.post(&format!("/channels/{id}/leave"), &alice.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(app.get(&format!("/channels/{id}"), &alice.token).await.expect(200)["id"], id.to_string());

    // Group channels need the group's community; unknown channels 404; no token 401.
    let cid = community(&app, &[alice.id, bob.id]).await;
    let gid = group(&app, cid, &[alice.id]).await;
    let g = app
        .post("/channels", &alice.token, json!({"name": "g", "channel_type": "text", "group_id": gid}))
        .await
        .expect(200);
    let gpath = format!("/channels/{}/join", g["id"].as_str().unwrap());
    assert_eq!(app.post(&gpath, &carol.token, json!({})).await.expect_error(403), "forbidden");
    app.post(&gpath, &bob.token, json!({})).await.expect(200);
    let unknown = format!("/channels/{}/join", Uuid::now_v7());
    assert_eq!(app.post(&unknown, &carol.token, json!({})).await.expect_error(404), "not_found");
    let unknown = format!("/channels/{}/leave", Uuid::now_v7());
    assert_eq!(app.post(&unknown, &carol.token, json!({})).await.expect_error(404), "not_found");
    let anon = app.request(reqwest::Method::POST, &gpath, None, None).await;
    assert_eq!(anon.expect_error(401), "unauthorized");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Members

async fn member_list_rules_and_paging(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol", "dave"]).await;
    let (alice, bob, carol, dave) = (&u[0], &u[1], &u[2], &u[3]);
    let cid = community(&app, &[alice.id, bob.id, carol.id, dave.id]).await;
    let gid = group(&app, cid, &[alice.id, bob.id, carol.id]).await;
    let make = |discoverable: bool| json!({"name": "g", "channel_type": "text", "group_id": gid, "discoverable": discoverable});
    let open: Uuid = app.post("/channels", &alice.token, make(true)).await.expect(200)["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let hidden: Uuid = app.post("/channels", &alice.token, make(false)).await.expect(200)["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    app.post(&format!("/channels/{open}/join"), &bob.token, json!({})).await.expect(200);
    app.post(&format!("/channels/{hidden}/join"), &bob.token, json!({})).await.expect(200);

    // Discoverable group channel: explicit members, then group members who have not joined.
    let list = app.get(&format!("/channels/{open}/members"), &carol.token).await.expect(200);
    assert_eq!(
        member_roles(&list),
        vec![
            ("alice".into(), "owner".into()),
            ("bob".into(), "member".into()),
            ("carol".into(), "member".into())
        ]
    );
    let first = &list[0];
    assert_eq!(first["user_id"], alice.id.to_string());
    assert_eq!(first["display_name"], "alice display");
    assert!(first["avatar_url"].is_null() && first["joined_at"].is_string());
    // dave is in the community but not the group.
    assert_eq!(
        app.get(&format!("/channels/{open}/members"), &dave.token).await.expect_error(403),
        "forbidden"
    );

    // Not discoverable: only explicit members, and only they may look.
    let list = app.get(&format!("/channels/{hidden}/members"), &bob.token).await.expect(200);
    assert_eq!(member_roles(&list), vec![("alice".into(), "owner".into()), ("bob".into(), "member".into())]);
    assert_eq!(
        app.get(&format!("/channels/{hidden}/members"), &carol.token).await.expect_error(403),
        "forbidden"
    );

    // limit / offset (clamped), bad numbers 400, unknown channel 404.
    let page = app.get(&format!("/channels/{open}/members?limit=1&offset=1"), &alice.token).await.expect(200);
    assert_eq!(member_roles(&page), vec![("bob".into(), "member".into())]);
    let page =
        app.get(&format!("/channels/{open}/members?limit=0&offset=-5"), &alice.token).await.expect(200);
    assert_eq!(page.as_array().unwrap().len(), 1);
    let bad = app.get(&format!("/channels/{open}/members?limit=lots"), &alice.token).await;
    assert_eq!(bad.expect_error(400), "validation_error");
    let unknown = format!("/channels/{}/members", Uuid::now_v7());
    assert_eq!(app.get(&unknown, &alice.token).await.expect_error(404), "not_found");
    app.stop().await;
}

async fn role_changes_are_checked_and_broadcast(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = channel_with(&app, alice, &[bob, carol]).await;
    let mut carol_ws = live(&app, carol, id).await;
    let mut bob_ws = live(&app, bob, id).await;
    let role_path = |user: &TestUser| format!("/channels/{id}/members/{}/role", user.id);

    app.patch(&role_path(bob), &alice.token, json!({"role": "moderator"})).await.expect(200);
    let frame = carol_ws.expect_durable("member_role_updated").await;
    assert_eq!(
        frame,
        json!({"type": "member_role_updated", "channel_id": id, "user_id": bob.id, "role": "moderator"})
    );
    bob_ws.expect("member_role_updated").await;
    let members = app.get(&format!("/channels/{id}/members"), &carol.token).await.expect(200);
    assert!(member_roles(&members).contains(&("bob".into(), "moderator".into())));

    // The live channel applies the role at once: a moderator posts in a read-only channel.
    app.patch(&format!("/channels/{id}"), &alice.token, json!({"read_only": true})).await.expect(200);
    bob_ws.expect("channel_updated").await;
    send_text(&mut bob_ws, id, "mod speaking").await;

    // Only the owner (effective) changes roles; not yourself; only assignable roles; members only.
    assert_eq!(
        app.patch(&role_path(carol), &bob.token, json!({"role": "admin"})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.patch(&role_path(alice), &alice.token, json!({"role": "member"})).await.expect_error(400),
        "validation_error"
    );
    for body in [json!({"role": "owner"}), json!({"role": "king"}), json!({})] {
        assert_eq!(
            app.patch(&role_path(carol), &alice.token, body.clone()).await.expect_error(400),
            "validation_error",
            "{body}"
        );
    }
    let stranger = app.register("stranger").await;
    let reply = app.patch(&role_path(&stranger), &alice.token, json!({"role": "admin"})).await;
    assert_eq!(reply.expect_error(404), "not_found");
    let unknown = format!("/channels/{}/members/{}/role", Uuid::now_v7(), bob.id);
    assert_eq!(
        app.patch(&unknown, &alice.token, json!({"role": "admin"})).await.expect_error(404),
        "not_found"
    );
    let members = app.get(&format!("/channels/{id}/members"), &carol.token).await.expect(200);
    assert!(member_roles(&members).contains(&("carol".into(), "member".into())), "refusals changed nothing");
    app.stop().await;
}

async fn kicked_member_hears_nothing_more(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = channel_with(&app, alice, &[bob, carol]).await;
    let key = json!({"chain_id": 1, "distribution": {"k": "bob"}});
    app.post(&format!("/channels/{id}/sender-keys"), &bob.token, key).await.expect(200);
    let mut alice_ws = live(&app, alice, id).await;
    let mut bob_ws = live(&app, bob, id).await;
    let mut carol_ws = live(&app, carol, id).await;
    let kick = |user: &TestUser| format!("/channels/{id}/members/{}/kick", user.id);

    // A plain member outranks nobody; nobody outranks themselves.
    assert_eq!(app.post(&kick(bob), &carol.token, json!({})).await.expect_error(403), "forbidden");
    assert_eq!(app.post(&kick(alice), &alice.token, json!({})).await.expect_error(403), "forbidden");
    expect_quiet(&mut bob_ws, Duration::from_millis(100)).await;

    app.post(&kick(bob), &alice.token, json!({})).await.expect(200);
    let kicked = json!({"type": "member_kicked", "channel_id": id, "user_id": bob.id, "kicked_by": alice.id});
    assert_eq!(bob_ws.expect_durable("member_kicked").await, kicked);
    assert_eq!(carol_ws.expect_durable("member_kicked").await, kicked);
    let rotation = carol_ws.expect("sender_key_rotation_required").await;
    assert_eq!(rotation["reason"], "member_removed");
    assert_eq!(rotation["channel_id"], id.to_string());
    assert_eq!(alice_ws.expect_durable("member_kicked").await, kicked);
    alice_ws.expect("sender_key_rotation_required").await;

    // Others still get messages; bob gets nothing — not even after subscribing again.
    send_text(&mut alice_ws, id, "after the kick").await;
    carol_ws.expect("new_message").await;
    expect_quiet(&mut bob_ws, Duration::from_millis(300)).await;
    subscribe(&mut bob_ws, id).await;
    send_text(&mut alice_ws, id, "still private").await;
    carol_ws.expect("new_message").await;
    expect_quiet(&mut bob_ws, Duration::from_millis(300)).await;

    // Membership and sender key gone, audited; bob may rejoin (a kick is not a ban).
    let keys = app.get(&format!("/channels/{id}/sender-keys"), &carol.token).await.expect(200);
    assert_eq!(keys, json!([]));
    assert_eq!(app.get(&format!("/channels/{id}"), &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(audit_count(&app, "channel_kick").await, 1);
    assert_eq!(app.post(&kick(bob), &alice.token, json!({})).await.expect_error(404), "not_found");
    app.post(&format!("/channels/{id}/join"), &bob.token, json!({})).await.expect(200);

    // Moderators cannot remove admins; admins can remove moderators.
    let role = |user: &TestUser| format!("/channels/{id}/members/{}/role", user.id);
    app.patch(&role(bob), &alice.token, json!({"role": "moderator"})).await.expect(200);
    app.patch(&role(carol), &alice.token, json!({"role": "admin"})).await.expect(200);
    assert_eq!(app.post(&kick(carol), &bob.token, json!({})).await.expect_error(403), "forbidden");
    app.post(&kick(bob), &carol.token, json!({})).await.expect(200);
    let anon = app.request(reqwest::Method::POST, &kick(carol), None, None).await;
    assert_eq!(anon.expect_error(401), "unauthorized");
    app.stop().await;
}

async fn ban_blocks_rejoining_until_unbanned(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = channel_with(&app, alice, &[bob, carol]).await;
    let mut bob_ws = live(&app, bob, id).await;
    let mut carol_ws = live(&app, carol, id).await;
    let ban = format!("/channels/{id}/members/{}/ban", bob.id);
    let unban = format!("/channels/{id}/members/{}/unban", bob.id);

    let long = json!({"reason": "x".repeat(501)});
    assert_eq!(app.post(&ban, &alice.token, long).await.expect_error(400), "validation_error");
    assert_eq!(app.post(&ban, &carol.token, json!({"reason": "no"})).await.expect_error(403), "forbidden");
    assert_eq!(app.get(&format!("/channels/{id}"), &bob.token).await.expect(200)["id"], id.to_string());

    app.post(&ban, &alice.token, json!({"reason": " spam "})).await.expect(200);
    let banned = json!({"type": "member_banned", "channel_id": id, "user_id": bob.id, "banned_by": alice.id});
    assert_eq!(bob_ws.expect_durable("member_banned").await, banned);
    assert_eq!(carol_ws.expect_durable("member_banned").await, banned);
    carol_ws.expect("sender_key_rotation_required").await;
    expect_quiet(&mut bob_ws, Duration::from_millis(200)).await;
    let row =
        channel_bans::Entity::find_by_id((id, bob.id)).one(db(&app)).await.unwrap().expect("ban stored");
    assert_eq!((row.reason.as_deref(), row.banned_by), (Some("spam"), Some(alice.id)));
    assert_eq!(audit_count(&app, "channel_ban").await, 1);

    let join = format!("/channels/{id}/join");
    assert_eq!(app.post(&join, &bob.token, json!({})).await.expect_error(403), "forbidden");
    assert_eq!(app.post(&unban, &carol.token, json!({})).await.expect_error(403), "forbidden");
    app.post(&unban, &alice.token, json!({})).await.expect(200);
    assert_eq!(app.post(&unban, &alice.token, json!({})).await.expect_error(404), "not_found");
    assert_eq!(audit_count(&app, "channel_unban").await, 1);
    app.post(&join, &bob.token, json!({})).await.expect(200);

    // A moderator may unban.
    let role = format!("/channels/{id}/members/{}/role", carol.id);
    app.patch(&role, &alice.token, json!({"role": "moderator"})).await.expect(200);
    app.post(&ban, &alice.token, json!({})).await.expect(200);
    app.post(&unban, &carol.token, json!({})).await.expect(200);
    let unknown = format!("/channels/{}/members/{}/unban", Uuid::now_v7(), bob.id);
    assert_eq!(app.post(&unknown, &alice.token, json!({})).await.expect_error(404), "not_found");
    app.stop().await;
}

async fn ownership_transfer_swaps_roles(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = channel_with(&app, alice, &[bob, carol]).await;
    let mut carol_ws = live(&app, carol, id).await;
    let path = format!("/channels/{id}/transfer-ownership");
    let stranger = app.register("stranger").await;

    assert_eq!(
        app.post(&path, &bob.token, json!({"new_owner_id": carol.id})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.post(&path, &alice.token, json!({"new_owner_id": stranger.id})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.post(&path, &alice.token, json!({"new_owner_id": "nope"})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(app.post(&path, &alice.token, json!({})).await.expect_error(400), "validation_error");

    app.post(&path, &alice.token, json!({"new_owner_id": bob.id})).await.expect(200);
    let first = carol_ws.expect("member_role_updated").await;
    let second = carol_ws.expect("member_role_updated").await;
    assert_eq!(
        (first["user_id"].as_str(), first["role"].as_str()),
        (Some(alice.id.to_string().as_str()), Some("admin"))
    );
    assert_eq!(
        (second["user_id"].as_str(), second["role"].as_str()),
        (Some(bob.id.to_string().as_str()), Some("owner"))
    );
    let members = app.get(&format!("/channels/{id}/members"), &carol.token).await.expect(200);
    assert_eq!(
        member_roles(&members),
        vec![
            ("alice".into(), "admin".into()),
            ("bob".into(), "owner".into()),
            ("carol".into(), "member".into())
        ]
    );
    // The old owner lost owner rights, the new one has them (and may now leave only after transferring).
    assert_eq!(
        app.patch(&format!("/channels/{id}"), &alice.token, json!({"name": "x"})).await.expect_error(403),
        "forbidden"
    );
    app.patch(&format!("/channels/{id}"), &bob.token, json!({"name": "bob's"})).await.expect(200);
    app.post(&format!("/channels/{id}/leave"), &alice.token, json!({})).await.expect(200);
    assert_eq!(
        app.post(&format!("/channels/{id}/leave"), &bob.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Unread and read cursors

async fn unread_counts_follow_read_cursors(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = channel_with(&app, alice, &[bob]).await;
    let quiet = channel_with(&app, alice, &[bob]).await;
    let ids = ordered_ids(4);
    for (i, m) in ids.iter().enumerate() {
        insert_message(&app, *m, id, Some(alice.id), format!("m{i}").as_bytes()).await;
    }
    insert_message(&app, ordered_ids(1)[0], id, Some(bob.id), b"bob's own").await;
    // A deleted message never counts.
    messages::Entity::update_many()
        .col_expr(messages::Column::DeletedAt, sea_orm::sea_query::Expr::value(palaver_entity::now()))
        .filter(messages::Column::Id.eq(ids[3]))
        .exec(db(&app))
        .await
        .unwrap();

    let unread = app.get("/channels/unread", &bob.token).await.expect(200);
    assert_eq!(unread, json!([{"channel_id": id, "unread_count": 3}]), "quiet channel left out");
    assert_eq!(
        app.get("/channels/unread", &alice.token).await.expect(200),
        json!([{"channel_id": id, "unread_count": 1}])
    );
    assert_eq!(app.get("/channels/unread", &carol.token).await.expect(200), json!([]));

    let mut bob_ws = live(&app, bob, id).await;
    bob_ws.send(json!({"type": "mark_read", "channel_id": id, "message_id": ids[1]})).await;
    bob_ws.expect("read_receipt").await;
    assert_eq!(
        app.get("/channels/unread", &bob.token).await.expect(200),
        json!([{"channel_id": id, "unread_count": 1}])
    );
    bob_ws.send(json!({"type": "mark_read", "channel_id": id, "message_id": ids[3]})).await;
    bob_ws.expect("read_receipt").await;
    assert_eq!(app.get("/channels/unread", &bob.token).await.expect(200), json!([]));

    let cursors = app.get(&format!("/channels/{id}/read-cursors"), &alice.token).await.expect(200);
    let cursors = cursors.as_array().unwrap();
    assert_eq!(cursors.len(), 1);
    assert_eq!(cursors[0]["user_id"], bob.id.to_string());
    assert_eq!(cursors[0]["last_read_message_id"], ids[3].to_string());
    assert!(cursors[0]["last_read_at"].is_string());
    assert_eq!(app.get(&format!("/channels/{quiet}/read-cursors"), &bob.token).await.expect(200), json!([]));
    let path = format!("/channels/{id}/read-cursors");
    assert_eq!(app.get(&path, &carol.token).await.expect_error(403), "forbidden");
    let unknown = format!("/channels/{}/read-cursors", Uuid::now_v7());
    assert_eq!(app.get(&unknown, &bob.token).await.expect_error(404), "not_found");
    let anon = app.request(reqwest::Method::GET, "/channels/unread", None, None).await;
    assert_eq!(anon.expect_error(401), "unauthorized");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Sender keys

async fn sender_keys_upsert_and_broadcast(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = channel_with(&app, alice, &[bob]).await;
    let path = format!("/channels/{id}/sender-keys");
    let mut alice_ws = live(&app, alice, id).await;

    let dist = json!({"key": [1, 2, 3], "nested": {"a": null}});
    let k = app.post(&path, &bob.token, json!({"chain_id": 7, "distribution": dist})).await.expect(200);
    assert_eq!(k["channel_id"], id.to_string());
    assert_eq!(k["user_id"], bob.id.to_string());
    assert_eq!(k["chain_id"], 7);
    assert_eq!(k["distribution"], dist);
    assert!(k["id"].is_string() && k["created_at"].is_string());
    let frame = alice_ws.expect_durable("sender_key_updated").await;
    assert_eq!(
        frame,
        json!({"type": "sender_key_updated", "channel_id": id, "user_id": bob.id, "chain_id": 7, "distribution": dist})
    );

    // Upsert: one per member.
    let k2 = app.post(&path, &bob.token, json!({"chain_id": 8, "distribution": "opaque"})).await.expect(200);
    assert_eq!((k2["chain_id"].as_i64(), k2["distribution"].as_str()), (Some(8), Some("opaque")));
    assert_eq!(alice_ws.expect("sender_key_updated").await["chain_id"], 8);
    app.post(&path, &alice.token, json!({"chain_id": 1, "distribution": {}})).await.expect(200);
    let list = app.get(&path, &bob.token).await.expect(200);
    let mut owners: Vec<&str> =
        list.as_array().unwrap().iter().map(|k| k["user_id"].as_str().unwrap()).collect();
    owners.sort();
    let mut expected = vec![alice.id.to_string(), bob.id.to_string()];
    expected.sort();
    assert_eq!(owners, expected);
    assert_eq!(sender_keys::Entity::find().count(db(&app)).await.unwrap(), 2);

    // Members only; bad bodies 400 and change nothing.
    assert_eq!(
        app.post(&path, &carol.token, json!({"chain_id": 1, "distribution": {}})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(app.get(&path, &carol.token).await.expect_error(403), "forbidden");
    for body in
        [json!({"chain_id": 1}), json!({"chain_id": "one", "distribution": {}}), json!({"distribution": {}})]
    {
        assert_eq!(
            app.post(&path, &bob.token, body.clone()).await.expect_error(400),
            "validation_error",
            "{body}"
        );
    }
    let list = app.get(&path, &bob.token).await.expect(200);
    let mine = list.as_array().unwrap().iter().find(|k| k["user_id"] == bob.id.to_string()).unwrap().clone();
    assert_eq!((mine["chain_id"].as_i64(), mine["distribution"].as_str()), (Some(8), Some("opaque")));
    let unknown = format!("/channels/{}/sender-keys", Uuid::now_v7());
    assert_eq!(app.get(&unknown, &bob.token).await.expect_error(404), "not_found");
    let anon = app.request(reqwest::Method::GET, &path, None, None).await;
    assert_eq!(anon.expect_error(401), "unauthorized");
    app.stop().await;
}

crate::both_backends!(
    create_list_and_get_channels,
    create_channel_rejects_bad_input_and_foreign_groups,
    patch_channel_updates_settings_and_announces,
    join_and_leave_take_effect_live,
    member_list_rules_and_paging,
    role_changes_are_checked_and_broadcast,
    kicked_member_hears_nothing_more,
    ban_blocks_rejoining_until_unbanned,
    ownership_transfer_swaps_roles,
    unread_counts_follow_read_cursors,
    sender_keys_upsert_and_broadcast,
);
