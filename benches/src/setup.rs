//! REST setup against Palaver: registering users, creating and joining channels and
//! communities, and reading channel history. Against the ceiling (`--ceiling`) nothing is
//! called: accounts get fake tokens and channels random ids.
//!
//! Every scenario gets its users and channels through here, so changing what kind of
//! channel a benchmark uses (e.g. a community's channel instead of a standalone one)
//! is a change to [`Setup::shared_channel`] / [`Setup::owned_channels`] only.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::target::Target;

/// Meets the registration rules (8–128 bytes, upper, lower, digit, symbol).
const PASSWORD: &str = "Bench-Passw0rd!";

/// A registered user (or a fake one for the ceiling).
#[derive(Debug, Clone)]
pub struct Account {
    pub username: String,
    pub token: String,
    /// `None` against the ceiling (it invents ids at `authenticate`).
    pub user_id: Option<Uuid>,
}

pub struct Setup {
    pub target: Arc<Target>,
    pub http: reqwest::Client,
    ceiling: bool,
    prefix: String,
    concurrency: usize,
    next_user: AtomicUsize,
}

#[derive(Deserialize)]
struct AuthResponse {
    access_token: String,
    user: UserId,
}

#[derive(Deserialize)]
struct UserId {
    id: Uuid,
}

/// The `id` of a created object (channel, community).
#[derive(Deserialize)]
struct CreatedId {
    id: Uuid,
}

#[derive(Deserialize)]
struct InviteCode {
    code: String,
}

/// The part of a history Message object the benchmarks read.
#[derive(Debug, Deserialize)]
pub struct HistoryMessage {
    pub id: Uuid,
}

/// A keep-alive HTTP client that never uses an environment proxy (traffic stays on
/// loopback).
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(60))
        .build()
        .context("building HTTP client")
}

/// Checks the username rule (3–32 of `[A-Za-z0-9_.-]`, starting alphanumeric) for the
/// longest name this run will generate.
fn check_prefix(prefix: &str) -> Result<()> {
    ensure!(
        prefix.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && prefix.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !prefix.contains(".."),
        "--users-prefix must start with a letter/digit and use only [A-Za-z0-9_.-]"
    );
    ensure!(prefix.len() <= 18, "--users-prefix must be at most 18 characters");
    Ok(())
}

fn random_prefix() -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..7).map(|_| ALNUM[rand::random_range(0..ALNUM.len())] as char).collect();
    format!("b{tail}")
}

/// A valid registration body with real Ed25519 keys: the server verifies the signed
/// prekey's signature against the identity key.
pub fn register_body(username: &str) -> serde_json::Value {
    let identity = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let spk_public: [u8; 32] = rand::random();
    let spk_signature = identity.sign(&spk_public).to_bytes();
    let one_time: Vec<_> = (1..=5)
        .map(|key_id| json!({ "key_id": key_id, "public_key": rand::random::<[u8; 32]>().to_vec() }))
        .collect();
    json!({
        "username": username,
        "email": format!("{username}@bench.example"),
        "password": PASSWORD,
        "display_name": format!("Bench {username}"),
        "identity_key": identity.verifying_key().to_bytes().to_vec(),
        "signed_prekey": {
            "key_id": 1,
            "public_key": spk_public.to_vec(),
            "signature": spk_signature.to_vec(),
        },
        "one_time_prekeys": one_time,
    })
}

/// Turns a non-2xx response into an error carrying the status and body.
async fn check(resp: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    bail!("{what}: HTTP {status}: {}", crate::frame::truncate(&body))
}

impl Setup {
    pub fn new(
        target: Arc<Target>,
        ceiling: bool,
        users_prefix: Option<String>,
        concurrency: usize,
    ) -> Result<Self> {
        let prefix = users_prefix.unwrap_or_else(random_prefix);
        check_prefix(&prefix)?;
        Ok(Setup {
            target,
            http: http_client()?,
            ceiling,
            prefix,
            concurrency,
            next_user: AtomicUsize::new(0),
        })
    }

