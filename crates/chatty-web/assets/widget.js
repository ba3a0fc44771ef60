/*! Chatty widget v0.2 (MIT). Embed:
 * <script src="https://CHAT_HOST/widget.js" data-site="SITE_KEY" async></script>
 * Optional: data-room="site|page", data-position="bottom-right|bottom-left",
 * data-theme="auto|light|dark", data-lang="en|de|fr|es", data-open="true|false",
 * data-transport="websocket|sse|longpoll|poll" (the best transport to try).
 * Host CSP needs: script-src https://CHAT_HOST; connect-src https://CHAT_HOST wss://CHAT_HOST.
 * No inline styles or scripts are used. */
(() => {
  'use strict';

  const W = window;
  const D = document;

  // One widget per page, even if the snippet is pasted twice: claim the single
  // global we own (read-only, set once) before doing anything else.
  if (W.__chattyWidget) return;
  try {
    Object.defineProperty(W, '__chattyWidget', { value: Object.freeze({ version: '0.2.0' }) });
  } catch (_) {
    return;
  }

  // Must be read synchronously: currentScript is null once we yield.
  const script = D.currentScript || D.querySelector('script[data-site][src*="widget"]');
  if (!script || !script.src) return;
  const attr = (name, allowed, fallback) => {
    const v = (script.getAttribute('data-' + name) || '').trim().toLowerCase();
    return allowed.includes(v) ? v : fallback;
  };
  const siteKey = script.getAttribute('data-site') || '';
  const pageRoom = attr('room', ['site', 'page'], 'site') === 'page';
  const position = attr('position', ['bottom-right', 'bottom-left'], 'bottom-right');
  const theme = attr('theme', ['auto', 'light', 'dark'], 'auto');
  const TRANSPORTS = ['websocket', 'sse', 'longpoll', 'poll'];
  const topRung = TRANSPORTS.indexOf(attr('transport', TRANSPORTS, 'websocket'));
  const base = new URL(script.src).origin;
  const wsBase = base.replace(/^http/, 'ws');

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
  const _now = Date.now;
  const _URL = URL;
  const _AbortController = W.AbortController;
  const _WebSocket = typeof W.WebSocket === 'function' ? W.WebSocket : null;
  const _EventSource = typeof W.EventSource === 'function' ? W.EventSource : null;
  const _crypto = W.crypto;
  const _uuid = _crypto && typeof _crypto.randomUUID === 'function' ? _crypto.randomUUID.bind(_crypto) : null;
  const _randomBytes = _crypto.getRandomValues.bind(_crypto);
  const _darkQuery = typeof W.matchMedia === 'function' ? W.matchMedia('(prefers-color-scheme: dark)') : null;
  let _storage = null;
  try { _storage = W.localStorage; } catch (_) { /* blocked storage (privacy mode, sandbox) */ }

  // ------------------------------------------------------------ languages

  // The widget's own words, and those for the refusals in CODES. Other server
  // error messages are shown as the server wrote them, in English.
  const CODES = 'banned slow_mode repeated_message rate_limited too_many_links word_filtered nickname_taken nickname_reserved origin_not_allowed'.split(' ');
  const KEYS = 'chat here nick join ph send min open conn reconn online offline notconn notsent unreach pick nojoin you emoji people msgs unread msg wait'.split(' ').concat(CODES);
  const LANGS = {
    en: 'Chat|{n} here|Your nickname|Join chat|Write a message\u2026|Send|Minimise chat|Open chat|connecting\u2026|reconnecting\u2026|online|offline|Not connected.|Message not sent.|Could not reach the chat server. Try again.|Please choose a nickname.|Could not join the chat.|(you)|Emoji|People here|Messages|{n} unread|Message|Wait {n} s.|You are banned from this chat.|Slow mode is on.|You already sent this message.|Too many attempts.|Too many links.|The message contains a blocked word.|This nickname is taken.|This nickname is reserved.|Chat is not enabled on this site.',
    de: 'Chat|{n} hier|Dein Spitzname|Chat beitreten|Nachricht schreiben\u2026|Senden|Chat minimieren|Chat \u00f6ffnen|verbinde\u2026|verbinde neu\u2026|online|offline|Nicht verbunden.|Nachricht nicht gesendet.|Chat-Server nicht erreichbar. Bitte erneut versuchen.|Bitte w\u00e4hle einen Spitznamen.|Beitritt nicht m\u00f6glich.|(du)|Emoji|Anwesende|Nachrichten|{n} ungelesen|Nachricht|Bitte {n} s warten.|Du bist aus diesem Chat gesperrt.|Langsamer Modus ist an.|Diese Nachricht hast du schon gesendet.|Zu viele Versuche.|Zu viele Links.|Die Nachricht enth\u00e4lt ein gesperrtes Wort.|Dieser Spitzname ist vergeben.|Dieser Spitzname ist reserviert.|Der Chat ist auf dieser Seite nicht freigegeben.',
    fr: 'Chat|{n} ici|Votre pseudo|Rejoindre le chat|\u00c9crire un message\u2026|Envoyer|R\u00e9duire le chat|Ouvrir le chat|connexion\u2026|reconnexion\u2026|en ligne|hors ligne|Non connect\u00e9.|Message non envoy\u00e9.|Serveur de chat injoignable. R\u00e9essayez.|Choisissez un pseudo.|Impossible de rejoindre le chat.|(vous)|\u00c9moji|Personnes pr\u00e9sentes|Messages|{n} non lus|Message|Patientez {n} s.|Votre acc\u00e8s \u00e0 ce chat est bloqu\u00e9.|Le mode lent est activ\u00e9.|Vous avez d\u00e9j\u00e0 envoy\u00e9 ce message.|Trop de tentatives.|Trop de liens.|Le message contient un mot interdit.|Ce pseudo est d\u00e9j\u00e0 pris.|Ce pseudo est r\u00e9serv\u00e9.|Le chat n\u2019est pas activ\u00e9 sur ce site.',
    es: 'Chat|{n} aqu\u00ed|Tu apodo|Unirse al chat|Escribe un mensaje\u2026|Enviar|Minimizar chat|Abrir chat|conectando\u2026|reconectando\u2026|en l\u00ednea|sin conexi\u00f3n|No conectado.|Mensaje no enviado.|No se pudo contactar con el servidor. Int\u00e9ntalo de nuevo.|Elige un apodo.|No se pudo unir al chat.|(t\u00fa)|Emoji|Personas aqu\u00ed|Mensajes|{n} sin leer|Mensaje|Espera {n} s.|Tu acceso a este chat est\u00e1 bloqueado.|El modo lento est\u00e1 activado.|Ya enviaste este mensaje.|Demasiados intentos.|Demasiados enlaces.|El mensaje contiene una palabra bloqueada.|Ese apodo ya est\u00e1 en uso.|Ese apodo est\u00e1 reservado.|El chat no est\u00e1 habilitado en este sitio.',
  };
  // data-lang, else the page's lang, else the browser's; English otherwise.
  const lang = [script.getAttribute('data-lang'), D.documentElement.lang, W.navigator && W.navigator.language]
    .map((l) => String(l || '').slice(0, 2).toLowerCase()).find((l) => LANGS[l]) || 'en';
  const WORDS = LANGS[lang].split('|');
  const t = (key, n) => WORDS[KEYS.indexOf(key)].replace('{n}', n);

  const NICK_KEY = 'chatty:nick:' + siteKey;
  // The last guest token of this site: a reload rejoins as the same guest
  // (not as a newcomer whose own name, still present, looks taken).
  const GUEST_KEY = 'chatty:guest:' + siteKey;
  const OPEN_KEY = 'chatty:open:' + siteKey;
  const REQUEST_TIMEOUT_MS = 20000; // a stalled fetch must not freeze the loops
  const CONNECT_TIMEOUT_MS = 10000; // a WebSocket/EventSource that never opens
  const STALL_MS = 10000;           // an open stream that does not bring our own message
  const LONG_POLL_SECS = 25;
  const CONFIRM_MS = 6000;          // a WebSocket alive this long passed its auth (server: 5 s)
  const AUDIT_MS = 15000;           // a silent stream is checked against a plain poll
  const CLIMB_MS = 300000;          // below the top rung this long: try the top again
  const MAX_SHOWN = 500;            // bound DOM growth in long sessions
  const EMOJI = '\u{1F600} \u{1F602} \u{1F60A} \u{1F60D} \u{1F914} \u{1F62E} \u{1F622} \u{1F44D} \u{1F44E} \u{1F44F} \u{1F64F} \u{1F389} \u2764\uFE0F \u{1F525} \u2705 \u{1F44B}'.split(' ');
  // Close reasons / error codes after which only a fresh join helps.
  // (banned, origin_not_allowed: that join is refused and stops us.)
  const REJOIN = ['invalid_token', 'token_expired', 'missing_token', 'wrong_room', 'invalid_cursor', 'unknown_room', 'reset', 'malformed_json', 'banned', 'origin_not_allowed'];
  const storedOpen = storeGet(OPEN_KEY);

  // All mutable state. The token lives here only (never in host storage).
  const S = {
    nick: '', token: null, guestId: null, roomId: null, cursor: null,
    pollMs: 2000, maxBody: 2000,
    // Bumped on every (re)join and on pagehide. Async loops remember the value
    // they started with and stop when it changes, so two never run at once.
    session: 0, joining: null, joinGen: -1, timer: 0, failures: 0,
    // The transport ladder: index into TRANSPORTS. rungFails counts
    // connections of this rung that never got through while the server was
    // reachable; rungOk says it worked once (then we stay on it).
    rung: topRung, rungFails: 0, rungOk: false, live: null, next: null, liveSeq: 0,
    wsBlocked: false, // the host's CSP refused our WebSocket
    poll: null,       // AbortController of the poll in flight
    presenceMs: 6000, touchedAt: 0, behindCache: false, // see pollOnce
    stalls: 0,        // open streams that did not bring our message back
    climb: 0,         // timer: try the top rung again after a while below it
    active: false, sending: false, focusAfterJoin: false, draft: null, draftId: '',
    // unr: the seqs counted in unread (a deleted one is taken off again).
    open: storedOpen ? storedOpen === '1' : attr('open', ['true', 'false'], 'true') === 'true', unread: 0, unr: new Set(),
    // shown: seq -> its <li>, or null once a moderator deleted it.
    members: new Map(), count: 0, shown: new Map(), floor: 0,
  };
  const seqOf = new WeakMap(); // message <li> -> seq, to keep the list ordered

  // ---------------------------------------------------------------- helpers

  const sleep = (ms) => new Promise((r) => _setTimeout(r, ms));
  // Exponential backoff with full jitter: random in [0, min(30 s, 1 s * 2^n)).
  const backoff = (n) => _random() * Math.min(30000, 1000 * 2 ** Math.min(Math.max(n, 0), 15));
  const list = (x) => (Array.isArray(x) ? x : []);
  const transient = (r) => !r || r.status >= 500 || r.status === 408 || r.status === 429;
  const errCode = (r) => (r && r.data && r.data.error && r.data.error.code) || '';
  const errMsg = (r, fallback) => {
    const m = r && r.data && r.data.error && r.data.error.message;
    return typeof m === 'string' && m ? m : fallback;
  };
  // A refusal in CODES in the visitor's language (with Retry-After's wait),
  // else the server's message.
  const why = (r, fallback) => (CODES.includes(errCode(r))
    ? t(errCode(r)) + (r.retryAfter ? ' ' + t('wait', r.retryAfter) : '') : errMsg(r, fallback));

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
    const ctl = opts.ctl || (_AbortController ? new _AbortController() : null);
    const timer = ctl ? _setTimeout(() => ctl.abort(), opts.timeout || REQUEST_TIMEOUT_MS) : 0;
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
      return {
        status: res.status, data, retryAfter: Number(res.headers.get('Retry-After')) || 0,
        cache: res.headers.get('X-Chatty-Cache'),
      };
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
    return isNaN(d) ? '' : d.toLocaleTimeString(lang, { hour: '2-digit', minute: '2-digit' });
  }

  // A message body as text nodes, with http(s) URLs as links. Nothing is
  // parsed as HTML; a link's href is the URL as the URL parser normalised it,
  // and only http: and https: become links (never javascript:, data:, ...).
  const LINK = /\bhttps?:\/\/[^\s<>"'\x60]+/gi;
  function renderBody(node, text) {
    let last = 0;
    for (const m of text.matchAll(LINK)) {
      const shown = m[0].replace(/[.,;:!?'")\]}]+$/, ''); // trailing punctuation is prose
      let href = null;
      try {
        const u = new _URL(shown);
        // user:password@ in a link is a classic disguise (https://bank@evil).
        if ((u.protocol === 'http:' || u.protocol === 'https:') && !u.username && !u.password) href = u.href;
      } catch (_) { /* not a URL after all */ }
      if (!href) continue;
      node.append(text.slice(last, m.index));
      const a = el('a', null, shown, { rel: 'noopener noreferrer nofollow ugc', target: '_blank' });
      a.href = href;
      node.append(a);
      last = m.index + shown.length;
    }
    node.append(text.slice(last));
  }

  // ------------------------------------------------------------------- styles

  const CSS = `
:host{all:initial;display:block;position:fixed;right:16px;bottom:16px;z-index:2147483000}
:host([data-position=bottom-left]){right:auto;left:16px}
*,*::before,*::after{box-sizing:border-box}
[hidden]{display:none!important}
.box{--bg:#fff;--fg:#1d1d22;--mut:#676772;--bd:#d9d9e0;--ac:#3b5bdb;--acfg:#fff;--own:#e5ebff;--oth:#f1f1f4;--err:#c92a2a;--ok:#2f9e44;--lnk:#1c3faa;
display:flex;flex-direction:column;width:320px;height:420px;max-width:calc(100vw - 32px);max-height:calc(100vh - 32px);
background:var(--bg);color:var(--fg);border:1px solid var(--bd);border-radius:12px;overflow:hidden;
box-shadow:0 8px 28px rgba(0,0,0,.2);font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif,"Apple Color Emoji","Segoe UI Emoji","Noto Color Emoji";text-align:start}
.box.dark{--bg:#1d1e23;--fg:#ececf1;--mut:#a0a0ad;--bd:#3a3b45;--ac:#8098ff;--acfg:#0f1220;--own:#2c3558;--oth:#2a2b32;--err:#ff8a8a;--ok:#69db7c;--lnk:#a5b8ff;color-scheme:dark}
.box.min{width:auto;height:auto;border-radius:20px}
.hd{display:flex;align-items:center;gap:8px;padding:8px 8px 8px 14px;background:var(--ac);color:var(--acfg);cursor:pointer;user-select:none}
.ttl{font-weight:600}
.cnt,.st{font-size:12px;opacity:.9;white-space:nowrap}
.st{margin-inline-start:auto;display:flex;align-items:center;gap:5px}
.st::before{content:"";width:8px;height:8px;border-radius:50%;background:var(--mut)}
.box[data-state=online] .st::before{background:var(--ok)}
.box[data-state=reconnecting] .st::before,.box[data-state=offline] .st::before{background:var(--err)}
.min .st{display:none}
.badge{background:var(--err);color:#fff;border-radius:9px;padding:0 6px;font-size:11px;font-weight:600}
button,input,textarea{font:inherit;color:inherit;margin:0}
button{cursor:pointer;border:0;border-radius:8px;padding:6px 12px;background:var(--ac);color:var(--acfg)}
button:disabled{opacity:.6;cursor:default}
button:focus-visible,input:focus-visible,textarea:focus-visible,a:focus-visible{outline:2px solid var(--ac);outline-offset:1px}
.hd button:focus-visible{outline-color:var(--acfg)}
.tg{background:transparent;color:inherit;padding:0 6px;font-size:18px;line-height:1}
.min .tg{margin-inline-start:auto}
.bd{flex:1;display:flex;flex-direction:column;min-height:0}
input,textarea{background:var(--bg);color:var(--fg);border:1px solid var(--bd);border-radius:8px;padding:6px 8px;min-width:0}
.nf{display:flex;flex-direction:column;gap:8px;padding:16px}
.chat{flex:1;display:flex;flex-direction:column;min-height:0;position:relative}
.mem{list-style:none;margin:0;padding:6px 10px;display:flex;flex-wrap:wrap;gap:4px;max-height:56px;overflow:auto;border-bottom:1px solid var(--bd);font-size:12px;color:var(--mut)}
.mem li{background:var(--oth);border-radius:10px;padding:0 8px;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.mem li.me{font-weight:600;color:var(--fg)}
.msgs{list-style:none;margin:0;padding:8px 10px;flex:1;min-height:0;overflow-y:auto;display:flex;flex-direction:column;gap:6px}
.msg{flex-shrink:0;align-self:flex-start;max-width:88%;background:var(--oth);border-radius:10px;padding:4px 9px;overflow:hidden}
.msg.own{align-self:flex-end;background:var(--own)}
.meta{display:flex;gap:6px;align-items:baseline;font-size:11px;color:var(--mut)}
.nick{font-weight:600;color:var(--fg);display:inline-block;max-width:180px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;vertical-align:bottom}
.body{white-space:pre-wrap;overflow-wrap:anywhere}
.body a{color:var(--lnk);text-decoration:underline}
.body a::after{content:"\\2197";font-size:.8em}
.sf{display:flex;gap:6px;align-items:flex-end;padding:8px;border-top:1px solid var(--bd)}
textarea{flex:1;resize:none;height:38px;max-height:96px}
.eb{background:transparent;color:inherit;padding:6px;font-size:18px;line-height:1}
.emo{position:absolute;bottom:56px;inset-inline:8px;display:grid;grid-template-columns:repeat(8,1fr);gap:2px;padding:6px;background:var(--bg);border:1px solid var(--bd);border-radius:10px;box-shadow:0 4px 14px rgba(0,0,0,.18)}
.emo button{background:transparent;padding:4px 0;font-size:20px;line-height:1.2}
.emo button:hover{background:var(--oth)}
.err{margin:0;color:var(--err);font-size:12px}
.chat>.err{padding:0 10px}
.err:empty{display:none}
@media (max-width:480px){
:host([data-open]){left:0;right:0;bottom:0}
:host([data-open]) .box{width:100vw;max-width:100vw;height:min(85vh,560px);max-height:100vh;border-radius:12px 12px 0 0;border-width:1px 0 0}
textarea,input{font-size:16px}
}
`;

  // ----------------------------------------------------------------------- UI

  const ui = {};

  function buildUI() {
    const host = ui.host = _mk('chatty-widget');
    host.setAttribute('data-position', position);
    const shadow = ui.shadow = host.attachShadow({ mode: 'open' });
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];

    ui.box = el('section', 'box', null, { 'aria-label': t('chat'), lang });
    ui.hd = el('header', 'hd');
    ui.cnt = el('span', 'cnt');
    ui.badge = el('span', 'badge');
    ui.st = el('span', 'st', '', { role: 'status' });
    ui.tg = el('button', 'tg', null, { type: 'button', 'aria-controls': 'chatty-bd' });
    ui.hd.append(el('span', 'ttl', t('chat')), ui.cnt, ui.badge, ui.st, ui.tg);

    ui.bd = el('div', 'bd', null, { id: 'chatty-bd' });

    // Nickname form, shown first and again whenever a join is refused.
    ui.nf = el('form', 'nf');
    ui.nick = el('input', null, null, { type: 'text', name: 'nickname', autocomplete: 'nickname', maxlength: '64', required: '', id: 'chatty-nick', dir: 'auto' });
    ui.nick.value = storeGet(NICK_KEY) || '';
    ui.join = el('button', null, t('join'), { type: 'submit' });
    ui.nfErr = el('p', 'err', '', { role: 'alert' });
    ui.nf.append(el('label', null, t('nick'), { for: 'chatty-nick' }), ui.nick, ui.join, ui.nfErr);

    // Chat view: members, messages, composer.
    ui.chat = el('div', 'chat');
    ui.chat.hidden = true;
    ui.mem = el('ul', 'mem', null, { 'aria-label': t('people') });
    ui.msgs = el('ol', 'msgs', null, { role: 'log', 'aria-live': 'polite', 'aria-label': t('msgs'), tabindex: '0' });
    ui.sfErr = el('p', 'err', '', { role: 'alert' });
    ui.sf = el('form', 'sf');
    ui.input = el('textarea', null, null, { rows: '1', 'aria-label': t('msg'), placeholder: t('ph'), dir: 'auto' });
    ui.eb = el('button', 'eb', '\u{1F642}', { type: 'button', 'aria-label': t('emoji'), 'aria-expanded': 'false', 'aria-controls': 'chatty-emo' });
    ui.send = el('button', null, t('send'), { type: 'submit' });
    ui.sf.append(ui.eb, ui.input, ui.send);
    ui.emo = el('div', 'emo', null, { id: 'chatty-emo', role: 'group', 'aria-label': t('emoji') });
    ui.emo.hidden = true;
    for (const e of EMOJI) ui.emo.append(el('button', null, e, { type: 'button' }));
    ui.chat.append(ui.mem, ui.msgs, ui.sfErr, ui.emo, ui.sf);

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
    ui.eb.addEventListener('click', () => showEmoji(ui.emo.hidden));
    ui.emo.addEventListener('click', (e) => {
      const b = e.target.closest('button');
      if (!b) return;
      const i = ui.input;
      i.setRangeText(b.textContent, i.selectionStart, i.selectionEnd, 'end');
      showEmoji(false);
      i.focus();
    });
    // Escape closes the emoji panel, then minimises (focus stays on the toggle).
    ui.box.addEventListener('keydown', (e) => {
      if (e.key !== 'Escape') return;
      if (!ui.emo.hidden) { showEmoji(false); ui.eb.focus(); } else if (S.open) { setOpen(false, true); ui.tg.focus(); }
    });

    const applyTheme = () => ui.box.classList.toggle('dark', theme === 'dark' || (theme === 'auto' && !!_darkQuery && _darkQuery.matches));
    applyTheme();
    if (_darkQuery && _darkQuery.addEventListener) _darkQuery.addEventListener('change', applyTheme);

    renderMembers();
    setStatus('');
    setOpen(S.open, false);
    D.body.append(host);
  }

  function showEmoji(show) {
    ui.emo.hidden = !show;
    ui.eb.setAttribute('aria-expanded', String(show));
  }

  function setOpen(open, byUser) {
    S.open = open;
    if (byUser) storeSet(OPEN_KEY, open ? '1' : '0');
    ui.box.classList.toggle('min', !open);
    ui.host.toggleAttribute('data-open', open);
    ui.bd.hidden = !open;
    ui.tg.textContent = open ? '\u2013' : '+';
    ui.tg.setAttribute('aria-expanded', String(open));
    ui.tg.setAttribute('aria-label', open ? t('min') : t('open'));
    if (open) {
      S.unread = 0;
      S.unr.clear();
      scrollToBottom();
      // Only move focus when the visitor asked for it, never on page load.
      if (byUser) (ui.chat.hidden ? ui.nick : ui.input).focus();
    } else {
      showEmoji(false);
    }
    renderBadge();
  }

  function renderBadge() {
    ui.badge.textContent = S.unread > 99 ? '99+' : String(S.unread);
    ui.badge.setAttribute('aria-label', t('unread', S.unread));
    ui.badge.hidden = S.open || S.unread === 0;
  }

  // state: '' (not joined), 'connecting', 'online', 'reconnecting', 'offline'.
  function setStatus(state) {
    if (ui.box.dataset.state === state) return;
    ui.box.dataset.state = state;
    ui.st.textContent = state ? t({ connecting: 'conn', reconnecting: 'reconn' }[state] || state) : '';
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
      if (id === S.guestId) li.append(' ' + t('you'));
      items.push(li);
    }
    ui.mem.replaceChildren(...items);
    // A large room lists a sample; the count is exact.
    const n = Math.max(S.count, S.members.size);
    ui.cnt.textContent = S.roomId == null ? '' : t('here', n);
  }

  const nearBottom = () => ui.msgs.scrollHeight - ui.msgs.scrollTop - ui.msgs.clientHeight < 48;
  function scrollToBottom() { ui.msgs.scrollTop = ui.msgs.scrollHeight; }

  // Insert a message in seq order; ignore one already shown (own sends come
  // back through the transport). Returns true when something was added.
  function addMessage(m, live) {
    if (!m || typeof m.seq !== 'number' || S.shown.has(m.seq) || m.seq <= S.floor) return false;
    const own = m.guest_id === S.guestId;
    const li = el('li', own ? 'msg own' : 'msg', null, { 'data-seq': m.seq });
    const meta = el('div', 'meta');
    const time = el('time', null, fmtTime(m.created_at), { datetime: String(m.created_at || '') });
    meta.append(el('bdi', 'nick', String(m.nickname || '')), time);
    const body = el('div', 'body', null, { dir: 'auto' });
    renderBody(body, String(m.body || ''));
    li.append(meta, body);

    const stick = nearBottom();
    let prev = ui.msgs.lastElementChild;
    while (prev && seqOf.get(prev) > m.seq) prev = prev.previousElementSibling;
    ui.msgs.insertBefore(li, prev ? prev.nextSibling : ui.msgs.firstChild);
    seqOf.set(li, m.seq);
    S.shown.set(m.seq, li);

    while (ui.msgs.childElementCount > MAX_SHOWN) {
      const first = ui.msgs.firstElementChild;
      S.floor = Math.max(S.floor, seqOf.get(first));
      S.shown.delete(seqOf.get(first));
      first.remove();
    }
    if (stick || own) scrollToBottom();
    if (live && !own && !S.open) { S.unread++; S.unr.add(m.seq); renderBadge(); }
    return true;
  }

  // A moderator deleted a message: off the list and the unread count. It
  // stays known (null), so a late copy (our send's answer) is not drawn.
  function drop(seq) {
    const li = S.shown.get(seq);
    if (li) li.remove();
    S.shown.set(seq, null);
    if (S.unr.delete(seq)) S.unread--;
  }

  function clearRoom() {
    S.members.clear();
    S.shown.clear();
    S.floor = 0;
    ui.msgs.replaceChildren();
  }

  // ---------------------------------------------------------------- joining

  function onNickSubmit(e) {
    e.preventDefault();
    const nick = ui.nick.value.trim();
    if (!nick) { ui.nfErr.textContent = t('pick'); return; }
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
    stopLive();
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
      setStatus(n || S.token ? 'reconnecting' : 'connecting');
      const req = { site_key: siteKey, nickname: S.nick };
      if (pageRoom) req.page = W.location.pathname;
      const token = S.token || storeGet(GUEST_KEY);
      if (token) req.token = token; // keeps our guest id across rejoins and reloads
      let r = null;
      try { r = await api('POST', '/api/v1/join', { body: req }); } catch (_) { /* network */ }
      if (gen !== S.session) return false;
      if (r && r.status === 200 && r.data && r.data.token && r.data.room) {
        applyJoin(r.data, gen);
        return true;
      }
      if (!transient(r)) {
        // Refused (nickname taken, banned, origin not allowed...): stop, and
        // let the visitor read why and try again (another name).
        S.active = false;
        setStatus('');
        showNickForm(why(r, t('nojoin')));
        if (S.focusAfterJoin && S.open) ui.nick.focus();
        return false;
      }
      if (errCode(r) === 'rate_limited') ui.nfErr.textContent = why(r);
      await sleep(Math.max(backoff(n), r ? r.retryAfter * 1000 : 0));
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
    S.presenceMs = Number(d.presence_timeout_ms) || 3 * S.pollMs;
    S.touchedAt = _now();
    S.maxBody = Number(d.max_body_chars) || 2000;
    S.active = true;
    storeSet(NICK_KEY, S.nick);
    storeSet(GUEST_KEY, S.token);

    // Fresh sync: drop what we had and draw the room as the server sees it.
    clearRoom();
    for (const m of list(d.members)) if (m) S.members.set(m.guest_id, String(m.nickname || ''));
    S.count = Number(d.member_count) || S.members.size;
    S.liveSeq = 0; // a new room numbers from 1
    ui.msgs.setAttribute('aria-busy', 'true'); // don't read out the backlog
    for (const m of list(d.messages)) addMessage(m, false);
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
    connect(gen);
  }

  // A token, room or cursor problem: join again, backing off if it repeats.
  function rejoin(gen) {
    stopLive();
    S.failures++;
    setStatus('reconnecting');
    later(gen, () => join(), S.failures > 1 ? backoff(S.failures - 1) : 0);
  }

  // ------------------------------------------------------------- transports
  //
  // The ladder: WebSocket -> SSE -> long-poll -> poll. Every rung carries the
  // same batches and cursors, so moving between them loses and repeats
  // nothing. A rung is left for the next one down when two of its connections
  // in a row fail to get through while the server answers a plain poll (a
  // proxy that drops Upgrade, a CSP, a firewall), when the node refuses it for
  // capacity, or when an open stream does not bring our own message within
  // STALL_MS (a buffering proxy). A rung that worked once is kept: its later
  // failures are reconnected with jittered backoff. The ladder is walked once
  // per page; it is not climbed back up.

  function connect(gen) {
    if (gen !== S.session) return;
    stopLive();
    while ((S.rung === 0 && (!_WebSocket || S.wsBlocked)) || (S.rung === 1 && !_EventSource)) S.rung++;
    ui.box.dataset.transport = TRANSPORTS[S.rung];
    [openWebSocket, openEventSource, longPoll, poll][S.rung](gen);
  }

  function stopLive() {
    _clearTimeout(S.timer);
    S.next = null;
    const close = S.live;
    S.live = null;
    if (close) close();
    // A held long-poll of an ended loop must not linger beside the next one
    // (it holds a connection slot, and one of the browser's 6 per host).
    const ctl = S.poll;
    S.poll = null;
    if (ctl) { ctl.stopped = true; ctl.abort(); }
  }

  // Go down a rung. After CLIMB_MS below the top, try the top again: a
  // full node empties, a visitor moves to another network.
  function fallDown(gen) {
    S.rung = Math.min(S.rung + 1, 3);
    S.rungFails = 0;
    S.rungOk = false;
    S.stalls = 0;
    _clearTimeout(S.climb);
    S.climb = _setTimeout(() => {
      if (!S.active || S.joining || S.rung === topRung) return;
      S.rung = topRung;
      S.rungFails = 0;
      S.rungOk = false;
      connect(S.session);
    }, CLIMB_MS);
    connect(gen);
  }

  // Apply one batch {events, cursor, more}. False when it ended the session
  // (a reset: we join again) or the session is already over. A batch that is
  // not an object (a proxy's error page...) is skipped: the next one's
  // cursor covers it.
  function onBatch(gen, b) {
    if (gen !== S.session) return false;
    if (!b || typeof b !== 'object') return true;
    if (!applyEvents(b.events)) { rejoin(gen); return false; }
    if (typeof b.cursor === 'string') S.cursor = b.cursor;
    setStatus('online');
    return true;
  }

  // One plain poll (or long-poll when wait). Returns 'ok', 'more' (poll
  // again at once), 'retry' (the server or a proxy answered an error to try
  // again), 'down' (no answer: network, timeout), 'full' (the node refuses to
  // hold a connection) or 'stale' (superseded, or a rejoin was started).
  // With peek, a 200 is not applied: its highest message seq is returned.
  //
  // Presence: the server counts a guest present while its polls reach it.
  // Behind nginx's poll cache (answers marked X-Chatty-Cache) most do not,
  // so a poll due to reach the server too late is sent with touch=1, which
  // the cache always passes on.
  async function pollOnce(gen, wait, peek) {
    const ctl = _AbortController ? new _AbortController() : null;
    S.poll = ctl;
    const touch = !wait && S.behindCache && _now() - S.touchedAt + S.pollMs >= S.presenceMs / 2;
    let r = null;
    try {
      r = await api('GET', '/api/v1/rooms/' + S.roomId + '/events?cursor=' + _enc(S.cursor) +
        (wait ? '&wait=' + wait : '') + (touch ? '&touch=1' : ''),
        { token: S.token, etag: S.cursor, timeout: wait * 1000 + REQUEST_TIMEOUT_MS, ctl });
    } catch (_) { /* network, timeout */ }
    if (S.poll === ctl) S.poll = null;
    if (gen !== S.session || (ctl && ctl.stopped)) return 'stale';
    if (r && r.status < 400) {
      if (r.cache) S.behindCache = true;
      if (!r.cache || r.cache === 'MISS' || r.cache === 'EXPIRED' || r.cache === 'BYPASS') S.touchedAt = _now();
    }
    if (r && r.status === 304) { if (!peek) setStatus('online'); return 'ok'; }
    if (r && r.status === 200) {
      if (!r.data || typeof r.data !== 'object') return 'retry';
      if (peek) return list(r.data.events).reduce((n, ev) => Math.max(n, (ev && ev.message && ev.message.seq) || 0), 0);
      if (!onBatch(gen, r.data)) return 'stale';
      return r.data.more ? 'more' : 'ok';
    }
    if (!r) return 'down';
    if (transient(r)) {
      const code = errCode(r);
      return code === 'node_full' || code === 'too_many_connections' ? 'full' : 'retry';
    }
    // 401 invalid_token/token_expired, 403 wrong_room, a bad cursor or a
    // vanished room: a fresh join fixes them.
    rejoin(gen);
    return 'stale';
  }

  // The next step of a loop, after ms. Only one is ever pending (S.next),
  // so nothing can start a second loop beside the first.
  function later(gen, fn, ms) {
    _clearTimeout(S.timer);
    S.next = fn;
    S.timer = _setTimeout(() => { S.next = null; if (gen === S.session) fn(gen); }, ms);
  }

  function retryLater(gen, fn) {
    S.failures++;
    setStatus('reconnecting');
    later(gen, fn, backoff(S.failures - 1));
  }

  // Rung 4: poll every poll_interval_ms; requests never overlap.
  async function poll(gen) {
    const res = await pollOnce(gen, 0);
    if (res === 'stale') return;
    if (res === 'retry' || res === 'full' || res === 'down') { retryLater(gen, poll); return; }
    S.failures = 0;
    later(gen, poll, res === 'more' ? 0 : S.pollMs);
  }

  // Rung 3: a poll held by the server until something happens.
  async function longPoll(gen) {
    const res = await pollOnce(gen, LONG_POLL_SECS);
    if (res === 'stale') return;
    if (res === 'full') { fallDown(gen); return; }
    if (res === 'retry' || res === 'down') {
      // Held requests failing while a plain poll goes through: something on
      // the way cuts them (a proxy's short read timeout).
      const probe = await pollOnce(gen, 0);
      if (probe === 'stale') return;
      if (probe !== 'down' && probe !== 'retry' && ++S.rungFails >= (S.rungOk ? 4 : 2)) { fallDown(gen); return; }
      retryLater(gen, longPoll);
      return;
    }
    S.failures = 0;
    S.rungOk = true;
    S.rungFails = 0;
    later(gen, longPoll, 0);
  }

  // A WebSocket or EventSource connection of this session ended.
  // confirmedAt: when it was known to work (SSE: opened; WebSocket: first
  // frame, or alive past the server's auth timeout), else 0. code: the
  // close reason, if any.
  async function lost(gen, confirmedAt, code) {
    if (gen !== S.session) return;
    stopLive();
    if (REJOIN.includes(code)) { rejoin(gen); return; }
    if (S.rung === 0 && S.wsBlocked) { fallDown(gen); return; }
    if (confirmedAt) {
      S.rungOk = true;
      S.rungFails = 0;
      if (_now() - confirmedAt > 30000) S.failures = 0; // it lived: start backoff afresh
    } else {
      // It never worked, and a browser does not say why. A plain poll does:
      // it reports token and room errors, and brings the news meanwhile.
      // Only a server that answers it counts against the transport.
      setStatus('reconnecting');
      const res = await pollOnce(gen, 0);
      if (res === 'stale') return;
      if ((S.rung === 0 && S.wsBlocked) ||
          (res !== 'retry' && res !== 'down' && ++S.rungFails >= (S.rungOk ? 4 : 2))) { fallDown(gen); return; }
    }
    S.failures++;
    setStatus('reconnecting');
    // The node is leaving: reconnect at once, spread over 1 s (the first
    // time; a node that keeps saying so gets the usual backoff).
    later(gen, connect, code === 'draining' && S.failures < 3 ? _random() * 1000 : backoff(S.failures - 1));
  }

  // A stream that has brought nothing since it opened is checked against a
  // plain poll (not applied, only looked at) after 15 s, 1 min and 4 min:
  // if the poll has a message the stream has not delivered, the stream must
  // deliver it soon (watchDelivery). A quiet room costs three polls.
  function audit(gen, isOpen, delivered, n = 0) {
    if (n > 2) return;
    _setTimeout(async () => {
      if (gen !== S.session || !isOpen() || delivered()) return;
      const seq = await pollOnce(gen, 0, true);
      if (typeof seq === 'number' && seq > S.liveSeq) watchDelivery(seq);
      if (typeof seq === 'number' || seq === 'ok') audit(gen, isOpen, delivered, n + 1);
    }, AUDIT_MS * 4 ** n);
  }

  // Rung 1: WebSocket, authenticated by its first message (URLs get logged).
  function openWebSocket(gen) {
    let ws = null;
    let openedAt = 0;
    let confirmedAt = 0;
    let frames = 0;
    let done = false;
    const confirm = () => { if (!confirmedAt && !done) { confirmedAt = _now(); setStatus('online'); } };
    const end = (code) => {
      if (done) return;
      done = true;
      _clearTimeout(timer);
      try { ws.close(); } catch (_) { /* already closed */ }
      lost(gen, confirmedAt, code);
    };
    const timer = _setTimeout(() => { if (!openedAt) end(''); }, CONNECT_TIMEOUT_MS);
    try {
      ws = new _WebSocket(wsBase + '/api/v1/rooms/' + S.roomId + '/ws');
    } catch (_) { // blocked by a policy, before any network
      done = true;
      _clearTimeout(timer);
      lost(gen, 0, '');
      return;
    }
    S.live = () => { done = true; _clearTimeout(timer); try { ws.close(1000); } catch (_) { /* closed */ } };
    ws.onopen = () => {
      openedAt = _now();
      ws.send(_stringify({ type: 'auth', token: S.token, cursor: S.cursor }));
      // Refusals of the auth come as a close within the server's timeout;
      // a connection alive past it was accepted.
      _setTimeout(confirm, CONFIRM_MS);
      audit(gen, () => !done, () => frames > 0);
    };
    ws.onmessage = (e) => {
      if (done || typeof e.data !== 'string') return;
      let b = null;
      try { b = _parse(e.data); } catch (_) { return; }
      frames++;
      confirm();
      if (!onBatch(gen, b)) { done = true; try { ws.close(1000); } catch (_) { /* closed */ } }
    };
    // 1008 carries an error code as its reason, 1012 "draining"; others
    // (1001 idle, 1008 slow_consumer, 1006 broken) reconnect with the cursor.
    ws.onclose = (e) => end(e.code === 1012 ? 'draining' : String(e.reason || ''));
  }

  // Rung 2: Server-Sent Events. The token must be in the URL (EventSource
  // cannot send headers). We close and reopen it ourselves, under our own
  // backoff, rather than let it retry every 2 s forever.
  function openEventSource(gen) {
    let es = null;
    let openedAt = 0;
    let done = false;
    const end = (code) => {
      if (done) return;
      done = true;
      _clearTimeout(timer);
      try { es.close(); } catch (_) { /* closed */ }
      lost(gen, openedAt, code);
    };
    const timer = _setTimeout(() => { if (!openedAt) end(''); }, CONNECT_TIMEOUT_MS);
    try {
      es = new _EventSource(base + '/api/v1/rooms/' + S.roomId + '/sse?token=' + _enc(S.token) + '&cursor=' + _enc(S.cursor));
    } catch (_) {
      done = true;
      _clearTimeout(timer);
      lost(gen, 0, '');
      return;
    }
    S.live = () => { done = true; _clearTimeout(timer); es.close(); };
    let frames = 0;
    es.onopen = () => {
      // The stream starts only after every check passed: open means accepted.
      if (!openedAt) audit(gen, () => !done, () => frames > 0);
      openedAt = openedAt || _now();
      setStatus('online');
    };
    es.onmessage = (e) => {
      if (done) return;
      let b = null;
      try { b = _parse(e.data); } catch (_) { return; }
      frames++;
      if (!onBatch(gen, b)) { done = true; es.close(); }
    };
    es.addEventListener('close', (e) => {
      let reason = '';
      try { reason = String(_parse(e.data).reason || ''); } catch (_) { /* no reason */ }
      end(reason);
    });
    es.onerror = () => end('');
  }

  // Apply events in order. Returns false on reset (nothing after it
  // applies; the caller joins again).
  function applyEvents(events) {
    let membersChanged = false;
    for (const ev of list(events)) {
      if (!ev) continue;
      switch (ev.type) {
        case 'message':
          if (ev.message && ev.message.seq > S.liveSeq) S.liveSeq = ev.message.seq;
          addMessage(ev.message, true);
          break;
        case 'join':
          if (ev.member) {
            if (!S.members.has(ev.member.guest_id)) S.count++;
            S.members.set(ev.member.guest_id, String(ev.member.nickname || '')); membersChanged = true;
          }
          break;
        case 'leave':
          if (ev.member) { S.members.delete(ev.member.guest_id); S.count = Math.max(0, S.count - 1); membersChanged = true; }
          break;
        case 'members':
          S.members.clear();
          for (const m of list(ev.members)) if (m) S.members.set(m.guest_id, String(m.nickname || ''));
          S.count = Number(ev.count) || S.members.size;
          membersChanged = true;
          break;
        case 'delete':
          drop(ev.deleted_seq);
          renderBadge();
          break;
        case 'clear': { // every message before it
          const c = Number(ev.seq) || 0;
          S.floor = Math.max(S.floor, c);
          for (const s of [...S.shown.keys(), ...S.unr]) if (s < c) { drop(s); S.shown.delete(s); }
          renderBadge();
          break;
        }
        case 'reset':
          return false;
        default: // unknown event types from a newer server are skipped
      }
    }
    if (membersChanged) renderMembers();
    return true;
  }

  // An open stream must bring back what we sent. If it has not after
  // STALL_MS, something between us and the node holds it: go down a rung.
  // A rung that worked before gets one fresh connection first (a socket
  // left half-open by a laptop's sleep looks the same).
  function watchDelivery(seq) {
    const gen = S.session;
    const rung = S.rung;
    const live = S.live;
    if (rung > 1 || !live) return;
    _setTimeout(() => {
      if (gen !== S.session || rung !== S.rung || S.live !== live) return;
      if (S.liveSeq >= seq) { S.stalls = 0; return; }
      if (S.rungOk && ++S.stalls < 2) connect(gen);
      else fallDown(gen);
    }, STALL_MS);
  }

  // ------------------------------------------------------------------ send

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
    showEmoji(false);
    // The same text sent again (after a refusal, or an answer that never
    // came) keeps its id: if it was stored after all, it is not stored twice.
    if (S.draft !== text) { S.draft = text; S.draftId = newId(); }
    const body = { client_message_id: S.draftId, body: text };
    try {
      for (let attempt = 0; ; attempt++) {
        if (S.joining) await S.joining;
        if (!S.token || S.roomId == null) { ui.sfErr.textContent = t('notconn'); return; }
        let r = null;
        try {
          r = await api('POST', '/api/v1/rooms/' + S.roomId + '/messages', { token: S.token, body });
        } catch (_) { /* network */ }
        if (r && (r.status === 200 || r.status === 201) && r.data && r.data.message) {
          addMessage(r.data.message, false);
          watchDelivery(r.data.message.seq);
          ui.input.value = '';
          S.draft = null;
          return;
        }
        const auth = r && (r.status === 401 || errCode(r) === 'wrong_room' || errCode(r) === 'unknown_room');
        // A refusal in CODES is not retried: the text stays, with the reason.
        if (attempt < 3 && (auth || (transient(r) && !CODES.includes(errCode(r))))) {
          // A join that lost to a newer one (S.joining) is not a failure.
          if (auth) { if (!(await join()) && !S.joining) { ui.sfErr.textContent = t('notconn'); return; } }
          else await sleep(r && r.retryAfter ? r.retryAfter * 1000 : 500 + backoff(attempt));
          continue;
        }
        ui.sfErr.textContent = r ? why(r, t('notsent')) : t('unreach');
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

  // ------------------------------------------------------------ page life

  // Say goodbye when the page goes away (or into the back/forward cache):
  // close the push connection first, then leave. Come back if the page is
  // restored from that cache.
  _on('pagehide', () => {
    if (!S.active) return;
    S.session++;
    stopLive();
    if (!S.token || S.roomId == null) return;
    try {
      _fetch(base + '/api/v1/rooms/' + S.roomId + '/leave', {
        method: 'POST', keepalive: true, credentials: 'omit', cache: 'no-store',
        headers: { Authorization: 'Bearer ' + S.token },
      }).catch(() => {});
    } catch (_) { /* ignore */ }
  });
  _on('pageshow', (e) => { if (e.persisted && S.active) join(); });
  // The network is back: reconnect now rather than at the end of a backoff.
  // The network is back: reconnect now (from the cursor: nothing is lost)
  // rather than at the end of a backoff, or over a socket that may be dead.
  _on('online', () => {
    if (!S.active || S.joining) return;
    S.failures = 0;
    if (S.next) later(S.session, S.next, 0);
    else if (S.live) connect(S.session);
  });
  _on('offline', () => { if (S.active) setStatus('offline'); });

  // A host CSP without our ws(s):// origin in connect-src blocks the
  // WebSocket; the browser tells the page, and we take the next rung at once
  // instead of trying again (and reporting a second violation).
  D.addEventListener('securitypolicyviolation', (e) => {
    const uri = String(e.blockedURI || '');
    if (uri !== wsBase && !uri.startsWith(wsBase + '/')) return;
    S.wsBlocked = true;
    // Chromium may never fire close on a WebSocket its CSP refused.
    if (S.active && S.rung === 0 && !S.joining) connect(S.session);
  });

  // An async script may run before <body> exists.
  if (D.body) buildUI();
  else D.addEventListener('DOMContentLoaded', buildUI, { once: true });
})();
