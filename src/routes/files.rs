//! Seed section "Files": `POST /files/upload` (multipart, streamed to disk),
//! `GET /files/{id}` (download, with byte ranges), `GET /files/{id}/thumb`,
//! `GET /files/{id}/meta`, `DELETE /files/{id}` (Bearer). Admin file management is in
//! routes/admin_files.rs.
//!
//! An upload never sits in memory: the file part is written to a temp file in the data dir
//! while it is hashed, and moved into the sharded store only once every check passed. Size
//! and quota are enforced while the bytes arrive; an upload that goes over is cut off and its
//! temp file removed.

use std::io::SeekFrom;

use bytes::Buf;
use futures_util::StreamExt;
use palaver_entity::files;
use sea_orm::sea_query::{Alias, Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;
use warp::http::{HeaderValue, StatusCode, header};
use warp::multipart::{FormData, Part};

use crate::audit;
use crate::auth::Caller;
use crate::domain::channel::require_member;
use crate::domain::file::{
    self, ByteRange, FileMetaView, UploadView, content_disposition, find_file, is_blocked, parse_range,
    require_not_quarantined, require_read_access,
};
use crate::domain::posting::{as_poster, require_may_post};
use crate::error::{ApiError, ApiResult};
use crate::http::server::MAX_BODY_BYTES;
use crate::http::{ClientInfo, PathId, Reply, ok_empty, ok_json, status_only};
use crate::state::AppState;
use crate::storage::{FileStore, Reservation, TempBlob};

/// Longest `channel_id` field we read (a UUID is 36 bytes; some slack for whitespace).
const MAX_CHANNEL_FIELD_BYTES: usize = 128;
/// The form's fields; each may appear once, and no other field is accepted.
const UPLOAD_FIELDS: [&str; 3] = ["file", "name", "channel_id"];
/// Read size when streaming a blob out.
const READ_CHUNK: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------
// Upload

/// What the form carried, once every part has been read.
struct Received {
    blob: Option<TempBlob>,
    name: Option<String>,
    channel_id: Option<Uuid>,
    /// The channel whose membership was already checked (when `channel_id` came before `file`).
    checked_channel: Option<Uuid>,
}

/// POST /api/files/upload
pub(crate) async fn upload_file(state: AppState, caller: Caller, form: ApiResult<FormData>) -> Reply {
    let mut form = form?;
    if !state.uploads.allow(caller.user_id) {
        drain(&mut form).await;
        return Err(ApiError::validation("too many uploads, try again in a minute"));
    }
    let mut reservation = state.uploads.reserve(caller.user_id);
    let received = match receive(&state, &caller, &mut form, &mut reservation).await {
        Ok(received) => received,
        Err(err) => {
            // Read what is left (bounded) so the client gets to see the answer instead of a reset.
            drain(&mut form).await;
            return Err(err);
        }
    };
    let mut blob = received.blob.ok_or_else(|| ApiError::validation("the upload has no file field"))?;
    let size = blob.size();
    let content_type = file::sniff(blob.head(), size)?;
    let checksum = blob.finish().await.map_err(ApiError::internal)?;
    if is_blocked(&state.db, &checksum).await? {
        return Err(ApiError::validation("this file has been blocked by an administrator"));
    }
    if let Some(channel_id) = received.channel_id
        && received.checked_channel != Some(channel_id)
    {
        may_upload_into(&state, &caller, channel_id).await?;
    }
    let name = file::encrypted_name(received.name.as_deref())?;
    // Final word on the quota, with what other uploads stored meanwhile and what they still
    // hold in flight (this one included). In flight is read first: an upload that finishes in
    // between leaves it only after its row is stored, so it is counted once or twice (a
    // cautious refusal), never missed.
    let quota = state.config.upload_quota;
    if quota > 0 {
        let in_flight = reservation.in_flight();
        if used_bytes(&state.db, caller.user_id).await?.saturating_add(in_flight) > quota {
            return Err(quota_exceeded(quota));
        }
    }

    let id = Uuid::now_v7();
    let relative = FileStore::relative_path_for(id);
    blob.commit(&state.uploads.store, &relative).await.map_err(ApiError::internal)?;
    let row = files::ActiveModel {
        id: Set(id),
        uploader_id: Set(caller.user_id),
        channel_id: Set(received.channel_id),
        encrypted_name: Set(name),
        size_bytes: Set(i64::try_from(size).map_err(ApiError::internal)?),
        content_type: Set(content_type),
        checksum: Set(checksum),
        storage_path: Set(relative.clone()),
        thumbnail_path: Set(None),
        quarantined_at: Set(None),
        quarantined_by: Set(None),
        created_at: Set(palaver_entity::now()),
    }
    .insert(&state.db)
    .await;
    let row = match row {
        Ok(row) => row,
        Err(err) => {
            state.uploads.store.remove(&relative).await;
            return Err(err.into());
        }
    };
    drop(reservation);
    ok_json(&UploadView::from(&row))
}

/// Reads every part: the file goes to a temp blob, the text fields into memory (bounded).
async fn receive(
    state: &AppState,
    caller: &Caller,
    form: &mut FormData,
    reservation: &mut Reservation,
) -> ApiResult<Received> {
    let quota = state.config.upload_quota;
    let used = if quota > 0 { used_bytes(&state.db, caller.user_id).await? } else { 0 };
    let mut received = Received { blob: None, name: None, channel_id: None, checked_channel: None };
    let mut seen = Vec::with_capacity(UPLOAD_FIELDS.len());
    while let Some(part) = form.next().await {
        let mut part = part.map_err(|e| ApiError::validation(format!("malformed multipart body: {e}")))?;
        // Each field at most once and no others, before anything it would cost: a repeated
        // `channel_id` would otherwise be a membership lookup each.
        let Some(field) = UPLOAD_FIELDS.iter().find(|f| **f == part.name()) else {
            return Err(ApiError::validation(format!(
                "unexpected form field `{}` (expected {})",
                part.name().chars().take(64).collect::<String>(),
                UPLOAD_FIELDS.join(", ")
            )));
        };
        if seen.contains(field) {
            return Err(ApiError::validation(format!("`{field}` may appear only once")));
        }
        seen.push(*field);
        match *field {
            "file" => {
                received.blob = Some(receive_file(state, &mut part, used, reservation).await?);
            }
            "name" => {
                let name = read_text(&mut part, file::MAX_NAME_BYTES, "name").await?;
                received.name = Some(name);
            }
            _channel_id => {
                let raw = read_text(&mut part, MAX_CHANNEL_FIELD_BYTES, "channel_id").await?;
                // Unparsable → treated as absent (wire).
                received.channel_id = Uuid::parse_str(raw.trim()).ok();
                // Before the file: refuse a non-member now rather than after the whole upload.
                if let Some(channel_id) = received.channel_id
                    && received.blob.is_none()
                {
                    may_upload_into(state, caller, channel_id).await?;
                    received.checked_channel = Some(channel_id);
                }
            }
        }
    }
    Ok(received)
}

/// A file uploaded into a channel is content entering it: members only (403), and the
/// channel's send rules (timeouts, read-only, archived) apply.
async fn may_upload_into(state: &AppState, caller: &Caller, channel_id: Uuid) -> ApiResult<()> {
    require_member(&state.db, channel_id, caller).await?;
    require_may_post(&state.hub, channel_id, as_poster(caller)).await
}

/// Streams the file part to a temp blob, enforcing the size limit and the quota as it goes.
async fn receive_file(
    state: &AppState,
    part: &mut Part,
    used: u64,
    reservation: &mut Reservation,
) -> ApiResult<TempBlob> {
    let max_size = state.config.max_file_size;
    let quota = state.config.upload_quota;
    let mut blob = state.uploads.store.begin().await.map_err(ApiError::internal)?;
    while let Some(chunk) = part.data().await {
        let mut chunk = chunk.map_err(|e| ApiError::validation(format!("could not read the upload: {e}")))?;
        while chunk.has_remaining() {
            let bytes = chunk.chunk();
            let n = bytes.len() as u64;
            if blob.size() + n > max_size {
                return Err(ApiError::validation(format!("file too large (at most {max_size} bytes)")));
            }
            if quota > 0 && used.saturating_add(reservation.add(n)) > quota {
                return Err(quota_exceeded(quota));
            }
            blob.write(bytes).await.map_err(ApiError::internal)?;
            let n = bytes.len();
            chunk.advance(n);
        }
    }
    Ok(blob)
}

/// A text field, at most `limit` bytes of UTF-8.
async fn read_text(part: &mut Part, limit: usize, field: &str) -> ApiResult<String> {
    let mut buf = Vec::new();
    while let Some(chunk) = part.data().await {
        let mut chunk = chunk.map_err(|e| ApiError::validation(format!("could not read the upload: {e}")))?;
        if buf.len() + chunk.remaining() > limit {
            return Err(ApiError::validation(format!("{field} must be at most {limit} bytes")));
        }
        while chunk.has_remaining() {
            let bytes = chunk.chunk();
            buf.extend_from_slice(bytes);
            let n = bytes.len();
            chunk.advance(n);
        }
    }
    String::from_utf8(buf).map_err(|_| ApiError::validation(format!("{field} must be UTF-8 text")))
}

/// Reads and drops the rest of a refused upload, up to the request cap.
async fn drain(form: &mut FormData) {
    let mut budget = MAX_BODY_BYTES;
    while let Some(Ok(mut part)) = form.next().await {
        while let Some(Ok(chunk)) = part.data().await {
            budget = budget.saturating_sub(chunk.remaining() as u64);
            if budget == 0 {
                return;
            }
        }
    }
}

fn quota_exceeded(quota: u64) -> ApiError {
    ApiError::validation(format!("upload quota exceeded ({quota} bytes per user)"))
}

/// Bytes the user's stored files take.
pub async fn used_bytes(db: &impl ConnectionTrait, user_id: Uuid) -> ApiResult<u64> {
    let sum: Option<Option<i64>> = files::Entity::find()
        .select_only()
        .expr(Expr::col(files::Column::SizeBytes).sum().cast_as(Alias::new("BIGINT")))
        .filter(files::Column::UploaderId.eq(user_id))
        .into_tuple()
        .one(db)
        .await?;
    Ok(u64::try_from(sum.flatten().unwrap_or(0)).unwrap_or(0))
}

// ---------------------------------------------------------------------------------------
// Download, thumbnail, metadata, delete

/// GET /api/files/{file_id}
pub(crate) async fn download_file(
    id: PathId,
    state: AppState,
    caller: Caller,
    range: Option<String>,
) -> Reply {
    let file = find_file(&state.db, id.get()?).await?;
    require_read_access(&state.db, &caller, &file).await?;
    require_not_quarantined(&caller, &file)?;
    let content_type = file.content_type.clone().unwrap_or_else(|| "application/octet-stream".into());
    let headers = BlobHeaders {
        content_type,
        cache_control: "private, no-store",
        disposition: content_disposition("attachment", &file.encrypted_name),
    };
    serve_blob(&state, &file.storage_path, range.as_deref(), headers).await
}

/// GET /api/files/{file_id}/thumb
pub(crate) async fn thumbnail(id: PathId, state: AppState, caller: Caller, range: Option<String>) -> Reply {
    let file = find_file(&state.db, id.get()?).await?;
    require_read_access(&state.db, &caller, &file).await?;
    require_not_quarantined(&caller, &file)?;
    // Thumbnails are not generated yet, so this is 404 for every file until they are.
    let path = file.thumbnail_path.as_deref().ok_or_else(|| ApiError::not_found("thumbnail"))?;
    let svg = file.content_type.as_deref() == Some("image/svg+xml");
    let headers = BlobHeaders {
        content_type: if svg { "image/svg+xml" } else { "image/jpeg" }.into(),
        cache_control: "private, max-age=3600",
        disposition: "inline".into(),
    };
    serve_blob(&state, path, range.as_deref(), headers).await
}

/// GET /api/files/{file_id}/meta
pub(crate) async fn file_meta(id: PathId, state: AppState, caller: Caller) -> Reply {
    let file = find_file(&state.db, id.get()?).await?;
    require_read_access(&state.db, &caller, &file).await?;
    ok_json(&FileMetaView::from(&file))
}

/// DELETE /api/files/{file_id}
pub(crate) async fn delete_file(id: PathId, state: AppState, caller: Caller, client: ClientInfo) -> Reply {
    let file = find_file(&state.db, id.get()?).await?;
    if file.uploader_id != caller.user_id && !caller.is_instance_staff() {
        return Err(ApiError::Forbidden);
    }
    let deleted = files::Entity::delete_by_id(file.id).exec(&state.db).await?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::not_found("file"));
    }
    state.uploads.store.remove_blobs(&[(file.storage_path.clone(), file.thumbnail_path.clone())]).await;
    audit::record(
        &state.db,
        Some(caller.user_id),
        "file_deleted",
        Some(&client),
        Some(json!({"file_id": file.id, "uploader_id": file.uploader_id, "size_bytes": file.size_bytes,
            "checksum": file.checksum})),
    )
    .await;
    ok_empty()
}

