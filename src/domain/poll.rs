//! Polls (rest-keys-totp-webhooks-polls-misc.md, "Polls"): the Poll object with its vote
//! tallies, the checked create input, and the open/closed rule votes share.

use chrono::{DateTime, Utc};
use palaver_actors::wire_time::rfc3339;
use palaver_entity::{poll_votes, polls};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Question: 1–500 bytes after trimming.
pub const QUESTION_MAX: usize = 500;
/// Options: 2–10, each 1–200 bytes after trimming.
pub const OPTIONS_MIN: usize = 2;
pub const OPTIONS_MAX: usize = 10;
pub const OPTION_MAX: usize = 200;
/// `expires_in_minutes`: 1 minute to 7 days.
pub const EXPIRY_MAX_MINUTES: i64 = 10_080;

/// One option's tally. `voter_ids` is always sent (empty for anonymous polls), which the
/// wire allows and the web client's type requires.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct VoteTally {
    pub option_index: i32,
    pub count: i64,
    pub voter_ids: Vec<Uuid>,
}

/// The wire's Poll object.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PollView {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub created_by: Option<Uuid>,
    pub question: String,
    pub options: Vec<String>,
    pub multi_select: bool,
    pub anonymous: bool,
    pub closed: bool,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub votes: Vec<VoteTally>,
}

impl PollView {
    /// The poll with its votes (rows of any polls; only this poll's are counted), in option order.
    pub fn new(poll: &polls::Model, votes: &[poll_votes::Model]) -> Self {
        let options = options_of(poll);
        let mut tallies: Vec<VoteTally> = (0..options.len() as i32)
            .map(|option_index| VoteTally { option_index, count: 0, voter_ids: Vec::new() })
            .collect();
        for vote in votes.iter().filter(|v| v.poll_id == poll.id) {
            if let Some(tally) = usize::try_from(vote.option_index).ok().and_then(|i| tallies.get_mut(i)) {
                tally.count += 1;
                if !poll.anonymous {
                    tally.voter_ids.push(vote.user_id);
                }
            }
        }
        Self {
            id: poll.id,
            channel_id: poll.channel_id,
            created_by: poll.created_by,
            question: poll.question.clone(),
            options,
            multi_select: poll.multi_select,
            anonymous: poll.anonymous,
            closed: poll.closed,
            expires_at: poll.expires_at.as_ref().map(rfc3339),
            created_at: rfc3339(&poll.created_at),
            votes: tallies,
        }
    }
}

/// The stored options (a JSON array of strings).
pub fn options_of(poll: &polls::Model) -> Vec<String> {
    serde_json::from_str(&poll.options).unwrap_or_default()
}

/// Votes are taken while a poll is neither closed nor past its expiry (else 400).
pub fn require_open(poll: &polls::Model, now: DateTime<Utc>) -> ApiResult<()> {
    if poll.closed {
        return Err(ApiError::validation("this poll is closed"));
    }
    if poll.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::validation("this poll has expired"));
    }
    Ok(())
}

/// An option index of this poll (400 when out of range).
pub fn option_index(poll: &polls::Model, index: i64) -> ApiResult<i32> {
    let count = options_of(poll).len() as i64;
    if !(0..count).contains(&index) {
        return Err(ApiError::validation(format!("option_index must be 0-{}", count - 1)));
    }
    Ok(index as i32)
}

/// `POST /channels/{id}/polls` as sent.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreatePollRequest {
    pub question: String,
    pub options: Vec<String>,
    #[serde(default)]
    pub multi_select: Option<bool>,
    #[serde(default)]
    pub anonymous: Option<bool>,
    #[serde(default)]
    pub expires_in_minutes: Option<i64>,
}

/// A checked new poll.
#[derive(Debug)]
pub struct NewPoll {
    pub question: String,
    pub options: Vec<String>,
    pub multi_select: bool,
    pub anonymous: bool,
    pub expires_in_minutes: Option<i64>,
}

impl NewPoll {
    pub fn parse(req: CreatePollRequest) -> ApiResult<Self> {
        let question = req.question.trim();
        if question.is_empty() || question.len() > QUESTION_MAX {
            return Err(ApiError::validation(format!("question must be 1-{QUESTION_MAX} bytes")));
        }
        if !(OPTIONS_MIN..=OPTIONS_MAX).contains(&req.options.len()) {
            return Err(ApiError::validation(format!("a poll needs {OPTIONS_MIN}-{OPTIONS_MAX} options")));
        }
        let options = req
            .options
            .iter()
            .map(|o| {
                let o = o.trim();
                if o.is_empty() || o.len() > OPTION_MAX {
                    Err(ApiError::validation(format!("each option must be 1-{OPTION_MAX} bytes")))
                } else {
                    Ok(o.to_string())
                }
            })
            .collect::<ApiResult<Vec<_>>>()?;
        if let Some(m) = req.expires_in_minutes
            && !(1..=EXPIRY_MAX_MINUTES).contains(&m)
        {
            return Err(ApiError::validation(format!("expires_in_minutes must be 1-{EXPIRY_MAX_MINUTES}")));
        }
        Ok(Self {
            question: question.to_string(),
            options,
            multi_select: req.multi_select.unwrap_or(false),
            anonymous: req.anonymous.unwrap_or(false),
            expires_in_minutes: req.expires_in_minutes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ApiResult<NewPoll> {
        NewPoll::parse(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn create_rules() {
        let p = parse(r#"{"question": " Lunch? ", "options": [" a ", "b"]}"#).unwrap();
        assert_eq!(
            (p.question.as_str(), p.options.clone(), p.multi_select),
            ("Lunch?", vec!["a".into(), "b".into()], false)
        );
        assert!(parse(r#"{"question": " ", "options": ["a", "b"]}"#).is_err());
        assert!(parse(r#"{"question": "q", "options": ["a"]}"#).is_err());
        assert!(parse(r#"{"question": "q", "options": ["a", " "]}"#).is_err());
        assert!(
            parse(r#"{"question": "q", "options": ["1","2","3","4","5","6","7","8","9","10","11"]}"#)
                .is_err()
        );
        assert!(parse(r#"{"question": "q", "options": ["a", "b"], "expires_in_minutes": 0}"#).is_err());
        assert!(parse(r#"{"question": "q", "options": ["a", "b"], "expires_in_minutes": 10081}"#).is_err());
        assert!(parse(r#"{"question": "q", "options": ["a", "b"], "expires_in_minutes": null}"#).is_ok());
    }
}
