//! The storage conformance suite, run on every backend.
//!
//! Each test is generated twice by `backend_tests!`: once on a fresh SQLite
//! file and once on a fresh MariaDB database (server from
//! `CHATTY_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`).
//! Run locally: `cargo test -p chatty-storage --test store_suite`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chatty_protocol::validate::{ClientMessageId, MessageBody, Nickname, PagePath};
use chatty_storage::testing::{Backend, TestDatabase};
use chatty_storage::{NewMessage, NewSite, Room, SqlStore, SqlStoreOptions, Store, StoreError};

struct Fixture {
    store: Arc<SqlStore>,
    room: Room,
    _db: TestDatabase,
}

async fn fixture(backend: Backend) -> Fixture {
    let db = TestDatabase::new(backend).await;
    let store = SqlStore::connect(&db.options())
        .await
        .expect("connect and migrate");
    let site = store
        .ensure_site(NewSite {
            key: "site-a".into(),
            name: "Site A".into(),
            allowed_origins: vec!["https://a.example".into()],
        })
        .await
        .expect("site");
    let room = store.room_for(site.id, None).await.expect("room");
    Fixture {
        store: Arc::new(store),
        room,
        _db: db,
    }
}

fn new_message(room_id: i64, client_id: &str, body: &str) -> NewMessage {
    NewMessage {
        room_id,
        guest_id: "guest-1".into(),
        nickname: Nickname::parse("Ann").expect("nickname"),
        body: MessageBody::parse(body, 2000).expect("body"),
        client_message_id: ClientMessageId::parse(client_id).expect("client id"),
        created_at: chrono::Utc::now(),
        ip_hash: "0123456789abcdef0123456789abcdef".into(),
    }
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
    messages_get_contiguous_sequence_numbers_from_one,
    a_retry_with_the_same_client_id_returns_the_original,
    concurrent_sends_get_contiguous_unique_numbers,
    concurrent_retries_store_exactly_one_message,
    client_ids_are_case_sensitive,
    rooms_are_per_site_and_per_page_and_created_once,
    sites_are_created_once_and_found_by_key,
    unicode_survives_a_round_trip,
    posting_to_a_missing_room_is_not_found,
    sequence_numbers_are_per_room,
    upserting_a_site_updates_it_in_place,
    a_send_is_three_statements_in_its_transaction,
);

async fn messages_get_contiguous_sequence_numbers_from_one(backend: Backend) {
    let f = fixture(backend).await;
    for i in 1..=5u64 {
        let out = f
            .store
            .post_message(new_message(f.room.id, &format!("c{i}"), &format!("m{i}")))
            .await
            .expect("post");
        assert!(out.created);
        assert_eq!(out.message.seq, i);
        assert_eq!(out.message.body, format!("m{i}"));
    }
    let recent = f.store.recent_messages(f.room.id, 3).await.expect("recent");
    assert_eq!(
        recent.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    let after = f
        .store
        .messages_after(f.room.id, 2, 2)
        .await
        .expect("after");
    assert_eq!(after.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4]);
    let room = f
        .store
        .room(f.room.id)
        .await
        .expect("room")
        .expect("exists");
    assert_eq!(room.last_seq, 5);
}

async fn a_retry_with_the_same_client_id_returns_the_original(backend: Backend) {
    let f = fixture(backend).await;
    let first = f
        .store
        .post_message(new_message(f.room.id, "same", "hello"))
        .await
        .expect("post");
    // The retry carries a different body: the original wins, nothing new is stored.
    let retry = f
        .store
        .post_message(new_message(f.room.id, "same", "hello again"))
        .await
        .expect("retry");
    assert!(first.created);
    assert!(!retry.created);
    assert_eq!(retry.message, first.message);
    let next = f
        .store
        .post_message(new_message(f.room.id, "other", "next"))
        .await
        .expect("post");
    assert_eq!(
        next.message.seq, 2,
        "a retry must not consume a sequence number"
    );
    assert_eq!(
        f.store
            .messages_after(f.room.id, 0, 100)
            .await
            .expect("all")
            .len(),
        2
    );
}

