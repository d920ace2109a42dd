//! `presence`: will measure presence fan-out to community mates. Presence only travels
//! between users who share a community, so this needs the communities API.

use anyhow::{Result, bail};
use serde_json::Value;

use super::Ctx;

pub async fn run(_ctx: &Ctx) -> Result<Value> {
    bail!("presence scenario needs communities (not yet available)")
}
