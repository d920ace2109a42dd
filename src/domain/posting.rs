//! Whether content may enter a channel. Every way in — socket sends, polls, webhooks,
//! scheduled messages, files uploaded into a channel — is decided by the channel actor's send
//! rules (membership, DM blocks, archived, read-only, timeouts; `actors/src/channel.rs`), so a
//! moderation decision cannot be bypassed by picking another route.

use palaver_actors::Hub;
use palaver_actors::channel::{PostError, Poster};
use palaver_actors::error_code::ErrorCode;
use palaver_actors::roles::InstanceRole;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// The caller as a poster.
pub fn as_poster(caller: &Caller) -> Poster {
    Poster::User(caller.user_id, InstanceRole { is_admin: caller.is_admin, is_owner: caller.is_owner })
}

/// 403 with the rule's reason (timed out, read-only, archived, not a member…), 404 for a
/// missing channel, 503 when the channel cannot be asked.
pub async fn require_may_post(hub: &Hub, channel_id: Uuid, poster: Poster) -> ApiResult<()> {
    hub.may_post(channel_id, poster).await.map_err(refusal)
}

/// A post's failure as the client sees it.
pub fn refusal(err: PostError) -> ApiError {
    match err {
        PostError::Refused(ErrorCode::NotFound, _) => ApiError::not_found("channel"),
        PostError::Refused(_, text) => ApiError::ForbiddenBecause(text),
        PostError::Unavailable => ApiError::Unavailable("the channel did not answer, try again".into()),
        // Only a claimed scheduled delivery answers this; nothing more to do.
        PostError::AlreadyDelivered => ApiError::conflict("already delivered"),
        PostError::Internal(detail) => ApiError::internal(detail),
    }
}
