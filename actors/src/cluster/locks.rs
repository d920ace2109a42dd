//! The lock connection: one PostgreSQL connection outside the pool that holds this node's
//! advisory locks (its node lock and one per owned shard). Session locks live exactly as long
//! as this connection, so a crashed process frees them at once and a host cut off frees them
//! after the TCP keepalives give up (~11 s). It must be direct or session-pooled: PgBouncer's
//! transaction pooling would hand the locks to strangers.

use sea_orm::sqlx::{self, Connection, PgConnection, Row};

use super::shards::{Shard, node_lock_key, shard_of};
use crate::protocol::Epoch;
use crate::shared::StreamEnd;

/// Advisory lock class of a node's own lock ('PALN').
pub const NODE_LOCK_CLASS: i32 = 1_346_456_654;
/// Advisory lock class of shard locks ('PALV').
pub const SHARD_LOCK_CLASS: i32 = 1_346_456_662;

/// Keepalive settings of the lock connection: idle seconds, interval, count.
#[derive(Clone, Copy, Debug)]
pub struct Keepalives {
    pub idle_secs: u32,
    pub interval_secs: u32,
    pub count: u32,
}

impl Default for Keepalives {
    fn default() -> Self {
        Self { idle_secs: 5, interval_secs: 2, count: 3 }
    }
}

pub struct LockConnection {
    conn: PgConnection,
}

impl LockConnection {
    /// Connects and takes the node lock; `Ok(None)` when another live process holds it.
    pub async fn open(url: &str, node_id: &str, keepalives: Keepalives) -> Result<Option<Self>, sqlx::Error> {
        let mut conn = PgConnection::connect(url).await?;
        // `set_config` takes values as parameters (SET cannot).
        for (name, value) in [
            ("tcp_keepalives_idle", keepalives.idle_secs),
            ("tcp_keepalives_interval", keepalives.interval_secs),
            ("tcp_keepalives_count", keepalives.count),
        ] {
            sqlx::query("SELECT set_config($1, $2, false)")
                .bind(name)
                .bind(value.to_string())
                .execute(&mut conn)
                .await?;
        }
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(NODE_LOCK_CLASS)
            .bind(node_lock_key(node_id))
            .fetch_one(&mut conn)
            .await?;
        Ok(held.then_some(Self { conn }))
    }

