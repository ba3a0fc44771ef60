//! Site administration shared by the admin API and the `chatty site`
//! command: site keys, admin and moderator tokens, origins, the embed
//! snippet, and who a bearer token is.
//!
//! ## Tokens
//!
//! A site token is 32 random bytes, base64url, behind a prefix that says
//! its role (`chatty_adm_…`, `chatty_mod_…`) so a leaked one is recognisable
//! in a log or a repository scan. Only its SHA-256 is stored: a database
//! dump does not hand out the keys to every site. A plain hash (not a slow
//! password hash) is right here because the secret has 256 bits of entropy:
//! there is nothing to brute-force.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chatty_protocol::ErrorCode;
use chatty_storage::{AdminStore, NewSite, Site, TokenRole};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Longest site name.
pub const SITE_NAME_MAX_CHARS: usize = 200;
/// Most origins per site.
pub const ORIGINS_MAX: usize = 50;

fn random_text(bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut random);
    URL_SAFE_NO_PAD.encode(random)
}

/// A new secret for a token of `role`.
pub fn new_secret(role: TokenRole) -> String {
    let prefix = match role {
        TokenRole::Admin => "chatty_adm_",
        TokenRole::Moderator => "chatty_mod_",
    };
    format!("{prefix}{}", random_text(32))
}

/// What is stored of a secret: its SHA-256, in hex.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new public site key: 22 random letters and digits (about 131 bits).
/// Only letters and digits: a key that began with `-` would read as an
/// option on the command line (`chatty site token -x…`).
pub fn new_site_key() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(22)
        .map(char::from)
        .collect()
}

/// An origin as browsers send it: `scheme://host[:port]`, lower case, the
/// default port left out; or `*` (any origin). `None` when it is not one.
pub fn normalize_origin(text: &str) -> Option<String> {
    let text = text.trim();
    if text == "*" {
        return Some("*".into());
    }
    let text = text.strip_suffix('/').unwrap_or(text).to_ascii_lowercase();
    let (scheme, rest) = text.split_once("://")?;
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (inside, after) = v6.split_once(']')?;
        if inside.parse::<std::net::Ipv6Addr>().is_err() {
            return None;
        }
        (format!("[{inside}]"), after.strip_prefix(':'))
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (rest.to_owned(), None),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (host.starts_with('[')
            || host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }));
    if !host_ok {
        return None;
    }
    match port {
        None => Some(format!("{scheme}://{host}")),
        Some(port) if port == default_port => Some(format!("{scheme}://{host}")),
        Some(port) => {
            let number: u16 = port.parse().ok().filter(|p| *p > 0)?;
            if port.starts_with('0') {
                return None;
            }
            Some(format!("{scheme}://{host}:{number}"))
        }
    }
}

