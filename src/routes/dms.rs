//! Seed section "Direct Messages": `GET /dms`, `POST /dms` (Bearer).
//!
//! A DM is a channel of type `dm` with exactly two members and a `dm_pairs` row holding the
//! pair (smaller user id in `user_a`); the unique (user_a, user_b) index makes concurrent
//! creation converge on one DM.

use std::collections::HashMap;

use palaver_actors::kinds::ChannelType;
use palaver_actors::store::{blocked_either_way, share_community};
use palaver_entity::{channel_members, channels, dm_pairs, users};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::channel::ChannelView;
use crate::domain::message::DmView;
use crate::domain::user::UserView;
use crate::error::{ApiError, ApiResult};
use crate::http::{Reply, ok_json};
use crate::state::AppState;

/// The pair as stored: smaller id first.
fn ordered(a: Uuid, b: Uuid) -> (Uuid, Uuid) {
    if a <= b { (a, b) } else { (b, a) }
}

/// GET /api/dms — newest DM first.
pub(crate) async fn list_dms(state: AppState, caller: Caller) -> Reply {
    let me = caller.user_id;
    let pairs = dm_pairs::Entity::find()
        .filter(Condition::any().add(dm_pairs::Column::UserA.eq(me)).add(dm_pairs::Column::UserB.eq(me)))
        .all(&state.db)
        .await?;
    if pairs.is_empty() {
        return ok_json(&Vec::<DmView>::new());
    }
    let other_of: HashMap<Uuid, Uuid> =
        pairs.iter().map(|p| (p.channel_id, if p.user_a == me { p.user_b } else { p.user_a })).collect();
    let rows = channels::Entity::find()
        .filter(channels::Column::Id.is_in(other_of.keys().copied().collect::<Vec<_>>()))
        .order_by_desc(channels::Column::CreatedAt)
        .order_by_desc(channels::Column::Id)
        .all(&state.db)
        .await?;
    let people: HashMap<Uuid, users::Model> = users::Entity::find()
        .filter(users::Column::Id.is_in(other_of.values().copied().collect::<Vec<_>>()))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|u| (u.id, u))
        .collect();
    let views: Vec<DmView> = rows
        .iter()
        .filter_map(|c| {
            let other = people.get(other_of.get(&c.id)?)?;
            Some(DmView { channel: ChannelView::from(c), other_user: UserView::from(other) })
        })
        .collect();
    ok_json(&views)
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct OpenDmRequest {
    target_user_id: Uuid,
}

/// POST /api/dms — the existing DM with the target, or a new one.
pub(crate) async fn open_dm(state: AppState, caller: Caller, body: ApiResult<OpenDmRequest>) -> Reply {
    let target_id = body?.target_user_id;
    let me = caller.user_id;
    if target_id == me {
        return Err(ApiError::validation("you cannot open a direct message with yourself"));
    }
    let target = users::Entity::find_by_id(target_id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if blocked_either_way(&state.db, me, target_id).await? {
        return Err(ApiError::validation("you cannot message this user"));
    }
    if !share_community(&state.db, me, target_id).await?
        && !target.is_owner
        && !is_owner(&state.db, me).await?
    {
        return Err(ApiError::ForbiddenBecause("you do not share a community with this user".into()));
    }
    let (user_a, user_b) = ordered(me, target_id);
    if let Some(channel) = existing_dm(&state.db, user_a, user_b).await? {
        return ok_json(&DmView {
            channel: ChannelView::from(&channel),
            other_user: UserView::from(&target),
        });
    }
    let now = palaver_entity::now();
    let channel = channels::Model {
        id: Uuid::now_v7(),
        name: None,
        channel_type: ChannelType::Dm.as_str().into(),
        topic: None,
        created_by: Some(me),
        group_id: None,
        read_only: false,
        slow_mode_seconds: 0,
        discoverable: true,
        archived: false,
        voice_background: None,
        message_ttl_seconds: None,
        created_at: now,
    };
    let txn = crate::db::begin_write(&state.db).await?;
    channels::Entity::insert(channel.clone().into_active_model()).exec_without_returning(&txn).await?;
    let members = [me, target_id].map(|user_id| channel_members::ActiveModel {
        channel_id: Set(channel.id),
        user_id: Set(user_id),
        role: Set("member".into()),
        joined_at: Set(now),
    });
    channel_members::Entity::insert_many(members).exec_without_returning(&txn).await?;
    // The pair row goes last: if another request created this DM meanwhile, nothing is
    // inserted here, the transaction is dropped (rolled back) and its DM is returned instead.
    let inserted = dm_pairs::Entity::insert(dm_pairs::ActiveModel {
        channel_id: Set(channel.id),
        user_a: Set(user_a),
        user_b: Set(user_b),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([dm_pairs::Column::UserA, dm_pairs::Column::UserB]).do_nothing().to_owned(),
    )
    .exec_without_returning(&txn)
    .await;
    let channel = match inserted {
        Ok(1) => {
            txn.commit().await?;
            channel
        }
        Ok(_) => {
            drop(txn);
            existing_dm(&state.db, user_a, user_b).await?.ok_or_else(|| ApiError::internal("DM vanished"))?
        }
        Err(err) if matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {
            drop(txn);
            existing_dm(&state.db, user_a, user_b).await?.ok_or_else(|| ApiError::internal("DM vanished"))?
        }
        Err(err) => return Err(err.into()),
    };
    ok_json(&DmView { channel: ChannelView::from(&channel), other_user: UserView::from(&target) })
}

async fn existing_dm(
    db: &impl ConnectionTrait,
    user_a: Uuid,
    user_b: Uuid,
) -> ApiResult<Option<channels::Model>> {
    let Some(pair) = dm_pairs::Entity::find()
        .filter(dm_pairs::Column::UserA.eq(user_a))
        .filter(dm_pairs::Column::UserB.eq(user_b))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    Ok(channels::Entity::find_by_id(pair.channel_id).one(db).await?)
}

/// Whether a user is the instance owner (from the database, not the token).
async fn is_owner(db: &impl ConnectionTrait, user_id: Uuid) -> ApiResult<bool> {
    Ok(users::Entity::find_by_id(user_id).one(db).await?.is_some_and(|u| u.is_owner))
}
