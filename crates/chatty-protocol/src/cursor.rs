//! The room cursor: where a client is in a room's event stream.
//!
//! A room has two streams with different lifetimes:
//!
//! * **messages** are durable and numbered by a per-room sequence number
//!   (`seq`) that is contiguous (1, 2, 3, …) and never reused;
//! * **presence** (join/leave) is ephemeral: numbered by a presence version
//!   that is only meaningful together with the presence *epoch*, a random
//!   number chosen whenever presence state is created afresh (a node's
//!   restart, for example). A client whose epoch differs from the room's gets
//!   a full member snapshot instead of a diff, so nothing is skipped silently.
//!
//! The three numbers together are the room's *version*. Written as
//! `seq.epoch.presence` (epoch in hex) it is both the `cursor` of the poll API
//! and, in quotes, the `ETag` of a poll response, which is what makes an
//! unchanged poll answerable with `304 Not Modified` from memory.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position in a room: last message seq seen, presence epoch and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RoomCursor {
    /// Highest message sequence number the holder has (0 = none yet).
    pub seq: u64,
    /// Presence epoch the presence version belongs to.
    pub epoch: u32,
    /// Presence version the holder has seen.
    pub presence: u64,
}

/// A cursor string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorError;

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cursor must look like SEQ.EPOCH.PRESENCE, as returned by join or poll")
    }
}

impl std::error::Error for CursorError {}

impl RoomCursor {
    /// The `ETag` header value for this cursor: the cursor in double quotes.
    pub fn etag(&self) -> String {
        format!("\"{self}\"")
    }

    /// Does an `If-None-Match` header value name this cursor? Accepts a list
    /// of tags and weak tags, as RFC 9110 allows. `*` is deliberately not
    /// honoured: a poller sending it would never see news.
    pub fn matches_if_none_match(&self, header: &str) -> bool {
        header.split(',').any(|tag| {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag.strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse::<RoomCursor>().ok())
                .is_some_and(|c| c == *self)
        })
    }
}

impl fmt::Display for RoomCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:x}.{}", self.seq, self.epoch, self.presence)
    }
}

impl FromStr for RoomCursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 64 {
            return Err(CursorError);
        }
        let mut parts = s.split('.');
        let (Some(seq), Some(epoch), Some(presence), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CursorError);
        };
        let digits = |p: &str, hex: bool| {
            !p.is_empty()
                && p.bytes().all(|b| {
                    if hex {
                        b.is_ascii_hexdigit()
                    } else {
                        b.is_ascii_digit()
                    }
                })
        };
        if !digits(seq, false) || !digits(epoch, true) || !digits(presence, false) {
            return Err(CursorError);
        }
        Ok(RoomCursor {
            seq: seq.parse().map_err(|_| CursorError)?,
            epoch: u32::from_str_radix(epoch, 16).map_err(|_| CursorError)?,
            presence: presence.parse().map_err(|_| CursorError)?,
        })
    }
}

impl Serialize for RoomCursor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RoomCursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_string_form() {
        let c = RoomCursor {
            seq: 42,
            epoch: 0xdead_beef,
            presence: 7,
        };
        assert_eq!(c.to_string(), "42.deadbeef.7");
        assert_eq!("42.deadbeef.7".parse::<RoomCursor>(), Ok(c));
        assert_eq!(c.etag(), "\"42.deadbeef.7\"");
    }

    #[test]
    fn rejects_malformed_cursors() {
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "a.1.1",
            "1.g.1",
            "-1.1.1",
            "1..1",
            "99999999999999999999999.1.1",
        ] {
            assert!(bad.parse::<RoomCursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn if_none_match_accepts_lists_and_weak_tags_but_not_star() {
        let c = RoomCursor {
            seq: 3,
            epoch: 1,
            presence: 2,
        };
        assert!(c.matches_if_none_match("\"3.1.2\""));
        assert!(c.matches_if_none_match("W/\"3.1.2\""));
        assert!(c.matches_if_none_match("\"1.1.1\", \"3.1.2\""));
        assert!(!c.matches_if_none_match("*"));
        assert!(!c.matches_if_none_match("\"3.1.1\""));
        assert!(!c.matches_if_none_match("3.1.2"));
    }
}
