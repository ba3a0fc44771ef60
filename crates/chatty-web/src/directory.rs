//! [`Directory`]: site and room lookups for joins, cached briefly in memory
//! so a crowd arriving at one page does not query the database per visitor.
//!
//! Entries live for [`CACHE_TTL`]: a site disabled or re-configured takes
//! effect within that time on every node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatty_protocol::ErrorCode;
use chatty_protocol::validate::{PagePath, SiteKey};
use chatty_storage::{Room, Site, Store};

use crate::error::ApiError;

/// How long a site/room lookup is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Bound on cached entries (each is small); the cache is cleared when full.
const CACHE_MAX_ENTRIES: usize = 100_000;

type CacheKey = (String, Option<String>);

/// Cached site and room resolution.
#[derive(Debug)]
pub struct Directory {
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<CacheKey, (Site, Room, Instant)>>,
}

impl Directory {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The site for a key and its room for the page (created on first use).
    /// Unknown and disabled sites are client errors.
    pub async fn resolve(
        &self,
        key: &SiteKey,
        page: Option<&PagePath>,
    ) -> Result<(Site, Room), ApiError> {
        let cache_key = (key.as_str().to_owned(), page.map(|p| p.as_str().to_owned()));
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock()
            && let Some((site, room, at)) = cache.get(&cache_key)
            && now.duration_since(*at) < CACHE_TTL
        {
            return Ok((site.clone(), room.clone()));
        }
        let site = self
            .store
            .site_by_key(key.as_str())
            .await?
            .ok_or_else(|| ApiError::client(ErrorCode::UnknownSite, "No site has this key."))?;
        if site.disabled {
            return Err(ApiError::client(
                ErrorCode::SiteDisabled,
                "Chat is disabled on this site.",
            ));
        }
        let room = self.store.room_for(site.id, page).await?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(cache_key, (site.clone(), room.clone(), now));
        }
        Ok((site, room))
    }
}
