//! Presence: joins, leaves and timeouts, seen by the others' polls.

use chatty_protocol::api::PollResponse;
use chatty_protocol::{Event, LeaveReason, RoomCursor};
use reqwest::StatusCode;

use crate::helpers::{spawn_app, spawn_app_with};

async fn poll_events(
    app: &crate::helpers::TestApp,
    guest: &chatty_protocol::api::JoinResponse,
    cursor: RoomCursor,
) -> PollResponse {
    let response = app.poll(guest, &cursor.to_string(), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("poll")
}

#[tokio::test]
async fn others_see_a_join_event() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    let poll = poll_events(&app, &ann, ann.cursor).await;
    let joined: Vec<_> = poll
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Join { member, .. } => Some(member.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].guest_id, bob.guest.id);
    assert_eq!(joined[0].nickname, "Bob");
}

#[tokio::test]
async fn a_guest_silent_for_three_poll_intervals_leaves_and_others_see_it() {
    // 100 ms polls: Bob times out after 300 ms of silence.
    let app = spawn_app_with(|s| s.chat.poll_interval_ms = 100).await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    let mut cursor = poll_events(&app, &ann, ann.cursor).await.cursor;

    // Ann keeps polling; Bob says nothing. Bounded: at most 40 polls.
    let mut left = None;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let poll = poll_events(&app, &ann, cursor).await;
        cursor = poll.cursor;
        left = poll.events.iter().find_map(|e| match e {
            Event::Leave { member, reason, .. } => Some((member.clone(), *reason)),
            _ => None,
        });
        if left.is_some() {
            break;
        }
    }
    let (member, reason) = left.expect("Bob's leave event");
    assert_eq!(member.guest_id, bob.guest.id);
    assert_eq!(reason, LeaveReason::Timeout);
    // Ann, who kept polling, is still here.
    let carol = app.join("Carol").await;
    let names: Vec<_> = carol.members.iter().map(|m| m.nickname.as_str()).collect();
    assert_eq!(names, vec!["Ann", "Carol"]);
}

#[tokio::test]
async fn polling_keeps_a_guest_present() {
    let app = spawn_app_with(|s| s.chat.poll_interval_ms = 100).await;
    let ann = app.join("Ann").await;
    let mut cursor = ann.cursor;
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let poll = poll_events(&app, &ann, cursor).await;
        assert!(
            !poll.events.iter().any(|e| matches!(e, Event::Leave { .. })),
            "a polling guest must not leave: {:?}",
            poll.events
        );
        cursor = poll.cursor;
    }
}

#[tokio::test]
async fn an_explicit_leave_is_seen_at_once() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let bob = app.join("Bob").await;
    let cursor = poll_events(&app, &ann, ann.cursor).await.cursor;
    let response = app
        .client
        .post(app.url(&format!("/api/v1/rooms/{}/leave", bob.room.id)))
        .bearer_auth(&bob.token)
        .send()
        .await
        .expect("leave");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let poll = poll_events(&app, &ann, cursor).await;
    assert!(
        poll.events.iter().any(|e| matches!(e, Event::Leave { member, reason: LeaveReason::Left, .. } if member.guest_id == bob.guest.id)),
        "{:?}",
        poll.events
    );
}

#[tokio::test]
async fn a_client_with_an_unknown_presence_epoch_gets_the_full_member_list() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    app.join("Bob").await;
    let stale = RoomCursor {
        epoch: ann.cursor.epoch.wrapping_add(1),
        ..ann.cursor
    };
    let poll = poll_events(&app, &ann, stale).await;
    let members = poll
        .events
        .iter()
        .find_map(|e| match e {
            Event::Members { members, .. } => Some(members.clone()),
            _ => None,
        })
        .expect("a members snapshot");
    let names: Vec<_> = members.iter().map(|m| m.nickname.as_str()).collect();
    assert_eq!(names, vec!["Ann", "Bob"]);
}

#[tokio::test]
async fn a_room_larger_than_the_member_list_cap_lists_a_sample_and_the_exact_count() {
    let app = spawn_app_with(|s| s.chat.member_list_max = 2).await;
    app.join("Ann").await;
    app.join("Bob").await;
    let cleo = app.join("Cleo").await;
    assert_eq!(cleo.member_count, 3);
    assert_eq!(cleo.members.len(), 2, "a sample of the cap's size");
    // A client whose presence position is unknown gets the same shape.
    let stale = RoomCursor {
        epoch: cleo.cursor.epoch.wrapping_add(1),
        ..cleo.cursor
    };
    let poll = poll_events(&app, &cleo, stale).await;
    let (members, count) = poll
        .events
        .iter()
        .find_map(|e| match e {
            Event::Members { members, count, .. } => Some((members.len(), *count)),
            _ => None,
        })
        .expect("a members event");
    assert_eq!((members, count), (2, 3));
}
