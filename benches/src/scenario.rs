//! Load scenarios: who visits, how they listen, where, and who talks.
//!
//! A scenario is a TOML file in `benches/scenarios/` (run by name) or
//! anywhere (run by path). Every field but `name`, `visitors` and
//! `duration_secs` has a default; unknown fields are refused, so a typo
//! does not silently run another test than the one intended.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// How visitors receive events: the widget's four transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// The case study's poll every `poll_interval_ms`, with `If-None-Match`.
    Poll,
    /// `?wait=25`, renewed at once.
    LongPoll,
    /// Server-Sent Events.
    Sse,
    /// WebSocket, authenticated in the first message.
    Websocket,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::Poll,
        Transport::LongPoll,
        Transport::Sse,
        Transport::Websocket,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Poll => "poll",
            Transport::LongPoll => "long_poll",
            Transport::Sse => "sse",
            Transport::Websocket => "websocket",
        }
    }
}

/// Shares of visitors per transport (normalised; they need not sum to 1).
/// Without a `[transports]` table everyone polls; in a table, a transport
/// not named has no visitors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportMix {
    #[serde(default)]
    pub poll: f64,
    #[serde(default)]
    pub long_poll: f64,
    #[serde(default)]
    pub sse: f64,
    #[serde(default)]
    pub websocket: f64,
}

impl Default for TransportMix {
    fn default() -> Self {
        Self {
            poll: 1.0,
            long_poll: 0.0,
            sse: 0.0,
            websocket: 0.0,
        }
    }
}

/// Where visitors are: one hot room (the site's home page, the case
/// study's spike) and a long tail of page rooms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomMix {
    /// Share of visitors in the hot room (`page = "/"`).
    pub hot_share: f64,
    /// How many other rooms (`/tail/0` …) share the rest, evenly.
    pub long_tail_rooms: usize,
}

impl Default for RoomMix {
    fn default() -> Self {
        Self {
            hot_share: 1.0,
            long_tail_rooms: 0,
        }
    }
}

/// Who talks, and how much.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderMix {
    /// Share of visitors that send messages.
    pub share: f64,
    /// Messages per minute per sender (sent at random times, on average).
    pub messages_per_minute: f64,
    /// At most this many senders, whatever the share: a room of 50,000
    /// does not have 100 people typing at once, and a capacity search
    /// should raise the polls, not the room's message rate. None: no cap.
    pub max_senders: Option<usize>,
}

