// The demo chat in a real browser: Debian's Chromium, driven by playwright-core.
//
//   node tests/browser/chat.spec.mjs http://127.0.0.1:3000
//
// Two users log in in two pages, join a room, chat, set a status (shown in the other's online
// list), share a PNG (an <img> with the same bytes at the other) and a text file (a download
// link), type (the other sees "is typing", gone ~3 s later), switch between room views
// (unread counts), send a private message (delivered, then offline once the other page
// closes), log out and see a refused login's reason: the other sees the message and the
// online list change. alice uses the native protocol (/ws), bob the page's Socket.IO client
// (/socket.io/), and each of those steps runs both ways, so both protocols send and receive
// them: the server must have been built with the `socketio` feature. Both connections must
// have agreed permessage-deflate with the demo. A screenshot goes to
// ci-artifacts/chat.png. Exits non-zero on any failure (a missing Chromium included).

import { mkdir } from 'node:fs/promises';
import { deflateSync } from 'node:zlib';
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
  // The demo serves permessage-deflate, and Chromium offers it: agreed, on either protocol.
  const extensions = await page.evaluate(() => window.chat.client._ws.extensions);
  if (!/permessage-deflate/.test(extensions)) {
    throw new Error(`${user}: no permessage-deflate agreed with the demo (extensions "${extensions}")`);
  }
  return { context, page };
}

// The names in the online list (each item also holds the user's status, apart).
async function onlineUsers(page) {
  return page.locator('#online li .name').allTextContents();
}

async function expectOnline(page, users) {
  const want = JSON.stringify(users);
  await page.waitForFunction(
    (w) => JSON.stringify(Array.from(document.querySelectorAll('#online li .name'), (n) => n.textContent)) === w,
    want,
    { timeout: WAIT },
  ).catch(async () => {
    throw new Error(`online list: want ${want}, have ${JSON.stringify(await onlineUsers(page))}`);
  });
}

// A small RGB PNG, width x height, every pixel a colour of its own (so that the bytes differ).
function png(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc32 = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, 'latin1');
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const rows = Buffer.alloc(height * (1 + width * 3));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) rows.set([x * 40, y * 60, (x + y) * 20], y * (1 + width * 3) + 1 + x * 3);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(rows)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// Shares a file through the page's file button (the file chooser it opens).
async function share(page, file) {
  const [chooser] = await Promise.all([page.waitForEvent('filechooser'), page.click('#attach')]);
  await chooser.setFiles(file);
}

// `from` shares a PNG in the room on screen; `to` shows it inline, from the very same bytes.
async function sharePng(from, to, name, width, height) {
  const bytes = png(width, height);
  await share(from.page, { name, mimeType: 'image/png', buffer: bytes });
  await from.page.locator('#log .msg.file.mine .delivery.ok', { hasText: 'shared with 1 connection' }).first().waitFor();
  const img = to.page.locator(`#log .msg.file img.inline[data-file="${name}"]`);
  await img.waitFor();
  await to.page.waitForFunction((n) => {
    const i = document.querySelector(`#log img.inline[data-file="${n}"]`);
    return i && i.complete && i.naturalWidth > 0;
  }, name);
  const got = await img.evaluate(async (i) => ({
    width: i.naturalWidth,
    height: i.naturalHeight,
    bytes: Array.from(new Uint8Array(await (await fetch(i.src)).arrayBuffer())),
    link: i.closest('.msg').querySelector('a.file').textContent,
  }));
  if (got.width !== width || got.height !== height) throw new Error(`${name}: shown as ${got.width}x${got.height}, not ${width}x${height}`);
  if (Buffer.from(got.bytes).compare(bytes) !== 0) throw new Error(`${name}: the bytes shown differ from the bytes shared (${got.bytes.length} vs ${bytes.length})`);
  if (got.link !== name) throw new Error(`${name}: its link says ${got.link}`);
}

