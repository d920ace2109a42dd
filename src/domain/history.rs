//! History pages read from the database (the channel actor's cache answers the newest page).

use palaver_actors::history::PageKey;
use palaver_entity::messages;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::domain::message::visible;
use crate::error::ApiResult;

/// A history page's rows, newest first. With `after`, the `limit` messages right after it.
pub async fn page_rows(
    db: &DatabaseConnection,
    id: Uuid,
    before: Option<Uuid>,
    after: Option<Uuid>,
    key: PageKey,
) -> ApiResult<Vec<messages::Model>> {
    let mut select = messages::Entity::find()
        .filter(messages::Column::ChannelId.eq(id))
        .filter(visible(palaver_entity::now()));
    if let Some(before) = before {
        select = select.filter(messages::Column::Id.lt(before));
    }
    if let Some(after) = after {
        select = select.filter(messages::Column::Id.gt(after));
    }
    if key.root_only {
        select = select.filter(messages::Column::ThreadId.is_null());
    }
    Ok(if after.is_some() {
        let mut rows = select.order_by_asc(messages::Column::Id).limit(key.limit).all(db).await?;
        rows.reverse();
        rows
    } else {
        select.order_by_desc(messages::Column::Id).limit(key.limit).all(db).await?
    })
}
