//! The delivery workers: a bounded queue of jobs and a fixed number of workers, so at most
//! `workers` requests to push services are in flight, whatever the traffic.
//!
//! A job is either a DM to notify about (the worker reads the recipient's subscriptions and the
//! names, then makes one delivery per subscription) or a retry of one delivery. Outcomes follow
//! RFC 8030: 2xx delivered; 404/410 the subscription is gone (deleted here); 429 retried after
//! its `Retry-After`; 5xx, timeouts and network errors retried with exponential backoff, up to
//! `max_attempts`; anything else is logged and dropped. A retry waits in a timer task and is
//! re-queued with `try_send` (a full queue drops it), so a waiting retry holds no worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use palaver_actors::shared::OfflineDm;
use palaver_entity::{channels, push_subscriptions, users};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::Serialize;
use tokio::sync::{Mutex, broadcast, mpsc};
use url::Url;
use uuid::Uuid;
use web_push_native::p256::PublicKey;

use super::endpoint;
use super::vapid::VapidKey;
use crate::config::PushLimits;

/// How long a push service keeps a notification for a device that is offline (`TTL`).
const TTL_SECS: u64 = 24 * 60 * 60;

/// What the workers take from the queue.
pub enum Job {
    Dm(OfflineDm),
    Retry(Delivery),
}

/// One notification to one subscription.
pub struct Delivery {
    subscription_id: Uuid,
    endpoint: String,
    p256dh_key: String,
    auth_key: String,
    /// The plaintext JSON (encrypted anew, with a fresh salt and key, for every attempt).
    payload: Arc<[u8]>,
    /// Attempts made so far.
    attempts: u32,
}

/// The wire's payload (rest-auth-account-users.md, "Push notifications"): these four fields.
#[derive(Serialize)]
struct DmPayload<'a> {
    notification_type: &'static str,
    sender_name: &'a str,
    channel_id: Uuid,
    channel_name: &'a str,
}

/// What a delivery attempt came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// The subscription can never be delivered to (gone, or unusable): delete it.
    Gone(String),
    /// Try again after at least this long (`None`: the backoff decides).
    Retry(Option<Duration>, String),
    Failed(String),
}

/// Everything a worker needs; shared by all workers.
pub struct Sender {
    db: DatabaseConnection,
    vapid: Arc<VapidKey>,
    contact: String,
    loopback_ports: Arc<[u16]>,
    limits: PushLimits,
    client: reqwest::Client,
    queue: mpsc::Sender<Job>,
    /// Retries waiting in timer tasks (at most the queue's size).
    retries_waiting: AtomicUsize,
}

impl Sender {
    pub fn new(
        db: DatabaseConnection,
        vapid: Arc<VapidKey>,
        contact: String,
        loopback_ports: Arc<[u16]>,
        limits: PushLimits,
        queue: mpsc::Sender<Job>,
    ) -> Result<Arc<Self>, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .referer(false)
            .timeout(limits.request_timeout)
            .user_agent(concat!("Palaver/", env!("CARGO_PKG_VERSION"), " (web push)"))
            .dns_resolver(Arc::new(endpoint::CheckedResolver))
            .build()
            .map_err(|e| format!("push client: {e}"))?;
        Ok(Arc::new(Self {
            db,
            vapid,
            contact,
            loopback_ports,
            limits,
            client,
            queue,
            retries_waiting: AtomicUsize::new(0),
        }))
    }
}

/// Starts `workers` workers sharing the queue; each stops when `shutdown` fires (between jobs).
pub fn spawn_workers(
    sender: Arc<Sender>,
    jobs: mpsc::Receiver<Job>,
    workers: usize,
    shutdown: &broadcast::Sender<()>,
) {
    let jobs = Arc::new(Mutex::new(jobs));
    for _ in 0..workers {
        let (sender, jobs, mut shutdown) = (sender.clone(), jobs.clone(), shutdown.subscribe());
        tokio::spawn(async move {
            loop {
                let job = tokio::select! {
                    biased;
                    _ = shutdown.recv() => return,
                    job = async { jobs.lock().await.recv().await } => job,
                };
                match job {
                    Some(Job::Dm(dm)) => sender.notify_dm(dm).await,
                    Some(Job::Retry(delivery)) => sender.attempt(delivery).await,
                    None => return,
                }
            }
        });
    }
}

