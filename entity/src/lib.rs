//! SeaORM entities for Palaver: one module per table, named after the table
//! (e.g. `palaver_entity::users::{Entity, Model, ActiveModel, Column}`).
//!
//! The schema itself is created by the `palaver-migration` crate. Relations
//! are intentionally not declared: queries use explicit filters.
//!
//! Conventions: ids are [`uuid::Uuid`], times are `DateTimeUtc` (use [`now`]),
//! byte blobs (keys, ciphertext) are `Vec<u8>`, free-form JSON is a `String`
//! holding serialized JSON (portable between SQLite and PostgreSQL).

pub mod announcement_dismissals;
pub mod announcements;
pub mod audit_log;
pub mod blocked_hashes;
pub mod blocked_users;
pub mod bookmarks;
pub mod channel_bans;
pub mod channel_members;
pub mod channel_timeouts;
pub mod channel_warnings;
pub mod channels;
pub mod communities;
pub mod community_bans;
pub mod community_invites;
pub mod community_members;
pub mod custom_emojis;
pub mod dm_pairs;
pub mod feedback;
pub mod files;
pub mod group_invites;
pub mod group_members;
pub mod groups;
pub mod identity_keys;
pub mod instance_settings;
pub mod message_edits;
pub mod messages;
pub mod one_time_prekeys;
pub mod pins;
pub mod poll_votes;
pub mod polls;
pub mod push_subscriptions;
pub mod reactions;
pub mod read_cursors;
pub mod refresh_tokens;
pub mod registration_invites;
pub mod reports;
pub mod scheduled_messages;
pub mod sender_keys;
pub mod signed_prekeys;
pub mod totp_backup_codes;
pub mod user_totp;
pub mod users;
pub mod webhooks;

/// `use palaver_entity::prelude::*;` brings every entity in as `Users`,
/// `RefreshTokens`, ...
pub mod prelude {
    pub use super::announcement_dismissals::Entity as AnnouncementDismissals;
    pub use super::announcements::Entity as Announcements;
    pub use super::audit_log::Entity as AuditLog;
    pub use super::blocked_hashes::Entity as BlockedHashes;
    pub use super::blocked_users::Entity as BlockedUsers;
    pub use super::bookmarks::Entity as Bookmarks;
    pub use super::channel_bans::Entity as ChannelBans;
    pub use super::channel_members::Entity as ChannelMembers;
    pub use super::channel_timeouts::Entity as ChannelTimeouts;
    pub use super::channel_warnings::Entity as ChannelWarnings;
    pub use super::channels::Entity as Channels;
    pub use super::communities::Entity as Communities;
    pub use super::community_bans::Entity as CommunityBans;
    pub use super::community_invites::Entity as CommunityInvites;
    pub use super::community_members::Entity as CommunityMembers;
    pub use super::custom_emojis::Entity as CustomEmojis;
    pub use super::dm_pairs::Entity as DmPairs;
    pub use super::feedback::Entity as Feedback;
    pub use super::files::Entity as Files;
    pub use super::group_invites::Entity as GroupInvites;
    pub use super::group_members::Entity as GroupMembers;
    pub use super::groups::Entity as Groups;
    pub use super::identity_keys::Entity as IdentityKeys;
    pub use super::instance_settings::Entity as InstanceSettings;
    pub use super::message_edits::Entity as MessageEdits;
    pub use super::messages::Entity as Messages;
    pub use super::one_time_prekeys::Entity as OneTimePrekeys;
    pub use super::pins::Entity as Pins;
    pub use super::poll_votes::Entity as PollVotes;
    pub use super::polls::Entity as Polls;
    pub use super::push_subscriptions::Entity as PushSubscriptions;
    pub use super::reactions::Entity as Reactions;
    pub use super::read_cursors::Entity as ReadCursors;
    pub use super::refresh_tokens::Entity as RefreshTokens;
    pub use super::registration_invites::Entity as RegistrationInvites;
    pub use super::reports::Entity as Reports;
    pub use super::scheduled_messages::Entity as ScheduledMessages;
    pub use super::sender_keys::Entity as SenderKeys;
    pub use super::signed_prekeys::Entity as SignedPrekeys;
    pub use super::totp_backup_codes::Entity as TotpBackupCodes;
    pub use super::user_totp::Entity as UserTotp;
    pub use super::users::Entity as Users;
    pub use super::webhooks::Entity as Webhooks;
}

/// The current time, truncated to whole microseconds.
///
/// PostgreSQL stores timestamps with microsecond precision while chrono has
/// nanoseconds; use this (not `Utc::now()`) for every stored timestamp so a
/// value read back compares equal to the one written, on both backends.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::Timelike;
    let t = chrono::Utc::now();
    // with_nanosecond only fails for values >= 2s; truncation keeps it below.
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap_or(t)
}
