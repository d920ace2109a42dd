//! All HTTP routes: the route table (one line per route) and the handlers, one file per
//! seed section.

pub mod account;
pub mod admin;
pub mod admin_files;
pub mod admin_moderation;
pub mod admin_users;
pub mod announcements;
pub mod auth;
pub mod bookmarks;
pub mod channels;
pub mod communities;
pub mod dms;
pub mod emojis;
pub mod feedback;
pub mod files;
pub mod gifs;
pub mod groups;
pub mod health;
pub mod images;
pub mod keys;
pub mod legal;
pub mod link_preview;
pub mod messages;
pub mod openapi;
pub mod polls;
pub mod push;
pub mod reports;
pub mod scheduled;
pub mod totp;
pub mod users;
pub mod webhooks;

use warp::{Filter, Reply};

use crate::error::ApiError;
use crate::http::Route;
use crate::state::AppState;

// The route table: the one place a path is written. Lines are tried in order, so a literal
// segment comes before a `PathId` in the same position (`/channels/unread` before
// `/channels/{id}`). Seed paths and client alias paths are one more line for the same handler.
// Extractors are the functions of `crate::http::extract`; `auth` answers the 401 before the
// handler runs, `maybe_auth` hands the result over to handlers that check something first.
crate::route_table! {
    // Health (health.rs)
    health {
        get ("health") => health::health [],
    }
    // This API's OpenAPI document, built from this table (openapi.rs)
    openapi {
        get ("openapi.json") => openapi::document [],
    }
    // Authentication: register, login, refresh, recovery (auth.rs)
    auth {
        get ("auth" / "config") => auth::auth_config [],
        post ("auth" / "register") => auth::register [client_info, json],
        post ("auth" / "login") => auth::login [client_info, json],
        post ("auth" / "refresh") => auth::refresh [client_info, json],
        post ("auth" / "recover") => auth::recover [client_info, json],
    }
    // The caller's account: profile, password, deletion, sessions, preferences (account.rs)
    account {
        get ("account" / "me") => account::get_me [auth],
        put ("account" / "profile") => account::update_profile [auth, json],
        patch ("account" / "profile") => account::update_profile [auth, json],
        put ("account" / "password") => account::change_password [auth, client_info, json],
        post ("account" / "change-password") => account::change_password [auth, client_info, json],
        post ("account" / "regenerate-recovery-code") => account::regenerate_recovery_code [auth, client_info],
        delete ("account") => account::delete_account [auth, client_info, json],
        delete ("account" / "delete") => account::delete_account [auth, client_info, json],
        post ("account" / "logout-all") => account::logout_all [auth, client_info],
        get ("account" / "preferences") => account::get_preferences [auth],
        put ("account" / "preferences") => account::put_preferences [auth, json],
        post ("account" / "sessions" / "revoke-all") => account::revoke_other_sessions [auth, client_info, json],
        get ("account" / "sessions") => account::list_sessions [auth],
        delete ("account" / "sessions" / PathId) => account::revoke_session [auth, client_info],
    }
    // Two-factor authentication (totp.rs)
    totp {
        post ("totp" / "setup") => totp::setup [auth],
        post ("totp" / "verify") => totp::verify [auth, client_info, json],
        post ("totp" / "disable") => totp::disable [auth, client_info, json],
        post ("totp" / "regenerate-backup-codes") => totp::regenerate_backup_codes [auth, client_info, json],
        get ("totp" / "backup-codes") => totp::remaining_backup_codes [auth],
    }
    // Users: search, blocks, profiles (users.rs)
    users {
        get ("users" / "search") => users::search_users [auth, query],
        get ("users" / "blocked") => users::list_blocked [auth],
        post ("users" / "block") => users::block_user [auth, json],
        post ("users" / "unblock" / PathId) => users::unblock_user [auth],
        get ("users" / PathId) => users::get_user [auth],
    }
    // Identity keys and prekey bundles (keys.rs)
    keys {
        get ("keys" / "prekeys" / "count") => keys::prekey_count [auth],
        post ("keys" / "prekeys" / "signed") => keys::upload_signed_prekey [auth, json],
        post ("keys" / "prekeys" / "one-time") => keys::upload_one_time_prekeys [auth, json],
        post ("keys" / "register") => keys::register_keys [auth, json],
        get ("keys" / PathId / "bundle") => keys::key_bundle [auth],
    }
    // Reports filed by users (reports.rs)
    reports {
        post ("reports") => reports::create_report [auth, client_info, json],
    }
    // Announcements shown to users (seed and client alias paths) (announcements.rs)
    announcements {
        get ("announcements") => announcements::list_announcements [auth],
        get ("account" / "announcements") => announcements::list_announcements [auth],
        post ("announcements" / PathId / "dismiss") => announcements::dismiss_announcement [auth],
        post ("account" / "announcements" / PathId / "dismiss") => announcements::dismiss_announcement [auth],
    }
    // Administration: invites, announcements, settings, webhooks (admin.rs)
    admin {
        get ("admin" / "invites") => admin::list_invites [auth],
        post ("admin" / "invites") => admin::create_invite [auth, client_info, json],
        delete ("admin" / "invites" / PathId) => admin::delete_invite [auth, client_info],
        get ("admin" / "announcements") => admin::list_announcements [auth],
        post ("admin" / "announcements") => admin::create_announcement [auth, client_info, json],
        get ("admin" / "settings") => admin::get_settings [auth],
        put ("admin" / "settings") => admin::put_settings [auth, client_info, json],
        get ("admin" / "webhooks") => admin::list_webhooks [auth, query],
    }
    // Administration: users (admin_users.rs)
    admin_users {
        get ("admin" / "users") => admin_users::list_users [auth, query],
        post ("admin" / "users" / PathId / "suspend") => admin_users::suspend_user [auth, client_info, json],
        post ("admin" / "users" / PathId / "unsuspend") => admin_users::unsuspend_user [auth, client_info],
        delete ("admin" / "users" / PathId) => admin_users::delete_user [auth, client_info],
        put ("admin" / "users" / PathId / "admin") => admin_users::set_admin [auth, client_info, json],
        put ("admin" / "users" / PathId / "password") => admin_users::reset_password [auth, client_info, json],
    }
    // Administration: purges, quarantine, audit log, reports (admin_moderation.rs)
    admin_moderation {
        post ("admin" / "purge" / "message" / PathId) => admin_moderation::purge_message [auth, client_info, query],
        post ("admin" / "purge" / "user" / PathId / "messages") => admin_moderation::purge_user_messages [maybe_auth, client_info, query],
        post ("admin" / "purge" / "channel" / PathId) => admin_moderation::purge_channel [maybe_auth, client_info, query],
        post ("admin" / "messages" / PathId / "quarantine") => admin_moderation::quarantine_message [maybe_auth, client_info],
        post ("admin" / "messages" / PathId / "unquarantine") => admin_moderation::unquarantine_message [maybe_auth, client_info],
        get ("admin" / "audit-log") => admin_moderation::list_audit_log [auth, query],
        get ("admin" / "reports") => admin_moderation::list_reports [auth, query],
        post ("admin" / "reports" / PathId / "review") => admin_moderation::review_report [auth, client_info, json],
    }
    // Administration: files and blocked hashes (admin_files.rs)
    admin_files {
        get ("admin" / "files") => admin_files::list_files [auth, query],
        delete ("admin" / "files" / PathId) => admin_files::delete_file [auth, client_info, query],
        post ("admin" / "files" / PathId / "quarantine") => admin_files::set_quarantine [auth, client_info, value(true)],
        post ("admin" / "files" / PathId / "unquarantine") => admin_files::set_quarantine [auth, client_info, value(false)],
        get ("admin" / "storage-stats") => admin_files::storage_stats [auth],
        get ("admin" / "blocked-hashes") => admin_files::list_blocked_hashes [auth, query],
        post ("admin" / "blocked-hashes") => admin_files::add_blocked_hash [auth, client_info, json],
        delete ("admin" / "blocked-hashes" / PathId) => admin_files::remove_blocked_hash [auth, client_info],
    }
    // Legal texts (legal.rs)
    legal {
        get ("legal" / "privacy") => legal::legal_document [value(legal::PRIVACY)],
        get ("legal" / "terms") => legal::legal_document [value(legal::TERMS)],
    }
    // Web Push subscriptions (push.rs)
    push {
        get ("push" / "vapid-key") => push::vapid_key [],
        post ("push" / "subscribe") => push::subscribe [auth, json],
        post ("push" / "unsubscribe") => push::unsubscribe [auth, json],
    }
    // Channels, members, read cursors, sender keys (channels.rs)
    channels {
        get ("channels") => channels::list_channels [auth],
        post ("channels") => channels::create_channel [auth, json],
        get ("channels" / "unread") => channels::unread_counts [auth],
        get ("channels" / PathId) => channels::get_channel [auth],
        patch ("channels" / PathId) => channels::update_channel [auth, json],
        post ("channels" / PathId / "join") => channels::join_channel [auth],
        post ("channels" / PathId / "leave") => channels::leave_channel [auth],
        get ("channels" / PathId / "members") => channels::list_members [auth, query],
        patch ("channels" / PathId / "members" / PathId / "role") => channels::set_member_role [auth, json],
        post ("channels" / PathId / "members" / PathId / "kick") => channels::kick_member [auth, client_info],
        post ("channels" / PathId / "members" / PathId / "ban") => channels::ban_member [auth, client_info, json],
        post ("channels" / PathId / "members" / PathId / "unban") => channels::unban_member [auth, client_info],
        post ("channels" / PathId / "transfer-ownership") => channels::transfer_ownership [auth, json],
        get ("channels" / PathId / "read-cursors") => channels::list_read_cursors [auth],
        post ("channels" / PathId / "sender-keys") => channels::upload_sender_key [auth, json],
        get ("channels" / PathId / "sender-keys") => channels::list_sender_keys [auth],
    }
    // Communities, their channels, roles and moderation (communities.rs)
    communities {
        get ("communities") => communities::list_communities [auth, query],
        post ("communities") => communities::create_community [auth, json],
        get ("community-invites" / String) => communities::invite_preview [auth],
        post ("community-invites" / String / "accept") => communities::accept_invite [auth],
        get ("communities" / PathId) => communities::get_community [auth],
        patch ("communities" / PathId) => communities::update_community [auth, json],
        delete ("communities" / PathId) => communities::delete_community [auth, client_info],
        post ("communities" / PathId / "transfer-ownership") => communities::transfer_ownership [auth, json],
        post ("communities" / PathId / "leave") => communities::leave_community [auth],
        get ("communities" / PathId / "groups") => communities::list_my_groups [auth],
        get ("communities" / PathId / "members") => communities::list_members [auth, query],
        put ("communities" / PathId / "members" / PathId / "role") => communities::set_member_role [auth, json],
        put ("communities" / PathId / "members" / PathId / "nickname") => communities::set_nickname [auth, json],
        delete ("communities" / PathId / "members" / PathId) => communities::kick_member [maybe_auth, client_info],
        get ("communities" / PathId / "bans") => communities::list_bans [auth],
        post ("communities" / PathId / "bans" / PathId) => communities::ban_user [maybe_auth, client_info, json],
        delete ("communities" / PathId / "bans" / PathId) => communities::unban_user [maybe_auth, client_info],
        get ("communities" / PathId / "invites") => communities::list_invites [auth],
        post ("communities" / PathId / "invites") => communities::create_invite [auth, json],
        delete ("communities" / PathId / "invites" / PathId) => communities::delete_invite [auth],
        post ("communities" / PathId / "channels" / PathId / "timeout") => communities::timeout_user [auth, client_info, json],
        delete ("communities" / PathId / "channels" / PathId / "timeout" / PathId) => communities::remove_timeout [auth, client_info],
        post ("communities" / PathId / "channels" / PathId / "warn") => communities::warn_user [auth, client_info, json, value(communities::WarnReply::Warning)],
        post ("communities" / PathId / "channels" / PathId / "warnings") => communities::warn_user [auth, client_info, json, value(communities::WarnReply::WithCount)],
        get ("communities" / PathId / "channels" / PathId / "warnings" / PathId) => communities::list_warnings [auth],
    }
    // Message history, pins, reactions, search (messages.rs)
    messages {
        get ("messages" / "search") => messages::search_everywhere [auth, query],
        get ("channels" / PathId / "messages") => messages::list_messages [auth, query],
        get ("channels" / PathId / "messages" / "search") => messages::search_channel [auth, query],
        get ("channels" / PathId / "messages" / PathId / "history") => messages::edit_history [auth],
        get ("channels" / PathId / "threads" / PathId) => messages::list_thread [auth, query],
        get ("channels" / PathId / "pins") => messages::list_pins [auth],
        post ("channels" / PathId / "pins" / PathId) => messages::pin_message [auth],
        delete ("channels" / PathId / "pins" / PathId) => messages::unpin_message [auth],
    }
    // Direct messages (dms.rs)
    dms {
        get ("dms") => dms::list_dms [auth],
        post ("dms") => dms::open_dm [auth, json],
    }
    // Groups, their channels and invites (groups.rs)
    groups {
        get ("groups") => groups::list_groups [auth],
        post ("groups") => groups::create_group [auth, json],
        get ("groups" / "discover") => groups::discover_groups [auth],
        get ("groups" / PathId) => groups::get_group [auth],
        patch ("groups" / PathId) => groups::update_group [auth, json],
        delete ("groups" / PathId) => groups::delete_group [auth, client_info],
        post ("groups" / PathId / "transfer-ownership") => groups::transfer_ownership [auth, json],
        post ("groups" / PathId / "join") => groups::join_group [auth],
        post ("groups" / PathId / "leave") => groups::leave_group [auth],
        get ("groups" / PathId / "members") => groups::list_members [auth, query],
        get ("groups" / PathId / "channels") => groups::list_channels [auth],
        post ("groups" / PathId / "channels") => groups::create_channel [auth, json],
        patch ("groups" / PathId / "channels" / PathId) => groups::update_channel [auth, json],
        delete ("groups" / PathId / "channels" / PathId) => groups::delete_channel [auth, client_info],
        get ("groups" / PathId / "invites") => groups::list_invites [auth],
        post ("groups" / PathId / "invites") => groups::create_invite [auth, json],
        delete ("groups" / PathId / "invites" / PathId) => groups::delete_invite [auth],
        get ("invites" / String) => groups::invite_info [auth],
        get ("group-invites" / String) => groups::invite_info [auth],
        post ("invites" / String / "accept") => groups::accept_invite [auth],
        post ("group-invites" / String / "accept") => groups::accept_invite [auth],
    }
    // Channel webhooks (webhooks.rs)
    webhooks {
        post ("channels" / PathId / "webhooks") => webhooks::create_webhook [auth, client_info, json],
        get ("channels" / PathId / "webhooks") => webhooks::list_webhooks [auth],
        patch ("webhooks" / PathId) => webhooks::update_webhook [auth, json],
        delete ("webhooks" / PathId) => webhooks::delete_webhook [auth, client_info],
        post ("webhooks" / "execute" / String) => webhooks::execute_webhook [json],
    }
    // Polls (polls.rs)
    polls {
        post ("channels" / PathId / "polls") => polls::create_poll [auth, json],
        get ("channels" / PathId / "polls") => polls::list_polls [auth],
        get ("polls" / PathId) => polls::get_poll [auth],
        post ("polls" / PathId / "vote") => polls::vote [auth, json],
        delete ("polls" / PathId / "vote" / String) => polls::remove_vote [auth],
        post ("polls" / PathId / "close") => polls::close_poll [auth],
    }
    // Scheduled messages (scheduled.rs)
    scheduled {
        post ("messages" / "schedule") => scheduled::schedule_message [auth, json],
        get ("messages" / "scheduled") => scheduled::list_scheduled [auth],
        delete ("messages" / "scheduled" / PathId) => scheduled::cancel_scheduled [auth],
    }
    // Bookmarks (bookmarks.rs)
    bookmarks {
        post ("bookmarks") => bookmarks::create_bookmark_from_body [maybe_auth, json],
        post ("bookmarks" / PathId) => bookmarks::create_bookmark_at [maybe_auth, json],
        get ("bookmarks") => bookmarks::list_bookmarks [auth, query],
        delete ("bookmarks" / PathId) => bookmarks::delete_bookmark [auth],
    }
    // Feedback (feedback.rs)
    feedback {
        post ("feedback") => feedback::submit [auth, client_info, header("content-type"), body_stream],
    }
    // GIF search (gifs.rs)
    gifs {
        get ("gifs" / "search") => gifs::search_gifs [auth, query],
        get ("gifs" / "trending") => gifs::trending_gifs [auth, query],
    }
    // Encrypted file uploads and downloads (files.rs)
    files {
        post ("files" / "upload") => files::upload_file [auth, multipart_form],
        get ("files" / PathId) => files::download_file [auth, header("range")],
        get ("files" / PathId / "thumb") => files::thumbnail [auth, header("range")],
        get ("files" / PathId / "meta") => files::file_meta [auth],
        delete ("files" / PathId) => files::delete_file [auth, client_info],
    }
    // Link previews (link_preview.rs)
    link_preview {
        get ("link-preview") => link_preview::preview_get [auth, query],
        post ("link-preview") => link_preview::preview_post [auth, json],
    }
    // Avatars, banners, icons and their serving (images.rs)
    images {
        post ("account" / "avatar") => images::upload_user_image [value(images::UserImage::Avatar), auth, upload],
        post ("account" / "banner") => images::upload_user_image [value(images::UserImage::Banner), auth, upload],
        post ("account" / "voice-background") => images::upload_user_image [value(images::UserImage::VoiceBackground), auth, upload],
        delete ("account" / "voice-background") => images::clear_voice_background [auth],
        post ("communities" / PathId / "icon") => images::upload_community_image [value(images::AssetSlot::Icon), auth, upload],
        post ("communities" / PathId / "banner") => images::upload_community_image [value(images::AssetSlot::Banner), auth, upload],
        post ("groups" / PathId / "icon") => images::upload_group_image [value(images::AssetSlot::Icon), auth, upload],
        post ("groups" / PathId / "banner") => images::upload_group_image [value(images::AssetSlot::Banner), auth, upload],
        post ("groups" / PathId / "channels" / PathId / "voice-background") => images::upload_channel_voice_background [auth, upload],
        post ("groups" / PathId / "voice-background") => images::upload_group_voice_background [auth, upload],
        get ("avatars" / String) => images::serve_image [value(crate::images::Area::Avatars)],
        get ("community-assets" / String) => images::serve_image [value(crate::images::Area::CommunityAssets)],
        get ("group-assets" / String) => images::serve_image [value(crate::images::Area::GroupAssets)],
    }
    // Custom emojis (emojis.rs)
    emojis {
        get ("communities" / PathId / "emojis") => emojis::list_emojis [auth],
        post ("communities" / PathId / "emojis") => emojis::create_emoji [auth, upload],
        delete ("communities" / PathId / "emojis" / PathId) => emojis::delete_emoji [auth],
        get ("emojis" / PathId) => emojis::serve_emoji [],
    }
}

