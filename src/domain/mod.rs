//! Domain types: validated input and the wire views of stored rows.

pub mod user;
