//! Presence over real sockets: a crowd of one community logging in at once gets a few
//! coalesced frames per socket and ends up seeing everyone online; presence follows
//! membership (a newcomer is heard at once, a kicked member neither hears nor is heard).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{create, invite, join, open_app};
use crate::common::{Backend, TestApp, TestUser, WsClient};

/// Users of the crowd, one socket each.
const CROWD: usize = 40;
/// Presence frames a crowd socket may get in all (the server's target for 5,000 sockets).
const MAX_FRAMES_PER_SOCKET: usize = 10;
/// Longer than the widest coalescing window: silence this long means nothing more is coming.
const SETTLE: Duration = Duration::from_secs(3);

/// The (user, status) pairs a frame reports; empty for frames other than presence.
fn reported(frame: &Value) -> Vec<(Uuid, String)> {
    let pair = |user: &Value, status: &Value| {
        (user.as_str().unwrap().parse().unwrap(), status.as_str().unwrap().to_string())
    };
    match frame["type"].as_str() {
        Some("presence_update") => vec![pair(&frame["user_id"], &frame["status"])],
        Some("presence_bulk") => {
            frame["statuses"].as_array().unwrap().iter().map(|p| pair(&p[0], &p[1])).collect()
        }
        _ => Vec::new(),
    }
}

fn is_presence(frame: &Value) -> bool {
    matches!(frame["type"].as_str(), Some("presence_update" | "presence_bulk"))
}

/// Registers `n` users at once, named `prefix0`, `prefix1`, …
async fn register_many(app: &TestApp, prefix: &str, n: usize) -> Vec<TestUser> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    join_all(names.iter().map(|name| app.register(name))).await
}

/// Waits until a presence frame reports `user` with `status` (coalesced changes may come
/// as `presence_update` or inside a `presence_bulk`).
pub(crate) async fn expect_presence(ws: &mut WsClient, user: Uuid, status: &str) {
    loop {
        let frame = ws
            .next_frame(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no presence {status} for {user}"));
        if reported(&frame).contains(&(user, status.to_string())) {
            return;
        }
    }
}

/// Asserts that no presence frame arrives within `wait`.
pub(crate) async fn expect_no_presence(ws: &mut WsClient, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Some(frame) =
        ws.next_frame(deadline.saturating_duration_since(tokio::time::Instant::now())).await
    {
        assert!(!is_presence(&frame), "unexpected presence frame {frame}");
    }
}

async fn crowd_logging_in_at_once_gets_few_frames_and_sees_everyone(backend: Backend) {
    let app = open_app(backend).await;
    let users = register_many(&app, "crowd", CROWD).await;
    let cid = create(&app, &users[0], "crowd").await;
    let code = invite(&app, &users[0], cid).await;
    for user in &users[1..] {
        app.post(&format!("/community-invites/{code}/accept"), &user.token, json!({})).await.expect(200);
    }

    // Every socket is opened first, then all authenticate together: the logins land at once.
    let mut sockets = join_all(users.iter().map(|_| app.ws_raw())).await;
    join_all(
        sockets
            .iter_mut()
            .zip(&users)
            .map(|(ws, u)| ws.send(json!({"type": "authenticate", "token": u.token}))),
    )
    .await;
    let everyone: Vec<Uuid> = users.iter().map(|u| u.id).collect();
    let frames =
        join_all(sockets.into_iter().zip(&users).map(|(ws, u)| watch_crowd(ws, u.id, &everyone))).await;

    for (user, frames) in users.iter().zip(frames) {
        assert!(
            frames <= MAX_FRAMES_PER_SOCKET,
            "{} got {frames} presence frames (at most {MAX_FRAMES_PER_SOCKET} expected)",
            user.username
        );
    }
    app.stop().await;
}

/// Reads one crowd socket until it has seen every other member online, then until presence
/// has been silent for [`SETTLE`]; returns how many presence frames it got in all.
async fn watch_crowd(mut ws: WsClient, me: Uuid, everyone: &[Uuid]) -> usize {
    let mut status: HashMap<Uuid, String> = HashMap::new();
    let mut frames = 0;
    let all_online = |status: &HashMap<Uuid, String>| {
        everyone.iter().filter(|u| **u != me).all(|u| status.get(u).is_some_and(|s| s == "online"))
    };
    while !all_online(&status) {
        let frame = ws.next_frame(Duration::from_secs(10)).await.unwrap_or_else(|| {
            let seen = status.values().filter(|s| *s == "online").count();
            panic!("{me} saw {seen} of {} mates online", everyone.len() - 1)
        });
        assert_ne!(frame["type"], "error", "{frame}");
        frames += is_presence(&frame) as usize;
        status.extend(reported(&frame));
    }
    while let Some(frame) = ws.next_frame(SETTLE).await {
        frames += is_presence(&frame) as usize;
        status.extend(reported(&frame));
    }
    assert!(all_online(&status), "{me}: a mate was reported offline later: {status:?}");
    frames
}

async fn presence_follows_joins_and_kicks(backend: Backend) {
    let app = open_app(backend).await;
    let users = register_many(&app, "member", 3).await;
    let (alice, bob, carol) = (&users[0], &users[1], &users[2]);
    let cid = create(&app, alice, "club").await;
    join(&app, alice, cid, bob).await;
    let mut a = app.ws(&alice.token).await;
    let mut b = app.ws(&bob.token).await;
    expect_presence(&mut a, bob.id, "online").await;

    // Carol is an outsider while connected: nobody hears her, she hears nobody.
    let mut c = app.ws(&carol.token).await;
    c.send(json!({"type": "update_presence", "status": "dnd"})).await;
    b.send(json!({"type": "update_presence", "status": "idle"})).await;
    expect_presence(&mut a, bob.id, "idle").await;
    expect_no_presence(&mut c, Duration::from_millis(500)).await;

    // She joins while connected: her next change reaches the members, theirs reach her, and
    // a new socket of Bob lists her among his present mates.
    join(&app, alice, cid, carol).await;
    c.send(json!({"type": "update_presence", "status": "online"})).await;
    expect_presence(&mut a, carol.id, "online").await;
    b.send(json!({"type": "update_presence", "status": "dnd"})).await;
    expect_presence(&mut c, bob.id, "dnd").await;
    let mut b2 = app.ws(&bob.token).await;
    let bulk = b2.expect("presence_bulk").await;
    let listed: Vec<Uuid> = reported(&bulk).into_iter().map(|(u, _)| u).collect();
    assert!(listed.contains(&carol.id) && listed.contains(&alice.id), "{bulk}");

    // Kicked: Carol's changes no longer reach the members, and theirs no longer reach her.
    app.delete(&format!("/communities/{cid}/members/{}", carol.id), &alice.token).await.expect(200);
    c.send(json!({"type": "update_presence", "status": "idle"})).await;
    a.send(json!({"type": "update_presence", "status": "dnd"})).await;
    // Bob hearing Alice's change means that flush is done: Carol would have had it too.
    expect_presence(&mut b, alice.id, "dnd").await;
    expect_no_presence(&mut c, Duration::from_millis(500)).await;
    expect_no_presence(&mut b, Duration::from_millis(500)).await;
    let mut a2 = app.ws(&alice.token).await;
    let bulk = a2.expect("presence_bulk").await;
    assert!(!reported(&bulk).iter().any(|(u, _)| *u == carol.id), "{bulk}");
    app.stop().await;
}

crate::both_backends!(
    crowd_logging_in_at_once_gets_few_frames_and_sees_everyone,
    presence_follows_joins_and_kicks,
);
