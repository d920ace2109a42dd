//! Message reads: history paging (before / after / root_only, hidden messages), the Message
//! object (reactions, thread counters, webhook content), threads, search (per channel and
//! global), edit history and pins (with their live frames).

use std::collections::BTreeMap;
use std::time::Duration;

use palaver_entity::messages;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{
    channel_with, db, insert_message, live, new_channel, ordered_ids, send_text, users,
};
use crate::common::{Backend, TestApp, spawn_app};

fn ids_of(list: &Value) -> Vec<Uuid> {
    list.as_array().expect("array").iter().map(|m| m["id"].as_str().unwrap().parse().unwrap()).collect()
}

async fn set(app: &TestApp, ids: &[Uuid], column: messages::Column, value: sea_orm::Value) {
    messages::Entity::update_many()
        .col_expr(column, Expr::value(value))
        .filter(messages::Column::Id.is_in(ids.to_vec()))
        .exec(db(app))
        .await
        .expect("update messages");
    // Written behind the server's back: held history pages are stale.
    app.server.as_ref().expect("server running").state.hub.all_history_changed();
}

fn hours_from_now(h: i64) -> chrono::DateTime<chrono::Utc> {
    palaver_entity::now() + chrono::Duration::hours(h)
}

async fn history_pages_newest_first_and_hides_removed(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = channel_with(&app, alice, &[bob]).await;
    let ids = ordered_ids(150);
    for (i, m) in ids.iter().enumerate() {
        insert_message(&app, *m, id, Some(alice.id), format!("m{i}").as_bytes()).await;
    }
    let path = format!("/channels/{id}/messages");
    let newest_first = |range: std::ops::Range<usize>| ids[range].iter().rev().copied().collect::<Vec<_>>();

    let page = app.get(&path, &bob.token).await.expect(200);
    assert_eq!(ids_of(&page), newest_first(100..150));
    assert_eq!(page[0]["ciphertext"], json!(b"m149".to_vec()));
    assert_eq!(page[0]["nonce"], json!([7]));
    let page = app.get(&format!("{path}?before={}&limit=100", ids[100]), &bob.token).await.expect(200);
    assert_eq!(ids_of(&page), newest_first(0..100));
    assert_eq!(ids_of(&app.get(&format!("{path}?limit=500"), &bob.token).await.expect(200)).len(), 100);
    let page = app.get(&format!("{path}?after={}&limit=5", ids[10]), &bob.token).await.expect(200);
    assert_eq!(ids_of(&page), newest_first(11..16), "the messages right after the cursor, newest first");
    let page = app.get(&format!("{path}?after={}&before={}", ids[10], ids[13]), &bob.token).await.expect(200);
    assert_eq!(ids_of(&page), newest_first(11..13));

    // Deleted, quarantined and expired messages are hidden; a future expiry is not.
    set(&app, &[ids[149]], messages::Column::DeletedAt, palaver_entity::now().into()).await;
    set(&app, &[ids[148]], messages::Column::QuarantinedAt, palaver_entity::now().into()).await;
    set(&app, &[ids[147]], messages::Column::ExpiresAt, hours_from_now(-1).into()).await;
    set(&app, &[ids[146]], messages::Column::ExpiresAt, hours_from_now(1).into()).await;
    let page = app.get(&format!("{path}?limit=3"), &bob.token).await.expect(200);
    assert_eq!(ids_of(&page), newest_first(144..147));

    // root_only leaves thread replies out; the root shows its reply counters.
    set(&app, &[ids[146]], messages::Column::ThreadId, Some(ids[145]).into()).await;
    let page = app.get(&format!("{path}?limit=2&root_only=true"), &bob.token).await.expect(200);
    assert_eq!(ids_of(&page), vec![ids[145], ids[144]]);
    assert_eq!(page[0]["thread_reply_count"], 1);
    assert!(page[0]["thread_last_reply_at"].is_string());
    assert!(page[1].get("thread_reply_count").is_none() && page[1].get("thread_id").is_none());
    let page = app.get(&format!("{path}?limit=1"), &bob.token).await.expect(200);
    assert_eq!(page[0]["thread_id"], ids[145].to_string());

    assert_eq!(app.get(&path, &carol.token).await.expect_error(403), "forbidden");
    assert_eq!(
        app.get(&format!("{path}?before=yesterday"), &bob.token).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.get(&format!("{path}?limit=many"), &bob.token).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.get(&format!("{path}?root_only=maybe"), &bob.token).await.expect_error(400),
        "validation_error"
    );
    let unknown = format!("/channels/{}/messages", Uuid::now_v7());
    assert_eq!(app.get(&unknown, &bob.token).await.expect_error(404), "not_found");
    assert_eq!(app.request(reqwest::Method::GET, &path, None, None).await.expect_error(401), "unauthorized");
    app.stop().await;
}

