//! The checks a visitor's join and send pass on their way in: origin,
//! bans, nickname impersonation, links, the site's word filter, slow mode,
//! repeated messages and the rate-limit buckets.
//!
//! ## Order
//!
//! Cheap, local, deterministic checks first (links, word filter: no I/O),
//! then the one shared round trip ([`Guard`](chatty_storage::Guard): bans,
//! slow mode, repeats and buckets together, atomically). A message refused
//! by a local check therefore costs no Redis call and no token, and a
//! message admitted by the guard is the one that gets stored: nothing
//! between the two can refuse it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::HttpRequest;
use chatty_protocol::ErrorCode;
use chatty_protocol::moderation::{
    CompiledWordFilter, FilterOutcome, WordFilter, count_links, flood_fingerprint,
    is_reserved_nickname,
};
use chatty_protocol::validate::MessageBody;
use chatty_storage::{Admission, Bucket, JoinCheck, SendCheck, Site};

use crate::client_ip::{ClientAddress, IpHasher, IpSet};
use crate::error::ApiError;
use crate::settings::{ChatSettings, LimitSettings};
use crate::state::AppState;

/// A visitor's address and its salted hash.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub ip: Option<IpAddr>,
    pub ip_hash: String,
    /// The per-IP buckets do not count this address (`limits.exempt_ips`).
    pub exempt: bool,
}

/// Finds and hashes visitors' addresses.
#[derive(Debug, Clone)]
pub struct Visitors {
    address: ClientAddress,
    hasher: IpHasher,
    exempt: IpSet,
}

impl Visitors {
    pub fn new(trusted_proxies: &[String], exempt: &[String], salt: &str) -> Self {
        Self {
            address: ClientAddress::new(trusted_proxies),
            hasher: IpHasher::new(salt),
            exempt: IpSet::new(exempt),
        }
    }

    /// The address alone (no hash): for the per-address connection cap,
    /// taken on every long-poll wait and push connection.
    pub fn address(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.address.of(req)
    }

    pub fn of(&self, req: &HttpRequest) -> Visitor {
        let ip = self.address.of(req);
        Visitor {
            ip,
            ip_hash: self.hasher.hash(ip),
            exempt: ip.is_some_and(|ip| self.exempt.contains(&ip)),
        }
    }
}

/// Compiled word filters per site, rebuilt when a site's list changes.
#[derive(Debug, Default)]
pub struct WordFilters {
    compiled: Mutex<HashMap<i64, (WordFilter, Arc<CompiledWordFilter>)>>,
}

impl WordFilters {
    fn for_site(&self, site: &Site) -> Option<Arc<CompiledWordFilter>> {
        if site.word_filter.words.is_empty() {
            return None;
        }
        let mut compiled = self
            .compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((source, filter)) = compiled.get(&site.id)
            && *source == site.word_filter
        {
            return Some(Arc::clone(filter));
        }
        let filter = Arc::new(site.word_filter.compile());
        if compiled.len() > 10_000 {
            compiled.clear();
        }
        compiled.insert(site.id, (site.word_filter.clone(), Arc::clone(&filter)));
        Some(filter)
    }
}

fn bucket(name: &'static str, key: String, capacity: u32, per_minute: u32) -> Bucket {
    Bucket {
        name,
        key,
        capacity,
        per_minute,
    }
}

/// The buckets a send takes a token from.
fn send_buckets(
    chat: &ChatSettings,
    limits: &LimitSettings,
    site: &Site,
    guest_id: &str,
    visitor: &Visitor,
) -> Vec<Bucket> {
    let mut buckets = vec![bucket(
        "guest",
        format!("send:{}:g:{guest_id}", site.id),
        limits.guest_burst,
        chat.sends_per_minute,
    )];
    if !visitor.exempt {
        buckets.push(bucket(
            "ip",
            format!("send:{}:ip:{}", site.id, visitor.ip_hash),
            limits.ip_burst,
            limits.ip_sends_per_minute,
        ));
    }
    buckets.push(bucket(
        "site",
        format!("send:{}", site.id),
        limits.site_burst,
        limits.site_sends_per_minute,
    ));
    buckets
}