struct BlobHeaders {
    content_type: String,
    cache_control: &'static str,
    disposition: String,
}

/// Streams a stored blob from disk, honouring a single byte range (206 / 416).
async fn serve_blob(state: &AppState, relative: &str, range: Option<&str>, h: BlobHeaders) -> Reply {
    let path = state.uploads.store.absolute(relative).map_err(ApiError::internal)?;
    let mut handle = match tokio::fs::File::open(&path).await {
        Ok(handle) => handle,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "file row without a blob");
            return Err(ApiError::not_found("file content"));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let len = handle.metadata().await.map_err(ApiError::internal)?.len();
    let (status, start, count) = match parse_range(range, len) {
        ByteRange::Full => (StatusCode::OK, 0, len),
        ByteRange::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => {
            let mut response = status_only(StatusCode::RANGE_NOT_SATISFIABLE);
            response.headers_mut().insert(header::CONTENT_RANGE, header_value(&format!("bytes */{len}"))?);
            return Ok(response);
        }
    };
    if start > 0 {
        handle.seek(SeekFrom::Start(start)).await.map_err(ApiError::internal)?;
    }
    let body = tokio_util::io::ReaderStream::with_capacity(handle.take(count), READ_CHUNK);
    let mut response = warp::reply::Reply::into_response(warp::reply::stream(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header_value(&h.content_type)?);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(h.cache_control));
    headers.insert(header::CONTENT_DISPOSITION, header_value(&h.disposition)?);
    // Uploaded bytes are never run by the browser as a page of ours.
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {start}-{}/{len}", start + count - 1);
        headers.insert(header::CONTENT_RANGE, header_value(&range)?);
    }
    Ok(response)
}

fn header_value(value: &str) -> ApiResult<HeaderValue> {
    HeaderValue::from_str(value).map_err(ApiError::internal)
}
