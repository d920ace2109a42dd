//! The actor runtime: one supervised ractor actor per active channel and community, one
//! session per WebSocket, and the `Hub` that finds them.
//!
//! Nothing here knows about HTTP. Frames are JSON text built once and shared as
//! `Utf8Bytes` (a reference-counted buffer) with every recipient.

pub mod hub;
pub mod outbox;
pub mod protocol;
pub mod registry;
pub mod users;

pub use hub::{Hub, HubConfig};