/// Turns the guard's answer into the client's.
fn refused(admission: Admission) -> Result<(), ApiError> {
    match admission {
        Admission::Allowed => Ok(()),
        Admission::Banned => Err(ApiError::client(
            ErrorCode::Banned,
            "You are banned from this chat.",
        )),
        Admission::SlowMode { retry_after } => Err(ApiError::wait(
            ErrorCode::SlowMode,
            "Slow mode is on: one message at a time.",
            retry_after,
        )),
        Admission::Repeated => Err(ApiError::client(
            ErrorCode::RepeatedMessage,
            "You just sent this message; say something new.",
        )),
        Admission::Limited {
            bucket,
            retry_after,
        } => Err(ApiError::wait(
            ErrorCode::RateLimited,
            match bucket {
                "guest" => "Too many messages from you.",
                "ip" => "Too many messages from your network.",
                "site" => "Too many messages on this site right now.",
                "join" => "Too many joins from your network.",
                _ => "Too many requests.",
            },
            retry_after,
        )),
    }
}

/// A join: reserved nicknames and look-alikes of members present, bans, and
/// the per-IP join bucket.
pub async fn admit_join(
    state: &AppState,
    site: &Site,
    room_state: &crate::hub::RoomState,
    guest_id: Option<&str>,
    nickname: &str,
    visitor: &Visitor,
) -> Result<(), ApiError> {
    let limits = &state.settings.limits;
    let mut buckets = Vec::new();
    if !visitor.exempt {
        buckets.push(bucket(
            "join",
            format!("join:{}:ip:{}", site.id, visitor.ip_hash),
            limits.join_burst,
            limits.joins_per_minute_per_ip,
        ));
    }
    let admission = state
        .guard
        .admit_join(&JoinCheck {
            site_id: site.id,
            guest_id,
            ip_hash: &visitor.ip_hash,
            buckets,
        })
        .await?;
    refused(admission)?;
    // After the guard: a banned visitor learns it is banned, not that its
    // name is reserved or taken.
    if is_reserved_nickname(nickname) {
        return Err(ApiError::client(
            ErrorCode::NicknameReserved,
            "This nickname is reserved; pick another.",
        ));
    }
    if state
        .hub
        .nickname_taken(room_state, guest_id.unwrap_or(""), nickname)
    {
        return Err(ApiError::client(
            ErrorCode::NicknameTaken,
            "Someone here already uses this nickname or one that looks like it; pick another.",
        ));
    }
    Ok(())
}

/// What a send will store.
#[derive(Debug)]
pub struct AdmittedSend {
    pub body: MessageBody,
}

/// A send: links, the word filter (which may mask the body), then bans,
/// slow mode, repeats and buckets in one shared check.
#[allow(clippy::too_many_arguments)]
pub async fn admit_send(
    state: &AppState,
    site: &Site,
    room_id: i64,
    guest_id: &str,
    client_message_id: &str,
    body: MessageBody,
    visitor: &Visitor,
) -> Result<AdmittedSend, ApiError> {
    let limits = &state.settings.limits;
    let links = count_links(body.as_str());
    if links > limits.max_links_per_message {
        return Err(ApiError::client(
            ErrorCode::TooManyLinks,
            format!(
                "A message may carry at most {} links; this one has {links}.",
                limits.max_links_per_message
            ),
        ));
    }
    let body = match state
        .word_filters
        .for_site(site)
        .map(|f| f.apply(body.as_str()))
    {
        None | Some(FilterOutcome::Clean) => body,
        Some(FilterOutcome::Rejected { .. }) => {
            return Err(ApiError::client(
                ErrorCode::WordFiltered,
                "This site does not allow a word in your message.",
            ));
        }
        Some(FilterOutcome::Masked(masked)) => {
            MessageBody::parse(&masked, usize::MAX).map_err(|_| {
                ApiError::client(
                    ErrorCode::WordFiltered,
                    "This site does not allow a word in your message.",
                )
            })?
        }
    };
    let fingerprint = flood_fingerprint(body.as_str());
    let admission = state
        .guard
        .admit_send(&SendCheck {
            site_id: site.id,
            room_id,
            guest_id,
            ip_hash: &visitor.ip_hash,
            client_message_id,
            fingerprint: &fingerprint,
            slow_mode: Duration::from_secs(u64::from(site.slow_mode_secs)),
            repeat_window: Duration::from_secs(limits.repeat_window_secs),
            buckets: send_buckets(&state.settings.chat, limits, site, guest_id, visitor),
        })
        .await?;
    refused(admission)?;
    Ok(AdmittedSend { body })
}
