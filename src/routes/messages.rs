//! Seed section "Messages": history (`/channels/{id}/messages`), search (per channel and
//! `/messages/search`), edit history, threads and pins (Bearer). Sending, editing and deleting
//! happen over the WebSocket; REST only reads history and manages pins.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use palaver_actors::HubError;
use palaver_actors::channel::{ChannelMsg, Effect};
use palaver_actors::history::{HistoryAnswer, PageKey};
use palaver_actors::protocol::{ServerFrame, rfc3339};
use palaver_actors::roles::Level;
use palaver_entity::{channel_members, channels, message_edits, messages, pins, users};
use ractor::rpc::CallResult;
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::channel::{caller_level, require_member};
use crate::domain::channel_write::write_channel;
use crate::domain::history::page_rows;
use crate::domain::message::{EditView, MessageCore, PinnedView, is_visible, message_views, visible};
use crate::domain::search::{like_contains, payload_len, searchable_text};
use crate::error::{ApiError, ApiResult};
use crate::http::query::QueryParams;
use crate::http::{PathId, Reply, ok_empty, ok_json, ok_json_bytes};
use crate::state::AppState;

/// History and threads: default and largest page.
const HISTORY_DEFAULT_LIMIT: u64 = 50;
const HISTORY_MAX_LIMIT: u64 = 100;
/// How long a history read waits for the channel actor before reading the database alone.
const ACTOR_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Search: default and largest result count.
const SEARCH_DEFAULT_LIMIT: u64 = 20;
const SEARCH_MAX_LIMIT: u64 = 50;
/// Search scans candidates newest first, this many rows per query, within the request's
/// budget (`Config::search`: rows, bytes and time scanned).
const SEARCH_PAGE: u64 = 200;
/// Response header: `true` when the budget ran out before the candidates did (the answer may
/// miss older matches). The body stays the wire's bare array, so the signal is a header.
const TRUNCATED_HEADER: &str = "x-search-truncated";
/// Response header: how many candidate messages were scanned.
const SCANNED_HEADER: &str = "x-search-scanned";
/// A sender filter longer than the username rule's maximum (32) cannot match anyone.
const SENDER_MAX_CHARS: usize = 32;
/// Search terms: 2–256 characters.
const QUERY_MIN_CHARS: usize = 2;
const QUERY_MAX_CHARS: usize = 256;

// ---------------------------------------------------------------------------------------
// History

/// GET /api/channels/{id}/messages?before=&after=&limit=&root_only=
///
/// Newest first. `before` / `after` are message ids (ids are UUIDv7 in commit order);
/// with `after`, the page is the `limit` messages right after the cursor (so paging forward
/// leaves no gap), still returned newest first.
pub(crate) async fn list_messages(id: PathId, state: AppState, caller: Caller, query: QueryParams) -> Reply {
    let id = id.get()?;
    let before = query.message_id("before")?;
    let after = query.message_id("after")?;
    let limit = query.limit(HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT)?;
    let root_only = query.flag("root_only")?;
    if before.is_none() && after.is_none() {
        return newest_page(&state, id, &caller, PageKey { limit, root_only }).await;
    }
    require_member(&state.db, id, &caller).await?;
    let rows = page_rows(&state.db, id, before, after, PageKey { limit, root_only }).await?;
    ok_json(&message_views(&state.db, rows, true).await?)
}

/// The newest page (no cursor), through the channel's actor: it checks membership from
/// memory and may hold the page. On a miss the page is read here and offered back.
async fn newest_page(state: &AppState, id: Uuid, caller: &Caller, key: PageKey) -> Reply {
    let slot = match state.hub.channel(id).await {
        Ok(slot) => Some(slot),
        Err(HubError::NotFound) => return Err(ApiError::not_found("channel")),
        // No actor could start (database trouble): the plain read below reports it.
        Err(_) => None,
    };
    let mut version = None;
    if let Some(slot) = &slot {
        let call = |reply| ChannelMsg::History { user_id: caller.user_id, key, reply };
        match slot.actor().call(call, Some(ACTOR_CALL_TIMEOUT)).await {
            Ok(CallResult::Success(HistoryAnswer::Page(body))) => return ok_json_bytes(body),
            Ok(CallResult::Success(HistoryAnswer::NotMember)) => return Err(ApiError::Forbidden),
            Ok(CallResult::Success(HistoryAnswer::Miss { version: v })) => version = Some(v),
            // Restarting or overloaded: answer from the database alone.
            _ => {}
        }
    }
    if version.is_none() {
        require_member(&state.db, id, caller).await?;
    }
    let rows = page_rows(&state.db, id, None, None, key).await?;
    let valid_until = rows.iter().filter_map(|m| m.expires_at).min();
    let views = message_views(&state.db, rows, true).await?;
    let body = bytes::Bytes::from(serde_json::to_vec(&views).map_err(ApiError::internal)?);
    if let (Some(slot), Some(version)) = (slot, version) {
        let _ = slot.actor().send_message(ChannelMsg::HistoryFill {
            key,
            version,
            body: body.clone(),
            valid_until,
        });
    }
    ok_json_bytes(body)
}

