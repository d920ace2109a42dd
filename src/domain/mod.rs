//! Domain types: validated input and the wire views of stored rows.

pub mod admin;
pub mod announcement;
pub mod assets;
pub mod bookmark;
pub mod channel;
pub mod community;
pub mod feedback;
pub mod file;
pub mod gif;
pub mod group;
pub mod invite;
pub mod keys;
pub mod link_preview;
pub mod message;
pub mod poll;
pub mod posting;
pub mod profile;
pub mod registration;
pub mod report;
pub mod scheduled;
pub mod search;
pub mod session;
pub mod user;
pub mod visibility;
pub mod webhook;