async fn message_objects_carry_reactions_threads_and_webhook_content(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let id = channel_with(&app, alice, &[bob]).await;
    let mut alice_ws = live(&app, alice, id).await;
    let mut bob_ws = live(&app, bob, id).await;

    let root = send_text(&mut alice_ws, id, "root").await;
    let root_id = root["id"].as_str().unwrap().to_string();
    bob_ws.expect("new_message").await;
    bob_ws
        .send(json!({"type": "send_message", "channel_id": id, "ciphertext": b"reply".to_vec(), "nonce": [1],
                     "message_type": "text", "thread_id": root_id, "reply_to": root_id}))
        .await;
    let reply = bob_ws.expect("message_sent").await;
    alice_ws.expect("new_message").await;

    let react = |emoji: &str| json!({"type": "add_reaction", "message_id": root_id, "emoji": emoji});
    alice_ws.send(react("👍")).await;
    alice_ws.expect("reaction_added").await;
    bob_ws.send(react("🎉")).await;
    alice_ws.expect("reaction_added").await;
    tokio::time::sleep(Duration::from_millis(250)).await; // one reaction per 200 ms per user
    bob_ws.send(react("👍")).await;
    alice_ws.expect("reaction_added").await;

    let page = app.get(&format!("/channels/{id}/messages"), &bob.token).await.expect(200);
    assert_eq!(page.as_array().unwrap().len(), 2);
    let (r, m) = (&page[0], &page[1]);
    assert_eq!(r["id"], reply["id"]);
    assert_eq!(r["thread_id"], root_id);
    assert_eq!(r["reply_to_id"], root_id);
    assert_eq!(r["sender_id"], bob.id.to_string());
    assert!(r.get("reactions").is_none(), "omitted when empty: {r}");
    assert!(r.get("thread_reply_count").is_none());

    assert_eq!(m["id"], root_id);
    assert_eq!(m["channel_id"], id.to_string());
    assert_eq!(m["sender_id"], alice.id.to_string());
    assert_eq!(m["ciphertext"], json!(b"root".to_vec()));
    assert_eq!(m["nonce"], json!([1, 2, 3]));
    assert_eq!(m["message_type"], "text");
    assert_eq!(m["created_at"], root["created_at"]);
    for key in ["reply_to_id", "sender_key_id", "edited_at"] {
        assert!(m[key].is_null() && m.as_object().unwrap().contains_key(key), "{key} always present");
    }
    assert!(m.get("thread_id").is_none());
    assert_eq!(
        m["reactions"],
        json!([{"emoji": "👍", "user_ids": [alice.id, bob.id]}, {"emoji": "🎉", "user_ids": [bob.id]}]),
        "grouped, in order of first use"
    );
    assert_eq!(m["thread_reply_count"], 1);
    assert_eq!(m["thread_last_reply_at"], reply["created_at"]);
    assert!(m.get("content").is_none() && m.get("webhook_name").is_none());

    // Webhook messages show their stored content (sender null, payload [0]).
    messages::ActiveModel {
        id: Set(Uuid::now_v7()),
        channel_id: Set(id),
        sender_id: Set(None),
        ciphertext: Set(vec![0]),
        nonce: Set(vec![0]),
        message_type: Set("webhook".into()),
        reply_to_id: Set(None),
        sender_key_id: Set(None),
        thread_id: Set(None),
        edited_at: Set(None),
        deleted_at: Set(None),
        quarantined_at: Set(None),
        expires_at: Set(None),
        webhook_content: Set(Some(
            json!({"content": "deploy done", "webhook_name": "CI", "webhook_avatar": null}).to_string(),
        )),
        created_at: Set(palaver_entity::now()),
    }
    .insert(db(&app))
    .await
    .unwrap();
    app.server.as_ref().unwrap().state.hub.history_changed(id);
    let hook = &app.get(&format!("/channels/{id}/messages?limit=1"), &bob.token).await.expect(200)[0];
    assert_eq!(hook["message_type"], "webhook");
    assert!(hook["sender_id"].is_null());
    assert_eq!((hook["content"].as_str(), hook["webhook_name"].as_str()), (Some("deploy done"), Some("CI")));
    assert!(hook.get("webhook_avatar").is_none(), "null avatar omitted: {hook}");
    app.stop().await;
}