impl Sender {
    /// One DM to an offline user: a notification to each of their subscriptions.
    async fn notify_dm(self: &Arc<Self>, dm: OfflineDm) {
        let subscriptions = match push_subscriptions::Entity::find()
            .filter(push_subscriptions::Column::UserId.eq(dm.recipient))
            .all(&self.db)
            .await
        {
            Ok(subscriptions) => subscriptions,
            Err(e) => return tracing::warn!(error = %e, "push: cannot read subscriptions"),
        };
        if subscriptions.is_empty() {
            return;
        }
        let payload = match self.dm_payload(&dm).await {
            Ok(Some(payload)) => payload,
            // The sender or the channel is gone meanwhile: nothing to announce.
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "push: cannot read sender or channel"),
        };
        for subscription in subscriptions {
            let delivery = Delivery {
                subscription_id: subscription.id,
                endpoint: subscription.endpoint,
                p256dh_key: subscription.p256dh_key,
                auth_key: subscription.auth_key,
                payload: payload.clone(),
                attempts: 0,
            };
            self.attempt(delivery).await;
        }
    }

    #[allow(clippy::expect_used, reason = "a struct of strings and a UUID always serializes")]
    async fn dm_payload(&self, dm: &OfflineDm) -> Result<Option<Arc<[u8]>>, sea_orm::DbErr> {
        let Some(sender) = users::Entity::find_by_id(dm.sender).one(&self.db).await? else {
            return Ok(None);
        };
        let Some(channel) = channels::Entity::find_by_id(dm.channel_id).one(&self.db).await? else {
            return Ok(None);
        };
        let sender_name =
            if sender.display_name.trim().is_empty() { &sender.username } else { &sender.display_name };
        // A DM has no name of its own; clients title it with the other person, so does the
        // notification.
        let channel_name = channel.name.as_deref().filter(|n| !n.is_empty()).unwrap_or(sender_name);
        let payload =
            DmPayload { notification_type: "dm", sender_name, channel_id: dm.channel_id, channel_name };
        Ok(Some(serde_json::to_vec(&payload).expect("plain struct serializes").into()))
    }

    /// One attempt; then the subscription is deleted, the delivery retried later, or done.
    async fn attempt(self: &Arc<Self>, mut delivery: Delivery) {
        delivery.attempts += 1;
        match self.send(&delivery).await {
            Outcome::Delivered => {}
            Outcome::Gone(why) => {
                tracing::info!(subscription = %delivery.subscription_id, %why, "push subscription removed");
                if let Err(e) =
                    push_subscriptions::Entity::delete_by_id(delivery.subscription_id).exec(&self.db).await
                {
                    tracing::warn!(error = %e, "push: cannot delete a gone subscription");
                }
            }
            // A service that asks us to wait longer than we keep retries gets no retry (never
            // earlier than it asked).
            Outcome::Retry(after, why)
                if delivery.attempts < self.limits.max_attempts
                    && after.is_none_or(|after| after <= self.limits.retry_max) =>
            {
                let wait = after
                    .unwrap_or_else(|| backoff(&self.limits, delivery.attempts).min(self.limits.retry_max));
                tracing::debug!(subscription = %delivery.subscription_id, %why, ?wait, "push retry scheduled");
                self.retry_later(delivery, wait);
            }
            Outcome::Retry(_, why) | Outcome::Failed(why) => {
                tracing::warn!(subscription = %delivery.subscription_id, %why, attempts = delivery.attempts, "push not delivered");
            }
        }
    }

    fn retry_later(self: &Arc<Self>, delivery: Delivery, wait: Duration) {
        if self.retries_waiting.fetch_add(1, Ordering::AcqRel) >= self.limits.queue {
            self.retries_waiting.fetch_sub(1, Ordering::AcqRel);
            return tracing::warn!("push: too many retries waiting, one dropped");
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            this.retries_waiting.fetch_sub(1, Ordering::AcqRel);
            if this.queue.try_send(Job::Retry(delivery)).is_err() {
                tracing::warn!("push queue full: a retry dropped");
            }
        });
    }

    /// Encrypts the payload for the subscription and POSTs it to the endpoint.
    async fn send(&self, delivery: &Delivery) -> Outcome {
        let url = match endpoint::parse(&delivery.endpoint, &self.loopback_ports) {
            Ok(url) => url,
            Err(why) => return Outcome::Gone(why.to_string()),
        };
        if let Err(why) = endpoint::check_literal_host(&url, &self.loopback_ports) {
            return Outcome::Gone(format!("endpoint host is {why}"));
        }
        let body = match encrypt(delivery) {
            Ok(body) => body,
            Err(why) => return Outcome::Gone(why),
        };
        let authorization = match self.vapid.authorization(&endpoint::origin(&url), &self.contact) {
            Ok(value) => value,
            Err(why) => return Outcome::Failed(why),
        };
        let response = self
            .client
            .post(Url::clone(&url))
            .header("TTL", TTL_SECS)
            .header("Urgency", "high")
            .header(CONTENT_ENCODING, "aes128gcm")
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(AUTHORIZATION, authorization)
            .body(body)
            .send()
            .await;
        match response {
            Ok(response) => classify(response.status(), response.headers().get(RETRY_AFTER)),
            Err(e) => match endpoint::refused_by_resolver(&e) {
                Some(blocked) => Outcome::Gone(blocked.to_string()),
                None => Outcome::Retry(None, format!("request failed: {e}")),
            },
        }
    }
}

