//! Instance settings that admins change at run time (`/admin/settings`), cached in memory.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard};

use palaver_entity::instance_settings;
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait, sea_query::OnConflict};

use crate::error::{ApiError, ApiResult};

/// The keys admins may set, with their rules.
pub const MAX_MESSAGES_CACHE: &str = "max_messages_cache";
pub const MAX_PINS_PER_CHANNEL: &str = "max_pins_per_channel";
pub const E2E_ENABLED: &str = "e2e_enabled";

pub struct Settings {
    /// Only settings that were ever stored (the admin GET shows exactly these).
    stored: RwLock<BTreeMap<String, String>>,
}

impl Settings {
    pub async fn load(db: &DatabaseConnection) -> Result<Self, sea_orm::DbErr> {
        let rows = instance_settings::Entity::find().all(db).await?;
        Ok(Self { stored: RwLock::new(rows.into_iter().map(|r| (r.key, r.value)).collect()) })
    }

    /// The map, even if a writer panicked while holding the lock: a panic mid-`extend` leaves
    /// a map that is still valid (some pairs applied), and the database holds the truth. This
    /// is the actors' rule too; a poisoned lock must not turn every request into a 500.
    /// Replaces the cache with what the database holds (another node changed the settings,
    /// or the periodic reload of a cluster node).
    pub async fn reload(&self, db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
        let rows = instance_settings::Entity::find().all(db).await?;
        *self.stored.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            rows.into_iter().map(|r| (r.key, r.value)).collect();
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, String>> {
        self.stored.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn stored(&self) -> BTreeMap<String, String> {
        self.read().clone()
    }

    fn get_i64(&self, key: &str, default: i64) -> i64 {
        self.read().get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    pub fn max_messages_cache(&self) -> i64 {
        self.get_i64(MAX_MESSAGES_CACHE, 500)
    }

    pub fn max_pins_per_channel(&self) -> i64 {
        self.get_i64(MAX_PINS_PER_CHANNEL, 50)
    }

    pub fn e2e_enabled(&self) -> bool {
        self.read().get(E2E_ENABLED).map(|v| v != "false").unwrap_or(true)
    }

    /// Validates every pair first, then stores them all (nothing is saved on a bad value).
    pub async fn update(&self, db: &DatabaseConnection, changes: BTreeMap<String, String>) -> ApiResult<()> {
        for (key, value) in &changes {
            validate(key, value)?;
        }
        if changes.is_empty() {
            return Ok(());
        }
        let now = palaver_entity::now();
        // One transaction: either every pair is stored or none is.
        let txn = crate::db::begin_write(db).await?;
        for (key, value) in &changes {
            let row = instance_settings::ActiveModel {
                key: Set(key.clone()),
                value: Set(value.clone()),
                updated_at: Set(now),
            };
            instance_settings::Entity::insert(row)
                .on_conflict(
                    OnConflict::column(instance_settings::Column::Key)
                        .update_columns([
                            instance_settings::Column::Value,
                            instance_settings::Column::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        self.stored.write().unwrap_or_else(|poisoned| poisoned.into_inner()).extend(changes);
        Ok(())
    }
}

fn validate(key: &str, value: &str) -> ApiResult<()> {
    let int_in = |lo: i64, hi: i64| {
        value
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| (lo..=hi).contains(v))
            .map(|_| ())
            .ok_or_else(|| ApiError::validation(format!("{key} must be an integer from {lo} to {hi}")))
    };
    match key {
        MAX_MESSAGES_CACHE => int_in(50, 10_000),
        MAX_PINS_PER_CHANNEL => int_in(1, 200),
        E2E_ENABLED if value == "true" || value == "false" => Ok(()),
        E2E_ENABLED => Err(ApiError::validation("e2e_enabled must be \"true\" or \"false\"")),
        other => Err(ApiError::validation(format!("unknown setting {other:?}"))),
    }
}
