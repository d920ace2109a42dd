//! The roster: who belongs to which community, and which users show as present (online,
//! idle or dnd; not offline or invisible), in memory, for presence.
//!
//! Presence needs "the mates of a user" on every connect and "the members of a community"
//! on every flush; asking the database each time costs a query returning every mate per
//! connect (5,000 connects × 5,000 rows for one big community). The roster is loaded once at
//! start and kept exact by whatever commits a membership change, right after the commit:
//! the community actors (join, leave, kick, ban, delete) and the routes that create
//! communities or delete users. In a cluster each such change is also published, and the
//! other nodes apply it to their rosters (`apply`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock};

use palaver_entity::community_members;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, QuerySelect};
use uuid::Uuid;

use crate::elsewhere::Elsewhere;
pub use crate::elsewhere::RosterChange;

#[derive(Default)]
pub struct Roster {
    index: RwLock<Index>,
    /// The other nodes of a cluster (unset on a single node): told of every change made here.
    elsewhere: OnceLock<Arc<dyn Elsewhere>>,
}

#[derive(Default)]
struct Index {
    /// user → the communities they belong to.
    communities_of: HashMap<Uuid, Vec<Uuid>>,
    /// community → its members and which of them are present.
    communities: HashMap<Uuid, Community>,
    /// Every user shown as present, member of a community or not (a later join needs it).
    present: HashSet<Uuid>,
}

#[derive(Default)]
struct Community {
    members: HashSet<Uuid>,
    present: HashSet<Uuid>,
}

impl Roster {
    /// Every membership in the database (nobody is present yet).
    pub async fn load(db: &impl ConnectionTrait) -> Result<Self, DbErr> {
        let rows: Vec<(Uuid, Uuid)> = community_members::Entity::find()
            .select_only()
            .column(community_members::Column::CommunityId)
            .column(community_members::Column::UserId)
            .into_tuple()
            .all(db)
            .await?;
        let roster = Self::default();
        {
            let mut index = roster.write();
            for (community, user) in rows {
                index.join(community, user);
            }
        }
        Ok(roster)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the other nodes of every change made here from now on (once).
    pub fn set_elsewhere(&self, elsewhere: Arc<dyn Elsewhere>) {
        let _ = self.elsewhere.set(elsewhere);
    }

    /// A user became a member (committed).
    pub fn joined(&self, community_id: Uuid, user_id: Uuid) {
        self.record(RosterChange::Joined { community: community_id, user: user_id });
    }

    /// A user stopped being a member: left, kicked or banned (committed).
    pub fn left(&self, community_id: Uuid, user_id: Uuid) {
        self.record(RosterChange::Left { community: community_id, user: user_id });
    }

    /// A community was deleted (committed).
    pub fn community_deleted(&self, community_id: Uuid) {
        self.record(RosterChange::CommunityDeleted { community: community_id });
    }

    /// A user was deleted (committed): every membership went with it.
    pub fn user_deleted(&self, user_id: Uuid) {
        self.record(RosterChange::UserDeleted { user: user_id });
    }

    /// A change made here: applied, then told to the other nodes.
    fn record(&self, change: RosterChange) {
        self.apply(change);
        if let Some(elsewhere) = self.elsewhere.get() {
            elsewhere.roster_changed(change);
        }
    }

    /// Applies a change, made here or on another node.
    pub fn apply(&self, change: RosterChange) {
        let mut index = self.write();
        match change {
            RosterChange::Joined { community, user } => index.join(community, user),
            RosterChange::Left { community, user } => index.leave(community, user),
            RosterChange::CommunityDeleted { community } => {
                let Some(gone) = index.communities.remove(&community) else { return };
                for member in gone.members {
                    index.forget_membership(member, community);
                }
            }
            RosterChange::UserDeleted { user } => {
                for community_id in index.communities_of.remove(&user).unwrap_or_default() {
                    if let Some(community) = index.communities.get_mut(&community_id) {
                        community.members.remove(&user);
                        community.present.remove(&user);
                    }
                }
                index.present.remove(&user);
            }
        }
    }

    /// Whether a user shows as present (on any node of a cluster).
    pub fn is_present(&self, user_id: Uuid) -> bool {
        self.read().present.contains(&user_id)
    }

    /// Shows or hides a user; returns their communities (whose members are to be told).
    pub fn set_present(&self, user_id: Uuid, present: bool) -> Vec<Uuid> {
        let mut index = self.write();
        let communities = index.communities_of.get(&user_id).cloned().unwrap_or_default();
        if present {
            index.present.insert(user_id);
        } else {
            index.present.remove(&user_id);
        }
        for community_id in &communities {
            if let Some(community) = index.communities.get_mut(community_id) {
                if present {
                    community.present.insert(user_id);
                } else {
                    community.present.remove(&user_id);
                }
            }
        }
        communities
    }

    /// Present users sharing a community with `user_id` (not `user_id`), at most `cap`.
    pub fn present_mates(&self, user_id: Uuid, cap: usize) -> Vec<Uuid> {
        let index = self.read();
        let Some(communities) = index.communities_of.get(&user_id) else { return Vec::new() };
        let present = communities.iter().filter_map(|c| index.communities.get(c)).map(|c| &c.present);
        let mut mates: Vec<Uuid> = if communities.len() == 1 {
            present.flatten().copied().filter(|m| *m != user_id).take(cap).collect()
        } else {
            // Several communities: a mate in two of them is listed once.
            let unique: HashSet<Uuid> = present.flatten().copied().filter(|m| *m != user_id).collect();
            unique.into_iter().take(cap).collect()
        };
        mates.sort_unstable();
        mates
    }

    /// A community's members, and which of `users` are still among them.
    pub fn members_and_still_in(&self, community_id: Uuid, users: &[Uuid]) -> (Vec<Uuid>, Vec<bool>) {
        let index = self.read();
        let Some(community) = index.communities.get(&community_id) else {
            return (Vec::new(), vec![false; users.len()]);
        };
        let still_in = users.iter().map(|u| community.members.contains(u)).collect();
        (community.members.iter().copied().collect(), still_in)
    }
}

impl Index {
    fn join(&mut self, community_id: Uuid, user_id: Uuid) {
        let present = self.present.contains(&user_id);
        let community = self.communities.entry(community_id).or_default();
        if !community.members.insert(user_id) {
            return;
        }
        if present {
            community.present.insert(user_id);
        }
        self.communities_of.entry(user_id).or_default().push(community_id);
    }