async fn threads_list_replies_oldest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = channel_with(&app, alice, &[bob]).await;
    let other = channel_with(&app, alice, &[bob]).await;
    let ids = ordered_ids(8);
    let (root, replies, elsewhere) = (ids[0], &ids[1..6], ids[6]);
    for m in &ids[..6] {
        insert_message(&app, *m, id, Some(bob.id), b"t").await;
    }
    insert_message(&app, elsewhere, other, Some(bob.id), b"x").await;
    set(&app, replies, messages::Column::ThreadId, Some(root).into()).await;
    set(&app, &[replies[4]], messages::Column::DeletedAt, palaver_entity::now().into()).await;
    let path = format!("/channels/{id}/threads/{root}");

    let list = app.get(&path, &alice.token).await.expect(200);
    assert_eq!(ids_of(&list), replies[..4].to_vec(), "oldest first, deleted hidden");
    assert!(list[0]["thread_id"] == root.to_string() && list[0].get("thread_reply_count").is_none());
    assert_eq!(
        ids_of(&app.get(&format!("{path}?limit=2"), &alice.token).await.expect(200)),
        replies[..2].to_vec()
    );
    let page = app.get(&format!("{path}?before={}&limit=2", replies[3]), &alice.token).await.expect(200);
    assert_eq!(ids_of(&page), replies[..2].to_vec());
    let history = app
        .get(&format!("/channels/{id}/messages?limit=1&before={}", replies[0]), &alice.token)
        .await
        .expect(200);
    assert_eq!(history[0]["thread_reply_count"], 4, "only live replies count");

    let wrong = format!("/channels/{id}/threads/{elsewhere}");
    assert_eq!(app.get(&wrong, &alice.token).await.expect_error(404), "not_found");
    let unknown = format!("/channels/{id}/threads/{}", Uuid::now_v7());
    assert_eq!(app.get(&unknown, &alice.token).await.expect_error(404), "not_found");
    assert_eq!(app.get(&path, &carol.token).await.expect_error(403), "forbidden");
    assert_eq!(
        app.get(&format!("{path}?before=x"), &alice.token).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.get(&format!("/channels/{id}/threads/nope"), &alice.token).await.expect_error(400),
        "validation_error"
    );
    app.stop().await;
}

