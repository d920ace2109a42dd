//! Image uploads and serving for accounts, communities and groups (seed sections "Account",
//! "Communities", "Groups"; wire: rest-auth-account-users.md and
//! rest-communities-groups-channels.md). Custom emojis are in `emojis.rs`; the pipeline
//! (validation, metadata stripping, storage, safe serving) is `crate::images`.
//!
//! Uploads are `multipart/form-data` with the wire's field names. Each handler checks the
//! caller and its permission before reading the body, then cleans the image, stores it,
//! updates the URL column, deletes the file it replaced, and emits the live frame:
//! `user_profile_updated` (everyone) for account images, `community_updated` /
//! `group_updated` (community) for icons and banners — the mirror sends none for those, the
//! client applies them like a settings change — and `channel_updated` (channel) for a
//! channel's voice background.
//! `POST /groups/{id}/voice-background` (seed) names the channel in a `channel_id` field and
//! shares the handler of `POST /groups/{gid}/channels/{chid}/voice-background` (client).

use palaver_actors::channel::Effect;
use palaver_entity::{channels, communities, groups, users};
use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::auth::sessions::current_user;
use crate::domain::channel::{ChannelView, find_channel};
use crate::domain::channel_write::write_channel;
use crate::domain::community::{CommunityView, community_updated_frame, member_count, require_member};
use crate::domain::group::{self, GroupView, group_updated_frame};
use crate::domain::user::{UserView, profile_updated_frame};
use crate::error::{ApiError, ApiResult};
use crate::http::multipart::{Form, Upload};
use crate::http::{PathId, ok_empty, ok_json};
use crate::images::{self, Area, CleanImage, PICTURE};
use crate::state::AppState;

/// Stores a cleaned image under `<owner>_<slot>_<hash>` and returns its file name.
async fn store(
    state: &AppState,
    area: Area,
    owner: Uuid,
    slot: &str,
    image: &CleanImage,
) -> ApiResult<String> {
    let name = image.file_name(owner, slot);
    images::save(&state.config.data_dir, area, &name, &image.bytes).await?;
    Ok(name)
}

/// The uploaded file in `field`, cleaned for `PICTURE` use.
async fn picture(form: &Form, field: &str) -> ApiResult<CleanImage> {
    let part = form.file(field)?;
    images::clean(part.data.clone(), part.content_type.as_deref(), &PICTURE).await
}

