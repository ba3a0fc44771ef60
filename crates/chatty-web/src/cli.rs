//! The `chatty` command line: `chatty` (or `chatty serve`) runs a node;
//! `chatty site …` administers sites against the configured database, with
//! the same configuration a node reads (file and `CHATTY__…` variables).
//!
//! A change made here is announced to running nodes on the bus when Redis
//! is configured; in the embedded mode (or if the announcement is lost) a
//! running node sees it within the directory's 30-second cache.

use std::time::Duration;

use chatty_storage::{
    AdminStore, NewAuditEntry, RedisClient, RedisOptions, Site, SiteUpdate, SqlStore,
    SqlStoreOptions, Store, TokenRole,
};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::admin::{hash_secret, new_secret, normalize_origins, snippet};
use crate::error::ApiError;
use crate::settings::Settings;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "chatty", version, about = "Group chat for every web site.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the default).
    Serve,
    /// Create, list and change sites.
    #[command(subcommand)]
    Site(SiteCommand),
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Create a site: prints its key, an admin token (shown once) and the embed snippet.
    Create {
        /// The site's name, for you.
        #[arg(long)]
        name: String,
        /// An origin allowed to embed the widget (scheme://host[:port]); repeat for more.
        #[arg(long = "origin", required = true)]
        origins: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List every site.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Replace a site's origins and/or rename it.
    Update {
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[arg(long = "origin")]
        origins: Vec<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Disable a site: its widget stops working at once on every node.
    Disable {
        #[arg(allow_hyphen_values = true)]
        key: String,
    },
    /// Enable a disabled site.
    Enable {
        #[arg(allow_hyphen_values = true)]
        key: String,
    },
    /// Create another admin or moderator token for a site (shown once).
    Token {
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// moderator or admin
        #[arg(long, default_value = "moderator")]
        role: String,
        /// Who holds it (shown in the audit log).
        #[arg(long)]
        label: String,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Store(#[from] chatty_storage::StoreError),
}

impl From<ApiError> for CliError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Store(e) => CliError::Store(e),
            ApiError::Client { message, .. } | ApiError::Wait { message, .. } => {
                CliError::Invalid(message)
            }
            ApiError::Internal(message) => CliError::Invalid(message),
        }
    }
}

const ACTOR: &str = "command line";

fn public_url(settings: &Settings) -> String {
    if settings.admin.public_url.is_empty() {
        format!("http://{}:{}", settings.server.host, settings.server.port)
    } else {
        settings.admin.public_url.clone()
    }
}

fn site_json(site: &Site) -> serde_json::Value {
    json!({
        "key": site.key,
        "name": site.name,
        "origins": site.allowed_origins,
        "disabled": site.disabled,
        "slow_mode_secs": site.slow_mode_secs,
    })
}