async fn search_matches_text_case_insensitively(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = channel_with(&app, alice, &[bob]).await;
    let private = new_channel(&app, alice, "private").await;
    let ids = ordered_ids(6);
    insert_message(&app, ids[0], id, Some(alice.id), b"Hello World").await;
    insert_message(&app, ids[1], id, Some(bob.id), b"say HELLO there").await;
    insert_message(&app, ids[2], id, Some(bob.id), &[0xff, 0xfe, b'h', b'e', b'l', b'l', b'o', 0xc3]).await;
    insert_message(&app, ids[3], id, Some(alice.id), b"unrelated").await;
    insert_message(&app, ids[4], private, Some(alice.id), b"hello from the private channel").await;
    insert_message(&app, ids[5], id, Some(alice.id), "héllo ÉCOLE".as_bytes()).await;
    // Many newer non-matching messages: the scan has to page past them.
    for filler in ordered_ids(450) {
        insert_message(&app, filler, id, Some(alice.id), b"filler").await;
    }
    let search = |q: &str| format!("/channels/{id}/messages/search?{q}");

    let found = app.get(&search("q=hello"), &bob.token).await.expect(200);
    assert_eq!(ids_of(&found), vec![ids[2], ids[1], ids[0]], "newest first, non-UTF-8 included");
    assert_eq!(found[1]["sender_id"], bob.id.to_string());
    assert_eq!(
        ids_of(&app.get(&search("q=%C3%89cole"), &bob.token).await.expect(200)),
        vec![ids[5]],
        "Unicode case folding"
    );
    assert_eq!(ids_of(&app.get(&search("q=HeLLo&sender=ALI"), &bob.token).await.expect(200)), vec![ids[0]]);
    assert_eq!(app.get(&search("q=hello&sender=nobody"), &bob.token).await.expect(200), json!([]));
    assert_eq!(ids_of(&app.get(&search("q=hello&limit=1"), &bob.token).await.expect(200)), vec![ids[2]]);
    assert_eq!(
        app.get(&search("q=hello&after=2999-01-01T00:00:00Z"), &bob.token).await.expect(200),
        json!([])
    );
    assert_eq!(
        app.get(&search("q=hello&before=2000-01-01T00:00:00Z"), &bob.token).await.expect(200),
        json!([])
    );
    let ignored = app.get(&search("q=hello&after=last-week"), &bob.token).await.expect(200);
    assert_eq!(ids_of(&ignored).len(), 3, "unparsable dates are ignored");
    let since =
        app.get(&search("q=hello&after=2000-01-01T00:00:00Z&before=2999-01-01T00:00:00Z"), &bob.token).await;
    assert_eq!(ids_of(&since.expect(200)).len(), 3);
    assert_eq!(app.get(&search("q=hello&has_file=true"), &bob.token).await.expect(200), json!([]));
    set(&app, &[ids[1]], messages::Column::MessageType, "file".into()).await;
    assert_eq!(
        ids_of(&app.get(&search("q=hello&has_file=true"), &bob.token).await.expect(200)),
        vec![ids[1]]
    );
    set(&app, &[ids[0]], messages::Column::DeletedAt, palaver_entity::now().into()).await;
    assert_eq!(app.get(&search("q=world"), &bob.token).await.expect(200), json!([]), "deleted hidden");

    // Global search covers the caller's channels only.
    assert_eq!(
        ids_of(&app.get("/messages/search?q=hello", &alice.token).await.expect(200)),
        vec![ids[4], ids[2], ids[1]]
    );
    assert_eq!(
        ids_of(&app.get("/messages/search?q=hello", &bob.token).await.expect(200)),
        vec![ids[2], ids[1]]
    );
    assert_eq!(app.get("/messages/search?q=hello", &carol.token).await.expect(200), json!([]));

    // q is 2–256 characters (not bytes).
    let too_long = format!("q={}", "a".repeat(257));
    for q in ["q=h", "", "q=%20%20x%20", too_long.as_str()] {
        assert_eq!(app.get(&search(q), &bob.token).await.expect_error(400), "validation_error", "{q}");
        assert_eq!(
            app.get(&format!("/messages/search?{q}"), &bob.token).await.expect_error(400),
            "validation_error"
        );
    }
    app.get(&search(&format!("q={}", "%C3%A9".repeat(256))), &bob.token).await.expect(200);
    app.get(&search("q=%C3%A9%C3%A9"), &bob.token).await.expect(200);
    assert_eq!(app.get(&search("q=hello&limit=x"), &bob.token).await.expect_error(400), "validation_error");
    assert_eq!(app.get(&search("q=hello"), &carol.token).await.expect_error(403), "forbidden");
    let unknown = format!("/channels/{}/messages/search?q=hello", Uuid::now_v7());
    assert_eq!(app.get(&unknown, &bob.token).await.expect_error(404), "not_found");
    let anon = app.request(reqwest::Method::GET, "/messages/search?q=hello", None, None).await;
    assert_eq!(anon.expect_error(401), "unauthorized");
    app.stop().await;
}