// `from` types in the room on screen; `to` sees it, then sees it go without more typing.
async function typingShows(from, to, user) {
  await from.page.click('#text');
  // A typing notice is volatile: the server drops it for a connection that is busy at that
  // moment. So type again (the page sends one every 2 s at most) until it shows, four times
  // at most.
  const notice = to.page.locator('#typing', { hasText: `${user} is typing\u2026` });
  let shown = false;
  for (let i = 0; i < 4 && !shown; i++) {
    await from.page.keyboard.type('typing', { delay: 20 });
    shown = await notice.waitFor({ timeout: 2500 }).then(() => true, () => false);
  }
  if (!shown) throw new Error(`${user} typed for 10 s and the other page never said so`);
  await to.page.waitForFunction(() => document.getElementById('typing').textContent === '', null, { timeout: 6000 })
    .catch(() => { throw new Error(`the typing notice of ${user} stayed past 6 s`); });
  await from.page.fill('#text', '');
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

  // A status set on one page shows beside the name in the other's online list (both ways:
  // native and Socket.IO), and in the page's own header; the field's limit is the server's.
  await alice.page.waitForFunction(() => document.getElementById('statusText').maxLength === 64);
  await alice.page.fill('#statusText', 'in a meeting');
  await alice.page.click('#statusSet');
  await alice.page.locator('#myStatus', { hasText: 'in a meeting' }).waitFor();
  await bob.page.locator('#online li', { hasText: 'alice' }).locator('.user-status', { hasText: 'in a meeting' }).waitFor();
  await bob.page.fill('#statusText', 'lunch \u{1F35C}');
  await bob.page.click('#statusSet');
  await alice.page.locator('#online li', { hasText: 'bob' }).locator('.user-status', { hasText: 'lunch \u{1F35C}' }).waitFor();
  await alice.page.locator('#online li.me .user-status', { hasText: 'in a meeting' }).waitFor();
  // Cleared: gone at the other.
  await bob.page.fill('#statusText', '');
  await bob.page.click('#statusSet');
  await alice.page.waitForFunction(() => Array.from(document.querySelectorAll('#online li'))
    .some((li) => li.querySelector('.name').textContent === 'bob' && li.querySelector('.user-status').textContent === ''));
  // A page opened later gets the statuses on connect, and reads its own back with whoami.
  const carol = await open('carol', 'native');
  await carol.page.locator('#online li', { hasText: 'alice' }).locator('.user-status', { hasText: 'in a meeting' }).waitFor();
  await carol.context.close();
  // A status belongs to the connection: after a drop, the page asks whoami on the new one,
  // finds none, and sets its status again (the server has it back).
  await alice.page.evaluate(() => {
    window.chat.dropped = new Promise((resolve) => window.chat.client.once('reconnect', resolve));
    window.chat.client._ws.close(4000, 'test drop');
  });
  await alice.page.evaluate(() => window.chat.dropped);
  await alice.page.locator('#status.connected').waitFor();
  const deadline = Date.now() + WAIT;
  for (let polls = 0, status; status !== 'in a meeting'; polls++) {
    if (Date.now() > deadline) throw new Error(`after a reconnect, whoami says status ${JSON.stringify(status)}`);
    if (polls) await new Promise((r) => setTimeout(r, 300)); // poll under the event rate (5/s)
    status = (await alice.page.evaluate(() => window.chat.client.emitWithAck('whoami'))).status;
  }
  await alice.page.locator('#myStatus', { hasText: 'in a meeting' }).waitFor();
  await bob.page.locator('#online li', { hasText: 'alice' }).locator('.user-status', { hasText: 'in a meeting' }).waitFor();

  // Files: a PNG shows inline at the other, from the same bytes (native → Socket.IO and back);
  // another file is a download link; a file over the server's limit is refused by the page.
  await sharePng(alice, bob, 'dot.png', 3, 2);
  await sharePng(bob, alice, 'pixels.png', 5, 4);
  await share(bob.page, { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('just text\n') });
  const notes = alice.page.locator('#log .msg.file a.file[download="notes.txt"]');
  await notes.waitFor();
  if (await notes.locator('xpath=..').locator('img').count()) throw new Error('a text file shows as an image');
  await share(alice.page, { name: 'big.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(49153, 1) });
  await alice.page.locator('#log .error', { hasText: 'cannot share big.bin' }).waitFor();

  // Typing: the other page says who is typing in the room on screen, for about 3 s.
  await typingShows(alice, bob, 'alice');
  await typingShows(bob, alice, 'bob');

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
