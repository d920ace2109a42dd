//! The newest history page held by the channel actor: it is always what the database says
//! (every live change and every admin action shows at once), members-only, and it really is
//! served from memory unless `history_cache` is off.

use palaver_entity::messages;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{channel_with, db, live, send_text, users};
use crate::common::{Backend, TestApp, spawn_app, spawn_app_with};

fn ids_of(page: &Value) -> Vec<String> {
    page.as_array().expect("array").iter().map(|m| m["id"].as_str().expect("id").to_string()).collect()
}

/// Changes a message's payload behind the server's back (no event, no invalidation).
async fn overwrite_behind_the_servers_back(app: &TestApp, id: &str, text: &str) {
    let id: Uuid = id.parse().expect("uuid");
    messages::Entity::update_many()
        .col_expr(messages::Column::Ciphertext, Expr::value(text.as_bytes().to_vec()))
        .filter(messages::Column::Id.eq(id))
        .exec(db(app))
        .await
        .expect("update");
}

async fn newest_page_follows_every_live_change(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let path = format!("/channels/{channel}/messages");
    let mut a = live(&app, alice, channel).await;
    let mut b = live(&app, bob, channel).await;

    assert_eq!(app.get(&path, &bob.token).await.expect(200), json!([]));
    let first = send_text(&mut a, channel, "first").await["id"].as_str().unwrap().to_string();
    b.expect("new_message").await;
    let page = app.get(&path, &bob.token).await.expect(200);
    assert_eq!(ids_of(&page), vec![first.clone()]);
    assert_eq!(page[0]["ciphertext"], json!(b"first".to_vec()));

    a.send(
        json!({"type": "edit_message", "message_id": first, "ciphertext": b"edited".to_vec(), "nonce": [9]}),
    )
    .await;
    b.expect_eventually("message_edited").await;
    let page = app.get(&path, &bob.token).await.expect(200);
    assert_eq!(page[0]["ciphertext"], json!(b"edited".to_vec()));
    assert!(page[0]["edited_at"].is_string());

    b.send(json!({"type": "add_reaction", "message_id": first, "emoji": "👍"})).await;
    a.expect_eventually("reaction_added").await;
    let page = app.get(&path, &alice.token).await.expect(200);
    assert_eq!(page[0]["reactions"], json!([{"emoji": "👍", "user_ids": [bob.id]}]));

    a.send(json!({
        "type": "send_message", "channel_id": channel, "ciphertext": b"reply".to_vec(), "nonce": [1],
        "message_type": "text", "thread_id": first,
    }))
    .await;
    let reply = a.expect_eventually("message_sent").await["id"].as_str().unwrap().to_string();
    let page = app.get(&path, &bob.token).await.expect(200);
    assert_eq!(ids_of(&page), vec![reply.clone(), first.clone()]);
    assert_eq!(page[1]["thread_reply_count"], 1);
    let roots = app.get(&format!("{path}?root_only=true"), &bob.token).await.expect(200);
    assert_eq!(ids_of(&roots), vec![first.clone()]);
    let one = app.get(&format!("{path}?limit=1"), &bob.token).await.expect(200);
    assert_eq!(ids_of(&one), vec![reply.clone()]);

    a.send(json!({"type": "delete_message", "message_id": reply})).await;
    b.expect_eventually("message_deleted").await;
    assert_eq!(ids_of(&app.get(&path, &bob.token).await.expect(200)), vec![first.clone()]);
    assert_eq!(ids_of(&app.get(&format!("{path}?limit=1"), &bob.token).await.expect(200)), vec![first]);
    app.stop().await;
}

