//! `/push/*`: the VAPID key, subscriptions stored per (user, endpoint), and Web Push itself:
//! a push service started here on 127.0.0.1 (through the test-only loopback allowance) checks
//! each request's VAPID token against the served key and decrypts its `aes128gcm` body with the
//! subscription's private key (RFC 8291, implemented here with p256, hkdf and aes-gcm, not with
//! the crate the server encrypts with).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hkdf::Hkdf;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use palaver_entity::push_subscriptions;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::common::fixtures::{community, db, live, send_text, users};
use crate::common::{Backend, TestApp, TestUser, rand_bytes, spawn_app, spawn_app_with};

async fn subscriptions_of(app: &TestApp, user: Uuid) -> Vec<push_subscriptions::Model> {
    push_subscriptions::Entity::find()
        .filter(push_subscriptions::Column::UserId.eq(user))
        .order_by_asc(push_subscriptions::Column::Endpoint)
        .all(db(app))
        .await
        .unwrap()
}

fn sub(endpoint: &str, p256dh: &str, auth: &str) -> Value {
    json!({"endpoint": endpoint, "p256dh_key": p256dh, "auth_key": auth})
}

async fn vapid_key_is_served_and_kept_across_restarts(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let key = vapid_key(&app).await;
    let point = URL_SAFE_NO_PAD.decode(&key).expect("base64url");
    assert_eq!((point.len(), point[0]), (65, 4), "an uncompressed P-256 point");
    p256::PublicKey::from_sec1_bytes(&point).expect("on the curve");
    app.restart().await;
    assert_eq!(vapid_key(&app).await, key, "the same key after a restart");
    app.stop().await;
}

async fn subscribe_upserts_and_unsubscribe_removes(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let endpoint = "https://push.example.com/send/abc";

    let reply = app.post("/push/subscribe", &alice.token, sub(endpoint, "p1", "a1")).await;
    assert_eq!(reply.status.as_u16(), 204);
    assert!(reply.body.is_null());
    let subs = subscriptions_of(&app, alice.id).await;
    assert_eq!(subs.len(), 1);
    assert_eq!(
        (subs[0].endpoint.as_str(), subs[0].p256dh_key.as_str(), subs[0].auth_key.as_str()),
        (endpoint, "p1", "a1")
    );

    // Same endpoint again: keys updated, still one row.
    assert_eq!(
        app.post("/push/subscribe", &alice.token, sub(endpoint, "p2", "a2")).await.status.as_u16(),
        204
    );
    let subs = subscriptions_of(&app, alice.id).await;
    assert_eq!(subs.len(), 1);
    assert_eq!((subs[0].p256dh_key.as_str(), subs[0].auth_key.as_str()), ("p2", "a2"));
    // Another endpoint of alice, and the same endpoint for bob, are separate.
    let other = "https://push.example.com/send/def";
    assert_eq!(app.post("/push/subscribe", &alice.token, sub(other, "p3", "a3")).await.status.as_u16(), 204);
    assert_eq!(app.post("/push/subscribe", &bob.token, sub(endpoint, "pb", "ab")).await.status.as_u16(), 204);
    assert_eq!(subscriptions_of(&app, alice.id).await.len(), 2);
    assert_eq!(subscriptions_of(&app, bob.id).await.len(), 1);

    let reply = app.post("/push/unsubscribe", &alice.token, json!({"endpoint": endpoint})).await;
    assert_eq!(reply.status.as_u16(), 204);
    assert!(reply.body.is_null());
    let subs = subscriptions_of(&app, alice.id).await;
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].endpoint, other);
    assert_eq!(
        subscriptions_of(&app, bob.id).await.len(),
        1,
        "bob's subscription to the same endpoint stays"
    );
    // Unknown endpoint: nothing to do, still 204.
    let reply = app.post("/push/unsubscribe", &alice.token, json!({"endpoint": endpoint})).await;
    assert_eq!(reply.status.as_u16(), 204);
    app.stop().await;
}

