//! The web tier end to end: `chatty` processes behind nginx running the
//! shipped configuration (`nginx/`), on loopback, with MariaDB and Redis.
//! Visitors poll and push through nginx; nodes are killed, added and
//! starved of Redis under traffic. Needs nginx (`/usr/sbin/nginx`, installed
//! by `scripts/test.sh`), MariaDB (`CHATTY_TEST_MYSQL_URL`) and Redis
//! (`CHATTY_TEST_REDIS_URL`). Run: `cargo test -p chatty-web --test edge`.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../common/proxy.rs"]
#[allow(dead_code)]
mod proxy;
#[path = "../common/push.rs"]
#[allow(dead_code)]
mod push_client;

mod cache;
mod failover;
mod flow;
mod harness;
mod traffic;
