//! Black-box tests: a real server on 127.0.0.1:0, real HTTP and WebSocket clients.
//! One test binary (faster to link); one module per area.

mod common;

mod account;
mod admin;
mod admin_api;
mod announcements;
mod auth;
mod channels;
mod communities;
mod community_moderation;
mod dms;
mod durability;
mod groups;
mod health;
mod keys;
mod legal;
mod messages;
mod outage;
mod push;
mod realtime;
mod reports;
mod totp;
mod users;
mod web;
