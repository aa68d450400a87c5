// Binary payloads with the official socket.io-client, against a server started by
// tests/binary.rs. Run with `node --test`.
//
// Environment: BASE_URL (http://127.0.0.1:PORT), TOKENS (JSON: user -> JWT).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { io } from 'socket.io-client';
import WebSocket from 'ws';

const BASE = process.env.BASE_URL;
const TOKENS = JSON.parse(process.env.TOKENS || '{}');
const opened = [];
const BYTES = [0, 1, 2, 127, 128, 254, 255];

function client(user) {
  const s = io(BASE, { auth: { token: TOKENS[user] }, forceNew: true, reconnection: false });
  opened.push(s);
  return s;
}

function once(emitter, event, ms = 4000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (arg) => {
      clearTimeout(t);
      resolve(arg);
    });
  });
}

async function connected(s) {
  if (!s.connected) await once(s, 'connect');
  return s;
}

function assertBuffer(value, bytes) {
  assert.ok(Buffer.isBuffer(value), `a Buffer: ${value}`);
  assert.deepEqual([...value], bytes);
}

test.after(() => opened.forEach((s) => s.close()));

test('a Buffer sent in fills a Bytes field; the ack and a room emit carry it back as a Buffer', async () => {
  const a = await connected(client('alice'));
  const b = await connected(client('bob'));
  assert.equal(await b.emitWithAck('join', 'files'), 'files');
  const roomGot = once(b, 'file');
  const ack = await a.emitWithAck('share', { name: 'a.bin', file: Buffer.from(BYTES) });
  assert.equal(ack.name, 'a.bin');
  assertBuffer(ack.file, BYTES);
  const got = await roomGot;
  assert.equal(got.name, 'a.bin');
  assertBuffer(got.file, BYTES);
});

test('socket.emit carries a Buffer', async () => {
  const a = await connected(client('carol'));
  const got = once(a, 'file');
  a.emit('sendMe', { name: 'me.bin', file: new Uint8Array([9, 8, 7]) });
  const file = await got;
  assert.equal(file.name, 'me.bin');
  assertBuffer(file.file, [9, 8, 7]);
});

test("the client's answer to a server emit carries a Buffer", async () => {
  const a = await connected(client('alice'));
  a.on('give', (_question, ack) => ack({ name: 'given', file: Buffer.from([7, 0, 7]) }));
  const file = await a.emitWithAck('askFile');
  assert.equal(file.name, 'given');
  assertBuffer(file.file, [7, 0, 7]);
});

test('a handler taking untyped JSON refuses binary with a clear error', async () => {
  const a = await connected(client('dave'));
  const err = await a.emitWithAck('untyped', { file: Buffer.from([1]) });
  assert.equal(err.status, 'error');
  assert.match(err.message, /attachment 0 is binary/);
  assert.match(err.message, /Bytes/);
  // The connection goes on.
  assert.equal(await a.emitWithAck('echo', 'still here'), 'still here');
});

test('the native client (clients/js/realtime.js) sends and gets binary as ArrayBuffers', async () => {
  const require = createRequire(import.meta.url);
  const RealtimeClient = require('../../clients/js/realtime.js');
  const url = BASE.replace(/^http/, 'ws') + '/ws';
  const native = (user) => {
    const c = new RealtimeClient(url, { token: TOKENS[user], WebSocket, recover: false, reconnect: false, joinEvent: 'join' });
    opened.push(c);
    return c;
  };
  const a = native('erin');
  const b = native('frank');
  await a.connect();
  await b.connect();
  assert.equal(await b.emitWithAck('join', 'files'), 'files');
  // A Socket.IO member of the same room gets a Buffer.
  const s = await connected(client('grace'));
  assert.equal(await s.emitWithAck('join', 'files'), 'files');
  const nativeGot = once(b, 'file');
  const sioGot = once(s, 'file');
  const ack = await a.emitWithAck('share', { name: 'n.bin', file: new Uint8Array(BYTES) });
  assert.ok(ack.file instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(ack.file)], BYTES);
  const got = await nativeGot;
  assert.equal(got.name, 'n.bin');
  assert.deepEqual([...new Uint8Array(got.file)], BYTES);
  assertBuffer((await sioGot).file, BYTES);
  // Its answer to a server emit carries binary too.
  b.on('give', (_question, ack) => ack({ name: 'given', file: new Uint8Array([5, 6]).buffer }));
  const given = await b.emitWithAck('askFile');
  assert.equal(given.name, 'given');
  assert.deepEqual([...new Uint8Array(given.file)], [5, 6]);
});
