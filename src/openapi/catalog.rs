//! What the route table cannot know about a handler: the type of its JSON body, the type of
//! its success body, the query names it reads, a summary. Keyed by the handler's name as the
//! table writes it, so one entry serves every path (seed and alias) of that handler.
//!
//! The types are the ones the handlers deserialize and serialize, so a renamed or added field
//! shows up in the document by itself; what is named here is only which type goes where.
//! A handler missing from this table still appears in the document (paths come from the route
//! table), with a generic body; the API test fails when a JSON-body route has no schema.

use schemars::generate::SchemaGenerator;
use schemars::{JsonSchema, Schema};

use crate::auth::sessions::AuthResponse;
use crate::domain::admin::{AdminUserView, PurgeResult};
use crate::domain::announcement::AnnouncementView;
use crate::domain::assets::EmojiView;
use crate::domain::bookmark::BookmarkView;
use crate::domain::channel::{
    ChannelMemberView, ChannelView, CreateChannelRequest, SenderKeyView, UpdateChannelRequest,
};
use crate::domain::channel_list::{ReadCursorView, UnreadView};
use crate::domain::community::{
    BanView, CommunityInviteView, CommunityMemberView, CommunityView, CreateCommunityRequest, TimeoutView,
    UpdateCommunityRequest, WarningView,
};
use crate::domain::file::{BlockedHashView, FileMetaView, UploadView};
use crate::domain::gif::GifPage;
use crate::domain::group::{
    AcceptedInvite, CreateGroupRequest, GroupInviteView, GroupView, UpdateGroupRequest,
};
use crate::domain::invite::RegistrationInviteView;
use crate::domain::keys::{OneTimePrekeyInput, SignedPrekeyInput};
use crate::domain::link_preview::LinkPreviewView;
use crate::domain::message::{DmView, EditView, MessageView, PinnedView};
use crate::domain::poll::{CreatePollRequest, PollView};
use crate::domain::profile::ProfileRequest;
use crate::domain::registration::{RecoveryCodeResponse, RegisterRequest};
use crate::domain::report::ReportView;
use crate::domain::scheduled::{ScheduleRequest, ScheduledView};
use crate::domain::session::SessionView;
use crate::domain::user::UserView;
use crate::domain::webhook::{CreateWebhookRequest, ExecuteRequest, UpdateWebhookRequest, WebhookView};
use crate::routes::{
    account, admin, admin_files, admin_moderation, admin_users, auth, bookmarks, channels, communities, dms,
    feedback, groups, health, images, keys, legal, link_preview, polls, push, reports, totp, users,
};

/// Writes the schema of a type into the generator and answers its `$ref`.
pub type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// One of two bodies (a handler answering by kind).
fn either<A: JsonSchema, B: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let (a, b) = (generator.subschema_for::<A>(), generator.subschema_for::<B>());
    schemars::json_schema!({ "anyOf": [a, b] })
}

/// A request body.
#[derive(Clone, Copy)]
pub enum Body {
    /// `application/json` of this type.
    Json(SchemaOf),
    /// `multipart/form-data` with these fields (`true`: a file part).
    Form(&'static [(&'static str, bool)]),
}

/// The success body.
#[derive(Clone, Copy)]
pub enum Reply {
    /// JSON of this type.
    Json(SchemaOf),
    /// No body.
    Empty,
    /// Stored bytes of this media type (`image/*`, …).
    Binary(&'static str),
    /// Not described here.
    Undescribed,
}

/// What the catalog says about one handler.
#[derive(Clone, Copy)]
pub struct Spec {
    pub summary: Option<&'static str>,
    pub body: Option<Body>,
    pub reply: Reply,
    /// The success status (200 unless said).
    pub status: u16,
    /// The query names the handler reads (all optional).
    pub query: &'static [&'static str],
}

