// Shared by the browser tests: two (or more) real Chatty nodes that share
// one MariaDB database and one Redis key prefix (the shared mode), a
// headless Chromium driven by playwright-core, visitors on a node's demo
// page or on host pages of their own origin, and proxies in front of nodes.
//
// Every test file makes its own harness: its own database, Redis key prefix,
// nodes and browser, so files never see each other's data.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

export const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
export const BIN = process.env.CHATTY_BIN || join(ROOT, 'target', 'debug', 'chatty');
const MYSQL = new URL(process.env.CHATTY_TEST_MYSQL_URL || 'mysql://root@127.0.0.1:3306');
const REDIS = process.env.CHATTY_TEST_REDIS_URL || 'redis://127.0.0.1:6379';
export const ARTIFACTS = join(ROOT, 'target', 'browser-artifacts');
export const WAIT = 15_000; // the widget polls every 2 s; generous for a slow CI

export function mariadb(sql) {
  const args = ['--protocol=tcp', '-h', MYSQL.hostname, '-P', MYSQL.port || '3306',
    '-u', decodeURIComponent(MYSQL.username || 'root'), '-e', sql];
  execFileSync('mariadb', args, {
    env: { ...process.env, MYSQL_PWD: decodeURIComponent(MYSQL.password || '') },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

export function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

/** Elements inside the widget's (open) shadow root. */
export const widget = (page, selector) => page.locator(`chatty-widget ${selector}`);

export const seeMessage = (page, text) => widget(page, '.msgs .body').filter({ hasText: text })
  .first().waitFor({ state: 'visible', timeout: WAIT });

export async function say(visitorPage, text) {
  await widget(visitorPage, 'textarea').fill(text);
  await widget(visitorPage, 'textarea').press('Enter');
}

/**
 * One test file's world. Call `setUp()` in `before` and `tearDown()` in
 * `after`; `bases` fills with the nodes' base URLs, `browser` is set once
 * the browser runs. The functions need no `this`: destructure them.
 */
export function harness({ nodes: nodeCount = 2 } = {}) {
  const suffix = randomBytes(6).toString('hex');
  const database = `chatty_test_browser_${suffix}`;
  const children = [];
  const bases = [];
  const hostServers = [];
  let workdir;

  const databaseUrl = `${MYSQL.protocol}//${MYSQL.username ? MYSQL.username + (MYSQL.password ? ':' + MYSQL.password : '') + '@' : ''}${MYSQL.host}/${database}`;

  /** What a node and the `chatty site …` commands of this harness read. */
  function env(extra = {}) {
    const e = {
      ...process.env,
      CHATTY__DATABASE__URL: databaseUrl,
      CHATTY__REDIS__URL: REDIS,
      CHATTY__REDIS__KEY_PREFIX: `chatty_test_browser_${suffix}:`,
      CHATTY__AUTH__TOKEN_SECRET: 'browser-test-secret-0123456789abcdef0123',
      CHATTY__LOG__FILTER: 'warn',
      ...extra,
    };
    delete e.CHATTY_CONFIG; // only the settings above and the defaults
    return e;
  }

  async function startNode() {
    const port = await freePort();
    const child = spawn(BIN, [], {
      cwd: workdir, env: env({ CHATTY__SERVER__PORT: String(port) }), stdio: ['ignore', 'inherit', 'inherit'],
    });
    const base = `http://127.0.0.1:${port}`;
    children.push(child);
    for (let i = 0; i < 300; i++) {
      if (child.exitCode !== null) throw new Error(`node on ${base} exited with ${child.exitCode}`);
      try {
        const r = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(1000) });
        if (r.ok) return base;
      } catch { /* not up yet */ }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`node on ${base} did not become ready`);
  }

  /** Runs `chatty …` (e.g. `site create`) against this harness's database; returns its stdout. */
  function chatty(...args) {
    return execFileSync(BIN, args, {
      cwd: workdir, env: env(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 30_000,
    });
  }

  /**
   * Opens `url` (a node's demo page, or a host page) in a fresh browser
   * context and joins as `nick`. Records dialogs and CSP violations; `joined`
   * is the join's answer (room, guest, …) or null.
   */
  async function visitor(url, nick, options = {}) {
    const context = await h.browser.newContext(options);
    const page = await context.newPage();
    const dialogs = [];
    page.on('dialog', async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss(); });
    await page.addInitScript(() => {
      window.__cspViolations = [];
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
      });
    });
    let joinedAt = null;
    const joinAnswer = page.waitForResponse(
      (r) => r.url().endsWith('/api/v1/join') && r.request().method() === 'POST' && r.status() === 200,
      { timeout: WAIT },
    ).then((r) => { joinedAt = new URL(r.url()).origin; return r.json(); }).catch(() => null);
    await page.goto(url.endsWith('/') ? url : `${url}/`);
    await widget(page, 'input[name="nickname"]').fill(nick);
    await widget(page, 'input[name="nickname"]').press('Enter');
    try {
      await widget(page, 'textarea').waitFor({ state: 'visible', timeout: WAIT });
    } catch (error) {
      // Say why the join did not happen (nickname taken, banned, …).
      const refusal = await widget(page, '.nf .err').textContent({ timeout: 1000 }).catch(() => '?');
      error.message = `${nick} could not join on ${url}: "${refusal}"\n${error.message}`;
      throw error;
    }
    const joined = await joinAnswer;
    const violations = () => page.evaluate(() => window.__cspViolations);
    // Closing a context does not fire the page's pagehide (where the widget
    // says goodbye), so say it for the visitor as its widget would: without
    // it the visitor stays present until the presence timeout, and the next
    // test's visitor of the same name is refused as a look-alike.
    const closeContext = context.close.bind(context);
    // (After the page is gone: a poll still in flight would mark it present again.)
    context.close = async () => {
      await closeContext();
      // Any node will do (the one joined through may be gone, or a proxy).
      for (const base of joined && joinedAt ? [joinedAt, ...bases] : []) {
        const left = await fetch(`${base}/api/v1/rooms/${joined.room.id}/leave`, {
          method: 'POST',
          headers: { authorization: `Bearer ${joined.token}` },
          signal: AbortSignal.timeout(5000),
        }).then((r) => r.status === 204).catch(() => false);
        if (left) break;
      }
    };
    return { context, page, dialogs, violations, joined };
  }

  /**
   * Serves one host page on its own origin (another port than the chat's),
   * embedding the widget of `chatBase` with the snippet a site owner pastes.
   * `csp` becomes the page's Content-Security-Policy; `css` a stylesheet of
   * the host's (served from the host's origin, as `style-src 'self'` allows).
   * `site` is the site key, or a function giving it when the page is served
   * (for a site created for this page's origin after the server started).
   */
  async function hostPage({ chatBase, csp, css, attrs = '', site = 'demo' }) {
    const server = createHttpServer((req, res) => {
      if (req.url === '/host.css') {
        res.writeHead(200, { 'content-type': 'text/css' });
        res.end(css || '');
        return;
      }
      const headers = { 'content-type': 'text/html; charset=utf-8' };
      if (csp) headers['content-security-policy'] = csp;
      res.writeHead(200, headers);
      const key = typeof site === 'function' ? site() : site;
      res.end(`<!doctype html><html><head><meta charset="utf-8"><title>A host site</title>
<link rel="stylesheet" href="/host.css"></head>
<body><div><h1>Someone's site</h1><p>Content of the host page.</p></div>
<script src="${chatBase}/widget.js" data-site="${key}" ${attrs} async></script></body></html>`);
    });
    await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
    hostServers.push(server);
    return `http://127.0.0.1:${server.address().port}/`;
  }

  /**
   * A reverse proxy on its own port in front of a Chatty node, standing in for
   * what sits between visitors and Chatty in the wild:
   * - `blockUpgrade`: an old proxy that refuses WebSocket upgrades;
   * - `holdStreams`: a buffering proxy that passes an event stream's headers
   *   but holds its body;
   * - `switchTo(base)` + `dropAll()`: the node behind it goes away, and the
   *   next connections reach another node (a load balancer after a failure).
   */
  async function proxy(targetBase, { blockUpgrade = false, holdStreams = false } = {}) {
    let target = new URL(targetBase);
    const sockets = new Set();
    const track = (socket) => { sockets.add(socket); socket.on('close', () => sockets.delete(socket)); };
    const server = createHttpServer((req, res) => {
      const upstream = httpRequest({
        host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers,
      }, (upRes) => {
        res.writeHead(upRes.statusCode, upRes.headers);
        if (holdStreams && String(upRes.headers['content-type'] || '').startsWith('text/event-stream')) {
          res.flushHeaders(); // the headers go through; the events never do
          return;
        }
        upRes.pipe(res);
      });
      upstream.on('error', () => res.destroy());
      res.on('close', () => upstream.destroy());
      req.pipe(upstream);
    });
    server.on('connection', track);
    server.on('upgrade', (req, socket, head) => {
      if (blockUpgrade) {
        socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
        return;
      }
      const upstream = netConnect(Number(target.port), target.hostname, () => {
        let lines = `${req.method} ${req.url} HTTP/1.1\r\n`;
        for (let i = 0; i < req.rawHeaders.length; i += 2) lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
        upstream.write(lines + '\r\n');
        if (head.length) upstream.write(head);
        socket.pipe(upstream);
        upstream.pipe(socket);
      });
      track(upstream);
      upstream.on('error', () => socket.destroy());
      socket.on('error', () => upstream.destroy());
      // One side gone, the other goes too (as through a real balancer): a
      // node must not keep a connection, and its visitor present, that no
      // browser holds any more.
      upstream.on('close', () => socket.destroy());
      socket.on('close', () => upstream.destroy());
    });
    await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
    hostServers.push(server);
    return {
      base: `http://127.0.0.1:${server.address().port}`,
      switchTo(base) { target = new URL(base); },
      dropAll() { for (const socket of sockets) socket.destroy(); },
    };
  }

  async function setUp() {
    workdir = mkdtempSync(join(tmpdir(), 'chatty-browser-'));
    mkdirSync(ARTIFACTS, { recursive: true });
    mariadb(`CREATE DATABASE \`${database}\``);
    // The first node runs the migrations before the others start.
    for (let i = 0; i < nodeCount; i++) bases.push(await startNode());
    // playwright-core gives the browser a fresh temporary --user-data-dir
    // (and refuses one in `args`); it is deleted when the browser closes.
    h.browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
  }

  async function tearDown() {
    await h.browser?.close();
    for (const server of hostServers) server.close();
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r() : c.once('exit', r)))));
    try { mariadb(`DROP DATABASE IF EXISTS \`${database}\``); } catch { /* dropped by the test script too */ }
    if (workdir) rmSync(workdir, { recursive: true, force: true });
  }

  const h = {
    browser: null, bases, database, env, setUp, tearDown, startNode, chatty, visitor, hostPage, proxy,
  };
  return h;
}
