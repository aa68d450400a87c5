// The chat demo's events that carry per-connection state, binary files and volatile typing
// indicators, with the official socket.io-client, against the demo started by
// tests/chat_demo.rs. Run with `node --test`.
//
// Environment: BASE_URL (http://127.0.0.1:PORT), TOKENS (JSON: user -> JWT).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { connected, once } from './waits.mjs';
import WebSocket from 'ws';

const BASE = process.env.BASE_URL;
const TOKENS = JSON.parse(process.env.TOKENS || '{}');
const opened = [];

function client(user) {
  const s = io(BASE, { auth: { token: TOKENS[user] }, forceNew: true, reconnection: false });
  opened.push(s);
  return s;
}

test.after(() => opened.forEach((s) => s.close()));

test('setStatus keeps a status in the connection; whoami reads it; everyone sees it', async () => {
  const a = await connected(client('alice'));
  const b = await connected(client('bob'));
  assert.deepEqual(await a.emitWithAck('whoami'), { userId: 'alice', status: null });
  const seen = once(b, 'status');
  assert.deepEqual(await a.emitWithAck('setStatus', 'coding'), { event: 'statusSet', status: 'coding' });
  assert.deepEqual(await seen, { userId: 'alice', status: 'coding' });
  assert.deepEqual(await a.emitWithAck('whoami'), { userId: 'alice', status: 'coding' });
  const err = await a.emitWithAck('setStatus', 'x'.repeat(65));
  assert.equal(err.status, 'error');
  assert.equal(err.message, 'status: at most 64 characters');
  // A newcomer gets the statuses right after the online list.
  const c = client('carol');
  const statuses = once(c, 'statuses');
  await connected(c);
  assert.deepEqual(await statuses, { alice: 'coding' });
});

test('shareFile sends a Buffer to the room\'s other members as a Buffer', async () => {
  const a = await connected(client('dave'));
  const b = await connected(client('erin'));
  const outsider = await connected(client('frank'));
  await a.emitWithAck('joinRoom', 'files');
  await b.emitWithAck('joinRoom', 'files');
  let outsiderGot = false;
  outsider.on('fileShared', () => { outsiderGot = true; });
  let senderGot = false;
  a.on('fileShared', () => { senderGot = true; });

  const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 255, 128]);
  const got = once(b, 'fileShared');
  const ack = await a.emitWithAck('shareFile', { room: 'files', name: 'dot.png', data: png });
  assert.deepEqual(ack, { event: 'fileShared', delivered: 1 });
  const file = await got;
  assert.equal(file.from, 'dave');
  assert.equal(file.room, 'files');
  assert.equal(file.name, 'dot.png');
  assert.ok(Buffer.isBuffer(file.data), `a Buffer: ${typeof file.data}`);
  assert.deepEqual([...file.data], [...png]);

  const tooBig = await a.emitWithAck('shareFile', { room: 'files', name: 'big', data: Buffer.alloc(49153) });
  assert.equal(tooBig.message, 'data: at most 49152 bytes');
  // Answered in order: had frank or dave been sent the file, it would have come by now.
  await outsider.emitWithAck('whoami');
  await a.emitWithAck('whoami');
  assert.equal(outsiderGot, false);
  assert.equal(senderGot, false);
});

test('typing reaches the room\'s other members, not the sender', async () => {
  const a = await connected(client('grace'));
  const b = await connected(client('bob'));
  await a.emitWithAck('joinRoom', 'typing');
  await b.emitWithAck('joinRoom', 'typing');
  let senderGot = false;
  a.on('typing', () => { senderGot = true; });
  const got = once(b, 'typing');
  a.emit('typing', { room: 'typing' });
  assert.deepEqual(await got, { userId: 'grace', room: 'typing' });
  await a.emitWithAck('whoami');
  assert.equal(senderGot, false);
});

// The demo serves permessage-deflate (COMPRESSION=off turns it off): both clients agree it
// and a long message, compressed both ways, arrives intact.
test('socket.io-client and ws agree permessage-deflate with the demo; long messages arrive intact', async () => {
  const text = 'a long chat message, compressed on the way in and on the way out. '.repeat(12);
  const s = io(BASE, { auth: { token: TOKENS.erin }, forceNew: true, reconnection: false, transports: ['websocket'] });
  opened.push(s);
  await connected(s);
  assert.match(s.io.engine.transport.ws.extensions, /permessage-deflate/);
  await s.emitWithAck('joinRoom', 'deflate');
  const back = once(s, 'message');
  await s.emitWithAck('message', { room: 'deflate', text });
  // Kept in the history, it carries its offset as a last argument.
  const [got] = await back;
  assert.equal(got.text, text);

  const url = BASE.replace('http', 'ws') + '/ws?token=' + TOKENS.frank;
  const ws = new WebSocket(url, { perMessageDeflate: true });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  try {
    assert.match(ws.extensions, /permessage-deflate/);
    const frames = [];
    ws.on('message', (data) => frames.push(JSON.parse(String(data))));
    ws.send(JSON.stringify({ event: 'joinRoom', data: 'deflate', id: 1 }));
    ws.send(JSON.stringify({ event: 'message', data: { room: 'deflate', text }, id: 2 }));
    const deadline = Date.now() + 4000;
    let mine;
    while (!(mine = frames.find((f) => f.event === 'message' && f.data.sender === 'frank')) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(mine, `frank's message came back: ${JSON.stringify(frames)}`);
    assert.equal(mine.data.text, text);
  } finally {
    ws.close();
  }
});
