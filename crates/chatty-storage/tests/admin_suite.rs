//! The administration and moderation side of storage, on every backend:
//! the admin store on SQLite and MariaDB (`backend_tests!`), and the guard
//! in memory and on Redis (`guard_tests!`), each test on a fresh database or
//! key prefix. Run: `cargo test -p chatty-storage --test admin_suite`.

use std::sync::Arc;
use std::time::Duration;

use chatty_protocol::validate::{ClientMessageId, MessageBody, Nickname};
use chatty_storage::testing::{Backend, TestDatabase};
use chatty_storage::{
    AdminStore, Admission, Bucket, Guard, InMemoryGuard, JoinCheck, MessageKind, Moderation,
    NewAuditEntry, NewBan, NewMessage, NewSite, RedisClient, RedisGuard, RedisOptions, Room,
    SendCheck, SiteUpdate, SqlStore, Store, StoreError, TokenRole,
};
use chrono::Utc;

struct Fixture {
    store: Arc<SqlStore>,
    room: Room,
    site_id: i64,
    _db: TestDatabase,
}

async fn fixture(backend: Backend) -> Fixture {
    let db = TestDatabase::new(backend).await;
    let store = SqlStore::connect(&db.options())
        .await
        .expect("connect and migrate");
    let site = store
        .create_site(
            NewSite {
                key: "site-a".into(),
                name: "Site A".into(),
                allowed_origins: vec!["https://a.example".into()],
            },
            "hash-of-the-admin-token",
        )
        .await
        .expect("site");
    let room = store.room_for(site.id, None).await.expect("room");
    Fixture {
        store: Arc::new(store),
        room,
        site_id: site.id,
        _db: db,
    }
}

async fn post(f: &Fixture, id: &str, body: &str) -> u64 {
    f.store
        .post_message(NewMessage {
            room_id: f.room.id,
            guest_id: "guest-1".into(),
            nickname: Nickname::parse("Ann").expect("nickname"),
            body: MessageBody::parse(body, 2000).expect("body"),
            client_message_id: ClientMessageId::parse(id).expect("id"),
            created_at: Utc::now(),
            ip_hash: "0123456789abcdef0123456789abcdef".into(),
        })
        .await
        .expect("post")
        .message
        .seq
}

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(chatty_storage::testing::Backend::Sqlite).await })*
        }
        mod mariadb {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(chatty_storage::testing::Backend::MySql).await })*
        }
    };
}

backend_tests!(
    a_delete_takes_its_own_seq_and_empties_the_message_once,
    a_clear_removes_every_earlier_message_and_keeps_later_ones,
    deleting_what_is_not_a_chat_message_is_not_found,
    tokens_are_found_by_hash_until_revoked,
    bans_are_active_until_they_expire_or_are_lifted,
    the_audit_log_lists_newest_first_and_pages,
    retention_deletes_only_old_messages,
    the_meta_value_is_created_once_and_then_shared,
    site_updates_keep_what_they_do_not_name,
);

async fn a_delete_takes_its_own_seq_and_empties_the_message_once(backend: Backend) {
    let f = fixture(backend).await;
    let first = post(&f, "a", "keep me").await;
    let doomed = post(&f, "b", "delete me").await;
    let event = f
        .store
        .moderate(f.room.id, Moderation::Delete { seq: doomed })
        .await
        .expect("delete");
    assert!(event.created);
    assert_eq!(event.message.seq, 3, "the event is numbered like a message");
    assert_eq!(event.message.kind, MessageKind::Delete { target: doomed });
    let again = f
        .store
        .moderate(f.room.id, Moderation::Delete { seq: doomed })
        .await
        .expect("delete again");
    assert!(!again.created, "a second delete returns the first event");
    assert_eq!(again.message.seq, 3);
    let rows = f
        .store
        .messages_after(f.room.id, 0, 10)
        .await
        .expect("read");
    let kinds: Vec<(u64, MessageKind, String)> = rows
        .iter()
        .map(|m| (m.seq, m.kind, m.body.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (first, MessageKind::Chat, "keep me".into()),
            (doomed, MessageKind::Removed, String::new()),
            (3, MessageKind::Delete { target: doomed }, String::new()),
        ]
    );
    let listed = f
        .store
        .messages_for_moderation(f.room.id, None, 10)
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|m| m.message.seq).collect::<Vec<_>>(),
        vec![first],
        "moderators see chat messages only"
    );
    assert_eq!(listed[0].ip_hash, "0123456789abcdef0123456789abcdef");
}

