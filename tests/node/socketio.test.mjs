// Interop with the official socket.io-client (and a plain `ws` client for the native protocol),
// against a server started by tests/socketio_interop.rs. Run with `node --test`.
//
// Environment: BASE_URL (http://127.0.0.1:PORT), TOKENS (JSON: user -> JWT), BAD_TOKEN.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { connected, once } from './waits.mjs';
import WebSocket from 'ws';

const BASE = process.env.BASE_URL;
const TOKENS = JSON.parse(process.env.TOKENS || '{}');
const opened = [];

function client(user, opts = {}) {
  const s = io(BASE, { auth: { token: TOKENS[user] }, forceNew: true, reconnectionDelay: 100, ...opts });
  opened.push(s);
  return s;
}

test.after(() => opened.forEach((s) => s.close()));

test('connects with auth.token; a refused token gives connect_error', async () => {
  const a = await connected(client('alice'));
  assert.ok(a.id);
  const bad = io(BASE, { auth: { token: process.env.BAD_TOKEN }, forceNew: true, reconnection: false });
  opened.push(bad);
  const err = await once(bad, 'connect_error');
  assert.match(err.message, /token/);
  assert.equal(bad.connected, false);
});

test('rooms: join, message, received by another client', async () => {
  const a = await connected(client('alice'));
  const b = await connected(client('bob'));
  assert.deepEqual(await a.emitWithAck('joinRoom', 'r1'), { event: 'joinedRoom', room: 'r1' });
  await b.emitWithAck('joinRoom', 'r1');
  const got = once(b, 'message');
  await a.emitWithAck('message', { room: 'r1', text: 'hello' });
  assert.deepEqual(await got, { room: 'r1', text: 'hello', sender: 'alice' });
});

test('acks in both directions', async () => {
  const a = await connected(client('alice'));
  // Client -> server, with an error as the ack's argument.
  const err = await a.emitWithAck('joinRoom', '');
  assert.equal(err.status, 'error');
  // Server -> client: the server asks, the client's callback answers.
  a.on('question', (q, ack) => ack(q * 2));
  assert.deepEqual(await a.emitWithAck('askMe', 21), { answer: 42 });
});

test('binary payloads round-trip', async () => {
  const a = await connected(client('alice'));
  // A callback gets every argument of the ack (emitWithAck resolves with the first only).
  const [text, buf] = await new Promise((resolve) =>
    a.emit('echoBinary', 'label', Buffer.from([0, 1, 254, 255]), (...args) => resolve(args)),
  );
  assert.equal(text, 'label');
  assert.ok(Buffer.isBuffer(buf));
  assert.deepEqual([...buf], [0, 1, 254, 255]);
  const back = once(a, 'binaryBack');
  a.emit('emitBinary', Buffer.from('xyz'));
  const payload = await back;
  assert.equal(Buffer.from(payload).toString(), 'xyz');
});

test('a private message reaches every tab of the user', async () => {
  const tab1 = await connected(client('carol'));
  const tab2 = await connected(client('carol', { transports: ['websocket'] }));
  const a = await connected(client('alice'));
  const got = [once(tab1, 'privateMessage'), once(tab2, 'privateMessage')];
  assert.deepEqual(await a.emitWithAck('privateMessage', { to: 'carol', message: 'hi', from: 'mallory' }), { delivered: 2 });
  for (const m of await Promise.all(got)) assert.deepEqual(m, { from: 'alice', message: 'hi' });
});

test('polling only, websocket only, and the upgrade', async () => {
  const polling = await connected(client('dave', { transports: ['polling'] }));
  assert.equal(polling.io.engine.transport.name, 'polling');
  assert.deepEqual(await polling.emitWithAck('joinRoom', 'p'), { event: 'joinedRoom', room: 'p' });

  const ws = await connected(client('dave', { transports: ['websocket'] }));
  assert.equal(ws.io.engine.transport.name, 'websocket');
  assert.deepEqual(await ws.emitWithAck('joinRoom', 'w'), { event: 'joinedRoom', room: 'w' });

  const up = await connected(client('dave'));
  if (up.io.engine.transport.name !== 'websocket') await once(up.io.engine, 'upgrade');
  assert.equal(up.io.engine.transport.name, 'websocket');
  assert.deepEqual(await up.emitWithAck('joinRoom', 'u'), { event: 'joinedRoom', room: 'u' });
});

test('reconnects by itself after the server drops the connection', async () => {
  const s = await connected(client('erin'));
  const firstId = s.id;
  const down = once(s, 'disconnect');
  s.emit('dropMe');
  const [reason] = await down;
  assert.equal(reason, 'transport close');
  await once(s, 'connect', 6000);
  assert.notEqual(s.id, firstId);
  assert.deepEqual(await s.emitWithAck('joinRoom', 'back'), { event: 'joinedRoom', room: 'back' });
});

test('a room emit waits for every answer: one, several arguments, silence', async () => {
  const [asker, one, two, silent] = await Promise.all(
    ['alice', 'bob', 'carol', 'dave'].map((u) => connected(client(u))),
  );
  for (const s of [asker, one, two, silent]) await s.emitWithAck('joinRoom', 'polls');
  one.on('poll', (room, cb) => cb(`bob in ${room}`));
  two.on('poll', (room, cb) => cb(room, 2));
  silent.on('poll', () => {});
  const got = await asker.emitWithAck('askRoom', 'polls');
  const answered = got.answered.map((a) => JSON.stringify(a)).sort();
  assert.deepEqual(answered, [JSON.stringify('bob in polls'), JSON.stringify(['polls', 2])].sort());
  assert.equal(got.silent, 1);
});

test('a native client and a Socket.IO client share a room', async () => {
  const sio = await connected(client('frank'));
  await sio.emitWithAck('joinRoom', 'mixed');
  const native = new WebSocket(BASE.replace('http', 'ws') + '/ws', ['realtime', 'bearer.' + TOKENS.grace]);
  await once(native, 'open');
  const frames = [];
  const waiters = [];
  native.on('message', (raw) => {
    const f = JSON.parse(raw.toString());
    frames.push(f);
    waiters.splice(0).forEach((w) => w());
  });
  const next = async (pred) => {
    for (;;) {
      const i = frames.findIndex(pred);
      if (i >= 0) return frames.splice(i, 1)[0];
      await new Promise((r, j) => { waiters.push(r); setTimeout(() => j(new Error('no native frame')), 4000); });
    }
  };
  native.send(JSON.stringify({ event: 'joinRoom', data: 'mixed', id: 1 }));
  assert.deepEqual((await next((f) => f.ack === 1)).data, { event: 'joinedRoom', room: 'mixed' });

  const toSio = once(sio, 'message');
  native.send(JSON.stringify({ event: 'message', data: { room: 'mixed', text: 'from native' }, id: 2 }));
  assert.deepEqual(await toSio, { room: 'mixed', text: 'from native', sender: 'grace' });

  await sio.emitWithAck('message', { room: 'mixed', text: 'from sio' });
  const f = await next((f) => f.event === 'message' && f.data.text === 'from sio');
  assert.deepEqual(f.data, { room: 'mixed', text: 'from sio', sender: 'frank' });
  native.close();
});