    /// The random (or given) prefix of every username this run registers.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn is_ceiling(&self) -> bool {
        self.ceiling
    }

    /// Registers `n` users (concurrently), named `<prefix>_<role><k>`.
    pub async fn users(&self, role: &str, n: usize) -> Result<Vec<Account>> {
        let names: Vec<String> = (0..n)
            .map(|_| format!("{}_{role}{}", self.prefix, self.next_user.fetch_add(1, Ordering::Relaxed)))
            .collect();
        if let Some(long) = names.iter().find(|u| u.len() > 32) {
            bail!("username {long} is longer than 32 bytes: use a shorter --users-prefix");
        }
        if self.ceiling {
            return Ok(names
                .into_iter()
                .map(|username| Account { token: format!("ceiling-{username}"), username, user_id: None })
                .collect());
        }
        let started = std::time::Instant::now();
        let accounts: Vec<Account> = stream::iter(names)
            .map(|username| self.register(username))
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        if n > 0 {
            eprintln!("setup: registered {n} {role} users in {:.1}s", started.elapsed().as_secs_f64());
        }
        Ok(accounts)
    }

    async fn register(&self, username: String) -> Result<Account> {
        let resp = self
            .http
            .post(self.target.api("/auth/register"))
            .json(&register_body(&username))
            .send()
            .await
            .with_context(|| format!("POST /api/auth/register ({username})"))?;
        let auth: AuthResponse = check(resp, &format!("registering {username}"))
            .await?
            .json()
            .await
            .context("decoding AuthResponse")?;
        Ok(Account { username, token: auth.access_token, user_id: Some(auth.user.id) })
    }

    /// One channel every account in `members` belongs to (created by the first).
    /// Today a standalone text channel; this is the place to switch to a community's
    /// channel.
    pub async fn shared_channel(&self, name: &str, members: &[Account]) -> Result<Uuid> {
        if self.ceiling {
            return Ok(Uuid::new_v4());
        }
        let (creator, others) = members.split_first().context("a channel needs at least one member")?;
        let channel = self.create_channel(creator, name).await?;
        stream::iter(others)
            .map(|a| self.join_channel(a, channel))
            .buffer_unordered(self.concurrency)
            .try_collect::<()>()
            .await?;
        Ok(channel)
    }

    /// One community holding every account in `members`: the first creates it (on a fresh
    /// server the first registered user is the instance owner, who may create communities),
    /// makes an unlimited invite, and every other account accepts it.
    pub async fn shared_community(&self, name: &str, members: &[Account]) -> Result<Uuid> {
        ensure!(!self.ceiling, "the ceiling has no communities");
        let (creator, others) = members.split_first().context("a community needs at least one member")?;
        let resp = self
            .http
            .post(self.target.api("/communities"))
            .bearer_auth(&creator.token)
            .json(&json!({ "name": name }))
            .send()
            .await
            .context("POST /api/communities")?;
        let community: CreatedId = check(
            resp,
            "creating community (the creator must be the instance owner, or start the server \
             with PALAVER_COMMUNITY_CREATION=open)",
        )
        .await?
        .json()
        .await
        .context("decoding Community")?;
        let resp = self
            .http
            .post(self.target.api(&format!("/communities/{}/invites", community.id)))
            .bearer_auth(&creator.token)
            .json(&json!({ "max_uses": null, "expires_in_hours": null }))
            .send()
            .await
            .context("POST /api/communities/{cid}/invites")?;
        let invite: InviteCode =
            check(resp, "creating invite").await?.json().await.context("decoding Community invite")?;
        let started = std::time::Instant::now();
        stream::iter(others)
            .map(|a| self.accept_invite(a, &invite.code))
            .buffer_unordered(self.concurrency)
            .try_collect::<()>()
            .await?;
        eprintln!(
            "setup: {} users joined community {name} in {:.1}s",
            others.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(community.id)
    }

    async fn accept_invite(&self, account: &Account, code: &str) -> Result<()> {
        let resp = self
            .http
            .post(self.target.api(&format!("/community-invites/{code}/accept")))
            .bearer_auth(&account.token)
            .send()
            .await
            .context("POST /api/community-invites/{code}/accept")?;
        check(resp, &format!("{} accepting the community invite", account.username)).await?;
        Ok(())
    }

    /// `n` channels, each created by (and so owned by) `owner`.
    pub async fn owned_channels(&self, owner: &Account, name: String, n: usize) -> Result<Vec<Uuid>> {
        if self.ceiling {
            return Ok((0..n).map(|_| Uuid::new_v4()).collect());
        }
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            ids.push(self.create_channel(owner, &format!("{name}-{i}")).await?);
        }
        Ok(ids)
    }

    async fn create_channel(&self, owner: &Account, name: &str) -> Result<Uuid> {
        let resp = self
            .http
            .post(self.target.api("/channels"))
            .bearer_auth(&owner.token)
            .json(&json!({ "name": name, "channel_type": "text" }))
            .send()
            .await
            .context("POST /api/channels")?;
        let ch: CreatedId =
            check(resp, "creating channel").await?.json().await.context("decoding Channel")?;
        Ok(ch.id)
    }

    async fn join_channel(&self, account: &Account, channel: Uuid) -> Result<()> {
        let resp = self
            .http
            .post(self.target.api(&format!("/channels/{channel}/join")))
            .bearer_auth(&account.token)
            .json(&json!({}))
            .send()
            .await
            .with_context(|| format!("POST /api/channels/{channel}/join"))?;
        check(resp, &format!("{} joining channel", account.username)).await?;
        Ok(())
    }

    /// One page of channel history (newest first), `limit` ≤ 100, strictly older than
    /// `before` if given. Uses `client` so callers control connection reuse.
    pub async fn history_page(
        &self,
        client: &reqwest::Client,
        token: &str,
        channel: Uuid,
        limit: usize,
        before: Option<Uuid>,
    ) -> Result<Vec<HistoryMessage>> {
        let mut url = format!("{}?limit={limit}", self.target.api(&format!("/channels/{channel}/messages")));
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let resp = client.get(&url).bearer_auth(token).send().await.context("GET channel messages")?;
        check(resp, "reading history").await?.json().await.context("decoding Message list")
    }
}

/// `ceil(n / per)`: how many users are needed for `n` sockets at `per` sockets each.
pub fn users_for(n: usize, per: usize) -> usize {
    n.div_ceil(per.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_body_signature_verifies() {
        use ed25519_dalek::{Signature, Verifier, VerifyingKey};
        let body = register_body("bench_user1");
        let bytes = |v: &serde_json::Value| -> Vec<u8> {
            v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect()
        };
        let ik: [u8; 32] = bytes(&body["identity_key"]).try_into().unwrap();
        let spk = bytes(&body["signed_prekey"]["public_key"]);
        let sig: [u8; 64] = bytes(&body["signed_prekey"]["signature"]).try_into().unwrap();
        let vk = VerifyingKey::from_bytes(&ik).unwrap();
        vk.verify(&spk, &Signature::from_bytes(&sig)).unwrap();
        assert_eq!(spk.len(), 32);
        assert_eq!(body["one_time_prekeys"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn prefixes_are_valid_usernames() {
        check_prefix(&random_prefix()).unwrap();
        assert!(check_prefix("_bad").is_err());
        assert!(check_prefix("a..b").is_err());
    }
}