async fn a_clear_removes_every_earlier_message_and_keeps_later_ones(backend: Backend) {
    let f = fixture(backend).await;
    for i in 0..3 {
        post(&f, &format!("c{i}"), &format!("old {i}")).await;
    }
    let clear = f
        .store
        .moderate(f.room.id, Moderation::Clear)
        .await
        .expect("clear");
    assert_eq!(clear.message.seq, 4);
    assert_eq!(clear.message.kind, MessageKind::Clear);
    let later = post(&f, "after", "new").await;
    assert_eq!(later, 5);
    let rows = f
        .store
        .messages_after(f.room.id, 0, 10)
        .await
        .expect("read");
    let removed: Vec<u64> = rows
        .iter()
        .filter(|m| m.kind == MessageKind::Removed && m.body.is_empty())
        .map(|m| m.seq)
        .collect();
    assert_eq!(removed, vec![1, 2, 3]);
    assert_eq!(rows.last().map(|m| m.body.as_str()), Some("new"));
    let room = f
        .store
        .room(f.room.id)
        .await
        .expect("room")
        .expect("exists");
    assert_eq!(room.last_seq, 5, "no hole in the sequence");
}

async fn deleting_what_is_not_a_chat_message_is_not_found(backend: Backend) {
    let f = fixture(backend).await;
    post(&f, "a", "hello").await;
    let clear = f
        .store
        .moderate(f.room.id, Moderation::Clear)
        .await
        .expect("clear");
    for seq in [99, clear.message.seq] {
        assert!(matches!(
            f.store
                .moderate(f.room.id, Moderation::Delete { seq })
                .await,
            Err(StoreError::NotFound(_))
        ));
    }
    // Removed by the clear, never deleted by itself: not found either.
    assert!(matches!(
        f.store
            .moderate(f.room.id, Moderation::Delete { seq: 1 })
            .await,
        Err(StoreError::NotFound(_))
    ));
    let room = f
        .store
        .room(f.room.id)
        .await
        .expect("room")
        .expect("exists");
    assert_eq!(room.last_seq, 2, "refused deletes take no seq");
}

async fn tokens_are_found_by_hash_until_revoked(backend: Backend) {
    let f = fixture(backend).await;
    let owner = f
        .store
        .token_by_hash("hash-of-the-admin-token")
        .await
        .expect("lookup")
        .expect("the site's first token");
    assert_eq!(owner.role, TokenRole::Admin);
    assert_eq!(owner.site_id, f.site_id);
    let moderator = f
        .store
        .create_token(f.site_id, TokenRole::Moderator, "Bea", "hash-b")
        .await
        .expect("create");
    assert_eq!(
        f.store.token_by_hash("hash-b").await.expect("lookup"),
        Some(moderator.clone())
    );
    assert!(
        f.store
            .revoke_token(f.site_id, moderator.id)
            .await
            .expect("revoke")
    );
    assert_eq!(f.store.token_by_hash("hash-b").await.expect("lookup"), None);
    assert!(
        !f.store
            .revoke_token(f.site_id + 1, owner.id)
            .await
            .expect("revoke"),
        "another site's token is not this site's to revoke"
    );
    let listed = f.store.list_tokens(f.site_id).await.expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.label.as_str(), t.revoked))
            .collect::<Vec<_>>(),
        vec![("site owner", false), ("Bea", true)]
    );
}

