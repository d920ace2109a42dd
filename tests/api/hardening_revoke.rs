//! Issue 10, item 5: revocation reaches live sockets. Revoking logins (password change,
//! logout everywhere, revoke the other sessions, one session, account recovery) closes the
//! sockets those logins opened with 4001, and only those; a changed role (instance admin,
//! channel role) changes what an already open socket may do.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{channel_in_db, send_frame, subscribed_with};
use crate::common::{Backend, TestApp, TestUser, WsClient, spawn_app};

/// Generous: the server closes within a second, the machine may be loaded.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
const NEW_PASSWORD: &str = "Another-Horse-7";

/// A fresh login of `user`: (access token, refresh token).
async fn login(app: &TestApp, user: &TestUser) -> (String, String) {
    let reply = app
        .post_public("/auth/login", json!({"username": user.username, "password": user.password}))
        .await
        .expect(200);
    (reply["access_token"].as_str().unwrap().into(), reply["refresh_token"].as_str().unwrap().into())
}

/// The socket was closed as an expired session.
#[track_caller]
fn assert_unauthorized_close(code: Option<u16>, which: &str) {
    assert_eq!(code, Some(4001), "{which}: expected close code 4001");
}

/// The socket is open and answers.
async fn assert_alive(ws: &mut WsClient, which: &str) {
    ws.send(json!({"type": "ping", "timestamp": 42})).await;
    let pong = ws.next_frame(CLOSE_WAIT).await.unwrap_or_else(|| panic!("{which}: socket closed"));
    assert_eq!((pong["type"].as_str(), pong["timestamp"].as_i64()), (Some("pong"), Some(42)), "{which}");
}

/// A revoked login's still-unexpired access token opens no new socket.
async fn assert_socket_refused(app: &TestApp, token: &str, which: &str) {
    let mut ws = app.ws_raw().await;
    ws.send(json!({"type": "authenticate", "token": token})).await;
    let answer = ws.next_frame(CLOSE_WAIT).await.unwrap_or_else(|| panic!("{which}: no answer"));
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("unauthorized")),
        "{which}"
    );
    assert_unauthorized_close(ws.expect_close(CLOSE_WAIT).await, which);
}

async fn password_change_closes_every_socket_of_the_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let (phone_token, _) = login(&app, &alice).await;
    let mut laptop = app.ws(&alice.token).await;
    let mut phone = app.ws(&phone_token).await;
    let mut bystander = app.ws(&bob.token).await;

    let body = json!({"current_password": alice.password, "new_password": NEW_PASSWORD});
    app.put("/account/password", &phone_token, body).await.expect(200);

    assert_unauthorized_close(laptop.expect_close(CLOSE_WAIT).await, "laptop");
    assert_unauthorized_close(phone.expect_close(CLOSE_WAIT).await, "phone");
    assert_alive(&mut bystander, "another user's socket").await;
    assert_socket_refused(&app, &alice.token, "reconnecting laptop").await;
    // A login with the new password connects as usual.
    let relogin = TestUser { password: NEW_PASSWORD.into(), ..alice.clone() };
    let (token, _) = login(&app, &relogin).await;
    assert_alive(&mut app.ws(&token).await, "socket of a new login").await;
    app.stop().await;
}

async fn logout_everywhere_closes_every_socket_of_the_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut first = app.ws(&alice.token).await;
    let mut second = app.ws(&alice.token).await;
    let mut bystander = app.ws(&bob.token).await;

    let reply = app.post("/account/logout-all", &alice.token, json!({})).await.expect(200);
    assert!(reply["revoked_count"].as_u64().is_some(), "{reply}");

    assert_unauthorized_close(first.expect_close(CLOSE_WAIT).await, "first socket");
    assert_unauthorized_close(second.expect_close(CLOSE_WAIT).await, "second socket");
    assert_alive(&mut bystander, "another user's socket").await;
    assert_socket_refused(&app, &alice.token, "reconnecting socket").await;
    app.stop().await;
}

