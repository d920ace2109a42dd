//! Seed section "Miscellaneous": `POST /feedback` (Bearer, multipart form).
//!
//! Feedback is always stored in the `feedback` table for the instance's admins; when a GitHub
//! token and repository are configured it is also opened as an issue (`issue_number`). The
//! mirror answers 500 without GitHub; Palaver keeps the feedback instead. The screenshot is
//! checked for size and not kept (the table has no place for it, GitHub's issue API none).

use bytes::Buf;
use futures_util::StreamExt;
use palaver_entity::feedback;
use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::auth::Caller;
use crate::domain::feedback::{FeedbackForm, NewFeedback, SCREENSHOT_MAX};
use crate::error::{ApiError, ApiResult};
use crate::http::multipart::MAX_PARTS;
use crate::http::{ClientInfo, ok_json};
use crate::state::AppState;

/// Largest text field read (the rules allow far less; this only bounds memory).
const TEXT_FIELD_MAX: usize = 64 * 1024;
/// Largest whole form: a screenshot plus the text fields.
const FORM_MAX: u64 = (SCREENSHOT_MAX + 4 * TEXT_FIELD_MAX) as u64;

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct FeedbackResponse {
    success: bool,
    issue_number: Option<i64>,
    message: String,
}

/// POST /api/feedback
/// POST /api/feedback (multipart: the form is read after the caller is known)
pub(crate) async fn submit<S, B>(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    content_type: Option<String>,
    body: S,
) -> ApiResult<warp::reply::Response>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    let form = read_form(content_type.as_deref(), body).await?;
    submit_feedback(state, caller, client, form).await
}

async fn submit_feedback(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    form: FeedbackForm,
) -> ApiResult<warp::reply::Response> {
    let new = NewFeedback::parse(form)?;
    let row = feedback::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(Some(caller.user_id)),
        title: Set(new.title.clone()),
        description: Set(new.description.clone()),
        category: Set(new.category.to_string()),
        created_at: Set(palaver_entity::now()),
    }
    .insert(&state.db)
    .await?;
    audit::record(
        &state.db,
        Some(caller.user_id),
        "feedback_submitted",
        Some(&client),
        Some(json!({"feedback_id": row.id, "category": row.category})),
    )
    .await;
    let issue_number = match &state.github_issues {
        None => None,
        Some(github) => match github.open(&new, &caller.username).await {
            Ok(number) => Some(number),
            Err(err) => {
                tracing::warn!(feedback = %row.id, error = %err, "could not open a GitHub issue for feedback");
                None
            }
        },
    };
    let message = match issue_number {
        Some(n) => format!("Thank you! Your feedback was recorded as issue #{n}."),
        None => "Thank you! Your feedback was sent to the administrators of this server.".into(),
    };
    ok_json(&FeedbackResponse { success: true, issue_number, message })
}

/// Reads the multipart form: text fields `title`, `description`, `category`; the optional
/// `screenshot` file is only measured. Anything malformed is a 400.
async fn read_form<S, B>(content_type: Option<&str>, body: S) -> ApiResult<FeedbackForm>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    let boundary = content_type
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| ApiError::validation("expected a multipart/form-data body"))?;
    let stream = body.map(|chunk| chunk.map(|mut buf| buf.copy_to_bytes(buf.remaining())));
    let constraints = multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(FORM_MAX));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut form = FeedbackForm::default();
    let bad = |e: multer::Error| ApiError::validation(format!("malformed form: {e}"));
    let mut seen: Vec<String> = Vec::new();
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().chars().take(64).collect::<String>();
        if seen.len() == MAX_PARTS {
            return Err(ApiError::validation(format!("a form may have at most {MAX_PARTS} parts")));
        }
        // A repeated field would silently replace the first: refused instead.
        if seen.contains(&name) {
            return Err(ApiError::validation(format!("`{name}` may appear only once")));
        }
        seen.push(name.clone());
        let limit = if name == "screenshot" { SCREENSHOT_MAX + 1 } else { TEXT_FIELD_MAX };
        let mut data: Vec<u8> = Vec::new();
        let mut size = 0usize;
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            size += chunk.len();
            if size > limit {
                return Err(ApiError::validation(format!("{name} is too large")));
            }
            if name != "screenshot" {
                data.extend_from_slice(&chunk);
            }
        }
        let text = || {
            String::from_utf8(data.clone())
                .map_err(|_| ApiError::validation(format!("{name} must be UTF-8 text")))
        };
        match name.as_str() {
            "title" => form.title = Some(text()?),
            "description" => form.description = Some(text()?),
            "category" => form.category = Some(text()?),
            "screenshot" => form.screenshot_bytes = Some(size),
            _ => {}
        }
    }
    Ok(form)
}
