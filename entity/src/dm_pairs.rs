//! `dm_pairs` table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// The two participants of a direct-message channel; one channel per pair.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "dm_pairs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub channel_id: Uuid,
    /// The smaller of the two user ids (the app orders them), so (user_a, user_b) is unique per pair.
    pub user_a: Uuid,
    /// The larger of the two user ids.
    pub user_b: Uuid,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
