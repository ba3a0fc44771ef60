/*! Chatty widget v0.1 (MIT). Embed:
 * <script src="https://CHAT_HOST/widget.js" data-site="SITE_KEY" async></script>
 * Optional: data-room="page" (one room per page path), data-open="false" (start minimised).
 * Host CSP needs: script-src CHAT_HOST; connect-src CHAT_HOST. No inline styles or scripts are used. */
(() => {
  'use strict';

  const W = window;
  const D = document;

  // One widget per page, even if the snippet is pasted twice: claim the single
  // global we own (read-only, set once) before doing anything else.
  if (W.__chattyWidget) return;
  try {
    Object.defineProperty(W, '__chattyWidget', { value: Object.freeze({ version: '0.1.0' }) });
  } catch (_) {
    return;
  }

  // Must be read synchronously: currentScript is null once we yield.
  const script = D.currentScript || D.querySelector('script[data-site][src*="widget.js"]');
  if (!script || !script.src) return;
  const siteKey = script.getAttribute('data-site') || '';
  const pageRoom = script.getAttribute('data-room') === 'page';
  const startOpen = script.getAttribute('data-open') !== 'false';
  const base = new URL(script.src).origin;

  // Styles go through constructable stylesheets only (not blocked by a strict
  // CSP). Browsers without them get no widget rather than an unstyled one.
  if (typeof CSSStyleSheet !== 'function' || !('replaceSync' in CSSStyleSheet.prototype) ||
      typeof ShadowRoot !== 'function' || !('adoptedStyleSheets' in ShadowRoot.prototype)) return;

  // Globals captured at load time, so host scripts that later wrap or replace
  // them (analytics, polyfills, a host XSS) neither see nor break our traffic.
  const _fetch = W.fetch.bind(W);
  const _setTimeout = W.setTimeout.bind(W);
  const _clearTimeout = W.clearTimeout.bind(W);
  const _on = W.addEventListener.bind(W);
  const _mk = D.createElement.bind(D);
  const _parse = JSON.parse;
  const _stringify = JSON.stringify;
  const _random = Math.random;
  const _enc = encodeURIComponent;
  const _Date = Date;
  const _AbortController = W.AbortController;
  const _crypto = W.crypto;
  const _uuid = _crypto && typeof _crypto.randomUUID === 'function' ? _crypto.randomUUID.bind(_crypto) : null;
  const _randomBytes = _crypto.getRandomValues.bind(_crypto);
  let _storage = null;
  try { _storage = W.localStorage; } catch (_) { /* blocked storage (privacy mode, sandbox) */ }

  const NICK_KEY = 'chatty:nick:' + siteKey;
  const REQUEST_TIMEOUT_MS = 20000; // a stalled fetch must not freeze the poll loop
  const MAX_SHOWN = 500;            // bound DOM growth in long sessions

  // All mutable state. The token lives here only (never in host storage).
  const S = {
    nick: '', token: null, guestId: null, roomId: null, cursor: null,
    pollMs: 2000, maxBody: 2000,
    // Bumped on every (re)join and on pagehide. Async loops remember the value
    // they started with and stop when it changes, so two never run at once.
    session: 0, joining: null, joinGen: -1, pollTimer: 0, failures: 0,
    active: false, sending: false, focusAfterJoin: false, open: startOpen, unread: 0,
    members: new Map(), count: 0, shown: new Map(), floor: 0,
  };
  const seqOf = new WeakMap(); // message <li> -> seq, to keep the list ordered

  // ---------------------------------------------------------------- helpers

  const sleep = (ms) => new Promise((r) => _setTimeout(r, ms));
  // Exponential backoff with full jitter: random in [0, min(30 s, 1 s * 2^n)).
  const backoff = (n) => _random() * Math.min(30000, 1000 * 2 ** Math.min(n, 15));
  const transient = (r) => !r || r.status >= 500 || r.status === 408 || r.status === 429;
  const errCode = (r) => (r && r.data && r.data.error && r.data.error.code) || '';
  const errMsg = (r, fallback) => {
    const m = r && r.data && r.data.error && r.data.error.message;
    return typeof m === 'string' && m ? m : fallback;
  };

  function storeGet(k) { try { return _storage ? _storage.getItem(k) : null; } catch (_) { return null; } }
  function storeSet(k, v) { try { if (_storage) _storage.setItem(k, v); } catch (_) { /* quota, blocked */ } }

  function newId() {
    if (_uuid) { try { return _uuid(); } catch (_) { /* insecure context */ } }
    const b = new Uint8Array(16);
    _randomBytes(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  // One request helper. Resolves to {status, data} (data = parsed JSON body or
  // null); rejects only when the network fails or the request times out.
  // No cookies are ever sent: auth is the bearer token.
  async function api(method, path, opts = {}) {
    const headers = {};
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    if (opts.token) headers.Authorization = 'Bearer ' + opts.token;
    if (opts.etag) headers['If-None-Match'] = '"' + opts.etag + '"';
    const ctl = _AbortController ? new _AbortController() : null;
    const timer = ctl ? _setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS) : 0;
    try {
      const res = await _fetch(base + path, {
        method, headers, cache: 'no-store', credentials: 'omit', mode: 'cors',
        body: opts.body === undefined ? undefined : _stringify(opts.body),
        signal: ctl ? ctl.signal : undefined,
      });
      let data = null;
      if (res.status !== 304 && res.status !== 204) {
        try { data = _parse(await res.text()); } catch (_) { data = null; }
      }
      return { status: res.status, data };
    } finally {
      _clearTimeout(timer);
    }
  }

  // Build an element. Text is only ever set through textContent.
  function el(tag, cls, text, attrs) {
    const e = _mk(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    if (attrs) for (const k of Object.keys(attrs)) e.setAttribute(k, attrs[k]);
    return e;
  }

  function fmtTime(iso) {
    const d = new _Date(iso);
    return isNaN(d) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  // ------------------------------------------------------------------- styles

  const CSS = `
:host{all:initial;display:block;position:fixed;right:16px;bottom:16px;z-index:2147483000}
*,*::before,*::after{box-sizing:border-box}
[hidden]{display:none!important}
.box{--bg:#fff;--fg:#1d1d22;--mut:#676772;--bd:#d9d9e0;--ac:#3b5bdb;--acfg:#fff;--own:#e5ebff;--oth:#f1f1f4;--err:#c92a2a;
display:flex;flex-direction:column;width:320px;height:420px;max-width:calc(100vw - 32px);max-height:calc(100vh - 32px);
background:var(--bg);color:var(--fg);border:1px solid var(--bd);border-radius:12px;overflow:hidden;
box-shadow:0 8px 28px rgba(0,0,0,.2);font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;text-align:start}
@media (prefers-color-scheme:dark){.box{--bg:#1d1e23;--fg:#ececf1;--mut:#a0a0ad;--bd:#3a3b45;--ac:#8098ff;--acfg:#0f1220;--own:#2c3558;--oth:#2a2b32;--err:#ff8a8a}}
.box.min{width:auto;height:auto;border-radius:20px}
.hd{display:flex;align-items:center;gap:8px;padding:8px 8px 8px 14px;background:var(--ac);color:var(--acfg);cursor:pointer;user-select:none}
.ttl{font-weight:600}
.cnt,.st{font-size:12px;opacity:.85;white-space:nowrap}
.st{margin-inline-start:auto}
.min .st{display:none}
.badge{background:var(--err);color:#fff;border-radius:9px;padding:0 6px;font-size:11px;font-weight:600}
button,input,textarea{font:inherit;color:inherit;margin:0}
button{cursor:pointer;border:0;border-radius:8px;padding:6px 12px;background:var(--ac);color:var(--acfg)}
button:disabled{opacity:.6;cursor:default}
button:focus-visible,input:focus-visible,textarea:focus-visible{outline:2px solid var(--ac);outline-offset:1px}
.hd button:focus-visible{outline-color:var(--acfg)}
.tg{background:transparent;color:inherit;padding:0 6px;font-size:18px;line-height:1}
.min .tg{margin-inline-start:auto}
.bd{flex:1;display:flex;flex-direction:column;min-height:0}
input,textarea{background:var(--bg);color:var(--fg);border:1px solid var(--bd);border-radius:8px;padding:6px 8px;min-width:0}
.nf{display:flex;flex-direction:column;gap:8px;padding:16px}
.chat{flex:1;display:flex;flex-direction:column;min-height:0}
.mem{list-style:none;margin:0;padding:6px 10px;display:flex;flex-wrap:wrap;gap:4px;max-height:56px;overflow:auto;border-bottom:1px solid var(--bd);font-size:12px;color:var(--mut)}
.mem li{background:var(--oth);border-radius:10px;padding:0 8px;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.mem li.me{font-weight:600;color:var(--fg)}
.msgs{list-style:none;margin:0;padding:8px 10px;flex:1;min-height:0;overflow-y:auto;display:flex;flex-direction:column;gap:6px}
.msg{align-self:flex-start;max-width:88%;background:var(--oth);border-radius:10px;padding:4px 9px;overflow:hidden}
.msg.own{align-self:flex-end;background:var(--own)}
.meta{display:flex;gap:6px;align-items:baseline;font-size:11px;color:var(--mut)}
.nick{font-weight:600;color:var(--fg);display:inline-block;max-width:180px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;vertical-align:bottom}
.body{white-space:pre-wrap;overflow-wrap:anywhere}
.sf{display:flex;gap:6px;align-items:flex-end;padding:8px;border-top:1px solid var(--bd)}
textarea{flex:1;resize:none;height:38px;max-height:96px}
.err{margin:0;color:var(--err);font-size:12px}
.chat>.err{padding:0 10px}
.err:empty{display:none}
`;

  // ----------------------------------------------------------------------- UI

  const ui = {};

  function buildUI() {
    const host = _mk('chatty-widget');
    const shadow = ui.shadow = host.attachShadow({ mode: 'open' });
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];

    ui.box = el('section', 'box', null, { 'aria-label': 'Chat' });
    ui.hd = el('header', 'hd');
    ui.cnt = el('span', 'cnt');
    ui.badge = el('span', 'badge');
    ui.st = el('span', 'st', '', { role: 'status' });
    ui.tg = el('button', 'tg', null, { type: 'button', 'aria-controls': 'chatty-bd' });
    ui.hd.append(el('span', 'ttl', 'Chat'), ui.cnt, ui.badge, ui.st, ui.tg);

    ui.bd = el('div', 'bd', null, { id: 'chatty-bd' });

    // Nickname form, shown first and again whenever a join is refused.
    ui.nf = el('form', 'nf');
    ui.nick = el('input', null, null, { type: 'text', name: 'nickname', autocomplete: 'nickname', maxlength: '64', required: '' });
    ui.nick.id = 'chatty-nick';
    ui.nick.dir = 'auto';
    ui.nick.value = storeGet(NICK_KEY) || '';
    ui.join = el('button', null, 'Join chat', { type: 'submit' });
    ui.nfErr = el('p', 'err', '', { role: 'alert' });
    ui.nf.append(el('label', null, 'Your nickname', { for: 'chatty-nick' }), ui.nick, ui.join, ui.nfErr);

    // Chat view: members, messages, composer.
    ui.chat = el('div', 'chat');
    ui.chat.hidden = true;
    ui.mem = el('ul', 'mem', null, { 'aria-label': 'People here' });
    ui.msgs = el('ol', 'msgs', null, { role: 'log', 'aria-live': 'polite', 'aria-label': 'Messages' });
    ui.sfErr = el('p', 'err', '', { role: 'alert' });
    ui.sf = el('form', 'sf');
    ui.input = el('textarea', null, null, { rows: '1', 'aria-label': 'Message', placeholder: 'Write a message\u2026' });
    ui.input.dir = 'auto';
    ui.send = el('button', null, 'Send', { type: 'submit' });
    ui.sf.append(ui.input, ui.send);
    ui.chat.append(ui.mem, ui.msgs, ui.sfErr, ui.sf);

    ui.bd.append(ui.nf, ui.chat);
    ui.box.append(ui.hd, ui.bd);
    shadow.append(ui.box);

    // The header (toggle button included: its click bubbles here) minimises.
    ui.hd.addEventListener('click', () => setOpen(!S.open, true));
    ui.nf.addEventListener('submit', onNickSubmit);
    ui.sf.addEventListener('submit', (e) => { e.preventDefault(); send(); });
    ui.input.addEventListener('keydown', (e) => {
      // Enter sends, Shift+Enter is a newline; never interrupt IME composition.
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        send();
      }
    });

    renderMembers();
    setOpen(S.open, false);
    D.body.append(host);
  }

  function setOpen(open, byUser) {
    S.open = open;
    ui.box.classList.toggle('min', !open);
    ui.bd.hidden = !open;
    ui.tg.textContent = open ? '\u2013' : '+';
    ui.tg.setAttribute('aria-expanded', String(open));
    ui.tg.setAttribute('aria-label', open ? 'Minimise chat' : 'Open chat');
    if (open) {
      S.unread = 0;
      scrollToBottom();
      // Only move focus when the visitor asked for it, never on page load.
      if (byUser) (ui.chat.hidden ? ui.nick : ui.input).focus();
    }
    renderBadge();
  }

  function renderBadge() {
    ui.badge.textContent = S.unread > 99 ? '99+' : String(S.unread);
    ui.badge.hidden = S.open || S.unread === 0;
  }

  function setStatus(text) {
    if (ui.st.textContent !== text) ui.st.textContent = text;
  }

  function showNickForm(error) {
    ui.chat.hidden = true;
    ui.nf.hidden = false;
    ui.nfErr.textContent = error || '';
  }

  function renderMembers() {
    const items = [];
    for (const [id, nick] of S.members) {
      const li = el('li', id === S.guestId ? 'me' : null);
      li.append(el('bdi', null, nick));
      if (id === S.guestId) li.append(' (you)');
      items.push(li);
    }
    ui.mem.replaceChildren(...items);
    // A large room lists a sample; the count is exact.
    const n = Math.max(S.count, S.members.size);
    ui.cnt.textContent = S.roomId == null ? '' : n + ' here';
  }

  const nearBottom = () => ui.msgs.scrollHeight - ui.msgs.scrollTop - ui.msgs.clientHeight < 48;
  function scrollToBottom() { ui.msgs.scrollTop = ui.msgs.scrollHeight; }

  // Insert a message in seq order; ignore one already shown (own sends come
  // back through the poll). Returns true when something was added.
  function addMessage(m, fromPoll) {
    if (!m || typeof m.seq !== 'number' || S.shown.has(m.seq) || m.seq <= S.floor) return false;
    const own = m.guest_id === S.guestId;
    const li = el('li', own ? 'msg own' : 'msg');
    const meta = el('div', 'meta');
    const time = el('time', null, fmtTime(m.created_at));
    time.dateTime = String(m.created_at || '');
    meta.append(el('bdi', 'nick', String(m.nickname || '')), time);
    const body = el('div', 'body', String(m.body || ''));
    body.dir = 'auto';
    li.append(meta, body);

    const stick = nearBottom();
    let prev = ui.msgs.lastElementChild;
    while (prev && seqOf.get(prev) > m.seq) prev = prev.previousElementSibling;
    ui.msgs.insertBefore(li, prev ? prev.nextSibling : ui.msgs.firstChild);
    seqOf.set(li, m.seq);
    S.shown.set(m.seq, li);

    while (S.shown.size > MAX_SHOWN) {
      const first = ui.msgs.firstElementChild;
      S.floor = Math.max(S.floor, seqOf.get(first));
      S.shown.delete(seqOf.get(first));
      first.remove();
    }
    if (stick || own) scrollToBottom();
    if (fromPoll && !own && !S.open) { S.unread++; renderBadge(); }
    return true;
  }

  function clearRoom() {
    S.members.clear();
    S.shown.clear();
    S.floor = 0;
    ui.msgs.replaceChildren();
  }

  // ---------------------------------------------------------------- protocol

  function onNickSubmit(e) {
    e.preventDefault();
    const nick = ui.nick.value.trim();
    if (!nick) { ui.nfErr.textContent = 'Please choose a nickname.'; return; }
    S.nick = nick;
    S.focusAfterJoin = true; // the visitor is here: move them on to the composer
    ui.nfErr.textContent = '';
    join();
  }

  // (Re)join: one at a time; resolves true once joined, false when refused or
  // superseded. Transient failures retry with backoff inside.
  function join() {
    if (S.joining && S.joinGen === S.session) return S.joining;
    const gen = ++S.session;
    _clearTimeout(S.pollTimer);
    S.joinGen = gen;
    ui.join.disabled = true;
    const p = joinLoop(gen).finally(() => {
      if (S.joining === p) { S.joining = null; ui.join.disabled = false; }
    });
    S.joining = p;
    return p;
  }

  async function joinLoop(gen) {
    for (let n = 0; ; n++) {
      setStatus(n || S.token ? 'reconnecting\u2026' : 'connecting\u2026');
      const req = { site_key: siteKey, nickname: S.nick };
      if (pageRoom) req.page = W.location.pathname;
      if (S.token) req.token = S.token; // keeps our guest id across rejoins
      let r = null;
      try { r = await api('POST', '/api/v1/join', { body: req }); } catch (_) { /* network */ }
      if (gen !== S.session) return false;
      if (r && r.status === 200 && r.data && r.data.token && r.data.room) {
        applyJoin(r.data, gen);
        return true;
      }
      if (!transient(r)) {
        // Refused (bad nickname, unknown site, origin not allowed...): let the
        // visitor read why and try again.
        S.active = false;
        setStatus('');
        showNickForm(errMsg(r, 'Could not join the chat.'));
        return false;
      }
      await sleep(backoff(n));
      if (gen !== S.session) return false;
    }
  }

  function applyJoin(d, gen) {
    S.token = d.token;
    S.guestId = d.guest && d.guest.id;
    S.nick = (d.guest && d.guest.nickname) || S.nick;
    S.roomId = d.room.id;
    S.cursor = d.cursor;
    S.pollMs = Math.min(Math.max(Number(d.poll_interval_ms) || 2000, 250), 60000);
    S.maxBody = Number(d.max_body_chars) || 2000;
    S.active = true;
    storeSet(NICK_KEY, S.nick);

    // Fresh sync: drop what we had and draw the room as the server sees it.
    clearRoom();
    for (const m of d.members || []) S.members.set(m.guest_id, m.nickname);
    S.count = Number(d.member_count) || S.members.size;
    ui.msgs.setAttribute('aria-busy', 'true'); // don't read out the backlog
    for (const m of d.messages || []) addMessage(m, false);
    ui.msgs.setAttribute('aria-busy', 'false');
    renderMembers();

    ui.input.maxLength = S.maxBody;
    ui.nf.hidden = true;
    ui.chat.hidden = false;
    ui.nfErr.textContent = '';
    setStatus('online');
    scrollToBottom();
    if (S.focusAfterJoin && S.open) ui.input.focus();
    S.focusAfterJoin = false;
    schedulePoll(gen, S.pollMs);
  }

  function schedulePoll(gen, ms) {
    _clearTimeout(S.pollTimer);
    S.pollTimer = _setTimeout(() => poll(gen), ms);
  }

  // One poll; schedules the next only after this one finished, so requests
  // never overlap.
  async function poll(gen) {
    if (gen !== S.session) return;
    let r = null;
    try {
      r = await api('GET', '/api/v1/rooms/' + S.roomId + '/events?cursor=' + _enc(S.cursor),
        { token: S.token, etag: S.cursor });
    } catch (_) { /* network */ }
    if (gen !== S.session) return; // rejoined or page hidden meanwhile

    if (r && (r.status === 200 || r.status === 304)) {
      S.failures = 0;
      setStatus('online');
      if (r.status === 200 && r.data) {
        if (!applyEvents(r.data.events || [])) { join(); return; }
        if (typeof r.data.cursor === 'string') S.cursor = r.data.cursor;
        if (r.data.more) { schedulePoll(gen, 0); return; }
      }
      schedulePoll(gen, S.pollMs);
      return;
    }

    S.failures++;
    setStatus('reconnecting\u2026');
    if (transient(r)) { schedulePoll(gen, backoff(S.failures - 1)); return; }
    // 401 invalid_token/token_expired, 403 wrong_room, a bad cursor or a
    // vanished room: a fresh join fixes them. Back off if that keeps failing.
    S.pollTimer = _setTimeout(() => { if (gen === S.session) join(); },
      S.failures > 1 ? backoff(S.failures - 1) : 0);
  }

  // Apply poll events in order. Returns false on `reset` (nothing after it
  // applies; the caller joins again).
  function applyEvents(events) {
    let membersChanged = false;
    for (const ev of events) {
      if (!ev) continue;
      switch (ev.type) {
        case 'message':
          addMessage(ev.message, true);
          break;
        case 'join':
          if (ev.member) {
            if (!S.members.has(ev.member.guest_id)) S.count++;
            S.members.set(ev.member.guest_id, ev.member.nickname); membersChanged = true;
          }
          break;
        case 'leave':
          if (ev.member) { S.members.delete(ev.member.guest_id); S.count = Math.max(0, S.count - 1); membersChanged = true; }
          break;
        case 'members':
          S.members.clear();
          for (const m of ev.members || []) S.members.set(m.guest_id, m.nickname);
          S.count = Number(ev.count) || S.members.size;
          membersChanged = true;
          break;
        case 'reset':
          return false;
        default: // unknown event types from a newer server are skipped
      }
    }
    if (membersChanged) renderMembers();
    return true;
  }

  // Send the composer's text. The same client_message_id is reused for every
  // retry so the server stores the message once.
  async function send() {
    const text = ui.input.value;
    if (S.sending || !text.trim()) return;
    S.sending = true;
    const focused = ui.shadow.activeElement;
    const refocus = focused === ui.input || focused === ui.send;
    ui.input.readOnly = true; // keep the text stable until we know the outcome
    ui.send.disabled = true;
    ui.sfErr.textContent = '';
    const body = { client_message_id: newId(), body: text };
    try {
      for (let attempt = 0; ; attempt++) {
        if (S.joining) await S.joining;
        if (!S.token || S.roomId == null) { ui.sfErr.textContent = 'Not connected.'; return; }
        let r = null;
        try {
          r = await api('POST', '/api/v1/rooms/' + S.roomId + '/messages', { token: S.token, body });
        } catch (_) { /* network */ }
        if (r && (r.status === 200 || r.status === 201) && r.data && r.data.message) {
          addMessage(r.data.message, false);
          ui.input.value = '';
          return;
        }
        const auth = r && (r.status === 401 || errCode(r) === 'wrong_room');
        if (attempt < 3 && (auth || transient(r))) {
          if (auth) { if (!(await join())) { ui.sfErr.textContent = 'Not connected.'; return; } }
          else await sleep(500 + backoff(attempt));
          continue;
        }
        ui.sfErr.textContent = r ? errMsg(r, 'Message not sent.') : 'Could not reach the chat server. Try again.';
        return;
      }
    } finally {
      S.sending = false;
      ui.input.readOnly = false;
      ui.send.disabled = false;
      // Disabling the button drops its focus; give it back, but never steal it.
      if (refocus && S.open && !ui.chat.hidden) ui.input.focus();
    }
  }

  // Say goodbye when the page goes away (or into the back/forward cache) and
  // stop polling; come back if the page is restored from that cache.
  _on('pagehide', () => {
    if (!S.active) return;
    S.session++;
    _clearTimeout(S.pollTimer);
    if (!S.token || S.roomId == null) return;
    try {
      _fetch(base + '/api/v1/rooms/' + S.roomId + '/leave', {
        method: 'POST', keepalive: true, credentials: 'omit', cache: 'no-store',
        headers: { Authorization: 'Bearer ' + S.token },
      }).catch(() => {});
    } catch (_) { /* ignore */ }
  });
  _on('pageshow', (e) => { if (e.persisted && S.active) join(); });

  // An async script may run before <body> exists.
  if (D.body) buildUI();
  else D.addEventListener('DOMContentLoaded', buildUI, { once: true });
})();