/// Every `/api/...` route, then a JSON 404.
pub fn all(state: &AppState) -> Route {
    let api = routes(state);
    // Under /api an unmatched path is a JSON 404 (never the SPA's index.html).
    let api_not_found = warp::any().map(|| ApiError::not_found("route").into_response());
    let api = warp::path("api").and(api.or(api_not_found).unify());
    match &state.config.web_dir {
        Some(dir) => api.or(web_client(dir)).unify().boxed(),
        None => {
            let not_found = warp::any().map(|| ApiError::not_found("route").into_response());
            api.or(not_found).unify().boxed()
        }
    }
}

/// The built web client (SPA): files from `dir`; any other GET path gets `index.html` with
/// 200, so client-side routes survive a reload. `index.html` is never cached (it names the
/// hashed assets of the current build).
fn web_client(dir: &std::path::Path) -> Route {
    let index = dir.join("index.html");
    let files = warp::get().and(warp::fs::dir(dir.to_path_buf())).map(|file: warp::fs::File| {
        let is_index = file.path().file_name().is_some_and(|n| n == "index.html");
        let mut response = file.into_response();
        if is_index {
            no_cache(&mut response);
        }
        response
    });
    let fallback = warp::get().and(warp::fs::file(index)).map(|file: warp::fs::File| {
        let mut response = file.into_response();
        no_cache(&mut response);
        response
    });
    let not_found = warp::any().map(|| ApiError::not_found("route").into_response());
    files.or(fallback).unify().or(not_found).unify().boxed()
}

fn no_cache(response: &mut warp::reply::Response) {
    response
        .headers_mut()
        .insert(warp::http::header::CACHE_CONTROL, warp::http::HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::ROUTES;

    #[test]
    fn no_method_and_path_is_routed_twice() {
        let mut seen = HashSet::new();
        for route in ROUTES {
            assert!(seen.insert((route.method, route.path)), "routed twice: {} {}", route.method, route.path);
        }
        assert!(ROUTES.len() > 150, "the table lists every route");
    }

    #[test]
    fn literal_segments_come_before_ids_in_the_same_position() {
        // A `{id}` route listed before a literal one of the same shape would shadow it.
        for (i, later) in ROUTES.iter().enumerate() {
            for earlier in &ROUTES[..i] {
                if earlier.method != later.method {
                    continue;
                }
                let (a, b): (Vec<&str>, Vec<&str>) =
                    (earlier.path.split('/').collect(), later.path.split('/').collect());
                let shadows = a.len() == b.len()
                    && a.iter().zip(&b).all(|(x, y)| x == y || (x.starts_with('{') && !y.starts_with('{')));
                assert!(!shadows, "{} {} shadows {}", earlier.method, earlier.path, later.path);
            }
        }
    }
}