async fn bad_subscriptions_are_refused_and_not_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let long = format!("https://push.example.com/{}", "a".repeat(2049 - 25));
    assert_eq!(long.len(), 2049);
    let bodies = [
        sub("http://push.example.com/x", "p", "a"),
        sub("push.example.com/x", "p", "a"),
        sub(&long, "p", "a"),
        sub("https://push.example.com/x", "", "a"),
        sub("https://push.example.com/x", "p", "  "),
        json!({"endpoint": "https://push.example.com/x", "p256dh_key": "p"}),
    ];
    for body in bodies {
        let code = app.post("/push/subscribe", &alice.token, body.clone()).await.expect_error(400);
        assert_eq!(code, "validation_error", "{body}");
    }
    assert_eq!(
        app.post("/push/unsubscribe", &alice.token, json!({})).await.expect_error(400),
        "validation_error"
    );
    assert!(subscriptions_of(&app, alice.id).await.is_empty(), "nothing stored");
    let ok = format!("https://push.example.com/{}", "a".repeat(2048 - 25));
    assert_eq!(app.post("/push/subscribe", &alice.token, sub(&ok, "p", "a")).await.status.as_u16(), 204);
    app.stop().await;
}

async fn push_subscriptions_need_a_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.register("alice").await;
    let body = sub("https://push.example.com/x", "p", "a");
    let reply = app.request(reqwest::Method::POST, "/push/subscribe", None, Some(body.clone())).await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    let reply =
        app.request(reqwest::Method::POST, "/push/subscribe", Some("garbage"), Some(body.clone())).await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    assert!(push_subscriptions::Entity::find().all(db(&app)).await.unwrap().is_empty());

    app.post("/push/subscribe", &alice.token, body).await;
    let reply = app
        .request(
            reqwest::Method::POST,
            "/push/unsubscribe",
            None,
            Some(json!({"endpoint": "https://push.example.com/x"})),
        )
        .await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    assert_eq!(subscriptions_of(&app, alice.id).await.len(), 1, "still subscribed");
    app.stop().await;
}

crate::both_backends!(
    vapid_key_is_served_and_kept_across_restarts,
    subscribe_upserts_and_unsubscribe_removes,
    bad_subscriptions_are_refused_and_not_stored,
    push_subscriptions_need_a_token,
    a_dm_to_an_offline_user_is_pushed_signed_and_encrypted,
    a_user_with_a_live_socket_gets_no_push,
    gone_subscriptions_are_deleted,
    throttled_and_failing_pushes_are_retried_later,
    pushes_are_rate_limited_per_user,
    endpoints_into_internal_networks_get_nothing,
);

async fn vapid_key(app: &TestApp) -> String {
    let reply = app.get_public("/push/vapid-key").await.expect(200);
    let object = reply.as_object().expect("an object");
    assert_eq!(object.len(), 1, "only public_key: {reply}");
    object["public_key"].as_str().expect("a string").to_string()
}

// ---------------------------------------------------------------------------------------
// A push service on 127.0.0.1

/// One request the push service received.
#[derive(Clone, Debug)]
struct Received {
    /// The last path segment: which device.
    device: String,
    at: Instant,
    headers: hyper::HeaderMap,
    body: Bytes,
    /// The status it was answered with.
    answered: u16,
}

