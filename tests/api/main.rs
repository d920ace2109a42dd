//! Black-box tests: a real server on 127.0.0.1:0, real HTTP and WebSocket clients.
//! One test binary (faster to link); one module per area.

mod common;

mod account;
mod admin;
mod announcements;
mod auth;
mod channels;
mod dms;
mod health;
mod images;
mod keys;
mod legal;
mod messages;
mod push;
mod realtime;
mod reports;
mod totp;
mod users;
