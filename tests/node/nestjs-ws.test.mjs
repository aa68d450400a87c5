// A client written the way the NestJS guide writes one for `@nestjs/platform-ws` (the `ws`
// package), unchanged, against the hub of tests/connection_state.rs (`nestjs_hub`): events
// without ids, replies as frames of their own, errors as `exception` events. Run with
// `node --test`.
//
// Environment: URL (ws://127.0.0.1:PORT/ws).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';

const URL = process.env.URL;
const WAIT = 4000;

/** Opens a client and collects what it receives, NestJS-style: `const { event, ... } = JSON.parse(m.data)`. */
function client() {
  const ws = new WebSocket(URL);
  const inbox = [];
  const waiting = [];
  ws.onmessage = (m) => {
    const { event, ...rest } = JSON.parse(m.data);
    const frame = { event, ...rest };
    const i = waiting.findIndex((w) => w.event === event);
    if (i >= 0) waiting.splice(i, 1)[0].resolve(frame);
    else inbox.push(frame);
  };
  const next = (event) => {
    const i = inbox.findIndex((f) => f.event === event);
    if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${event} in time`)), WAIT);
      waiting.push({ event, resolve: (f) => { clearTimeout(timer); resolve(f); } });
    });
  };
  const open = new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  return { ws, next, open };
}

test('a NestJS ws client joins a room, messages, and hears exceptions', async () => {
  const a = client();
  const b = client();
  await Promise.all([a.open, b.open]);

  a.ws.send(JSON.stringify({ event: 'joinRoom', data: 'general' }));
  assert.deepEqual(await a.next('joinedRoom'), { event: 'joinedRoom', room: 'general' });

  b.ws.send(JSON.stringify({ event: 'joinRoom', data: 'general' }));
  assert.deepEqual(await b.next('joinedRoom'), { event: 'joinedRoom', room: 'general' });
  const joined = await a.next('userJoined');
  assert.equal(joined.data.room, 'general');

  a.ws.send(JSON.stringify({ event: 'message', data: 'hello' }));
  assert.deepEqual(await a.next('message'), { event: 'message', data: 'Message received: hello' });

  a.ws.send(JSON.stringify({ event: 'forbidden' }));
  assert.deepEqual(await a.next('exception'), {
    event: 'exception',
    data: { status: 'error', message: 'no' },
  });

  a.ws.close();
  b.ws.close();
});
