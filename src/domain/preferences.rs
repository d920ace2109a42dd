//! A user's client preferences: one JSON object stored as text, merged shallowly.

use palaver_entity::users;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Largest stored preferences object, serialized (wire: 16 384 bytes).
pub const MAX_BYTES: usize = 16 * 1024;
/// Rounds of read-merge-write before a contended write gives up.
const WRITE_ATTEMPTS: usize = 5;

pub type Preferences = serde_json::Map<String, serde_json::Value>;

/// The stored object (`{}` when never set or unreadable).
pub fn stored(user: &users::Model) -> Preferences {
    match serde_json::from_str(&user.preferences) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => Preferences::new(),
    }
}

/// Merges `changes` (a JSON object) into the user's preferences and returns the result.
/// Writes only if nobody wrote in between (compare-and-swap on the stored text), so two
/// devices saving different keys at once both keep their change.
pub async fn merge(
    db: &DatabaseConnection,
    user_id: Uuid,
    changes: serde_json::Value,
) -> ApiResult<Preferences> {
    let serde_json::Value::Object(changes) = changes else {
        return Err(ApiError::validation("preferences must be a JSON object"));
    };
    for _ in 0..WRITE_ATTEMPTS {
        let user = users::Entity::find_by_id(user_id).one(db).await?.ok_or(ApiError::Unauthorized)?;
        let mut merged = stored(&user);
        merged.extend(changes.clone());
        let serialized = serde_json::to_string(&merged).map_err(ApiError::internal)?;
        if serialized.len() > MAX_BYTES {
            return Err(ApiError::validation(format!(
                "preferences must be at most {MAX_BYTES} bytes when serialized"
            )));
        }
        let written = users::Entity::update_many()
            .col_expr(users::Column::Preferences, Expr::value(serialized))
            .col_expr(users::Column::UpdatedAt, Expr::value(palaver_entity::now()))
            .filter(users::Column::Id.eq(user.id))
            .filter(users::Column::Preferences.eq(user.preferences.as_str()))
            .exec(db)
            .await?;
        if written.rows_affected == 1 {
            return Ok(merged);
        }
    }
    Err(ApiError::conflict("preferences are being changed elsewhere: try again"))
}
