// Socket.IO connection state recovery with the official socket.io-client, against servers
// started by tests/socketio_recovery.rs. Run with `node --test`.
//
// Environment: BASE_URL (a hub keeping 20 events per room), SHORT_TTL_URL (a hub whose
// sessions expire after 300 ms), RESTART_URL (a hub that `POST /restart` replaces with a new
// one), TOKENS (JSON: user -> JWT).
//
// Each test drops a connection in a way the client does not take for a deliberate
// disconnect, emits events from the server while the client is away, and lets the client's
// own reconnection bring it back. The reconnection delay is fixed (1 s, no jitter): the
// missed events are emitted before the first attempt, which each test checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

const BASE = process.env.BASE_URL;
const TOKENS = JSON.parse(process.env.TOKENS || '{}');
const RECONNECT_DELAY = 1000;
const opened = [];

function client(base, user, opts = {}) {
  const s = io(base, {
    auth: { token: TOKENS[user] },
    forceNew: true,
    reconnectionDelay: RECONNECT_DELAY,
    randomizationFactor: 0,
    ...opts,
  });
  opened.push(s);
  return s;
}

function once(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(t);
      resolve(args);
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(check, what, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function connected(s) {
  if (!s.connected) await once(s, 'connect');
  return s;
}

/// Emits `data` as `event` to `room` from the server.
async function serverEmit(base, room, data, event = 'said') {
  const res = await fetch(`${base}/emit`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ room, event, data }),
  });
  assert.equal(res.status, 200);
  return (await res.json()).reached;
}

async function online(base, user) {
  const res = await fetch(`${base}/online/${user}`);
  return (await res.json()).connections;
}

/// Collects the `said` events a socket gets: their data, and the offset each carried.
function collect(s) {
  const got = { data: [], offsets: [] };
  s.on('said', (data, offset) => {
    got.data.push(data);
    got.offsets.push(offset);
  });
  return got;
}

/// Waits until `got` holds `n` events, then a little more, to be sure no other arrives.
async function exactly(got, n) {
  await until(() => got.data.length >= n, `${n} events (have ${JSON.stringify(got.data)})`);
  await sleep(300);
  assert.equal(got.data.length, n, `no more than ${n} events: ${JSON.stringify(got.data)}`);
}

/// Connects `user`, joins `rooms`, and receives one live event in the first of them.
async function setUp(base, user, rooms, opts) {
  const s = await connected(client(base, user, opts));
  assert.equal(s.recovered, false, 'nothing to recover on a first connection');
  const got = collect(s);
  for (const room of rooms) assert.deepEqual(await s.emitWithAck('join', room), { joined: room });
  assert.equal(await serverEmit(base, rooms[0], 'live-0'), 1);
  await until(() => got.data.length === 1, 'the first live event');
  assert.match(got.offsets[0], /^[0-9a-f]+-\d+$/, 'a history event carries "<epoch>-<offset>"');
  return { s, got };
}

/// Drops the connection with `drop`, waits until the server has seen it, then runs `away`
/// (the client is still away: its first reconnection attempt comes after), and waits for the
/// client to be back.
async function dropAndReturn(base, user, s, drop, away) {
  let attempted = false;
  s.io.once('reconnect_attempt', () => {
    attempted = true;
  });
  const down = once(s, 'disconnect');
  await drop();
  const [reason] = await down;
  assert.notEqual(reason, 'io client disconnect');
  assert.notEqual(reason, 'io server disconnect');
  await until(async () => (await online(base, user)) === 0, `the server to see ${user} gone`);
  await away();
  assert.equal(attempted, false, 'the missed events were emitted before the client came back');
  await once(s, 'connect', RECONNECT_DELAY + 5000);
  return reason;
}

test.after(() => opened.forEach((s) => s.close()));

async function recoversWithinTheWindow(user, opts, drop) {
  const { s, got } = await setUp(BASE, user, [`${user}-a`, `${user}-b`], opts);
  const firstId = s.id;
  await dropAndReturn(BASE, user, s, () => drop(s), async () => {
    for (let i = 1; i <= 6; i++) {
      // Nobody is in the room now: the event is kept for the client that will come back.
      assert.equal(await serverEmit(BASE, i % 2 ? `${user}-a` : `${user}-b`, `missed-${i}`), 0);
    }
    await serverEmit(BASE, `${user}-elsewhere`, 'not for this client');
  });
  assert.equal(s.recovered, true, 'the session was recovered');
  assert.notEqual(s.id, firstId, 'a new socket id, as Socket.IO gives');
  // Every missed event once, in order, right after the CONNECT.
  await exactly(got, 7);
  assert.deepEqual(got.data, ['live-0', 'missed-1', 'missed-2', 'missed-3', 'missed-4', 'missed-5', 'missed-6']);
  const seqs = got.offsets.map((o) => Number(o.split('-')[1]));
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `offsets go up: ${got.offsets}`);
  // The rooms are back without joining again; live events follow, nothing repeated.
  assert.deepEqual(await s.emitWithAck('rooms'), [`${user}-a`, `${user}-b`]);
  assert.equal(await serverEmit(BASE, `${user}-b`, 'live-1'), 1);
  assert.equal(await serverEmit(BASE, `${user}-a`, 'live-2'), 1);
  await exactly(got, 9);
  assert.deepEqual(got.data.slice(7), ['live-1', 'live-2']);
  return s;
}