async fn revoking_the_other_sessions_keeps_the_current_logins_sockets(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = channel_in_db(&app, &[&alice, &bob]).await;
    // The registration is one login (the old device), this login another (the current one).
    let (current_token, _) = login(&app, &alice).await;
    let mut old_device = subscribed_with(&app, &alice.token, channel).await;
    let mut current = subscribed_with(&app, &current_token, channel).await;
    let mut current_too = subscribed_with(&app, &current_token, channel).await;

    app.post("/account/sessions/revoke-all", &current_token, json!({})).await.expect(200);

    assert_unauthorized_close(old_device.expect_close(CLOSE_WAIT).await, "other login's socket");
    // The current login's sockets stay open and keep receiving.
    let mut bob_ws = app.ws(&bob.token).await;
    bob_ws.send(send_frame(channel, "still there?")).await;
    bob_ws.expect("message_sent").await;
    for (ws, which) in [(&mut current, "current socket"), (&mut current_too, "current login's second socket")]
    {
        let message = ws.expect_eventually("new_message").await;
        assert_eq!(message["sender_id"], bob.id.to_string(), "{which}");
        assert_alive(ws, which).await;
    }
    assert_socket_refused(&app, &alice.token, "reconnecting other login").await;
    assert_alive(&mut app.ws(&current_token).await, "a new socket of the current login").await;
    app.stop().await;
}

async fn revoking_one_session_closes_only_the_sockets_of_that_login(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let (token, refresh) = login(&app, &alice).await;
    let mut other_login = app.ws(&alice.token).await;
    let mut revoked = app.ws(&token).await;
    // A token refreshed from the same login belongs to it too.
    let rotated = app.post_public("/auth/refresh", json!({"refresh_token": refresh})).await.expect(200);
    let rotated_token = rotated["access_token"].as_str().unwrap().to_string();
    let mut revoked_too = app.ws(&rotated_token).await;

    let sessions = app.get("/account/sessions", &rotated_token).await.expect(200);
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 1, "the login replaced the registration's session: {sessions:?}");
    let id = sessions[0]["id"].as_str().unwrap();
    app.delete(&format!("/account/sessions/{id}"), &rotated_token).await.expect(200);

    assert_unauthorized_close(revoked.expect_close(CLOSE_WAIT).await, "the revoked login's socket");
    assert_unauthorized_close(revoked_too.expect_close(CLOSE_WAIT).await, "its refreshed token's socket");
    assert_alive(&mut other_login, "another login's socket").await;
    assert_socket_refused(&app, &rotated_token, "reconnecting revoked login").await;
    assert_alive(&mut app.ws(&alice.token).await, "a new socket of the other login").await;
    // Unknown session: 404, and nothing else closes.
    let unknown = format!("/account/sessions/{}", Uuid::new_v4());
    assert_eq!(app.delete(&unknown, &alice.token).await.expect_error(404), "not_found");
    assert_alive(&mut other_login, "another login's socket after a 404").await;
    app.stop().await;
}

async fn account_recovery_closes_every_socket_of_the_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut socket = app.ws(&alice.token).await;
    let mut bystander = app.ws(&bob.token).await;

    let body = json!({
        "username": "alice",
        "recovery_code": alice.recovery_code,
        "new_password": NEW_PASSWORD,
    });
    app.post_public("/auth/recover", body).await.expect(200);

    assert_unauthorized_close(socket.expect_close(CLOSE_WAIT).await, "recovered account's socket");
    assert_alive(&mut bystander, "another user's socket").await;
    assert_socket_refused(&app, &alice.token, "reconnecting socket").await;
    app.stop().await;
}

async fn admin_password_reset_closes_the_users_sockets(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let mut socket = app.ws(&alice.token).await;
    let mut owners = app.ws(&owner.token).await;

    let path = format!("/admin/users/{}/password", alice.id);
    app.put(&path, &owner.token, json!({"new_password": NEW_PASSWORD})).await.expect(200);

    assert_unauthorized_close(socket.expect_close(CLOSE_WAIT).await, "reset account's socket");
    assert_alive(&mut owners, "the admin's socket").await;
    assert_socket_refused(&app, &alice.token, "reconnecting socket").await;
    app.stop().await;
}

