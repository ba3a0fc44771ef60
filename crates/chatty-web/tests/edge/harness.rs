//! A local web tier on loopback: real `chatty` processes (the binary under
//! test) behind a real nginx running the shipped configuration from
//! `nginx/`, sharing one fresh MariaDB database and one Redis key prefix.
//!
//! nginx runs the very files an operator installs: they are copied into a
//! temporary prefix with only their paths and the listen port rewritten,
//! and the upstream list is written from the nodes running. Processes are
//! killed when the `Edge` is dropped, so a failing test leaves nothing
//! behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chatty_protocol::api::{JoinResponse, PollResponse, SendResponse};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Deployment, TEST_SECRET};
use crate::push_client::{WsClient, auth_message, ws_url_bare};

/// How long a process may take to answer after it was started.
const START_WAIT: Duration = Duration::from_secs(30);

/// A free TCP port on loopback (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One `chatty` process.
#[derive(Debug)]
pub struct Node {
    pub port: u16,
    child: Child,
}

impl Node {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the node vanishes mid-request, as on a crash.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the node drains and exits.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// The nginx in front, started from a rendered copy of `nginx/`.
#[derive(Debug)]
pub struct Nginx {
    pub port: u16,
    prefix: PathBuf,
    child: Child,
}

impl Nginx {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(nginx_binary());
        command
            .arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(self.prefix.join("nginx.conf"));
        command
    }