async fn bans_are_active_until_they_expire_or_are_lifted(backend: Backend) {
    let f = fixture(backend).await;
    let ban = |guest: &str, secs: i64| NewBan {
        site_id: f.site_id,
        guest_id: Some(guest.into()),
        ip_hash: None,
        reason: "spam".into(),
        created_by: "Bea (moderator)".into(),
        expires_at: Utc::now() + chrono::Duration::seconds(secs),
    };
    let long = f.store.add_ban(ban("g1", 3600)).await.expect("ban");
    let short = f.store.add_ban(ban("g2", 1)).await.expect("ban");
    let active = f
        .store
        .active_bans(Some(f.site_id), Utc::now())
        .await
        .expect("active");
    assert_eq!(active.len(), 2);
    let later = Utc::now() + chrono::Duration::seconds(5);
    let active = f.store.active_bans(None, later).await.expect("active");
    assert_eq!(
        active.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![long.id]
    );
    let lifted = f
        .store
        .lift_ban(f.site_id, long.id)
        .await
        .expect("lift")
        .expect("found");
    assert_eq!(lifted.guest_id.as_deref(), Some("g1"));
    assert!(
        f.store
            .active_bans(Some(f.site_id), Utc::now())
            .await
            .expect("active")
            .iter()
            .all(|b| b.id == short.id)
    );
    assert_eq!(
        f.store
            .lift_ban(f.site_id + 1, short.id)
            .await
            .expect("lift"),
        None,
        "another site's ban"
    );
}

async fn the_audit_log_lists_newest_first_and_pages(backend: Backend) {
    let f = fixture(backend).await;
    for i in 0..5 {
        f.store
            .record_action(NewAuditEntry {
                site_id: f.site_id,
                actor: "Bea (moderator)".into(),
                action: "delete_message".into(),
                room_id: Some(f.room.id),
                target: format!("seq {i}"),
                details: serde_json::json!({ "i": i }),
            })
            .await
            .expect("record");
    }
    let page = f.store.audit_log(f.site_id, None, 3).await.expect("page");
    assert_eq!(
        page.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        vec!["seq 4", "seq 3", "seq 2"]
    );
    assert_eq!(page[0].details, serde_json::json!({ "i": 4 }));
    let next = f
        .store
        .audit_log(f.site_id, Some(page[2].id), 3)
        .await
        .expect("page");
    assert_eq!(
        next.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        vec!["seq 1", "seq 0"]
    );
    assert!(
        f.store
            .audit_log(f.site_id + 1, None, 3)
            .await
            .expect("other")
            .is_empty()
    );
}