impl Default for SenderMix {
    fn default() -> Self {
        Self {
            share: 0.01,
            messages_per_minute: 2.0,
            max_senders: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_site_key")]
    pub site_key: String,
    /// Visitors at the end of the ramp-up.
    pub visitors: usize,
    /// From the first join to the last send.
    pub duration_secs: u64,
    /// Visitors arrive evenly over this time (a gradual ramp).
    #[serde(default)]
    pub ramp_up_secs: u64,
    /// After the last send, how long receivers keep listening for it.
    #[serde(default = "default_drain_secs")]
    pub drain_secs: u64,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    #[serde(default)]
    pub transports: TransportMix,
    #[serde(default)]
    pub rooms: RoomMix,
    #[serde(default)]
    pub senders: SenderMix,
    /// Loopback source addresses to spread connections over
    /// (127.0.0.1 … 127.0.0.N), so tens of thousands of sockets do not
    /// exhaust one address's ports.
    #[serde(default = "default_source_addresses")]
    pub source_addresses: u8,
    /// Each visitor first downloads `/widget.js`, as a browser would.
    #[serde(default = "default_true")]
    pub download_widget: bool,
    /// Short requests (widget, join, send, poll) in flight at once over
    /// all visitors; more wait for a slot, and that wait counts in their
    /// latency. Visitors share pooled keep-alive connections, as requests
    /// reach a node through nginx's upstream pool; without a bound, a
    /// hiccup of the client lets thousands of due polls open thousands of
    /// new connections at once, and that connect storm (not the node) then
    /// sets the latency. Long-polls and streams hold their own connection.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_site_key() -> String {
    "demo".into()
}
fn default_drain_secs() -> u64 {
    10
}
fn default_poll_interval_ms() -> u64 {
    2000
}
fn default_source_addresses() -> u8 {
    1
}
fn default_max_connections() -> usize {
    512
}

fn default_true() -> bool {
    true
}

/// Which property of a visitor a spread value decides.
#[derive(Clone, Copy)]
enum Trait {
    Transport = 0,
    Room = 1,
    Sender = 2,
}

/// A Kronecker sequence in three dimensions (the powers of 1/φ₃, φ₃ the
/// "plastic" generalisation of the golden ratio, 1.2207…): spreads
/// visitors over transports, rooms and roles evenly and deterministically
/// (no RNG, so two runs of a scenario have the same population), and
/// independently. One multiplier with three offsets would not be: the
/// three values would be shifts of each other, and with `hot_share = 0.5`
/// every sender landed in the long tail, none in the hot room.
const SPREAD: [f64; 3] = [
    0.819_172_513_396_164,
    0.671_043_606_703_789,
    0.549_700_477_901_970,
];

fn spread(i: usize, which: Trait) -> f64 {
    ((i as f64 + 0.5) * SPREAD[which as usize]).fract()
}

impl Scenario {
    /// Reads `name` from `benches/scenarios/NAME.toml`, or a path.
    pub fn load(name_or_path: &str) -> Result<Self> {
        let path = Path::new(name_or_path);
        let path: PathBuf = if path.extension().is_some_and(|e| e == "toml") || path.exists() {
            path.to_owned()
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("scenarios")
                .join(format!("{name_or_path}.toml"))
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn validate(&self) -> Result<()> {
        let t = &self.transports;
        let shares = [t.poll, t.long_poll, t.sse, t.websocket];
        if shares.iter().any(|s| !s.is_finite() || *s < 0.0) || shares.iter().sum::<f64>() <= 0.0 {
            bail!("transports: shares must be >= 0 and not all 0");
        }
        if self.visitors == 0 || self.duration_secs == 0 {
            bail!("visitors and duration_secs must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.rooms.hot_share)
            || !(0.0..=1.0).contains(&self.senders.share)
        {
            bail!("rooms.hot_share and senders.share are between 0 and 1");
        }
        if self.rooms.hot_share < 1.0 && self.rooms.long_tail_rooms == 0 {
            bail!("rooms.hot_share < 1 needs rooms.long_tail_rooms > 0");
        }
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if self.source_addresses == 0 {
            bail!("source_addresses must be at least 1");
        }
        if self.ramp_up_secs >= self.duration_secs {
            bail!("ramp_up_secs must be shorter than duration_secs");
        }
        Ok(())
    }

    /// Visitor `i`'s transport: exact shares, interleaved.
    pub fn transport_of(&self, i: usize) -> Transport {
        let t = &self.transports;
        let shares = [t.poll, t.long_poll, t.sse, t.websocket];
        let total: f64 = shares.iter().sum();
        let x = spread(i, Trait::Transport) * total;
        let mut cumulative = 0.0;
        for (share, transport) in shares.iter().zip(Transport::ALL) {
            cumulative += share;
            if x < cumulative {
                return transport;
            }
        }
        Transport::Poll
    }

    /// Visitor `i`'s page (room): `/` for the hot room, `/tail/K` else.
    pub fn page_of(&self, i: usize) -> String {
        if spread(i, Trait::Room) < self.rooms.hot_share || self.rooms.long_tail_rooms == 0 {
            "/".into()
        } else {
            format!("/tail/{}", i % self.rooms.long_tail_rooms)
        }
    }

    pub fn is_sender(&self, i: usize) -> bool {
        let share = match self.senders.max_senders {
            Some(max) => self
                .senders
                .share
                .min(max as f64 / self.visitors.max(1) as f64),
            None => self.senders.share,
        };
        spread(i, Trait::Sender) < share
    }

    /// Share of visitors on a transport that holds its own connection.
    pub fn streaming_share(&self) -> f64 {
        let t = &self.transports;
        (t.sse + t.websocket) / (t.poll + t.long_poll + t.sse + t.websocket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_honoured_for_a_population() {
        let scenario = Scenario::parse(
            "name = 't'\nvisitors = 1000\nduration_secs = 10\n\
             [transports]\npoll = 0.5\nwebsocket = 0.5\n\
             [rooms]\nhot_share = 0.3\nlong_tail_rooms = 10\n\
             [senders]\nshare = 0.1\n",
        )
        .expect("valid");
        let ws = (0..1000)
            .filter(|&i| scenario.transport_of(i) == Transport::Websocket)
            .count();
        let hot = (0..1000).filter(|&i| scenario.page_of(i) == "/").count();
        let senders = (0..1000).filter(|&i| scenario.is_sender(i)).count();
        assert!((480..=520).contains(&ws), "{ws}");
        assert!((280..=320).contains(&hot), "{hot}");
        assert!((90..=110).contains(&senders), "{senders}");
    }

    #[test]
    fn max_senders_caps_the_share() {
        let scenario = Scenario::parse(
            "name = 't'\nvisitors = 50000\nduration_secs = 10\n\
             [senders]\nshare = 0.002\nmax_senders = 20\n",
        )
        .expect("valid");
        let senders = (0..50_000).filter(|&i| scenario.is_sender(i)).count();
        assert!((19..=21).contains(&senders), "{senders}");
    }

    #[test]
    fn transports_rooms_and_senders_are_independent() {
        let scenario = Scenario::parse(
            "name = 't'\nvisitors = 10000\nduration_secs = 10\n\
             [transports]\nwebsocket = 1.0\n\
             [rooms]\nhot_share = 0.5\nlong_tail_rooms = 10\n\
             [senders]\nshare = 0.1\n",
        )
        .expect("valid");
        // A named transport only: nobody polls.
        assert!((0..10_000).all(|i| scenario.transport_of(i) == Transport::Websocket));
        // Senders are spread over the hot room and the tail like everyone.
        let senders: Vec<usize> = (0..10_000).filter(|&i| scenario.is_sender(i)).collect();
        let hot = senders
            .iter()
            .filter(|&&i| scenario.page_of(i) == "/")
            .count();
        assert!(
            (400..=600).contains(&hot),
            "{hot} of {} senders in the hot room",
            senders.len()
        );
        let mixed = Scenario::parse(
            "name = 't'\nvisitors = 10000\nduration_secs = 10\n\
             [transports]\npoll = 0.5\nwebsocket = 0.5\n[senders]\nshare = 0.1\n",
        )
        .expect("valid");
        let polling_senders = (0..10_000)
            .filter(|&i| mixed.is_sender(i) && mixed.transport_of(i) == Transport::Poll)
            .count();
        assert!((400..=600).contains(&polling_senders), "{polling_senders}");
    }

    #[test]
    fn unknown_fields_and_bad_shares_are_refused() {
        assert!(Scenario::parse("name='t'\nvisitors=1\nduration_secs=1\nvisitor=2\n").is_err());
        assert!(
            Scenario::parse("name='t'\nvisitors=1\nduration_secs=5\n[transports]\npoll=0\n")
                .is_err()
        );
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).expect("scenarios dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(path.to_str().expect("utf-8 path"))
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                count += 1;
            }
        }
        assert!(count >= 4, "case-study, push, mixed, soak");
    }
}