/// Normalises a list of origins (at least one, at most [`ORIGINS_MAX`]).
pub fn normalize_origins(list: &[String]) -> Result<Vec<String>, ApiError> {
    if list.is_empty() || list.len() > ORIGINS_MAX {
        return Err(ApiError::client(
            ErrorCode::InvalidRequest,
            format!("origins: give 1 to {ORIGINS_MAX} origins such as https://example.com"),
        ));
    }
    let mut origins: Vec<String> = Vec::with_capacity(list.len());
    for entry in list {
        let origin = normalize_origin(entry).ok_or_else(|| {
            ApiError::client(
                ErrorCode::InvalidRequest,
                format!(
                    "origins: {:?} is not an origin; write scheme://host[:port], e.g. https://example.com, with no path",
                    entry.chars().take(100).collect::<String>()
                ),
            )
        })?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

/// A site name: trimmed, 1–200 characters, no control characters.
pub fn validate_site_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > SITE_NAME_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::client(
            ErrorCode::InvalidRequest,
            format!("name: 1 to {SITE_NAME_MAX_CHARS} characters, no control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// The `<script>` tag a site owner pastes.
pub fn snippet(public_url: &str, site_key: &str) -> String {
    let base = public_url.trim_end_matches('/');
    format!(r#"<script src="{base}/widget.js" data-site="{site_key}" async></script>"#)
}

/// A created site and its admin token's secret (shown once).
#[derive(Debug)]
pub struct CreatedSite {
    pub site: Site,
    pub admin_token: String,
}

/// Creates a site with a fresh key and its first admin token.
pub async fn create_site(
    admin: &dyn AdminStore,
    name: &str,
    origins: &[String],
) -> Result<CreatedSite, ApiError> {
    let name = validate_site_name(name)?;
    let origins = normalize_origins(origins)?;
    let admin_token = new_secret(TokenRole::Admin);
    let site = admin
        .create_site(
            NewSite {
                key: new_site_key(),
                name,
                allowed_origins: origins,
            },
            &hash_secret(&admin_token),
        )
        .await?;
    Ok(CreatedSite { site, admin_token })
}

/// Who is calling the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// `admin.operator_token`: every site.
    Operator,
    /// A token of one site.
    Site {
        site_id: i64,
        role: TokenRole,
        token_id: i64,
        label: String,
    },
}

impl Principal {
    /// The name written in the audit log.
    pub fn actor(&self) -> String {
        match self {
            Principal::Operator => "operator".into(),
            Principal::Site {
                role,
                label,
                token_id,
                ..
            } => format!("{label} ({}, token {token_id})", role.as_str()),
        }
    }

    /// May this principal act on `site_id` with at least `role`?
    pub fn may(&self, site_id: i64, needed: TokenRole) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Site {
                site_id: own, role, ..
            } => *own == site_id && *role >= needed,
        }
    }
}

/// Constant-time equality, for the operator token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who holds `secret` (401 `invalid_token` when nobody).
pub async fn principal(
    admin: &dyn AdminStore,
    operator_token: &str,
    secret: &str,
) -> Result<Principal, ApiError> {
    let secret = secret.trim();
    if !operator_token.is_empty() && same(secret.as_bytes(), operator_token.as_bytes()) {
        return Ok(Principal::Operator);
    }
    let invalid = || {
        ApiError::client(
            ErrorCode::InvalidToken,
            "This admin token is not valid (unknown or revoked).",
        )
    };
    if secret.len() > 200
        || !(secret.starts_with("chatty_adm_") || secret.starts_with("chatty_mod_"))
    {
        return Err(invalid());
    }
    let token = admin
        .token_by_hash(&hash_secret(secret))
        .await?
        .ok_or_else(invalid)?;
    Ok(Principal::Site {
        site_id: token.site_id,
        role: token.role,
        token_id: token.id,
        label: token.label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(
            normalize_origin("HTTPS://Example.COM/").as_deref(),
            Some("https://example.com")
        );
        assert_eq!(
            normalize_origin("https://example.com:443").as_deref(),
            Some("https://example.com")
        );
        assert_eq!(
            normalize_origin("http://localhost:8080").as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(
            normalize_origin("http://[::1]:3000").as_deref(),
            Some("http://[::1]:3000")
        );
        assert_eq!(normalize_origin("*").as_deref(), Some("*"));
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://exa mple.com",
            "https://",
            "https://example.com:0",
            "https://example.com:99999",
            "javascript://alert(1)",
            "https://-bad.com",
            "https://evil.com@example.com",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn site_keys_are_letters_and_digits_and_valid_keys() {
        for _ in 0..2000 {
            let key = new_site_key();
            assert_eq!(key.len(), 22);
            assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
            assert!(chatty_protocol::validate::SiteKey::parse(&key).is_ok());
        }
        assert_ne!(new_site_key(), new_site_key());
    }

    #[test]
    fn secrets_name_their_role_and_only_their_hash_is_kept() {
        let secret = new_secret(TokenRole::Moderator);
        assert!(secret.starts_with("chatty_mod_"));
        assert_eq!(secret.len(), "chatty_mod_".len() + 43);
        assert_ne!(secret, new_secret(TokenRole::Moderator));
        let hash = hash_secret(&secret);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&secret[11..]));
        assert_eq!(hash, hash_secret(&secret));
    }

    #[test]
    fn roles_nest_and_stay_within_their_site() {
        let moderator = Principal::Site {
            site_id: 1,
            role: TokenRole::Moderator,
            token_id: 2,
            label: "Ann".into(),
        };
        assert!(moderator.may(1, TokenRole::Moderator));
        assert!(!moderator.may(1, TokenRole::Admin));
        assert!(!moderator.may(2, TokenRole::Moderator));
        assert!(Principal::Operator.may(7, TokenRole::Admin));
    }
}
