// The widget in real headless Chromium, against two real Chatty nodes that
// share one MariaDB database and one Redis key prefix (the shared mode).
//
// Run by ./scripts/test.sh (which installs Chromium and Node if missing):
//   CHATTY_BIN=target/debug/chatty CHATTY_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306 \
//   node --test tests/browser/
// Screenshots go to target/browser-artifacts/.
//
// Every test has visitors of its own names (Ann1, Bob1, …): a visitor of
// an earlier test may still count as present for a moment, and a new guest
// may not take a name someone present uses.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { harness, widget, seeMessage, say, ARTIFACTS, WAIT } from './support.mjs';

const h = harness();
const { bases, visitor, hostPage, proxy } = h;

/** The widget's state, as its root element shows it: transport and connection. */
const widgetState = (page) => widget(page, 'section.box').evaluate((box) => ({
  transport: box.dataset.transport, state: box.dataset.state, classes: box.className,
}));

async function waitForTransport(page, transport, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await widgetState(page);
    if (last.transport === transport && last.state === 'online') return;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`expected transport ${transport}, online; last seen ${JSON.stringify(last)}`);
}

before(() => h.setUp());

after(() => h.tearDown());

test('two visitors on two nodes chat, and each sees the other in the member list', async () => {
  const [one, two] = bases;
  const ann = await visitor(one, 'Ann1');
  const bob = await visitor(two, 'Bob1');
  await say(ann.page, 'hello from node one');
  const seen = widget(bob.page, '.msgs .body').filter({ hasText: 'hello from node one' });
  await seen.waitFor({ state: 'visible', timeout: WAIT });
  await widget(bob.page, '.mem').filter({ hasText: 'Ann' }).waitFor({ timeout: WAIT });
  await widget(ann.page, '.mem').filter({ hasText: 'Bob' }).waitFor({ timeout: WAIT });
  await bob.page.screenshot({ path: join(ARTIFACTS, 'desktop.png') });
  await ann.context.close();
  await bob.context.close();
});

