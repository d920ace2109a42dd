//! Custom emojis (seed section "Communities": `/communities/{cid}/emojis`, `/emojis/{id}`;
//! wire: rest-communities-groups-channels.md). Images go through `crate::images` with the
//! emoji policy (256 KiB, PNG/GIF/WebP); at most 50 per community; shortcodes are unique per
//! community (a duplicate is 409, not the mirror's 500).

use palaver_entity::{communities, custom_emojis};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder,
};
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::assets::{EMOJIS_PER_COMMUNITY, EmojiView, Shortcode};
use crate::domain::community::require_member;
use crate::error::{ApiError, ApiResult};
use crate::http::multipart::Upload;
use crate::http::{PathId, ok_empty, ok_json};
use crate::images::{self, Area, EMOJI, Format};
use crate::state::AppState;

/// The stored file of an emoji: `<id>.<ext>` in the emoji area.
fn file_name(id: Uuid, content_type: &str) -> Option<String> {
    Format::from_mime(content_type).map(|f| format!("{id}.{}", f.extension()))
}

async fn emoji_count(db: &impl ConnectionTrait, community_id: Uuid) -> ApiResult<u64> {
    Ok(custom_emojis::Entity::find()
        .filter(custom_emojis::Column::CommunityId.eq(community_id))
        .count(db)
        .await?)
}

async fn shortcode_taken(
    db: &impl ConnectionTrait,
    community_id: Uuid,
    shortcode: &Shortcode,
) -> ApiResult<bool> {
    Ok(custom_emojis::Entity::find()
        .filter(custom_emojis::Column::CommunityId.eq(community_id))
        .filter(custom_emojis::Column::Shortcode.eq(shortcode.as_str()))
        .count(db)
        .await?
        > 0)
}

/// The two refusals checked before and again inside the insert's transaction.
async fn check_room(db: &impl ConnectionTrait, community_id: Uuid, shortcode: &Shortcode) -> ApiResult<()> {
    if emoji_count(db, community_id).await? >= EMOJIS_PER_COMMUNITY {
        return Err(ApiError::validation(format!(
            "a community may have at most {EMOJIS_PER_COMMUNITY} custom emojis"
        )));
    }
    if shortcode_taken(db, community_id, shortcode).await? {
        return Err(ApiError::conflict(format!("the shortcode :{}: is already in use", shortcode.as_str())));
    }
    Ok(())
}

/// GET /api/communities/{cid}/emojis
pub(crate) async fn list_emojis(
    community_id: PathId,
    state: AppState,
    caller: Caller,
) -> ApiResult<warp::reply::Response> {
    let standing = require_member(&state.db, community_id.get()?, &caller).await?;
    let rows = custom_emojis::Entity::find()
        .filter(custom_emojis::Column::CommunityId.eq(standing.community.id))
        .order_by_asc(custom_emojis::Column::CreatedAt)
        .order_by_asc(custom_emojis::Column::Id)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(EmojiView::from).collect::<Vec<_>>())
}

/// POST /api/communities/{cid}/emojis
pub(crate) async fn create_emoji(
    community_id: PathId,
    state: AppState,
    caller: Caller,
    body: Upload,
) -> ApiResult<warp::reply::Response> {
    let standing = require_member(&state.db, community_id.get()?, &caller).await?;
    if !standing.can_manage() {
        return Err(ApiError::Forbidden);
    }
    let community_id = standing.community.id;
    let form = body.read_form(EMOJI.max_bytes).await?;
    let shortcode = Shortcode::parse(form.text("shortcode")?.as_deref())?;
    // Cheap refusals before the image work.
    check_room(&state.db, community_id, &shortcode).await?;
    let part = form.file("file")?;
    let image = images::clean(part.data.clone(), part.content_type.as_deref(), &EMOJI).await?;

    let id = Uuid::now_v7();
    let file = format!("{id}.{}", image.format.extension());
    images::save(&state.config.data_dir, Area::Emojis, &file, &image.bytes).await?;
    let inserted = insert_emoji(&state, community_id, id, &shortcode, &image, caller.user_id).await;
    match inserted {
        Ok(emoji) => ok_json(&EmojiView::from(&emoji)),
        Err(err) => {
            images::remove(&state.config.data_dir, Area::Emojis, &file).await;
            Err(err)
        }
    }
}

/// Inserts the row under the limit. The community row is locked first (PostgreSQL; SQLite
/// serializes writers anyway) so concurrent uploads cannot pass the count together.
async fn insert_emoji(
    state: &AppState,
    community_id: Uuid,
    id: Uuid,
    shortcode: &Shortcode,
    image: &images::CleanImage,
    uploader: Uuid,
) -> ApiResult<custom_emojis::Model> {
    let txn = crate::db::begin_write(&state.db).await?;
    crate::db::lock_row::<communities::Entity>(&txn, community_id)
        .await?
        .ok_or_else(|| ApiError::not_found("community"))?;
    check_room(&txn, community_id, shortcode).await?;
    let emoji = custom_emojis::ActiveModel {
        id: Set(id),
        community_id: Set(community_id),
        shortcode: Set(shortcode.as_str().to_string()),
        content_type: Set(image.format.mime().to_string()),
        uploaded_by: Set(Some(uploader)),
        size_bytes: Set(i32::try_from(image.bytes.len()).unwrap_or(i32::MAX)),
        created_at: Set(palaver_entity::now()),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(emoji)
}

/// DELETE /api/communities/{cid}/emojis/{eid}
pub(crate) async fn delete_emoji(
    community_id: PathId,
    emoji_id: PathId,
    state: AppState,
    caller: Caller,
) -> ApiResult<warp::reply::Response> {
    let emoji_id = emoji_id.get()?;
    let standing = require_member(&state.db, community_id.get()?, &caller).await?;
    if !standing.can_manage() {
        return Err(ApiError::Forbidden);
    }
    let emoji = custom_emojis::Entity::find_by_id(emoji_id)
        .filter(custom_emojis::Column::CommunityId.eq(standing.community.id))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("emoji"))?;
    custom_emojis::Entity::delete_by_id(emoji.id).exec(&state.db).await?;
    if let Some(file) = file_name(emoji.id, &emoji.content_type) {
        images::remove(&state.config.data_dir, Area::Emojis, &file).await;
    }
    ok_empty()
}

/// GET /api/emojis/{id} (public)
pub(crate) async fn serve_emoji(emoji_id: PathId, state: AppState) -> ApiResult<warp::reply::Response> {
    let emoji = custom_emojis::Entity::find_by_id(emoji_id.get()?)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("emoji"))?;
    let format = Format::from_mime(&emoji.content_type).ok_or_else(|| ApiError::not_found("emoji"))?;
    let file = format!("{}.{}", emoji.id, format.extension());
    images::serve_file(&Area::Emojis.dir(&state.config.data_dir).join(file), format, Area::Emojis).await
}