async fn retention_deletes_only_old_messages(backend: Backend) {
    let f = fixture(backend).await;
    for i in 0..5 {
        post(&f, &format!("r{i}"), "message").await;
    }
    let deleted = f
        .store
        .delete_messages_before(Utc::now() - chrono::Duration::days(1), 100)
        .await
        .expect("sweep");
    assert_eq!(deleted, 0, "nothing is a day old");
    let deleted = f
        .store
        .delete_messages_before(Utc::now() + chrono::Duration::seconds(5), 2)
        .await
        .expect("sweep");
    assert_eq!(deleted, 2, "one batch");
    let left = f
        .store
        .messages_after(f.room.id, 0, 10)
        .await
        .expect("read");
    assert_eq!(
        left.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(post(&f, "r-new", "still numbered on").await, 6);
}

async fn the_meta_value_is_created_once_and_then_shared(backend: Backend) {
    let f = fixture(backend).await;
    let first = f
        .store
        .meta_value("ip_hash_salt", "first".into())
        .await
        .expect("create");
    let second = f
        .store
        .meta_value("ip_hash_salt", "second".into())
        .await
        .expect("read");
    assert_eq!((first.as_str(), second.as_str()), ("first", "first"));
}

async fn site_updates_keep_what_they_do_not_name(backend: Backend) {
    let f = fixture(backend).await;
    let updated = f
        .store
        .update_site(
            f.site_id,
            SiteUpdate {
                slow_mode_secs: Some(10),
                ..SiteUpdate::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.slow_mode_secs, 10);
    assert_eq!(
        updated.allowed_origins,
        vec!["https://a.example".to_string()]
    );
    let filter = chatty_protocol::moderation::WordFilter {
        mode: chatty_protocol::moderation::FilterMode::Reject,
        words: vec!["spam".into()],
    };
    let updated = f
        .store
        .update_site(
            f.site_id,
            SiteUpdate {
                word_filter: Some(filter.clone()),
                disabled: Some(true),
                ..SiteUpdate::default()
            },
        )
        .await
        .expect("update");
    assert_eq!((updated.slow_mode_secs, updated.disabled), (10, true));
    assert_eq!(updated.word_filter, filter);
    let read = f
        .store
        .site_by_id(f.site_id)
        .await
        .expect("read")
        .expect("site");
    assert_eq!(read, updated);
}

// --- The guard, in memory and on Redis ------------------------------------------

/// Two handles on one shared state: two nodes of a deployment (Redis, with a
/// key prefix of its own), or the one process of the embedded mode.
fn guards(redis: bool) -> (Arc<dyn Guard>, Arc<dyn Guard>) {
    if !redis {
        let one: Arc<dyn Guard> = Arc::new(InMemoryGuard::default());
        return (Arc::clone(&one), one);
    }
    let url =
        std::env::var("CHATTY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("chatty_test_guard_{}:", uuid::Uuid::new_v4().simple());
    let node = || -> Arc<dyn Guard> {
        let client = RedisClient::new(RedisOptions {
            url: url.clone(),
            key_prefix: prefix.clone(),
            pool_size: 2,
            timeout: Duration::from_secs(2),
            history_messages: 10,
            key_ttl: Duration::from_secs(60),
        })
        .expect("redis client");
        Arc::new(RedisGuard::new(client))
    };
    (node(), node())
}

fn check<'a>(guest: &'a str, id: &'a str, fingerprint: &'a str) -> SendCheck<'a> {
    SendCheck {
        site_id: 1,
        room_id: 7,
        guest_id: guest,
        ip_hash: "iphash",
        client_message_id: id,
        fingerprint,
        slow_mode: Duration::ZERO,
        repeat_window: Duration::ZERO,
        buckets: Vec::new(),
    }
}

macro_rules! guard_tests {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(#[tokio::test]
            async fn $name() { super::$name(false).await })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $name() { super::$name(true).await })*
        }
    };
}

guard_tests!(
    a_ban_refuses_the_guest_and_the_address_on_every_node_until_lifted,
    slow_mode_admits_one_message_per_interval_and_its_retries,
    the_same_text_again_is_refused_but_its_retry_is_not,
    a_bucket_admits_its_burst_across_nodes_then_says_when_to_come_back,
    a_join_is_refused_to_a_banned_address_and_counted_in_its_bucket,
);

async fn a_ban_refuses_the_guest_and_the_address_on_every_node_until_lifted(redis: bool) {
    let (one, two) = guards(redis);
    let until = Utc::now() + chrono::Duration::seconds(60);
    one.ban(1, Some("bad"), None, until).await.expect("ban");
    assert_eq!(
        two.admit_send(&check("bad", "m1", "f1"))
            .await
            .expect("check"),
        Admission::Banned
    );
    assert_eq!(
        two.admit_send(&check("good", "m2", "f2"))
            .await
            .expect("check"),
        Admission::Allowed
    );
    one.ban(1, None, Some("iphash"), until)
        .await
        .expect("ban ip");
    assert_eq!(
        two.admit_send(&check("good", "m3", "f3"))
            .await
            .expect("check"),
        Admission::Banned,
        "same address, other guest"
    );
    let other_site = SendCheck {
        site_id: 2,
        ..check("bad", "m4", "f4")
    };
    assert_eq!(
        two.admit_send(&other_site).await.expect("check"),
        Admission::Allowed,
        "a ban is per site"
    );
    one.unban(1, Some("bad"), Some("iphash"))
        .await
        .expect("unban");
    assert_eq!(
        two.admit_send(&check("bad", "m5", "f5"))
            .await
            .expect("check"),
        Admission::Allowed
    );
}

