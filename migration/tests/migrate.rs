//! Migrations up/down/up and an entity round-trip, on SQLite (always) and on
//! PostgreSQL when `TEST_POSTGRES_URL` is set (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each PostgreSQL test runs in
//! a fresh `palaver_mig_<hex>` database that is dropped afterwards.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that cannot unwrap fails, which is what it should do"
)]

use std::any::Any;
use std::future::Future;

use palaver_entity as e;
use palaver_migration::{Migrator, MigratorTrait, SchemaManager};
use sea_orm_migration::sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ColumnTrait, ConnectionTrait, Database, DatabaseConnection,
    EntityTrait, IntoActiveModel, ModelTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

const TABLES: &[&str] = &[
    // identity
    "users",
    "refresh_tokens",
    "user_totp",
    "totp_backup_codes",
    "identity_keys",
    "signed_prekeys",
    "one_time_prekeys",
    "registration_invites",
    "blocked_users",
    "reports",
    "audit_log",
    "instance_settings",
    "announcements",
    "announcement_dismissals",
    // communities_channels
    "communities",
    "community_members",
    "community_bans",
    "community_invites",
    "custom_emojis",
    "groups",
    "group_members",
    "group_invites",
    "channels",
    "channel_members",
    "channel_bans",
    "dm_pairs",
    "read_cursors",
    "channel_timeouts",
    "channel_warnings",
    // messages
    "messages",
    "message_edits",
    "reactions",
    "pins",
    "sender_keys",
    // content
    "files",
    "blocked_hashes",
    "webhooks",
    "polls",
    "poll_votes",
    "scheduled_messages",
    "bookmarks",
    "push_subscriptions",
    "feedback",
];

// ---------------------------------------------------------------- harness

type Panic = Box<dyn Any + Send + 'static>;

/// Run the test body on its own task so a failing assertion still lets the
/// caller clean up (drop the database / delete the file) before re-panicking.
async fn isolated<F, Fut>(db: DatabaseConnection, body: F) -> Result<(), Panic>
where
    F: FnOnce(DatabaseConnection) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(body(db)).await.map_err(|e| e.into_panic())
}

