//! The Session object of the wire (a refresh token as `/account/sessions` shows it) and the
//! device name derived from a User-Agent.

use palaver_actors::wire_time::rfc3339;
use palaver_entity::refresh_tokens;
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub device_name: Option<String>,
    pub ip_address: Option<String>,
    pub created_at: String,
    pub expires_at: String,
}

impl From<&refresh_tokens::Model> for SessionView {
    fn from(t: &refresh_tokens::Model) -> Self {
        Self {
            id: t.id,
            device_name: t.device_name.clone(),
            ip_address: t.ip_address.clone(),
            created_at: rfc3339(&t.created_at),
            expires_at: rfc3339(&t.expires_at),
        }
    }
}

/// Longest device name stored.
const DEVICE_NAME_MAX: usize = 100;

/// A readable device name from a User-Agent: `Firefox on Linux`, `Chatalot Desktop`, …
/// Unknown agents keep (a prefix of) their own text; no agent gives `None`.
pub fn device_name(user_agent: Option<&str>) -> Option<String> {
    let ua = user_agent.map(str::trim).filter(|ua| !ua.is_empty())?;
    if ua.contains("Chatalot") || ua.contains("Tauri") {
        return Some("Chatalot Desktop".into());
    }
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
    ]
    .into_iter()
    .find(|(marker, _)| ua.contains(marker))
    .map(|(_, name)| name);
    let os = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iOS"),
        ("CrOS", "ChromeOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Macintosh", "macOS"),
        ("Linux", "Linux"),
    ]
    .into_iter()
    .find(|(marker, _)| ua.contains(marker))
    .map(|(_, name)| name);
    let name = match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b.to_string(),
        (None, Some(o)) => o.to_string(),
        (None, None) => ua.chars().filter(|c| !c.is_control()).take(DEVICE_NAME_MAX).collect(),
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_agents_get_readable_names() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(device_name(Some(firefox)).as_deref(), Some("Firefox on Linux"));
        let chrome_mac = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";
        assert_eq!(device_name(Some(chrome_mac)).as_deref(), Some("Chrome on macOS"));
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36 Edg/126.0";
        assert_eq!(device_name(Some(edge)).as_deref(), Some("Edge on Windows"));
        assert_eq!(device_name(Some("Chatalot/0.17 Tauri/2")).as_deref(), Some("Chatalot Desktop"));
        assert_eq!(device_name(Some("curl/8.5.0")).as_deref(), Some("curl/8.5.0"));
        assert_eq!(device_name(None), None);
        assert_eq!(device_name(Some("  ")), None);
    }
}
