//! Web Push (RFC 8030) to the devices of users who are offline: a DM to a recipient with no
//! open socket becomes one encrypted notification (RFC 8291 `aes128gcm`, through
//! `web-push-native`) per stored subscription, signed with the instance's VAPID key (RFC 8292,
//! `vapid`). The payload carries exactly what `rest-auth-account-users.md` lists:
//! `notification_type` (`dm`), `sender_name`, `channel_id`, `channel_name` — never message
//! content (the server only has ciphertext).
//!
//! Delivery is off the hot path: the channel actor hands an [`OfflineDm`] to
//! [`PushService::offline_dm`], which checks the recipient's rate limit and queues it without
//! waiting (a full queue drops it); a small pool of workers does the database reads and the
//! HTTP requests (`deliver`).

pub mod deliver;
pub mod endpoint;
pub mod vapid;

use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota};
use palaver_actors::shared::{OfflineDm, OfflineDmSink};
use sea_orm::DatabaseConnection;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use crate::config::{Config, PushLimits};
use deliver::Job;
pub use vapid::VapidKey;

/// The contact push services get when none is configured and the public URL is not https.
const FALLBACK_CONTACT: &str = "mailto:postmaster@localhost";

/// The Web Push sender held in `AppState`.
pub struct PushService {
    vapid: Arc<VapidKey>,
    /// Test-only loopback allowance (`Config::allow_loopback_push_for_tests`).
    loopback_ports: Arc<[u16]>,
    queue: mpsc::Sender<Job>,
    /// Notifications per recipient (a busy DM to an offline user must not buzz a phone for
    /// every message, nor let one sender flood a push service in our name).
    per_user: DefaultKeyedRateLimiter<Uuid>,
}

impl PushService {
    /// Loads (or creates) the VAPID key and starts the delivery workers; they stop when
    /// `shutdown` fires.
    pub fn start(
        db: DatabaseConnection,
        config: &Config,
        shutdown: &broadcast::Sender<()>,
    ) -> Result<Arc<Self>, String> {
        let vapid = Arc::new(VapidKey::load_or_create(&config.data_dir)?);
        let contact = contact(config);
        if config.push_contact.is_none() {
            tracing::info!(%contact, "PALAVER_PUSH_CONTACT not set; push services get this contact");
        }
        let loopback_ports: Arc<[u16]> = config.allow_loopback_push_for_tests.clone().into();
        if !loopback_ports.is_empty() {
            tracing::warn!(ports = ?loopback_ports, "TEST-ONLY web push loopback allowance is on");
        }
        let limits = config.push;
        let (queue, jobs) = mpsc::channel(limits.queue.max(1));
        let per_user = DefaultKeyedRateLimiter::keyed(per_user_quota(&limits));
        let sender =
            deliver::Sender::new(db, vapid.clone(), contact, loopback_ports.clone(), limits, queue.clone())?;
        deliver::spawn_workers(sender, jobs, limits.workers.max(1), shutdown);
        Ok(Arc::new(Self { vapid, loopback_ports, queue, per_user }))
    }

    /// The VAPID public key (uncompressed P-256 point, base64url).
    pub fn vapid_public_key(&self) -> &str {
        self.vapid.public_key_b64()
    }

    /// Test-only loopback ports endpoints may use (empty in production).
    pub fn loopback_ports(&self) -> &[u16] {
        &self.loopback_ports
    }

    /// Forgets recipients whose bucket is full again (bounded memory; called periodically).
    pub fn purge_idle(&self) {
        self.per_user.retain_recent();
        self.per_user.shrink_to_fit();
    }
}

impl OfflineDmSink for PushService {
    /// Runs inside the channel actor: a rate-limit check and a `try_send`, nothing that waits.
    fn offline_dm(&self, dm: OfflineDm) {
        if self.per_user.check_key(&dm.recipient).is_err() {
            tracing::debug!(recipient = %dm.recipient, "push skipped: recipient's rate limit");
            return;
        }
        if self.queue.try_send(Job::Dm(dm)).is_err() {
            tracing::warn!(recipient = %dm.recipient, "push queue full: notification dropped");
        }
    }
}

fn per_user_quota(limits: &PushLimits) -> Quota {
    use std::num::NonZeroU32;
    let burst = NonZeroU32::new(limits.per_user_burst).unwrap_or(NonZeroU32::MIN);
    let period = limits.per_user_period.max(std::time::Duration::from_millis(1));
    // `with_period` refuses only a zero period, which `max` rules out.
    Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX)).allow_burst(burst)
}

/// The VAPID `sub`: the configured contact, else the public URL when it is https, else a
/// placeholder mailbox.
fn contact(config: &Config) -> String {
    if let Some(contact) = &config.push_contact {
        return contact.clone();
    }
    match &config.public_url {
        Some(url) if url.starts_with("https://") => url.clone(),
        _ => FALLBACK_CONTACT.to_string(),
    }
}