async fn concurrent_sends_get_contiguous_unique_numbers(backend: Backend) {
    let f = fixture(backend).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = Arc::clone(&f.store);
        let room = f.room.id;
        tasks.push(tokio::spawn(async move {
            store
                .post_message(new_message(room, &format!("c{i}"), "x"))
                .await
                .expect("post")
                .message
                .seq
        }));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        assert!(
            seqs.insert(t.await.expect("task")),
            "duplicate sequence number"
        );
    }
    assert_eq!(seqs, (1..=40).collect::<BTreeSet<u64>>());
}

async fn concurrent_retries_store_exactly_one_message(backend: Backend) {
    let f = fixture(backend).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = Arc::clone(&f.store);
        let room = f.room.id;
        tasks.push(tokio::spawn(async move {
            store
                .post_message(new_message(room, "dup", "once"))
                .await
                .expect("post")
        }));
    }
    let mut created = 0;
    let mut seqs = BTreeSet::new();
    for t in tasks {
        let out = t.await.expect("task");
        created += usize::from(out.created);
        seqs.insert(out.message.seq);
    }
    assert_eq!(created, 1);
    assert_eq!(seqs, BTreeSet::from([1]));
    assert_eq!(
        f.store
            .messages_after(f.room.id, 0, 100)
            .await
            .expect("all")
            .len(),
        1
    );
}

async fn client_ids_are_case_sensitive(backend: Backend) {
    let f = fixture(backend).await;
    let a = f
        .store
        .post_message(new_message(f.room.id, "abc", "lower"))
        .await
        .expect("post");
    let b = f
        .store
        .post_message(new_message(f.room.id, "ABC", "upper"))
        .await
        .expect("post");
    assert!(a.created && b.created);
    assert_ne!(a.message.seq, b.message.seq);
}

async fn rooms_are_per_site_and_per_page_and_created_once(backend: Backend) {
    let f = fixture(backend).await;
    let site_b = f
        .store
        .ensure_site(NewSite {
            key: "site-b".into(),
            name: "B".into(),
            allowed_origins: vec![],
        })
        .await
        .expect("site");
    let page = PagePath::parse("/blog/1").expect("page");
    let page_room = f
        .store
        .room_for(f.room.site_id, Some(&page))
        .await
        .expect("page room");
    let page_room_again = f
        .store
        .room_for(f.room.site_id, Some(&page))
        .await
        .expect("page room");
    let site_room_again = f
        .store
        .room_for(f.room.site_id, None)
        .await
        .expect("site room");
    let other_site_room = f.store.room_for(site_b.id, None).await.expect("other room");
    assert_eq!(page_room, page_room_again);
    assert_eq!(page_room.page.as_deref(), Some("/blog/1"));
    assert_eq!(site_room_again.id, f.room.id);
    assert_eq!(f.room.page, None);
    assert_ne!(page_room.id, f.room.id);
    assert_ne!(other_site_room.id, f.room.id);
}

async fn sites_are_created_once_and_found_by_key(backend: Backend) {
    let f = fixture(backend).await;
    let again = f
        .store
        .ensure_site(NewSite {
            key: "site-a".into(),
            name: "other name".into(),
            allowed_origins: vec![],
        })
        .await
        .expect("site");
    assert_eq!(again.name, "Site A");
    assert_eq!(again.allowed_origins, vec!["https://a.example".to_owned()]);
    assert!(again.allows_origin("https://a.example"));
    assert!(!again.allows_origin("https://evil-a.example"));
    assert_eq!(f.store.site_by_key("nope").await.expect("lookup"), None);
}

async fn upserting_a_site_updates_it_in_place(backend: Backend) {
    let f = fixture(backend).await;
    let before = f
        .store
        .site_by_key("site-a")
        .await
        .expect("lookup")
        .expect("exists");
    let updated = f
        .store
        .upsert_site(
            NewSite {
                key: "site-a".into(),
                name: "Renamed".into(),
                allowed_origins: vec!["https://b.example".into()],
            },
            true,
        )
        .await
        .expect("upsert");
    let read = f
        .store
        .site_by_key("site-a")
        .await
        .expect("lookup")
        .expect("exists");
    assert_eq!(read, updated);
    assert_eq!(read.id, before.id);
    assert_eq!(read.name, "Renamed");
    assert_eq!(read.allowed_origins, vec!["https://b.example".to_owned()]);
    assert!(read.disabled);
    let fresh = f
        .store
        .upsert_site(
            NewSite {
                key: "site-new".into(),
                name: "New".into(),
                allowed_origins: vec![],
            },
            false,
        )
        .await
        .expect("insert");
    assert!(!fresh.disabled);
    assert_ne!(fresh.id, before.id);
}