/// GET /api/channels/{id}/threads/{msg_id}?before=&limit= — replies oldest first.
pub(crate) async fn list_thread(
    id: PathId,
    msg_id: PathId,
    state: AppState,
    caller: Caller,
    query: QueryParams,
) -> Reply {
    let (id, root) = (id.get()?, msg_id.get()?);
    let before = query.message_id("before")?;
    let limit = query.limit(HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT)?;
    require_member(&state.db, id, &caller).await?;
    let now = palaver_entity::now();
    match messages::Entity::find_by_id(root).one(&state.db).await? {
        Some(m) if m.channel_id == id && is_visible(&m, now) => {}
        _ => return Err(ApiError::not_found("message")),
    }
    let mut select =
        messages::Entity::find().filter(messages::Column::ThreadId.eq(root)).filter(visible(now));
    if let Some(before) = before {
        select = select.filter(messages::Column::Id.lt(before));
    }
    let rows = select.order_by_asc(messages::Column::Id).limit(limit).all(&state.db).await?;
    ok_json(&message_views(&state.db, rows, false).await?)
}

/// GET /api/channels/{id}/messages/{msg_id}/history — earlier payloads, oldest first.
pub(crate) async fn edit_history(id: PathId, msg_id: PathId, state: AppState, caller: Caller) -> Reply {
    let (id, message_id) = (id.get()?, msg_id.get()?);
    require_member(&state.db, id, &caller).await?;
    match messages::Entity::find_by_id(message_id).one(&state.db).await? {
        Some(m) if m.channel_id == id && is_visible(&m, palaver_entity::now()) => {}
        _ => return Err(ApiError::not_found("message")),
    }
    let rows = message_edits::Entity::find()
        .filter(message_edits::Column::MessageId.eq(message_id))
        .order_by_asc(message_edits::Column::EditedAt)
        .order_by_asc(message_edits::Column::Id)
        .all(&state.db)
        .await?;
    ok_json(&rows.iter().map(EditView::from).collect::<Vec<_>>())
}

// ---------------------------------------------------------------------------------------
// Search

/// A checked search request.
struct Search {
    /// The lowercased term.
    needle: String,
    limit: u64,
    /// `Some` when a sender filter was given: the users whose username matches.
    senders: Option<Vec<Uuid>>,
    after: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
    has_file: bool,
}

async fn parse_search(state: &AppState, query: &QueryParams) -> ApiResult<Search> {
    let q = query.text("q").unwrap_or_default();
    let chars = q.chars().count();
    if !(QUERY_MIN_CHARS..=QUERY_MAX_CHARS).contains(&chars) {
        return Err(ApiError::validation(format!(
            "q must be {QUERY_MIN_CHARS}-{QUERY_MAX_CHARS} characters"
        )));
    }
    let limit = query.limit(SEARCH_DEFAULT_LIMIT, SEARCH_MAX_LIMIT)?;
    let has_file = query.flag("has_file")?;
    let senders = match query.text("sender") {
        None => None,
        // Longer than any username: matches nobody, and no lookup is spent on it.
        Some(name) if name.chars().count() > SENDER_MAX_CHARS => Some(Vec::new()),
        Some(name) => {
            let pattern = like_contains(&name.to_lowercase());
            let ids: Vec<Uuid> = users::Entity::find()
                .select_only()
                .column(users::Column::Id)
                .filter(
                    Expr::expr(Func::lower(Expr::col((users::Entity, users::Column::Username))))
                        .like(LikeExpr::new(pattern).escape('\\')),
                )
                .into_tuple()
                .all(&state.db)
                .await?;
            Some(ids)
        }
    };
    Ok(Search {
        needle: q.to_lowercase(),
        limit,
        senders,
        after: query.time("after"),
        before: query.time("before"),
        has_file,
    })
}