    /// Whether the connection (and so every lock on it) is still alive.
    pub async fn ping(&mut self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&mut self.conn).await.map(|_| ())
    }

    /// The node-lock keys of every live node (this one included) on this database.
    pub async fn live_node_keys(&mut self) -> Result<Vec<i64>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT objid::bigint AS key FROM pg_locks \
             WHERE locktype = 'advisory' AND objsubid = 2 AND granted \
               AND classid = $1::bigint::oid \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(i64::from(NODE_LOCK_CLASS))
        .fetch_all(&mut self.conn)
        .await?;
        rows.iter().map(|row| row.try_get::<i64, _>("key")).collect()
    }

    /// Takes whichever of `shards` are free and bumps their fencing epochs; answers the
    /// shards taken with their new epochs.
    pub async fn acquire(
        &mut self,
        node_id: &str,
        shards: &[Shard],
    ) -> Result<Vec<(Shard, i64)>, sqlx::Error> {
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<i32> = shards.iter().map(|s| i32::from(*s)).collect();
        let won: Vec<i32> =
            sqlx::query_scalar("SELECT s FROM unnest($1::int4[]) AS s WHERE pg_try_advisory_lock($2, s)")
                .bind(&wanted)
                .bind(SHARD_LOCK_CLASS)
                .fetch_all(&mut self.conn)
                .await?;
        if won.is_empty() {
            return Ok(Vec::new());
        }
        let rows = match sqlx::query(
            "UPDATE channel_shards SET shard_epoch = shard_epoch + 1, node = $2, acquired_at = now() \
             WHERE shard = ANY($1::int4[]) RETURNING shard, shard_epoch",
        )
        .bind(&won)
        .bind(node_id)
        .fetch_all(&mut self.conn)
        .await
        {
            Ok(rows) => rows,
            Err(err) => {
                // Not owned without a new epoch: give the locks back (they stack, so a
                // later retry must not take them twice).
                let won: Vec<Shard> = won.iter().map(|s| *s as Shard).collect();
                let _ = self.release(&won).await;
                return Err(err);
            }
        };
        rows.iter()
            .map(|row| Ok((row.try_get::<i16, _>("shard")? as Shard, row.try_get::<i64, _>("shard_epoch")?)))
            .collect()
    }

    /// A planned handoff: where the streams of the given-up shards' channels ended, for their
    /// next owner. Written before the shards are unlocked, and only for shards this node still
    /// owns under the epoch it had (`held`: shard → fencing epoch): a stale owner writes nothing.
    pub async fn record_handoffs(
        &mut self,
        node_id: &str,
        held: &[(Shard, i64)],
        ends: &[StreamEnd],
    ) -> Result<u64, sqlx::Error> {
        let epoch_of: std::collections::HashMap<Shard, i64> = held.iter().copied().collect();
        let ends: Vec<(&StreamEnd, Shard, i64)> = ends
            .iter()
            .filter_map(|end| {
                let shard = shard_of(end.channel_id);
                Some((end, shard, *epoch_of.get(&shard)?))
            })
            .collect();
        if ends.is_empty() {
            return Ok(0);
        }
        let channels: Vec<String> = ends.iter().map(|(e, ..)| e.channel_id.to_string()).collect();
        let shards: Vec<i32> = ends.iter().map(|(_, s, _)| i32::from(*s)).collect();
        let shard_epochs: Vec<i64> = ends.iter().map(|(.., e)| *e).collect();
        let epochs: Vec<String> = ends.iter().map(|(e, ..)| e.epoch.as_str().to_owned()).collect();
        // Positions fit i64 by far (one per durable event of one actor's life).
        let positions: Vec<i64> = ends.iter().map(|(e, ..)| e.cseq as i64).collect();
        sqlx::query(
            "INSERT INTO channel_handoffs (channel_id, shard, shard_epoch, epoch, cseq) \
             SELECT t.channel_id, t.shard, t.shard_epoch, t.epoch, t.cseq \
             FROM unnest($1::text[], $2::int4[], $3::int8[], $4::text[], $5::int8[]) \
                  AS t(channel_id, shard, shard_epoch, epoch, cseq) \
             JOIN channel_shards s ON s.shard = t.shard AND s.shard_epoch = t.shard_epoch AND s.node = $6 \
             ON CONFLICT (channel_id) DO UPDATE SET shard = EXCLUDED.shard, \
                shard_epoch = EXCLUDED.shard_epoch, epoch = EXCLUDED.epoch, cseq = EXCLUDED.cseq",
        )
        .bind(&channels)
        .bind(&shards)
        .bind(&shard_epochs)
        .bind(&epochs)
        .bind(&positions)
        .bind(node_id)
        .execute(&mut self.conn)
        .await
        .map(|done| done.rows_affected())
    }

    /// The streams handed over with shards just taken (`taken`: shard → the new fencing
    /// epoch). Only a handoff written under the epoch right before this one counts: after a
    /// crash in between, the positions are not the stream's last. Every row of these shards
    /// is consumed.
    pub async fn take_handoffs(&mut self, taken: &[(Shard, i64)]) -> Result<Vec<StreamEnd>, sqlx::Error> {
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        let shards: Vec<i32> = taken.iter().map(|(s, _)| i32::from(*s)).collect();
        let epochs: Vec<i64> = taken.iter().map(|(_, e)| *e).collect();
        let rows = sqlx::query(
            "DELETE FROM channel_handoffs h USING unnest($1::int4[], $2::int8[]) AS t(shard, taken_epoch) \
             WHERE h.shard = t.shard \
             RETURNING h.channel_id, h.shard_epoch, t.taken_epoch, h.epoch, h.cseq",
        )
        .bind(&shards)
        .bind(&epochs)
        .fetch_all(&mut self.conn)
        .await?;
        let mut ends = Vec::new();
        for row in rows {
            let (written_under, taken_under): (i64, i64) =
                (row.try_get("shard_epoch")?, row.try_get("taken_epoch")?);
            let channel: String = row.try_get("channel_id")?;
            let epoch: String = row.try_get("epoch")?;
            let cseq: i64 = row.try_get("cseq")?;
            if written_under + 1 != taken_under || cseq < 0 {
                continue;
            }
            if let (Ok(channel_id), Some(epoch)) = (channel.parse(), Epoch::parse(&epoch)) {
                ends.push(StreamEnd { channel_id, epoch, cseq: cseq as u64 });
            }
        }
        Ok(ends)
    }

    /// Gives shards up (after their actors stopped).
    pub async fn release(&mut self, shards: &[Shard]) -> Result<(), sqlx::Error> {
        let shards: Vec<i32> = shards.iter().map(|s| i32::from(*s)).collect();
        sqlx::query("SELECT pg_advisory_unlock($2, s) FROM unnest($1::int4[]) AS s")
            .bind(&shards)
            .bind(SHARD_LOCK_CLASS)
            .execute(&mut self.conn)
            .await
            .map(|_| ())
    }

    /// Records this node's liveness (the row a node cut off from NATS reads to tell
    /// "only me" from "everyone").
    pub async fn record_seen(
        &mut self,
        node_id: &str,
        boot_id: &str,
        fingerprint: &str,
        nats_ok: bool,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO cluster_nodes (node_id, boot_id, key_fingerprint, started_at, last_seen, nats_ok) \
             VALUES ($1, $2, $3, now(), now(), $4) \
             ON CONFLICT (node_id) DO UPDATE SET last_seen = now(), nats_ok = $4, \
               boot_id = EXCLUDED.boot_id, key_fingerprint = EXCLUDED.key_fingerprint, \
               started_at = CASE WHEN cluster_nodes.boot_id = EXCLUDED.boot_id \
                 THEN cluster_nodes.started_at ELSE now() END",
        )
        .bind(node_id)
        .bind(boot_id)
        .bind(fingerprint)
        .bind(nats_ok)
        .execute(&mut self.conn)
        .await
        .map(|_| ())
    }

    /// The key fingerprints recorded by other nodes that are live now (node lock held).
    pub async fn live_fingerprints(
        &mut self,
        except_node: &str,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let keys = self.live_node_keys().await?;
        let rows = sqlx::query("SELECT node_id, key_fingerprint FROM cluster_nodes WHERE node_id <> $1")
            .bind(except_node)
            .fetch_all(&mut self.conn)
            .await?;
        let mut live = Vec::new();
        for row in rows {
            let node: String = row.try_get("node_id")?;
            if keys.contains(&i64::from(node_lock_key(&node))) {
                live.push((node, row.try_get("key_fingerprint")?));
            }
        }
        Ok(live)
    }

    /// Closes the connection, freeing every lock it holds.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}
