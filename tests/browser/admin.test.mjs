// The moderation page (/admin) in real headless Chromium, against two real
// Chatty nodes that share one MariaDB database and one Redis key prefix:
// what a moderator does there reaches visitors' widgets on either node.
//
// Run by ./scripts/test.sh with the other browser tests, or alone:
//   cd tests/browser && CHATTY_BIN=../../target/debug/chatty node --test admin.test.mjs
// The admin page's screenshot goes to target/browser-artifacts/admin-page.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { harness, widget, ARTIFACTS, WAIT } from './support.mjs';

const h = harness();
const { bases, visitor, hostPage } = h;

/** How long a moderator's change may take to reach a widget on any node. */
const PROMPT = 5_000;

before(() => h.setUp());

after(() => h.tearDown());

/** A moderator token of the site `key`, made by `chatty site token`. */
function moderatorToken(key, label) {
  const out = h.chatty('site', 'token', key, '--label', label);
  const secret = out.match(/chatty_mod_\S+/);
  assert.ok(secret, `chatty site token printed a moderator token: ${out}`);
  return secret[0];
}

/**
 * A site of its own for one test (its slow mode and bans touch nobody else),
 * embedded by one host page per node; with a moderator token.
 */
async function freshSite(name) {
  let key = null;
  const pages = [];
  for (const base of bases) pages.push(await hostPage({ chatBase: base, site: () => key }));
  const args = ['site', 'create', '--name', name, '--json'];
  for (const page of pages) args.push('--origin', new URL(page).origin);
  const created = JSON.parse(h.chatty(...args));
  assert.match(created.admin_token, /^chatty_adm_/);
  key = created.site.key;
  return { key, pages, token: moderatorToken(key, `${name} moderator`) };
}

/**
 * Sends `text` from a visitor's widget; resolves to the server's answer to
 * that send: { status, data }.
 */
async function send(visitorPage, text) {
  const answer = visitorPage.waitForResponse(
    (r) => r.request().method() === 'POST' && /\/api\/v1\/rooms\/\d+\/messages$/.test(r.url())
      && JSON.parse(r.request().postData() || '{}').body === text,
    { timeout: WAIT },
  );
  await widget(visitorPage, 'textarea').fill(text);
  await widget(visitorPage, 'textarea').press('Enter');
  const r = await answer;
  return { status: r.status(), data: await r.json().catch(() => null) };
}

/** A message body shown in a visitor's widget. */
const shown = (page, text) => widget(page, '.msgs .body').filter({ hasText: text });

/**
 * Opens `base`/admin in a fresh context and signs in with `token` (a
 * moderator token sees exactly one site, which opens by itself). Records
 * console errors, uncaught exceptions, dialogs and CSP violations.
 */
async function moderator(base, token) {
  const context = await h.browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const page = await context.newPage();
  const errors = [];
  const dialogs = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`exception: ${e.message}`));
  page.on('dialog', async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss(); });
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  await page.goto(`${base}/admin`);
  await page.getByTestId('token').fill(token);
  await page.getByTestId('sign-in').click();
  await page.locator('#site-view').waitFor({ state: 'visible', timeout: WAIT });
  const violations = () => page.evaluate(() => window.__cspViolations);
  const status = (text) => page.getByTestId('status').filter({ hasText: text })
    .waitFor({ state: 'visible', timeout: WAIT });
  /** Opens a room and waits for the row of message `seq`. */
  async function openRoom(roomId, seq) {
    await page.getByTestId(`room-${roomId}`).click();
    await page.getByTestId(`message-${seq}`).waitFor({ state: 'visible', timeout: WAIT });
  }
  return { context, page, errors, dialogs, violations, status, openRoom };
}

async function assertClean(admin) {
  assert.deepEqual(admin.errors, [], 'no console error or exception on the admin page');
  assert.deepEqual(await admin.violations(), [], 'no CSP violation on the admin page');
  assert.deepEqual(admin.dialogs, [], 'no dialog on the admin page');
  assert.equal(await admin.page.getByTestId('status').evaluate((s) => s.classList.contains('error')), false,
    'the status line reports no error');
}

