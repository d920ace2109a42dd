//! Community moderation over real sockets: kicks and bans cut a member off the community's
//! channels at once (they get the named frame, then nothing more), timeouts stop sends until
//! lifted, warnings are counted and announced, role changes reach the community's members,
//! and the community actor survives a crash with its state intact.

use std::time::Duration;

use palaver_entity::{channel_timeouts, channel_warnings, group_members, sender_keys};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::common::fixtures::{
    audit_count, community_with_channel, create, db, expect_quiet, group_channel, invite, join, live,
    new_channel, open_app, public_group, send_text, set_role, subscribe, sync, users,
};
use crate::common::{Backend, TestUser, WsClient};

async fn send_refused(ws: &mut WsClient, channel: Uuid, code: &str) -> String {
    ws.send(json!({
        "type": "send_message", "channel_id": channel, "ciphertext": [1, 2], "nonce": [3], "message_type": "text",
    }))
    .await;
    let err = ws.expect("error").await;
    assert_eq!(err["code"], code, "unexpected refusal {err}");
    err["message"].as_str().unwrap_or_default().to_string()
}

async fn kicked_member_stops_receiving_channel_events(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let (cid, group, channel) = community_with_channel(&app, alice, &[bob, carol]).await;
    set_role(&app, alice, cid, carol, "moderator").await;
    let key = json!({"chain_id": 1, "distribution": {"k": "bob"}});
    app.post(&format!("/channels/{channel}/sender-keys"), &bob.token, key).await.expect(200);
    let mut alice_ws = live(&app, alice, channel).await;
    let mut bob_ws = live(&app, bob, channel).await;
    let mut bob_phone = live(&app, bob, channel).await;
    send_text(&mut alice_ws, channel, "before").await;
    bob_ws.expect("new_message").await;
    bob_phone.expect("new_message").await;

    // A member cannot kick; nobody kicks themselves; the moderator can kick bob.
    let kick = format!("/communities/{cid}/members/{}", bob.id);
    let kick_carol = format!("/communities/{cid}/members/{}", carol.id);
    assert_eq!(app.delete(&kick_carol, &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(app.delete(&kick_carol, &carol.token).await.expect_error(400), "validation_error");
    let kick_alice = format!("/communities/{cid}/members/{}", alice.id);
    assert_eq!(app.delete(&kick_alice, &carol.token).await.expect_error(403), "forbidden");
    app.delete(&kick, &carol.token).await.expect(200);

    // Every session of bob, and everyone else subscribed, gets member_kicked for the channel.
    let kicked =
        json!({"type": "member_kicked", "channel_id": channel, "user_id": bob.id, "kicked_by": carol.id});
    assert_eq!(bob_ws.expect_durable("member_kicked").await, kicked);
    assert_eq!(bob_phone.expect_durable("member_kicked").await, kicked);
    assert_eq!(alice_ws.expect_durable("member_kicked").await, kicked);
    let rotation = alice_ws.expect("sender_key_rotation_required").await;
    assert_eq!(rotation["reason"], "member_removed");

    // Nothing of the channel reaches bob afterwards, not even after subscribing again.
    send_text(&mut alice_ws, channel, "after").await;
    expect_quiet(&mut bob_ws, Duration::from_millis(300)).await;
    expect_quiet(&mut bob_phone, Duration::from_millis(100)).await;
    subscribe(&mut bob_ws, channel).await;
    send_text(&mut alice_ws, channel, "still private").await;
    expect_quiet(&mut bob_ws, Duration::from_millis(300)).await;
    send_refused(&mut bob_ws, channel, "forbidden").await;

    // Out of the community, its group and channel; sender key gone; audited.
    assert_eq!(app.get(&format!("/communities/{cid}"), &bob.token).await.expect_error(403), "forbidden");
    assert!(group_members::Entity::find_by_id((group, bob.id)).one(db(&app)).await.unwrap().is_none());
    assert_eq!(app.get(&format!("/channels/{channel}"), &bob.token).await.expect_error(403), "forbidden");
    let keys =
        sender_keys::Entity::find().filter(sender_keys::Column::UserId.eq(bob.id)).count(db(&app)).await;
    assert_eq!(keys.unwrap(), 0);
    assert_eq!(audit_count(&app, "community_kick").await, 1);
    assert_eq!(app.delete(&kick, &carol.token).await.expect_error(404), "not_found");

    // A kick is not a ban: bob may come back through an invite and chat again on the same socket.
    join(&app, alice, cid, bob).await;
    subscribe(&mut bob_ws, channel).await;
    send_text(&mut alice_ws, channel, "welcome back").await;
    bob_ws.expect("new_message").await;
    app.stop().await;
}

async fn banned_member_is_cut_off_and_cannot_return(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let (cid, _group, channel) = community_with_channel(&app, alice, &[bob, carol]).await;
    let mut alice_ws = live(&app, alice, channel).await;
    let mut bob_ws = live(&app, bob, channel).await;
    let mut carol_ws = live(&app, carol, channel).await;
    let code = invite(&app, alice, cid).await;

    app.post(&format!("/communities/{cid}/bans/{}", bob.id), &alice.token, json!({"reason": "spam"}))
        .await
        .expect(200);
    let banned =
        json!({"type": "member_banned", "channel_id": channel, "user_id": bob.id, "banned_by": alice.id});
    assert_eq!(bob_ws.expect_durable("member_banned").await, banned);
    assert_eq!(carol_ws.expect_durable("member_banned").await, banned);
    assert_eq!(alice_ws.expect_durable("member_banned").await, banned);
    for ws in [&mut alice_ws, &mut carol_ws] {
        assert_eq!(ws.expect("sender_key_rotation_required").await["reason"], "member_removed");
    }

    send_text(&mut carol_ws, channel, "bob is gone").await;
    alice_ws.expect("new_message").await;
    expect_quiet(&mut bob_ws, Duration::from_millis(300)).await;
    send_refused(&mut bob_ws, channel, "forbidden").await;
    assert_eq!(audit_count(&app, "community_ban").await, 1);

    // No way back: not through an invite, not by joining the channel directly.
    let back = app.post(&format!("/community-invites/{code}/accept"), &bob.token, json!({})).await;
    assert_eq!(back.expect_error(403), "forbidden");
    assert_eq!(
        app.post(&format!("/channels/{channel}/join"), &bob.token, json!({})).await.expect_error(403),
        "forbidden"
    );
    subscribe(&mut bob_ws, channel).await;
    send_text(&mut carol_ws, channel, "still gone").await;
    expect_quiet(&mut bob_ws, Duration::from_millis(300)).await;

    // Unbanned, the same invite works again.
    app.delete(&format!("/communities/{cid}/bans/{}", bob.id), &alice.token).await.expect(200);
    app.post(&format!("/community-invites/{code}/accept"), &bob.token, json!({})).await.expect(200);
    subscribe(&mut bob_ws, channel).await;
    send_text(&mut carol_ws, channel, "hi again").await;
    bob_ws.expect("new_message").await;
    app.stop().await;
}

async fn timed_out_member_cannot_send_until_lifted(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol", "dave", "erin"]).await;
    let (alice, bob, carol, dave, erin) = (&u[0], &u[1], &u[2], &u[3], &u[4]);
    let (cid, _group, channel) = community_with_channel(&app, alice, &[bob, carol, dave]).await;
    set_role(&app, alice, cid, carol, "moderator").await;
    set_role(&app, alice, cid, dave, "admin").await;
    let mut alice_ws = live(&app, alice, channel).await;
    let mut bob_ws = live(&app, bob, channel).await;
    let path = format!("/communities/{cid}/channels/{channel}/timeout");

    // Bad input and refusals.
    let body = |user: &TestUser, secs: i64| json!({"user_id": user.id, "duration_seconds": secs, "reason": " flood "});
    assert_eq!(app.post(&path, &carol.token, body(bob, 59)).await.expect_error(400), "validation_error");
    assert_eq!(
        app.post(&path, &carol.token, body(bob, 2_592_001)).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.post(&path, &carol.token, json!({"user_id": bob.id})).await.expect_error(400),
        "validation_error"
    );
    let long = json!({"user_id": bob.id, "duration_seconds": 60, "reason": "x".repeat(501)});
    assert_eq!(app.post(&path, &carol.token, long).await.expect_error(400), "validation_error");
    assert_eq!(app.post(&path, &carol.token, body(erin, 60)).await.expect_error(400), "validation_error");
    assert_eq!(app.post(&path, &carol.token, body(dave, 60)).await.expect_error(403), "forbidden");
    assert_eq!(app.post(&path, &bob.token, body(alice, 60)).await.expect_error(403), "forbidden");
    let elsewhere = create(&app, erin, "Elsewhere").await;
    let other_group = public_group(&app, elsewhere, erin.id, "public").await;
    let other_channel = group_channel(&app, erin, other_group, true).await;
    let foreign = format!("/communities/{cid}/channels/{other_channel}/timeout");
    assert_eq!(app.post(&foreign, &carol.token, body(bob, 60)).await.expect_error(404), "not_found");
    let standalone = new_channel(&app, alice, "loose").await;
    let loose = format!("/communities/{cid}/channels/{standalone}/timeout");
    assert_eq!(app.post(&loose, &carol.token, body(bob, 60)).await.expect_error(404), "not_found");
    expect_quiet(&mut bob_ws, Duration::from_millis(100)).await;

    // Timed out: the frame to the channel, then sends are refused (edits too).
    let sent = send_text(&mut bob_ws, channel, "before").await;
    alice_ws.expect("new_message").await;
    let t = app.post(&path, &carol.token, body(bob, 600)).await.expect(200);
    assert_eq!(t["user_id"], bob.id.to_string());
    assert_eq!(t["channel_id"], channel.to_string());
    assert_eq!(t["issued_by"], carol.id.to_string());
    assert_eq!(t["reason"], "flood");
    for key in ["id", "expires_at", "created_at"] {
        assert!(t[key].is_string(), "timeout lacks {key}");
    }
    let frame = bob_ws.expect("user_timed_out").await;
    assert_eq!(frame["user_id"], bob.id.to_string());
    assert_eq!(frame["channel_id"], channel.to_string());
    assert_eq!(frame["reason"], "flood");
    assert_eq!(frame["expires_at"], t["expires_at"]);
    alice_ws.expect("user_timed_out").await;
    let text = send_refused(&mut bob_ws, channel, "timed_out").await;
    assert!(text.contains("seconds"), "{text}");
    bob_ws
        .send(json!({"type": "edit_message", "message_id": sent["id"], "ciphertext": [9], "nonce": [9]}))
        .await;
    assert_eq!(bob_ws.expect("error").await["code"], "timed_out");
    expect_quiet(&mut alice_ws, Duration::from_millis(200)).await;
    // The privileged are not affected by others' timeouts.
    send_text(&mut alice_ws, channel, "mods talk").await;
    bob_ws.expect("new_message").await;

    // Lifting: moderators; 404 when none; audited; bob sends again at once.
    let lift = format!("/communities/{cid}/channels/{channel}/timeout/{}", bob.id);
    assert_eq!(app.delete(&lift, &bob.token).await.expect_error(403), "forbidden");
    app.delete(&lift, &carol.token).await.expect(200);
    assert_eq!(app.delete(&lift, &carol.token).await.expect_error(404), "not_found");
    assert_eq!(audit_count(&app, "timeout_removed").await, 1);
    send_text(&mut bob_ws, channel, "free").await;
    alice_ws.expect("new_message").await;
    let left = channel_timeouts::Entity::find()
        .filter(channel_timeouts::Column::UserId.eq(bob.id))
        .count(db(&app))
        .await;
    assert_eq!(left.unwrap(), 0);

    // A new timeout reaches a new socket of the same user too.
    drop(bob_ws);
    drop(alice_ws);
    app.post(&path, &alice.token, body(bob, 60)).await.expect(200);
    let mut bob_ws = live(&app, bob, channel).await;
    send_refused(&mut bob_ws, channel, "timed_out").await;
    app.stop().await;
}

async fn warnings_are_counted_and_announced_on_both_paths(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol", "erin"]).await;
    let (alice, bob, carol, erin) = (&u[0], &u[1], &u[2], &u[3]);
    let (cid, _group, channel) = community_with_channel(&app, alice, &[bob, carol]).await;
    set_role(&app, alice, cid, carol, "moderator").await;
    let mut alice_ws = live(&app, alice, channel).await;
    let mut bob_ws = live(&app, bob, channel).await;
    let warn = format!("/communities/{cid}/channels/{channel}/warn");
    let warnings = format!("/communities/{cid}/channels/{channel}/warnings");

    let w =
        app.post(&warn, &carol.token, json!({"user_id": bob.id, "reason": " be kind "})).await.expect(200);
    assert_eq!(w["user_id"], bob.id.to_string());
    assert_eq!(w["reason"], "be kind");
    assert_eq!(w["issued_by"], carol.id.to_string());
    assert_eq!(w["channel_id"], channel.to_string());
    assert!(w["id"].is_string() && w["created_at"].is_string());
    let frame = bob_ws.expect_durable("user_warned").await;
    assert_eq!(
        frame,
        json!({"type": "user_warned", "channel_id": channel, "user_id": bob.id, "reason": "be kind", "warning_count": 1})
    );
    assert_eq!(alice_ws.expect("user_warned").await["warning_count"], 1);

    // The web client's path answers {warning, warning_count}.
    let w2 = app
        .post(&warnings, &alice.token, json!({"user_id": bob.id, "reason": "last time"}))
        .await
        .expect(200);
    assert_eq!(w2["warning_count"], 2);
    assert_eq!(w2["warning"]["reason"], "last time");
    assert_eq!(bob_ws.expect("user_warned").await["warning_count"], 2);

    // Refusals.
    let body = |user: &TestUser, reason: &str| json!({"user_id": user.id, "reason": reason});
    assert_eq!(app.post(&warn, &carol.token, body(bob, "  ")).await.expect_error(400), "validation_error");
    assert_eq!(
        app.post(&warn, &carol.token, body(bob, &"x".repeat(1001))).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(app.post(&warn, &carol.token, body(erin, "who?")).await.expect_error(400), "validation_error");
    assert_eq!(app.post(&warn, &bob.token, body(carol, "no")).await.expect_error(403), "forbidden");
    assert_eq!(app.post(&warn, &carol.token, body(alice, "no")).await.expect_error(403), "forbidden");
    assert_eq!(app.post(&warnings, &erin.token, body(bob, "no")).await.expect_error(403), "forbidden");

    // The list: moderators only.
    let list_path = format!("/communities/{cid}/channels/{channel}/warnings/{}", bob.id);
    let list = app.get(&list_path, &carol.token).await.expect(200);
    let reasons: Vec<&str> = list.as_array().unwrap().iter().map(|w| w["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, vec!["be kind", "last time"]);
    assert_eq!(app.get(&list_path, &bob.token).await.expect_error(403), "forbidden");
    let missing = format!("/communities/{cid}/channels/{}/warnings/{}", Uuid::now_v7(), bob.id);
    assert_eq!(app.get(&missing, &carol.token).await.expect_error(404), "not_found");
    let stored = channel_warnings::Entity::find().count(db(&app)).await.unwrap();
    assert_eq!(stored, 2);
    sync(&mut bob_ws).await;
    app.stop().await;
}

async fn role_changes_reach_every_member_and_take_effect(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol", "erin"]).await;
    let (alice, bob, carol, erin) = (&u[0], &u[1], &u[2], &u[3]);
    let (cid, _group, channel) = community_with_channel(&app, alice, &[bob, carol]).await;
    // Sockets not subscribed to anything: role changes are community-scoped.
    let mut bob_ws = app.ws(&bob.token).await;
    let mut carol_ws = app.ws(&carol.token).await;
    let mut erin_ws = app.ws(&erin.token).await;
    let timeout = format!("/communities/{cid}/channels/{channel}/timeout");
    let body = json!({"user_id": carol.id, "duration_seconds": 60});
    assert_eq!(app.post(&timeout, &bob.token, body.clone()).await.expect_error(403), "forbidden");

    set_role(&app, alice, cid, bob, "moderator").await;
    let expected =
        json!({"type": "member_role_updated", "channel_id": cid, "user_id": bob.id, "role": "moderator"});
    assert_eq!(bob_ws.expect("member_role_updated").await, expected);
    assert_eq!(carol_ws.expect("member_role_updated").await, expected);
    erin_ws.expect_no("member_role_updated", Duration::from_millis(300)).await;
    // The new moderator's powers apply at once.
    app.post(&timeout, &bob.token, body).await.expect(200);

    // Ownership transfer announces both changes.
    app.post(
        &format!("/communities/{cid}/transfer-ownership"),
        &alice.token,
        json!({"new_owner_id": carol.id}),
    )
    .await
    .expect(200);
    let first = bob_ws.expect("member_role_updated").await;
    let second = bob_ws.expect("member_role_updated").await;
    assert_eq!((first["user_id"].clone(), first["role"].clone()), (json!(alice.id), json!("admin")));
    assert_eq!((second["user_id"].clone(), second["role"].clone()), (json!(carol.id), json!("owner")));
    app.stop().await;
}

async fn community_actor_restarts_with_its_state(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let (cid, _group, channel) = community_with_channel(&app, alice, &[bob, carol]).await;
    set_role(&app, alice, cid, carol, "moderator").await;
    let hub = app.server.as_ref().unwrap().state.hub.clone();
    let before = hub.live_community_actor(cid).expect("community actor is live after use").get_id();
    hub.crash_community(cid).await.unwrap();
    let mut restarted = None;
    for _ in 0..50 {
        if let Some(actor) = hub.live_community_actor(cid)
            && actor.get_id() != before
        {
            restarted = Some(actor.get_id());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(restarted.is_some(), "the supervisor restarts a crashed community actor");

    // The reloaded state knows carol is a moderator and bob a member.
    let mut bob_ws = live(&app, bob, channel).await;
    app.delete(&format!("/communities/{cid}/members/{}", bob.id), &carol.token).await.expect(200);
    bob_ws.expect("member_kicked").await;
    let mut alice_ws = app.ws(&alice.token).await;
    app.patch(&format!("/communities/{cid}"), &carol.token, json!({"name": "x"})).await.expect_error(403);
    app.patch(&format!("/communities/{cid}"), &alice.token, json!({"name": "Still here"})).await.expect(200);
    assert_eq!(alice_ws.expect("community_updated").await["name"], "Still here");
    expect_quiet(&mut bob_ws, Duration::from_millis(200)).await;
    app.stop().await;
}

crate::both_backends!(
    kicked_member_stops_receiving_channel_events,
    banned_member_is_cut_off_and_cannot_return,
    timed_out_member_cannot_send_until_lifted,
    warnings_are_counted_and_announced_on_both_paths,
    role_changes_reach_every_member_and_take_effect,
    community_actor_restarts_with_its_state,
);