test('websocket: the client closes its transport; every missed event once, in order; rooms restored', async () => {
  const s = await recoversWithinTheWindow('alice', { transports: ['websocket'] }, (s) => s.io.engine.close());
  // And again: the recovered session is kept by the next drop too.
  const got = collect(s);
  await dropAndReturn(BASE, 'alice', s, () => s.io.engine.close(), async () => {
    await serverEmit(BASE, 'alice-a', 'missed-again');
  });
  assert.equal(s.recovered, true);
  await exactly(got, 1);
  assert.deepEqual(got.data, ['missed-again']);
});

test('websocket: the server drops the transport', async () => {
  await recoversWithinTheWindow('bob', { transports: ['websocket'] }, (s) => s.emit('dropMe'));
});

test('polling: the client closes its transport', async () => {
  const s = await recoversWithinTheWindow('carol', { transports: ['polling'] }, (s) => s.io.engine.close());
  assert.equal(s.io.engine.transport.name, 'polling');
});

test('polling upgraded to websocket: the server drops the transport', async () => {
  const s = await recoversWithinTheWindow('dave', {}, async (s) => {
    if (s.io.engine.transport.name !== 'websocket') await once(s.io.engine, 'upgrade');
    assert.equal(s.io.engine.transport.name, 'websocket');
    s.emit('dropMe');
  });
  assert.ok(s.connected);
});

test('after the window: more missed than a room keeps; not recovered, rooms not restored', async () => {
  const { s, got } = await setUp(BASE, 'erin', ['erin-a'], { transports: ['websocket'] });
  await dropAndReturn(BASE, 'erin', s, () => s.io.engine.close(), async () => {
    for (let i = 1; i <= 25; i++) await serverEmit(BASE, 'erin-a', `missed-${i}`);
  });
  assert.equal(s.recovered, false);
  await sleep(300);
  assert.deepEqual(got.data, ['live-0'], 'nothing replayed');
  assert.deepEqual(await s.emitWithAck('rooms'), []);
  assert.equal(await serverEmit(BASE, 'erin-a', 'not joined'), 0);
});

test('after the window: the session expired; not recovered, rooms not restored', async () => {
  const base = process.env.SHORT_TTL_URL;
  const { s, got } = await setUp(base, 'frank', ['frank-a'], { transports: ['websocket'] });
  await dropAndReturn(base, 'frank', s, () => s.io.engine.close(), async () => {
    await serverEmit(base, 'frank-a', 'missed-1');
  });
  // The reconnection came 1 s after the drop; the session lived 300 ms.
  assert.equal(s.recovered, false);
  await sleep(300);
  assert.deepEqual(got.data, ['live-0']);
  assert.deepEqual(await s.emitWithAck('rooms'), []);
});

test('a server restart: a new epoch, not recovered; the new session recovers on the next drop', async () => {
  const base = process.env.RESTART_URL;
  const { s, got } = await setUp(base, 'grace', ['grace-a'], { transports: ['websocket'] });
  const down = once(s, 'disconnect');
  const res = await fetch(`${base}/restart`, { method: 'POST' });
  assert.deepEqual(await res.json(), { stillOpen: 0 });
  const [reason] = await down;
  assert.equal(reason, 'transport close');
  await once(s, 'connect', RECONNECT_DELAY + 5000);
  assert.equal(s.recovered, false, 'the history the client had is gone');
  assert.deepEqual(await s.emitWithAck('rooms'), []);

  // The client still holds its last offset, from the old epoch, and has had no event since:
  // the new session has everything after its start.
  assert.deepEqual(await s.emitWithAck('join', 'grace-b'), { joined: 'grace-b' });
  await dropAndReturn(base, 'grace', s, () => s.io.engine.close(), async () => {
    await serverEmit(base, 'grace-b', 'missed-after-restart');
  });
  assert.equal(s.recovered, true);
  await exactly(got, 2);
  assert.deepEqual(got.data, ['live-0', 'missed-after-restart']);
});
