//! The unified role ladder used for moderation decisions (wire README, "Roles").

/// Higher outranks lower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Member = 0,
    Moderator = 1,
    Admin = 2,
    Owner = 3,
    InstanceAdmin = 4,
    InstanceOwner = 5,
}

impl Level {
    /// A membership role string (`owner`, `admin`, `moderator`, anything else = member).
    pub fn from_role(role: &str) -> Self {
        match role {
            "owner" => Self::Owner,
            "admin" => Self::Admin,
            "moderator" => Self::Moderator,
            _ => Self::Member,
        }
    }

    /// The instance-level part of a caller (from the token), if any.
    pub fn instance(is_admin: bool, is_owner: bool) -> Option<Self> {
        if is_owner {
            Some(Self::InstanceOwner)
        } else if is_admin {
            Some(Self::InstanceAdmin)
        } else {
            None
        }
    }

    /// Effective role: the instance role if any, else the local role.
    pub fn effective(instance: Option<Self>, local: Option<&str>) -> Self {
        instance.unwrap_or_else(|| local.map(Self::from_role).unwrap_or(Self::Member))
    }

    /// Privileged in a channel (exempt from read-only, slow mode and timeouts).
    pub fn is_privileged(self) -> bool {
        self >= Self::Moderator
    }
}

/// Whether a raw channel role may manage the channel's webhooks (create, list, edit, delete):
/// `owner` only, with no instance-admin bypass (wire, "Webhooks"). A webhook works only while
/// its creator still holds this right.
pub fn manages_webhooks(raw_channel_role: Option<&str>) -> bool {
    raw_channel_role == Some("owner")
}

/// What the caller is at instance level, carried with every request to an actor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceRole {
    pub is_admin: bool,
    pub is_owner: bool,
}

impl InstanceRole {
    pub fn level(self) -> Option<Level> {
        Level::instance(self.is_admin, self.is_owner)
    }
}