async fn with_sqlite<F, Fut>(body: F)
where
    F: FnOnce(DatabaseConnection) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let path = std::env::temp_dir().join(format!("palaver_mig_{}.db", Uuid::new_v4().simple()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let db = Database::connect(&url).await.expect("open sqlite");
    let result = isolated(db.clone(), body).await;
    db.close().await.ok();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// Replace the database name (path) of a postgres URL, keeping any query.
fn with_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[host_start..].find('/').map_or(base.len(), |i| host_start + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

async fn with_postgres<F, Fut>(body: F)
where
    F: FnOnce(DatabaseConnection) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Only the ignored-unless-configured PostgreSQL tests get here (build.rs).
    let admin_url =
        std::env::var("TEST_POSTGRES_URL").expect("TEST_POSTGRES_URL is set for PostgreSQL tests");
    let name = format!("palaver_mig_{}", Uuid::new_v4().simple());
    let admin = Database::connect(&admin_url).await.expect("connect admin");
    admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create database");
    let result = match Database::connect(with_db_name(&admin_url, &name)).await {
        Ok(db) => {
            let r = isolated(db.clone(), body).await;
            db.close().await.ok();
            r
        }
        Err(err) => Err(Box::new(format!("connect test db: {err}")) as Panic),
    };
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .expect("drop database");
    admin.close().await.ok();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

// ---------------------------------------------------------------- bodies

async fn assert_tables(db: &DatabaseConnection, present: bool) {
    let manager = SchemaManager::new(db);
    for t in TABLES {
        assert_eq!(manager.has_table(*t).await.unwrap(), present, "table {t} present?");
    }
}

async fn up_down_up(db: DatabaseConnection) {
    Migrator::up(&db, None).await.expect("up");
    assert_tables(&db, true).await;
    assert!(Migrator::get_pending_migrations(&db).await.unwrap().is_empty());

    Migrator::down(&db, None).await.expect("down");
    assert_tables(&db, false).await;
    assert_eq!(Migrator::get_pending_migrations(&db).await.unwrap().len(), Migrator::migrations().len());

    Migrator::up(&db, None).await.expect("up again");
    assert_tables(&db, true).await;
}

async fn roundtrip(db: DatabaseConnection) {
    Migrator::up(&db, None).await.expect("up");
    let t0 = e::now();
    assert_eq!(t0.timestamp_subsec_nanos() % 1_000, 0, "now() keeps whole µs");

    // A user, leaving `status` and `preferences` to their DB defaults.
    let uid = Uuid::new_v4();
    let user = e::users::ActiveModel {
        id: Set(uid),
        username: Set("alice".into()),
        email: Set("alice@example.org".into()),
        password_hash: Set("$argon2id$...".into()),
        display_name: Set("Alice".into()),
        avatar_url: Set(None),
        banner_url: Set(None),
        voice_background_url: Set(None),
        status: NotSet,
        custom_status: Set(Some("hi".into())),
        bio: Set(None),
        pronouns: Set(None),
        is_admin: Set(true),
        is_owner: Set(false),
        suspended_at: Set(None),
        suspended_reason: Set(None),
        recovery_code_hash: Set(None),
        preferences: NotSet,
        created_at: Set(t0),
        updated_at: Set(t0),
    }
    .insert(&db)
    .await
    .expect("insert user");
    assert_eq!(user.status, "offline");
    assert_eq!(user.preferences, "{}");
    let found = e::users::Entity::find_by_id(uid).one(&db).await.unwrap().expect("user");
    assert_eq!(found, user);
    assert_eq!(found.id, uid);
    assert_eq!(found.created_at, t0);
    let by_name = e::users::Entity::find()
        .filter(e::users::Column::Username.eq("alice"))
        .filter(e::users::Column::CreatedAt.lte(t0))
        .one(&db)
        .await
        .unwrap();
    assert_eq!(by_name.as_ref(), Some(&user));

    // A DM channel and messages with binary ciphertext.
    let cid = Uuid::new_v4();
    let channel = e::channels::ActiveModel {
        id: Set(cid),
        name: Set(None),
        channel_type: Set("dm".into()),
        topic: Set(None),
        created_by: Set(Some(uid)),
        group_id: Set(None),
        read_only: NotSet,
        slow_mode_seconds: NotSet,
        discoverable: NotSet,
        archived: NotSet,
        voice_background: Set(None),
        message_ttl_seconds: Set(Some(3600)),
        created_at: Set(t0),
    }
    .insert(&db)
    .await
    .expect("insert channel");
    assert!(!channel.read_only && channel.discoverable && !channel.archived);
    assert_eq!(channel.slow_mode_seconds, 0);

    let ciphertext: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let mut ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    ids.sort();
    let mut messages = Vec::new();
    // Insert out of order: reading back ordered by id must restore id order.
    for (i, id) in ids.iter().enumerate().rev() {
        let m = e::messages::Model {
            id: *id,
            channel_id: cid,
            sender_id: Some(uid),
            ciphertext: ciphertext.clone(),
            nonce: vec![i as u8; 24],
            message_type: "text".into(),
            reply_to_id: None,
            sender_key_id: Some(Uuid::new_v4()),
            thread_id: None,
            edited_at: None,
            deleted_at: None,
            quarantined_at: None,
            expires_at: Some(t0 + chrono::Duration::seconds(3600)),
            webhook_content: Some(r#"{"content":"x"}"#.into()),
            created_at: e::now(),
            client_nonce: None,
        };
        e::messages::Entity::insert(m.clone().into_active_model()).exec(&db).await.expect("insert message");
        messages.push(m);
    }
    messages.reverse();
    let page = e::messages::Entity::find()
        .filter(e::messages::Column::ChannelId.eq(cid))
        .order_by_asc(e::messages::Column::Id)
        .all(&db)
        .await
        .unwrap();
    assert_eq!(page, messages, "messages round-trip, ordered by UUIDv7 id");
    let newer =
        e::messages::Entity::find().filter(e::messages::Column::Id.gt(ids[1])).count(&db).await.unwrap();
    assert_eq!(newer, 2);

    // Composite primary key.
    let reaction =
        e::reactions::Model { message_id: ids[0], user_id: uid, emoji: "👍".into(), created_at: e::now() };
    e::reactions::Entity::insert(reaction.clone().into_active_model()).exec(&db).await.unwrap();
    let found = e::reactions::Entity::find_by_id((ids[0], uid, "👍".to_string())).one(&db).await.unwrap();
    assert_eq!(found, Some(reaction));

    // ON DELETE SET NULL (messages.sender_id) and CASCADE (reactions,
    // messages of a channel): proves foreign keys are enforced (SQLite too).
    user.delete(&db).await.expect("delete user");
    let m0 =
        e::messages::Entity::find_by_id(ids[0]).one(&db).await.unwrap().expect("message survives its sender");
    assert_eq!(m0.sender_id, None);
    assert_eq!(e::reactions::Entity::find().all(&db).await.unwrap(), vec![]);
    let channel = e::channels::Entity::find_by_id(cid).one(&db).await.unwrap().unwrap();
    assert_eq!(channel.created_by, None);
    channel.delete(&db).await.expect("delete channel");
    assert!(e::messages::Entity::find().all(&db).await.unwrap().is_empty());
}

fn user(name: &str, created_at: chrono::DateTime<chrono::Utc>) -> e::users::ActiveModel {
    e::users::ActiveModel {
        id: Set(Uuid::new_v4()),
        username: Set(name.into()),
        email: Set(format!("{name}@example.org")),
        password_hash: Set("$argon2id$...".into()),
        display_name: Set(name.into()),
        avatar_url: Set(None),
        banner_url: Set(None),
        voice_background_url: Set(None),
        status: NotSet,
        custom_status: Set(None),
        bio: Set(None),
        pronouns: Set(None),
        is_admin: Set(false),
        is_owner: Set(false),
        suspended_at: Set(None),
        suspended_reason: Set(None),
        recovery_code_hash: Set(None),
        preferences: NotSet,
        created_at: Set(created_at),
        updated_at: Set(created_at),
    }
}

async fn usernames(db: &DatabaseConnection) -> Vec<String> {
    let mut names: Vec<String> =
        e::users::Entity::find().all(db).await.unwrap().into_iter().map(|u| u.username).collect();
    names.sort();
    names
}

/// The lowercase-username index: existing case duplicates (oldest keeps the name) are renamed
/// on the way up, then the database itself refuses a case variant; down lifts that again.
async fn usernames_unique_ignoring_case(db: DatabaseConnection) {
    let migrations = Migrator::migrations();
    let before_index = migrations
        .iter()
        .position(|m| m.name() == "m20261205_000008_usernames_unique_ignoring_case")
        .expect("the username index migration is registered");
    // `down` undoes the newest migrations first: the index one and every one after it.
    let down_to_before_index = (migrations.len() - before_index) as u32;
    Migrator::up(&db, Some(before_index as u32)).await.expect("up to the migration before");
    let t0 = e::now();
    for (i, name) in ["Alice", "alice", "ALICE", "bob", "Alice_2"].into_iter().enumerate() {
        // "alice" is the oldest of its group; "Alice_2" is a real, unrelated account.
        let age = match name {
            "alice" => 10,
            _ => i as i64,
        };
        user(name, t0 - chrono::Duration::seconds(age)).insert(&db).await.expect("insert user");
    }
    Migrator::up(&db, Some(1)).await.expect("index migration up");
    assert_eq!(usernames(&db).await, ["ALICE_3", "Alice_2", "Alice_4", "alice", "bob"]);
    let err = user("aLiCe", t0).insert(&db).await.expect_err("a case variant is refused");
    assert!(
        matches!(err.sql_err(), Some(sea_orm_migration::sea_orm::SqlErr::UniqueConstraintViolation(_))),
        "{err}"
    );
    user("carol", t0).insert(&db).await.expect("other names still insert");

    Migrator::up(&db, None).await.expect("the later migrations up");
    Migrator::down(&db, Some(down_to_before_index)).await.expect("index migration down");
    user("aLiCe", t0).insert(&db).await.expect("without the index, case variants insert");
    Migrator::up(&db, Some(1)).await.expect("index migration up again");
    assert!(usernames(&db).await.contains(&"aLiCe_5".to_string()));
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn sqlite_migrations_up_down_up() {
    with_sqlite(up_down_up).await;
}

#[tokio::test]
async fn sqlite_entity_roundtrip() {
    with_sqlite(roundtrip).await;
}

#[tokio::test]
#[cfg_attr(not(palaver_pg), ignore = "set TEST_POSTGRES_URL to run the PostgreSQL variant")]
async fn postgres_migrations_up_down_up() {
    with_postgres(up_down_up).await;
}

#[tokio::test]
#[cfg_attr(not(palaver_pg), ignore = "set TEST_POSTGRES_URL to run the PostgreSQL variant")]
async fn postgres_entity_roundtrip() {
    with_postgres(roundtrip).await;
}

#[tokio::test]
async fn sqlite_usernames_unique_ignoring_case() {
    with_sqlite(usernames_unique_ignoring_case).await;
}

#[tokio::test]
#[cfg_attr(not(palaver_pg), ignore = "set TEST_POSTGRES_URL to run the PostgreSQL variant")]
async fn postgres_usernames_unique_ignoring_case() {
    with_postgres(usernames_unique_ignoring_case).await;
}

#[test]
fn db_name_is_replaced() {
    assert_eq!(
        with_db_name("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_db_name("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_db_name("postgres://h:5432", "x"), "postgres://h:5432/x");
}
