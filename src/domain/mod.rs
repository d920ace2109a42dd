//! Domain types: validated input and the wire views of stored rows.

pub mod announcement;
pub mod assets;
pub mod channel;
pub mod community;
pub mod invite;
pub mod keys;
pub mod message;
pub mod profile;
pub mod registration;
pub mod report;
pub mod session;
pub mod user;
pub mod visibility;
