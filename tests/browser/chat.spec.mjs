// The demo chat in a real browser: Debian's Chromium, driven by playwright-core.
//
//   node tests/browser/chat.spec.mjs http://127.0.0.1:3000
//
// Two users log in in two pages, join a room, chat, switch between room views (unread
// counts), send a private message (delivered, then offline once the other page closes), log
// out and see a refused login's reason: the other sees the message and the online list change. alice uses the native protocol (/ws), bob the page's
// Socket.IO client (/socket.io/): the server must have been built with the `socketio` feature. A screenshot goes to ci-artifacts/chat.png. Exits
// non-zero on any failure (a missing Chromium included).

import { mkdir } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const base = process.argv[2];
if (!base) {
  console.error('usage: node chat.spec.mjs <demo url>');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const screenshot = new URL('../../ci-artifacts/chat.png', import.meta.url);
const WAIT = 10_000;

// The whole run is bounded, whatever hangs.
setTimeout(() => {
  console.error('chat.spec: timed out after 90 s');
  process.exit(1);
}, 90_000).unref();

const browser = await chromium.launch({
  executablePath,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync',
  ],
});

const pageErrors = [];

async function open(user, protocol) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => pageErrors.push(`${user}: ${e.message}`));
  await page.goto(base);
  await page.fill('#user', user);
  // The page probes /socket.io/ and marks the select with the result.
  await page.locator('#protocol[data-socketio]').waitFor({ state: 'attached' });
  if (protocol === 'socketio') {
    const available = await page.getAttribute('#protocol', 'data-socketio');
    if (available !== 'available') throw new Error(`the socketio option is ${available}`);
  }
  await page.selectOption('#protocol', protocol);
  await page.click('#login');
  await page.locator('#status.connected').waitFor();
  const used = await page.evaluate(() => window.chat.protocol);
  if (used !== protocol) throw new Error(`${user}: logged in with ${used}, not ${protocol}`);
  return { context, page };
}

async function onlineUsers(page) {
  return page.locator('#online li').allTextContents();
}

async function expectOnline(page, users) {
  const want = JSON.stringify(users);
  await page.waitForFunction(
    (w) => JSON.stringify(Array.from(document.querySelectorAll('#online li'), (li) => li.textContent)) === w,
    want,
    { timeout: WAIT },
  ).catch(async () => {
    throw new Error(`online list: want ${want}, have ${JSON.stringify(await onlineUsers(page))}`);
  });
}

let failed = false;
try {
  const alice = await open('alice', 'native');
  const bob = await open('bob', 'socketio');

  for (const { page } of [alice, bob]) {
    await page.fill('#room', 'general');
    await page.click('#join');
    await page.locator('#log .notice', { hasText: 'you joined #general' }).waitFor();
  }
  await expectOnline(alice.page, ['alice', 'bob']);
  await expectOnline(bob.page, ['alice', 'bob']);
  // The room name field is not squeezed by the buttons beside it.
  const roomWidth = await alice.page.$eval('#room', (e) => e.getBoundingClientRect().width);
  if (roomWidth < 150) throw new Error(`the room field is ${roomWidth}px wide`);

  await alice.page.fill('#text', 'hello from the browser');
  await alice.page.click('#send');
  await bob.page.locator('#log .msg', { hasText: 'alice: hello from the browser' }).waitFor();
  await alice.page.locator('#log .msg.mine', { hasText: 'alice: hello from the browser' }).waitFor();

  await bob.page.fill('#text', 'hi alice');
  await bob.page.click('#send');
  await alice.page.locator('#log .msg', { hasText: 'bob: hi alice' }).waitFor();

  // The text box takes no more than the server's limit (from GET /config).
  await alice.page.waitForFunction(() => document.getElementById('text').maxLength === 1000);

  // Rooms are views: a message to a room not on screen waits there, counted as unread.
  await alice.page.fill('#room', 'random');
  await alice.page.click('#join');
  await alice.page.locator('#log .notice', { hasText: 'you joined #random' }).waitFor();
  await bob.page.fill('#text', 'while you were away');
  await bob.page.click('#send');
  const generalItem = alice.page.locator('#rooms li[data-view="#general"]');
  await generalItem.locator('.badge', { hasText: '1' }).waitFor();
  const away = alice.page.locator('#log .msg', { hasText: 'bob: while you were away' });
  await away.waitFor({ state: 'attached' });
  if (await away.isVisible()) throw new Error('a #general message shows in the #random view');
  await generalItem.click();
  await away.waitFor();
  if ((await generalItem.locator('.badge').textContent()) !== '') throw new Error('the unread count stays after viewing');

  // A private message, in its own view, marked with the server's word on delivery.
  await alice.page.locator('#online li', { hasText: 'bob' }).click();
  await alice.page.fill('#text', 'psst');
  await alice.page.click('#send');
  await alice.page.locator('#log .msg.pm.mine .delivery.ok', { hasText: 'delivered to 1 device' }).waitFor();
  await bob.page.locator('#dms li[data-view="@alice"] .badge', { hasText: '1' }).waitFor();

  await bob.context.close();
  await expectOnline(alice.page, ['alice']);
  await alice.page.locator('#log .notice', { hasText: 'bob is offline' }).waitFor();
  // Nobody to deliver to: said so, never shown as delivered.
  await alice.page.fill('#text', 'are you there?');
  await alice.page.click('#send');
  await alice.page.locator('#log .msg.pm.mine .delivery.bad', { hasText: 'bob is offline: not delivered' }).waitFor();

  await mkdir(new URL('.', screenshot), { recursive: true });
  await alice.page.screenshot({ path: screenshot.pathname, fullPage: true });

  // Past the server's event rate limit: the page says to slow down, and the connection stays.
  await generalItem.click();
  await alice.page.evaluate(() => {
    const text = document.getElementById('text'), form = document.getElementById('sendForm');
    for (let i = 0; i < 30; i++) { text.value = `flood ${i}`; form.requestSubmit(); }
  });
  await alice.page.locator('#log .error', { hasText: 'slow down: at most 5 messages a second' }).first().waitFor();
  await alice.page.locator('#status.connected').waitFor();

  // Log out: the socket closes, the login form is back; a refused login shows the server's words.
  await alice.page.click('#logout');
  await alice.page.locator('#loginView').waitFor();
  if (await alice.page.evaluate(() => window.chat.client !== null)) throw new Error('the client is kept after logout');
  await alice.page.fill('#user', '\u00e9'.repeat(40)); // 40 characters, 80 bytes
  await alice.page.click('#login');
  await alice.page.locator('#loginError', { hasText: 'user: at most 64 bytes' }).waitFor();

  if (pageErrors.length) throw new Error(`errors in the page:\n${pageErrors.join('\n')}`);
  console.log(`chat.spec: ok (screenshot: ${screenshot.pathname})`);
} catch (e) {
  failed = true;
  console.error('chat.spec: FAILED:', e && e.stack ? e.stack : e);
} finally {
  await browser.close().catch(() => {});
}
process.exit(failed ? 1 : 0);
