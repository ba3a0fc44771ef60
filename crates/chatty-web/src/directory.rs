//! [`Directory`]: site and room lookups for joins, cached briefly in memory
//! so a crowd arriving at one page does not query the database per visitor.
//!
//! A site changed through the admin API or `chatty site` is announced on
//! the bus (`SiteChanged`) and every node drops its copy at once; entries
//! also live at most [`CACHE_TTL`], the bound when an announcement is lost.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatty_protocol::ErrorCode;
use chatty_protocol::validate::{PagePath, SiteKey};
use chatty_storage::{Room, Site, Store};

use crate::error::ApiError;

/// How long a site/room lookup is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Bound on cached entries per map; a full map is cleared.
const CACHE_MAX_ENTRIES: usize = 100_000;

/// A small time-bounded cache.
#[derive(Debug)]
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        let (value, at) = entries.get(key)?;
        (at.elapsed() < CACHE_TTL).then(|| value.clone())
    }

    fn remove_where(&self, doomed: impl Fn(&V) -> bool) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (value, _)| !doomed(value));
        }
    }

    fn put(&self, key: K, value: V) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, (value, Instant::now()));
        }
    }
}

/// Cached site and room resolution.
#[derive(Debug)]
pub struct Directory {
    store: Arc<dyn Store>,
    // Shared, not copied: every browser poll looks its site up (to check the
    // origin), and a site carries its origins and word list.
    sites: TtlCache<String, Arc<Site>>,
    sites_by_id: TtlCache<i64, Arc<Site>>,
    rooms: TtlCache<(i64, Option<String>), Room>,
    rooms_by_id: TtlCache<i64, Room>,
}

impl Directory {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            sites: TtlCache::new(),
            sites_by_id: TtlCache::new(),
            rooms_by_id: TtlCache::new(),
            rooms: TtlCache::new(),
        }
    }

    /// The enabled site with this key; unknown and disabled sites are client errors.
    pub async fn site(&self, key: &SiteKey) -> Result<Arc<Site>, ApiError> {
        let site = match self.sites.get(&key.as_str().to_owned()) {
            Some(site) => site,
            None => {
                let site =
                    Arc::new(self.store.site_by_key(key.as_str()).await?.ok_or_else(|| {
                        ApiError::client(ErrorCode::UnknownSite, "No site has this key.")
                    })?);
                self.sites.put(key.as_str().to_owned(), Arc::clone(&site));
                site
            }
        };
        enabled(site)
    }

    /// The enabled site with this id (a guest token's site), cached like
    /// [`Directory::site`].
    pub async fn site_by_id(&self, id: i64) -> Result<Arc<Site>, ApiError> {
        let site = match self.sites_by_id.get(&id) {
            Some(site) => site,
            None => {
                let site = Arc::new(self.store.site_by_id(id).await?.ok_or_else(|| {
                    ApiError::client(ErrorCode::UnknownSite, "No site has this id.")
                })?);
                self.sites_by_id.put(id, Arc::clone(&site));
                site
            }
        };
        enabled(site)
    }

    /// Forgets every cached site (site changes may have been missed).
    pub fn invalidate_all(&self) {
        self.sites.remove_where(|_| true);
        self.sites_by_id.remove_where(|_| true);
    }

    /// Forgets the cached copies of a site (it changed).
    pub fn invalidate_site(&self, site_id: i64) {
        self.sites.remove_where(|site| site.id == site_id);
        self.sites_by_id.remove_where(|site| site.id == site_id);
    }

    /// A room by id (its site never changes; `last_seq` in it is stale).
    pub async fn room_by_id(&self, id: i64) -> Result<Room, ApiError> {
        if let Some(room) = self.rooms_by_id.get(&id) {
            return Ok(room);
        }
        let room = self
            .store
            .room(id)
            .await?
            .ok_or_else(|| ApiError::client(ErrorCode::UnknownRoom, "No such room."))?;
        self.rooms_by_id.put(id, room.clone());
        Ok(room)
    }

    /// The site's room for the page (`None`: the site-wide room), created on first use.
    pub async fn room(&self, site: &Site, page: Option<&PagePath>) -> Result<Room, ApiError> {
        let key = (site.id, page.map(|p| p.as_str().to_owned()));
        if let Some(room) = self.rooms.get(&key) {
            return Ok(room);
        }
        let room = self.store.room_for(site.id, page).await?;
        self.rooms.put(key, room.clone());
        Ok(room)
    }
}

/// The site, unless it is disabled (403 `site_disabled`).
fn enabled(site: Arc<Site>) -> Result<Arc<Site>, ApiError> {
    if site.disabled {
        return Err(ApiError::client(
            ErrorCode::SiteDisabled,
            "Chat is disabled on this site.",
        ));
    }
    Ok(site)
}