impl Spec {
    const fn new() -> Self {
        Self { summary: None, body: None, reply: Reply::Undescribed, status: 200, query: &[] }
    }
    fn body<T: JsonSchema>(mut self) -> Self {
        self.body = Some(Body::Json(schema::<T>));
        self
    }
    const fn form(mut self, fields: &'static [(&'static str, bool)]) -> Self {
        self.body = Some(Body::Form(fields));
        self
    }
    fn reply<T: JsonSchema>(mut self) -> Self {
        self.reply = Reply::Json(schema::<T>);
        self
    }
    const fn reply_with(mut self, schema_of: SchemaOf) -> Self {
        self.reply = Reply::Json(schema_of);
        self
    }
    const fn empty(mut self) -> Self {
        self.reply = Reply::Empty;
        self
    }
    const fn binary(mut self, media: &'static str) -> Self {
        self.reply = Reply::Binary(media);
        self
    }
    const fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    const fn query(mut self, names: &'static [&'static str]) -> Self {
        self.query = names;
        self
    }
    const fn summary(mut self, summary: &'static str) -> Self {
        self.summary = Some(summary);
        self
    }
}

const PAGE: &[&str] = &["limit", "offset"];

/// The catalog entry of `handler` (as the route table writes it).
pub fn spec_of(handler: &str) -> Spec {
    let s = Spec::new();
    match handler {
        "health::health" => s.reply::<health::Health>().summary("Liveness and database health"),
        "openapi::document" => s.summary("This document"),

        "auth::auth_config" => s.reply::<auth::AuthConfig>(),
        "auth::register" => s.body::<RegisterRequest>().reply::<AuthResponse>(),
        "auth::login" => s.body::<auth::LoginRequest>().reply::<AuthResponse>(),
        "auth::refresh" => s.body::<auth::RefreshRequest>().reply::<auth::RefreshResponse>(),
        "auth::recover" => s.body::<auth::RecoverRequest>().reply::<RecoveryCodeResponse>(),

        "account::get_me" => s.reply::<UserView>(),
        "account::update_profile" => s.body::<ProfileRequest>().reply::<UserView>(),
        "account::change_password" => s.body::<account::ChangePasswordRequest>().empty(),
        "account::regenerate_recovery_code" => s.reply::<RecoveryCodeResponse>(),
        "account::delete_account" => s.body::<account::DeleteAccountRequest>().empty(),
        "account::logout_all" => s.reply::<account::RevokedCount>(),
        "account::get_preferences" => s.reply::<account::PreferencesResponse>(),
        "account::put_preferences" => {
            s.body::<account::PreferencesRequest>().reply::<account::PreferencesResponse>()
        }
        "account::revoke_other_sessions" => {
            s.body::<account::RevokeOthersRequest>().reply::<account::RevokedCount>()
        }
        "account::list_sessions" => s.reply::<Vec<SessionView>>(),
        "account::revoke_session" => s.empty(),

        "totp::setup" => s.reply::<totp::SetupResponse>(),
        "totp::verify" => s.body::<totp::CodeRequest>().reply::<totp::EnabledResponse>(),
        "totp::disable" => s.body::<totp::DisableRequest>().reply::<totp::EnabledResponse>(),
        "totp::regenerate_backup_codes" => s.body::<totp::CodeRequest>().reply::<totp::BackupCodesResponse>(),
        "totp::remaining_backup_codes" => s.reply::<totp::RemainingResponse>(),

        "users::search_users" => s.query(&["q", "limit"]).reply::<Vec<UserView>>(),
        "users::list_blocked" => s.reply::<Vec<users::BlockedEntry>>(),
        "users::block_user" => s.body::<users::BlockRequest>().empty(),
        "users::unblock_user" => s.empty(),
        "users::get_user" => s.reply::<UserView>(),

        "keys::prekey_count" => s.reply::<keys::Count>(),
        "keys::upload_signed_prekey" => s.body::<SignedPrekeyInput>().empty(),
        "keys::upload_one_time_prekeys" => s.body::<Vec<OneTimePrekeyInput>>().empty(),
        "keys::register_keys" => s.body::<keys::RegisterKeys>().empty(),
        "keys::key_bundle" => s.reply::<keys::KeyBundle>(),

        "reports::create_report" => s.body::<reports::CreateReport>().reply::<ReportView>(),
        "announcements::list_announcements" => s.reply::<Vec<AnnouncementView>>(),
        "announcements::dismiss_announcement" => s.empty(),

        "admin::list_invites" => s.reply::<Vec<RegistrationInviteView>>(),
        "admin::create_invite" => s.body::<admin::CreateInvite>().reply::<RegistrationInviteView>(),
        "admin::delete_invite" => s.empty(),
        "admin::list_announcements" => s.query(&["limit"]).reply::<Vec<AnnouncementView>>(),
        "admin::create_announcement" => s.body::<admin::CreateAnnouncement>().reply::<AnnouncementView>(),
        "admin::get_settings" => s.reply::<std::collections::BTreeMap<String, String>>(),
        "admin::put_settings" => s
            .body::<std::collections::BTreeMap<String, String>>()
            .reply::<std::collections::BTreeMap<String, String>>(),
        "admin::list_webhooks" => s.query(PAGE).reply::<admin::WebhookPage>(),

        "admin_users::list_users" => {
            s.query(&["q", "search", "limit", "offset"]).reply::<Vec<AdminUserView>>()
        }
        "admin_users::suspend_user" => s.body::<admin_users::SuspendRequest>().empty(),
        "admin_users::unsuspend_user" => s.empty(),
        "admin_users::delete_user" => s.empty(),
        "admin_users::set_admin" => s.body::<admin_users::SetAdminRequest>().empty(),
        "admin_users::reset_password" => s.body::<admin_users::ResetPasswordRequest>().empty(),

        "admin_moderation::purge_message" => s.query(&["block_hashes"]).reply::<PurgeResult>(),
        "admin_moderation::purge_user_messages" | "admin_moderation::purge_channel" => {
            s.query(&["block_hashes"])
        }
        "admin_moderation::list_audit_log" => s
            .query(&["action", "date_from", "date_to", "limit", "offset"])
            .reply::<admin_moderation::AuditPage>(),
        "admin_moderation::list_reports" => {
            s.query(&["status", "limit", "offset"]).reply::<admin_moderation::ReportPage>()
        }
        "admin_moderation::review_report" => {
            s.body::<admin_moderation::ReviewRequest>().reply::<ReportView>()
        }

        "admin_files::list_files" => s
            .query(&["search", "user_id", "content_type", "date_from", "date_to", "sort", "limit", "offset"])
            .reply::<admin_files::FilePage>(),
        "admin_files::delete_file" => s.query(&["block_hashes"]).empty(),
        "admin_files::set_quarantine" => s.empty(),
        "admin_files::storage_stats" => s.reply::<admin_files::StorageStats>(),
        "admin_files::list_blocked_hashes" => s.query(&["limit"]).reply::<Vec<BlockedHashView>>(),
        "admin_files::add_blocked_hash" => {
            s.body::<admin_files::BlockHashRequest>().reply::<BlockedHashView>()
        }
        "admin_files::remove_blocked_hash" => s.empty(),

        "legal::legal_document" => s.reply::<legal::LegalText>(),

        "push::subscribe" => s.body::<push::Subscribe>().empty().status(204),
        "push::unsubscribe" => s.body::<push::Unsubscribe>().empty().status(204),

        "channels::list_channels" => s.reply::<Vec<ChannelView>>(),
        "channels::create_channel" => s.body::<CreateChannelRequest>().reply::<ChannelView>(),
        "channels::unread_counts" => s.reply::<Vec<UnreadView>>(),
        "channels::get_channel" => s.reply::<ChannelView>(),
        "channels::update_channel" => s.body::<UpdateChannelRequest>().reply::<ChannelView>(),
        "channels::join_channel" | "channels::leave_channel" => s.empty(),
        "channels::list_members" => s.query(PAGE).reply::<Vec<ChannelMemberView>>(),
        "channels::set_member_role" => s.body::<channels::RoleRequest>().empty(),
        "channels::kick_member" | "channels::unban_member" => s.empty(),
        "channels::ban_member" => s.body::<channels::BanRequest>().empty(),
        "channels::transfer_ownership" => s.body::<channels::TransferRequest>().empty(),
        "channels::list_read_cursors" => s.reply::<Vec<ReadCursorView>>(),
        "channels::upload_sender_key" => s.body::<channels::SenderKeyRequest>().reply::<SenderKeyView>(),
        "channels::list_sender_keys" => s.reply::<Vec<SenderKeyView>>(),

        "communities::list_communities" => s.query(PAGE).reply::<Vec<CommunityView>>(),
        "communities::create_community" => s.body::<CreateCommunityRequest>().reply::<CommunityView>(),
        "communities::invite_preview" => s.reply::<crate::domain::community::InvitePreview>(),
        "communities::accept_invite" => s.reply::<communities::Accepted>(),
        "communities::get_community" => s.reply::<CommunityView>(),
        "communities::update_community" => s.body::<UpdateCommunityRequest>().reply::<CommunityView>(),
        "communities::delete_community" | "communities::leave_community" => s.empty(),
        "communities::transfer_ownership" => s.body::<communities::TransferRequest>().empty(),
        "communities::list_my_groups" => s.reply::<Vec<GroupView>>(),
        "communities::list_members" => s.query(PAGE).reply::<Vec<CommunityMemberView>>(),
        "communities::set_member_role" => s.body::<communities::RoleRequest>().empty(),
        "communities::set_nickname" => s.body::<communities::NicknameRequest>().empty(),
        "communities::list_bans" => s.reply::<Vec<BanView>>(),
        "communities::ban_user" => s.body::<communities::BanRequest>(),
        "communities::list_invites" => s.reply::<Vec<CommunityInviteView>>(),
        "communities::create_invite" => s.body::<communities::InviteRequest>().reply::<CommunityInviteView>(),
        "communities::delete_invite" | "communities::remove_timeout" => s.empty(),
        "communities::timeout_user" => s.body::<communities::TimeoutRequest>().reply::<TimeoutView>(),
        "communities::warn_user" => s
            .body::<communities::WarnRequest>()
            .reply_with(either::<WarningView, communities::WarningWithCount>),
        "communities::list_warnings" => s.reply::<Vec<WarningView>>(),

        "messages::search_everywhere" | "messages::search_channel" => s
            .summary("Search message metadata (the scan's outcome is in headers)")
            .query(&["q", "sender", "has_file", "after", "before", "limit"])
            .reply::<Vec<MessageView>>(),
        "messages::list_messages" => {
            s.query(&["before", "after", "limit", "root_only"]).reply::<Vec<MessageView>>()
        }
        "messages::edit_history" => s.reply::<Vec<EditView>>(),
        "messages::list_thread" => s.query(&["limit"]).reply::<Vec<MessageView>>(),
        "messages::list_pins" => s.reply::<Vec<PinnedView>>(),
        "messages::pin_message" | "messages::unpin_message" => s.empty(),

        "dms::list_dms" => s.reply::<Vec<DmView>>(),
        "dms::open_dm" => s.body::<dms::OpenDmRequest>().reply::<DmView>(),

        "groups::list_groups" | "groups::discover_groups" => s.reply::<Vec<GroupView>>(),
        "groups::create_group" => s.body::<CreateGroupRequest>().reply::<GroupView>(),
        "groups::get_group" => s.reply::<GroupView>(),
        "groups::update_group" => s.body::<UpdateGroupRequest>().reply::<GroupView>(),
        "groups::delete_group" | "groups::join_group" | "groups::leave_group" => s.empty(),
        "groups::transfer_ownership" => s.body::<groups::TransferRequest>().empty(),
        "groups::list_members" => s.query(PAGE).reply::<Vec<ChannelMemberView>>(),
        "groups::list_channels" => s.reply::<Vec<ChannelView>>(),
        "groups::create_channel" => s.body::<CreateChannelRequest>().reply::<ChannelView>(),
        "groups::update_channel" => s.body::<UpdateChannelRequest>().reply::<ChannelView>(),
        "groups::delete_channel" | "groups::delete_invite" => s.empty(),
        "groups::list_invites" => s.reply::<Vec<GroupInviteView>>(),
        "groups::create_invite" => s.body::<groups::CreateInviteRequest>().reply::<GroupInviteView>(),
        "groups::invite_info" => s.reply::<crate::domain::group::InvitePreview>(),
        "groups::accept_invite" => s.reply::<AcceptedInvite>(),

        "webhooks::create_webhook" => s.body::<CreateWebhookRequest>().reply::<WebhookView>(),
        "webhooks::list_webhooks" => s.reply::<Vec<WebhookView>>(),
        "webhooks::update_webhook" => s.body::<UpdateWebhookRequest>().reply::<WebhookView>(),
        "webhooks::delete_webhook" => s.empty(),
        "webhooks::execute_webhook" => {
            s.body::<ExecuteRequest>().empty().summary("Post as the webhook (its token is the credential)")
        }

        "polls::create_poll" => s.body::<CreatePollRequest>().reply::<PollView>(),
        "polls::list_polls" => s.reply::<Vec<PollView>>(),
        "polls::get_poll" => s.reply::<PollView>(),
        "polls::vote" => s.body::<polls::VoteRequest>().empty(),
        "polls::remove_vote" | "polls::close_poll" => s.empty(),

        "scheduled::schedule_message" => s.body::<ScheduleRequest>().reply::<ScheduledView>(),
        "scheduled::list_scheduled" => s.query(&["limit"]).reply::<Vec<ScheduledView>>(),
        "scheduled::cancel_scheduled" => s.empty(),

        "bookmarks::create_bookmark_from_body" | "bookmarks::create_bookmark_at" => {
            s.body::<bookmarks::CreateBookmark>().reply::<BookmarkView>()
        }
        "bookmarks::list_bookmarks" => s.query(PAGE).reply::<Vec<BookmarkView>>(),
        "bookmarks::delete_bookmark" => s.empty(),

        "feedback::submit" => s.reply::<feedback::FeedbackResponse>(),
        "gifs::search_gifs" => s.query(&["q", "limit", "pos"]).reply::<GifPage>(),
        "gifs::trending_gifs" => s.query(&["limit", "pos"]).reply::<GifPage>(),

        "files::upload_file" => {
            s.form(&[("file", true), ("name", false), ("channel_id", false)]).reply::<UploadView>()
        }
        "files::download_file" | "files::thumbnail" => s.binary("application/octet-stream"),
        "files::file_meta" => s.reply::<FileMetaView>(),
        "files::delete_file" => s.empty(),

        "link_preview::preview_get" => s.query(&["url"]).reply::<LinkPreviewView>(),
        "link_preview::preview_post" => s.body::<link_preview::PreviewBody>().reply::<LinkPreviewView>(),

        "images::upload_user_image" => s.reply_with(either::<UserView, images::UrlResponse>),
        "images::clear_voice_background" => s.empty(),
        "images::upload_community_image" => s.reply::<CommunityView>(),
        "images::upload_group_image" => s.reply::<GroupView>(),
        "images::upload_channel_voice_background" | "images::upload_group_voice_background" => {
            s.reply::<ChannelView>()
        }
        "images::serve_image" | "emojis::serve_emoji" => s.binary("image/*"),

        "emojis::list_emojis" => s.reply::<Vec<EmojiView>>(),
        "emojis::create_emoji" => s.query(&["shortcode"]).reply::<EmojiView>(),
        "emojis::delete_emoji" => s.empty(),
        _ => s,
    }
}
