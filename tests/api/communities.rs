//! `/communities/*` and `/community-invites/*`: create / list / get / update / delete,
//! transfer and leave, members (list, role, nickname), bans, invites (create, list, delete,
//! preview, accept with auto-join) and the caller's groups — plus the authorization matrix
//! that runs every community endpoint as each kind of caller.
//! Live moderation effects (kick, ban, timeout, warn, role change) are in
//! community_moderation.rs.

use palaver_entity::{
    channel_members, channel_timeouts, channels, communities, community_bans, community_invites,
    community_members, group_members,
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{
    audit_count, create, db, group_channel, invite, join, live, open_app, public_group, send_text, set_role,
    sync, users,
};
use crate::common::{Backend, TestApp, TestUser};

// ---------------------------------------------------------------------------------------
// Helpers shared with community_moderation.rs

fn field<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array().expect("array").iter().map(|v| v[key].as_str().unwrap_or_default()).collect()
}

async fn is_member(app: &TestApp, cid: Uuid, user: Uuid) -> bool {
    community_members::Entity::find_by_id((cid, user)).one(db(app)).await.unwrap().is_some()
}

// ---------------------------------------------------------------------------------------
// Create, list, get

async fn create_list_and_get_communities(backend: Backend) {
    // Default mode: only instance staff create.
    let app = crate::common::spawn_app(backend.clone()).await;
    let (root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    let refused = app.post("/communities", &alice.token, json!({"name": "Nope"})).await.expect_error(403);
    assert_eq!(refused, "forbidden");
    let made = app.post("/communities", &root.token, json!({"name": " Root's ", "description": "d"})).await;
    let made = made.expect(200);
    assert_eq!(made["name"], "Root's");
    assert_eq!(made["owner_id"], root.id.to_string());
    app.stop().await;

    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let c = app
        .post("/communities", &alice.token, json!({"name": "Garden", "description": null}))
        .await
        .expect(200);
    for key in [
        "id",
        "name",
        "description",
        "icon_url",
        "banner_url",
        "owner_id",
        "created_at",
        "member_count",
        "who_can_create_groups",
        "who_can_create_invites",
        "discoverable",
        "community_theme",
    ] {
        assert!(c.get(key).is_some(), "community object lacks {key}: {c}");
    }
    assert!(c.get("welcome_message").is_none(), "welcome_message is omitted when null");
    assert_eq!(c["member_count"], 1);
    assert_eq!(c["who_can_create_groups"], "admin");
    assert_eq!(c["who_can_create_invites"], "admin");
    assert_eq!(c["discoverable"], true, "created discoverable by default, as Chatalot does");
    assert_eq!(c["community_theme"], Value::Null);
    let cid: Uuid = c["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        community_members::Entity::find_by_id((cid, alice.id)).one(db(&app)).await.unwrap().unwrap().role,
        "owner"
    );

    // Bad input.
    for body in [json!({"name": "  "}), json!({"name": "x".repeat(65)}), json!({}), json!({"name": 5})] {
        assert_eq!(app.post("/communities", &alice.token, body).await.expect_error(400), "validation_error");
    }
    let long = json!({"name": "ok", "description": "x".repeat(2049)});
    assert_eq!(app.post("/communities", &alice.token, long).await.expect_error(400), "validation_error");
    let anon = app.request(reqwest::Method::POST, "/communities", None, Some(json!({"name": "x"}))).await;
    assert_eq!(anon.expect_error(401), "unauthorized");

    // Lists show only one's own communities, with paging.
    create(&app, alice, "Second").await;
    let mine = app.get("/communities", &alice.token).await.expect(200);
    assert_eq!(field(&mine, "name"), vec!["Garden", "Second"]);
    let page = app.get("/communities?limit=1&offset=1", &alice.token).await.expect(200);
    assert_eq!(field(&page, "name"), vec!["Second"]);
    assert_eq!(app.get("/communities", &bob.token).await.expect(200), json!([]));
    assert_eq!(app.get("/communities?limit=x", &bob.token).await.expect_error(400), "validation_error");

    // Get: members only; bad and unknown ids.
    let got = app.get(&format!("/communities/{cid}"), &alice.token).await.expect(200);
    assert_eq!(got["id"], cid.to_string());
    assert_eq!(app.get(&format!("/communities/{cid}"), &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(app.get("/communities/not-a-uuid", &bob.token).await.expect_error(400), "validation_error");
    let missing = format!("/communities/{}", Uuid::now_v7());
    assert_eq!(app.get(&missing, &alice.token).await.expect_error(404), "not_found");
    join(&app, alice, cid, bob).await;
    let got = app.get(&format!("/communities/{cid}"), &bob.token).await.expect(200);
    assert_eq!(got["member_count"], 2);
    let listed = app.get("/communities", &bob.token).await.expect(200);
    assert_eq!(listed[0]["member_count"], 2);
    app.stop().await;
}

async fn update_validates_and_announces_to_members(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let cid = create(&app, alice, "Garden").await;
    join(&app, alice, cid, bob).await;
    let mut bob_ws = app.ws(&bob.token).await;
    let mut carol_ws = app.ws(&carol.token).await;
    let path = format!("/communities/{cid}");

    let theme = json!({"accent": "#AbC", "bgPrimary": "#00112233", "customCss": ".x { color: red; }"});
    let body = json!({
        "name": " Rose Garden ", "description": "flowers", "welcome_message": "hello",
        "who_can_create_groups": "moderator", "who_can_create_invites": "everyone",
        "discoverable": true, "community_theme": theme, "icon_url": "/api/community-assets/x.png",
    });
    let c = app.patch(&path, &alice.token, body).await.expect(200);
    assert_eq!(c["name"], "Rose Garden");
    assert_eq!(c["welcome_message"], "hello");
    assert_eq!(c["who_can_create_invites"], "everyone");
    assert_eq!(c["discoverable"], true);
    assert_eq!(c["community_theme"], theme);
    assert_eq!(c["member_count"], 2);
    let frame = bob_ws.expect("community_updated").await;
    assert_eq!(
        frame,
        json!({
            "type": "community_updated", "community_id": cid, "name": "Rose Garden", "description": "flowers",
            "icon_url": "/api/community-assets/x.png", "banner_url": null, "community_theme": theme,
            "welcome_message": "hello",
        })
    );
    carol_ws.expect_no("community_updated", std::time::Duration::from_millis(300)).await;

    // Empty strings clear; null leaves unchanged; {} clears the theme.
    let c = app
        .patch(
            &path,
            &alice.token,
            json!({"description": "", "welcome_message": "", "community_theme": null}),
        )
        .await
        .expect(200);
    assert_eq!(c["description"], Value::Null);
    assert!(c.get("welcome_message").is_none());
    assert_eq!(c["community_theme"], theme);
    assert_eq!(c["name"], "Rose Garden");
    let c = app.patch(&path, &alice.token, json!({"community_theme": {}})).await.expect(200);
    assert_eq!(c["community_theme"], json!({}));

    // Bad input changes nothing.
    for body in [
        json!({"name": ""}),
        json!({"who_can_create_groups": "owner"}),
        json!({"community_theme": {"accent": "red"}}),
        json!({"community_theme": {"font": "Comic Sans"}}),
        json!({"community_theme": {"customCss": "body { background: url(https://evil) }"}}),
        json!({"community_theme": {"customCss": "</style><script>"}}),
        json!({"community_theme": "dark"}),
        json!({"welcome_message": "x".repeat(2001)}),
        json!({"discoverable": "yes"}),
    ] {
        assert_eq!(app.patch(&path, &alice.token, body).await.expect_error(400), "validation_error");
    }
    // Members who cannot manage, and strangers.
    assert_eq!(app.patch(&path, &bob.token, json!({"name": "Mine"})).await.expect_error(403), "forbidden");
    assert_eq!(app.patch(&path, &carol.token, json!({"name": "Mine"})).await.expect_error(403), "forbidden");
    let stored = communities::Entity::find_by_id(cid).one(db(&app)).await.unwrap().unwrap();
    assert_eq!(stored.name, "Rose Garden");
    assert_eq!(stored.community_theme.as_deref(), Some("{}"));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Invites

async fn invites_preview_accept_and_limits(backend: Backend) {
    let app = open_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob", "carol", "dave"]).await;
    let (alice, bob, carol, dave) = (&u[0], &u[1], &u[2], &u[3]);
    let cid = create(&app, alice, "Garden").await;
    let invites = format!("/communities/{cid}/invites");

    // Create: shape, validation.
    let inv =
        app.post(&invites, &alice.token, json!({"max_uses": 1, "expires_in_hours": 2})).await.expect(200);
    let code = inv["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 12);
    assert!(code.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(inv["community_id"], cid.to_string());
    assert_eq!((inv["max_uses"].clone(), inv["used_count"].clone()), (json!(1), json!(0)));
    assert!(inv["expires_at"].is_string() && inv["created_at"].is_string() && inv["id"].is_string());
    for body in [json!({"expires_in_hours": 0}), json!({"expires_in_hours": 8761}), json!({"max_uses": 0})] {
        assert_eq!(app.post(&invites, &alice.token, body).await.expect_error(400), "validation_error");
    }

    // Preview: redacted while not discoverable (created discoverable by default); bad codes.
    app.patch(&format!("/communities/{cid}"), &alice.token, json!({"discoverable": false})).await.expect(200);
    let preview = app.get(&format!("/community-invites/{code}"), &bob.token).await.expect(200);
    assert_eq!(
        preview,
        json!({"community_name": "Private Community", "community_description": null, "member_count": 1, "code": code})
    );
    app.patch(
        &format!("/communities/{cid}"),
        &alice.token,
        json!({"discoverable": true, "description": "d"}),
    )
    .await
    .expect(200);
    let preview = app.get(&format!("/community-invites/{code}"), &bob.token).await.expect(200);
    assert_eq!(
        (preview["community_name"].clone(), preview["community_description"].clone()),
        (json!("Garden"), json!("d"))
    );
    let long = "a".repeat(101);
    assert_eq!(
        app.get(&format!("/community-invites/{long}"), &bob.token).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(app.get("/community-invites/nosuchcode12", &bob.token).await.expect_error(404), "not_found");
    let anon = app.request(reqwest::Method::GET, &format!("/community-invites/{code}"), None, None).await;
    assert_eq!(anon.expect_error(401), "unauthorized");

    // Accept: joins; used up afterwards; already a member → 409.
    let accepted =
        app.post(&format!("/community-invites/{code}/accept"), &bob.token, json!({})).await.expect(200);
    assert_eq!(accepted, json!({"community_id": cid, "community_name": "Garden"}));
    assert_eq!(
        community_members::Entity::find_by_id((cid, bob.id)).one(db(&app)).await.unwrap().unwrap().role,
        "member"
    );
    let used = community_invites::Entity::find()
        .filter(community_invites::Column::Code.eq(&code))
        .one(db(&app))
        .await;
    assert_eq!(used.unwrap().unwrap().used_count, 1);
    let again = app.post(&format!("/community-invites/{code}/accept"), &carol.token, json!({})).await;
    assert_eq!(again.expect_error(400), "validation_error");
    assert_eq!(
        app.get(&format!("/community-invites/{code}"), &carol.token).await.expect_error(400),
        "validation_error"
    );
    let open = invite(&app, alice, cid).await;
    let dup = app.post(&format!("/community-invites/{open}/accept"), &bob.token, json!({})).await;
    assert_eq!(dup.expect_error(409), "conflict");
    assert_eq!(
        app.post("/community-invites/nosuchcode12/accept", &carol.token, json!({})).await.expect_error(404),
        "not_found"
    );

    // Expired invites are refused.
    let expired = app.post(&invites, &alice.token, json!({"expires_in_hours": 1})).await.expect(200);
    let expired_code = expired["code"].as_str().unwrap().to_string();
    let mut row: community_invites::ActiveModel = community_invites::Entity::find()
        .filter(community_invites::Column::Code.eq(&expired_code))
        .one(db(&app))
        .await
        .unwrap()
        .unwrap()
        .into();
    row.expires_at = Set(Some(palaver_entity::now() - chrono::Duration::seconds(5)));
    row.update(db(&app)).await.unwrap();
    let late = app.post(&format!("/community-invites/{expired_code}/accept"), &carol.token, json!({})).await;
    assert_eq!(late.expect_error(400), "validation_error");
    assert!(!is_member(&app, cid, carol.id).await);

    // Policy: members may not create invites under the default `admin` policy.
    assert_eq!(app.post(&invites, &bob.token, json!({})).await.expect_error(403), "forbidden");
    assert_eq!(app.post(&invites, &dave.token, json!({})).await.expect_error(403), "forbidden");
    app.patch(&format!("/communities/{cid}"), &alice.token, json!({"who_can_create_invites": "everyone"}))
        .await
        .expect(200);
    let by_bob = app.post(&invites, &bob.token, json!({"max_uses": null})).await.expect(200);
    assert_eq!(by_bob["max_uses"], Value::Null);

    // List and delete: managers only; an invite of another community is not found here.
    assert_eq!(app.get(&invites, &bob.token).await.expect_error(403), "forbidden");
    let list = app.get(&invites, &alice.token).await.expect(200);
    assert_eq!(list.as_array().unwrap().len(), 4);
    let other = create(&app, &root, "Other").await;
    let foreign =
        app.post(&format!("/communities/{other}/invites"), &root.token, json!({})).await.expect(200);
    let foreign_id = foreign["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("{invites}/{foreign_id}"), &alice.token).await.expect_error(404),
        "not_found"
    );
    let bob_invite = by_bob["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("{invites}/{bob_invite}"), &bob.token).await.expect_error(403),
        "forbidden"
    );
    app.delete(&format!("{invites}/{bob_invite}"), &alice.token).await.expect(200);
    assert_eq!(
        app.delete(&format!("{invites}/{bob_invite}"), &alice.token).await.expect_error(404),
        "not_found"
    );
    let gone = by_bob["code"].as_str().unwrap();
    assert_eq!(
        app.post(&format!("/community-invites/{gone}/accept"), &dave.token, json!({}))
            .await
            .expect_error(404),
        "not_found"
    );
    app.stop().await;
}

async fn accepting_joins_public_groups_and_their_discoverable_channels(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let cid = create(&app, alice, "Garden").await;
    let public = public_group(&app, cid, alice.id, "public").await;
    let private = public_group(&app, cid, alice.id, "private").await;
    let open_channel = group_channel(&app, alice, public, true).await;
    let hidden_channel = group_channel(&app, alice, public, false).await;
    let private_channel = group_channel(&app, alice, private, true).await;
    // Alice is live in the open channel before bob joins: its actor must learn of bob.
    let mut alice_ws = live(&app, alice, open_channel).await;

    join(&app, alice, cid, bob).await;
    let in_group = |g: Uuid| group_members::Entity::find_by_id((g, bob.id)).one(db(&app));
    assert_eq!(in_group(public).await.unwrap().unwrap().role, "member");
    assert!(in_group(private).await.unwrap().is_none());
    let channels = app.get("/channels", &bob.token).await.expect(200);
    assert_eq!(field(&channels, "id"), vec![open_channel.to_string()]);
    let role = channel_members::Entity::find_by_id((open_channel, bob.id)).one(db(&app)).await.unwrap();
    assert_eq!(role.unwrap().role, "member");
    for c in [hidden_channel, private_channel] {
        assert!(channel_members::Entity::find_by_id((c, bob.id)).one(db(&app)).await.unwrap().is_none());
    }

    // Bob chats at once in the channel whose actor was already running.
    let mut bob_ws = live(&app, bob, open_channel).await;
    send_text(&mut bob_ws, open_channel, "hello").await;
    let msg = alice_ws.expect("new_message").await;
    assert_eq!(msg["sender_id"], bob.id.to_string());
    send_text(&mut alice_ws, open_channel, "welcome").await;
    bob_ws.expect("new_message").await;

    // The caller's groups in the community: only those they belong to, by name.
    let groups = app.get(&format!("/communities/{cid}/groups"), &bob.token).await.expect(200);
    assert_eq!(field(&groups, "id"), vec![public.to_string()]);
    assert_eq!(groups[0]["member_count"], 2);
    assert_eq!(groups[0]["community_id"], cid.to_string());
    for key in
        ["visibility", "discoverable", "assigned_member_id", "allow_invites", "accent_color", "owner_id"]
    {
        assert!(groups[0].get(key).is_some(), "group object lacks {key}");
    }
    let mine = app.get(&format!("/communities/{cid}/groups"), &alice.token).await.expect(200);
    assert_eq!(mine.as_array().unwrap().len(), 2);
    sync(&mut bob_ws).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Members

async fn members_roles_and_nicknames(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol", "dave", "erin"]).await;
    let (alice, bob, carol, dave, erin) = (&u[0], &u[1], &u[2], &u[3], &u[4]);
    let cid = create(&app, alice, "Garden").await;
    for user in [bob, carol, dave] {
        join(&app, alice, cid, user).await;
    }
    let members = format!("/communities/{cid}/members");
    let list = app.get(&members, &dave.token).await.expect(200);
    assert_eq!(field(&list, "username"), vec!["alice", "bob", "carol", "dave"]);
    assert_eq!(field(&list, "role"), vec!["owner", "member", "member", "member"]);
    for key in ["user_id", "display_name", "avatar_url", "nickname", "joined_at"] {
        assert!(list[0].get(key).is_some(), "member object lacks {key}");
    }
    let page = app.get(&format!("{members}?limit=2&offset=1"), &dave.token).await.expect(200);
    assert_eq!(field(&page, "username"), vec!["bob", "carol"]);
    assert_eq!(app.get(&members, &erin.token).await.expect_error(403), "forbidden");

    let role = |user: &TestUser| format!("/communities/{cid}/members/{}/role", user.id);
    // Owner appoints an admin and a moderator.
    app.put(&role(bob), &alice.token, json!({"role": "admin"})).await.expect(200);
    app.put(&role(carol), &alice.token, json!({"role": "moderator"})).await.expect(200);
    // Refusals, in the wire's terms.
    assert_eq!(
        app.put(&role(alice), &alice.token, json!({"role": "member"})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.put(&role(dave), &alice.token, json!({"role": "owner"})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.put(&role(erin), &alice.token, json!({"role": "member"})).await.expect_error(404),
        "not_found"
    );
    assert_eq!(
        app.put(&role(alice), &bob.token, json!({"role": "member"})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.put(&role(dave), &bob.token, json!({"role": "admin"})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.put(&role(dave), &carol.token, json!({"role": "moderator"})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.put(&role(dave), &dave.token, json!({"role": "admin"})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.put(&role(dave), &erin.token, json!({"role": "admin"})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(app.put(&role(dave), &alice.token, json!({})).await.expect_error(400), "validation_error");
    let bad = format!("/communities/{cid}/members/nope/role");
    assert_eq!(
        app.put(&bad, &alice.token, json!({"role": "member"})).await.expect_error(400),
        "validation_error"
    );
    // An admin manages members and moderators, but not other admins.
    app.put(&role(dave), &bob.token, json!({"role": "moderator"})).await.expect(200);
    app.put(&role(dave), &bob.token, json!({"role": "member"})).await.expect(200);
    app.put(&role(carol), &alice.token, json!({"role": "admin"})).await.expect(200);
    assert_eq!(
        app.put(&role(carol), &bob.token, json!({"role": "member"})).await.expect_error(403),
        "forbidden"
    );
    let list = app.get(&members, &dave.token).await.expect(200);
    assert_eq!(field(&list, "role"), vec!["owner", "admin", "admin", "member"]);

    // Nicknames: oneself, or a manager for others.
    let nick = |user: &TestUser| format!("/communities/{cid}/members/{}/nickname", user.id);
    app.put(&nick(dave), &dave.token, json!({"nickname": "  Davey "})).await.expect(200);
    assert_eq!(
        app.put(&nick(bob), &dave.token, json!({"nickname": "x"})).await.expect_error(403),
        "forbidden"
    );
    app.put(&nick(bob), &alice.token, json!({"nickname": "Bobby"})).await.expect(200);
    let list = app.get(&members, &dave.token).await.expect(200);
    assert_eq!(list[1]["nickname"], "Bobby");
    assert_eq!(list[3]["nickname"], "Davey");
    app.put(&nick(dave), &dave.token, json!({"nickname": ""})).await.expect(200);
    app.put(&nick(bob), &bob.token, json!({"nickname": null})).await.expect(200);
    let list = app.get(&members, &dave.token).await.expect(200);
    assert_eq!((list[1]["nickname"].clone(), list[3]["nickname"].clone()), (Value::Null, Value::Null));
    let long = json!({"nickname": "x".repeat(65)});
    assert_eq!(app.put(&nick(dave), &dave.token, long).await.expect_error(400), "validation_error");
    assert_eq!(
        app.put(&nick(erin), &alice.token, json!({"nickname": "e"})).await.expect_error(404),
        "not_found"
    );
    app.stop().await;
}

async fn transfer_ownership_and_leave(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol", "erin"]).await;
    let (alice, bob, carol, erin) = (&u[0], &u[1], &u[2], &u[3]);
    let cid = create(&app, alice, "Garden").await;
    let group = public_group(&app, cid, alice.id, "public").await;
    let channel = group_channel(&app, alice, group, true).await;
    join(&app, alice, cid, bob).await;
    join(&app, alice, cid, carol).await;
    set_role(&app, alice, cid, carol, "admin").await;
    let transfer = format!("/communities/{cid}/transfer-ownership");
    let leave = format!("/communities/{cid}/leave");

    // Only the owner (or instance staff) transfers; the target must be a member.
    assert_eq!(
        app.post(&transfer, &carol.token, json!({"new_owner_id": bob.id})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.post(&transfer, &alice.token, json!({"new_owner_id": erin.id})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.post(&transfer, &alice.token, json!({"new_owner_id": "x"})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(app.post(&transfer, &alice.token, json!({})).await.expect_error(400), "validation_error");
    // The owner cannot leave.
    assert_eq!(app.post(&leave, &alice.token, json!({})).await.expect_error(400), "validation_error");

    app.post(&transfer, &alice.token, json!({"new_owner_id": bob.id})).await.expect(200);
    let c = app.get(&format!("/communities/{cid}"), &alice.token).await.expect(200);
    assert_eq!(c["owner_id"], bob.id.to_string());
    let members = app.get(&format!("/communities/{cid}/members"), &alice.token).await.expect(200);
    assert_eq!(field(&members, "role"), vec!["admin", "owner", "admin"]);
    // The new owner has the owner's powers; the old one does not.
    assert_eq!(app.delete(&format!("/communities/{cid}"), &alice.token).await.expect_error(403), "forbidden");

    // Leaving takes the member out of the community, its groups and group channels.
    assert!(channel_members::Entity::find_by_id((channel, carol.id)).one(db(&app)).await.unwrap().is_some());
    app.post(&leave, &carol.token, json!({})).await.expect(200);
    assert!(!is_member(&app, cid, carol.id).await);
    assert!(group_members::Entity::find_by_id((group, carol.id)).one(db(&app)).await.unwrap().is_none());
    assert!(channel_members::Entity::find_by_id((channel, carol.id)).one(db(&app)).await.unwrap().is_none());
    assert_eq!(app.get(&format!("/communities/{cid}"), &carol.token).await.expect_error(403), "forbidden");
    assert_eq!(app.post(&leave, &carol.token, json!({})).await.expect_error(403), "forbidden");
    // The former owner may leave now.
    app.post(&leave, &alice.token, json!({})).await.expect(200);
    assert_eq!(app.get("/communities", &alice.token).await.expect(200), json!([]));
    app.stop().await;
}

async fn bans_list_add_remove(backend: Backend) {
    let app = open_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol", "erin"]).await;
    let (alice, bob, carol, erin) = (&u[0], &u[1], &u[2], &u[3]);
    let cid = create(&app, alice, "Garden").await;
    join(&app, alice, cid, bob).await;
    join(&app, alice, cid, carol).await;
    set_role(&app, alice, cid, carol, "moderator").await;
    let ban = |user: &TestUser| format!("/communities/{cid}/bans/{}", user.id);
    let bans = format!("/communities/{cid}/bans");

    // Members cannot ban; nobody bans themselves; moderators cannot ban the owner.
    assert_eq!(app.post(&ban(erin), &bob.token, json!({})).await.expect_error(403), "forbidden");
    assert_eq!(app.post(&ban(carol), &carol.token, json!({})).await.expect_error(400), "validation_error");
    assert_eq!(app.post(&ban(alice), &carol.token, json!({})).await.expect_error(403), "forbidden");
    let long = json!({"reason": "x".repeat(501)});
    assert_eq!(app.post(&ban(bob), &carol.token, long).await.expect_error(400), "validation_error");
    let ghost = format!("/communities/{cid}/bans/{}", Uuid::now_v7());
    assert_eq!(app.post(&ghost, &carol.token, json!({})).await.expect_error(404), "not_found");

    // A moderator bans a member (with a reason) and a non-member (pre-emptively).
    app.post(&ban(bob), &carol.token, json!({"reason": "  spam  "})).await.expect(200);
    app.post(&ban(erin), &carol.token, json!({"reason": ""})).await.expect(200);
    assert!(!is_member(&app, cid, bob.id).await);
    let list = app.get(&bans, &carol.token).await.expect(200);
    assert_eq!(field(&list, "username"), vec!["bob", "erin"]);
    assert_eq!(list[0]["reason"], "spam");
    assert_eq!(list[1]["reason"], Value::Null);
    for key in ["user_id", "display_name", "created_at"] {
        assert!(list[0].get(key).is_some(), "ban entry lacks {key}");
    }
    assert_eq!(audit_count(&app, "community_ban").await, 2);

    // Banned users are out: no access, no way back through an invite.
    assert_eq!(app.get(&format!("/communities/{cid}"), &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(app.get(&bans, &bob.token).await.expect_error(403), "forbidden");
    let code = invite(&app, alice, cid).await;
    let back = app.post(&format!("/community-invites/{code}/accept"), &bob.token, json!({})).await;
    assert_eq!(back.expect_error(403), "forbidden");
    assert_eq!(
        app.post(&format!("/community-invites/{code}/accept"), &erin.token, json!({}))
            .await
            .expect_error(403),
        "forbidden"
    );
    let unused = community_invites::Entity::find()
        .filter(community_invites::Column::Code.eq(&code))
        .one(db(&app))
        .await;
    assert_eq!(unused.unwrap().unwrap().used_count, 0, "a refused accept does not use the invite");

    // Unban: moderators; no ban → 404; then the invite works.
    let no_ban = format!("/communities/{cid}/bans/{}", alice.id);
    assert_eq!(app.delete(&no_ban, &carol.token).await.expect_error(404), "not_found");
    app.delete(&ban(bob), &carol.token).await.expect(200);
    assert_eq!(app.delete(&ban(bob), &carol.token).await.expect_error(404), "not_found");
    app.post(&format!("/community-invites/{code}/accept"), &bob.token, json!({})).await.expect(200);
    assert!(community_bans::Entity::find_by_id((cid, bob.id)).one(db(&app)).await.unwrap().is_none());
    assert_eq!(app.get(&bans, &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(audit_count(&app, "community_unban").await, 1);
    app.stop().await;
}

async fn deleting_a_community_removes_everything(backend: Backend) {
    let app = open_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let cid = create(&app, alice, "Garden").await;
    let group = public_group(&app, cid, alice.id, "public").await;
    let channel = group_channel(&app, alice, group, true).await;
    join(&app, alice, cid, bob).await;
    set_role(&app, alice, cid, bob, "admin").await;
    let mut bob_ws = live(&app, bob, channel).await;
    let path = format!("/communities/{cid}");
    assert_eq!(app.delete(&path, &bob.token).await.expect_error(403), "forbidden");
    app.delete(&path, &alice.token).await.expect(200);
    assert_eq!(app.get(&path, &alice.token).await.expect_error(404), "not_found");
    assert_eq!(app.delete(&path, &alice.token).await.expect_error(404), "not_found");
    assert!(communities::Entity::find_by_id(cid).one(db(&app)).await.unwrap().is_none());
    assert!(channels::Entity::find_by_id(channel).one(db(&app)).await.unwrap().is_none());
    assert_eq!(app.get("/communities", &bob.token).await.expect(200), json!([]));
    // The deleted channel's live actor no longer accepts bob's messages.
    bob_ws
        .send(json!({"type": "send_message", "channel_id": channel, "ciphertext": [1], "nonce": [1], "message_type": "text"}))
        .await;
    let err = bob_ws.expect("error").await;
    assert_eq!(err["code"], "forbidden");
    // Instance staff may delete any community.
    let other = create(&app, alice, "Other").await;
    app.delete(&format!("/communities/{other}"), &root.token).await.expect(200);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Authorization matrix

/// The callers of the matrix, in column order.
const ROLES: [&str; 7] = ["instance_owner", "owner", "admin", "moderator", "member", "non_member", "banned"];

/// The people of the matrix; `victim` is a plain member every action is aimed at.
struct Cast {
    root: TestUser,
    owner: TestUser,
    admin: TestUser,
    moderator: TestUser,
    member: TestUser,
    outsider: TestUser,
    banned: TestUser,
    victim: TestUser,
}

impl Cast {
    fn caller(&self, role: &str) -> &TestUser {
        match role {
            "instance_owner" => &self.root,
            "owner" => &self.owner,
            "admin" => &self.admin,
            "moderator" => &self.moderator,
            "member" => &self.member,
            "non_member" => &self.outsider,
            _ => &self.banned,
        }
    }
}

/// A fresh community for one matrix cell, written straight to the database: the cast in their
/// roles, `banned` banned, one public group with a channel everyone is in, an open invite,
/// an active timeout for `victim`.
struct Scene {
    cid: Uuid,
    channel: Uuid,
    invite_id: Uuid,
    code: String,
}

async fn scene(app: &TestApp, cast: &Cast) -> Scene {
    let db = db(app);
    let now = palaver_entity::now();
    let cid = Uuid::now_v7();
    communities::ActiveModel {
        id: Set(cid),
        name: Set("Matrix".into()),
        description: Set(None),
        icon_url: Set(None),
        banner_url: Set(None),
        owner_id: Set(cast.owner.id),
        who_can_create_groups: Set("admin".into()),
        who_can_create_invites: Set("admin".into()),
        discoverable: Set(false),
        community_theme: Set(None),
        welcome_message: Set(None),
        created_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
    let cast_roles = [
        (&cast.owner, "owner"),
        (&cast.admin, "admin"),
        (&cast.moderator, "moderator"),
        (&cast.member, "member"),
        (&cast.victim, "member"),
    ];
    for (user, role) in cast_roles {
        community_members::ActiveModel {
            community_id: Set(cid),
            user_id: Set(user.id),
            role: Set(role.into()),
            nickname: Set(None),
            joined_at: Set(now),
        }
        .insert(db)
        .await
        .unwrap();
    }
    community_bans::ActiveModel {
        community_id: Set(cid),
        user_id: Set(cast.banned.id),
        reason: Set(None),
        banned_by: Set(Some(cast.owner.id)),
        created_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
    let group = public_group(app, cid, cast.owner.id, "public").await;
    let channel = Uuid::now_v7();
    channels::ActiveModel {
        id: Set(channel),
        name: Set(Some("general".into())),
        channel_type: Set("text".into()),
        topic: Set(None),
        created_by: Set(Some(cast.owner.id)),
        group_id: Set(Some(group)),
        read_only: Set(false),
        slow_mode_seconds: Set(0),
        discoverable: Set(true),
        archived: Set(false),
        voice_background: Set(None),
        message_ttl_seconds: Set(None),
        created_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
    for (user, role) in cast_roles {
        channel_members::ActiveModel {
            channel_id: Set(channel),
            user_id: Set(user.id),
            role: Set(if role == "owner" { "owner" } else { "member" }.into()),
            joined_at: Set(now),
        }
        .insert(db)
        .await
        .unwrap();
    }
    channel_timeouts::ActiveModel {
        id: Set(Uuid::now_v7()),
        channel_id: Set(channel),
        user_id: Set(cast.victim.id),
        issued_by: Set(Some(cast.owner.id)),
        reason: Set(None),
        expires_at: Set(now + chrono::Duration::hours(1)),
        created_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
    let invite_id = Uuid::now_v7();
    let code = format!("m{}", &invite_id.simple().to_string()[20..31]);
    community_invites::ActiveModel {
        id: Set(invite_id),
        community_id: Set(cid),
        code: Set(code.clone()),
        created_by: Set(Some(cast.owner.id)),
        max_uses: Set(None),
        used_count: Set(0),
        expires_at: Set(None),
        created_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
    Scene { cid, channel, invite_id, code }
}

/// One endpoint of the matrix: how to call it, and the status each role must get
/// (columns as in `ROLES`).
struct Case {
    name: &'static str,
    method: &'static str,
    path: fn(&Scene, &Cast, &TestUser) -> String,
    body: fn(&Scene, &Cast) -> Value,
    expect: [u16; 7],
}

fn cases() -> Vec<Case> {
    fn none(_: &Scene, _: &Cast) -> Value {
        json!({})
    }
    vec![
        Case {
            name: "list communities",
            method: "GET",
            path: |_, _, _| "/communities".into(),
            body: none,
            expect: [200, 200, 200, 200, 200, 200, 200],
        },
        Case {
            name: "get",
            method: "GET",
            path: |s, _, _| format!("/communities/{}", s.cid),
            body: none,
            expect: [200, 200, 200, 200, 200, 403, 403],
        },
        Case {
            name: "update",
            method: "PATCH",
            path: |s, _, _| format!("/communities/{}", s.cid),
            body: |_, _| json!({"name": "Renamed"}),
            expect: [200, 200, 200, 403, 403, 403, 403],
        },
        Case {
            name: "delete",
            method: "DELETE",
            path: |s, _, _| format!("/communities/{}", s.cid),
            body: none,
            expect: [200, 200, 403, 403, 403, 403, 403],
        },
        Case {
            name: "transfer ownership",
            method: "POST",
            path: |s, _, _| format!("/communities/{}/transfer-ownership", s.cid),
            body: |_, c| json!({"new_owner_id": c.victim.id}),
            expect: [200, 200, 403, 403, 403, 403, 403],
        },
        Case {
            name: "leave",
            method: "POST",
            path: |s, _, _| format!("/communities/{}/leave", s.cid),
            body: none,
            expect: [400, 400, 200, 200, 200, 403, 403],
        },
        Case {
            name: "list members",
            method: "GET",
            path: |s, _, _| format!("/communities/{}/members", s.cid),
            body: none,
            expect: [200, 200, 200, 200, 200, 403, 403],
        },
        Case {
            name: "set role",
            method: "PUT",
            path: |s, c, _| format!("/communities/{}/members/{}/role", s.cid, c.victim.id),
            body: |_, _| json!({"role": "moderator"}),
            expect: [200, 200, 200, 403, 403, 403, 403],
        },
        Case {
            name: "nickname of another",
            method: "PUT",
            path: |s, c, _| format!("/communities/{}/members/{}/nickname", s.cid, c.victim.id),
            body: |_, _| json!({"nickname": "V"}),
            expect: [200, 200, 200, 403, 403, 403, 403],
        },
        Case {
            name: "own nickname",
            method: "PUT",
            path: |s, _, me| format!("/communities/{}/members/{}/nickname", s.cid, me.id),
            body: |_, _| json!({"nickname": "Me"}),
            expect: [404, 200, 200, 200, 200, 403, 403],
        },
        Case {
            name: "kick",
            method: "DELETE",
            path: |s, c, _| format!("/communities/{}/members/{}", s.cid, c.victim.id),
            body: none,
            expect: [200, 200, 200, 200, 403, 403, 403],
        },
        Case {
            name: "list bans",
            method: "GET",
            path: |s, _, _| format!("/communities/{}/bans", s.cid),
            body: none,
            expect: [200, 200, 200, 200, 403, 403, 403],
        },
        Case {
            name: "ban",
            method: "POST",
            path: |s, c, _| format!("/communities/{}/bans/{}", s.cid, c.victim.id),
            body: |_, _| json!({"reason": "matrix"}),
            expect: [200, 200, 200, 200, 403, 403, 403],
        },
        Case {
            name: "unban",
            method: "DELETE",
            path: |s, c, _| format!("/communities/{}/bans/{}", s.cid, c.banned.id),
            body: none,
            expect: [200, 200, 200, 200, 403, 403, 403],
        },
        Case {
            name: "list invites",
            method: "GET",
            path: |s, _, _| format!("/communities/{}/invites", s.cid),
            body: none,
            expect: [200, 200, 200, 403, 403, 403, 403],
        },
        Case {
            name: "create invite",
            method: "POST",
            path: |s, _, _| format!("/communities/{}/invites", s.cid),
            body: none,
            expect: [200, 200, 200, 403, 403, 403, 403],
        },
        Case {
            name: "delete invite",
            method: "DELETE",
            path: |s, _, _| format!("/communities/{}/invites/{}", s.cid, s.invite_id),
            body: none,
            expect: [200, 200, 200, 403, 403, 403, 403],
        },
        Case {
            name: "my groups",
            method: "GET",
            path: |s, _, _| format!("/communities/{}/groups", s.cid),
            body: none,
            expect: [200, 200, 200, 200, 200, 403, 403],
        },
        Case {
            name: "timeout",
            method: "POST",
            path: |s, _, _| format!("/communities/{}/channels/{}/timeout", s.cid, s.channel),
            body: |_, c| json!({"user_id": c.victim.id, "duration_seconds": 600}),
            expect: [200, 200, 200, 200, 403, 403, 403],
        },
        Case {
            name: "remove timeout",
            method: "DELETE",
            path: |s, c, _| format!("/communities/{}/channels/{}/timeout/{}", s.cid, s.channel, c.victim.id),
            body: none,
            expect: [200, 200, 200, 200, 403, 403, 403],
        },
        Case {
            name: "warn",
            method: "POST",
            path: |s, _, _| format!("/communities/{}/channels/{}/warn", s.cid, s.channel),
            body: |_, c| json!({"user_id": c.victim.id, "reason": "be nice"}),
            expect: [200, 200, 200, 200, 403, 403, 403],
        },
        Case {
            name: "warn (client path)",
            method: "POST",
            path: |s, _, _| format!("/communities/{}/channels/{}/warnings", s.cid, s.channel),
            body: |_, c| json!({"user_id": c.victim.id, "reason": "be nice"}),
            expect: [200, 200, 200, 200, 403, 403, 403],
        },
        Case {
            name: "list warnings",
            method: "GET",
            path: |s, c, _| format!("/communities/{}/channels/{}/warnings/{}", s.cid, s.channel, c.victim.id),
            body: none,
            expect: [200, 200, 200, 200, 403, 403, 403],
        },
        Case {
            name: "invite preview",
            method: "GET",
            path: |s, _, _| format!("/community-invites/{}", s.code),
            body: none,
            expect: [200, 200, 200, 200, 200, 200, 200],
        },
        Case {
            name: "accept invite",
            method: "POST",
            path: |s, _, _| format!("/community-invites/{}/accept", s.code),
            body: none,
            expect: [200, 409, 409, 409, 409, 200, 403],
        },
    ]
}

async fn authorization_matrix(backend: Backend) {
    let app = open_app(backend).await;
    let (root, u) =
        users(&app, &["owner", "admin", "moderator", "member", "outsider", "banned", "victim"]).await;
    let mut u = u.into_iter();
    let mut next = || u.next().unwrap();
    let cast = Cast {
        root,
        owner: next(),
        admin: next(),
        moderator: next(),
        member: next(),
        outsider: next(),
        banned: next(),
        victim: next(),
    };
    let cases = cases();
    let mut failures = Vec::new();
    let mut cells = 0;
    for case in &cases {
        for (col, role) in ROLES.iter().enumerate() {
            let scene = scene(&app, &cast).await;
            let caller = cast.caller(role);
            let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
            let path = (case.path)(&scene, &cast, caller);
            let reply =
                app.request(method, &path, Some(&caller.token), Some((case.body)(&scene, &cast))).await;
            cells += 1;
            let got = reply.status.as_u16();
            if got != case.expect[col] {
                failures.push(format!(
                    "{} as {role}: expected {}, got {got} ({})",
                    case.name, case.expect[col], reply.body
                ));
            } else if got >= 400 {
                // Refusals carry the error body with the matching code.
                let code = match got {
                    400 => "validation_error",
                    403 => "forbidden",
                    404 => "not_found",
                    409 => "conflict",
                    _ => "?",
                };
                if reply.body["code"] != code {
                    failures.push(format!("{} as {role}: error body {}", case.name, reply.body));
                }
            }
        }
    }
    assert_eq!(cells, cases.len() * ROLES.len());
    assert!(failures.is_empty(), "{} of {cells} cells wrong:\n{}", failures.len(), failures.join("\n"));
    // Unauthenticated callers get 401 everywhere.
    let scene = scene(&app, &cast).await;
    for case in &cases {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let path = (case.path)(&scene, &cast, &cast.member);
        let reply = app.request(method, &path, None, Some((case.body)(&scene, &cast))).await;
        assert_eq!(reply.status.as_u16(), 401, "{} without a token", case.name);
    }
    app.stop().await;
}

crate::both_backends!(
    create_list_and_get_communities,
    update_validates_and_announces_to_members,
    invites_preview_accept_and_limits,
    accepting_joins_public_groups_and_their_discoverable_channels,
    members_roles_and_nicknames,
    transfer_ownership_and_leave,
    bans_list_add_remove,
    deleting_a_community_removes_everything,
    authorization_matrix,
);
