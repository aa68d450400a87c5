/**
 * Types for realtime.js, the native protocol's client.
 *
 * Untyped, it takes any event name and payload. Typed with the interfaces a hub writes
 * (`Hub::typescript`, e.g. clients/js/types/chat.d.ts), in the shape socket.io-client's
 * `Socket<ServerToClientEvents, ClientToServerEvents>` takes, it checks event names, payloads
 * and acks:
 *
 *   const c = new RealtimeClient<ServerToClientEvents, ClientToServerEvents>(url, { token });
 *   const joined = await c.emitWithAck('joinRoom', 'general'); // a JoinedRoom
 *   c.on('userJoined', (e) => e.userId);
 *
 * An event in ClientToServerEvents is `(data: Payload, ack: (res: Ack) => void) => void`, or
 * `(ack: (res: Ack) => void) => void` for one without a payload: `emit` takes the payload,
 * `emitWithAck` resolves with the ack. A binary value arrives as an ArrayBuffer.
 */
declare class RealtimeClient<
  ServerEvents extends RealtimeClient.EventsOf<ServerEvents> = RealtimeClient.Untyped,
  ClientEvents extends RealtimeClient.EventsOf<ClientEvents> = RealtimeClient.Untyped,
> {
  constructor(url: string, options?: RealtimeClient.Options);

  readonly url: string;
  /** Whether the WebSocket is open. */
  readonly connected: boolean;
  /** The rooms joined through the join event, re-joined after a reconnect. */
  readonly rooms: Set<string>;

  /** Starts connecting (and reconnecting); resolves on the first successful open. */
  connect(): Promise<void>;
  /** Closes for good: no reconnect; queued frames and unanswered acks are rejected. */
  close(code?: number, reason?: string): void;

  /** Listens to a lifecycle event. */
  on<E extends keyof RealtimeClient.LifecycleEvents>(event: E, fn: RealtimeClient.LifecycleEvents[E]): this;
  /** Listens to a server event: its payload, and `ack` when the server waits for an answer. */
  on<E extends RealtimeClient.EventName<ServerEvents>>(event: E, fn: RealtimeClient.Listener<ServerEvents, E>): this;
  once<E extends keyof RealtimeClient.LifecycleEvents>(event: E, fn: RealtimeClient.LifecycleEvents[E]): this;
  once<E extends RealtimeClient.EventName<ServerEvents>>(event: E, fn: RealtimeClient.Listener<ServerEvents, E>): this;
  off<E extends keyof RealtimeClient.LifecycleEvents>(event: E, fn?: RealtimeClient.LifecycleEvents[E]): this;
  off<E extends RealtimeClient.EventName<ServerEvents>>(event: E, fn?: RealtimeClient.Listener<ServerEvents, E>): this;

  /** Sends an event without waiting for its ack (queued while disconnected). */
  emit<E extends RealtimeClient.EventName<ClientEvents>>(event: E, ...data: RealtimeClient.Payload<ClientEvents, E>): this;
  /** Sends an event and resolves with its ack; rejects on an error event, a timeout, a disconnect. */
  emitWithAck<E extends RealtimeClient.EventName<ClientEvents>>(
    event: E,
    ...args: [...RealtimeClient.PayloadOrNone<ClientEvents, E>, options?: RealtimeClient.AckOptions]
  ): Promise<RealtimeClient.AckOf<ClientEvents, E>>;
}

declare namespace RealtimeClient {
  /** The events of one direction: a function type per event name. */
  type EventsOf<M> = { [E in keyof M]: (...args: never[]) => void };

  /** No declared events: any name, any payload (JSON values and binary ones). */
  interface Untyped {
    [event: string]: (data?: Json, ack?: (res: Json) => void) => void;
  }

  /** A JSON value as the client sends and receives it, binary values included. */
  type Json = string | number | boolean | null | ArrayBuffer | ArrayBufferView | Json[] | { [key: string]: Json };

  type EventName<M> = keyof M & string;

  /** Whether M declares no events (it is `Untyped`). */
  type IsUntyped<M> = string extends keyof M ? true : false;

  type Params<F> = F extends (...args: infer P) => void ? P : never;
  type Last<T> = T extends readonly [...unknown[], infer L] ? L : never;
  type AllButLast<T> = T extends readonly [...infer H, unknown] ? H : never;
  /** Whether F's last parameter is an ack callback. */
  type HasAck<F> = [Last<Params<F>>] extends [never] ? false : Last<Params<F>> extends (res: never) => void ? true : false;

  /** The payload parameters of an event: `[data]`, or `[]` for one without a payload. */
  type Payload<M, E extends keyof M> = IsUntyped<M> extends true
    ? [data?: Json]
    : HasAck<M[E]> extends true
      ? AllButLast<Params<M[E]>>
      : Params<M[E]>;

  /** As Payload, with room for the options after an absent payload. */
  type PayloadOrNone<M, E extends keyof M> = Payload<M, E> extends [] ? [data?: null] : Payload<M, E>;

  /** What an event's ack resolves with. */
  type AckOf<M, E extends keyof M> = IsUntyped<M> extends true
    ? Json
    : Last<Params<M[E]>> extends (res: infer R) => void
      ? R
      : null;

  /** A server event's listener: its payload, then `ack` (present when the server waits for an answer). */
  type Listener<M, E extends keyof M> = IsUntyped<M> extends true
    ? (data: Json, ack: (answer?: Json) => void) => void
    : (...args: [...Params<M[E]>, ack: (answer?: Json) => void]) => void;

  interface AckOptions {
    /** How long to wait for the ack, in ms (default: the client's `ackTimeout`). */
    timeout?: number;
  }

  interface Options {
    /** The token, or a function giving it, called on every (re)connect. */
    token?: string | (() => string | Promise<string>);
    /** `'protocol'`: subprotocols `['realtime', 'bearer.<token>']`; `'query'`: `?token=<token>`. */
    tokenTransport?: 'protocol' | 'query';
    reconnect?: boolean;
    minDelay?: number;
    maxDelay?: number;
    ackTimeout?: number;
    maxQueue?: number;
    joinEvent?: string;
    leaveEvent?: string;
    recover?: boolean;
    /** A WebSocket constructor (Node 20: `require('ws')`); default `globalThis.WebSocket`. */
    WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
  }

  /** The client's own events. */
  interface LifecycleEvents {
    connect: () => void;
    reconnect: (info: { attempt: number }) => void;
    disconnect: (info: { code: number; reason: string }) => void;
    reconnecting: (info: { attempt: number; delay: number }) => void;
    recovered: (info: { missed: number; rooms: string[] }) => void;
    resync: (info: { reason: string }) => void;
  }
}

export = RealtimeClient;
export as namespace RealtimeClient;