async fn unicode_survives_a_round_trip(backend: Backend) {
    let f = fixture(backend).await;
    let body = "héllo 👋🏽 مرحبا 你好 \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\nsecond line";
    let out = f
        .store
        .post_message(new_message(f.room.id, "u1", body))
        .await
        .expect("post");
    let read = f
        .store
        .messages_after(f.room.id, 0, 10)
        .await
        .expect("read");
    assert_eq!(read[0].body, body);
    assert_eq!(read[0], out.message);
}

async fn posting_to_a_missing_room_is_not_found(backend: Backend) {
    let f = fixture(backend).await;
    let err = f
        .store
        .post_message(new_message(f.room.id + 1000, "x", "y"))
        .await
        .expect_err("no room");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

async fn sequence_numbers_are_per_room(backend: Backend) {
    let f = fixture(backend).await;
    let page = PagePath::parse("/p").expect("page");
    let other = f
        .store
        .room_for(f.room.site_id, Some(&page))
        .await
        .expect("room");
    f.store
        .post_message(new_message(f.room.id, "a", "x"))
        .await
        .expect("post");
    let first_other = f
        .store
        .post_message(new_message(other.id, "a", "x"))
        .await
        .expect("post");
    assert!(
        first_other.created,
        "the same client id in another room is another message"
    );
    assert_eq!(first_other.message.seq, 1);
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_not_a_hang() {
    // Nothing listens on port 9 of loopback: the connection is refused.
    let options = SqlStoreOptions {
        url: "mysql://root@127.0.0.1:9/none".into(),
        max_connections: 1,
        min_connections: 0,
        connect_timeout: Duration::from_millis(500),
        query_timeout: Duration::from_millis(500),
    };
    let err = SqlStore::connect(&options).await.expect_err("must fail");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_on_a_fresh_mysql_database_all_start() {
    let db = TestDatabase::new(Backend::MySql).await;
    let options = db.options();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let options = options.clone();
            tokio::spawn(async move { SqlStore::connect(&options).await })
        })
        .collect();
    for start in starts {
        let store = start.await.expect("task").expect("every node starts");
        assert_eq!(
            store.site_by_key("none").await.expect("schema is there"),
            None
        );
    }
}

/// The send is the durable hot path: its statement count is part of its
/// cost (each is a round trip to MySQL). `BEGIN`/`COMMIT` are not counted
/// by the statement counter; the `UPDATE` that numbers the message, the
/// `SELECT` of the number and the `INSERT` are.
async fn a_send_is_three_statements_in_its_transaction(backend: Backend) {
    let f = fixture(backend).await;
    let stats = f.store.stats();
    let before = stats.queries();
    let first = f
        .store
        .post_message(new_message(f.room.id, "count-1", "one"))
        .await
        .expect("post");
    assert!(first.created);
    assert_eq!(stats.queries() - before, 3, "UPDATE, SELECT, INSERT");
    // A retry pays for the failed INSERT and one lookup of the original,
    // and takes no number.
    let before = stats.queries();
    let retry = f
        .store
        .post_message(new_message(f.room.id, "count-1", "one"))
        .await
        .expect("retry");
    assert!(!retry.created);
    assert_eq!(retry.message, first.message);
    assert_eq!(
        stats.queries() - before,
        4,
        "UPDATE, SELECT, failed INSERT, lookup"
    );
    let next = f
        .store
        .post_message(new_message(f.room.id, "count-2", "two"))
        .await
        .expect("post");
    assert_eq!(
        next.message.seq, 2,
        "the retry's rolled-back number is reused"
    );
}
