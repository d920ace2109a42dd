//! `/groups/*`, group channels and group invites (`/groups/{id}/invites`, `/invites/{code}`,
//! `/group-invites/{code}`): every endpoint's success, bad input and refusals, what persists,
//! the live effects (group_updated, group_deleted, channel_updated, channel_deleted,
//! sender_key_rotation_required) and an authorization matrix over the community's roles.

use std::time::Duration;

use palaver_entity::{
    audit_log, channels, communities, community_bans, community_members, group_invites, group_members, groups,
};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{db, expect_quiet, live, send_text, subscribe, sync, users};
use crate::common::{Backend, TestApp, TestUser, spawn_app};

// ---------------------------------------------------------------------------------------
// Helpers (communities are made directly in the database until the community routes land)

/// A community owned by `owner` with `members` in the given roles; groups may be created by
/// anyone (`who_can_create_groups` = `everyone`) unless changed with `set_policy`.
async fn make_community(app: &TestApp, owner: &TestUser, members: &[(&TestUser, &str)]) -> Uuid {
    let id = Uuid::now_v7();
    let now = palaver_entity::now();
    communities::ActiveModel {
        id: Set(id),
        name: Set("Guild".into()),
        description: Set(None),
        icon_url: Set(None),
        banner_url: Set(None),
        owner_id: Set(owner.id),
        who_can_create_groups: Set("everyone".into()),
        who_can_create_invites: Set("admin".into()),
        discoverable: Set(true),
        community_theme: Set(None),
        welcome_message: Set(None),
        created_at: Set(now),
    }
    .insert(db(app))
    .await
    .expect("insert community");
    add_to_community(app, id, owner, "owner").await;
    for (user, role) in members {
        add_to_community(app, id, user, role).await;
    }
    id
}

async fn add_to_community(app: &TestApp, community: Uuid, user: &TestUser, role: &str) {
    community_members::ActiveModel {
        community_id: Set(community),
        user_id: Set(user.id),
        role: Set(role.into()),
        nickname: Set(None),
        joined_at: Set(palaver_entity::now()),
    }
    .insert(db(app))
    .await
    .expect("insert community member");
}

async fn ban_from_community(app: &TestApp, community: Uuid, user: &TestUser) {
    community_bans::ActiveModel {
        community_id: Set(community),
        user_id: Set(user.id),
        reason: Set(None),
        banned_by: Set(None),
        created_at: Set(palaver_entity::now()),
    }
    .insert(db(app))
    .await
    .expect("insert ban");
}

async fn set_policy(app: &TestApp, community: Uuid, policy: &str) {
    communities::Entity::update_many()
        .col_expr(communities::Column::WhoCanCreateGroups, Expr::value(policy))
        .filter(communities::Column::Id.eq(community))
        .exec(db(app))
        .await
        .expect("set policy");
}

async fn set_group_role(app: &TestApp, group: &str, user: &TestUser, role: &str) {
    group_members::Entity::update_many()
        .col_expr(group_members::Column::Role, Expr::value(role))
        .filter(group_members::Column::GroupId.eq(uuid(group)))
        .filter(group_members::Column::UserId.eq(user.id))
        .exec(db(app))
        .await
        .expect("set group role");
}

fn uuid(s: &str) -> Uuid {
    s.parse().expect("uuid")
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// `POST /groups` (must succeed); `extra` is merged into the body.
async fn new_group(app: &TestApp, user: &TestUser, community: Uuid, name: &str, extra: Value) -> Value {
    let mut body = json!({"community_id": community, "name": name});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    app.post("/groups", &user.token, body).await.expect(200)
}

/// The group's channels as `user` sees them.
async fn group_channels(app: &TestApp, user: &TestUser, group: &str) -> Vec<Value> {
    app.get(&format!("/groups/{group}/channels"), &user.token).await.expect(200).as_array().unwrap().clone()
}

async fn general_of(app: &TestApp, user: &TestUser, group: &str) -> Uuid {
    let list = group_channels(app, user, group).await;
    let general = list.iter().find(|c| c["name"] == "general").expect("general channel");
    uuid(general["id"].as_str().unwrap())
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap().to_string()).collect()
}

fn member_roles(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| (m["username"].as_str().unwrap().to_string(), m["role"].as_str().unwrap().to_string()))
        .collect()
}

async fn my_channel_ids(app: &TestApp, user: &TestUser) -> Vec<String> {
    let list = app.get("/channels", &user.token).await.expect(200);
    list.as_array().unwrap().iter().map(id_of).collect()
}

async fn audit_count(app: &TestApp, action: &str) -> u64 {
    audit_log::Entity::find().filter(audit_log::Column::Action.eq(action)).count(db(app)).await.unwrap()
}