test('hostile messages and nicknames are shown as text: no markup, no script, no dialog', async () => {
  const [one, two] = bases;
  const mallory = await visitor(one, '<img src=x onerror=alert(1)>');
  const bob = await visitor(two, 'Bob2', { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const hostile = [
    '<img src=x onerror=alert(2)>',
    '<script>alert(3)</script>',
    'javascript:alert(4)',
  ];
  for (const text of hostile) await say(mallory.page, text);
  for (const text of hostile) {
    await widget(bob.page, '.msgs .body').filter({ hasText: text }).first()
      .waitFor({ state: 'attached', timeout: WAIT });
  }
  const bodies = await widget(bob.page, '.msgs .body').allTextContents();
  for (const text of hostile) assert.ok(bodies.includes(text), `shown verbatim: ${text}`);
  assert.equal(await widget(bob.page, '.msgs img').count(), 0, 'no <img> was created');
  assert.equal(await widget(bob.page, '.msgs script').count(), 0, 'no <script> was created');
  assert.equal(await widget(bob.page, '.msgs a').count(), 0, 'javascript: did not become a link');
  const nicks = await widget(bob.page, '.msgs .nick').allTextContents();
  assert.ok(nicks.includes('<img src=x onerror=alert(1)>'), 'the nickname is text');
  // A right-to-left override is refused by the server (body_invalid): the
  // sender sees why, nobody sees the text.
  await say(mallory.page, 'abc\u202Edef');
  await widget(mallory.page, '.sf + .err, .err[role="alert"]').filter({ hasText: /\S/ }).first()
    .waitFor({ state: 'visible', timeout: WAIT });
  assert.ok(!(await widget(bob.page, '.msgs .body').allTextContents()).some((t) => t.includes('\u202E')));
  assert.deepEqual([...mallory.dialogs, ...bob.dialogs], [], 'no dialog opened');
  const sheet = await widget(bob.page, 'section.box').boundingBox();
  assert.ok(sheet && sheet.width >= 389, `on a phone the open chat spans the screen: ${JSON.stringify(sheet)}`);
  await bob.page.screenshot({ path: join(ARTIFACTS, 'mobile.png') });
  await mallory.context.close();
  await bob.context.close();
});

test('a host page with a strict CSP and Trusted Types: the widget works and causes no violation', async () => {
  const [one, two] = bases;
  const host = await hostPage({
    chatBase: one,
    // The chat host in both schemes it is reached by: a CSP `http:` source
    // does not cover `ws:` (the reverse holds), see docs/embedding.md.
    // Trusted Types too: a widget that wrote HTML strings anywhere would
    // be refused (and reported) on such a host.
    csp: `default-src 'self'; script-src ${one}; connect-src ${one} ${one.replace(/^http/, 'ws')}; style-src 'self'; `
      + `require-trusted-types-for 'script'`,
  });
  const ann = await visitor(host, 'Ann2');
  const bob = await visitor(two, 'Bob3');
  await waitForTransport(ann.page, 'websocket');
  await say(ann.page, 'sent under a strict CSP');
  await say(bob.page, 'and answered');
  await widget(bob.page, '.msgs .body').filter({ hasText: 'sent under a strict CSP' })
    .waitFor({ state: 'visible', timeout: WAIT });
  await widget(ann.page, '.msgs .body').filter({ hasText: 'and answered' })
    .waitFor({ state: 'visible', timeout: WAIT });
  assert.deepEqual(await ann.violations(), [], 'no CSP violation on the host page');
  await ann.context.close();
  await bob.context.close();
});

test('a host page with hostile global CSS still shows a readable widget', async () => {
  const [one] = bases;
  const host = await hostPage({
    chatBase: one,
    css: '* { color: red !important; font-size: 3px !important } div { display: none }',
  });
  const ann = await visitor(host, 'Ann3');
  await say(ann.page, 'still readable');
  const body = widget(ann.page, '.msgs .body').filter({ hasText: 'still readable' });
  await body.waitFor({ state: 'visible', timeout: WAIT });
  const style = await body.evaluate((el) => {
    const s = getComputedStyle(el);
    return { fontSize: parseFloat(s.fontSize), color: s.color, display: s.display };
  });
  assert.ok(style.fontSize >= 12, `font size ${style.fontSize}px`);
  assert.notEqual(style.color, 'rgb(255, 0, 0)', 'the host colour does not leak in');
  assert.notEqual(style.display, 'none');
  const box = await widget(ann.page, 'section').boundingBox();
  assert.ok(box && box.width > 200 && box.height > 200, `the widget has room: ${JSON.stringify(box)}`);
  await ann.page.screenshot({ path: join(ARTIFACTS, 'hostile-css.png') });
  await ann.context.close();
});

test('WebSocket blocked by a proxy: the widget falls back to SSE and messages flow both ways', async () => {
  const [one, two] = bases;
  const oldProxy = await proxy(one, { blockUpgrade: true });
  const host = await hostPage({ chatBase: oldProxy.base });
  const ann = await visitor(host, 'Ann4');
  const bob = await visitor(two, 'Bob4');
  await waitForTransport(ann.page, 'sse');
  await say(ann.page, 'sent from behind an old proxy');
  await seeMessage(bob.page, 'sent from behind an old proxy');
  await say(bob.page, 'pushed back over SSE');
  await seeMessage(ann.page, 'pushed back over SSE');
  assert.equal((await widgetState(ann.page)).transport, 'sse');
  await ann.context.close();
  await bob.context.close();
});

test('a host CSP without the ws: origin: one violation, then SSE, and the chat works', async () => {
  const [one, two] = bases;
  const host = await hostPage({
    chatBase: one,
    csp: `default-src 'self'; script-src ${one}; connect-src ${one}; style-src 'self'`,
  });
  const ann = await visitor(host, 'Ann5');
  const bob = await visitor(two, 'Bob5');
  await waitForTransport(ann.page, 'sse');
  await say(bob.page, 'reaching a page that forgot ws:');
  await seeMessage(ann.page, 'reaching a page that forgot ws:');
  const violations = await ann.violations();
  assert.equal(violations.length, 1, `the WebSocket is tried once: ${JSON.stringify(violations)}`);
  assert.match(violations[0], /^connect-src ws:\/\//);
  await ann.context.close();
  await bob.context.close();
});

test('a proxy that buffers event streams: a visitor who only reads still gets messages, by long-poll', async () => {
  const [one, two] = bases;
  const buffering = await proxy(one, { blockUpgrade: true, holdStreams: true });
  const host = await hostPage({ chatBase: buffering.base });
  const ann = await visitor(host, 'Ann6');
  const bob = await visitor(two, 'Bob6');
  await waitForTransport(ann.page, 'sse');
  // Ann sends nothing: the widget finds out by itself (a plain poll 15 s
  // after the stream opened shows a message the stream has not brought).
  await say(bob.page, 'anyone behind that proxy?');
  await waitForTransport(ann.page, 'longpoll', 45_000);
  await seeMessage(ann.page, 'anyone behind that proxy?');
  await say(ann.page, 'yes, by long-poll');
  await seeMessage(bob.page, 'yes, by long-poll');
  await ann.context.close();
  await bob.context.close();
});

test('the node behind a visitor goes away: the widget shows it, reconnects elsewhere and misses nothing', async () => {
  const [one, two] = bases;
  const balancer = await proxy(one);
  const host = await hostPage({ chatBase: balancer.base });
  const ann = await visitor(host, 'Ann7');
  const bob = await visitor(two, 'Bob7');
  await waitForTransport(ann.page, 'websocket');
  await say(bob.page, 'before the failure');
  await seeMessage(ann.page, 'before the failure');
  await ann.page.evaluate(() => {
    const box = document.querySelector('chatty-widget').shadowRoot.querySelector('section');
    window.__states = [];
    new MutationObserver(() => window.__states.push(box.dataset.state))
      .observe(box, { attributes: true, attributeFilter: ['data-state'] });
  });
  balancer.switchTo(two);
  balancer.dropAll();
  await say(bob.page, 'during the failure');
  await seeMessage(ann.page, 'during the failure');
  await waitForTransport(ann.page, 'websocket');
  await say(ann.page, 'back again');
  await seeMessage(bob.page, 'back again');
  const states = await ann.page.evaluate(() => window.__states);
  assert.ok(states.includes('reconnecting'), `the visitor saw the connection drop: ${states}`);
  const bodies = await widget(ann.page, '.msgs .body').allTextContents();
  for (const text of ['before the failure', 'during the failure', 'back again']) {
    assert.equal(bodies.filter((b) => b === text).length, 1, `"${text}" shown once`);
  }
  await ann.context.close();
  await bob.context.close();
});

test('minimised: a badge counts unread messages, opening clears it; Escape, emoji and links work', async () => {
  const [one, two] = bases;
  const ann = await visitor(one, 'Ann8');
  const bob = await visitor(two, 'Bob8');
  await waitForTransport(bob.page, 'websocket');
  await widget(bob.page, 'textarea').press('Escape'); // the keyboard minimises
  await widget(bob.page, 'section.box.min').waitFor({ timeout: WAIT });
  assert.equal(await widget(bob.page, '.tg').evaluate((b) => b.getRootNode().activeElement === b), true,
    'focus stays on the toggle');
  await say(ann.page, 'first while you were away');
  await say(ann.page, 'second, see https://example.com/docs?a=1.');
  await widget(bob.page, '.badge').filter({ hasText: /^2$/ }).waitFor({ state: 'visible', timeout: WAIT });
  await widget(bob.page, '.tg').click();
  await widget(bob.page, '.badge').waitFor({ state: 'hidden', timeout: WAIT });

  const link = widget(bob.page, '.msgs .body a').filter({ hasText: 'https://example.com/docs?a=1' });
  await link.waitFor({ timeout: WAIT });
  assert.equal(await link.getAttribute('href'), 'https://example.com/docs?a=1');
  assert.equal(await link.getAttribute('rel'), 'noopener noreferrer nofollow ugc');
  assert.equal(await link.getAttribute('target'), '_blank');
  assert.equal(await link.textContent(), 'https://example.com/docs?a=1', 'the full stop is prose');

  await widget(ann.page, '.eb').click();
  await widget(ann.page, '.emo button').filter({ hasText: '\u{1F44D}' }).click();
  await widget(ann.page, 'textarea').press('Enter');
  await seeMessage(bob.page, '\u{1F44D}');
  await ann.context.close();
  await bob.context.close();
});

test('embed attributes: position, theme, language, start minimised and one room per page', async () => {
  const [one] = bases;
  const host = await hostPage({
    chatBase: one,
    attrs: 'data-position="bottom-left" data-theme="dark" data-lang="de" data-open="false" data-room="page"',
  });
  const context = await h.browser.newContext({ colorScheme: 'light' });
  const page = await context.newPage();
  const joins = [];
  page.on('request', (r) => { if (r.url().endsWith('/api/v1/join')) joins.push(JSON.parse(r.postData())); });
  await page.goto(`${host}pricing`);
  const box = widget(page, 'section.box');
  await box.waitFor({ timeout: WAIT });
  const state = await widgetState(page);
  assert.match(state.classes, /\bmin\b/, 'starts minimised');
  assert.match(state.classes, /\bdark\b/, 'dark although the system is light');
  assert.equal(await widget(page, '.tg').getAttribute('aria-label'), 'Chat \u00f6ffnen');
  const rect = await box.boundingBox();
  assert.ok(rect && rect.x < 100, `bottom-left: ${JSON.stringify(rect)}`);
  await widget(page, '.tg').click();
  await widget(page, 'input[name="nickname"]').fill('Lena');
  await widget(page, 'input[name="nickname"]').press('Enter');
  await widget(page, 'textarea').waitFor({ state: 'visible', timeout: WAIT });
  assert.equal(await widget(page, '.sf button[type="submit"]').textContent(), 'Senden');
  assert.equal(joins.length, 1);
  assert.equal(joins[0].page, '/pricing', 'the page path picks the room');
  await context.close();
});

test('light and dark follow prefers-color-scheme by default', async () => {
  const [one] = bases;
  const light = await visitor(one, 'Day', { colorScheme: 'light' });
  const dark = await visitor(one, 'Night', { colorScheme: 'dark', viewport: { width: 390, height: 844 }, isMobile: true });
  assert.doesNotMatch((await widgetState(light.page)).classes, /\bdark\b/);
  assert.match((await widgetState(dark.page)).classes, /\bdark\b/);
  const background = await widget(dark.page, 'section.box').evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.equal(background, 'rgb(29, 30, 35)');
  await dark.page.screenshot({ path: join(ARTIFACTS, 'mobile-dark.png') });
  await light.context.close();
  await dark.context.close();
});
