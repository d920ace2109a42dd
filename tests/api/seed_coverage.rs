//! Every endpoint of the seed API reference is served: called with the instance owner's
//! token and a placeholder body, none may answer "route not found" or 405. (Behaviour is
//! tested per area; this catches an endpoint that was never wired up.)

use serde_json::json;
use uuid::Uuid;

use crate::common::{Backend, spawn_app};

/// `METHOD PATH` per line, in the order of the seed (`shared/seed/api-reference.txt`).
const SEED_ENDPOINTS: &str = "\
POST /auth/register
POST /auth/login
POST /auth/refresh
POST /auth/recover
GET /auth/config
GET /users/search?q=alice
GET /users/{user_id}
POST /users/block
POST /users/unblock/{user_id}
GET /users/blocked
POST /reports
GET /account/me
PATCH /account/profile
POST /account/change-password
GET /account/sessions
DELETE /account/sessions/{id}
POST /account/sessions/revoke-all
DELETE /account/delete
GET /communities
POST /communities
GET /community-invites/{code}
POST /community-invites/{code}/accept
GET /emojis/{id}
GET /community-assets/{filename}
GET /communities/{cid}
PATCH /communities/{cid}
DELETE /communities/{cid}
POST /communities/{cid}/transfer-ownership
POST /communities/{cid}/leave
GET /communities/{cid}/members
PUT /communities/{cid}/members/{uid}/role
PUT /communities/{cid}/members/{uid}/nickname
DELETE /communities/{cid}/members/{uid}
GET /communities/{cid}/bans
POST /communities/{cid}/bans/{uid}
DELETE /communities/{cid}/bans/{uid}
GET /communities/{cid}/invites
POST /communities/{cid}/invites
DELETE /communities/{cid}/invites/{iid}
GET /communities/{cid}/groups
POST /communities/{cid}/channels/{chid}/timeout
DELETE /communities/{cid}/channels/{chid}/timeout/{uid}
POST /communities/{cid}/channels/{chid}/warn
GET /communities/{cid}/channels/{chid}/warnings/{uid}
POST /communities/{cid}/icon
POST /communities/{cid}/banner
GET /communities/{cid}/emojis
POST /communities/{cid}/emojis
DELETE /communities/{cid}/emojis/{eid}
GET /groups
POST /groups
GET /groups/discover
GET /groups/{id}
PATCH /groups/{id}
DELETE /groups/{id}
POST /groups/{id}/transfer-ownership
POST /groups/{id}/join
POST /groups/{id}/leave
GET /groups/{id}/members
GET /groups/{id}/channels
POST /groups/{id}/channels
PATCH /groups/{id}/channels/{cid}
DELETE /groups/{id}/channels/{cid}
GET /groups/{id}/invites
POST /groups/{id}/invites
GET /group-invites/{code}
POST /group-invites/{code}/accept
POST /groups/{id}/icon
POST /groups/{id}/banner
POST /groups/{id}/voice-background
GET /channels
POST /channels
GET /channels/{id}
PATCH /channels/{id}
POST /channels/{id}/join
POST /channels/{id}/leave
GET /channels/{id}/members
PATCH /channels/{id}/members/{user_id}/role
POST /channels/{id}/members/{user_id}/kick
POST /channels/{id}/members/{user_id}/ban
POST /channels/{id}/members/{user_id}/unban
POST /channels/{id}/transfer-ownership
GET /channels/unread
GET /channels/{id}/read-cursors
GET /channels/{id}/messages?before=uuid&limit=50
GET /channels/{id}/messages/search?q=hello
GET /messages/search?q=hello
GET /channels/{id}/messages/{msg_id}/history
GET /channels/{id}/threads/{msg_id}
GET /channels/{id}/pins
POST /channels/{id}/pins/{msg_id}
DELETE /channels/{id}/pins/{msg_id}
GET /dms
POST /dms
POST /files/upload
GET /files/{file_id}
DELETE /files/{file_id}
GET /files/{file_id}/meta
GET /keys/{user_id}/bundle
POST /keys/prekeys/signed
POST /keys/prekeys/one-time
GET /keys/prekeys/count
POST /channels/{id}/sender-keys
GET /channels/{id}/sender-keys
POST /totp/setup
POST /totp/verify
POST /totp/disable
GET /totp/backup-codes
POST /channels/{id}/webhooks
GET /channels/{id}/webhooks
PATCH /webhooks/{id}
DELETE /webhooks/{id}
POST /webhooks/execute/{token}
POST /channels/{id}/polls
POST /polls/{id}/vote
POST /polls/{id}/close
GET /channels/{id}/polls
POST /messages/schedule
GET /messages/scheduled
DELETE /messages/scheduled/{id}
POST /bookmarks/{message_id}
DELETE /bookmarks/{message_id}
GET /bookmarks
GET /announcements
POST /announcements/{id}/dismiss
POST /feedback
GET /gifs/search?q=hello
GET /gifs/trending
POST /link-preview
GET /admin/users?q=search&page=1
POST /admin/users/{id}/suspend
POST /admin/users/{id}/unsuspend
DELETE /admin/users/{id}
PUT /admin/users/{id}/admin
PUT /admin/users/{id}/password
GET /admin/invites
POST /admin/invites
DELETE /admin/invites/{id}
POST /admin/purge/message/{id}
POST /admin/purge/user/{id}/messages
POST /admin/purge/channel/{id}
GET /admin/files
DELETE /admin/files/{id}
POST /admin/files/{id}/quarantine
POST /admin/files/{id}/unquarantine
GET /admin/storage-stats
POST /admin/messages/{id}/quarantine
POST /admin/messages/{id}/unquarantine
GET /admin/blocked-hashes
POST /admin/blocked-hashes
DELETE /admin/blocked-hashes/{id}
GET /admin/audit-log?action=login&user_id=uuid
GET /admin/reports
POST /admin/reports/{id}/review
POST /admin/announcements
GET /admin/announcements
GET /health";

async fn every_seed_endpoint_is_routed(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.register("owner").await;
    let mut missing = Vec::new();
    for line in SEED_ENDPOINTS.lines() {
        let (method, path) = line.split_once(' ').unwrap();
        let path = fill_placeholders(path);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method != reqwest::Method::GET && method != reqwest::Method::DELETE).then(|| json!({}));
        let reply = app.request(method.clone(), &path, Some(&owner.token), body).await;
        let route_missing = reply.status == 404 && reply.body["message"] == "route not found";
        if route_missing || reply.status == 405 {
            missing.push(format!("{method} {path} -> {}", reply.status));
        }
    }
    assert!(missing.is_empty(), "endpoints not served:\n{}", missing.join("\n"));
    app.stop().await;
}

/// `{id}`-style segments become a fresh UUID (`{code}`, `{token}`, `{filename}` a word).
fn fill_placeholders(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{code}" | "{token}" | "{filename}" => "placeholder".to_string(),
            s if s.starts_with('{') => Uuid::now_v7().to_string(),
            s => s.replace("=uuid", &format!("={}", Uuid::now_v7())),
        })
        .collect::<Vec<_>>()
        .join("/")
}

crate::both_backends!(every_seed_endpoint_is_routed);
