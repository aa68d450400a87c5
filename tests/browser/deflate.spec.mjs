// permessage-deflate in a real browser: Debian's Chromium, driven by playwright-core.
//
//   node tests/browser/deflate.spec.mjs http://127.0.0.1:3000
//
// The page (the app's /hello) opens a native WebSocket to /ws on a hub with compression on;
// the script checks that the browser agreed permessage-deflate and that messages of every
// size come back intact (the hub echoes them). Prints one JSON line with what it saw. Exits
// non-zero on any failure.

import { chromium } from 'playwright-core';

const base = process.argv[2];
if (!base) {
  console.error('usage: node deflate.spec.mjs <server url>');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

setTimeout(() => {
  console.error('deflate.spec: timed out after 60 s');
  process.exit(1);
}, 60_000).unref();

const browser = await chromium.launch({
  executablePath,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
});
let failed = false;
try {
  const page = await browser.newPage();
  await page.goto(`${base}/hello`);
  const url = `${base.replace(/^http/, 'ws')}/ws`;
  const seen = await page.evaluate(async (url) => {
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error('the WebSocket failed'));
    });
    const rows = Array.from({ length: 300 }, (_, i) => ({ i, room: 'lobby', text: `the quick brown fox ${i}` }));
    const sent = [
      JSON.stringify({ event: 'echo', data: rows }),
      'short',
      JSON.stringify({ event: 'echo', data: 'é'.repeat(5000) }),
    ];
    const got = [];
    const all = new Promise((resolve) => {
      ws.onmessage = (e) => {
        got.push(e.data);
        if (got.length === sent.length) resolve();
      };
    });
    sent.forEach((m) => ws.send(m));
    await Promise.race([all, new Promise((r) => setTimeout(r, 5000))]);
    ws.close(1000);
    return {
      extensions: ws.extensions,
      intact: got.length === sent.length && got.every((m, i) => m === sent[i]),
      sizes: sent.map((m) => m.length),
      received: got.length,
    };
  }, url);
  console.log(JSON.stringify(seen));
  if (!seen.extensions.startsWith('permessage-deflate')) {
    throw new Error(`no permessage-deflate agreed: extensions "${seen.extensions}"`);
  }
  if (!seen.intact) throw new Error(`messages did not come back intact: ${JSON.stringify(seen)}`);
} catch (e) {
  console.error(e);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
