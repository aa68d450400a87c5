// Clients of the hub in tests/typed_events.rs, against the declarations it writes
// (tests/fixtures/typed_events.d.ts): socket.io-client and the native client. What compiles
// must, and each `@ts-expect-error` line must stay an error.
import { io, type Socket } from 'socket.io-client';
import RealtimeClient from '../../../clients/js/realtime.js';
import type { ClientToServerEvents, ServerToClientEvents, Stored } from '../../fixtures/typed_events';

const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io('http://127.0.0.1:9', { autoConnect: false });

socket.emit('join', 'general', (ack) => ack.members.toFixed());
socket.emit('say', { room: 'general', text: 'hi' }, (ack: null) => ack);
socket.emit('whoami', (me) => me.toUpperCase());
socket.emit('upload', { room: 'r', data: new Uint8Array([1, 2]), caption: null }, (res: Stored) => {
  if (res.outcome === 'kept') res.members.join(',');
  else res.limit.toFixed();
});
socket.on('said', (m) => m.userId.toUpperCase());
socket.on('roomState', (s) => (s.topic ?? s.room) + s.mode);
socket.on('announcement', (text) => text.trim());
socket.on('error', (e) => e.errors?.map((f) => f.field + f.code) ?? e.message);
socket.on('token_expiring', (t) => t.expires_in_ms + t.expires_at);
async function withAcks(): Promise<number> {
  const joined = await socket.emitWithAck('join', 'general');
  return joined.members;
}

// @ts-expect-error: join's payload is a room name, not a number
socket.emit('join', 42, () => {});
// @ts-expect-error: no event `jion`
socket.emit('jion', 'general', () => {});
// @ts-expect-error: join's ack is a Joined, whose members is a number
socket.emit('join', 'general', (ack: { members: string }) => ack);
// @ts-expect-error: say's text is a string
socket.emit('say', { room: 'general', text: 1 }, () => {});
// @ts-expect-error: upload's data is binary
socket.emit('upload', { room: 'r', data: 'bytes', caption: null }, () => {});
// @ts-expect-error: said's userId is a string
socket.on('said', (m: { text: string; userId: number }) => m);
// @ts-expect-error: the server sends no `saidd`
socket.on('saidd', () => {});

const client = new RealtimeClient<ServerToClientEvents, ClientToServerEvents>('ws://127.0.0.1:9/ws', { token: 't' });

async function native(): Promise<string> {
  const joined = await client.emitWithAck('join', 'general', { timeout: 1000 });
  joined.members.toFixed();
  const stored = await client.emitWithAck('upload', { room: 'r', data: new ArrayBuffer(2), caption: 'hi' });
  if (stored.outcome === 'tooLarge') stored.limit.toFixed();
  const nothing: null = await client.emitWithAck('say', { room: 'general', text: 'hi' });
  client.emit('say', { room: 'general', text: 'hi' }).emit('whoami');
  client.on('said', (m) => m.text.trim());
  client.on('roomState', (s, ack) => ack(s.room));
  client.on('disconnect', (info) => info.code.toFixed());
  client.once('reconnecting', (info) => info.delay);
  // @ts-expect-error: join's payload is a room name
  client.emit('join', 42);
  // @ts-expect-error: no event `jion`
  client.emit('jion', 'general');
  // @ts-expect-error: join's ack is a Joined, not a string
  const wrong: string = await client.emitWithAck('join', 'general');
  // @ts-expect-error: say's text is a string
  client.emit('say', { room: 'general', text: 1 });
  // @ts-expect-error: said's userId is a string
  client.on('said', (m: { userId: number }) => m);
  // @ts-expect-error: whoami takes no payload
  client.emit('whoami', 'me');
  return (await client.emitWithAck('whoami')) + String(nothing) + wrong;
}

// Untyped, it takes anything, as realtime.js does.
const loose = new RealtimeClient('ws://127.0.0.1:9/ws');
loose.emit('anything', { at: 1 }).on('whatever', (data, ack) => ack(data));

export { withAcks, native };