    fn leave(&mut self, community_id: Uuid, user_id: Uuid) {
        if let Some(community) = self.communities.get_mut(&community_id) {
            community.members.remove(&user_id);
            community.present.remove(&user_id);
        }
        self.forget_membership(user_id, community_id);
    }

    fn forget_membership(&mut self, user_id: Uuid, community_id: Uuid) {
        if let Some(communities) = self.communities_of.get_mut(&user_id) {
            communities.retain(|c| *c != community_id);
            if communities.is_empty() {
                self.communities_of.remove(&user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<const N: usize>() -> [Uuid; N] {
        let mut ids = [Uuid::nil(); N];
        for id in &mut ids {
            *id = Uuid::new_v4();
        }
        ids
    }

    #[test]
    fn mates_are_present_members_of_shared_communities() {
        let roster = Roster::default();
        let [c1, c2] = ids();
        let [a, b, c, outsider] = ids();
        roster.joined(c1, a);
        roster.joined(c1, b);
        roster.joined(c2, a);
        roster.joined(c2, c);
        for u in [a, b, c, outsider] {
            roster.set_present(u, true);
        }
        let mut expected = vec![b, c];
        expected.sort();
        assert_eq!(roster.present_mates(a, 10), expected);
        assert_eq!(roster.present_mates(b, 10), vec![a]);
        assert!(roster.present_mates(outsider, 10).is_empty());
        assert_eq!(roster.present_mates(a, 1).len(), 1);

        // Hidden (invisible / offline) users are not listed.
        assert_eq!(roster.set_present(c, false), vec![c2]);
        assert_eq!(roster.present_mates(a, 10), vec![b]);
    }

    #[test]
    fn membership_changes_keep_it_exact() {
        let roster = Roster::default();
        let [c1, c2] = ids();
        let [a, b] = ids();
        roster.set_present(b, true);
        roster.joined(c1, a);
        // Joining while present shows the newcomer at once.
        roster.joined(c1, b);
        assert_eq!(roster.present_mates(a, 10), vec![b]);
        roster.left(c1, b);
        assert!(roster.present_mates(a, 10).is_empty());
        assert!(roster.set_present(b, true).is_empty());

        roster.joined(c1, b);
        roster.joined(c2, b);
        roster.joined(c2, a);
        roster.user_deleted(b);
        assert!(roster.present_mates(a, 10).is_empty());
        assert_eq!(roster.members_and_still_in(c1, &[a, b]), (vec![a], vec![true, false]));

        roster.joined(c1, b);
        roster.community_deleted(c1);
        assert!(roster.set_present(b, true).is_empty());
        assert_eq!(roster.set_present(a, true), vec![c2]);
        assert_eq!(roster.members_and_still_in(c1, &[a]), (vec![], vec![false]));
    }
}