async fn edit_history_lists_earlier_payloads(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = channel_with(&app, alice, &[bob]).await;
    let other = new_channel(&app, alice, "other").await;
    let mut ws = live(&app, alice, id).await;
    let sent = send_text(&mut ws, id, "v1").await;
    let msg = sent["id"].as_str().unwrap();
    for (text, nonce) in [("v2", 2), ("v3", 3)] {
        ws.send(json!({"type": "edit_message", "message_id": msg, "ciphertext": text.as_bytes(), "nonce": [nonce]}))
            .await;
        ws.expect("message_edited").await;
    }
    let path = format!("/channels/{id}/messages/{msg}/history");
    let history = app.get(&path, &bob.token).await.expect(200);
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["old_ciphertext"], json!(b"v1".to_vec()));
    assert_eq!(history[0]["old_nonce"], json!([1, 2, 3]));
    assert_eq!(history[1]["old_ciphertext"], json!(b"v2".to_vec()));
    assert_eq!(history[1]["old_nonce"], json!([2]));
    assert!(history[0]["id"].is_string() && history[0]["edited_at"].is_string());
    let current = &app.get(&format!("/channels/{id}/messages"), &bob.token).await.expect(200)[0];
    assert_eq!(current["ciphertext"], json!(b"v3".to_vec()));
    assert_eq!(current["edited_at"], history[1]["edited_at"]);

    let never_edited = send_text(&mut ws, id, "plain").await;
    let path2 = format!("/channels/{id}/messages/{}/history", never_edited["id"].as_str().unwrap());
    assert_eq!(app.get(&path2, &bob.token).await.expect(200), json!([]));
    let wrong_channel = format!("/channels/{other}/messages/{msg}/history");
    assert_eq!(app.get(&wrong_channel, &alice.token).await.expect_error(404), "not_found");
    let unknown = format!("/channels/{id}/messages/{}/history", Uuid::now_v7());
    assert_eq!(app.get(&unknown, &bob.token).await.expect_error(404), "not_found");
    assert_eq!(app.get(&path, &carol.token).await.expect_error(403), "forbidden");
    app.stop().await;
}