test('a moderator deletes a message on the admin page and it vanishes from a visitor\'s widget on the other node', async () => {
  const [one, two] = bases;
  const token = moderatorToken('demo', 'Bea');
  const ada = await visitor(one, 'Ada');
  const ben = await visitor(two, 'Ben');
  assert.ok(ada.joined?.room?.id, 'the join named the room');
  const hello = await send(ben.page, 'hello from node two');
  assert.equal(hello.status, 201, JSON.stringify(hello.data));
  const rude = await send(ada.page, 'this is rude');
  assert.equal(rude.status, 201, JSON.stringify(rude.data));
  const seq = rude.data.message.seq;
  await shown(ben.page, 'this is rude').waitFor({ state: 'visible', timeout: WAIT });
  await shown(ada.page, 'hello from node two').waitFor({ state: 'visible', timeout: WAIT });

  const bea = await moderator(two, token);
  await bea.openRoom(ada.joined.room.id, seq);
  const row = bea.page.getByTestId(`message-${seq}`);
  assert.equal(await row.locator('.body').textContent(), 'this is rude');
  assert.equal(await row.locator('.nick').textContent(), 'Ada');
  await bea.page.getByTestId(`message-${hello.data.message.seq}`).waitFor({ state: 'visible', timeout: WAIT });
  await bea.page.screenshot({ path: join(ARTIFACTS, 'admin-page.png'), fullPage: true });

  await bea.page.getByTestId(`delete-${seq}`).click();
  await bea.status(`Message #${seq} deleted.`);
  await row.waitFor({ state: 'detached', timeout: WAIT });
  // Both widgets drop it: Ben's on the other node, Ada's own.
  await shown(ben.page, 'this is rude').waitFor({ state: 'detached', timeout: PROMPT });
  await shown(ada.page, 'this is rude').waitFor({ state: 'detached', timeout: PROMPT });
  assert.ok((await widget(ben.page, '.msgs .body').allTextContents()).includes('hello from node two'),
    'the other message stays');
  // The audit log names the moderator and the deletion.
  await bea.page.getByTestId('audit').locator('li', { hasText: 'delete_message' }).filter({ hasText: 'Bea' })
    .first().waitFor({ timeout: WAIT });
  await assertClean(bea);
  for (const c of [ada, ben, bea]) await c.context.close();
});

test('a banned visitor is told so and cannot send', async () => {
  const [, two] = bases;
  const site = await freshSite('Ban test');
  const cat = await visitor(site.pages[0], 'Cat');
  const dan = await visitor(site.pages[1], 'Dan');
  const spam = await send(cat.page, 'buy cheap stuff');
  assert.equal(spam.status, 201, JSON.stringify(spam.data));
  const seq = spam.data.message.seq;
  await shown(dan.page, 'buy cheap stuff').waitFor({ state: 'visible', timeout: WAIT });

  const mod = await moderator(two, site.token);
  await mod.openRoom(cat.joined.room.id, seq);
  await mod.page.getByTestId(`ban-${seq}`).click();
  // Every visitor here shares 127.0.0.1: ban the guest, not the address.
  await mod.page.getByTestId('ban-ip').uncheck();
  assert.equal(await mod.page.getByTestId('ban-guest').isChecked(), true);
  await mod.page.getByTestId('ban-reason').fill('spam');
  await mod.page.getByTestId('ban-confirm').click();
  await mod.status('Banned guest');
  const banned = mod.page.getByTestId('bans').locator(`dd[title="${cat.joined.guest.id}"]`);
  await banned.waitFor({ timeout: WAIT });
  assert.equal(await mod.page.getByTestId('bans').locator('li').count(), 1);

  // Cat (on the other node than the moderator) tries again: refused, told
  // why in the widget's words, and the text stays to be copied.
  const again = await send(cat.page, 'let me back in');
  assert.equal(again.status, 403);
  assert.equal(again.data?.error?.code, 'banned');
  const notice = widget(cat.page, '.chat > .err');
  await notice.filter({ hasText: 'You are banned from this chat.' }).waitFor({ state: 'visible', timeout: WAIT });
  assert.equal(await widget(cat.page, 'textarea').inputValue(), 'let me back in');

  // Dan still talks; his message reaches Cat, Cat's refused one reaches nobody.
  const fine = await send(dan.page, 'still fine here');
  assert.equal(fine.status, 201, JSON.stringify(fine.data));
  await shown(dan.page, 'still fine here').waitFor({ state: 'visible', timeout: WAIT });
  await shown(cat.page, 'still fine here').waitFor({ state: 'visible', timeout: WAIT });
  for (const c of [cat, dan]) {
    assert.equal(await shown(c.page, 'let me back in').count(), 0, 'the refused message is shown nowhere');
  }
  assert.equal(await widget(dan.page, '.chat > .err').textContent(), '', 'Dan sees no error');
  await assertClean(mod);
  for (const c of [cat, dan, mod]) await c.context.close();
});

