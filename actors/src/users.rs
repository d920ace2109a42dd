//! Users whose tokens must be refused at once (suspended or deleted), kept in memory so
//! every request and socket can check without a database round trip.

use dashmap::DashSet;
use uuid::Uuid;

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
}