    /// Rewrites the upstream list and reloads nginx (`nginx -s reload`): new
    /// workers take new connections, old ones finish what they hold.
    pub fn set_upstreams(&self, ports: &[u16]) {
        write_upstreams(&self.prefix, ports);
        let status = self
            .command()
            .args(["-s", "reload"])
            .status()
            .expect("nginx -s reload runs");
        assert!(status.success(), "nginx -s reload failed");
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/chatty-access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.command().args(["-s", "stop"]).status();
        if !wait_child(&mut self.child, Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_child(child: &mut Child, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn nginx_binary() -> String {
    std::env::var("CHATTY_TEST_NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into())
}

/// The repository's `nginx/` directory.
fn shipped_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../nginx")
}

fn write_upstreams(prefix: &Path, ports: &[u16]) {
    let lines: String = ports
        .iter()
        .map(|p| format!("server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n"))
        .collect();
    std::fs::write(prefix.join("chatty/chatty-upstreams.conf"), lines).expect("write upstreams");
}

/// Node settings a test may change (as `CHATTY__…` variables).
pub type NodeEnv = Vec<(String, String)>;

/// The whole tier: nodes, nginx, one deployment.
#[derive(Debug)]
pub struct Edge {
    pub deployment: Arc<Deployment>,
    pub nodes: Vec<Node>,
    pub nginx: Nginx,
    pub client: reqwest::Client,
    dir: tempfile::TempDir,
    extra_env: NodeEnv,
}

impl Edge {
    /// `n` nodes behind nginx (load-balancer role).
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, Vec::new()).await
    }

    pub async fn start_with(n: usize, extra_env: NodeEnv) -> Self {
        let deployment = Deployment::new(true).await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()
            .expect("http client");
        let mut nodes = Vec::new();
        for _ in 0..n {
            // One at a time: the first runs the migrations.
            let node = spawn_chatty(&deployment, dir.path(), &extra_env, &[]);
            wait_ready(&client, &node.base()).await;
            nodes.push(node);
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let nginx = start_nginx(dir.path(), &ports, &client).await;
        Self {
            deployment,
            nodes,
            nginx,
            client,
            dir,
            extra_env,
        }
    }

    pub fn base(&self) -> String {
        self.nginx.base()
    }

    /// Starts one more node (not yet behind nginx) and waits until ready.
    pub async fn add_node(&mut self) -> usize {
        let node = spawn_chatty(&self.deployment, self.dir.path(), &self.extra_env, &[]);
        wait_ready(&self.client, &node.base()).await;
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Starts a node with settings of its own, not behind nginx.
    pub async fn spawn_extra_node(&self, env: &[(&str, String)]) -> Node {
        spawn_chatty(&self.deployment, self.dir.path(), &self.extra_env, env)
    }

    /// The sum of one counter over every live node's /metrics (read from
    /// the nodes directly: nginx does not expose it).
    pub async fn metric_sum(&self, name: &str, label_filter: &[(&str, &str)]) -> f64 {
        let mut total = 0.0;
        for node in &self.nodes {
            let Ok(response) = self
                .client
                .get(format!("{}/metrics", node.base()))
                .send()
                .await
            else {
                continue; // a killed node
            };
            let text = response.text().await.unwrap_or_default();
            total += sum_metric(&text, name, label_filter);
        }
        total
    }

    pub async fn join(&self, nickname: &str) -> JoinResponse {
        join(&self.client, &self.base(), nickname).await
    }
}

/// Sums the samples of `name` whose labels contain every `label_filter` pair.
pub fn sum_metric(text: &str, name: &str, label_filter: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let matches = label_filter
                .iter()
                .all(|(k, v)| labels.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

fn spawn_chatty(
    deployment: &Deployment,
    dir: &Path,
    extra_env: &NodeEnv,
    env: &[(&str, String)],
) -> Node {
    let port = free_port();
    let workdir = dir.join(format!("node-{port}"));
    std::fs::create_dir_all(&workdir).expect("node workdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatty"));
    command
        .current_dir(&workdir)
        .env_remove("CHATTY_CONFIG")
        .env("CHATTY__SERVER__PORT", port.to_string())
        .env("CHATTY__SERVER__WORKERS", "1")
        .env("CHATTY__SERVER__SHUTDOWN_TIMEOUT_SECS", "5")
        .env("CHATTY__DATABASE__URL", &deployment.db.url)
        .env("CHATTY__DATABASE__MAX_CONNECTIONS", "5")
        .env("CHATTY__REDIS__URL", Deployment::redis_url())
        .env(
            "CHATTY__REDIS__KEY_PREFIX",
            deployment.redis_prefix.clone().unwrap_or_default(),
        )
        .env("CHATTY__REDIS__KEY_TTL_SECS", "600")
        .env("CHATTY__AUTH__TOKEN_SECRET", TEST_SECRET)
        // Every visitor reaches the node from nginx's address.
        .env("CHATTY__PUSH__MAX_CONNECTIONS_PER_IP", "100000")
        // Load from one address, often the same text: see api/helpers.rs.
        .env("CHATTY__LIMITS__EXEMPT_IPS", "127.0.0.0/8,::1")
        .env("CHATTY__LIMITS__SITE_SENDS_PER_MINUTE", "0")
        .env("CHATTY__LIMITS__GUEST_BURST", "30")
        .env("CHATTY__LIMITS__REPEAT_WINDOW_SECS", "0")
        .env("CHATTY__LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().expect("the chatty binary starts");
    Node { port, child }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = client
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            && r.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} did not become ready");
}

/// Renders `nginx/` into `dir/nginx` and starts nginx in the foreground.
async fn start_nginx(dir: &Path, upstreams: &[u16], client: &reqwest::Client) -> Nginx {
    let prefix = dir.join("nginx");
    let conf_dir = prefix.join("chatty");
    for sub in ["chatty", "logs", "cache", "tmp"] {
        std::fs::create_dir_all(prefix.join(sub)).expect("nginx prefix");
    }
    let port = free_port();
    let p = prefix.display().to_string();
    for entry in std::fs::read_dir(shipped_config_dir()).expect("nginx/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read nginx file");
        let text = text
            .replace("/etc/nginx/chatty/", &format!("{p}/chatty/"))
            .replace("/var/cache/nginx/", &format!("{p}/cache/"))
            .replace("/var/log/nginx/", &format!("{p}/logs/"))
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace("listen [::]:80;", "")
            .replace(
                "listen 8080;",
                &format!("listen 127.0.0.1:{};", free_port()),
            )
            .replace("listen [::]:8080;", "");
        std::fs::write(conf_dir.join(path.file_name().expect("name")), text)
            .expect("write nginx file");
    }
    write_upstreams(&prefix, upstreams);
    // Loopback is exempt from the per-address limits (every test client is
    // there); the limits test uses another loopback address, 127.0.0.2.
    std::fs::write(conf_dir.join("chatty-limits-exempt.conf"), "127.0.0.1 0;\n")
        .expect("write exemptions");
    let user = if is_root() { "user root root;\n" } else { "" };
    let main = format!(
        "{user}worker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  include /etc/nginx/mime.types;\n  client_body_temp_path {p}/tmp/body;\n  \
         proxy_temp_path {p}/tmp/proxy;\n  fastcgi_temp_path {p}/tmp/fastcgi;\n  \
         uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n  \
         include {p}/chatty/chatty-http.conf;\n  include {p}/chatty/chatty-lb.conf;\n}}\n"
    );
    std::fs::write(prefix.join("nginx.conf"), main).expect("write nginx.conf");
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx starts (installed by scripts/test.sh)");
    let nginx = Nginx {
        port,
        prefix,
        child,
    };
    wait_ready(client, &nginx.base()).await;
    nginx
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

// ------------------------------------------------------------------ clients

pub async fn join(client: &reqwest::Client, base: &str, nickname: &str) -> JoinResponse {
    let response = client
        .post(format!("{base}/api/v1/join"))
        .json(&json!({"site_key": "demo", "nickname": nickname}))
        .send()
        .await
        .expect("join request");
    assert_eq!(response.status(), StatusCode::OK, "join through {base}");
    response.json().await.expect("join body")
}

/// A WebSocket through `base`, authenticated in its first message.
pub async fn websocket(base: &str, guest: &JoinResponse, cursor: &str) -> WsClient {
    let mut ws = WsClient::connect(&ws_url_bare(base, guest.room.id), None)
        .await
        .expect("the WebSocket upgrade passes nginx");
    ws.send_text(auth_message(&guest.token, cursor)).await;
    ws
}

/// One plain poll; `None` for 304.
pub async fn poll(
    client: &reqwest::Client,
    base: &str,
    guest: &JoinResponse,
    cursor: &str,
) -> Result<Option<PollResponse>, String> {
    let response = client
        .get(format!(
            "{base}/api/v1/rooms/{}/events?cursor={cursor}",
            guest.room.id
        ))
        .bearer_auth(&guest.token)
        .header("if-none-match", format!("\"{cursor}\""))
        .send()
        .await
        .map_err(|e| format!("poll: {e}"))?;
    match response.status() {
        StatusCode::NOT_MODIFIED => Ok(None),
        StatusCode::OK => response
            .json()
            .await
            .map(Some)
            .map_err(|e| format!("poll body: {e}")),
        status => Err(format!(
            "poll: {status} {}",
            response.text().await.unwrap_or_default()
        )),
    }
}

/// One send attempt; the stored message's seq.
pub async fn send_once(
    client: &reqwest::Client,
    base: &str,
    guest: &JoinResponse,
    client_message_id: &str,
    body: &str,
) -> Result<u64, String> {
    let response = client
        .post(format!("{base}/api/v1/rooms/{}/messages", guest.room.id))
        .bearer_auth(&guest.token)
        .json(&json!({"client_message_id": client_message_id, "body": body}))
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "send: {status} {}",
            response.text().await.unwrap_or_default()
        ));
    }
    let sent: SendResponse = response
        .json()
        .await
        .map_err(|e| format!("send body: {e}"))?;
    Ok(sent.message.seq)
}
