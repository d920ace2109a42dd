//! Seed section "Polls" (Bearer): `/channels/{id}/polls` (create, list), `/polls/{id}` (get),
//! `/polls/{id}/vote` (vote), `/polls/{id}/vote/{idx}` (remove a vote), `/polls/{id}/close`.
//!
//! Members of the poll's channel only. Every change is stored first, then announced to the
//! channel's subscribers through its actor (`poll_created`, `poll_voted`, `poll_vote_removed`,
//! `poll_closed`).

use palaver_actors::channel::Effect;
use palaver_actors::protocol::ServerFrame;
use palaver_entity::{poll_votes, polls};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::channel::{channel_role, require_member};
use crate::domain::channel_write::write_channel;
use crate::domain::poll::{self, CreatePollRequest, NewPoll, PollView};
use crate::domain::posting::as_poster;
use crate::error::{ApiError, ApiResult};
use crate::http::{PathId, Reply, ok_empty, ok_json};
use crate::state::AppState;

/// The poll (404).
async fn find_poll(state: &AppState, id: Uuid) -> ApiResult<polls::Model> {
    polls::Entity::find_by_id(id).one(&state.db).await?.ok_or_else(|| ApiError::not_found("poll"))
}

/// The poll (404) and the caller's membership of its channel (403).
async fn member_poll(state: &AppState, id: Uuid, caller: &Caller) -> ApiResult<polls::Model> {
    let poll = find_poll(state, id).await?;
    require_member(&state.db, poll.channel_id, caller).await?;
    Ok(poll)
}

/// Poll objects with their tallies.
async fn views(state: &AppState, polls: &[polls::Model]) -> ApiResult<Vec<PollView>> {
    if polls.is_empty() {
        return Ok(Vec::new());
    }
    let votes = poll_votes::Entity::find()
        .filter(poll_votes::Column::PollId.is_in(polls.iter().map(|p| p.id)))
        .order_by_asc(poll_votes::Column::CreatedAt)
        .order_by_asc(poll_votes::Column::UserId)
        .all(&state.db)
        .await?;
    Ok(polls.iter().map(|p| PollView::new(p, &votes)).collect())
}

/// POST /api/channels/{id}/polls
pub(crate) async fn create_poll(
    id: PathId,
    state: AppState,
    caller: Caller,
    body: ApiResult<CreatePollRequest>,
) -> Reply {
    let channel_id = id.get()?;
    let new = NewPoll::parse(body?)?;
    require_member(&state.db, channel_id, &caller).await?;
    let options = serde_json::to_string(&new.options).map_err(ApiError::internal)?;
    // A poll is content: the channel's send rules (timeouts, read-only, archived) apply, in
    // the channel's order.
    let (db, created_by) = (state.db.clone(), caller.user_id);
    let row = write_channel(&state.hub, channel_id, Some(as_poster(&caller)), async move {
        let now = palaver_entity::now();
        let row = polls::ActiveModel {
            id: Set(Uuid::now_v7()),
            channel_id: Set(channel_id),
            created_by: Set(Some(created_by)),
            question: Set(new.question),
            options: Set(options),
            multi_select: Set(new.multi_select),
            anonymous: Set(new.anonymous),
            closed: Set(false),
            expires_at: Set(new.expires_in_minutes.map(|m| now + chrono::Duration::minutes(m))),
            created_at: Set(now),
        }
        .insert(&db)
        .await?;
        let frame = ServerFrame::PollCreated {
            poll_id: row.id,
            channel_id,
            created_by,
            question: row.question.clone(),
        };
        Ok((row, vec![Effect::Broadcast(frame)]))
    })
    .await?;
    ok_json(&PollView::new(&row, &[]))
}

/// GET /api/channels/{id}/polls
pub(crate) async fn list_polls(id: PathId, state: AppState, caller: Caller) -> Reply {
    let channel_id = id.get()?;
    require_member(&state.db, channel_id, &caller).await?;
    let rows = polls::Entity::find()
        .filter(polls::Column::ChannelId.eq(channel_id))
        .order_by_desc(polls::Column::CreatedAt)
        .order_by_desc(polls::Column::Id)
        .all(&state.db)
        .await?;
    ok_json(&views(&state, &rows).await?)
}

/// GET /api/polls/{id}
pub(crate) async fn get_poll(id: PathId, state: AppState, caller: Caller) -> Reply {
    let poll = member_poll(&state, id.get()?, &caller).await?;
    let view = views(&state, std::slice::from_ref(&poll))
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("poll view"))?;
    ok_json(&view)
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct VoteRequest {
    option_index: i64,
}

