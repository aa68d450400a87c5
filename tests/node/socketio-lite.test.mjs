// clients/js/socketio-lite.js (the small Socket.IO client of the demo page) in Node, against a
// server started by tests/socketio_interop.rs, next to the official socket.io-client. Run with
// `node --test`.
//
// Environment: BASE_URL (http://127.0.0.1:PORT), TOKENS (JSON: user -> JWT), BAD_TOKEN.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { io } from 'socket.io-client';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
const SocketIoLite = require('../../clients/js/socketio-lite.js');

const BASE = process.env.BASE_URL;
const TOKENS = JSON.parse(process.env.TOKENS || '{}');
const WAIT = 4000;
const opened = [];

function lite(user, opts = {}) {
  const c = new SocketIoLite(BASE.replace(/^http/, 'ws') + '/socket.io/', {
    token: TOKENS[user],
    WebSocket,
    minDelay: 50,
    maxDelay: 200,
    ...opts,
  });
  opened.push(c);
  return c;
}

function sio(user) {
  const s = io(BASE, { auth: { token: TOKENS[user] }, forceNew: true, transports: ['websocket'] });
  opened.push(s);
  return s;
}

/** Resolves with the next `event` (its first argument, or all of them when there are several). */
function next(emitter, event, ms = WAIT) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(t);
      resolve(args.length > 1 ? args : args[0]);
    });
  });
}

