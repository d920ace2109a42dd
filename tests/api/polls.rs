//! Polls: create / list / get / vote / remove a vote / close, for channel members only, with
//! their live events (poll_created, poll_voted, poll_vote_removed, poll_closed).

use std::time::Duration;

use palaver_entity::polls;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{channel_with, db, expect_quiet, live, users};
use crate::common::{Backend, TestApp, TestUser, spawn_app};

const QUIET: Duration = Duration::from_millis(300);

async fn new_poll(app: &TestApp, user: &TestUser, channel: Uuid, body: Value) -> Value {
    app.post(&format!("/channels/{channel}/polls"), &user.token, body).await.expect(200)
}

fn counts(poll: &Value) -> Vec<i64> {
    poll["votes"].as_array().unwrap().iter().map(|v| v["count"].as_i64().unwrap()).collect()
}

async fn members_create_vote_and_close_with_live_events(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let mut ws = live(&app, bob, channel).await;

    let poll =
        new_poll(&app, alice, channel, json!({"question": " Lunch? ", "options": ["pizza", " sushi "]}))
            .await;
    let poll_id = poll["id"].as_str().unwrap().to_string();
    assert_eq!(poll["question"], "Lunch?");
    assert_eq!(poll["options"], json!(["pizza", "sushi"]));
    assert_eq!(
        (poll["multi_select"].as_bool(), poll["anonymous"].as_bool(), poll["closed"].as_bool()),
        (Some(false), Some(false), Some(false))
    );
    assert!(poll["expires_at"].is_null());
    assert_eq!(poll["created_by"], alice.id.to_string());
    assert_eq!(
        poll["votes"],
        json!([
            {"option_index": 0, "count": 0, "voter_ids": []},
            {"option_index": 1, "count": 0, "voter_ids": []},
        ])
    );
    let created = ws.expect("poll_created").await;
    assert_eq!(created["poll_id"], poll_id);
    assert_eq!(created["channel_id"], channel.to_string());
    assert_eq!(created["created_by"], alice.id.to_string());
    assert_eq!(created["question"], "Lunch?");

    let vote_path = format!("/polls/{poll_id}/vote");
    app.post(&vote_path, &bob.token, json!({"option_index": 0})).await.expect(200);
    let voted = ws.expect("poll_voted").await;
    assert_eq!(
        (voted["option_index"].as_i64(), voted["voter_id"].as_str()),
        (Some(0), Some(bob.id.to_string().as_str()))
    );
    let seen = app.get(&format!("/polls/{poll_id}"), &alice.token).await.expect(200);
    assert_eq!(counts(&seen), [1, 0]);
    assert_eq!(seen["votes"][0]["voter_ids"], json!([bob.id]));

    // Single choice: a new vote moves the old one (removal announced first).
    app.post(&vote_path, &bob.token, json!({"option_index": 1})).await.expect(200);
    assert_eq!(ws.expect("poll_vote_removed").await["option_index"], 0);
    assert_eq!(ws.expect("poll_voted").await["option_index"], 1);
    // Voting again for the same option changes nothing and says nothing.
    app.post(&vote_path, &bob.token, json!({"option_index": 1})).await.expect(200);
    expect_quiet(&mut ws, QUIET).await;
    app.post(&vote_path, &alice.token, json!({"option_index": 1})).await.expect(200);
    ws.expect("poll_voted").await;
    assert_eq!(counts(&app.get(&format!("/polls/{poll_id}"), &bob.token).await.expect(200)), [0, 2]);

    // Removing a vote (announced even when there was none).
    app.delete(&format!("/polls/{poll_id}/vote/1"), &bob.token).await.expect(200);
    let removed = ws.expect("poll_vote_removed").await;
    assert_eq!(
        (removed["option_index"].as_i64(), removed["voter_id"].as_str()),
        (Some(1), Some(bob.id.to_string().as_str()))
    );
    app.delete(&format!("/polls/{poll_id}/vote/0"), &bob.token).await.expect(200);
    ws.expect("poll_vote_removed").await;
    let seen = app.get(&format!("/polls/{poll_id}"), &bob.token).await.expect(200);
    assert_eq!(counts(&seen), [0, 1]);
    assert_eq!(seen["votes"][1]["voter_ids"], json!([alice.id]));

    // Listing: newest first.
    let second =
        new_poll(&app, bob, channel, json!({"question": "Dinner?", "options": ["a", "b", "c"]})).await;
    ws.expect("poll_created").await;
    let list = app.get(&format!("/channels/{channel}/polls"), &alice.token).await.expect(200);
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [second["id"].as_str().unwrap(), poll_id.as_str()]);
    assert_eq!(counts(&list[1]), [0, 1]);

    // Closing: creator only (bob is neither creator nor channel owner); then no more votes.
    let close = format!("/polls/{poll_id}/close");
    assert_eq!(app.post(&close, &bob.token, json!({})).await.expect_error(403), "forbidden");
    app.post(&close, &alice.token, json!({})).await.expect(200);
    let closed = ws.expect("poll_closed").await;
    assert_eq!(
        (closed["poll_id"].as_str(), closed["channel_id"].as_str()),
        (Some(poll_id.as_str()), Some(channel.to_string().as_str()))
    );
    assert_eq!(app.get(&format!("/polls/{poll_id}"), &bob.token).await.expect(200)["closed"], true);
    assert_eq!(
        app.post(&vote_path, &bob.token, json!({"option_index": 0})).await.expect_error(400),
        "validation_error"
    );
    let unvote = app.delete(&format!("/polls/{poll_id}/vote/1"), &alice.token).await;
    assert_eq!(unvote.expect_error(400), "validation_error");

    // Non-members see nothing and do nothing.
    let carol_tries = [
        app.post(
            &format!("/channels/{channel}/polls"),
            &carol.token,
            json!({"question": "q", "options": ["a", "b"]}),
        )
        .await,
        app.get(&format!("/channels/{channel}/polls"), &carol.token).await,
        app.get(&format!("/polls/{poll_id}"), &carol.token).await,
        app.post(
            &format!("/polls/{}/vote", second["id"].as_str().unwrap()),
            &carol.token,
            json!({"option_index": 0}),
        )
        .await,
        app.post(&format!("/polls/{}/close", second["id"].as_str().unwrap()), &carol.token, json!({})).await,
    ];
    for reply in carol_tries {
        assert_eq!(reply.expect_error(403), "forbidden");
    }
    expect_quiet(&mut ws, QUIET).await;
    app.stop().await;
}

