// What the demo page's script (examples/chat/index.html) runs among, for its type-check:
// the demo's events as the hub writes them (clients/js/types/chat.d.ts), and the two clients
// it loads by <script src>: /realtime.js (clients/js/realtime.d.ts, a global there) and
// /socketio-lite.js, which has the same API (and `connect_error`, Socket.IO's refusal).
import type { ClientToServerEvents, ServerToClientEvents } from '../../../clients/js/types/chat';

declare global {
  /** The page's client, native or Socket.IO, typed with the demo's events. */
  type ChatClient = RealtimeClient<ServerToClientEvents, ClientToServerEvents> & {
    on(event: 'connect_error', fn: (e: Error & { data?: ServerToClientEvents['error'] }) => void): ChatClient;
  };
  /** The events the page sends and waits for the ack of. */
  type ChatRequest = RealtimeClient.EventName<ClientToServerEvents>;
  /** The payload of request E (`undefined` for one without a payload). */
  type ChatPayload<E extends ChatRequest> = RealtimeClient.PayloadOrNone<ClientToServerEvents, E>[0];
  /** The ack of request E. */
  type ChatAck<E extends ChatRequest> = RealtimeClient.AckOf<ClientToServerEvents, E>;
  /**
   * The client as the page's `request` calls it: any request, whose answer is its ack or,
   * over Socket.IO, the error of a refused request in its place (`request` checks which).
   */
  interface ChatRequester {
    emitWithAck<E extends ChatRequest>(event: E, data?: ChatPayload<E>): Promise<ChatAck<E> & Partial<ChatError>>;
  }
  /** The `error` event's data. */
  type ChatError = Parameters<ServerToClientEvents['error']>[0];
  /** socketio-lite.js: RealtimeClient's API over Socket.IO. */
  var SocketIoLite: typeof RealtimeClient;
  /** What the page shows of itself, for the browser test. */
  interface Window {
    chat: { client: ChatClient | null; protocol?: string };
  }
}