test('hostile names are inert on the admin page', async () => {
  const [one] = bases;
  const site = await freshSite('Hostile test');
  const nick = '<img src=x onerror=alert(1)>';
  const text = '<script>alert(1)</script>';
  const mallory = await visitor(site.pages[0], nick);
  assert.equal(mallory.joined?.guest?.nickname, nick, 'the server accepted the nickname as it is');
  const sent = await send(mallory.page, text);
  assert.equal(sent.status, 201, JSON.stringify(sent.data));
  const seq = sent.data.message.seq;

  const mod = await moderator(one, site.token);
  // Polls re-render the list every 5 s: wait for one, so a handler that
  // fired on re-insertion would have fired.
  const polled = mod.page.waitForResponse((r) => /\/messages\?limit=/.test(r.url()), { timeout: WAIT });
  await mod.openRoom(mallory.joined.room.id, seq);
  await polled;
  await mod.page.waitForResponse((r) => /\/messages\?limit=/.test(r.url()), { timeout: WAIT });
  const row = mod.page.getByTestId(`message-${seq}`);
  assert.equal(await row.locator('.nick').textContent(), nick);
  assert.equal(await row.locator('.body').textContent(), text);
  // The ban form quotes the message's guest id and address; open it too.
  await mod.page.getByTestId(`ban-${seq}`).click();
  await mod.page.getByTestId('ban-confirm').waitFor({ state: 'visible', timeout: WAIT });
  const page = await mod.page.evaluate(() => ({
    images: document.querySelectorAll('img').length,
    scripts: [...document.querySelectorAll('script')].map((s) => s.getAttribute('src')),
    handlers: [...document.querySelectorAll('*')].flatMap((e) => [...e.attributes].map((a) => a.name))
      .filter((n) => n.startsWith('on')),
  }));
  assert.equal(page.images, 0, 'no <img> was created');
  assert.deepEqual(page.scripts, ['/admin.js'], 'no <script> was created');
  assert.deepEqual(page.handlers, [], 'no inline event handler attribute exists');
  await assertClean(mod); // no dialog among them
  assert.deepEqual(mallory.dialogs, []);
  for (const c of [mallory, mod]) await c.context.close();
});

test('slow mode set on the admin page holds for the widget', async () => {
  const [one, two] = bases;
  const site = await freshSite('Slow test');
  const mod = await moderator(one, site.token);
  assert.equal(await mod.page.getByTestId('slow-mode').inputValue(), '0');
  await mod.page.getByTestId('slow-mode').fill('30');
  await mod.page.getByTestId('save-moderation').click();
  await mod.status('Slow mode and word filter saved.');
  assert.equal(await mod.page.getByTestId('slow-mode').inputValue(), '30', 'the saved value is shown');
  await mod.page.getByTestId('audit').locator('li', { hasText: 'set_moderation' }).first().waitFor({ timeout: WAIT });

  // A visitor on the other node: the first message goes through, the
  // second is refused with the wait, in the widget's words.
  const eve = await visitor(site.pages[1], 'Eve');
  const first = await send(eve.page, 'first thought');
  assert.equal(first.status, 201, JSON.stringify(first.data));
  await shown(eve.page, 'first thought').waitFor({ state: 'visible', timeout: WAIT });
  const second = await send(eve.page, 'second thought');
  assert.equal(second.status, 429);
  assert.equal(second.data?.error?.code, 'slow_mode');
  const notice = widget(eve.page, '.chat > .err');
  await notice.filter({ hasText: 'Slow mode is on.' }).waitFor({ state: 'visible', timeout: WAIT });
  const wait = (await notice.textContent()).match(/^Slow mode is on\. Wait (\d+) s\.$/);
  assert.ok(wait, `the notice says how long to wait: ${await notice.textContent()}`);
  assert.ok(Number(wait[1]) >= 1 && Number(wait[1]) <= 30, `a wait within the 30 s: ${wait[1]}`);
  assert.equal(await widget(eve.page, 'textarea').inputValue(), 'second thought', 'the text stays');
  assert.equal(await shown(eve.page, 'second thought').count(), 0);
  await assertClean(mod);
  for (const c of [eve, mod]) await c.context.close();
});