async fn bad_input_and_unknown_polls_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    let channel = channel_with(&app, alice, &[]).await;
    let path = format!("/channels/{channel}/polls");
    for body in [
        json!({"question": "", "options": ["a", "b"]}),
        json!({"question": "q".repeat(501), "options": ["a", "b"]}),
        json!({"question": "q", "options": ["a"]}),
        json!({"question": "q", "options": ["a", " "]}),
        json!({"question": "q", "options": ["a", "x".repeat(201)]}),
        json!({"question": "q", "options": (0..11).map(|i| i.to_string()).collect::<Vec<_>>()}),
        json!({"question": "q", "options": ["a", "b"], "expires_in_minutes": 0}),
        json!({"question": "q", "options": ["a", "b"], "expires_in_minutes": 10081}),
        json!({"question": "q"}),
    ] {
        assert_eq!(app.post(&path, &alice.token, body).await.expect_error(400), "validation_error");
    }
    let unknown_channel = format!("/channels/{}/polls", Uuid::now_v7());
    let reply =
        app.post(&unknown_channel, &alice.token, json!({"question": "q", "options": ["a", "b"]})).await;
    assert_eq!(reply.expect_error(404), "not_found");

    let poll = new_poll(
        &app,
        alice,
        channel,
        json!({"question": "q", "options": ["a", "b"], "expires_in_minutes": 60}),
    )
    .await;
    assert!(poll["expires_at"].is_string());
    let id = poll["id"].as_str().unwrap();
    for index in [json!(2), json!(-1), json!("zero")] {
        let reply =
            app.post(&format!("/polls/{id}/vote"), &alice.token, json!({"option_index": index})).await;
        assert_eq!(reply.expect_error(400), "validation_error");
    }
    assert_eq!(
        app.delete(&format!("/polls/{id}/vote/x"), &alice.token).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.delete(&format!("/polls/{id}/vote/7"), &alice.token).await.expect_error(400),
        "validation_error"
    );

    let unknown = Uuid::now_v7();
    assert_eq!(app.get(&format!("/polls/{unknown}"), &alice.token).await.expect_error(404), "not_found");
    let reply = app.post(&format!("/polls/{unknown}/vote"), &alice.token, json!({"option_index": 0})).await;
    assert_eq!(reply.expect_error(404), "not_found");
    assert_eq!(
        app.post(&format!("/polls/{unknown}/close"), &alice.token, json!({})).await.expect_error(404),
        "not_found"
    );
    assert_eq!(app.get("/polls/nope", &alice.token).await.expect_error(400), "validation_error");
    let anonymous = app.request(reqwest::Method::GET, &path, None, None).await;
    assert_eq!(anonymous.expect_error(401), "unauthorized");

    // An expired poll takes no votes.
    polls::Entity::update_many()
        .col_expr(polls::Column::ExpiresAt, Expr::value(palaver_entity::now() - chrono::Duration::minutes(1)))
        .filter(polls::Column::Id.eq(id.parse::<Uuid>().unwrap()))
        .exec(db(&app))
        .await
        .unwrap();
    let reply = app.post(&format!("/polls/{id}/vote"), &alice.token, json!({"option_index": 0})).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    app.stop().await;
}

async fn multi_select_anonymous_and_owner_close(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let mut ws = live(&app, alice, channel).await;

    let poll = new_poll(
        &app,
        bob,
        channel,
        json!({"question": "Which days?", "options": ["mon", "tue", "wed"], "multi_select": true, "anonymous": true}),
    )
    .await;
    ws.expect("poll_created").await;
    let id = poll["id"].as_str().unwrap();
    for index in [0, 2] {
        app.post(&format!("/polls/{id}/vote"), &bob.token, json!({"option_index": index})).await.expect(200);
        let voted = ws.expect("poll_voted").await;
        assert_eq!(voted["option_index"], index);
        assert!(voted["voter_id"].is_null(), "anonymous votes name nobody: {voted}");
    }
    let seen = app.get(&format!("/polls/{id}"), &alice.token).await.expect(200);
    assert_eq!(counts(&seen), [1, 0, 1]);
    assert!(seen["votes"].as_array().unwrap().iter().all(|v| v["voter_ids"] == json!([])));

    // The channel's owner may close someone else's poll.
    app.post(&format!("/polls/{id}/close"), &alice.token, json!({})).await.expect(200);
    ws.expect("poll_closed").await;
    app.stop().await;
}

crate::both_backends!(
    members_create_vote_and_close_with_live_events,
    bad_input_and_unknown_polls_are_refused,
    multi_select_anonymous_and_owner_close,
);