/// Scans candidates in `scope` newest first, matching in Rust (portable, and a non-UTF-8
/// payload can never fail the query). Pages are read on the async side; the matching
/// (lowercasing up to 64 KiB per payload) runs on the blocking pool, one batch per core at a
/// time. The scan stops at the request's budget and the answer says so in a header.
async fn run_search(state: &AppState, scope: Condition, search: Search) -> Reply {
    if search.senders.as_ref().is_some_and(Vec::is_empty) {
        return search_reply(Vec::<()>::new(), Scan::default());
    }
    let mut filter = scope.add(visible(palaver_entity::now()));
    if let Some(senders) = &search.senders {
        filter = filter.add(messages::Column::SenderId.is_in(senders.clone()));
    }
    if let Some(after) = search.after {
        filter = filter.add(messages::Column::CreatedAt.gte(after));
    }
    if let Some(before) = search.before {
        filter = filter.add(messages::Column::CreatedAt.lte(before));
    }
    if search.has_file {
        filter = filter.add(messages::Column::MessageType.eq("file"));
    }
    let budget = state.config.search;
    let deadline = tokio::time::Instant::now() + budget.max_time;
    let needle: std::sync::Arc<str> = search.needle.into();
    let mut found: Vec<messages::Model> = Vec::new();
    let mut cursor: Option<Uuid> = None;
    let mut scan = Scan::default();
    loop {
        let mut select = messages::Entity::find().filter(filter.clone());
        if let Some(cursor) = cursor {
            select = select.filter(messages::Column::Id.lt(cursor));
        }
        let page = select.order_by_desc(messages::Column::Id).limit(SEARCH_PAGE).all(&state.db);
        let Ok(page) = tokio::time::timeout_at(deadline, page).await else {
            scan.truncated = true;
            break;
        };
        let page = page?;
        let full_page = page.len() as u64 == SEARCH_PAGE;
        scan.rows += page.len();
        scan.bytes += page.iter().map(payload_len).sum::<usize>();
        cursor = page.last().map(|m| m.id);
        let wanted = (search.limit as usize).saturating_sub(found.len());
        let Ok(permit) = tokio::time::timeout_at(deadline, state.search.matching_permit()).await else {
            scan.truncated = true;
            break;
        };
        let needle = needle.clone();
        let matched = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            page.into_iter()
                .filter(|m| searchable_text(m).contains(&*needle))
                .take(wanted)
                .collect::<Vec<_>>()
        })
        .await
        .map_err(ApiError::internal)?;
        found.extend(matched);
        if !full_page || found.len() as u64 >= search.limit {
            break;
        }
        if scan.rows >= budget.max_rows
            || scan.bytes >= budget.max_bytes
            || tokio::time::Instant::now() >= deadline
        {
            scan.truncated = true;
            break;
        }
    }
    search_reply(message_views(&state.db, found, true).await?, scan)
}

/// What one search scanned.
#[derive(Default)]
struct Scan {
    rows: usize,
    bytes: usize,
    /// The budget ended the scan before the candidates or the wanted results did.
    truncated: bool,
}

/// The wire's bare array, with the scan's outcome in headers.
fn search_reply<T: serde::Serialize>(views: Vec<T>, scan: Scan) -> Reply {
    let mut response = ok_json(&views)?;
    let headers = response.headers_mut();
    let truncated = if scan.truncated { "true" } else { "false" };
    headers.insert(TRUNCATED_HEADER, warp::http::HeaderValue::from_static(truncated));
    headers.insert(SCANNED_HEADER, warp::http::HeaderValue::from(scan.rows as u64));
    Ok(response)
}

/// A search slot for the caller: 429 `rate_limited` while they already run the maximum.
async fn search_slot(state: &AppState, caller: &Caller) -> ApiResult<crate::domain::search::SearchSlot> {
    let slot = state.search.enter(caller.user_id).ok_or(ApiError::RateLimited { retry_after: 1 })?;
    let hold = state.config.search_hold_for_tests;
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    Ok(slot)
}

/// GET /api/channels/{id}/messages/search?q=&limit=&sender=&after=&before=&has_file=
pub(crate) async fn search_channel(id: PathId, state: AppState, caller: Caller, query: QueryParams) -> Reply {
    let id = id.get()?;
    let _slot = search_slot(&state, &caller).await?;
    let search = parse_search(&state, &query).await?;
    require_member(&state.db, id, &caller).await?;
    run_search(&state, Condition::all().add(messages::Column::ChannelId.eq(id)), search).await
}

/// GET /api/messages/search — the same, across every channel the caller is a member of.
pub(crate) async fn search_everywhere(state: AppState, caller: Caller, query: QueryParams) -> Reply {
    // The slot covers the whole request, the sender lookup included.
    let _slot = search_slot(&state, &caller).await?;
    let search = parse_search(&state, &query).await?;
    let mine = Query::select()
        .column(channel_members::Column::ChannelId)
        .from(channel_members::Entity)
        .and_where(channel_members::Column::UserId.eq(caller.user_id))
        .to_owned();
    run_search(&state, Condition::all().add(messages::Column::ChannelId.in_subquery(mine)), search).await
}