async fn slow_mode_admits_one_message_per_interval_and_its_retries(redis: bool) {
    let (one, two) = guards(redis);
    let slow = |id: &'static str, fp: &'static str| SendCheck {
        slow_mode: Duration::from_millis(400),
        ..check("ann", id, fp)
    };
    assert_eq!(
        one.admit_send(&slow("m1", "f1")).await.expect("check"),
        Admission::Allowed
    );
    assert_eq!(
        two.admit_send(&slow("m1", "f1")).await.expect("check"),
        Admission::Allowed,
        "a retry of the admitted message passes"
    );
    match two.admit_send(&slow("m2", "f2")).await.expect("check") {
        Admission::SlowMode { retry_after } => {
            assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(400))
        }
        other => panic!("expected slow mode, got {other:?}"),
    }
    let bob = SendCheck {
        slow_mode: Duration::from_millis(400),
        ..check("bob", "b1", "fb")
    };
    assert_eq!(
        one.admit_send(&bob).await.expect("check"),
        Admission::Allowed,
        "slow mode is per guest"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        one.admit_send(&slow("m2", "f2")).await.expect("check"),
        Admission::Allowed
    );
}

async fn the_same_text_again_is_refused_but_its_retry_is_not(redis: bool) {
    let (one, two) = guards(redis);
    let repeat = |id: &'static str, fp: &'static str| SendCheck {
        repeat_window: Duration::from_secs(30),
        ..check("ann", id, fp)
    };
    assert_eq!(
        one.admit_send(&repeat("m1", "same")).await.expect("check"),
        Admission::Allowed
    );
    assert_eq!(
        two.admit_send(&repeat("m1", "same")).await.expect("check"),
        Admission::Allowed,
        "a retry (same client id)"
    );
    assert_eq!(
        two.admit_send(&repeat("m2", "same")).await.expect("check"),
        Admission::Repeated
    );
    assert_eq!(
        two.admit_send(&repeat("m3", "other")).await.expect("check"),
        Admission::Allowed
    );
}

async fn a_bucket_admits_its_burst_across_nodes_then_says_when_to_come_back(redis: bool) {
    let (one, two) = guards(redis);
    let with_bucket = |id: String| {
        let mut c = check("ann", "x", "y");
        c.buckets = vec![
            Bucket {
                name: "guest",
                key: "test:guest:ann".into(),
                capacity: 3,
                per_minute: 6,
            },
            Bucket {
                name: "site",
                key: "test:site".into(),
                capacity: 100,
                per_minute: 0,
            },
        ];
        (c, id)
    };
    let mut admitted = 0;
    let mut refusal = None;
    for i in 0..6 {
        let (mut c, id) = with_bucket(format!("m{i}"));
        c.client_message_id = &id;
        let node = if i % 2 == 0 { &one } else { &two };
        match node.admit_send(&c).await.expect("check") {
            Admission::Allowed => admitted += 1,
            other => refusal = Some(other),
        }
    }
    assert_eq!(admitted, 3, "the burst, counted across both nodes");
    match refusal {
        Some(Admission::Limited {
            bucket,
            retry_after,
        }) => {
            assert_eq!(bucket, "guest");
            // 6 a minute: a token every 10 s.
            assert!(
                retry_after > Duration::from_secs(5) && retry_after <= Duration::from_secs(10),
                "{retry_after:?}"
            );
        }
        other => panic!("expected a limit, got {other:?}"),
    }
}

async fn a_join_is_refused_to_a_banned_address_and_counted_in_its_bucket(redis: bool) {
    let (one, two) = guards(redis);
    let join = |guest: Option<&'static str>| JoinCheck {
        site_id: 1,
        guest_id: guest,
        ip_hash: "joiner",
        buckets: vec![Bucket {
            name: "join",
            key: "test:join:joiner".into(),
            capacity: 2,
            per_minute: 1,
        }],
    };
    assert_eq!(
        one.admit_join(&join(None)).await.expect("join"),
        Admission::Allowed
    );
    assert_eq!(
        two.admit_join(&join(Some("g"))).await.expect("join"),
        Admission::Allowed
    );
    assert!(matches!(
        one.admit_join(&join(None)).await.expect("join"),
        Admission::Limited { bucket: "join", .. }
    ));
    two.ban(
        1,
        None,
        Some("joiner"),
        Utc::now() + chrono::Duration::seconds(30),
    )
    .await
    .expect("ban");
    assert_eq!(
        one.admit_join(&join(None)).await.expect("join"),
        Admission::Banned
    );
}
