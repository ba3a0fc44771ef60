//! Guest tokens: who a visitor is, proven without a server-side session.
//!
//! A token is `v1.<payload>.<mac>`: the payload is base64url JSON naming the
//! site, room, guest id, nickname and expiry; the mac is HMAC-SHA256 of
//! `v1.<payload>` under `auth.token_secret`. Any node holding the secret
//! verifies any token, so nodes stay stateless and need no sticky sessions.
//!
//! Tokens are deliberately low-value (the host page can read them): they
//! carry no privilege beyond chatting as that guest in that room, and expire
//! after `auth.token_ttl_secs`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const VERSION_PREFIX: &str = "v1.";
/// Longest token accepted: a bound on work done for garbage input.
const MAX_TOKEN_LEN: usize = 1024;

/// The claims a token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestClaims {
    /// Site id.
    #[serde(rename = "s")]
    pub site_id: i64,
    /// Room id.
    #[serde(rename = "r")]
    pub room_id: i64,
    /// Guest id.
    #[serde(rename = "g")]
    pub guest_id: String,
    /// Nickname at join.
    #[serde(rename = "n")]
    pub nickname: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(rename = "e")]
    pub expires_at: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed or its signature does not match")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

/// Signs and verifies guest tokens.
#[derive(Clone)]
pub struct TokenKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

impl TokenKey {
    /// A key from the configured secret; an empty secret means a random key.
    pub fn new(secret: &str) -> Self {
        let mac = if secret.is_empty() {
            let mut random = [0u8; 32];
            rand::rng().fill_bytes(&mut random);
            HmacSha256::new_from_slice(&random)
        } else {
            HmacSha256::new_from_slice(secret.as_bytes())
        };
        // HMAC accepts keys of any length, so this cannot fail.
        Self {
            mac: mac.unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        }
    }

    /// Signs claims into a token string.
    pub fn sign(&self, claims: &GuestClaims) -> String {
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let mut token = String::with_capacity(VERSION_PREFIX.len() + json.len() * 4 / 3 + 48);
        token.push_str(VERSION_PREFIX);
        URL_SAFE_NO_PAD.encode_string(json, &mut token);
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut token);
        token
    }

    /// Verifies a token's signature and expiry (`now` in Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<GuestClaims, TokenError> {
        let claims = self.verify_signature(token)?;
        if claims.expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Verifies only the signature: an expired token still proves which
    /// guest it was issued to (join uses this to keep the guest id).
    pub fn verify_signature(&self, token: &str) -> Result<GuestClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN || !token.starts_with(VERSION_PREFIX) {
            return Err(TokenError::Invalid);
        }
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::Invalid)?;
        let payload = URL_SAFE_NO_PAD
            .decode(&signed[VERSION_PREFIX.len()..])
            .map_err(|_| TokenError::Invalid)?;
        serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_at: i64) -> GuestClaims {
        GuestClaims {
            site_id: 1,
            room_id: 2,
            guest_id: "g".into(),
            nickname: "Ann".into(),
            expires_at,
        }
    }

    #[test]
    fn a_signed_token_verifies_with_the_same_key_only() {
        let key = TokenKey::new("0123456789abcdef0123456789abcdef");
        let token = key.sign(&claims(100));
        assert_eq!(key.verify(&token, 50), Ok(claims(100)));
        let other = TokenKey::new("another secret of at least 32 chars!!");
        assert_eq!(other.verify(&token, 50), Err(TokenError::Invalid));
        assert_eq!(key.verify(&token, 100), Err(TokenError::Expired));
        assert_eq!(
            key.verify_signature(&token),
            Ok(claims(100)),
            "expired but genuine"
        );
    }

    #[test]
    fn tampered_tokens_are_invalid() {
        let key = TokenKey::new("0123456789abcdef0123456789abcdef");
        let token = key.sign(&claims(100));
        let (payload, mac) = token.rsplit_once('.').expect("two parts");
        let forged = key.sign(&GuestClaims {
            room_id: 3,
            ..claims(100)
        });
        let forged_payload = forged.rsplit_once('.').expect("two parts").0;
        for bad in [
            String::new(),
            "v1.".into(),
            "v2.abc.def".into(),
            format!("{forged_payload}.{mac}"),
            format!("{payload}.{}", &mac[1..]),
            format!("{payload}x.{mac}"),
            "v1.".to_owned() + &"a".repeat(2000),
        ] {
            assert_eq!(key.verify(&bad, 50), Err(TokenError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn random_keys_differ() {
        let a = TokenKey::new("");
        let b = TokenKey::new("");
        assert!(b.verify(&a.sign(&claims(100)), 50).is_err());
    }
}

/// Most verified tokens remembered; the memory is cleared when full.
const VERIFIED_CACHE_MAX: usize = 65_536;

/// The node's guest tokens: signing, and verification with a cache of
/// tokens already verified.
///
/// A widget presents the same token on every poll, every 2 seconds. Its
/// signature does not change, so it is checked once (base64, HMAC, JSON)
/// and later polls cost one hash-map lookup plus the expiry check. Only
/// tokens whose signature was verified enter the cache, so it cannot be
/// filled with forgeries; it is bounded and simply cleared when full.
#[derive(Debug)]
pub struct GuestTokens {
    key: TokenKey,
    verified: std::sync::Mutex<std::collections::HashMap<Box<str>, std::sync::Arc<GuestClaims>>>,
}

impl GuestTokens {
    pub fn new(secret: &str) -> Self {
        Self {
            key: TokenKey::new(secret),
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn sign(&self, claims: &GuestClaims) -> String {
        self.key.sign(claims)
    }

    /// Verifies signature and expiry (`now` in Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<std::sync::Arc<GuestClaims>, TokenError> {
        let cached = self
            .verified
            .lock()
            .ok()
            .and_then(|cache| cache.get(token).cloned());
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let claims = std::sync::Arc::new(self.key.verify_signature(token)?);
                if let Ok(mut cache) = self.verified.lock() {
                    if cache.len() >= VERIFIED_CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(token.into(), std::sync::Arc::clone(&claims));
                }
                claims
            }
        };
        if claims.expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Verifies the signature only (see [`TokenKey::verify_signature`]).
    pub fn verify_signature(&self, token: &str) -> Result<GuestClaims, TokenError> {
        self.key.verify_signature(token)
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn cached_tokens_still_expire_and_forgeries_are_never_cached() {
        let tokens = GuestTokens::new("0123456789abcdef0123456789abcdef");
        let claims = GuestClaims {
            site_id: 1,
            room_id: 2,
            guest_id: "g".into(),
            nickname: "Ann".into(),
            expires_at: 100,
        };
        let token = tokens.sign(&claims);
        assert_eq!(
            tokens.verify(&token, 50).map(|c| c.guest_id.clone()),
            Ok("g".into())
        );
        // Second time from the cache: same answer, and expiry still applies.
        assert!(tokens.verify(&token, 60).is_ok());
        assert_eq!(tokens.verify(&token, 100), Err(TokenError::Expired));
        let forged = format!("{token}x");
        assert_eq!(tokens.verify(&forged, 50), Err(TokenError::Invalid));
        assert_eq!(tokens.verify(&forged, 50), Err(TokenError::Invalid));
        assert_eq!(tokens.verified.lock().map(|c| c.len()).unwrap_or(0), 1);
    }
}
