//! Usernames are unique ignoring case (the wire's rule), enforced by the database: a unique
//! index on `lower(username)`, so two concurrent registrations of "Alice" and "alice" cannot
//! both commit (the application's check alone ran outside the transaction).
//!
//! Accounts that already collide (created by that race) keep working: the oldest keeps its
//! name, each later one gets the first free `<name>_<n>` (still a valid username) — it logs in
//! with the new name, which an admin can tell the user.

use std::collections::HashSet;

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The index name, `uq_<table>_<what>` like the others.
pub const INDEX: &str = "uq_users_lower_username";
/// The username rule's maximum length.
const USERNAME_MAX: usize = 32;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rename_case_duplicates(manager).await?;
        // Same SQL on SQLite and PostgreSQL (both have expression indexes).
        manager
            .get_connection()
            .execute_unprepared(&format!("CREATE UNIQUE INDEX {INDEX} ON users (lower(username))"))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(INDEX).table("users").to_owned()).await
    }
}

/// Renames every account whose name equals an older one's ignoring case.
async fn rename_case_duplicates(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
    // The database's own `lower`, so the groups are exactly what the index will compare.
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT username, lower(username) AS folded FROM users ORDER BY folded, created_at, username",
        ))
        .await?;
    let mut taken: HashSet<String> = HashSet::new();
    let mut duplicates = Vec::new();
    for row in &rows {
        let username: String = row.try_get("", "username")?;
        let folded: String = row.try_get("", "folded")?;
        if !taken.insert(folded) {
            duplicates.push(username);
        }
    }
    for username in duplicates {
        let renamed = free_name(&username, &taken);
        taken.insert(renamed.to_lowercase());
        manager
            .exec_stmt(
                Query::update()
                    .table("users")
                    .value("username", renamed.clone())
                    .and_where(Expr::col("username").eq(username.clone()))
                    .to_owned(),
            )
            .await?;
        println!("palaver migration: username {username:?} collided ignoring case; renamed to {renamed:?}");
    }
    Ok(())
}

/// `<name>_<n>` for the smallest n ≥ 2 that is free ignoring case, the name shortened so the
/// whole stays within the username rule.
fn free_name(username: &str, taken: &HashSet<String>) -> String {
    (2u64..)
        .map(|n| {
            let suffix = format!("_{n}");
            let keep = username.len().min(USERNAME_MAX - suffix.len());
            // Usernames are ASCII, so any byte index is a char boundary.
            format!("{}{suffix}", &username[..keep])
        })
        .find(|candidate| !taken.contains(&candidate.to_lowercase()))
        .unwrap_or_else(|| username.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_get_the_first_free_suffix_within_the_length_rule() {
        let taken: HashSet<String> = ["alice", "alice_2"].into_iter().map(String::from).collect();
        assert_eq!(free_name("ALICE", &taken), "ALICE_3");
        let long = "a".repeat(32);
        let renamed = free_name(&long, &HashSet::from([long.clone()]));
        assert_eq!(renamed.len(), 32);
        assert!(renamed.ends_with("_2"));
    }
}
