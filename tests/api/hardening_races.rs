//! Read-then-write races (issue 10, item 8): many concurrent requests that each read, decide
//! and write must leave the state one request at a time would leave, and every answer is a
//! success or a clean 4xx — never a 5xx (SQLite "database is busy" included).

use ed25519_dalek::SigningKey;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::fixtures::{channel_with, community, insert_message, ordered_ids, users};
use crate::common::{Backend, Reply, TestApp, rand_bytes, spawn_app};

/// Every answer is 2xx or a 4xx in the wire's error format; returns the statuses.
#[track_caller]
fn no_server_errors(replies: &[Reply]) -> Vec<u16> {
    for reply in replies {
        assert!(
            reply.status.is_success() || reply.status.is_client_error(),
            "unexpected {}: {}",
            reply.status,
            reply.body
        );
        if reply.status.is_client_error() {
            assert!(
                reply.body["code"].is_string() && reply.body["message"].is_string(),
                "bad error body {}",
                reply.body
            );
        }
    }
    replies.iter().map(|r| r.status.as_u16()).collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

async fn single_choice_votes_by_one_user_keep_exactly_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let poll = app
        .post(
            &format!("/channels/{channel}/polls"),
            &alice.token,
            json!({"question": "Which?", "options": ["a", "b", "c", "d"]}),
        )
        .await
        .expect(200);
    let vote_path = format!("/polls/{}/vote", poll["id"].as_str().unwrap());

    for round in 0..2 {
        let replies = join_all(
            (0..20).map(|i| app.post(&vote_path, &bob.token, json!({"option_index": (i + round) % 4}))),
        )
        .await;
        let statuses = no_server_errors(&replies);
        assert_eq!(count(&statuses, 200), 20, "every vote is taken: {statuses:?}");
        let seen =
            app.get(&format!("/polls/{}", poll["id"].as_str().unwrap()), &alice.token).await.expect(200);
        let votes: Vec<&Value> =
            seen["votes"].as_array().unwrap().iter().filter(|v| v["count"].as_i64() != Some(0)).collect();
        assert_eq!(votes.len(), 1, "one option holds bob's vote: {}", seen["votes"]);
        assert_eq!(votes[0]["count"], 1);
        assert_eq!(votes[0]["voter_ids"], json!([bob.id]));
    }
}

async fn concurrent_pins_never_pass_the_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    app.put("/admin/settings", &root.token, json!({"max_pins_per_channel": "3"})).await.expect(200);
    let channel = channel_with(&app, alice, &[]).await;
    let ids = ordered_ids(20);
    for id in &ids {
        insert_message(&app, *id, channel, Some(alice.id), b"pin me").await;
    }

    let paths: Vec<String> = ids.iter().map(|id| format!("/channels/{channel}/pins/{id}")).collect();
    let replies = join_all(paths.iter().map(|path| app.post(path, &alice.token, json!({})))).await;
    let statuses = no_server_errors(&replies);
    assert_eq!((count(&statuses, 200), count(&statuses, 400)), (3, 17), "{statuses:?}");
    for reply in replies.iter().filter(|r| r.status == StatusCode::BAD_REQUEST) {
        assert_eq!(reply.body["code"], "validation_error");
    }
    let pins = app.get(&format!("/channels/{channel}/pins"), &alice.token).await.expect(200);
    assert_eq!(pins.as_array().unwrap().len(), 3);
}

async fn case_variants_of_one_name_register_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("root").await;
    let variants = ["carol", "Carol", "CAROL", "cArol", "caRol", "carOl", "caroL", "CArol", "caROL", "CaRoL"];
    let replies = join_all(variants.iter().enumerate().map(|(i, name)| {
        let mut body = TestApp::registration_body(name, &SigningKey::from_bytes(&rand_bytes()));
        // Distinct addresses: only the name can collide.
        body["email"] = json!(format!("carol{i}@example.com"));
        app.post_public("/auth/register", body)
    }))
    .await;
    let statuses = no_server_errors(&replies);
    assert_eq!((count(&statuses, 200), count(&statuses, 409)), (1, 9), "{statuses:?}");
    for reply in replies.iter().filter(|r| r.status == StatusCode::CONFLICT) {
        assert_eq!(reply.body["code"], "conflict");
        assert_eq!(reply.body["message"], "username is already taken");
    }
    // Afterwards too: another case variant is refused.
    let late = TestApp::registration_body("CAROl", &SigningKey::from_bytes(&rand_bytes()));
    assert_eq!(app.post_public("/auth/register", late).await.expect_error(409), "conflict");
}

async fn concurrent_scheduled_messages_stop_at_the_pending_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    let channel = channel_with(&app, alice, &[]).await;
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let body = json!({"channel_id": channel, "ciphertext": "[1,2]", "nonce": "[9,9]", "scheduled_for": at});
    // The limit is 50 pending per user.
    let replies = join_all((0..60).map(|_| app.post("/messages/schedule", &alice.token, body.clone()))).await;
    let statuses = no_server_errors(&replies);
    assert_eq!((count(&statuses, 200), count(&statuses, 400)), (50, 10), "{statuses:?}");
    let pending = app.get("/messages/scheduled", &alice.token).await.expect(200);
    assert_eq!(pending.as_array().unwrap().len(), 50);
}

async fn concurrent_group_channels_stop_at_the_group_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    let community = community(&app, &[alice.id]).await;
    let group = app
        .post("/groups", &alice.token, json!({"community_id": community, "name": "Team"}))
        .await
        .expect(200);
    let path = format!("/groups/{}/channels", group["id"].as_str().unwrap());
    // The limit is 100 channels per group; the group starts with "general".
    let replies =
        join_all((0..110).map(|i| {
            app.post(&path, &alice.token, json!({"name": format!("c{i}"), "channel_type": "text"}))
        }))
        .await;
    let statuses = no_server_errors(&replies);
    assert_eq!((count(&statuses, 200), count(&statuses, 400)), (99, 11), "{statuses:?}");
    assert_eq!(app.get(&path, &alice.token).await.expect(200).as_array().unwrap().len(), 100);
}

crate::both_backends!(
    single_choice_votes_by_one_user_keep_exactly_one,
    concurrent_pins_never_pass_the_limit,
    case_variants_of_one_name_register_once,
    concurrent_scheduled_messages_stop_at_the_pending_limit,
    concurrent_group_channels_stop_at_the_group_limit,
);