/// POST /api/polls/{id}/vote
pub(crate) async fn vote(id: PathId, state: AppState, caller: Caller, body: ApiResult<VoteRequest>) -> Reply {
    let id = id.get()?;
    let body = body?;
    let poll = member_poll(&state, id, &caller).await?;
    let index = poll::option_index(&poll, body.option_index)?;

    // Read, delete and insert decide together: the poll row is locked (PostgreSQL; SQLite's
    // write transaction runs alone), so concurrent votes of one user follow each other and a
    // single-choice poll keeps exactly one. The row read under the lock also says whether the
    // poll is still open (a concurrent close wins).
    let (db, user_id) = (state.db.clone(), caller.user_id);
    write_channel(&state.hub, poll.channel_id, None, async move {
        let txn = crate::db::begin_write(&db).await?;
        let poll = crate::db::lock_row::<polls::Entity>(&txn, poll.id)
            .await?
            .ok_or_else(|| ApiError::not_found("poll"))?;
        poll::require_open(&poll, palaver_entity::now())?;
        let mine: Vec<i32> = poll_votes::Entity::find()
            .filter(poll_votes::Column::PollId.eq(poll.id))
            .filter(poll_votes::Column::UserId.eq(user_id))
            .all(&txn)
            .await?
            .into_iter()
            .map(|v| v.option_index)
            .collect();
        if mine.contains(&index) && (poll.multi_select || mine.len() == 1) {
            // Voting again for the same option changes nothing.
            return Ok(((), Vec::new()));
        }
        let mut removed = Vec::new();
        if !poll.multi_select {
            poll_votes::Entity::delete_many()
                .filter(poll_votes::Column::PollId.eq(poll.id))
                .filter(poll_votes::Column::UserId.eq(user_id))
                .filter(poll_votes::Column::OptionIndex.ne(index))
                .exec(&txn)
                .await?;
            removed = mine.iter().copied().filter(|i| *i != index).collect();
        }
        poll_votes::Entity::insert(poll_votes::ActiveModel {
            poll_id: Set(poll.id),
            user_id: Set(user_id),
            option_index: Set(index),
            created_at: Set(palaver_entity::now()),
        })
        .on_conflict(
            OnConflict::columns([
                poll_votes::Column::PollId,
                poll_votes::Column::UserId,
                poll_votes::Column::OptionIndex,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;

        let voter_id = (!poll.anonymous).then_some(user_id);
        let mut effects: Vec<Effect> = removed
            .into_iter()
            .map(|option_index| {
                Effect::Broadcast(ServerFrame::PollVoteRemoved {
                    poll_id: poll.id,
                    channel_id: poll.channel_id,
                    option_index,
                    voter_id,
                })
            })
            .collect();
        effects.push(Effect::Broadcast(ServerFrame::PollVoted {
            poll_id: poll.id,
            channel_id: poll.channel_id,
            option_index: index,
            voter_id,
        }));
        Ok(((), effects))
    })
    .await?;
    ok_empty()
}

/// DELETE /api/polls/{id}/vote/{idx}
pub(crate) async fn remove_vote(id: PathId, idx: String, state: AppState, caller: Caller) -> Reply {
    let id = id.get()?;
    let idx: i64 = idx.parse().map_err(|_| ApiError::validation("option index must be an integer"))?;
    let poll = member_poll(&state, id, &caller).await?;
    poll::require_open(&poll, palaver_entity::now())?;
    let index = poll::option_index(&poll, idx)?;
    let (db, user_id) = (state.db.clone(), caller.user_id);
    write_channel(&state.hub, poll.channel_id, None, async move {
        poll_votes::Entity::delete_many()
            .filter(poll_votes::Column::PollId.eq(poll.id))
            .filter(poll_votes::Column::UserId.eq(user_id))
            .filter(poll_votes::Column::OptionIndex.eq(index))
            .exec(&db)
            .await?;
        // Sent even when there was no vote to remove (wire).
        let frame = ServerFrame::PollVoteRemoved {
            poll_id: poll.id,
            channel_id: poll.channel_id,
            option_index: index,
            voter_id: (!poll.anonymous).then_some(user_id),
        };
        Ok(((), vec![Effect::Broadcast(frame)]))
    })
    .await?;
    ok_empty()
}

/// POST /api/polls/{id}/close
pub(crate) async fn close_poll(id: PathId, state: AppState, caller: Caller) -> Reply {
    let poll = find_poll(&state, id.get()?).await?;
    let is_creator = poll.created_by == Some(caller.user_id);
    if !is_creator
        && channel_role(&state.db, poll.channel_id, caller.user_id).await?.as_deref() != Some("owner")
    {
        return Err(ApiError::Forbidden);
    }
    let db = state.db.clone();
    write_channel(&state.hub, poll.channel_id, None, async move {
        let changed = polls::Entity::update_many()
            .col_expr(polls::Column::Closed, Expr::value(true))
            .filter(polls::Column::Id.eq(poll.id))
            .filter(polls::Column::Closed.eq(false))
            .exec(&db)
            .await?;
        let effects = if changed.rows_affected > 0 {
            vec![Effect::Broadcast(ServerFrame::PollClosed { poll_id: poll.id, channel_id: poll.channel_id })]
        } else {
            Vec::new()
        };
        Ok(((), effects))
    })
    .await?;
    ok_empty()
}