/// Runs a `site` command; returns what to print.
pub async fn run_site(settings: &Settings, command: SiteCommand) -> Result<String, CliError> {
    let store = SqlStore::connect(&SqlStoreOptions {
        url: settings.database.url.clone(),
        max_connections: 2,
        min_connections: 0,
        connect_timeout: settings.database.connect_timeout(),
        query_timeout: settings.database.query_timeout(),
    })
    .await?;
    let site_by_key = async |key: &str| -> Result<Site, CliError> {
        store
            .site_by_key(key)
            .await?
            .ok_or_else(|| CliError::Invalid(format!("no site has the key {key:?}")))
    };
    let audit = async |site: &Site, action: &str, details: serde_json::Value| {
        store
            .record_action(NewAuditEntry {
                site_id: site.id,
                actor: ACTOR.into(),
                action: action.into(),
                room_id: None,
                target: site.key.clone(),
                details,
            })
            .await
    };
    match command {
        SiteCommand::Create {
            name,
            origins,
            json,
        } => {
            let created = crate::admin::create_site(&store, &name, &origins).await?;
            let site = &created.site;
            audit(
                site,
                "create_site",
                json!({"name": site.name, "origins": site.allowed_origins}),
            )
            .await?;
            let base = public_url(settings);
            let snippet = snippet(&base, &site.key);
            if json {
                return Ok(json!({
                    "site": site_json(site),
                    "admin_token": created.admin_token,
                    "snippet": snippet,
                })
                .to_string());
            }
            Ok(format!(
                "Created the site {name:?}.\n\n  site key:    {key}\n  origins:     {origins}\n  admin token: {token}\n\nThe admin token is shown only now (Chatty keeps only its hash): store it in your password manager.\nUse it on the moderation page ({base}/admin) or the admin API (docs/moderation.md).\n\nPaste this into your pages:\n\n  {snippet}\n",
                name = site.name,
                key = site.key,
                origins = site.allowed_origins.join(" "),
                token = created.admin_token,
            ))
        }
        SiteCommand::List { json } => {
            let sites = store.list_sites().await?;
            if json {
                let list: Vec<_> = sites.iter().map(site_json).collect();
                return Ok(serde_json::Value::Array(list).to_string());
            }
            let mut out = String::from("KEY                     STATE     NAME / ORIGINS\n");
            for site in &sites {
                out.push_str(&format!(
                    "{:<23} {:<9} {} — {}\n",
                    site.key,
                    if site.disabled { "disabled" } else { "enabled" },
                    site.name,
                    site.allowed_origins.join(" ")
                ));
            }
            Ok(out)
        }
        SiteCommand::Update { key, origins, name } => {
            let site = site_by_key(&key).await?;
            if origins.is_empty() && name.is_none() {
                return Err(CliError::Invalid(
                    "give --origin (repeatable) and/or --name".into(),
                ));
            }
            let update = SiteUpdate {
                name: name
                    .as_deref()
                    .map(crate::admin::validate_site_name)
                    .transpose()?,
                allowed_origins: (!origins.is_empty())
                    .then(|| normalize_origins(&origins))
                    .transpose()?,
                ..SiteUpdate::default()
            };
            let details = json!({"name": update.name, "origins": update.allowed_origins});
            let access = update.allowed_origins.is_some();
            let updated = store.update_site(site.id, update).await?;
            audit(&site, "update_site", details).await?;
            announce(settings, site.id, access).await;
            Ok(format!(
                "Updated {}: {} — {}\n",
                updated.key,
                updated.name,
                updated.allowed_origins.join(" ")
            ))
        }
        SiteCommand::Disable { key } => set_disabled(settings, &store, &key, true).await,
        SiteCommand::Enable { key } => set_disabled(settings, &store, &key, false).await,
        SiteCommand::Token { key, role, label } => {
            let site = site_by_key(&key).await?;
            let role = TokenRole::parse(&role)
                .ok_or_else(|| CliError::Invalid("--role is moderator or admin".into()))?;
            let label = label.trim();
            if label.is_empty()
                || label.chars().count() > 100
                || label.chars().any(char::is_control)
            {
                return Err(CliError::Invalid(
                    "--label: 1 to 100 characters, no control characters".into(),
                ));
            }
            let secret = new_secret(role);
            let token = store
                .create_token(site.id, role, label, &hash_secret(&secret))
                .await?;
            audit(
                &site,
                "create_token",
                json!({"role": role, "label": label, "id": token.id}),
            )
            .await?;
            Ok(format!(
                "A {} token for {} ({label}), shown only now:\n\n  {secret}\n",
                role.as_str(),
                site.key
            ))
        }
    }
}

async fn set_disabled(
    settings: &Settings,
    store: &SqlStore,
    key: &str,
    disabled: bool,
) -> Result<String, CliError> {
    let site = store
        .site_by_key(key)
        .await?
        .ok_or_else(|| CliError::Invalid(format!("no site has the key {key:?}")))?;
    store
        .update_site(
            site.id,
            SiteUpdate {
                disabled: Some(disabled),
                ..SiteUpdate::default()
            },
        )
        .await?;
    store
        .record_action(NewAuditEntry {
            site_id: site.id,
            actor: ACTOR.into(),
            action: "update_site".into(),
            room_id: None,
            target: site.key.clone(),
            details: json!({ "disabled": disabled }),
        })
        .await?;
    announce(settings, site.id, true).await;
    Ok(format!(
        "{} is now {}.\n",
        site.key,
        if disabled { "disabled" } else { "enabled" }
    ))
}

/// Tells running nodes (shared mode) that a site changed.
async fn announce(settings: &Settings, site_id: i64, access: bool) {
    if !settings.redis.shared_mode() {
        return;
    }
    let client = RedisClient::new(RedisOptions {
        url: settings.redis.url.clone(),
        key_prefix: settings.redis.key_prefix.clone(),
        pool_size: 1,
        timeout: settings.redis.timeout().max(Duration::from_secs(2)),
        history_messages: settings.redis.history_messages,
        key_ttl: Duration::from_secs(settings.redis.key_ttl_secs),
    });
    let result = match client {
        Ok(client) => chatty_storage::redis::announce_site_changed(&client, site_id, access).await,
        Err(e) => Err(e),
    };
    if let Err(error) = result {
        eprintln!(
            "note: running nodes could not be told at once ({error}); they see the change within 30 s"
        );
    }
}
