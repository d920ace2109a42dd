//! The User object of the wire (rest-auth-account-users.md) and user-related validation.

use std::collections::HashMap;

use palaver_actors::wire_time::rfc3339;
use palaver_entity::users;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ApiResult;

/// The public User object: what login, `/account/me`, `/users/*` and DM listings return.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
    pub banner_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice_background_url: Option<String>,
    pub status: String,
    pub custom_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bio: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pronouns: Option<String>,
    pub is_admin: bool,
    pub is_owner: bool,
    pub created_at: String,
}

impl From<&users::Model> for UserView {
    fn from(u: &users::Model) -> Self {
        Self {
            id: u.id,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            avatar_url: u.avatar_url.clone(),
            banner_url: u.banner_url.clone(),
            voice_background_url: u.voice_background_url.clone(),
            status: u.status.clone(),
            custom_status: u.custom_status.clone(),
            bio: u.bio.clone(),
            pronouns: u.pronouns.clone(),
            is_admin: u.is_admin,
            is_owner: u.is_owner,
            created_at: rfc3339(&u.created_at),
        }
    }
}

/// The live `user_profile_updated` frame for a user row.
pub fn profile_updated_frame(u: &users::Model) -> palaver_actors::protocol::ServerFrame {
    palaver_actors::protocol::ServerFrame::UserProfileUpdated {
        user_id: u.id,
        display_name: u.display_name.clone(),
        avatar_url: u.avatar_url.clone(),
        banner_url: u.banner_url.clone(),
        voice_background_url: u.voice_background_url.clone(),
        custom_status: u.custom_status.clone(),
        bio: u.bio.clone(),
        pronouns: u.pronouns.clone(),
    }
}

/// Users by id (for views that show names).
pub async fn users_by_id(
    db: &impl ConnectionTrait,
    ids: Vec<Uuid>,
) -> ApiResult<HashMap<Uuid, users::Model>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(users::Entity::find()
        .filter(users::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|u| (u.id, u))
        .collect())
}