// ---------------------------------------------------------------------------------------
// Pins

/// GET /api/channels/{id}/pins — most recently pinned first, hidden messages left out.
pub(crate) async fn list_pins(id: PathId, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    require_member(&state.db, id, &caller).await?;
    let rows = pins::Entity::find()
        .filter(pins::Column::ChannelId.eq(id))
        .order_by_desc(pins::Column::PinnedAt)
        .order_by_desc(pins::Column::MessageId)
        .all(&state.db)
        .await?;
    if rows.is_empty() {
        return ok_json(&Vec::<PinnedView>::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|p| p.message_id).collect();
    let found: HashMap<Uuid, messages::Model> = messages::Entity::find()
        .filter(messages::Column::Id.is_in(ids))
        .filter(messages::Column::ChannelId.eq(id))
        .filter(visible(palaver_entity::now()))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|m| (m.id, m))
        .collect();
    let views: Vec<PinnedView> = rows
        .iter()
        .filter_map(|p| {
            found.get(&p.message_id).map(|m| PinnedView {
                core: MessageCore::from(m),
                pinned_by: p.pinned_by,
                pinned_at: rfc3339(&p.pinned_at),
            })
        })
        .collect();
    ok_json(&views)
}

/// POST /api/channels/{id}/pins/{msg_id}
pub(crate) async fn pin_message(id: PathId, msg_id: PathId, state: AppState, caller: Caller) -> Reply {
    let (id, message_id) = (id.get()?, msg_id.get()?);
    if caller_level(&state.db, id, &caller).await? < Level::Moderator {
        return Err(ApiError::Forbidden);
    }
    let message = messages::Entity::find_by_id(message_id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    if message.channel_id != id {
        return Err(ApiError::validation("the message is in another channel"));
    }
    if !is_visible(&message, palaver_entity::now()) {
        return Err(ApiError::validation("a deleted message cannot be pinned"));
    }
    let max = state.settings.max_pins_per_channel();
    let (db, pinned_by) = (state.db.clone(), caller.user_id);
    write_channel(&state.hub, id, None, async move {
        // The count is checked under the same lock as the insert: the channel row
        // (PostgreSQL; SQLite's write transaction runs alone), so concurrent pins cannot pass
        // the limit together.
        let txn = crate::db::begin_write(&db).await?;
        crate::db::lock_row::<channels::Entity>(&txn, id)
            .await?
            .ok_or_else(|| ApiError::not_found("channel"))?;
        if pins::Entity::find_by_id((id, message_id)).one(&txn).await?.is_some() {
            return Err(ApiError::conflict("the message is already pinned"));
        }
        let count = pins::Entity::find().filter(pins::Column::ChannelId.eq(id)).count(&txn).await?;
        if count as i64 >= max {
            return Err(ApiError::validation(format!("a channel can have at most {max} pinned messages")));
        }
        let pinned_at = palaver_entity::now();
        pins::Entity::insert(pins::ActiveModel {
            channel_id: Set(id),
            message_id: Set(message_id),
            pinned_by: Set(Some(pinned_by)),
            pinned_at: Set(pinned_at),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        let frame = ServerFrame::MessagePinned { message_id, channel_id: id, pinned_by, pinned_at };
        Ok(((), vec![Effect::Broadcast(frame)]))
    })
    .await?;
    ok_empty()
}

/// DELETE /api/channels/{id}/pins/{msg_id}
pub(crate) async fn unpin_message(id: PathId, msg_id: PathId, state: AppState, caller: Caller) -> Reply {
    let (id, message_id) = (id.get()?, msg_id.get()?);
    if caller_level(&state.db, id, &caller).await? < Level::Moderator {
        return Err(ApiError::Forbidden);
    }
    let db = state.db.clone();
    write_channel(&state.hub, id, None, async move {
        let removed = pins::Entity::delete_many()
            .filter(pins::Column::ChannelId.eq(id))
            .filter(pins::Column::MessageId.eq(message_id))
            .exec(&db)
            .await?
            .rows_affected;
        if removed == 0 {
            return Err(ApiError::not_found("pin"));
        }
        Ok(((), vec![Effect::Broadcast(ServerFrame::MessageUnpinned { message_id, channel_id: id })]))
    })
    .await?;
    ok_empty()
}