/// Waits (briefly) until no actor serves the channel any more.
async fn assert_actor_stopped(app: &TestApp, channel: Uuid) {
    let hub = &app.server.as_ref().unwrap().state.hub;
    for _ in 0..50 {
        if hub.live_channel_actor(channel).is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the actor of deleted channel {channel} is still running");
}

const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// Create, list, get, discover

async fn create_list_get_and_discover(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob", "carol", "dave"]).await;
    let (alice, bob, carol, dave) = (&u[0], &u[1], &u[2], &u[3]);
    let cid = make_community(&app, alice, &[(bob, "member"), (carol, "admin")]).await;

    // Public group: the whole community joins it and its `general` channel.
    let team = new_group(&app, alice, cid, "  Team ", json!({"description": "the team"})).await;
    assert_eq!(team["name"], "Team");
    assert_eq!(team["description"], "the team");
    assert_eq!(team["member_count"], 3);
    assert_eq!(team["visibility"], "public");
    assert_eq!(team["discoverable"], true);
    assert_eq!(team["allow_invites"], true);
    assert_eq!(team["owner_id"], json!(alice.id));
    assert_eq!(team["community_id"], json!(cid));
    assert_eq!(team["assigned_member_id"], Value::Null);
    for key in ["icon_url", "banner_url", "accent_color"] {
        assert_eq!(team[key], Value::Null, "{key}");
    }
    assert!(team["created_at"].as_str().unwrap().contains('T'));
    let team_id = id_of(&team);
    let chans = group_channels(&app, bob, &team_id).await;
    assert_eq!(chans.len(), 1);
    assert_eq!(
        (chans[0]["name"].as_str(), chans[0]["channel_type"].as_str()),
        (Some("general"), Some("text"))
    );
    assert_eq!(chans[0]["created_by"], json!(alice.id));
    assert_eq!(chans[0]["group_id"], json!(team_id));
    assert!(my_channel_ids(&app, bob).await.contains(&id_of(&chans[0])));
    let members = app.get(&format!("/groups/{team_id}/members"), &bob.token).await.expect(200);
    assert_eq!(
        member_roles(&members),
        vec![
            ("alice".into(), "owner".into()),
            ("bob".into(), "member".into()),
            ("carol".into(), "member".into())
        ]
    );
    let general = uuid(chans[0]["id"].as_str().unwrap());
    let roles = app.get(&format!("/channels/{general}/members"), &alice.token).await.expect(200);
    assert!(member_roles(&roles).contains(&("alice".into(), "owner".into())));

    // Private group by an admin: the creator and the community owner only.
    let secret = new_group(&app, carol, cid, "Secret", json!({"visibility": "private"})).await;
    assert_eq!((secret["member_count"].as_i64(), secret["visibility"].as_str()), (Some(2), Some("private")));
    let secret_id = id_of(&secret);

    // Personal group: forced private; `general` is the assigned member's.
    let personal =
        new_group(&app, carol, cid, "Bob's", json!({"assigned_member_id": bob.id, "visibility": "public"}))
            .await;
    assert_eq!(personal["visibility"], "private");
    assert_eq!(personal["assigned_member_id"], json!(bob.id));
    assert_eq!(personal["member_count"], 2);
    let personal_id = id_of(&personal);
    assert_eq!(group_channels(&app, bob, &personal_id).await[0]["created_by"], json!(bob.id));

    // Lists: own groups by name; discover adds public discoverable ones of the communities.
    assert_eq!(names(&app.get("/groups", &bob.token).await.expect(200)), vec!["Bob's", "Team"]);
    assert_eq!(names(&app.get("/groups", &alice.token).await.expect(200)), vec!["Secret", "Team"]);
    assert_eq!(names(&app.get("/groups", &dave.token).await.expect(200)), Vec::<String>::new());
    assert_eq!(names(&app.get("/groups/discover", &bob.token).await.expect(200)), vec!["Bob's", "Team"]);
    assert_eq!(names(&app.get("/groups/discover", &dave.token).await.expect(200)), Vec::<String>::new());
    assert_eq!(
        names(&app.get("/groups/discover", &root.token).await.expect(200)),
        vec!["Bob's", "Secret", "Team"]
    );

    // Get: members, the instance owner, and moderators+ of personal groups; others 403.
    let got = app.get(&format!("/groups/{team_id}"), &bob.token).await.expect(200);
    assert_eq!((got["name"].as_str(), got["member_count"].as_i64()), (Some("Team"), Some(3)));
    app.get(&format!("/groups/{secret_id}"), &root.token).await.expect(200);
    app.get(&format!("/groups/{personal_id}"), &alice.token).await.expect(200);
    assert_eq!(app.get(&format!("/groups/{secret_id}"), &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(app.get(&format!("/groups/{team_id}"), &dave.token).await.expect_error(403), "forbidden");
    assert_eq!(
        app.get(&format!("/groups/{}", Uuid::now_v7()), &bob.token).await.expect_error(404),
        "not_found"
    );
    assert_eq!(app.get("/groups/not-a-uuid", &bob.token).await.expect_error(400), "validation_error");
    let anon = app.request(reqwest::Method::GET, "/groups", None, None).await;
    assert_eq!(anon.expect_error(401), "unauthorized");
    app.stop().await;
}

async fn create_group_rejects_bad_input_and_outsiders(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob", "dave"]).await;
    let (alice, bob, dave) = (&u[0], &u[1], &u[2]);
    let cid = make_community(&app, alice, &[(bob, "member")]).await;
    let post = |user: &TestUser, body: Value| {
        let token = user.token.clone();
        let app = &app;
        async move { app.post("/groups", &token, body).await }
    };
    for body in [
        json!({"community_id": cid, "name": "  "}),
        json!({"community_id": cid, "name": "x".repeat(65)}),
        json!({"community_id": cid, "name": "a", "description": "x".repeat(2049)}),
        json!({"community_id": cid, "name": "a", "visibility": "secret"}),
        json!({"community_id": "nope", "name": "a"}),
        json!({"name": "a"}),
    ] {
        assert_eq!(post(alice, body.clone()).await.expect_error(400), "validation_error", "{body}");
    }
    assert_eq!(
        post(alice, json!({"community_id": Uuid::now_v7(), "name": "a"})).await.expect_error(404),
        "not_found"
    );
    // Not a member / banned / policy / personal group rules.
    assert_eq!(post(dave, json!({"community_id": cid, "name": "a"})).await.expect_error(403), "forbidden");
    ban_from_community(&app, cid, dave).await;
    assert_eq!(post(dave, json!({"community_id": cid, "name": "a"})).await.expect_error(403), "forbidden");
    set_policy(&app, cid, "moderator").await;
    assert_eq!(post(bob, json!({"community_id": cid, "name": "a"})).await.expect_error(403), "forbidden");
    set_policy(&app, cid, "everyone").await;
    let personal = json!({"community_id": cid, "name": "p", "assigned_member_id": alice.id});
    assert_eq!(post(bob, personal).await.expect_error(403), "forbidden");
    let stranger = json!({"community_id": cid, "name": "p", "assigned_member_id": dave.id});
    assert_eq!(post(alice, stranger).await.expect_error(400), "validation_error");
    // The instance owner may create anywhere (as admin level); nothing was half-written.
    assert_eq!(groups::Entity::find().count(db(&app)).await.unwrap(), 0);
    set_policy(&app, cid, "admin").await;
    let g = new_group(&app, &root, cid, "Root's", json!({})).await;
    assert_eq!(g["member_count"], 3);
    assert_eq!(groups::Entity::find().count(db(&app)).await.unwrap(), 1);
    assert_eq!(channels::Entity::find().count(db(&app)).await.unwrap(), 1);
    app.stop().await;
}

async fn group_and_channel_limits(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    let cid = make_community(&app, alice, &[]).await;
    let now = palaver_entity::now();
    let filler = (0..199).map(|i| groups::ActiveModel {
        id: Set(Uuid::now_v7()),
        community_id: Set(cid),
        name: Set(format!("g{i}")),
        description: Set(None),
        icon_url: Set(None),
        banner_url: Set(None),
        accent_color: Set(None),
        owner_id: Set(alice.id),
        visibility: Set("public".into()),
        discoverable: Set(true),
        assigned_member_id: Set(None),
        allow_invites: Set(true),
        created_at: Set(now),
    });
    groups::Entity::insert_many(filler).exec_without_returning(db(&app)).await.unwrap();
    let last = new_group(&app, alice, cid, "the 200th", json!({})).await;
    let over = app.post("/groups", &alice.token, json!({"community_id": cid, "name": "201"})).await;
    assert_eq!(over.expect_error(400), "validation_error");

    // 100 channels per group: `general` plus 98 more, then one, then refused.
    let gid = uuid(&id_of(&last));
    let filler = (0..98).map(|i| channels::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(Some(format!("c{i}"))),
        channel_type: Set("text".into()),
        topic: Set(None),
        created_by: Set(Some(alice.id)),
        group_id: Set(Some(gid)),
        read_only: Set(false),
        slow_mode_seconds: Set(0),
        discoverable: Set(true),
        archived: Set(false),
        voice_background: Set(None),
        message_ttl_seconds: Set(None),
        created_at: Set(now),
    });
    channels::Entity::insert_many(filler).exec_without_returning(db(&app)).await.unwrap();
    let path = format!("/groups/{gid}/channels");
    app.post(&path, &alice.token, json!({"name": "100th", "channel_type": "text"})).await.expect(200);
    let over = app.post(&path, &alice.token, json!({"name": "101st", "channel_type": "text"})).await;
    assert_eq!(over.expect_error(400), "validation_error");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Update, delete, transfer

async fn update_group_announces_to_the_community(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "frank", "dave"]).await;
    let (alice, bob, frank, dave) = (&u[0], &u[1], &u[2], &u[3]);
    let cid = make_community(&app, alice, &[(bob, "member")]).await;
    let gid = id_of(&new_group(&app, alice, cid, "Team", json!({})).await);
    // Frank joins the community later (not the group): group_updated is community-scoped.
    add_to_community(&app, cid, frank, "member").await;
    let mut bob_ws = app.ws(&bob.token).await;
    let mut frank_ws = app.ws(&frank.token).await;
    let mut dave_ws = app.ws(&dave.token).await;

    let path = format!("/groups/{gid}");
    let body = json!({"name": "Crew", "description": "ours", "accent_color": "#ff8800", "visibility": "private",
        "discoverable": false, "icon_url": "/api/group-assets/x_icon.png"});
    let g = app.patch(&path, &alice.token, body).await.expect(200);
    assert_eq!((g["name"].as_str(), g["description"].as_str()), (Some("Crew"), Some("ours")));
    assert_eq!((g["accent_color"].as_str(), g["visibility"].as_str()), (Some("#ff8800"), Some("private")));
    assert_eq!((g["discoverable"].as_bool(), g["member_count"].as_i64()), (Some(false), Some(2)));
    for ws in [&mut bob_ws, &mut frank_ws] {
        let frame = ws.expect("group_updated").await;
        assert_eq!(frame["group_id"], json!(gid));
        assert_eq!((frame["name"].as_str(), frame["description"].as_str()), (Some("Crew"), Some("ours")));
        assert_eq!(
            (frame["accent_color"].as_str(), frame["visibility"].as_str()),
            (Some("#ff8800"), Some("private"))
        );
        assert_eq!(frame["icon_url"], "/api/group-assets/x_icon.png");
        assert_eq!(frame["banner_url"], Value::Null);
    }
    dave_ws.expect_no("group_updated", QUIET).await;
    // Persisted; "" clears.
    let g = app.patch(&path, &alice.token, json!({"description": "", "icon_url": ""})).await.expect(200);
    assert_eq!((g["description"].clone(), g["icon_url"].clone()), (Value::Null, Value::Null));
    let stored = groups::Entity::find_by_id(uuid(&gid)).one(db(&app)).await.unwrap().unwrap();
    assert_eq!((stored.name.as_str(), stored.description), ("Crew", None));

    // Bad input, and who may.
    for body in [
        json!({"name": ""}),
        json!({"accent_color": "orange"}),
        json!({"visibility": "x"}),
        json!({"icon_url": "javascript:alert(1)"}),
        json!({"description": "x".repeat(2049)}),
    ] {
        assert_eq!(
            app.patch(&path, &alice.token, body.clone()).await.expect_error(400),
            "validation_error",
            "{body}"
        );
    }
    assert_eq!(app.patch(&path, &bob.token, json!({"name": "mine"})).await.expect_error(403), "forbidden");
    assert_eq!(app.patch(&path, &dave.token, json!({"name": "mine"})).await.expect_error(403), "forbidden");
    // A group admin may edit, but allow_invites needs a community moderator.
    set_group_role(&app, &gid, bob, "admin").await;
    app.patch(&path, &bob.token, json!({"name": "Bob edits"})).await.expect(200);
    assert_eq!(
        app.patch(&path, &bob.token, json!({"allow_invites": false})).await.expect_error(403),
        "forbidden"
    );
    let g = app.patch(&path, &alice.token, json!({"allow_invites": false})).await.expect(200);
    assert_eq!(g["allow_invites"], false);
    assert_eq!(
        app.patch(&format!("/groups/{}", Uuid::now_v7()), &alice.token, json!({})).await.expect_error(404),
        "not_found"
    );
    app.stop().await;
}

async fn delete_group_stops_its_channels(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol", "frank", "dave"]).await;
    let (alice, bob, carol, frank, dave) = (&u[0], &u[1], &u[2], &u[3], &u[4]);
    let cid = make_community(&app, alice, &[(bob, "member"), (carol, "moderator")]).await;
    let gid = id_of(&new_group(&app, alice, cid, "Team", json!({})).await);
    add_to_community(&app, cid, frank, "member").await;
    let general = general_of(&app, bob, &gid).await;
    let mut alice_ws = live(&app, alice, general).await;
    let mut bob_ws = live(&app, bob, general).await;
    let mut frank_ws = app.ws(&frank.token).await;
    let mut dave_ws = app.ws(&dave.token).await;
    send_text(&mut alice_ws, general, "hi").await;
    bob_ws.expect("new_message").await;

    // Only the owner of a regular group (not a community moderator, not a member).
    let path = format!("/groups/{gid}");
    assert_eq!(app.delete(&path, &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(app.delete(&path, &carol.token).await.expect_error(403), "forbidden");
    app.delete(&path, &alice.token).await.expect(200);
    for ws in [&mut bob_ws, &mut frank_ws] {
        assert_eq!(ws.expect("group_deleted").await["group_id"], json!(gid));
    }
    dave_ws.expect_no("group_deleted", QUIET).await;
    assert_actor_stopped(&app, general).await;
    // Nothing more from or to the channel.
    alice_ws.expect("group_deleted").await;
    bob_ws
        .send(json!({"type": "send_message", "channel_id": general, "ciphertext": [1], "nonce": [1],
        "message_type": "text"}))
        .await;
    assert_eq!(bob_ws.expect("error").await["code"], "not_found");
    expect_quiet(&mut alice_ws, QUIET).await;
    assert_eq!(app.get(&path, &alice.token).await.expect_error(404), "not_found");
    assert_eq!(app.get(&format!("/channels/{general}"), &alice.token).await.expect_error(404), "not_found");
    assert_eq!(channels::Entity::find().count(db(&app)).await.unwrap(), 0);
    assert_eq!(audit_count(&app, "group_deleted").await, 1);
    assert_eq!(app.delete(&path, &alice.token).await.expect_error(404), "not_found");

    // Personal group: its creator or a community moderator+, not the assigned member.
    let p1 = id_of(&new_group(&app, alice, cid, "p1", json!({"assigned_member_id": bob.id})).await);
    assert_eq!(app.delete(&format!("/groups/{p1}"), &bob.token).await.expect_error(403), "forbidden");
    app.delete(&format!("/groups/{p1}"), &carol.token).await.expect(200);
    let p2 = id_of(&new_group(&app, carol, cid, "p2", json!({"assigned_member_id": bob.id})).await);
    app.delete(&format!("/groups/{p2}"), &carol.token).await.expect(200);
    app.stop().await;
}

async fn transfer_ownership_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob", "dave"]).await;
    let (alice, bob, dave) = (&u[0], &u[1], &u[2]);
    let cid = make_community(&app, alice, &[(bob, "member"), (dave, "member")]).await;
    let gid = id_of(&new_group(&app, alice, cid, "Team", json!({"visibility": "private"})).await);
    app.post(&format!("/groups/{gid}/join"), &bob.token, json!({})).await.expect(200);
    let path = format!("/groups/{gid}/transfer-ownership");
    assert_eq!(
        app.post(&path, &bob.token, json!({"new_owner_id": bob.id})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.post(&path, &root.token, json!({"new_owner_id": bob.id})).await.expect_error(403),
        "forbidden"
    );
    let not_member = app.post(&path, &alice.token, json!({"new_owner_id": dave.id})).await;
    assert_eq!(not_member.expect_error(400), "validation_error");
    assert_eq!(app.post(&path, &alice.token, json!({})).await.expect_error(400), "validation_error");
    app.post(&path, &alice.token, json!({"new_owner_id": bob.id})).await.expect(200);
    let members = app.get(&format!("/groups/{gid}/members"), &bob.token).await.expect(200);
    assert_eq!(
        member_roles(&members),
        vec![("alice".into(), "admin".into()), ("bob".into(), "owner".into())]
    );
    assert_eq!(app.get(&format!("/groups/{gid}"), &alice.token).await.expect(200)["owner_id"], json!(bob.id));
    assert_eq!(
        app.post(&path, &alice.token, json!({"new_owner_id": alice.id})).await.expect_error(403),
        "forbidden"
    );
    // The old owner, now admin, can leave; the new owner cannot.
    assert_eq!(
        app.post(&format!("/groups/{gid}/leave"), &bob.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    // Personal groups keep their owner.
    let p = id_of(&new_group(&app, alice, cid, "p", json!({"assigned_member_id": bob.id})).await);
    let path = format!("/groups/{p}/transfer-ownership");
    let personal = app.post(&path, &alice.token, json!({"new_owner_id": bob.id})).await;
    assert_eq!(personal.expect_error(400), "validation_error");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Join, leave, members

async fn join_and_leave_follow_channels_live(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob", "dave"]).await;
    let (alice, bob, dave) = (&u[0], &u[1], &u[2]);
    let cid = make_community(&app, alice, &[(bob, "member")]).await;
    let gid = id_of(&new_group(&app, alice, cid, "Club", json!({"visibility": "private"})).await);
    let general = general_of(&app, alice, &gid).await;
    // A hidden channel: joining the group still joins it.
    let hidden = app
        .post(
            &format!("/groups/{gid}/channels"),
            &alice.token,
            json!({"name": "back room", "channel_type": "voice"}),
        )
        .await
        .expect(200);
    let hidden_id = uuid(&id_of(&hidden));
    app.patch(&format!("/groups/{gid}/channels/{hidden_id}"), &alice.token, json!({"discoverable": false}))
        .await
        .expect(200);
    let mut alice_ws = live(&app, alice, general).await;
    subscribe(&mut alice_ws, hidden_id).await;
    // Bob is subscribed before he is a member: nothing arrives.
    let mut bob_ws = live(&app, bob, general).await;
    send_text(&mut alice_ws, general, "members only").await;
    expect_quiet(&mut bob_ws, QUIET).await;

    let join = format!("/groups/{gid}/join");
    assert_eq!(app.post(&join, &dave.token, json!({})).await.expect_error(403), "forbidden");
    app.post(&join, &bob.token, json!({})).await.expect(200);
    app.post(&join, &bob.token, json!({})).await.expect(200);
    let mine = my_channel_ids(&app, bob).await;
    assert!(mine.contains(&general.to_string()) && mine.contains(&hidden_id.to_string()), "{mine:?}");
    assert_eq!(names(&app.get("/groups", &bob.token).await.expect(200)), vec!["Club"]);
    subscribe(&mut bob_ws, general).await;
    send_text(&mut alice_ws, general, "welcome").await;
    assert_eq!(bob_ws.expect("new_message").await["ciphertext"], json!(b"welcome".to_vec()));
    send_text(&mut bob_ws, general, "thanks").await;
    alice_ws.expect("new_message").await;

    // Leaving: channels left at once; the rest rotate sender keys for every group channel.
    app.post(&format!("/groups/{gid}/leave"), &bob.token, json!({})).await.expect(200);
    let mut rotated = Vec::new();
    for _ in 0..2 {
        let frame = alice_ws.expect("sender_key_rotation_required").await;
        assert_eq!(frame["reason"], "member_left");
        rotated.push(frame["channel_id"].as_str().unwrap().to_string());
    }
    rotated.sort();
    let mut expected = vec![general.to_string(), hidden_id.to_string()];
    expected.sort();
    assert_eq!(rotated, expected);
    send_text(&mut alice_ws, general, "after").await;
    expect_quiet(&mut bob_ws, QUIET).await;
    assert!(my_channel_ids(&app, bob).await.is_empty());
    assert_eq!(app.get(&format!("/groups/{gid}"), &bob.token).await.expect_error(403), "forbidden");
    let again = app.post(&format!("/groups/{gid}/leave"), &bob.token, json!({})).await;
    assert_eq!(again.expect_error(403), "forbidden");
    let owner = app.post(&format!("/groups/{gid}/leave"), &alice.token, json!({})).await;
    assert_eq!(owner.expect_error(400), "validation_error");

    // Private and not discoverable: invite only. The instance owner may join others.
    app.patch(&format!("/groups/{gid}"), &alice.token, json!({"discoverable": false})).await.expect(200);
    alice_ws.expect("group_updated").await;
    assert_eq!(app.post(&join, &bob.token, json!({})).await.expect_error(403), "forbidden");
    app.patch(&format!("/groups/{gid}"), &alice.token, json!({"visibility": "public"})).await.expect(200);
    app.post(&join, &root.token, json!({})).await.expect(200);
    assert_eq!(
        app.post(&format!("/groups/{}/join", Uuid::now_v7()), &bob.token, json!({})).await.expect_error(404),
        "not_found"
    );
    app.stop().await;
}

async fn member_list_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let cid = make_community(&app, alice, &[(bob, "member"), (carol, "member")]).await;
    let gid = id_of(&new_group(&app, alice, cid, "Team", json!({})).await);
    let page = |q: &str| format!("/groups/{gid}/members{q}");
    let all = app.get(&page(""), &bob.token).await.expect(200);
    assert_eq!(all.as_array().unwrap().len(), 3);
    let first = &all[0];
    for key in ["user_id", "username", "display_name", "role", "joined_at"] {
        assert!(first[key].is_string(), "{key} in {first}");
    }
    assert!(first.get("avatar_url").is_some());
    let second = app.get(&page("?limit=1&offset=1"), &bob.token).await.expect(200);
    assert_eq!(second.as_array().unwrap().len(), 1);
    assert_eq!(second[0]["user_id"], all[1]["user_id"]);
    assert_eq!(app.get(&page("?limit=0"), &bob.token).await.expect(200).as_array().unwrap().len(), 1);
    assert_eq!(app.get(&page("?offset=9"), &bob.token).await.expect(200), json!([]));
    assert_eq!(app.get(&page("?limit=x"), &bob.token).await.expect_error(400), "validation_error");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Group channels

async fn group_channels_create_update_delete(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "frank", "dave"]).await;
    let (alice, bob, frank, dave) = (&u[0], &u[1], &u[2], &u[3]);
    let cid = make_community(&app, alice, &[(bob, "member")]).await;
    let gid = id_of(&new_group(&app, alice, cid, "Team", json!({})).await);
    let other = id_of(&new_group(&app, alice, cid, "Other", json!({})).await);
    let foreign = general_of(&app, alice, &other).await;
    add_to_community(&app, cid, frank, "member").await;
    let path = format!("/groups/{gid}/channels");

    // Create: owner/admin only; every group member joins; always discoverable.
    let body = json!({"name": " news ", "channel_type": "voice", "topic": "t", "discoverable": false,
        "group_id": other});
    let news = app.post(&path, &alice.token, body).await.expect(200);
    assert_eq!((news["name"].as_str(), news["channel_type"].as_str()), (Some("news"), Some("voice")));
    assert_eq!((news["topic"].as_str(), news["discoverable"].as_bool()), (Some("t"), Some(true)));
    assert_eq!(news["group_id"], json!(gid));
    let news_id = uuid(&id_of(&news));
    assert!(my_channel_ids(&app, bob).await.contains(&news_id.to_string()));
    let roles = app.get(&format!("/channels/{news_id}/members"), &alice.token).await.expect(200);
    assert_eq!(member_roles(&roles), vec![("alice".into(), "owner".into()), ("bob".into(), "member".into())]);
    for body in [
        json!({"name": "x", "channel_type": "dm"}),
        json!({"name": "", "channel_type": "text"}),
        json!({"name": "x", "channel_type": "text", "topic": "x".repeat(513)}),
        json!({"channel_type": "text"}),
    ] {
        assert_eq!(
            app.post(&path, &alice.token, body.clone()).await.expect_error(400),
            "validation_error",
            "{body}"
        );
    }
    let refused = app.post(&path, &bob.token, json!({"name": "b", "channel_type": "text"})).await;
    assert_eq!(refused.expect_error(403), "forbidden");

    // List: oldest first; a hidden channel shows only to its members.
    let listed: Vec<String> = group_channels(&app, bob, &gid).await.iter().map(id_of).collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1], news_id.to_string());
    app.post(&format!("/channels/{news_id}/leave"), &bob.token, json!({})).await.expect(200);
    let ch_path = format!("/groups/{gid}/channels/{news_id}");
    app.patch(&ch_path, &alice.token, json!({"discoverable": false})).await.expect(200);
    assert_eq!(group_channels(&app, bob, &gid).await.len(), 1);
    assert_eq!(group_channels(&app, alice, &gid).await.len(), 2);
    app.post(&format!("/groups/{gid}/join"), &bob.token, json!({})).await.expect(200);
    assert_eq!(group_channels(&app, bob, &gid).await.len(), 2);

    // Update: persisted, applied live (channel_updated to subscribers).
    let mut bob_ws = live(&app, bob, news_id).await;
    let body = json!({"name": "updates", "topic": "", "slow_mode_seconds": 30, "read_only": true,
        "archived": false, "message_ttl_seconds": 60});
    let updated = app.patch(&ch_path, &alice.token, body).await.expect(200);
    assert_eq!((updated["name"].as_str(), updated["topic"].clone()), (Some("updates"), Value::Null));
    assert_eq!(
        (updated["slow_mode_seconds"].as_i64(), updated["read_only"].as_bool()),
        (Some(30), Some(true))
    );
    let frame = bob_ws.expect("channel_updated").await;
    assert_eq!((frame["channel_id"].clone(), frame["name"].as_str()), (json!(news_id), Some("updates")));
    assert_eq!((frame["read_only"].as_bool(), frame["slow_mode_seconds"].as_i64()), (Some(true), Some(30)));
    let stored = channels::Entity::find_by_id(news_id).one(db(&app)).await.unwrap().unwrap();
    assert_eq!(stored.message_ttl_seconds, None, "the TTL is not set through this route");
    // Read-only applies to the next send at once.
    bob_ws
        .send(json!({"type": "send_message", "channel_id": news_id, "ciphertext": [1], "nonce": [1],
        "message_type": "text"}))
        .await;
    assert!(bob_ws.expect("error").await["code"].is_string());
    for body in
        [json!({"slow_mode_seconds": 86401}), json!({"name": ""}), json!({"voice_background": "ftp://x"})]
    {
        assert_eq!(
            app.patch(&ch_path, &alice.token, body.clone()).await.expect_error(400),
            "validation_error",
            "{body}"
        );
    }
    assert_eq!(app.patch(&ch_path, &bob.token, json!({"name": "b"})).await.expect_error(403), "forbidden");
    let wrong_group = format!("/groups/{gid}/channels/{foreign}");
    assert_eq!(
        app.patch(&wrong_group, &alice.token, json!({"name": "b"})).await.expect_error(403),
        "forbidden"
    );
    let missing = format!("/groups/{gid}/channels/{}", Uuid::now_v7());
    assert_eq!(app.patch(&missing, &alice.token, json!({"name": "b"})).await.expect_error(404), "not_found");

    // Delete: channel_deleted to the community (not outsiders); its actor stops.
    let mut frank_ws = app.ws(&frank.token).await;
    let mut dave_ws = app.ws(&dave.token).await;
    assert_eq!(app.delete(&ch_path, &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(app.delete(&wrong_group, &alice.token).await.expect_error(403), "forbidden");
    app.delete(&ch_path, &alice.token).await.expect(200);
    for ws in [&mut bob_ws, &mut frank_ws] {
        assert_eq!(ws.expect("channel_deleted").await["channel_id"], json!(news_id));
    }
    dave_ws.expect_no("channel_deleted", QUIET).await;
    assert_actor_stopped(&app, news_id).await;
    assert_eq!(app.get(&format!("/channels/{news_id}"), &alice.token).await.expect_error(404), "not_found");
    assert_eq!(app.delete(&ch_path, &alice.token).await.expect_error(404), "not_found");
    assert_eq!(audit_count(&app, "channel_deleted").await, 1);
    app.stop().await;
}

async fn only_group_members_use_group_channels(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "erin"]).await;
    let (alice, bob, erin) = (&u[0], &u[1], &u[2]);
    let cid = make_community(&app, alice, &[(bob, "member"), (erin, "member")]).await;
    let gid = id_of(&new_group(&app, alice, cid, "Inner", json!({"visibility": "private"})).await);
    app.post(&format!("/groups/{gid}/join"), &bob.token, json!({})).await.expect(200);
    let general = general_of(&app, alice, &gid).await;
    let mut alice_ws = live(&app, alice, general).await;
    let mut bob_ws = live(&app, bob, general).await;
    // Erin is in the community, not the group: subscribe yields nothing, sending is refused.
    let mut erin_ws = live(&app, erin, general).await;

    send_text(&mut alice_ws, general, "from alice").await;
    let got = bob_ws.expect("new_message").await;
    assert_eq!(
        (got["sender_id"].clone(), got["ciphertext"].clone()),
        (json!(alice.id), json!(b"from alice".to_vec()))
    );
    send_text(&mut bob_ws, general, "from bob").await;
    assert_eq!(alice_ws.expect("new_message").await["sender_id"], json!(bob.id));
    expect_quiet(&mut erin_ws, QUIET).await;

    erin_ws
        .send(json!({"type": "send_message", "channel_id": general, "ciphertext": [1], "nonce": [1],
        "message_type": "text"}))
        .await;
    assert_eq!(erin_ws.expect("error").await["code"], "forbidden");
    sync(&mut erin_ws).await;
    expect_quiet(&mut alice_ws, QUIET).await;
    let history = app.get(&format!("/channels/{general}/messages"), &erin.token).await;
    assert_eq!(history.expect_error(403), "forbidden");
    assert_eq!(app.get(&format!("/groups/{gid}/channels"), &erin.token).await.expect_error(403), "forbidden");
    let history = app.get(&format!("/channels/{general}/messages"), &bob.token).await.expect(200);
    assert_eq!(history.as_array().unwrap().len(), 2);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Invites

async fn group_invites_flow(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob", "erin", "frank", "dave", "carol"]).await;
    let (alice, bob, erin, frank, dave, carol) = (&u[0], &u[1], &u[2], &u[3], &u[4], &u[5]);
    let cid = make_community(
        &app,
        alice,
        &[(bob, "member"), (erin, "member"), (frank, "member"), (carol, "admin")],
    )
    .await;
    let gid = id_of(
        &new_group(&app, alice, cid, "Club", json!({"visibility": "private", "description": "d"})).await,
    );
    let general = general_of(&app, alice, &gid).await;
    let path = format!("/groups/{gid}/invites");

    let inv = app.post(&path, &alice.token, json!({"max_uses": 2, "expires_in_hours": 24})).await.expect(200);
    let code = inv["code"].as_str().unwrap().to_string();
    assert!(code.len() == 12 && code.chars().all(|c| c.is_ascii_alphanumeric()), "{code}");
    assert_eq!(
        (inv["group_id"].clone(), inv["max_uses"].as_i64(), inv["used_count"].as_i64()),
        (json!(gid), Some(2), Some(0))
    );
    assert!(inv["expires_at"].is_string() && inv["created_at"].is_string());
    let forever = app.post(&path, &alice.token, json!({})).await.expect(200);
    assert_eq!((forever["max_uses"].clone(), forever["expires_at"].clone()), (Value::Null, Value::Null));
    let listed = app.get(&path, &alice.token).await.expect(200);
    assert_eq!(
        listed.as_array().unwrap().iter().map(id_of).collect::<Vec<_>>(),
        vec![id_of(&inv), id_of(&forever)]
    );
    for body in [json!({"expires_in_hours": 0}), json!({"expires_in_hours": 8761}), json!({"max_uses": 0})] {
        assert_eq!(
            app.post(&path, &alice.token, body.clone()).await.expect_error(400),
            "validation_error",
            "{body}"
        );
    }
    assert_eq!(app.get(&path, &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(app.post(&path, &bob.token, json!({})).await.expect_error(403), "forbidden");

    // Preview: client path and seed path alike; any signed-in user.
    let preview = app.get(&format!("/invites/{code}"), &dave.token).await.expect(200);
    assert_eq!(
        preview,
        json!({"group_name": "Club", "group_description": "d", "member_count": 1, "code": code})
    );
    assert_eq!(app.get(&format!("/group-invites/{code}"), &bob.token).await.expect(200), preview);
    app.patch(&format!("/groups/{gid}"), &alice.token, json!({"discoverable": false})).await.expect(200);
    let hidden = app.get(&format!("/invites/{code}"), &bob.token).await.expect(200);
    assert_eq!(
        (hidden["group_name"].as_str(), hidden["group_description"].clone()),
        (Some("Private Group"), Value::Null)
    );
    assert_eq!(app.get("/invites/nosuchcode", &bob.token).await.expect_error(404), "not_found");
    assert_eq!(
        app.get(&format!("/invites/{}", "a".repeat(101)), &bob.token).await.expect_error(404),
        "not_found"
    );
    let anon = app.request(reqwest::Method::GET, &format!("/invites/{code}"), None, None).await;
    assert_eq!(anon.expect_error(401), "unauthorized");

    // Accept: the community only; the invite counts uses; joining is live.
    let mut alice_ws = live(&app, alice, general).await;
    let mut bob_ws = live(&app, bob, general).await;
    let outsider = app.post(&format!("/invites/{code}/accept"), &dave.token, json!({})).await;
    assert_eq!(outsider.expect_error(400), "validation_error");
    let accepted = app.post(&format!("/invites/{code}/accept"), &bob.token, json!({})).await.expect(200);
    assert_eq!(accepted, json!({"group_id": gid, "group_name": "Club"}));
    assert_eq!(
        app.post(&format!("/invites/{code}/accept"), &bob.token, json!({})).await.expect_error(409),
        "conflict"
    );
    assert!(my_channel_ids(&app, bob).await.contains(&general.to_string()));
    subscribe(&mut bob_ws, general).await;
    send_text(&mut alice_ws, general, "welcome").await;
    bob_ws.expect("new_message").await;
    app.post(&format!("/group-invites/{code}/accept"), &erin.token, json!({})).await.expect(200);
    let used_up = app.post(&format!("/invites/{code}/accept"), &frank.token, json!({})).await;
    assert_eq!(used_up.expect_error(400), "validation_error");
    assert_eq!(app.get(&format!("/invites/{code}"), &frank.token).await.expect_error(404), "not_found");
    let stored = group_invites::Entity::find_by_id(uuid(&id_of(&inv))).one(db(&app)).await.unwrap().unwrap();
    assert_eq!(stored.used_count, 2);
    assert_eq!(
        app.post("/invites/nosuchcode/accept", &frank.token, json!({})).await.expect_error(404),
        "not_found"
    );

    // Expired: preview 404, accept 400. The instance owner needs no community membership.
    let other = forever["code"].as_str().unwrap().to_string();
    group_invites::Entity::update_many()
        .col_expr(
            group_invites::Column::ExpiresAt,
            Expr::value(palaver_entity::now() - chrono::Duration::hours(1)),
        )
        .filter(group_invites::Column::Code.eq(other.clone()))
        .exec(db(&app))
        .await
        .unwrap();
    assert_eq!(app.get(&format!("/invites/{other}"), &frank.token).await.expect_error(404), "not_found");
    let expired = app.post(&format!("/invites/{other}/accept"), &frank.token, json!({})).await;
    assert_eq!(expired.expect_error(400), "validation_error");
    let fresh = app.post(&path, &alice.token, json!({})).await.expect(200);
    let fresh_code = fresh["code"].as_str().unwrap();
    app.post(&format!("/invites/{fresh_code}/accept"), &root.token, json!({})).await.expect(200);
    // A banned user is no community member: the invite does not bring them back.
    community_members::Entity::delete_many()
        .filter(community_members::Column::UserId.eq(frank.id))
        .exec(db(&app))
        .await
        .unwrap();
    ban_from_community(&app, cid, frank).await;
    let banned = app.post(&format!("/invites/{fresh_code}/accept"), &frank.token, json!({})).await;
    assert_eq!(banned.expect_error(400), "validation_error");

    // Delete: managers only; 404 when not this group's.
    let del = format!("{path}/{}", id_of(&fresh));
    assert_eq!(app.delete(&del, &bob.token).await.expect_error(403), "forbidden");
    app.delete(&del, &alice.token).await.expect(200);
    assert_eq!(app.delete(&del, &alice.token).await.expect_error(404), "not_found");
    let other_group = id_of(&new_group(&app, alice, cid, "Else", json!({})).await);
    let foreign = format!("/groups/{other_group}/invites/{}", id_of(&inv));
    assert_eq!(app.delete(&foreign, &alice.token).await.expect_error(404), "not_found");
    assert_eq!(app.get(&format!("/invites/{fresh_code}"), &alice.token).await.expect_error(404), "not_found");

    // Personal group with invites off: the assigned member (even as group admin) may not.
    let p = id_of(&new_group(&app, carol, cid, "Bob's", json!({"assigned_member_id": bob.id})).await);
    app.patch(&format!("/groups/{p}"), &carol.token, json!({"allow_invites": false})).await.expect(200);
    set_group_role(&app, &p, bob, "admin").await;
    let off = app.post(&format!("/groups/{p}/invites"), &bob.token, json!({})).await;
    assert_eq!(off.expect_error(400), "validation_error");
    app.post(&format!("/groups/{p}/invites"), &carol.token, json!({})).await.expect(200);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Authorization matrix

/// The roles of the matrix, in column order.
const ROLES: [&str; 8] = [
    "instance_owner",
    "community_owner",
    "community_admin",
    "moderator",
    "member",
    "group_owner",
    "non_member",
    "banned",
];

struct Fixture {
    app: TestApp,
    users: Vec<TestUser>,
    community: Uuid,
    /// Groups for calls that change no membership (a fresh one is made for those that do).
    shared: String,
    shared_personal: String,
}

impl Fixture {
    fn user(&self, role: &str) -> &TestUser {
        &self.users[ROLES.iter().position(|r| *r == role).expect("known role")]
    }

    /// A private, discoverable group owned by the group owner; the community owner is in it.
    async fn group(&self) -> String {
        id_of(
            &new_group(
                &self.app,
                self.user("group_owner"),
                self.community,
                "G",
                json!({"visibility": "private"}),
            )
            .await,
        )
    }

    /// A personal group for the plain member, made by the moderator.
    async fn personal(&self) -> String {
        let body = json!({"assigned_member_id": self.user("member").id});
        id_of(&new_group(&self.app, self.user("moderator"), self.community, "P", body).await)
    }

    async fn channel(&self, group: &str) -> String {
        let body = json!({"name": "extra", "channel_type": "text"});
        let c =
            self.app.post(&format!("/groups/{group}/channels"), &self.user("group_owner").token, body).await;
        id_of(&c.expect(200))
    }

    async fn invite(&self, group: &str) -> String {
        let inv = self
            .app
            .post(&format!("/groups/{group}/invites"), &self.user("group_owner").token, json!({}))
            .await;
        inv.expect(200)["code"].as_str().unwrap().to_string()
    }
}

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    ListGroups,
    Discover,
    CreateGroup,
    CreatePersonal,
    GetGroup,
    GetPersonal,
    PatchGroup,
    DeleteGroup,
    DeletePersonal,
    Transfer,
    Join,
    Leave,
    Members,
    ListChannels,
    CreateChannel,
    PatchChannel,
    DeleteChannel,
    ListInvites,
    CreateInvite,
    DeleteInvite,
    InviteInfo,
    AcceptInvite,
}

/// Runs one endpoint as `user` against fresh state where it mutates; returns the status.
async fn call(fx: &Fixture, endpoint: Endpoint, user: &TestUser) -> u16 {
    let app = &fx.app;
    let t = &user.token;
    let cid = fx.community;
    let reply = match endpoint {
        Endpoint::ListGroups => app.get("/groups", t).await,
        Endpoint::Discover => app.get("/groups/discover", t).await,
        Endpoint::CreateGroup => app.post("/groups", t, json!({"community_id": cid, "name": "new"})).await,
        Endpoint::CreatePersonal => {
            let body =
                json!({"community_id": cid, "name": "mine", "assigned_member_id": fx.user("member").id});
            app.post("/groups", t, body).await
        }
        Endpoint::GetGroup => app.get(&format!("/groups/{}", fx.shared), t).await,
        Endpoint::GetPersonal => app.get(&format!("/groups/{}", fx.shared_personal), t).await,
        Endpoint::PatchGroup => {
            app.patch(&format!("/groups/{}", fx.shared), t, json!({"description": "x"})).await
        }
        Endpoint::DeleteGroup => app.delete(&format!("/groups/{}", fx.group().await), t).await,
        Endpoint::DeletePersonal => app.delete(&format!("/groups/{}", fx.personal().await), t).await,
        Endpoint::Transfer => {
            let g = fx.group().await;
            let body = json!({"new_owner_id": fx.user("community_owner").id});
            app.post(&format!("/groups/{g}/transfer-ownership"), t, body).await
        }
        Endpoint::Join => app.post(&format!("/groups/{}/join", fx.group().await), t, json!({})).await,
        Endpoint::Leave => app.post(&format!("/groups/{}/leave", fx.group().await), t, json!({})).await,
        Endpoint::Members => app.get(&format!("/groups/{}/members", fx.shared), t).await,
        Endpoint::ListChannels => app.get(&format!("/groups/{}/channels", fx.shared), t).await,
        Endpoint::CreateChannel => {
            let body = json!({"name": "c", "channel_type": "text"});
            app.post(&format!("/groups/{}/channels", fx.shared), t, body).await
        }
        Endpoint::PatchChannel => {
            let g = &fx.shared;
            let c = fx.channel(g).await;
            app.patch(&format!("/groups/{g}/channels/{c}"), t, json!({"topic": "x"})).await
        }
        Endpoint::DeleteChannel => {
            let g = &fx.shared;
            let c = fx.channel(g).await;
            app.delete(&format!("/groups/{g}/channels/{c}"), t).await
        }
        Endpoint::ListInvites => app.get(&format!("/groups/{}/invites", fx.shared), t).await,
        Endpoint::CreateInvite => app.post(&format!("/groups/{}/invites", fx.shared), t, json!({})).await,
        Endpoint::DeleteInvite => {
            let g = &fx.shared;
            let made =
                app.post(&format!("/groups/{g}/invites"), &fx.user("group_owner").token, json!({})).await;
            let id = id_of(&made.expect(200));
            app.delete(&format!("/groups/{g}/invites/{id}"), t).await
        }
        Endpoint::InviteInfo => {
            let code = fx.invite(&fx.shared).await;
            app.get(&format!("/invites/{code}"), t).await
        }
        Endpoint::AcceptInvite => {
            let code = fx.invite(&fx.group().await).await;
            app.post(&format!("/invites/{code}/accept"), t, json!({})).await
        }
    };
    reply.status.as_u16()
}

async fn authorization_matrix(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.register("root").await;
    let mut users = vec![root];
    for name in &ROLES[1..] {
        users.push(app.register(name).await);
    }
    let fx_users = users.clone();
    let by = |role: &str| &fx_users[ROLES.iter().position(|r| *r == role).unwrap()];
    let community = make_community(
        &app,
        by("community_owner"),
        &[
            (by("community_admin"), "admin"),
            (by("moderator"), "moderator"),
            (by("member"), "member"),
            (by("group_owner"), "member"),
        ],
    )
    .await;
    ban_from_community(&app, community, by("banned")).await;
    let mut fx = Fixture { app, users, community, shared: String::new(), shared_personal: String::new() };
    fx.shared = fx.group().await;
    fx.shared_personal = fx.personal().await;

    use Endpoint::*;
    // Columns: instance owner, community owner, community admin, moderator, member,
    // group owner, non-member, banned. The group is private and discoverable, owned by a
    // plain community member; the community owner is auto-added as a group member.
    #[rustfmt::skip]
    let matrix: &[(Endpoint, [u16; 8])] = &[
        (ListGroups,     [200, 200, 200, 200, 200, 200, 200, 200]),
        (Discover,       [200, 200, 200, 200, 200, 200, 200, 200]),
        (GetGroup,       [200, 200, 403, 403, 403, 200, 403, 403]),
        (GetPersonal,    [200, 200, 200, 200, 200, 403, 403, 403]),
        (PatchGroup,     [200, 403, 403, 403, 403, 200, 403, 403]),
        (DeleteGroup,    [403, 403, 403, 403, 403, 200, 403, 403]),
        (DeletePersonal, [200, 200, 200, 200, 403, 403, 403, 403]),
        (Transfer,       [403, 403, 403, 403, 403, 200, 403, 403]),
        (Join,           [200, 200, 200, 200, 200, 200, 403, 403]),
        (Leave,          [403, 200, 403, 403, 403, 400, 403, 403]),
        (Members,        [200, 200, 403, 403, 403, 200, 403, 403]),
        (ListChannels,   [200, 200, 403, 403, 403, 200, 403, 403]),
        (CreateChannel,  [200, 403, 403, 403, 403, 200, 403, 403]),
        (PatchChannel,   [200, 403, 403, 403, 403, 200, 403, 403]),
        (DeleteChannel,  [200, 403, 403, 403, 403, 200, 403, 403]),
        (ListInvites,    [200, 403, 403, 403, 403, 200, 403, 403]),
        (CreateInvite,   [200, 403, 403, 403, 403, 200, 403, 403]),
        (DeleteInvite,   [200, 403, 403, 403, 403, 200, 403, 403]),
        (InviteInfo,     [200, 200, 200, 200, 200, 200, 200, 200]),
        (AcceptInvite,   [200, 409, 200, 200, 200, 409, 400, 400]),
        (CreatePersonal, [200, 200, 200, 200, 403, 403, 403, 403]),
        // Last: from here on only moderators and above may create groups.
        (CreateGroup,    [200, 200, 200, 200, 200, 200, 403, 403]),
    ];
    let mut failures = Vec::new();
    for (endpoint, expected) in matrix {
        for (i, role) in ROLES.iter().enumerate() {
            let status = call(&fx, *endpoint, &fx.users[i]).await;
            if status != expected[i] {
                failures.push(format!("{endpoint:?} as {role}: got {status}, expected {}", expected[i]));
            }
        }
    }
    // The community policy decides who creates groups.
    set_policy(&fx.app, fx.community, "moderator").await;
    let expected = [200, 200, 200, 200, 403, 403, 403, 403];
    for (i, role) in ROLES.iter().enumerate() {
        let status = call(&fx, Endpoint::CreateGroup, &fx.users[i]).await;
        if status != expected[i] {
            failures.push(format!(
                "CreateGroup (moderator policy) as {role}: got {status}, expected {}",
                expected[i]
            ));
        }
    }
    assert!(failures.is_empty(), "authorization matrix mismatches:\n{}", failures.join("\n"));
    assert_eq!(matrix.len() * ROLES.len() + ROLES.len(), 23 * 8);
    fx.app.stop().await;
}

crate::both_backends!(
    create_list_get_and_discover,
    create_group_rejects_bad_input_and_outsiders,
    group_and_channel_limits,
    update_group_announces_to_the_community,
    delete_group_stops_its_channels,
    transfer_ownership_rules,
    join_and_leave_follow_channels_live,
    member_list_pages,
    group_channels_create_update_delete,
    only_group_members_use_group_channels,
    group_invites_flow,
    authorization_matrix,
);
