//! Feedback (rest-keys-totp-webhooks-polls-misc.md, "Feedback"): the checked multipart form.

use std::time::Duration;

use crate::config::Config;
use crate::error::{ApiError, ApiResult};

/// Title: 1–200 bytes after trimming.
pub const TITLE_MAX: usize = 200;
/// Description: 1–5000 bytes after trimming.
pub const DESCRIPTION_MAX: usize = 5000;
/// Screenshot: at most 5 MiB.
pub const SCREENSHOT_MAX: usize = 5 * 1024 * 1024;
/// Categories a report may have.
pub const CATEGORIES: [&str; 4] = ["bug", "feature", "ui", "other"];

/// The form's fields as received (text fields as sent, the screenshot's size only).
#[derive(Debug, Default)]
pub struct FeedbackForm {
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub screenshot_bytes: Option<usize>,
}

/// A checked feedback submission.
#[derive(Debug, PartialEq, Eq)]
pub struct NewFeedback {
    pub title: String,
    pub description: String,
    pub category: &'static str,
}

impl NewFeedback {
    pub fn parse(form: FeedbackForm) -> ApiResult<Self> {
        let text = |value: Option<String>, field: &str, max: usize| -> ApiResult<String> {
            let value = value.unwrap_or_default();
            let value = value.trim();
            if value.is_empty() || value.len() > max {
                return Err(ApiError::validation(format!("{field} must be 1-{max} bytes")));
            }
            Ok(value.to_string())
        };
        let title = text(form.title, "title", TITLE_MAX)?;
        let description = text(form.description, "description", DESCRIPTION_MAX)?;
        let category = form.category.unwrap_or_default();
        let category = CATEGORIES
            .into_iter()
            .find(|c| *c == category.trim())
            .ok_or_else(|| ApiError::validation("category must be one of bug, feature, ui, other"))?;
        if form.screenshot_bytes.is_some_and(|n| n > SCREENSHOT_MAX) {
            return Err(ApiError::validation("screenshot must be at most 5 MiB"));
        }
        Ok(Self { title, description, category })
    }
}

/// Opens a GitHub issue per feedback (configured with a token and a repository).
pub struct GithubIssues {
    client: reqwest::Client,
    token: String,
    issues_url: String,
}

impl GithubIssues {
    /// `None` unless both a token and a repository are configured.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let (Some(token), Some(repo)) = (&config.github_token, &config.github_repo) else { return Ok(None) };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("palaver/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("GitHub client: {e}"))?;
        let issues_url = format!("{}/repos/{repo}/issues", config.github_api_url);
        Ok(Some(Self { client, token: token.clone(), issues_url }))
    }

    /// Opens the issue; answers its number. Failures are reported, not fatal: the feedback
    /// is already stored.
    pub async fn open(&self, feedback: &NewFeedback, username: &str) -> Result<i64, String> {
        let body = serde_json::json!({
            "title": format!("[{}] {}", feedback.category, feedback.title),
            "body": format!("{}\n\n---\nSubmitted by `{username}` through Palaver.", feedback.description),
            "labels": [feedback.category],
        });
        let response = self
            .client
            .post(&self.issues_url)
            .bearer_auth(&self.token)
            .header("accept", "application/vnd.github+json")
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("GitHub request: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!("GitHub answered {}", response.status()));
        }
        let created: serde_json::Value =
            response.json().await.map_err(|e| format!("GitHub body: {}", e.without_url()))?;
        created["number"].as_i64().ok_or_else(|| "GitHub answer has no issue number".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(title: &str, description: &str, category: &str) -> FeedbackForm {
        FeedbackForm {
            title: Some(title.into()),
            description: Some(description.into()),
            category: Some(category.into()),
            screenshot_bytes: None,
        }
    }

    #[test]
    fn form_rules() {
        let ok = NewFeedback::parse(form(" Crash ", "it crashed", "bug")).unwrap();
        assert_eq!((ok.title.as_str(), ok.category), ("Crash", "bug"));
        assert!(NewFeedback::parse(form(" ", "d", "bug")).is_err());
        assert!(NewFeedback::parse(form(&"t".repeat(201), "d", "bug")).is_err());
        assert!(NewFeedback::parse(form("t", &"d".repeat(5001), "bug")).is_err());
        assert!(NewFeedback::parse(form("t", "d", "rant")).is_err());
        assert!(NewFeedback::parse(FeedbackForm::default()).is_err());
        let mut big = form("t", "d", "ui");
        big.screenshot_bytes = Some(SCREENSHOT_MAX + 1);
        assert!(NewFeedback::parse(big).is_err());
    }
}
