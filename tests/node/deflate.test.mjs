// permessage-deflate with the official socket.io-client (its WebSocket is the `ws` package,
// which offers the extension), against a hub with compression on, started by
// tests/socketio_interop.rs. Run with `node --test`.
//
// Environment: BASE_URL (http://127.0.0.1:PORT), TOKENS (JSON: user -> JWT).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

const BASE = process.env.BASE_URL;
const TOKENS = JSON.parse(process.env.TOKENS || '{}');
const opened = [];

function client(user, transports) {
  const s = io(BASE, { auth: { token: TOKENS[user] }, forceNew: true, reconnection: false, transports });
  opened.push(s);
  return s;
}

function connected(s) {
  if (s.connected) return Promise.resolve(s);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no connect within 4 s')), 4000);
    s.once('connect', () => {
      clearTimeout(t);
      resolve(s);
    });
    s.once('connect_error', (e) => reject(e));
  });
}

function upgraded(s) {
  if (s.io.engine.transport.name === 'websocket') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no upgrade within 4 s')), 4000);
    s.io.engine.once('upgrade', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

/// What the engine's WebSocket agreed (`ws` lists the extensions by name).
function extensions(s) {
  const transport = s.io.engine.transport;
  assert.equal(transport.name, 'websocket');
  return transport.ws.extensions;
}

const rows = Array.from({ length: 300 }, (_, i) => ({ i, room: 'lobby', text: `the quick brown fox ${i}` }));

test.after(() => opened.forEach((s) => s.close()));

test('a WebSocket from the start agrees permessage-deflate; large and small payloads arrive intact', async () => {
  const s = await connected(client('alice', ['websocket']));
  assert.match(extensions(s), /permessage-deflate/);
  assert.deepEqual(await s.emitWithAck('echo', rows), rows);
  assert.deepEqual(await s.emitWithAck('echo', 'short'), 'short');
  const text = 'é'.repeat(5000);
  const echoed = new Promise((resolve) => s.once('echoed', resolve));
  assert.equal(await s.emitWithAck('echo', text), text);
  assert.equal(await echoed, text);
});

test('a session upgraded from polling agrees it too', async () => {
  const s = await connected(client('bob', ['polling', 'websocket']));
  await upgraded(s);
  assert.match(extensions(s), /permessage-deflate/);
  assert.deepEqual(await s.emitWithAck('echo', rows), rows);
});