async fn pins_are_moderated_limited_and_broadcast(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let id = channel_with(&app, alice, &[bob]).await;
    let other = new_channel(&app, alice, "other").await;
    let ids = ordered_ids(4);
    let (m1, m2, gone, elsewhere) = (ids[0], ids[1], ids[2], ids[3]);
    for m in [m1, m2, gone] {
        insert_message(&app, m, id, Some(bob.id), b"pin me").await;
    }
    insert_message(&app, elsewhere, other, Some(alice.id), b"x").await;
    set(&app, &[gone], messages::Column::DeletedAt, palaver_entity::now().into()).await;
    let mut bob_ws = live(&app, bob, id).await;
    let pin = |m: Uuid| format!("/channels/{id}/pins/{m}");

    assert_eq!(app.post(&pin(m1), &bob.token, json!({})).await.expect_error(403), "forbidden");
    assert_eq!(app.post(&pin(m1), &carol.token, json!({})).await.expect_error(403), "forbidden");
    app.post(&pin(m1), &alice.token, json!({})).await.expect(200);
    let frame = bob_ws.expect("message_pinned").await;
    assert_eq!(frame["message_id"], m1.to_string());
    assert_eq!(frame["channel_id"], id.to_string());
    assert_eq!(frame["pinned_by"], alice.id.to_string());
    assert!(frame["pinned_at"].is_string());

    assert_eq!(app.post(&pin(m1), &alice.token, json!({})).await.expect_error(409), "conflict");
    assert_eq!(
        app.post(&pin(elsewhere), &alice.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(app.post(&pin(gone), &alice.token, json!({})).await.expect_error(400), "validation_error");
    assert_eq!(app.post(&pin(Uuid::now_v7()), &alice.token, json!({})).await.expect_error(404), "not_found");
    let unknown_channel = format!("/channels/{}/pins/{m1}", Uuid::now_v7());
    assert_eq!(app.post(&unknown_channel, &alice.token, json!({})).await.expect_error(404), "not_found");

    // The instance limit applies.
    let settings = &app.server.as_ref().unwrap().state.settings;
    settings.update(db(&app), BTreeMap::from([("max_pins_per_channel".into(), "1".into())])).await.unwrap();
    assert_eq!(app.post(&pin(m2), &alice.token, json!({})).await.expect_error(400), "validation_error");
    settings.update(db(&app), BTreeMap::from([("max_pins_per_channel".into(), "2".into())])).await.unwrap();
    app.post(&pin(m2), &alice.token, json!({})).await.expect(200);
    bob_ws.expect("message_pinned").await;

    let list = app.get(&format!("/channels/{id}/pins"), &bob.token).await.expect(200);
    assert_eq!(ids_of(&list), vec![m2, m1], "most recently pinned first");
    assert_eq!(list[1]["pinned_by"], alice.id.to_string());
    assert_eq!(list[1]["ciphertext"], json!(b"pin me".to_vec()));
    assert!(list[1]["pinned_at"].is_string() && list[1].get("reactions").is_none());
    assert_eq!(app.get(&format!("/channels/{id}/pins"), &carol.token).await.expect_error(403), "forbidden");

    // Moderators unpin; members cannot; unpinning twice is 404.
    assert_eq!(app.delete(&pin(m1), &bob.token).await.expect_error(403), "forbidden");
    let role = format!("/channels/{id}/members/{}/role", bob.id);
    app.patch(&role, &alice.token, json!({"role": "moderator"})).await.expect(200);
    bob_ws.expect("member_role_updated").await;
    app.delete(&pin(m1), &bob.token).await.expect(200);
    assert_eq!(
        bob_ws.expect_durable("message_unpinned").await,
        json!({"type": "message_unpinned", "message_id": m1, "channel_id": id})
    );
    assert_eq!(app.delete(&pin(m1), &bob.token).await.expect_error(404), "not_found");
    assert_eq!(app.delete(&pin(m1), &carol.token).await.expect_error(403), "forbidden");

    // A pinned message that is deleted drops out of the list.
    set(&app, &[m2], messages::Column::DeletedAt, palaver_entity::now().into()).await;
    assert_eq!(app.get(&format!("/channels/{id}/pins"), &bob.token).await.expect(200), json!([]));
    let anon = app.request(reqwest::Method::GET, &format!("/channels/{id}/pins"), None, None).await;
    assert_eq!(anon.expect_error(401), "unauthorized");
    app.stop().await;
}

crate::both_backends!(
    history_pages_newest_first_and_hides_removed,
    message_objects_carry_reactions_threads_and_webhook_content,
    threads_list_replies_oldest_first,
    search_matches_text_case_insensitively,
    edit_history_lists_earlier_payloads,
    pins_are_moderated_limited_and_broadcast,
);