async function sioConnected(s) {
  if (!s.connected) await next(s, 'connect');
  return s;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test.after(() => opened.forEach((c) => c.close()));

test('connects with the token; a refused token gives connect_error and no reconnect', async () => {
  const a = lite('alice');
  const connected = next(a, 'connect');
  await a.connect();
  await connected;
  assert.equal(a.connected, true);
  assert.ok(a.id);

  const bad = lite('nobody', { token: process.env.BAD_TOKEN });
  let retries = 0;
  bad.on('reconnecting', () => retries++);
  const refused = next(bad, 'connect_error');
  await assert.rejects(bad.connect(), /token/);
  const err = await refused;
  assert.match(err.message, /token/);
  assert.equal(err.data.message, err.message);
  await sleep(300);
  assert.equal(retries, 0);
  assert.equal(bad.connected, false);
});

test('rooms: the lite client and socket.io-client talk both ways; binary both ways', async () => {
  const a = lite('alice');
  await a.connect();
  const b = await sioConnected(sio('bob'));
  assert.deepEqual(await a.emitWithAck('joinRoom', 'r1'), { event: 'joinedRoom', room: 'r1' });
  assert.ok(a.rooms.has('r1'));
  await b.emitWithAck('joinRoom', 'r1');

  const toSio = next(b, 'message');
  const toSelf = next(a, 'message');
  assert.deepEqual(await a.emitWithAck('message', { room: 'r1', text: 'from lite' }), { ok: true });
  assert.deepEqual(await toSio, { room: 'r1', text: 'from lite', sender: 'alice' });
  assert.deepEqual(await toSelf, { room: 'r1', text: 'from lite', sender: 'alice' });

  const toLite = next(a, 'message');
  b.emit('message', { room: 'r1', text: 'from socket.io' });
  assert.deepEqual(await toLite, { room: 'r1', text: 'from socket.io', sender: 'bob' });

  // A fire-and-forget emit goes out too.
  const pm = next(b, 'privateMessage');
  a.emit('privateMessage', { to: 'bob', message: 'psst' });
  assert.deepEqual(await pm, { from: 'alice', message: 'psst' });

  // Binary, both ways (kept in this test: tests/socketio_interop.rs counts six tests). Typed
  // arrays and ArrayBuffers, nested, go as a 45<n>- packet and its frames; the ack comes back as
  // a 46<n>- packet, the event as a 45<n>- one, with ArrayBuffers in place.
  const bytes = new Uint8Array([0, 1, 127, 128, 254, 255]);
  const view = new Uint8Array([9, 8, 7, 6, 5]).subarray(1, 4); // a view: its own bytes only
  const sent = { label: 'file', data: bytes, nested: [{ raw: new Uint16Array([258]).buffer }, view] };
  const echoed = await a.emitWithAck('echoBinary', sent);
  assert.equal(echoed.label, 'file');
  assert.ok(echoed.data instanceof ArrayBuffer, 'binary arrives as an ArrayBuffer');
  assert.deepEqual([...new Uint8Array(echoed.data)], [...bytes]);
  assert.ok(echoed.nested[0].raw instanceof ArrayBuffer);
  assert.deepEqual([...new Uint16Array(echoed.nested[0].raw)], [258]);
  assert.deepEqual([...new Uint8Array(echoed.nested[1])], [8, 7, 6]);
  const back = next(a, 'binaryBack');
  a.emit('emitBinary', { name: 'x.bin', data: new TextEncoder().encode('xyz') });
  const got = await back;
  assert.equal(got.name, 'x.bin');
  assert.equal(new TextDecoder().decode(got.data), 'xyz');
  // Plain events still work after binary ones (nothing is left waiting for frames).
  assert.deepEqual(await a.emitWithAck('joinRoom', 'r2'), { event: 'joinedRoom', room: 'r2' });

  // Malformed binary packets are dropped, never waited for (a fake socket feeds the frames).
  const sentFrames = [];
  class FakeSocket {
    constructor() { this.readyState = 1; setTimeout(() => this.onmessage({ data: '0{"sid":"s","pingInterval":25000,"pingTimeout":20000}' })); }
    send(f) { sentFrames.push(f); if (f === '40') setTimeout(() => this.onmessage({ data: '40{"sid":"x"}' })); }
    close() { this.readyState = 3; }
  }
  const fake = new SocketIoLite('ws://127.0.0.1:9/socket.io/', { WebSocket: FakeSocket, reconnect: false });
  const feed = (data) => fake._ws.onmessage({ data });
  const errors = [];
  const origError = console.error;
  console.error = (m) => errors.push(String(m));
  try {
    await fake.connect();
    const seen = [];
    fake.on('file', (d) => seen.push(d));
    feed('451000-["file",{"_placeholder":true,"num":0}]'); // too many attachments
    feed(new ArrayBuffer(1));
    feed('45x-["file",1]'); // not a count
    feed('451-["file",{"_placeholder":true,"num":3}]'); // names no frame
    feed(new Uint8Array([1]).buffer);
    feed('452-["file",{"_placeholder":true,"num":0}]'); // its second frame never comes
    feed(new ArrayBuffer(1));
    feed('42["file","plain"]');
    feed('451-["file",{"_placeholder":true,"num":0}]'); // well formed
    feed(new Uint8Array([42]).buffer);
    assert.equal(seen.length, 2, `only the two good packets are dispatched: ${JSON.stringify(seen)}`);
    assert.equal(seen[0], 'plain');
    assert.deepEqual([...new Uint8Array(seen[1])], [42]);
    assert.equal(errors.length, 4, errors.join('\n'));
    // An ack with binary goes as 46<n>-<id> and its frame.
    fake.on('ask', (ack) => ack({ bytes: new Uint8Array([1, 2]) }));
    sentFrames.length = 0;
    feed('427["ask"]');
    assert.equal(sentFrames[0], '461-7[{"bytes":{"_placeholder":true,"num":0}}]');
    assert.deepEqual([...new Uint8Array(sentFrames[1].buffer, sentFrames[1].byteOffset, sentFrames[1].byteLength)], [1, 2]);
  } finally {
    console.error = origError;
    fake.close();
  }
});

test('an error answering a request rejects it; without an ack it is an error event', async () => {
  const a = lite('carol');
  await a.connect();
  const err = await a.emitWithAck('joinRoom', '').then(
    () => assert.fail('the join of an empty room succeeded'),
    (e) => e,
  );
  assert.ok(err instanceof Error);
  assert.equal(err.data.status, 'error');
  assert.equal(err.message, err.data.message);
  assert.equal(a.rooms.has(''), false, 'a refused room is not remembered');

  const event = next(a, 'error');
  a.emit('message', { room: 'elsewhere', text: 'hi' });
  const data = await event;
  assert.equal(data.status, 'error');
  assert.equal(data.message, 'not in room');
});

test('the server asks, a listener answers through ack()', async () => {
  const a = lite('dave');
  await a.connect();
  a.on('question', (n, ack) => {
    assert.equal(typeof ack, 'function');
    ack(n * 2);
    ack(0); // only the first answer counts
  });
  assert.deepEqual(await a.emitWithAck('askMe', 21), { answer: 42 });
});

test('reconnects after the server drops the transport, and rejoins its rooms', async () => {
  const a = lite('erin');
  await a.connect();
  const peer = await sioConnected(sio('frank'));
  await a.emitWithAck('joinRoom', 'again');
  await peer.emitWithAck('joinRoom', 'again');
  const firstId = a.id;

  const down = next(a, 'disconnect');
  const reconnecting = next(a, 'reconnecting');
  const back = next(a, 'reconnect');
  a.emit('dropMe');
  const info = await down;
  assert.equal(typeof info.code, 'number');
  assert.equal(a.connected, false);
  assert.ok((await reconnecting).attempt >= 1);
  await back;
  assert.equal(a.connected, true);
  assert.notEqual(a.id, firstId);

  // The rejoin is sent before anything else: the room's messages reach the new connection.
  await a.emitWithAck('message', { room: 'again', text: 'still here' });
  const got = next(a, 'message');
  await peer.emitWithAck('message', { room: 'again', text: 'welcome back' });
  assert.deepEqual(await got, { room: 'again', text: 'welcome back', sender: 'frank' });
});

test('events emitted while disconnected are sent once connected; close() is final', async () => {
  const a = lite('grace');
  const peer = await sioConnected(sio('bob'));
  await peer.emitWithAck('joinRoom', 'queued');
  const joined = a.emitWithAck('joinRoom', 'queued'); // before connect(): queued
  const got = next(peer, 'message');
  a.emit('message', { room: 'queued', text: 'sent later' });
  await a.connect();
  assert.deepEqual(await joined, { event: 'joinedRoom', room: 'queued' });
  assert.deepEqual(await got, { room: 'queued', text: 'sent later', sender: 'grace' });

  let retries = 0;
  a.on('reconnecting', () => retries++);
  const down = next(a, 'disconnect');
  a.close();
  assert.equal((await down).code, 1000);
  assert.equal(a.connected, false);
  await assert.rejects(a.emitWithAck('joinRoom', 'x', { timeout: 200 }), /ack timeout/);
  await sleep(300);
  assert.equal(retries, 0);
});