/// RFC 8291 encryption of the payload to the subscription's keys.
fn encrypt(delivery: &Delivery) -> Result<Vec<u8>, String> {
    let p256dh = decode_b64url(&delivery.p256dh_key).ok_or("p256dh_key is not base64url")?;
    let public = PublicKey::from_sec1_bytes(&p256dh).map_err(|_| "p256dh_key is not a P-256 point")?;
    let auth = decode_b64url(&delivery.auth_key).ok_or("auth_key is not base64url")?;
    let auth: [u8; 16] = auth.try_into().map_err(|_| "auth_key is not 16 bytes")?;
    let auth = web_push_native::Auth::from(auth);
    web_push_native::encrypt(delivery.payload.to_vec(), &public, &auth).map_err(|e| format!("encrypt: {e}"))
}

/// Browsers hand out unpadded base64url; some libraries pad it.
fn decode_b64url(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim().trim_end_matches('=')).ok()
}

fn classify(status: StatusCode, retry_after: Option<&reqwest::header::HeaderValue>) -> Outcome {
    match status.as_u16() {
        200..=299 => Outcome::Delivered,
        404 | 410 => Outcome::Gone(format!("push service answered {status}")),
        429 => {
            Outcome::Retry(retry_after.and_then(parse_retry_after), format!("push service answered {status}"))
        }
        500..=599 => {
            Outcome::Retry(retry_after.and_then(parse_retry_after), format!("push service answered {status}"))
        }
        _ => Outcome::Failed(format!("push service answered {status}")),
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn parse_retry_after(value: &reqwest::header::HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Some(wait)
}

/// `retry_base`, doubled for each attempt after the first.
fn backoff(limits: &PushLimits, attempts: u32) -> Duration {
    limits.retry_base.saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(classify(StatusCode::CREATED, None), Outcome::Delivered);
        assert!(matches!(classify(StatusCode::GONE, None), Outcome::Gone(_)));
        assert!(matches!(classify(StatusCode::NOT_FOUND, None), Outcome::Gone(_)));
        let after = HeaderValue::from_static("7");
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, Some(&after)),
            Outcome::Retry(Some(d), _) if d == Duration::from_secs(7)
        ));
        assert!(matches!(classify(StatusCode::BAD_GATEWAY, None), Outcome::Retry(None, _)));
        assert!(matches!(classify(StatusCode::BAD_REQUEST, None), Outcome::Failed(_)));
        assert!(matches!(classify(StatusCode::FORBIDDEN, None), Outcome::Failed(_)));
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after(&HeaderValue::from_static("120")), Some(Duration::from_secs(120)));
        let past = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

    #[test]
    fn backoff_doubles() {
        let limits = PushLimits { retry_base: Duration::from_secs(2), ..PushLimits::default() };
        let waits: Vec<_> = (1..=4).map(|n| backoff(&limits, n).as_secs()).collect();
        assert_eq!(waits, vec![2, 4, 8, 16]);
    }

    #[test]
    fn unusable_keys_are_reported_not_panicked_on() {
        let delivery = |p256dh: &str, auth: &str| Delivery {
            subscription_id: Uuid::nil(),
            endpoint: "https://push.example.com/x".into(),
            p256dh_key: p256dh.into(),
            auth_key: auth.into(),
            payload: Arc::from(&b"{}"[..]),
            attempts: 0,
        };
        assert!(encrypt(&delivery("p1", "a1")).is_err());
        assert!(encrypt(&delivery("", "")).is_err());
        let point = "BLn9b-VR0ca83knDNZ32dCHGyjJp-1riX9ZTN40MqV8K_LpQmLqxC_DoHvqvFXO_nGdAB4W9dogZb_sM-uV4JbY";
        assert!(encrypt(&delivery(point, "c2hvcnQ")).is_err(), "auth of the wrong length");
        assert!(encrypt(&delivery(point, "_ordMnz7uTCmrpBTeUV4Bw")).is_ok());
        assert!(encrypt(&delivery(point, "_ordMnz7uTCmrpBTeUV4Bw==")).is_ok(), "padded");
    }
}
