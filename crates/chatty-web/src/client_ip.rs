//! Who is asking: the client's address behind trusted proxies, and the
//! salted hash that is all Chatty ever keeps of it.
//!
//! ## Which address
//!
//! A node normally sits behind nginx (and a load balancer), so the TCP peer
//! is a proxy. `X-Forwarded-For` lists the hops, each proxy appending the
//! address it saw; only the part written by proxies we trust can be
//! believed, because a client can send any header it likes. So: when the
//! peer is a trusted proxy, walk the header from the right and take the
//! first address that is *not* a trusted proxy; when the peer is not
//! trusted, the peer is the client. (Taking the left-most entry — a common
//! mistake — would let anyone choose the address they are limited by.)
//!
//! ## Why a hash
//!
//! Bans and per-address limits need to recognise an address, not to know
//! it. The address is hashed with HMAC-SHA256 under a deployment-wide salt
//! (`privacy.ip_hash_salt`, or one created once and kept in the database)
//! and only the first 16 bytes, in hex, are ever stored, logged or shown to
//! moderators. IPv6 addresses are hashed by their /64 prefix: one household
//! or phone holds a whole /64 and rotates through it, so a ban or a limit on
//! a single v6 address would be trivially escaped.

use std::net::IpAddr;

use actix_web::HttpRequest;
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::Sha256;

/// An address or CIDR range from the configuration; `None` when malformed.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A set of addresses and ranges.
#[derive(Debug, Clone, Default)]
pub struct IpSet(Vec<IpNet>);

impl IpSet {
    /// From configuration entries (already validated; bad ones are skipped).
    pub fn new(entries: &[String]) -> Self {
        Self(entries.iter().filter_map(|e| parse_net(e)).collect())
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = canonical(*ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, what a dual-stack socket
/// reports) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Finds the client's address of a request.
#[derive(Debug, Clone, Default)]
pub struct ClientAddress {
    trusted: IpSet,
}

impl ClientAddress {
    pub fn new(trusted_proxies: &[String]) -> Self {
        Self {
            trusted: IpSet::new(trusted_proxies),
        }
    }

    /// The client's address (see the module documentation).
    pub fn of(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = canonical(req.peer_addr()?.ip());
        if !self.trusted.contains(&peer) {
            return Some(peer);
        }
        let mut client = peer;
        for header in req.headers().get_all("x-forwarded-for").rev() {
            let Ok(text) = header.to_str() else {
                return Some(client);
            };
            for hop in text.rsplit(',') {
                let Some(ip) = parse_hop(hop) else {
                    // Garbage in the chain: nothing left of it can be believed.
                    return Some(client);
                };
                client = ip;
                if !self.trusted.contains(&ip) {
                    return Some(ip);
                }
            }
        }
        Some(client)
    }
}

/// One `X-Forwarded-For` entry: an address, possibly `[v6]:port` or `v4:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    None
}

/// The address a per-address connection cap counts: IPv6 by its /64, like
/// the hashes, so rotating through one's own /64 does not escape it.
pub fn connection_key(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.map(|ip| match canonical(ip) {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    })
}

/// Salted hashes of addresses.
#[derive(Clone)]
pub struct IpHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for IpHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IpHasher(***)")
    }
}

impl IpHasher {
    pub fn new(salt: &str) -> Self {
        Self {
            // HMAC takes keys of any length.
            mac: Hmac::<Sha256>::new_from_slice(salt.as_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        }
    }

    /// 32 hex digits; `unknown` when there is no address (not a TCP peer).
    pub fn hash(&self, ip: Option<IpAddr>) -> String {
        let Some(ip) = ip else {
            return "unknown".into();
        };
        let mut mac = self.mac.clone();
        match canonical(ip) {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()[..8]),
        }
        mac.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Is this a well-formed IP hash (as moderators paste them)?
pub fn is_ip_hash(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn client(trusted: &[&str], peer: &str, forwarded: Option<&str>) -> Option<String> {
        let finder =
            ClientAddress::new(&trusted.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let mut req = TestRequest::default().peer_addr(peer.parse().expect("peer"));
        if let Some(value) = forwarded {
            req = req.insert_header(("x-forwarded-for", value));
        }
        finder.of(&req.to_http_request()).map(|ip| ip.to_string())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(
            client(&["127.0.0.1"], "203.0.113.9:5000", Some("198.51.100.1")).as_deref(),
            Some("203.0.113.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        // A client that forges a first hop cannot choose its address.
        assert_eq!(
            client(
                &["127.0.0.1", "10.0.0.0/8"],
                "127.0.0.1:5000",
                Some("1.2.3.4, 198.51.100.7, 10.0.0.2")
            )
            .as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(
            client(&["127.0.0.1"], "127.0.0.1:5000", None).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            client(
                &["127.0.0.1"],
                "127.0.0.1:5000",
                Some("not an address, 198.51.100.7")
            )
            .as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(
            client(
                &["127.0.0.1"],
                "127.0.0.1:5000",
                Some("198.51.100.7, garbage")
            )
            .as_deref(),
            Some("127.0.0.1"),
            "garbage right of the client: nothing beyond the peer is believed"
        );
    }

    #[test]
    fn hashes_are_salted_stable_and_cover_an_ipv6_64() {
        let a = IpHasher::new("salt one");
        let b = IpHasher::new("salt two");
        let ip: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(a.hash(Some(ip)), a.hash(Some(ip)));
        assert_ne!(a.hash(Some(ip)), b.hash(Some(ip)));
        assert!(is_ip_hash(&a.hash(Some(ip))));
        assert!(!a.hash(Some(ip)).contains("198"));
        let v6a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let v6c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(a.hash(Some(v6a)), a.hash(Some(v6b)));
        assert_ne!(a.hash(Some(v6a)), a.hash(Some(v6c)));
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().expect("ip");
        assert_eq!(a.hash(Some(mapped)), a.hash(Some(ip)));
    }
}