/// After a row update: on success deletes the replaced file; on failure the new one (unless
/// it is the same file, re-uploaded).
async fn settle<T>(
    state: &AppState,
    area: Area,
    owner: Uuid,
    slot: &str,
    old_url: Option<String>,
    new_file: &str,
    result: ApiResult<T>,
) -> ApiResult<T> {
    let data_dir = &state.config.data_dir;
    match result {
        Ok(value) => {
            images::remove_replaced(data_dir, area, old_url.as_deref(), Some(new_file), owner, slot).await;
            Ok(value)
        }
        Err(err) => {
            if old_url.as_deref() != Some(area.url(new_file).as_str()) {
                images::remove(data_dir, area, new_file).await;
            }
            Err(err)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Account

#[derive(Clone, Copy, Debug)]
pub(crate) enum UserImage {
    Avatar,
    Banner,
    VoiceBackground,
}

impl UserImage {
    /// The multipart field (wire).
    fn field(self) -> &'static str {
        match self {
            UserImage::Avatar => "avatar",
            UserImage::Banner => "banner",
            UserImage::VoiceBackground => "background",
        }
    }

    fn slot(self) -> &'static str {
        match self {
            UserImage::Avatar => "avatar",
            UserImage::Banner => "banner",
            UserImage::VoiceBackground => "voicebg",
        }
    }

    fn current(self, user: &users::Model) -> Option<String> {
        match self {
            UserImage::Avatar => user.avatar_url.clone(),
            UserImage::Banner => user.banner_url.clone(),
            UserImage::VoiceBackground => user.voice_background_url.clone(),
        }
    }

    fn set(self, row: &mut users::ActiveModel, url: Option<String>) {
        match self {
            UserImage::Avatar => row.avatar_url = Set(url),
            UserImage::Banner => row.banner_url = Set(url),
            UserImage::VoiceBackground => row.voice_background_url = Set(url),
        }
    }
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct UrlResponse {
    url: String,
}

/// POST /api/account/avatar · POST /api/account/banner · POST /api/account/voice-background
pub(crate) async fn upload_user_image(
    state: AppState,
    kind: UserImage,
    caller: Caller,
    body: Upload,
) -> ApiResult<warp::reply::Response> {
    let user = current_user(&state, &caller).await?;
    let form = body.read_form(PICTURE.max_bytes).await?;
    let image = picture(&form, kind.field()).await?;
    let file = store(&state, Area::Avatars, user.id, kind.slot(), &image).await?;
    let url = Area::Avatars.url(&file);
    let old_url = kind.current(&user);
    let mut row: users::ActiveModel = user.into();
    kind.set(&mut row, Some(url.clone()));
    row.updated_at = Set(palaver_entity::now());
    let updated = row.update(&state.db).await.map_err(ApiError::from);
    let user = settle(&state, Area::Avatars, caller.user_id, kind.slot(), old_url, &file, updated).await?;
    state.hub.send_to_everyone(&profile_updated_frame(&user));
    match kind {
        UserImage::VoiceBackground => ok_json(&UrlResponse { url }),
        UserImage::Avatar | UserImage::Banner => ok_json(&UserView::from(&user)),
    }
}

/// DELETE /api/account/voice-background
pub(crate) async fn clear_voice_background(
    state: AppState,
    caller: Caller,
) -> ApiResult<warp::reply::Response> {
    let user = current_user(&state, &caller).await?;
    let old_url = user.voice_background_url.clone();
    let mut row: users::ActiveModel = user.into();
    row.voice_background_url = Set(None);
    row.updated_at = Set(palaver_entity::now());
    let user = row.update(&state.db).await?;
    let slot = UserImage::VoiceBackground.slot();
    images::remove_replaced(&state.config.data_dir, Area::Avatars, old_url.as_deref(), None, user.id, slot)
        .await;
    state.hub.send_to_everyone(&profile_updated_frame(&user));
    ok_empty()
}

// ---------------------------------------------------------------------------------------
// Communities and groups

#[derive(Clone, Copy, Debug)]
pub(crate) enum AssetSlot {
    Icon,
    Banner,
}

impl AssetSlot {
    /// The multipart field and the file-name slot (the same words).
    fn name(self) -> &'static str {
        match self {
            AssetSlot::Icon => "icon",
            AssetSlot::Banner => "banner",
        }
    }
}

/// POST /api/communities/{cid}/icon · POST /api/communities/{cid}/banner
pub(crate) async fn upload_community_image(
    community_id: PathId,
    state: AppState,
    slot: AssetSlot,
    caller: Caller,
    body: Upload,
) -> ApiResult<warp::reply::Response> {
    let standing = require_member(&state.db, community_id.get()?, &caller).await?;
    if !standing.can_manage() {
        return Err(ApiError::Forbidden);
    }
    let form = body.read_form(PICTURE.max_bytes).await?;
    let image = picture(&form, slot.name()).await?;
    let community = standing.community;
    let area = Area::CommunityAssets;
    let file = store(&state, area, community.id, slot.name(), &image).await?;
    let old_url = match slot {
        AssetSlot::Icon => community.icon_url.clone(),
        AssetSlot::Banner => community.banner_url.clone(),
    };
    let mut row: communities::ActiveModel = community.into();
    match slot {
        AssetSlot::Icon => row.icon_url = Set(Some(area.url(&file))),
        AssetSlot::Banner => row.banner_url = Set(Some(area.url(&file))),
    }
    let updated = row.update(&state.db).await.map_err(ApiError::from);
    let community = settle(&state, area, community_id.get()?, slot.name(), old_url, &file, updated).await?;
    if let Err(e) = state.hub.send_to_community(community.id, &community_updated_frame(&community)).await {
        tracing::warn!(community = %community.id, error = %e, "community_updated not delivered");
    }
    let members = member_count(&state.db, community.id).await?;
    ok_json(&CommunityView::new(&community, members))
}

/// POST /api/groups/{id}/icon · POST /api/groups/{id}/banner
pub(crate) async fn upload_group_image(
    group_id: PathId,
    state: AppState,
    slot: AssetSlot,
    caller: Caller,
    body: Upload,
) -> ApiResult<warp::reply::Response> {
    let (group, _) = group::require_manager(&state.db, group_id.get()?, &caller).await?;
    let form = body.read_form(PICTURE.max_bytes).await?;
    let image = picture(&form, slot.name()).await?;
    let area = Area::GroupAssets;
    let file = store(&state, area, group.id, slot.name(), &image).await?;
    let old_url = match slot {
        AssetSlot::Icon => group.icon_url.clone(),
        AssetSlot::Banner => group.banner_url.clone(),
    };
    let mut row: groups::ActiveModel = group.into();
    match slot {
        AssetSlot::Icon => row.icon_url = Set(Some(area.url(&file))),
        AssetSlot::Banner => row.banner_url = Set(Some(area.url(&file))),
    }
    let updated = row.update(&state.db).await.map_err(ApiError::from);
    let group = settle(&state, area, group_id.get()?, slot.name(), old_url, &file, updated).await?;
    if let Err(e) = state.hub.send_to_community(group.community_id, &group_updated_frame(&group)).await {
        tracing::warn!(group = %group.id, error = %e, "group_updated not delivered");
    }
    let members = group::member_count(&state.db, group.id).await?;
    ok_json(&GroupView::new(&group, members))
}

/// POST /api/groups/{gid}/channels/{chid}/voice-background
pub(crate) async fn upload_channel_voice_background(
    group_id: PathId,
    channel_id: PathId,
    state: AppState,
    caller: Caller,
    body: Upload,
) -> ApiResult<warp::reply::Response> {
    upload_voice_background(group_id, Some(channel_id), state, caller, body).await
}

/// POST /api/groups/{id}/voice-background (the group's default)
pub(crate) async fn upload_group_voice_background(
    group_id: PathId,
    state: AppState,
    caller: Caller,
    body: Upload,
) -> ApiResult<warp::reply::Response> {
    upload_voice_background(group_id, None, state, caller, body).await
}

/// A voice background for one channel of a group, or the group's default.
async fn upload_voice_background(
    group_id: PathId,
    channel_id: Option<PathId>,
    state: AppState,
    caller: Caller,
    body: Upload,
) -> ApiResult<warp::reply::Response> {
    let group_id = group_id.get()?;
    let path_channel = channel_id.map(PathId::get).transpose()?;
    let (group, _) = group::require_manager(&state.db, group_id, &caller).await?;
    if let Some(channel_id) = path_channel {
        channel_in_group(&state, channel_id, group.id).await?;
    }
    let form = body.read_form(PICTURE.max_bytes).await?;
    let channel_id = match path_channel {
        Some(id) => id,
        // Seed path: the channel is named in the form.
        None => {
            let raw =
                form.text("channel_id")?.ok_or_else(|| ApiError::validation("channel_id is required"))?;
            let id = Uuid::parse_str(&raw).map_err(|_| ApiError::validation("channel_id must be a UUID"))?;
            channel_in_group(&state, id, group.id).await?;
            id
        }
    };
    let image = picture(&form, "background").await?;
    let area = Area::GroupAssets;
    let file = store(&state, area, channel_id, "voicebg", &image).await?;
    // The row is written by the channel's actor, which then reloads its settings and
    // announces `channel_updated`. The write answers the replaced URL with its own outcome, so
    // the files are settled as before.
    let (db, url) = (state.db.clone(), area.url(&file));
    let written = write_channel(&state.hub, channel_id, None, async move {
        // Re-read: the channel may have changed while the image was processed.
        let channel = find_channel(&db, channel_id).await?;
        let old_url = channel.voice_background.clone();
        let mut row: channels::ActiveModel = channel.into();
        row.voice_background = Set(Some(url));
        match row.update(&db).await {
            Ok(updated) => Ok(((old_url, Ok(updated)), vec![Effect::Reload { announce: true }])),
            Err(err) => Ok(((old_url, Err(ApiError::from(err))), Vec::new())),
        }
    })
    .await;
    let updated = match written {
        Ok((old_url, updated)) => {
            settle(&state, area, channel_id, "voicebg", old_url, &file, updated).await?
        }
        Err(err) => {
            // Not written (the channel is gone, or its actor did not answer: then the row may
            // name the file, which stays).
            if matches!(err, ApiError::NotFound(_)) {
                images::remove(&state.config.data_dir, area, &file).await;
            }
            return Err(err);
        }
    };
    ok_json(&ChannelView::from(&updated))
}

/// The channel must exist (404) and belong to the group (403, as on the sibling routes).
async fn channel_in_group(state: &AppState, channel_id: Uuid, group_id: Uuid) -> ApiResult<channels::Model> {
    let channel = find_channel(&state.db, channel_id).await?;
    if channel.group_id != Some(group_id) {
        return Err(ApiError::ForbiddenBecause("the channel does not belong to this group".into()));
    }
    Ok(channel)
}

// ---------------------------------------------------------------------------------------
// Serving

/// GET /api/avatars/{file} · GET /api/community-assets/{file} · GET /api/group-assets/{file}
pub(crate) async fn serve_image(
    name: String,
    state: AppState,
    area: Area,
) -> ApiResult<warp::reply::Response> {
    images::serve(&state.config.data_dir, area, &name).await
}
