//! Micro-benchmarks of the hot paths, with criterion:
//! `cargo bench -p chatty-bench --bench hot_paths`.
//!
//! * event encoding: one message event to JSON (done once per message per
//!   node, then shared by every client);
//! * validation: a message body and a nickname (every send and join);
//! * the ETag check: parsing a poll's cursor and comparing it with the
//!   room's (every poll);
//! * fan-out: one live frame queued for 10,000 WebSocket subscribers of a
//!   room, and its WebSocket encoding, made once and shared.

use std::hint::black_box;
use std::sync::Arc;

use chatty_protocol::validate::{MessageBody, Nickname};
use chatty_protocol::{Event, MessageView, RoomCursor};
use chatty_web::fanout::{FanoutStats, LiveFrame, Subscribers};
use chatty_web::token::GuestClaims;
use criterion::{Criterion, criterion_group, criterion_main};

fn message() -> MessageView {
    MessageView {
        seq: 4242,
        room_id: 7,
        guest_id: "5947140dd8864c32b7ba01e0004fbfcf".into(),
        nickname: "Ann".into(),
        body: "Hello, is anyone here? I have a question about the pricing page.".into(),
        created_at: "2026-11-26T07:55:11.624Z".into(),
        client_message_id: "5b0e8f8a-3c1d-4a52-9a57-0f6f0d2f4b11".into(),
    }
}

fn encoding(c: &mut Criterion) {
    let event = Event::Message { message: message() };
    c.bench_function("encode a message event", |b| {
        b.iter(|| serde_json::to_string(black_box(&event)))
    });
}

fn validation(c: &mut Criterion) {
    let body = "Hello, is anyone here? I have a question about the pricing page. \u{1F600}";
    c.bench_function("validate a message body", |b| {
        b.iter(|| MessageBody::parse(black_box(body), 2000))
    });
    c.bench_function("validate a nickname", |b| {
        b.iter(|| Nickname::parse(black_box("Ann-Sophie")))
    });
}

fn etag(c: &mut Criterion) {
    let room: RoomCursor = "4242.835feb9e.17".parse().expect("cursor");
    let header = format!("\"{room}\"");
    c.bench_function("parse a poll cursor and check If-None-Match", |b| {
        b.iter(|| {
            let cursor: RoomCursor = black_box("4242.835feb9e.17").parse().expect("cursor");
            cursor == room && room.matches_if_none_match(black_box(&header))
        })
    });
}

fn fanout(c: &mut Criterion) {
    const SUBSCRIBERS: usize = 10_000;
    let event = serde_json::to_string(&Event::Message { message: message() }).expect("json");
    let cursor: RoomCursor = "4242.835feb9e.17".parse().expect("cursor");
    let stats = FanoutStats::default();
    let mut subscribers = Subscribers::default();
    let mut queues = Vec::with_capacity(SUBSCRIBERS);
    for id in 0..SUBSCRIBERS {
        // Room for every iteration criterion may run in a sample.
        let (tx, rx) = tokio::sync::mpsc::channel(1 << 20);
        let guest = Arc::new(GuestClaims {
            site_id: 1,
            room_id: 7,
            guest_id: format!("{id:032x}"),
            nickname: format!("v{id}"),
            expires_at: i64::MAX,
        });
        subscribers.insert(id as u64, tx, guest);
        queues.push(rx);
    }
    let mut group = c.benchmark_group("fan-out");
    group.sample_size(20);
    group.bench_function("queue one frame for 10,000 subscribers", |b| {
        b.iter(|| {
            let frame = Arc::new(LiveFrame::new(
                std::iter::once(event.as_str()),
                cursor,
                false,
            ));
            subscribers.broadcast(&frame, 1, &stats);
            // Each connection writes the same bytes: encoded once.
            black_box(frame.websocket());
            for queue in &mut queues {
                let _ = queue.try_recv();
            }
        })
    });
    group.finish();
    assert_eq!(subscribers.len(), SUBSCRIBERS, "nobody was dropped as slow");
}

criterion_group!(hot_paths, encoding, validation, etag, fanout);
criterion_main!(hot_paths);
