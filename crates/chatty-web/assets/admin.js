/*! Chatty moderation page (MIT). Served at /admin on Chatty's own origin, never
 * inside the widget. Talks to /api/v1/admin with a bearer token kept in
 * sessionStorage. Everything the server sends (messages, nicknames, reasons,
 * words, labels) is hostile input: it only ever reaches the page through
 * textContent, attribute values or form values, never as HTML. */
(() => {
  'use strict';

  const API = '/api/v1/admin';
  const TOKEN_KEY = 'chatty-admin-token';
  const TIMEOUT_MS = 10000;
  const POLL_MS = 5000;
  const PAGE = 50;
  const MAX_SLOW = 21600; // the server's limit: six hours
  const DURATIONS = [[600, '10 minutes'], [3600, '1 hour'], [86400, '24 hours'], [604800, '7 days'], [2592000, '30 days']];

  const D = document;
  const $ = (id) => D.getElementById(id);
  const enc = encodeURIComponent;
  const list = (x) => (Array.isArray(x) ? x : []);
  const str = (x) => (x == null ? '' : String(x));
  const isId = (x) => Number.isSafeInteger(x) && x >= 0;
  const short = (x) => (str(x).length > 10 ? str(x).slice(0, 8) + '\u2026' : str(x));
  const lines = (text) => [...new Set(text.split('\n').map((l) => l.trim()).filter(Boolean))];
  const quote = (x) => '\u201c' + str(x) + '\u201d';

  // All mutable state. `gen` changes on sign-in, sign-out and site switch,
  // `roomGen` on every room switch: an async call remembers the value it
  // started with and drops its answer when it changed meanwhile.
  const S = {
    token: '', sites: [], site: null, rooms: [], room: null, gen: 0, roomGen: 0,
    shown: new Map(),    // seq -> <li> of the messages on screen
    gone: new Set(),     // seqs deleted here (a poll answer in flight must not bring them back)
    clearedBelow: 0,     // after "Clear room": seqs below this are gone
    moreOlder: false, pollTimer: 0, pollBusy: false,
    auditOldest: null, isAdmin: false, banForm: null, modDirty: false,
  };

  // ---------------------------------------------------------------- helpers

  function el(tag, cls, text, attrs) {
    const e = D.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    if (attrs) for (const k of Object.keys(attrs)) e.setAttribute(k, attrs[k]);
    return e;
  }

  function button(text, onClick, cls, testid) {
    const b = el('button', cls, text, { type: 'button' });
    if (testid) b.setAttribute('data-testid', testid);
    b.addEventListener('click', onClick);
    return b;
  }

  function wrap(tag, cls, attrs, ...children) {
    const e = el(tag, cls, null, attrs);
    e.append(...children);
    return e;
  }

  function fmtTime(iso) {
    const d = new Date(str(iso));
    return isNaN(d) ? str(iso) : d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
  }
  const timeEl = (iso) => el('time', null, fmtTime(iso), { datetime: str(iso) });

  function storeGet() { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; } }
  function storeSet(v) { try { sessionStorage.setItem(TOKEN_KEY, v); } catch (_) { /* storage blocked */ } }
  function storeDel() { try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage blocked */ } }

  let lastStatus = '';
  function setStatus(text, isError, quiet) {
    // A poll that fails the same way every 5 s must not re-announce itself.
    if (quiet && text === lastStatus) return;
    lastStatus = text;
    $('status').textContent = text;
    $('status').classList.toggle('error', !!isError);
  }

  const apiError = (status, code, message) => Object.assign(new Error(message), { status, code, api: true });

  // The one request helper. Resolves to the parsed JSON body (the raw text
  // with raw = true; null for 204); rejects with an apiError that carries the
  // server's error.code and error.message.
  async function api(method, path, body, raw) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    let res;
    let text = '';
    try {
      res = await fetch(API + path, {
        method,
        headers: { Authorization: 'Bearer ' + S.token, 'Content-Type': 'application/json' },
        cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctl.signal,
      });
      if (res.status !== 204) text = await res.text();
    } catch (_) {
      throw ctl.signal.aborted
        ? apiError(0, 'timeout', 'The server did not answer within 10 seconds.')
        : apiError(0, 'network_error', 'Could not reach the server.');
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!res.ok) {
      const err = (data && typeof data.error === 'object' && data.error) || {};
      throw apiError(res.status, str(err.code) || 'http_' + res.status, str(err.message) || 'HTTP error ' + res.status + '.');
    }
    return raw ? text : data;
  }

  // Every failure ends here. A 401 means the token is no good any more
  // (revoked, wrong), so it ends the session and says why.
  function fail(what, e, quiet) {
    if (!e || !e.api) e = apiError(0, 'client_error', str(e && e.message) || 'Unexpected error.');
    const text = what + ': ' + e.message + ' (' + e.code + ')';
    if (e.status === 401) signOut(text);
    else setStatus(text, true, quiet);
  }

  // GET for the current site; render(data) runs only if the site (and, with
  // room = true, the room) is still the one shown.
  async function load(what, path, render, quiet, room) {
    const g = S.gen;
    const rg = S.roomGen;
    const alive = () => g === S.gen && (!room || rg === S.roomGen);
    try {
      const data = await api('GET', path);
      if (alive()) render(data || {});
    } catch (e) {
      if (alive()) fail('Could not load ' + what, e, quiet);
    }
  }

  // A change made from a button: the button is disabled while it runs, the
  // audit log is reloaded after it. Resolves to the answer ({} for 204), or
  // to null when it failed (the status line then says why) or when the site
  // shown changed meanwhile (nothing left to update).
  async function act(btn, what, method, path, body) {
    const g = S.gen;
    btn.disabled = true;
    try {
      const data = await api(method, path, body);
      if (g !== S.gen) return null;
      loadAudit(false);
      return data || {};
    } catch (e) {
      if (g === S.gen) fail('Could not ' + what, e);
      return null;
    } finally {
      btn.disabled = false;
    }
  }

  const sitePath = () => '/sites/' + enc(S.site.key);
  const roomPath = (room) => sitePath() + '/rooms/' + enc(room.id);
  const roomLabel = (room) => (room.page == null || room.page === '' ? 'Whole site' : str(room.page));
  function roomName(id) {
    const r = S.rooms.find((x) => x.id === id);
    return r ? roomLabel(r) : 'room ' + id;
  }

  // -------------------------------------------------------- sign-in / sites

  async function signIn(token) {
    S.token = token;
    const g = ++S.gen;
    setStatus('Signing in\u2026');
    $('sign-in').disabled = true;
    let data;
    try {
      data = await api('GET', '/sites');
    } catch (e) {
      if (g !== S.gen) return;
      if (e.status !== 401) S.token = ''; // kept in the field, not stored: retry later
      fail('Sign-in failed', e);
      return;
    } finally {
      $('sign-in').disabled = false;
    }
    if (g !== S.gen) return;
    storeSet(token);
    $('token').value = '';
    $('signin-panel').hidden = true;
    $('sign-out').hidden = false;
    S.sites = list(data && data.sites).filter((s) => s && typeof s.key === 'string');
    if (S.sites.length === 1) openSite(S.sites[0]);
    else showSitePicker();
  }

  function signOut(message) {
    S.token = '';
    storeDel();
    leaveSite();
    S.sites = [];
    $('site-list').replaceChildren();
    for (const id of ['sites-panel', 'site-view', 'sign-out', 'switch-site']) $(id).hidden = true;
    $('signin-panel').hidden = false;
    $('token').value = '';
    setStatus(message || 'Signed out.', !!message);
    $('token').focus();
  }

  function showSitePicker() {
    leaveSite();
    $('site-view').hidden = true;
    $('switch-site').hidden = true;
    $('sites-panel').hidden = false;
    $('site-list').replaceChildren(...S.sites.map((site) => wrap('li', null, null, button(
      str(site.name) + ' (' + site.key + ')' + (site.disabled ? ' \u2014 disabled' : ''),
      () => openSite(site), 'site-button', 'site-' + site.key))));
    if (!S.sites.length) setStatus('This token gives access to no site.', true);
    else setStatus('Choose one of ' + S.sites.length + ' sites.');
    $('sites-heading').focus();
  }

  // Forget everything shown about the current site.
  function leaveSite() {
    S.gen++;
    showRoom(null);
    S.site = null; S.rooms = []; S.isAdmin = false;
    for (const id of ['room-list', 'ban-list', 'audit-list', 'token-list', 'export-list']) $(id).replaceChildren();
    $('settings-section').hidden = true;
    hideSecret();
  }

  function openSite(site) {
    leaveSite();
    $('sites-panel').hidden = true;
    $('site-view').hidden = false;
    $('switch-site').hidden = S.sites.length < 2;
    renderSite(site, true);
    setStatus('Site ' + quote(site.name) + ' opened.');
    $('site-title').focus();
    load('the site', sitePath(), (d) => { if (d.site) renderSite(d.site, false); });
    loadRooms();
    loadBans();
    loadAudit(false);
    checkAdmin();
  }

  // Show a site object (the answer of every call that changes the site).
  function renderSite(site, refill) {
    S.site = site;
    const i = S.sites.findIndex((s) => s.key === site.key);
    if (i >= 0) S.sites[i] = site;
    $('site-title').textContent = str(site.name) || site.key;
    $('site-meta').textContent = 'Key ' + site.key + (site.disabled ? ' \u2014 disabled' : '') +
      (site.created_at ? ' \u2014 created ' + fmtTime(site.created_at) : '');
    if (refill || !S.modDirty) fillModeration(site);
    if (S.isAdmin) fillSettings(site);
  }

  // ------------------------------------------------------------------ rooms

  function loadRooms() {
    return load('rooms', sitePath() + '/rooms', (d) => {
      // The site room first, then page rooms by path.
      S.rooms = list(d.rooms).filter((r) => r && isId(r.id))
        .sort((a, b) => (a.page == null ? -1 : b.page == null ? 1 : str(a.page).localeCompare(str(b.page))));
      $('room-list').replaceChildren(...S.rooms.map((room) => {
        const b = button(roomLabel(room), () => showRoom(room), 'room-button', 'room-' + room.id);
        b.setAttribute('aria-pressed', String(!!S.room && S.room.id === room.id));
        if (isId(room.last_seq)) b.append(el('span', 'muted small', ' #' + room.last_seq));
        return wrap('li', null, null, b);
      }));
      $('rooms-empty').hidden = S.rooms.length > 0;
      renderExports();
    });
  }

  function showRoom(room) {
    clearInterval(S.pollTimer);
    closeBanForm(false);
    S.room = room;
    S.roomGen++;
    S.shown.clear(); S.gone.clear(); S.clearedBelow = 0; S.moreOlder = false;
    $('message-list').replaceChildren();
    for (const b of $('room-list').querySelectorAll('button')) {
      b.setAttribute('aria-pressed', String(!!room && b.getAttribute('data-testid') === 'room-' + room.id));
    }
    $('messages-heading').textContent = room ? 'Messages \u2014 ' + roomLabel(room) : 'Messages';
    $('messages-hint').hidden = !!room;
    $('messages-tools').hidden = !room;
    $('messages-empty').hidden = true;
    $('messages-older').hidden = true;
    if (!room) return;
    loadMessages(false, false);
    S.pollTimer = setInterval(pollTick, POLL_MS);
  }

  // --------------------------------------------------------------- messages

  function pollTick() {
    if (D.visibilityState !== 'visible' || !S.room || S.pollBusy) return;
    S.pollBusy = true;
    loadMessages(false, true).finally(() => { S.pollBusy = false; });
  }

  // older = false: the newest page (first load and every poll), merged into
  // what is shown; older = true: the page before the oldest message shown.
  function loadMessages(older, quiet) {
    const room = S.room;
    let q = '?limit=' + PAGE;
    if (older) q += '&before=' + enc(Math.min(...S.shown.keys()));
    return load('messages', roomPath(room) + '/messages' + q, (d) => {
      const msgs = list(d.messages).filter((m) => m && isId(m.seq));
      const full = msgs.length >= PAGE;
      if (older) {
        S.moreOlder = full;
      } else {
        // A message shown inside the range this page covers but missing from
        // it was deleted (by another moderator, or the room was cleared).
        const seqs = new Set(msgs.map((m) => m.seq));
        const floor = full ? Math.min(...seqs) : -Infinity;
        for (const seq of [...S.shown.keys()]) if (seq >= floor && !seqs.has(seq)) removeMessage(seq);
        if (!full) S.moreOlder = false;
        else if (!S.shown.size) S.moreOlder = true;
        if (lastStatus.startsWith('Could not load messages')) setStatus('Messages loaded again.');
      }
      for (const m of msgs) addMessage(m, room);
      updateMessageFooter();
    }, quiet, true);
  }

  function updateMessageFooter() {
    $('messages-older').hidden = !S.moreOlder;
    $('messages-empty').hidden = S.shown.size > 0;
  }

  function addMessage(m, room) {
    if (S.shown.has(m.seq) || S.gone.has(m.seq) || m.seq < S.clearedBelow) return;
    // Keep the list ordered, newest first: insert before the next lower seq.
    let next = null;
    for (const [seq, row] of S.shown) if (seq < m.seq && (!next || seq > next.seq)) next = { seq, row };
    const row = messageRow(m, room);
    $('message-list').insertBefore(row, next ? next.row : null);
    S.shown.set(m.seq, row);
  }

  function removeMessage(seq) {
    const row = S.shown.get(seq);
    if (!row) return;
    if (S.banForm && S.banForm.row === row) closeBanForm(false);
    row.remove();
    S.shown.delete(seq);
  }

  function messageRow(m, room) {
    const seq = m.seq;
    const row = el('li', 'message', null, { 'data-testid': 'message-' + seq });
    const meta = wrap('div', 'meta', null, timeEl(m.created_at), ' ', el('bdi', 'nick', str(m.nickname) || '(no nickname)'), ' ',
      el('span', 'id', 'guest ' + (short(m.guest_id) || '\u2014'), { title: 'Guest id ' + str(m.guest_id) }), ' ',
      el('span', 'id', 'IP ' + (short(m.ip_hash) || '\u2014'), { title: 'IP hash ' + str(m.ip_hash) }), ' ',
      el('span', 'muted small', '#' + seq));
    const actions = el('div', 'row actions');
    const del = button('Delete', () => deleteMessage(room, seq, del), 'danger', 'delete-' + seq);
    const ban = button('Ban\u2026', () => openBanForm(row, m, ban), null, 'ban-' + seq);
    ban.setAttribute('aria-expanded', 'false');
    ban.disabled = !m.guest_id && !m.ip_hash;
    actions.append(del, ban);
    row.append(meta, el('p', 'body', str(m.body), { dir: 'auto' }), actions);
    return row;
  }

  async function deleteMessage(room, seq, btn) {
    const rg = S.roomGen;
    if (!await act(btn, 'delete message #' + seq, 'DELETE', roomPath(room) + '/messages/' + enc(seq))) return;
    if (rg === S.roomGen) {
      S.gone.add(seq);
      removeMessage(seq);
      updateMessageFooter();
    }
    setStatus('Message #' + seq + ' deleted.');
  }

  async function clearRoom() {
    const room = S.room;
    if (!room || !window.confirm('Delete every message in ' + quote(roomLabel(room)) + '? This cannot be undone.')) return;
    const rg = S.roomGen;
    const data = await act($('clear-room'), 'clear the room', 'POST', roomPath(room) + '/clear');
    if (!data) return;
    if (rg === S.roomGen) {
      if (isId(data.event_seq)) S.clearedBelow = data.event_seq;
      for (const seq of [...S.shown.keys()]) removeMessage(seq);
      S.moreOlder = false;
      updateMessageFooter();
    }
    setStatus('Room ' + quote(roomLabel(room)) + ' cleared.');
  }

  // -------------------------------------------------------------------- bans

  function closeBanForm(refocus) {
    const f = S.banForm;
    if (!f) return;
    S.banForm = null;
    f.form.remove();
    f.opener.setAttribute('aria-expanded', 'false');
    if (refocus && f.opener.isConnected) f.opener.focus();
  }

  // The small inline form under a message; the "Ban…" button toggles it.
  function openBanForm(row, m, opener) {
    const wasOpen = S.banForm && S.banForm.row === row;
    closeBanForm(false);
    if (wasOpen) return;
    const form = el('form', 'ban-form', null, { 'aria-label': 'Ban the author of message #' + m.seq, novalidate: '' });
    const check = (text, value, testid, on) => {
      const label = el('label', 'check');
      const box = el('input', null, null, { type: 'checkbox', 'data-testid': testid });
      box.checked = on && !!value;
      box.disabled = !value;
      label.append(box, ' ' + text + ' ' + (short(value) || '(unknown)'));
      if (value) label.title = str(value);
      form.append(label);
      return box;
    };
    // The IP hash is opt-in: behind a shared address (an office, a mobile
    // carrier) banning it bans everyone there.
    const guest = check('Guest id', m.guest_id, 'ban-guest', true);
    const ip = check('IP hash', m.ip_hash, 'ban-ip', false);
    const dur = el('select', null, null, { 'data-testid': 'ban-duration' });
    dur.append(...DURATIONS.map(([secs, text]) => el('option', null, text, { value: String(secs) })));
    dur.value = '3600';
    // The server takes at most 200 characters (more is refused as invalid_request).
    const reason = el('input', null, null, { type: 'text', maxlength: '200', 'data-testid': 'ban-reason' });
    const ok = el('button', 'danger', 'Ban', { type: 'submit', 'data-testid': 'ban-confirm' });
    form.append(wrap('label', 'field', null, 'Duration', dur), wrap('label', 'field', null, 'Reason (optional)', reason),
      wrap('div', 'row', null, ok, button('Cancel', () => closeBanForm(true), null, 'ban-cancel')));
    form.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') { ev.preventDefault(); closeBanForm(true); } });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const body = { duration_secs: Number(dur.value) };
      if (guest.checked) body.guest_id = str(m.guest_id);
      if (ip.checked) body.ip_hash = str(m.ip_hash);
      if (!body.guest_id && !body.ip_hash) { setStatus('Choose the guest id, the IP hash or both.', true); return; }
      if (reason.value.trim()) body.reason = reason.value.trim();
      const data = await act(ok, 'ban', 'POST', sitePath() + '/bans', body);
      if (!data) return;
      const until = data.ban && data.ban.expires_at ? ' until ' + fmtTime(data.ban.expires_at) : '';
      closeBanForm(true);
      setStatus('Banned ' + [body.guest_id && 'guest ' + short(body.guest_id), body.ip_hash && 'IP ' + short(body.ip_hash)]
        .filter(Boolean).join(' and ') + until + '.');
      loadBans();
    });
    row.append(form);
    S.banForm = { row, form, opener };
    opener.setAttribute('aria-expanded', 'true');
    (guest.disabled ? ip : guest).focus();
  }

  function loadBans() {
    return load('bans', sitePath() + '/bans', (d) => {
      const bans = list(d.bans).filter((b) => b && isId(b.id));
      $('ban-list').replaceChildren(...bans.map((b) => {
        const dl = el('dl', 'facts');
        const fact = (k, v, title) => {
          const dd = el('dd', null, v);
          if (title) dd.title = title;
          dl.append(el('dt', null, k), dd);
        };
        fact('Guest id', b.guest_id ? short(b.guest_id) : '\u2014', str(b.guest_id));
        fact('IP hash', b.ip_hash ? short(b.ip_hash) : '\u2014', str(b.ip_hash));
        fact('Reason', str(b.reason) || '\u2014');
        fact('By', str(b.by) || '\u2014');
        fact('Expires', b.expires_at ? fmtTime(b.expires_at) : 'never');
        const unban = button('Unban', async () => {
          if (await act(unban, 'lift the ban', 'DELETE', sitePath() + '/bans/' + enc(b.id))) {
            setStatus('Ban #' + b.id + ' lifted.');
            loadBans();
          }
        }, null, 'unban-' + b.id);
        return wrap('li', 'card', { 'data-testid': 'ban-row-' + b.id }, dl, unban);
      }));
      $('bans-empty').hidden = bans.length > 0;
    });
  }

  // ------------------------------------------------------ slow mode / filter

  function fillModeration(site) {
    const wf = site.word_filter || {};
    $('slow-mode').value = String(isId(site.slow_mode_secs) ? site.slow_mode_secs : 0);
    $('filter-mode').value = wf.mode === 'reject' ? 'reject' : 'mask';
    $('filter-words').value = list(wf.words).map(str).join('\n');
    S.modDirty = false;
  }

  async function saveModeration(ev) {
    ev.preventDefault();
    const raw = $('slow-mode').value.trim();
    const secs = Number(raw);
    if (!raw || !Number.isInteger(secs) || secs < 0 || secs > MAX_SLOW) {
      setStatus('Slow mode must be a whole number of seconds from 0 to ' + MAX_SLOW + '.', true);
      $('slow-mode').focus();
      return;
    }
    const body = { slow_mode_secs: secs, word_filter: { mode: $('filter-mode').value, words: lines($('filter-words').value) } };
    const data = await act($('save-moderation'), 'save slow mode and word filter', 'PUT', sitePath() + '/moderation', body);
    if (!data) return;
    if (data.site) renderSite(data.site, true);
    setStatus('Slow mode and word filter saved.');
  }

  // ------------------------------------------------------------------ audit

  function loadAudit(older) {
    let q = '?limit=' + PAGE;
    if (older && S.auditOldest != null) q += '&before=' + enc(S.auditOldest);
    return load('the audit log', sitePath() + '/audit' + q, (d) => {
      const rows = list(d.actions).filter((a) => a && isId(a.id));
      const ul = $('audit-list');
      if (!older) { ul.replaceChildren(); S.auditOldest = null; }
      for (const a of rows) {
        if (S.auditOldest != null && a.id >= S.auditOldest) continue;
        const row = wrap('li', 'audit-row', { 'data-testid': 'audit-' + a.id }, timeEl(a.at), ' ',
          el('bdi', 'actor', str(a.actor)), ' ', el('code', 'action', str(a.action)), ' ',
          el('span', 'room', isId(a.room_id) ? roomName(a.room_id) : '\u2014'), ' ', el('bdi', 'target', str(a.target)));
        if (a.details != null) row.title = JSON.stringify(a.details);
        ul.append(row);
      }
      if (rows.length) S.auditOldest = Math.min(S.auditOldest == null ? Infinity : S.auditOldest, ...rows.map((a) => a.id));
      $('audit-older').hidden = rows.length < PAGE;
      $('audit-empty').hidden = ul.childElementCount > 0;
    });
  }

  // ----------------------------------------------------- site admin section

  // Moderators get 403 `forbidden` from the admin-only endpoints, so the
  // tokens list doubles as the probe for showing the admin section at all.
  // A moderator token says so in its prefix (the server mints it with its
  // role): it is not sent to a call it can only fail (a 403 the browser
  // would log as a console error on every sign-in).
  async function checkAdmin() {
    if (S.token.startsWith('chatty_mod_')) return;
    const g = S.gen;
    let data;
    try {
      data = await api('GET', sitePath() + '/tokens');
    } catch (e) {
      if (g === S.gen && e.status !== 403) fail('Could not load tokens', e);
      return;
    }
    if (g !== S.gen) return;
    S.isAdmin = true;
    $('settings-section').hidden = false;
    fillSettings(S.site);
    renderTokens(data || {});
    renderExports();
  }

  function fillSettings(site) {
    $('site-name').value = str(site.name);
    $('site-origins').value = list(site.origins).map(str).join('\n');
    $('site-disabled').checked = !!site.disabled;
  }

  async function saveSettings(ev) {
    ev.preventDefault();
    const name = $('site-name').value.trim();
    if (!name) { setStatus('The site needs a name.', true); $('site-name').focus(); return; }
    const body = { name, origins: lines($('site-origins').value), disabled: $('site-disabled').checked };
    const data = await act($('save-site'), 'save the site settings', 'PATCH', sitePath(), body);
    if (!data) return;
    if (data.site) renderSite(data.site, false);
    setStatus('Site settings saved.');
  }

  const loadTokens = () => load('tokens', sitePath() + '/tokens', renderTokens);

  function renderTokens(d) {
    const tokens = list(d.tokens).filter((t) => t && isId(t.id));
    $('token-list').replaceChildren(...tokens.map((t) => {
      const row = wrap('li', 'card' + (t.revoked ? ' revoked' : ''), { 'data-testid': 'token-row-' + t.id },
        wrap('p', null, null, el('bdi', 'nick', str(t.label) || '(no label)'), ' \u2014 ' + str(t.role) + ', created ', timeEl(t.created_at)));
      if (t.revoked) {
        row.append(el('p', 'muted', 'Revoked'));
      } else {
        const revoke = button('Revoke', async () => {
          if (!window.confirm('Revoke the token ' + quote(t.label) + '? Whoever uses it loses access.')) return;
          if (await act(revoke, 'revoke the token', 'DELETE', sitePath() + '/tokens/' + enc(t.id))) {
            setStatus('Token ' + quote(t.label) + ' revoked.');
            loadTokens();
          }
        }, 'danger', 'revoke-' + t.id);
        row.append(revoke);
      }
      return row;
    }));
    $('tokens-empty').hidden = tokens.length > 0;
  }

  async function createToken(ev) {
    ev.preventDefault();
    const label = $('token-label').value.trim();
    if (!label) { setStatus('Give the token a label (who gets it).', true); $('token-label').focus(); return; }
    const body = { role: $('token-role').value, label };
    const data = await act($('create-token'), 'create the token', 'POST', sitePath() + '/tokens', body);
    if (!data) return;
    $('token-label').value = '';
    $('secret-value').value = str(data.secret);
    $('secret-box').hidden = false;
    $('secret-value').focus();
    $('secret-value').select();
    setStatus('Token created. Copy it now: it will not be shown again.');
    loadTokens();
  }

  async function copySecret() {
    const input = $('secret-value');
    try {
      await navigator.clipboard.writeText(input.value);
    } catch (_) {
      input.select();
      if (!D.execCommand('copy')) { setStatus('Could not copy: select the token and copy it by hand.', true); return; }
    }
    setStatus('Token copied to the clipboard.');
  }

  function hideSecret() {
    $('secret-value').value = '';
    $('secret-box').hidden = true;
  }

  function renderExports() {
    const ul = $('export-list');
    ul.replaceChildren();
    if (!S.isAdmin) return;
    for (const room of S.rooms) {
      const b = button('Export ' + roomLabel(room), () => exportRoom(room, b), null, 'export-' + room.id);
      ul.append(wrap('li', null, null, b));
    }
    if (!S.rooms.length) ul.append(el('li', 'muted', 'No rooms to export.'));
  }

  // Downloads the export exactly as the server sent it.
  async function exportRoom(room, btn) {
    const file = 'chatty-' + S.site.key.replace(/[^A-Za-z0-9_-]/g, '_') + '-room-' + room.id + '.json';
    const g = S.gen;
    btn.disabled = true;
    try {
      // One answer holds up to 50,000 messages; a longer room comes in
      // pages (?after=), joined here into one file.
      let text = await api('GET', roomPath(room) + '/export', undefined, true);
      let data = JSON.parse(text);
      for (let pages = 0; data && data.complete === false && data.next_after != null && pages < 200; pages++) {
        const next = JSON.parse(await api('GET', roomPath(room) + '/export?after=' + encodeURIComponent(data.next_after), undefined, true));
        data = Object.assign(next, { messages: data.messages.concat(next.messages || []) });
        text = JSON.stringify(data);
      }
      const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
      const a = el('a', null, null, { download: file });
      a.href = url;
      a.hidden = true;
      D.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000); // once the download has started
      if (g !== S.gen) return;
      setStatus('Room ' + quote(roomLabel(room)) + ' exported as ' + file + '.');
      loadAudit(false);
    } catch (e) {
      if (g === S.gen) fail('Could not export the room', e);
    } finally {
      btn.disabled = false;
    }
  }

  // ------------------------------------------------------------------ wiring

  function init() {
    const on = (id, type, fn) => $(id).addEventListener(type, fn);
    on('signin-form', 'submit', (ev) => {
      ev.preventDefault();
      const token = $('token').value.trim();
      // A header value must be visible ASCII; anything else is a paste error.
      if (!/^[\x21-\x7e]+$/.test(token)) { setStatus('Paste a token first (no spaces).', true); $('token').focus(); return; }
      signIn(token);
    });
    on('sign-out', 'click', () => signOut());
    on('switch-site', 'click', showSitePicker);
    on('rooms-refresh', 'click', loadRooms);
    on('messages-older', 'click', () => { if (S.room && S.shown.size) loadMessages(true, false); });
    on('clear-room', 'click', clearRoom);
    on('moderation-form', 'submit', saveModeration);
    on('moderation-form', 'input', () => { S.modDirty = true; });
    on('bans-refresh', 'click', loadBans);
    on('audit-older', 'click', () => loadAudit(true));
    on('audit-refresh', 'click', () => loadAudit(false));
    on('settings-form', 'submit', saveSettings);
    on('token-form', 'submit', createToken);
    on('secret-copy', 'click', copySecret);
    on('secret-done', 'click', () => { hideSecret(); $('token-label').focus(); });
    D.addEventListener('visibilitychange', () => { if (D.visibilityState === 'visible') pollTick(); });

    const saved = storeGet();
    if (saved) signIn(saved);
    else $('token').focus();
  }

  if (D.readyState === 'loading') D.addEventListener('DOMContentLoaded', init);
  else init();
})();