async fn only_members_read_the_held_page(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let path = format!("/channels/{channel}/messages");
    let mut a = live(&app, alice, channel).await;
    send_text(&mut a, channel, "secret").await;
    assert_eq!(app.get(&path, &bob.token).await.expect(200).as_array().unwrap().len(), 1);
    assert_eq!(app.get(&path, &carol.token).await.expect_error(403), "forbidden");
    app.post(&format!("/channels/{channel}/leave"), &bob.token, json!({})).await.expect(200);
    assert_eq!(app.get(&path, &bob.token).await.expect_error(403), "forbidden", "a member who left");
    let unknown = format!("/channels/{}/messages", Uuid::now_v7());
    assert_eq!(app.get(&unknown, &alice.token).await.expect_error(404), "not_found");
    assert_eq!(
        app.get(&format!("{path}?limit=many"), &alice.token).await.expect_error(400),
        "validation_error"
    );
    app.stop().await;
}

async fn admin_purge_and_quarantine_show_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let path = format!("/channels/{channel}/messages");
    let mut a = live(&app, alice, channel).await;
    // Bob only sends: unsubscribed, his socket hears nothing but his acks.
    let mut b = app.ws(&bob.token).await;
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(send_text(&mut a, channel, text).await["id"].as_str().unwrap().to_string());
    }
    let by_bob = send_text(&mut b, channel, "bob's").await["id"].as_str().unwrap().to_string();
    let newest = |page: Value| ids_of(&page);
    assert_eq!(newest(app.get(&path, &bob.token).await.expect(200)).len(), 4);

    app.post(&format!("/admin/messages/{}/quarantine", ids[2]), &root.token, json!({})).await.expect(200);
    assert_eq!(
        newest(app.get(&path, &bob.token).await.expect(200)),
        vec![by_bob.clone(), ids[1].clone(), ids[0].clone()]
    );
    app.post(&format!("/admin/messages/{}/unquarantine", ids[2]), &root.token, json!({})).await.expect(200);
    assert_eq!(newest(app.get(&path, &bob.token).await.expect(200)).len(), 4);

    app.post(&format!("/admin/purge/message/{}", ids[0]), &root.token, json!({})).await.expect(200);
    assert_eq!(
        newest(app.get(&path, &bob.token).await.expect(200)),
        vec![by_bob, ids[2].clone(), ids[1].clone()]
    );
    app.post(&format!("/admin/purge/user/{}/messages", bob.id), &root.token, json!({})).await.expect(200);
    assert_eq!(newest(app.get(&path, &alice.token).await.expect(200)), vec![ids[2].clone(), ids[1].clone()]);
    app.stop().await;
}

/// Proof that the page comes from memory: a change made behind the server's back (never done
/// by Palaver itself) stays unseen until the channel's held pages are invalidated; with the
/// cache off it shows at once.
async fn the_newest_page_is_served_from_memory_unless_turned_off(backend: Backend) {
    for cache in [true, false] {
        let app = spawn_app_with(backend.clone(), |c| c.history_cache = cache).await;
        let (_root, u) = users(&app, &["alice", "bob"]).await;
        let (alice, bob) = (&u[0], &u[1]);
        let channel = channel_with(&app, alice, &[bob]).await;
        let path = format!("/channels/{channel}/messages");
        let mut a = live(&app, alice, channel).await;
        let id = send_text(&mut a, channel, "original").await["id"].as_str().unwrap().to_string();
        assert_eq!(
            app.get(&path, &bob.token).await.expect(200)[0]["ciphertext"],
            json!(b"original".to_vec())
        );
        overwrite_behind_the_servers_back(&app, &id, "rewritten").await;
        let seen = app.get(&path, &bob.token).await.expect(200)[0]["ciphertext"].clone();
        let expected: &[u8] = if cache { b"original" } else { b"rewritten" };
        assert_eq!(seen, json!(expected.to_vec()), "history_cache = {cache}");
        app.server.as_ref().unwrap().state.hub.history_changed(channel);
        let seen = app.get(&path, &bob.token).await.expect(200)[0]["ciphertext"].clone();
        assert_eq!(seen, json!(b"rewritten".to_vec()), "after invalidation, history_cache = {cache}");
        app.stop().await;
    }
}

crate::both_backends!(
    newest_page_follows_every_live_change,
    only_members_read_the_held_page,
    admin_purge_and_quarantine_show_at_once,
    the_newest_page_is_served_from_memory_unless_turned_off,
);