async fn replayed_refresh_token_closes_the_sockets_of_its_login(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let (token, refresh) = login(&app, &alice).await;
    let mut stolen_login = app.ws(&token).await;
    let mut other_login = app.ws(&alice.token).await;
    app.post_public("/auth/refresh", json!({"refresh_token": refresh})).await.expect(200);

    // The spent token comes back: theft. Its whole login dies, sockets included.
    let replay = app.post_public("/auth/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(replay.expect_error(401), "unauthorized");
    assert_unauthorized_close(stolen_login.expect_close(CLOSE_WAIT).await, "the replayed login's socket");
    assert_alive(&mut other_login, "another login's socket").await;
    assert_socket_refused(&app, &token, "reconnecting replayed login").await;
    app.stop().await;
}

/// `poster` sends a message; `deleter` tries to delete it. Returns the answer `deleter` gets
/// (`message_deleted` or an `error`).
async fn delete_a_fresh_message(poster: &mut WsClient, deleter: &mut WsClient, channel: Uuid) -> Value {
    poster.send(send_frame(channel, "someone else's words")).await;
    let id = poster.expect_eventually("message_sent").await["id"].clone();
    // (A socket not read for a while may hold earlier messages first.)
    while deleter.expect_eventually("new_message").await["id"] != id {}
    deleter.send(json!({"type": "delete_message", "message_id": id})).await;
    loop {
        let frame = deleter.next_frame(CLOSE_WAIT).await.expect("an answer to delete_message");
        if frame["type"] == "error" || frame["type"] == "message_deleted" {
            return frame;
        }
    }
}

#[track_caller]
fn assert_forbidden(answer: &Value) {
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{answer}"
    );
}

async fn instance_admin_changes_reach_an_open_socket(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let channel = channel_in_db(&app, &[&bob, &alice]).await;
    let mut bob_ws = subscribed_with(&app, &bob.token, channel).await;
    let mut plain_socket = subscribed_with(&app, &alice.token, channel).await;
    let admin_path = format!("/admin/users/{}/admin", alice.id);

    // Promoted, Alice logs in again: her token says admin, and so does her new socket.
    app.put(&admin_path, &owner.token, json!({"is_admin": true})).await.expect(200);
    let (admin_token, _) = login(&app, &alice).await;
    let mut admin_socket = subscribed_with(&app, &admin_token, channel).await;
    let answer = delete_a_fresh_message(&mut bob_ws, &mut admin_socket, channel).await;
    assert_eq!(answer["type"], "message_deleted", "an admin may delete others' messages: {answer}");

    // Demoted: the same socket, the same frame, refused.
    app.put(&admin_path, &owner.token, json!({"is_admin": false})).await.expect(200);
    assert_forbidden(&delete_a_fresh_message(&mut bob_ws, &mut admin_socket, channel).await);

    // Promoted again: even the socket opened with a token that never said admin has the power.
    app.put(&admin_path, &owner.token, json!({"is_admin": true})).await.expect(200);
    let answer = delete_a_fresh_message(&mut bob_ws, &mut plain_socket, channel).await;
    assert_eq!(answer["type"], "message_deleted", "{answer}");
    app.stop().await;
}

async fn demoted_channel_moderator_loses_powers_on_the_open_socket(backend: Backend) {
    let app = spawn_app(backend).await;
    let _owner = app.register("owner").await;
    let bob = app.register("bob").await;
    let alice = app.register("alice").await;
    let carol = app.register("carol").await;
    // Bob owns the channel; Alice is made moderator through the API.
    let channel = channel_in_db(&app, &[&bob, &alice, &carol]).await;
    let role_path = format!("/channels/{channel}/members/{}/role", alice.id);
    app.patch(&role_path, &bob.token, json!({"role": "moderator"})).await.expect(200);
    let mut alice_ws = subscribed_with(&app, &alice.token, channel).await;
    let mut carol_ws = subscribed_with(&app, &carol.token, channel).await;

    let answer = delete_a_fresh_message(&mut carol_ws, &mut alice_ws, channel).await;
    assert_eq!(answer["type"], "message_deleted", "a moderator may delete others' messages: {answer}");

    app.patch(&role_path, &bob.token, json!({"role": "member"})).await.expect(200);
    assert_forbidden(&delete_a_fresh_message(&mut carol_ws, &mut alice_ws, channel).await);
    app.stop().await;
}

crate::both_backends!(
    password_change_closes_every_socket_of_the_user,
    logout_everywhere_closes_every_socket_of_the_user,
    revoking_the_other_sessions_keeps_the_current_logins_sockets,
    revoking_one_session_closes_only_the_sockets_of_that_login,
    account_recovery_closes_every_socket_of_the_user,
    admin_password_reset_closes_the_users_sockets,
    replayed_refresh_token_closes_the_sockets_of_its_login,
    instance_admin_changes_reach_an_open_socket,
    demoted_channel_moderator_loses_powers_on_the_open_socket,
);
