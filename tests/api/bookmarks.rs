//! Bookmarks: the web client's paths (`POST /bookmarks` with a body, `DELETE` by bookmark id)
//! and the seed's (`POST|DELETE /bookmarks/{message_id}`), listing, and who may bookmark what.

use palaver_entity::bookmarks;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{channel_with, db, insert_message, ordered_ids, users};
use crate::common::{Backend, spawn_app};

fn ids(list: &Value, key: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|b| b[key].as_str().unwrap().to_string()).collect()
}

async fn bookmarks_on_both_paths(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let m = ordered_ids(3);
    for (i, id) in m.iter().enumerate() {
        insert_message(&app, *id, channel, Some(alice.id), format!("m{i}").as_bytes()).await;
    }

    // Client path: body with message_id and note.
    let first = app
        .post("/bookmarks", &bob.token, json!({"message_id": m[0], "note": " read later "}))
        .await
        .expect(200);
    assert_eq!(first["message_id"], m[0].to_string());
    assert_eq!(first["note"], "read later");
    assert!(first["id"].is_string() && first["created_at"].is_string());
    let again = app.post("/bookmarks", &bob.token, json!({"message_id": m[0], "note": null})).await;
    assert_eq!(again.expect_error(409), "conflict");
    // Seed path: the message id in the path, the body optional.
    let second = app.post(&format!("/bookmarks/{}", m[1]), &bob.token, json!({})).await.expect(200);
    assert!(second["note"].is_null());
    let third = app.post(&format!("/bookmarks/{}", m[2]), &bob.token, json!({"note": "n"})).await.expect(200);

    // Listing: own only, newest first, limit/offset.
    let list = app.get("/bookmarks", &bob.token).await.expect(200);
    assert_eq!(ids(&list, "message_id"), [m[2], m[1], m[0]].map(|id| id.to_string()));
    let page = app.get("/bookmarks?limit=1&offset=1", &bob.token).await.expect(200);
    assert_eq!(ids(&page, "id"), [second["id"].as_str().unwrap()]);
    assert_eq!(app.get("/bookmarks", &alice.token).await.expect(200), json!([]));
    assert_eq!(app.get("/bookmarks?limit=ten", &bob.token).await.expect_error(400), "validation_error");

    // Delete by bookmark id (client) and by message id (seed); others' bookmarks are 404.
    let by_id = format!("/bookmarks/{}", first["id"].as_str().unwrap());
    assert_eq!(app.delete(&by_id, &alice.token).await.expect_error(404), "not_found");
    app.delete(&by_id, &bob.token).await.expect(200);
    assert_eq!(app.delete(&by_id, &bob.token).await.expect_error(404), "not_found");
    app.delete(&format!("/bookmarks/{}", m[1]), &bob.token).await.expect(200);
    assert_eq!(
        ids(&app.get("/bookmarks", &bob.token).await.expect(200), "id"),
        [third["id"].as_str().unwrap()]
    );
    let stored =
        bookmarks::Entity::find().filter(bookmarks::Column::UserId.eq(bob.id)).count(db(&app)).await.unwrap();
    assert_eq!(stored, 1);

    // Refusals: not a member of the message's channel, unknown message, bad input, no token.
    assert_eq!(
        app.post("/bookmarks", &carol.token, json!({"message_id": m[0]})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.post(&format!("/bookmarks/{}", m[0]), &carol.token, json!({})).await.expect_error(403),
        "forbidden"
    );
    let unknown = Uuid::now_v7();
    assert_eq!(
        app.post("/bookmarks", &bob.token, json!({"message_id": unknown})).await.expect_error(404),
        "not_found"
    );
    assert_eq!(
        app.post(&format!("/bookmarks/{unknown}"), &bob.token, json!({})).await.expect_error(404),
        "not_found"
    );
    let long_note = json!({"message_id": m[0], "note": "x".repeat(501)});
    assert_eq!(app.post("/bookmarks", &bob.token, long_note).await.expect_error(400), "validation_error");
    assert_eq!(
        app.post("/bookmarks", &bob.token, json!({"note": "n"})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.post("/bookmarks/nope", &bob.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(app.delete("/bookmarks/nope", &bob.token).await.expect_error(400), "validation_error");
    let anonymous = app.request(reqwest::Method::GET, "/bookmarks", None, None).await;
    assert_eq!(anonymous.expect_error(401), "unauthorized");
    app.stop().await;
}

crate::both_backends!(bookmarks_on_both_paths);
