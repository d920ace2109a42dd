//! Seed section "Users" (reports): `POST /reports` (Bearer). Reviewing reports is under
//! `/admin/reports` (routes/admin.rs).

use palaver_entity::reports;
use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::auth::Caller;
use crate::domain::report::{self, ReportView};
use crate::error::ApiResult;
use crate::http::{ClientInfo, ok_json};
use crate::state::AppState;

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct CreateReport {
    report_type: String,
    /// The reported message, user or file; not checked for existence (wire).
    target_id: Uuid,
    reason: String,
}

/// POST /api/reports
pub(crate) async fn create_report(
    state: AppState,
    caller: Caller,
    client: ClientInfo,
    body: ApiResult<CreateReport>,
) -> ApiResult<warp::reply::Response> {
    let body = body?;
    let report_type = report::report_type(&body.report_type)?;
    let reason = report::reason(&body.reason)?;
    let row = reports::ActiveModel {
        id: Set(Uuid::now_v7()),
        reporter_id: Set(caller.user_id),
        report_type: Set(report_type.to_string()),
        target_id: Set(body.target_id),
        reason: Set(reason),
        status: Set("pending".to_string()),
        reviewed_by: Set(None),
        reviewed_at: Set(None),
        admin_notes: Set(None),
        created_at: Set(palaver_entity::now()),
    }
    .insert(&state.db)
    .await?;
    audit::record(
        &state.db,
        Some(caller.user_id),
        "report_created",
        Some(&client),
        Some(json!({"report_id": row.id, "report_type": row.report_type, "target_id": row.target_id})),
    )
    .await;
    ok_json(&ReportView::from(&row))
}
