// The JavaScript client (clients/js/realtime.js) in Node, against a live server:
//
//   node tests/browser/client.test.mjs http://127.0.0.1:PORT
//
// The server is the one tests/browser.rs starts: JWT auth, the handlers `joinRoom`,
// `leaveRoom`, `echo` (acks its data and emits it back as `echoed`) and `slow` (acks after the
// given milliseconds), and test routes: `GET /token/{user}`, `POST /disconnect/{user}`,
// `POST /ask/{user}` (emits its body to the user as `question`, with a server ack, and answers
// with the client's ack), `GET /rooms/{room}` (the users in a room) and `POST /emit/{room}`
// (emits its body to the room as `news`). The hub keeps a history of every room.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
const RealtimeClient = require('../../clients/js/realtime.js');

const base = process.argv[2];
if (!base) {
  console.error('usage: node client.test.mjs <server url>');
  process.exit(2);
}
const wsUrl = base.replace(/^http/, 'ws') + '/ws';
const WAIT = 5000;

// The whole run is bounded, whatever hangs.
setTimeout(() => {
  console.error('client.test: timed out after 60 s');
  process.exit(1);
}, 60_000).unref();

async function token(user) {
  const res = await fetch(`${base}/token/${user}`);
  assert.equal(res.status, 200);
  return res.text();
}

function client(options) {
  return new RealtimeClient(wsUrl, { WebSocket, ...options });
}

/** Resolves with the next `event` the client dispatches (its first argument). */
function next(c, event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} in time`)), WAIT);
    c.once(event, (arg) => {
      clearTimeout(timer);
      resolve(arg);
    });
  });
}

async function eventually(check, what) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`not in time: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('connects with a token, as a subprotocol or in the query', async () => {
  const a = client({ token: await token('alice') });
  await a.connect();
  assert.ok(a.connected);
  assert.deepEqual(await a.emitWithAck('echo', { n: 1 }), { n: 1 });

  const b = client({ token: () => token('alice'), tokenTransport: 'query' });
  await b.connect();
  assert.equal(await b.emitWithAck('echo', 'q'), 'q');
  a.close();
  b.close();
  assert.ok(!a.connected);
});

test('a bad token is refused, and without reconnect connect() rejects', async () => {
  const c = client({ token: 'not-a-token', reconnect: false });
  await assert.rejects(c.connect(), /connection closed/);
});

test('emitWithAck: acks, error events, timeouts', async () => {
  const c = client({ token: await token('bob') });
  await c.connect();
  assert.deepEqual(await c.emitWithAck('echo', [1, 2]), [1, 2]);

  const err = await c.emitWithAck('noSuchEvent', null).catch((e) => e);
  assert.ok(err instanceof Error);
  assert.equal(err.data.status, 'error');

  const started = Date.now();
  await assert.rejects(c.emitWithAck('slow', 300, { timeout: 50 }), /ack timeout/);
  assert.ok(Date.now() - started < 250, 'the timeout fired before the server answered');
  // The connection is fine afterwards; the late answer is ignored.
  assert.equal(await c.emitWithAck('echo', 'after'), 'after');
  c.close();
});

test('on, once and off', async () => {
  const c = client({ token: await token('dave') });
  await c.connect();
  const seen = [];
  const onEchoed = (data) => seen.push(data);
  c.on('echoed', onEchoed);
  let onceCalls = 0;
  c.once('echoed', () => onceCalls++);

  // The server emits `echoed` before its ack, on the same connection: by the time the ack
  // arrives, the event has been dispatched.
  await c.emitWithAck('echo', 1);
  await c.emitWithAck('echo', 2);
  assert.deepEqual(seen, [1, 2]);
  assert.equal(onceCalls, 1);

  c.off('echoed', onEchoed);
  await c.emitWithAck('echo', 3);
  assert.deepEqual(seen, [1, 2], 'no call after off()');
  c.close();
});

test('server acks: a listener answers with ack(data), once', async () => {
  const c = client({ token: await token('erin') });
  await c.connect();
  c.on('question', (q, ack) => {
    assert.equal(typeof ack, 'function');
    ack({ answer: q.n + 1 });
    ack({ answer: 'again' }); // ignored: the first call answers
  });
  const ask = async (question) =>
    (await fetch(`${base}/ask/erin`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(question),
    })).json();
  assert.deepEqual(await ask({ n: 41 }), { answer: 42 });
  assert.deepEqual(await ask({ n: 1 }), { answer: 2 });
  // Events without an id get no ack function.
  let ackArg = 'unset';
  c.once('echoed', (data, ack) => { ackArg = ack; });
  await c.emitWithAck('echo', 'x');
  assert.equal(ackArg, undefined);
  c.close();
});

test('reconnects with backoff after the server drops it, and rejoins its rooms', async () => {
  let tokens = 0;
  const c = client({
    token: () => { tokens++; return token('carol'); },
    minDelay: 50,
    maxDelay: 200,
  });
  await c.connect();
  assert.deepEqual(await c.emitWithAck('joinRoom', 'general'), { room: 'general' });
  const roomUsers = async () => (await fetch(`${base}/rooms/general`)).json();
  assert.deepEqual(await roomUsers(), ['carol']);

  const disconnected = next(c, 'disconnect');
  const reconnecting = next(c, 'reconnecting');
  const reconnected = next(c, 'reconnect');
  const res = await fetch(`${base}/disconnect/carol`, { method: 'POST' });
  assert.deepEqual(await res.json(), { closed: 1 });

  assert.equal((await disconnected).code, 4000, 'disconnect_user closes with 4000');
  const backoff = await reconnecting;
  assert.equal(backoff.attempt, 1);
  assert.ok(backoff.delay >= 50 && backoff.delay <= 200, `delay ${backoff.delay}`);
  assert.equal((await reconnected).attempt, 1);
  assert.ok(c.connected);
  assert.equal(tokens, 2, 'a fresh token for the new connection');
  assert.ok(c.rooms.has('general'));
  await eventually(async () => (await roomUsers()).includes('carol'), 'carol back in general');
  c.close();
});

test('recovers after a drop: missed events once, in order, rooms restored; else resync', async () => {
  const c = client({ token: () => token('dave'), minDelay: 200, maxDelay: 400 });
  const got = [];
  c.on('news', (n) => got.push(n));
  await c.connect();
  await c.emitWithAck('joinRoom', 'news');
  const post = async (n) => {
    const res = await fetch(`${base}/emit/news`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(n),
    });
    assert.equal(res.status, 200);
  };
  await post(1);
  await eventually(() => got.length === 1, 'the first news');

  // A network drop (no close frame); news keeps coming while the client is away.
  const recovered = next(c, 'recovered');
  c._ws.terminate();
  for (const n of [2, 3, 4]) await post(n);
  const news = await recovered;
  assert.deepEqual(news.rooms, ['news']);
  await eventually(() => got.length === 4, 'the missed news');
  await post(5);
  await eventually(() => got.length === 5, 'live news after the replay');
  assert.deepEqual(got, [1, 2, 3, 4, 5], 'each once, in order');

  // A position the server cannot honour (here: another epoch): told to resync, and the
  // client re-joins its rooms itself.
  const resync = next(c, 'resync');
  c._session.epoch = 'another-epoch';
  c._ws.terminate();
  assert.match((await resync).reason, /epoch/);
  await eventually(async () => (await (await fetch(`${base}/rooms/news`)).json()).includes('dave'), 'dave back in news');
  await post(6);
  await eventually(() => got.length === 6, 'live news after the resync');
  c.close();
});
