// Dynamic namespaces and the catch-all handler with the official socket.io-client, against a
// server started by tests/namespaces.rs. Run with `node --test`.
//
// Environment: BASE_URL (http://127.0.0.1:PORT), TOKENS (JSON: user -> JWT).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { connected, once } from './waits.mjs';

const BASE = process.env.BASE_URL;
const TOKENS = JSON.parse(process.env.TOKENS || '{}');
const opened = [];

function client(user, ns) {
  const s = io(BASE + ns, { auth: { token: TOKENS[user] }, forceNew: true, reconnection: false });
  opened.push(s);
  return s;
}

test.after(() => opened.forEach((s) => s.close()));

test('io(url + "/tenant-7") makes the namespace; tenants are isolated', async () => {
  const alice = await connected(client('alice', '/tenant-7'));
  const carol = await connected(client('carol', '/tenant-7'));
  const bob = await connected(client('bob', '/tenant-8'));
  assert.deepEqual(await alice.emitWithAck('where'), { ns: '/tenant-7', id: '7', nope: null });
  assert.deepEqual(await bob.emitWithAck('where'), { ns: '/tenant-8', id: '8', nope: null });
  for (const s of [alice, carol, bob]) await s.emitWithAck('join', 'r');
  let leaked = null;
  bob.on('shouted', (ns) => { leaked = ns; });
  const got = once(carol, 'shouted');
  await alice.emitWithAck('shout', 'r');
  assert.equal(await got, '/tenant-7');
  // Bob's answer comes after anything sent to him before it.
  await bob.emitWithAck('where');
  assert.equal(leaked, null);
});

test('a name no pattern takes is refused', async () => {
  const s = client('alice', '/other-7');
  const err = await once(s, 'connect_error');
  assert.match(err.message, /Invalid namespace/);
});

test('an event without a handler reaches the catch-all', async () => {
  const s = await connected(client('alice', '/tenant-9'));
  assert.deepEqual(await s.emitWithAck('nothing', 1, 'two'), { caught: 'nothing', args: [1, 'two'] });
  assert.deepEqual(await s.emitWithAck('where'), { ns: '/tenant-9', id: '9', nope: null });
});
