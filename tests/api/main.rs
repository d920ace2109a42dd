//! Black-box tests: a real server on 127.0.0.1:0, real HTTP and WebSocket clients.
//! One test binary (faster to link); one module per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that cannot unwrap fails, which is what it should do"
)]

mod common;

mod access_log;
mod account;
mod admin;
mod admin_api;
mod announcements;
mod auth;
mod bookmarks;
mod channel_write_model;
mod channels;
mod cluster;
mod communities;
mod community_moderation;
mod dms;
mod drain;
mod durability;
mod files;
mod fuzz_bodies;
mod groups;
mod hardening_content;
mod hardening_edge;
mod hardening_races;
mod hardening_revoke;
mod hardening_sockets;
mod health;
mod history_cache;
mod images;
mod keys;
mod legal;
mod link_preview;
mod messages;
mod metrics;
mod misc_features;
mod openapi;
mod outage;
mod polls;
mod presence;
mod push;
mod realtime;
mod reports;
mod resume_nonce;
mod resume_positions;
mod scheduled;
mod seed_coverage;
mod totp;
mod users;
mod web;
mod webhooks;