type Script = HashMap<String, VecDeque<(u16, Option<&'static str>)>>;

/// Answers `POST /push/{device}` with the next scripted status for that device (201 when the
/// script is empty) and records every request.
struct PushService {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PushService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PushService {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind push service");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Script::new()));
        let (r, sc) = (received.clone(), script.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (r, sc) = (r.clone(), sc.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (r, sc) = (r.clone(), sc.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(req, &r, &sc).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Self { addr, received, script, task }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn script(&self, device: &str, answers: &[(u16, Option<&'static str>)]) {
        self.script.lock().unwrap().insert(device.to_string(), answers.iter().copied().collect());
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived in all (panics after `wait`).
    async fn wait_for(&self, count: usize, wait: Duration) -> Vec<Received> {
        let deadline = Instant::now() + wait;
        loop {
            let got = self.received();
            if got.len() >= count {
                return got;
            }
            assert!(Instant::now() < deadline, "{count} pushes expected within {wait:?}, got {}", got.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    received: &Mutex<Vec<Received>>,
    script: &Mutex<Script>,
) -> Response<Full<Bytes>> {
    let device = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (status, retry_after) =
        script.lock().unwrap().get_mut(&device).and_then(VecDeque::pop_front).unwrap_or((201, None));
    received.lock().unwrap().push(Received { device, at: Instant::now(), headers, body, answered: status });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    if let Some(after) = retry_after {
        response.headers_mut().insert("retry-after", after.parse().unwrap());
    }
    response
}

// ---------------------------------------------------------------------------------------
// A browser's subscription, and what it does with a push

struct Device {
    name: String,
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Device {
    fn new(name: &str) -> Self {
        let secret = loop {
            if let Ok(secret) = p256::SecretKey::from_slice(&rand_bytes::<32>()) {
                break secret;
            }
        };
        Self { name: name.to_string(), secret, auth: rand_bytes::<16>() }
    }

    fn public_point(&self) -> Vec<u8> {
        self.secret.public_key().to_encoded_point(false).as_bytes().to_vec()
    }

    fn subscription(&self, service: &PushService) -> Value {
        json!({
            "endpoint": format!("http://127.0.0.1:{}/push/{}", service.port(), self.name),
            "p256dh_key": URL_SAFE_NO_PAD.encode(self.public_point()),
            "auth_key": URL_SAFE_NO_PAD.encode(self.auth),
        })
    }

    async fn subscribe(&self, app: &TestApp, user: &TestUser, service: &PushService) {
        let reply = app.post("/push/subscribe", &user.token, self.subscription(service)).await;
        assert_eq!(reply.status.as_u16(), 204, "{:?}", reply.body);
    }

    fn decrypt(&self, body: &[u8]) -> Value {
        self.try_decrypt(body).expect("decrypts with the subscription's keys")
    }

    /// RFC 8291 / RFC 8188: the `aes128gcm` header, the ECDH with the sender's one-time key,
    /// the two HKDF steps, one AES-128-GCM record, then the padding delimiter.
    fn try_decrypt(&self, body: &[u8]) -> Option<Value> {
        assert!(body.len() > 21 + 65 + 16, "body too short: {} bytes", body.len());
        let (salt, rest) = body.split_at(16);
        let record_size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let key_id_len = rest[4] as usize;
        assert_eq!(key_id_len, 65, "keyid is the sender's uncompressed public key");
        let (key_id, record) = rest[5..].split_at(key_id_len);
        assert!(record.len() <= record_size, "one record");
        let sender = p256::PublicKey::from_sec1_bytes(key_id).expect("sender key on the curve");
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), sender.as_affine());

        let mut info = b"WebPush: info\0".to_vec();
        info.extend_from_slice(&self.public_point());
        info.extend_from_slice(key_id);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), &shared.raw_secret_bytes()[..])
            .expand(&info, &mut ikm)
            .unwrap();
        let content = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        content.expand(b"Content-Encoding: aes128gcm\0", &mut cek).unwrap();
        content.expand(b"Content-Encoding: nonce\0", &mut nonce).unwrap();
        let mut plain = Aes128Gcm::new_from_slice(&cek).unwrap().decrypt(&Nonce::from(nonce), record).ok()?;
        while plain.last() == Some(&0) {
            plain.pop();
        }
        assert_eq!(plain.pop(), Some(2), "last-record delimiter");
        Some(serde_json::from_slice(&plain).expect("a JSON payload"))
    }
}

/// Checks the request the way a push service does (RFC 8292) and returns the decrypted payload.
fn open(push: &Received, device: &Device, vapid_key: &str, service: &PushService) -> Value {
    assert_eq!(push.device, device.name);
    let header = |name: &str| push.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(header("content-encoding"), "aes128gcm");
    assert!(header("ttl").parse::<u64>().is_ok_and(|ttl| ttl > 0), "TTL: {}", header("ttl"));

    let params = header("authorization").strip_prefix("vapid ").expect("vapid scheme");
    let params: HashMap<&str, &str> = params.split(',').filter_map(|p| p.trim().split_once('=')).collect();
    assert_eq!(params.get("k"), Some(&vapid_key), "k= is the served key");
    let point = URL_SAFE_NO_PAD.decode(vapid_key).unwrap();
    let key = DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..65]),
    )
    .unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    let origin = format!("http://127.0.0.1:{}", service.port());
    validation.set_audience(&[origin.as_str()]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    validation.leeway = 0;
    let token = params.get("t").expect("t= token");
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation).expect("a valid VAPID token").claims;
    let now = chrono::Utc::now().timestamp();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp > now && exp <= now + 24 * 3600, "exp within 24 h: {claims}");
    let sub = claims["sub"].as_str().unwrap_or_default();
    assert!(sub.starts_with("mailto:") || sub.starts_with("https://"), "sub: {claims}");

    device.decrypt(&push.body)
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// An app whose push endpoints may be the local service, with `tweak` on top.
async fn push_app(
    backend: Backend,
    service: &PushService,
    tweak: impl FnOnce(&mut palaver::Config),
) -> TestApp {
    let port = service.port();
    spawn_app_with(backend, |c| {
        c.allow_loopback_push_for_tests = vec![port];
        c.push.retry_base = Duration::from_millis(100);
        tweak(c);
    })
    .await
}

/// Alice and bob (sharing a community) and their DM channel.
async fn dm_pair(app: &TestApp) -> (TestUser, TestUser, Uuid) {
    let (_root, u) = users(app, &["alice", "bob"]).await;
    let (alice, bob) = (u[0].clone(), u[1].clone());
    community(app, &[alice.id, bob.id]).await;
    let dm = app.post("/dms", &alice.token, json!({"target_user_id": bob.id})).await.expect(200);
    let channel = dm["channel"]["id"].as_str().unwrap().parse().unwrap();
    (alice, bob, channel)
}

const PUSH_WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched.
const QUIET: Duration = Duration::from_millis(1500);

async fn a_dm_to_an_offline_user_is_pushed_signed_and_encrypted(backend: Backend) {
    let service = PushService::start().await;
    let app = push_app(backend, &service, |_| {}).await;
    let (alice, bob, dm) = dm_pair(&app).await;
    let key = vapid_key(&app).await;
    let (phone, laptop) = (Device::new("bob-phone"), Device::new("bob-laptop"));
    phone.subscribe(&app, &bob, &service).await;
    laptop.subscribe(&app, &bob, &service).await;
    let alices = Device::new("alice-phone");
    alices.subscribe(&app, &alice, &service).await;

    let mut ws = live(&app, &alice, dm).await;
    send_text(&mut ws, dm, "hello bob").await;
    let mut got = service.wait_for(2, PUSH_WAIT).await;
    got.sort_by(|a, b| a.device.cmp(&b.device));
    let expected = json!({
        "notification_type": "dm",
        "sender_name": "alice display",
        "channel_id": dm,
        "channel_name": "alice display",
    });
    assert_eq!(open(&got[0], &laptop, &key, &service), expected, "exactly the wire's fields");
    assert_eq!(open(&got[1], &phone, &key, &service), expected);
    assert!(!got.iter().any(|p| String::from_utf8_lossy(&p.body).contains("hello")), "no plaintext");

    // Each device's body is encrypted to its own keys: the phone cannot read the laptop's.
    assert!(phone.try_decrypt(&got[0].body).is_none(), "another subscription's keys must not decrypt it");

    // The sender (online, and the author) is never notified; a second DM is one more push each.
    send_text(&mut ws, dm, "again").await;
    service.wait_for(4, PUSH_WAIT).await;
    tokio::time::sleep(QUIET).await;
    let got = service.received();
    assert_eq!(got.len(), 4, "two DMs, two devices");
    assert!(got.iter().all(|p| p.device.starts_with("bob")), "alice is not notified");
    app.stop().await;
}

async fn a_user_with_a_live_socket_gets_no_push(backend: Backend) {
    let service = PushService::start().await;
    let app = push_app(backend, &service, |_| {}).await;
    let (alice, bob, dm) = dm_pair(&app).await;
    let phone = Device::new("bob-phone");
    phone.subscribe(&app, &bob, &service).await;

    // Bob has a socket open (not even subscribed to the DM): the socket gets it, no push.
    let mut bobs = app.ws(&bob.token).await;
    crate::common::fixtures::sync(&mut bobs).await;
    let mut ws = live(&app, &alice, dm).await;
    send_text(&mut ws, dm, "you are online").await;
    let frame = bobs.expect_eventually("new_message").await;
    assert_eq!(frame["channel_id"], dm.to_string());
    tokio::time::sleep(QUIET).await;
    assert!(service.received().is_empty(), "no push while bob has a live socket");

    // Once bob's socket is gone, the next DM is pushed.
    drop(bobs);
    let server = app.server.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.state.hub.shared.sessions.is_online(bob.id) {
        assert!(Instant::now() < deadline, "bob's session ends");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_text(&mut ws, dm, "now offline").await;
    let got = service.wait_for(1, PUSH_WAIT).await;
    assert_eq!(open(&got[0], &phone, &vapid_key(&app).await, &service)["notification_type"], "dm");
    app.stop().await;
}

async fn gone_subscriptions_are_deleted(backend: Backend) {
    let service = PushService::start().await;
    let app = push_app(backend, &service, |_| {}).await;
    let (alice, bob, dm) = dm_pair(&app).await;
    let (old, missing, current) =
        (Device::new("bob-old"), Device::new("bob-missing"), Device::new("bob-new"));
    for device in [&old, &missing, &current] {
        device.subscribe(&app, &bob, &service).await;
    }
    service.script("bob-old", &[(410, None)]);
    service.script("bob-missing", &[(404, None)]);

    let mut ws = live(&app, &alice, dm).await;
    send_text(&mut ws, dm, "one").await;
    service.wait_for(3, PUSH_WAIT).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> =
            subscriptions_of(&app, bob.id).await.into_iter().map(|s| s.endpoint).collect();
        if left.len() == 1 {
            assert!(left[0].ends_with("/push/bob-new"), "{left:?}");
            break;
        }
        assert!(Instant::now() < deadline, "410 and 404 subscriptions deleted, left: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next DM goes to the remaining device only; the gone ones are not retried.
    send_text(&mut ws, dm, "two").await;
    service.wait_for(4, PUSH_WAIT).await;
    tokio::time::sleep(QUIET).await;
    let got = service.received();
    assert_eq!(got.len(), 4, "{:?}", got.iter().map(|p| (&p.device, p.answered)).collect::<Vec<_>>());
    assert_eq!(got[3].device, "bob-new");
    app.stop().await;
}

async fn throttled_and_failing_pushes_are_retried_later(backend: Backend) {
    let service = PushService::start().await;
    let app = push_app(backend, &service, |_| {}).await;
    let (alice, bob, dm) = dm_pair(&app).await;
    let key = vapid_key(&app).await;
    let (throttled, flaky) = (Device::new("bob-throttled"), Device::new("bob-flaky"));
    throttled.subscribe(&app, &bob, &service).await;
    flaky.subscribe(&app, &bob, &service).await;
    service.script("bob-throttled", &[(429, Some("1"))]);
    service.script("bob-flaky", &[(503, None), (502, None)]);

    let mut ws = live(&app, &alice, dm).await;
    send_text(&mut ws, dm, "hi").await;
    // 429 then 201 for one device; 503, 502, 201 for the other.
    service.wait_for(5, PUSH_WAIT).await;
    tokio::time::sleep(QUIET).await;
    let got = service.received();
    let of = |device: &str| got.iter().filter(|p| p.device == device).cloned().collect::<Vec<_>>();
    let throttled_tries = of("bob-throttled");
    assert_eq!(throttled_tries.iter().map(|p| p.answered).collect::<Vec<_>>(), vec![429, 201]);
    let waited = throttled_tries[1].at - throttled_tries[0].at;
    assert!(waited >= Duration::from_millis(950), "Retry-After: 1 honoured, retried after {waited:?}");
    let flaky_tries = of("bob-flaky");
    assert_eq!(flaky_tries.iter().map(|p| p.answered).collect::<Vec<_>>(), vec![503, 502, 201]);
    let (first, second) = (flaky_tries[1].at - flaky_tries[0].at, flaky_tries[2].at - flaky_tries[1].at);
    assert!(
        first >= Duration::from_millis(90) && second >= Duration::from_millis(190),
        "backoff doubles: {first:?}, {second:?}"
    );
    // The retried pushes are complete notifications.
    assert_eq!(open(&throttled_tries[1], &throttled, &key, &service)["channel_id"], dm.to_string());
    assert_eq!(open(&flaky_tries[2], &flaky, &key, &service)["sender_name"], "alice display");
    assert_eq!(subscriptions_of(&app, bob.id).await.len(), 2, "retried subscriptions are kept");
    app.stop().await;
}

async fn pushes_are_rate_limited_per_user(backend: Backend) {
    let service = PushService::start().await;
    let app = push_app(backend, &service, |c| {
        c.push.per_user_burst = 2;
        c.push.per_user_period = Duration::from_secs(3600);
    })
    .await;
    let (alice, bob, dm) = dm_pair(&app).await;
    let carol = app.register("carol").await;
    community(&app, &[alice.id, carol.id]).await;
    let to_carol = app.post("/dms", &alice.token, json!({"target_user_id": carol.id})).await.expect(200);
    let to_carol: Uuid = to_carol["channel"]["id"].as_str().unwrap().parse().unwrap();
    Device::new("bob-phone").subscribe(&app, &bob, &service).await;
    Device::new("carol-phone").subscribe(&app, &carol, &service).await;

    let mut ws = live(&app, &alice, dm).await;
    crate::common::fixtures::subscribe(&mut ws, to_carol).await;
    for n in 0..5 {
        send_text(&mut ws, dm, &format!("bob {n}")).await;
    }
    send_text(&mut ws, to_carol, "carol").await;
    service.wait_for(3, PUSH_WAIT).await;
    tokio::time::sleep(QUIET).await;
    let got = service.received();
    let count = |device: &str| got.iter().filter(|p| p.device == device).count();
    assert_eq!(count("bob-phone"), 2, "bob's burst of 2, the other 3 DMs not pushed");
    assert_eq!(count("carol-phone"), 1, "the limit is per user: carol still gets hers");
    app.stop().await;
}

async fn endpoints_into_internal_networks_get_nothing(backend: Backend) {
    let service = PushService::start().await;
    // Without the test allowance, the local service cannot be subscribed to at all.
    let app = spawn_app(backend.clone()).await;
    let (_alice, bob, _dm) = dm_pair(&app).await;
    let reply = app.post("/push/subscribe", &bob.token, Device::new("x").subscription(&service)).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    app.stop().await;

    // https:// endpoints naming internal addresses are stored (the wire's rule) but never
    // contacted: the subscription is dropped when a push would go there.
    let app = push_app(backend, &service, |_| {}).await;
    let (alice, bob, dm) = dm_pair(&app).await;
    let device = Device::new("bob");
    let keys = device.subscription(&service);
    for endpoint in [
        "https://10.0.0.1/push/bob".to_string(),
        "https://169.254.169.254/latest/meta-data".to_string(),
        format!("https://127.0.0.1:{}/push/bob", service.port().wrapping_add(1)),
        "https://[::ffff:127.0.0.1]/push/bob".to_string(),
        "https://localhost/push/bob".to_string(),
    ] {
        let body =
            json!({"endpoint": endpoint, "p256dh_key": keys["p256dh_key"], "auth_key": keys["auth_key"]});
        assert_eq!(app.post("/push/subscribe", &bob.token, body).await.status.as_u16(), 204, "{endpoint}");
    }
    let mut ws = live(&app, &alice, dm).await;
    send_text(&mut ws, dm, "hi").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> =
            subscriptions_of(&app, bob.id).await.into_iter().map(|s| s.endpoint).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "internal endpoints dropped, left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(service.received().is_empty(), "nothing reached the local service");
    app.stop().await;
}
