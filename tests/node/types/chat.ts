// A client of the demo chat (examples/chat.rs) against its generated declarations,
// clients/js/types/chat.d.ts: socket.io-client and the native client. What compiles must, and
// each `@ts-expect-error` line must stay an error.
import { io, type Socket } from 'socket.io-client';
import RealtimeClient from '../../../clients/js/realtime.js';
import type {
  ClientToServerEvents,
  ErrorEvent,
  JsonValue,
  ServerToClientEvents,
} from '../../../clients/js/types/chat';

const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io('http://127.0.0.1:3000', {
  autoConnect: false,
  auth: { token: 'a JWT' },
});

socket.emit('joinRoom', 'general', (ack) => ack.room);
socket.emit('leaveRoom', 'general', (ack) => ack.event === 'leftRoom');
socket.emit('message', { room: 'general', text: 'hi' }, (ack) => ack.data);
socket.emit('messageToRoom', { room: 'general', message: { any: ['json', 1, null] } }, (ack) => ack);
socket.emit('privateMessage', { to: 'bob', message: 'psst' }, (ack) => ack.online && ack.devices > 0);
socket.emit('setStatus', 'away', (ack) => ack.status ?? 'cleared');
socket.emit('whoami', (me) => me.userId + (me.status ?? ''));
socket.emit('shareFile', { room: 'general', name: 'a.txt', data: new Uint8Array([104, 105]) }, (ack) => ack.delivered);
socket.emit('typing', { room: 'general' }, () => {});

socket.on('onlineUsers', (users) => users.join(', '));
socket.on('statuses', (all) => Object.entries(all).map(([user, status]) => user + status.trim()));
socket.on('presence', (p) => (p.online ? '+' : '-') + p.userId);
socket.on('userJoined', (e) => e.userId + e.room);
socket.on('userLeft', (e) => e.userId + e.room);
socket.on('message', (m) => `${m.timestamp} ${m.sender}@${m.room}: ${m.text}`);
socket.on('roomMessage', (m) => m.sender);
socket.on('privateMessage', (m) => m.from);
socket.on('status', (s) => s.userId + (s.status ?? ''));
socket.on('fileShared', (f) => (f.data instanceof ArrayBuffer ? f.data.byteLength : f.data.length) + f.name);
socket.on('typing', (t) => t.userId);
socket.on('notification', (n) => JSON.stringify(n.message));
socket.on('error', (e: ErrorEvent) => e.errors?.map((f) => `${f.field}: ${f.message}`) ?? [e.message, e.limit]);
socket.on('token_expiring', (t) => t.expires_in_ms / 1000);

// @ts-expect-error: joinRoom takes a room name, not a number
socket.emit('joinRoom', 42, () => {});
// @ts-expect-error: no event `joinroom`
socket.emit('joinroom', 'general', () => {});
// @ts-expect-error: joinRoom's ack has no `members`
socket.emit('joinRoom', 'general', (ack) => ack.members);
// @ts-expect-error: a message's text is a string
socket.emit('message', { room: 'general', text: 42 }, () => {});
// @ts-expect-error: shareFile's data is binary, not text
socket.emit('shareFile', { room: 'general', name: 'a.txt', data: 'hi' }, () => {});
// @ts-expect-error: privateMessage's ack is a Delivery, whose `online` is a boolean
socket.emit('privateMessage', { to: 'bob', message: 'psst' }, (ack: { online: string }) => ack);
// @ts-expect-error: a presence's userId is a string
socket.on('presence', (p: { userId: number; online: boolean }) => p);
// @ts-expect-error: the server sends no `userjoined`
socket.on('userjoined', () => {});

async function native(): Promise<void> {
  const chat = new RealtimeClient<ServerToClientEvents, ClientToServerEvents>('ws://127.0.0.1:3000/ws', {
    token: async () => 'a JWT',
  });
  await chat.connect();
  const joined = await chat.emitWithAck('joinRoom', 'general');
  const room: string = joined.room;
  const me = await chat.emitWithAck('whoami');
  const delivery = await chat.emitWithAck('privateMessage', { to: me.userId, message: room }, { timeout: 2000 });
  const online: boolean = delivery.online;
  const payload: JsonValue = { online };
  chat.emit('messageToRoom', { room, message: payload });
  chat.emit('typing', { room });
  chat.on('message', (m) => m.text.length);
  chat.on('fileShared', (f) => f.data);
  chat.on('reconnect', ({ attempt }) => attempt);
  // @ts-expect-error: joinRoom takes a room name, not a number
  chat.emit('joinRoom', 42);
  // @ts-expect-error: no event `joinroom`
  chat.emit('joinroom', 'general');
  // @ts-expect-error: joinRoom's ack is a JoinedRoom, not a string
  const wrong: string = await chat.emitWithAck('joinRoom', 'general');
  // @ts-expect-error: a message's text is a string
  chat.emit('message', { room, text: 42 });
  // @ts-expect-error: a message's sender is a string
  chat.on('message', (m: { sender: number }) => m);
  chat.close();
  void wrong;
}

export { native };
