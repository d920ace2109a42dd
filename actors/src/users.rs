//! Per-user facts every request and socket checks without a database round trip: users whose
//! tokens must be refused at once (suspended or deleted), and who is instance staff right now.

use std::time::{Duration, Instant};

use dashmap::{DashMap, DashSet};
use uuid::Uuid;

use crate::roles::InstanceRole;

#[derive(Default)]
pub struct BarredUsers {
    ids: DashSet<Uuid>,
}

impl BarredUsers {
    pub fn is_barred(&self, user_id: Uuid) -> bool {
        !self.ids.is_empty() && self.ids.contains(&user_id)
    }

    pub fn bar(&self, user_id: Uuid) {
        self.ids.insert(user_id);
    }

    pub fn unbar(&self, user_id: Uuid) {
        self.ids.remove(&user_id);
    }

    /// Every barred id (cache reloads).
    pub fn all(&self) -> Vec<Uuid> {
        self.ids.iter().map(|id| *id).collect()
    }
}

/// The instance role of every user, as the database has it now (only staff are stored).
///
/// Sockets read it at decision time instead of keeping the role their token had at connect,
/// so granting or revoking instance admin changes what every open socket of the user may do
/// at once. (REST keeps reading the token's flags, which lag until the next refresh, as the
/// wire says.) Writers update it right after committing the change.
#[derive(Default)]
pub struct InstanceRoles {
    staff: DashMap<Uuid, InstanceRole>,
}

impl InstanceRoles {
    pub fn get(&self, user_id: Uuid) -> InstanceRole {
        self.staff.get(&user_id).map(|role| *role).unwrap_or_default()
    }

    pub fn set(&self, user_id: Uuid, role: InstanceRole) {
        if role == InstanceRole::default() {
            self.staff.remove(&user_id);
        } else {
            self.staff.insert(user_id, role);
        }
    }

    /// The account is gone.
    pub fn forget(&self, user_id: Uuid) {
        self.staff.remove(&user_id);
    }

    /// Replaces every role with the database's (cache reloads).
    pub fn replace(&self, staff: impl IntoIterator<Item = (Uuid, InstanceRole)>) {
        let staff: std::collections::HashMap<Uuid, InstanceRole> = staff.into_iter().collect();
        self.staff.retain(|id, _| staff.contains_key(id));
        for (id, role) in staff {
            self.set(id, role);
        }
    }
}

/// Logins (refresh-token families) revoked while access tokens of theirs may still be valid.
/// Such a token no longer opens a socket (REST still takes it until it expires, as the wire
/// says), so a closed socket cannot simply reconnect. Entries expire with the tokens.
#[derive(Default)]
pub struct RevokedLogins {
    until: DashMap<Uuid, Instant>,
}

impl RevokedLogins {
    /// Purge expired entries once the map is this big (revocations are rare; this bounds it).
    const PURGE_ABOVE: usize = 256;

    pub fn revoke(&self, login: Uuid, for_at_least: Duration) {
        let now = Instant::now();
        if self.until.len() > Self::PURGE_ABOVE {
            self.until.retain(|_, until| *until > now);
        }
        self.until.insert(login, now + for_at_least);
    }

    pub fn is_revoked(&self, login: Uuid) -> bool {
        !self.until.is_empty() && self.until.get(&login).is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_logins_expire() {
        let revoked = RevokedLogins::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        revoked.revoke(a, Duration::from_secs(60));
        revoked.revoke(b, Duration::ZERO);
        assert!(revoked.is_revoked(a));
        assert!(!revoked.is_revoked(b), "expired");
        assert!(!revoked.is_revoked(Uuid::new_v4()));
    }

    #[test]
    fn roles_default_to_none_and_follow_changes() {
        let roles = InstanceRoles::default();
        let id = Uuid::new_v4();
        assert_eq!(roles.get(id).level(), None);
        roles.set(id, InstanceRole { is_admin: true, is_owner: false });
        assert!(roles.get(id).is_admin);
        roles.set(id, InstanceRole::default());
        assert_eq!(roles.get(id), InstanceRole::default());
        assert!(roles.staff.is_empty(), "non-staff are not stored");
    }
}
