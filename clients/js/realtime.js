/**
 * realtime.js — dependency-free browser/Node client for tower-realtime's native protocol.
 *
 * Load it as a classic script (`<script src="/realtime.js"></script>`), import it for its
 * side effect as an ES module, or `require()` it in Node. It sets `globalThis.RealtimeClient`
 * (and `module.exports` under CommonJS).
 *
 * Wire protocol (text frames, one JSON object each):
 *   client → server   {"event": name, "data": any}            fire-and-forget
 *                     {"event": name, "data": any, "id": n}   wants an ack
 *                     {"ack": n, "data": any}                 answer to server event n
 *   server → client   {"event": name, "data": any}            event
 *                     {"event": name, "data": any, "offset": n}  event kept in a history
 *                     {"event": name, "data": any, "id": n}   event that wants an answer
 *                     {"ack": n, "data": any}                 ack of request n
 *                     {"event": "error", "data": {...}, "ack": n}  request n failed
 *   binary, both ways  a frame with "attachments": k, its data holding placeholders
 *                     {"_placeholder": true, "num": i}, then k binary frames
 *
 * Usage:
 *   const c = new RealtimeClient('ws://host/ws', { token: async () => fetchToken() });
 *   c.on('message', (data) => ...);
 *   await c.connect();
 *   const reply = await c.emitWithAck('joinRoom', 'general');
 *
 * Options: token (string | () => string | Promise<string>, called on every (re)connect),
 * tokenTransport ('protocol' → subprotocols ['realtime', 'bearer.<token>'], or 'query' →
 * '?token=<token>'), reconnect (true), minDelay (250 ms), maxDelay (10000 ms), ackTimeout
 * (5000 ms), maxQueue (100), joinEvent ('joinRoom'), leaveEvent ('leaveRoom'), recover (true),
 * WebSocket (constructor, default globalThis.WebSocket; pass require('ws') in Node 20).
 *
 * Listeners receive server events by name plus lifecycle events: 'connect' (every open),
 * 'reconnect' ({attempt}; opens after a drop, after rooms were rejoined), 'disconnect'
 * ({code, reason}; when an open connection ends), 'reconnecting' ({attempt, delay}).
 * Server events named like a lifecycle event would share its listeners.
 *
 * Acks from the server: when a server event carries an id (the server's emit_with_ack),
 * its listeners get a second argument, ack(data), which answers {"ack": id, "data": data}.
 * The first call answers (later ones, or a call after the connection that asked has closed,
 * do nothing); with several listeners, the first to call it wins:
 *   c.on('confirm', (question, ack) => ack(window.confirm(question)));
 *
 * Recovery (option recover, on by default; the server must keep a history): the client asks
 * for a session when it connects (`?recover=1`), remembers the offset of the last history
 * event it received, and after a drop presents both (`?session=…&epoch=…&offset=…`). The
 * server's first frame, `$session`, says how that went:
 * - recovered: 'recovered' ({missed, rooms}) fires; the server restored the rooms, and the
 *   missed events follow, in order, before anything live (listeners get them as usual).
 * - not recovered (history lost or too old): the client re-joins its rooms itself and emits
 *   'resync' ({reason}) — the app reloads what it shows (the events in between are lost).
 * Until `$session` arrives, rejoins and queued frames wait; 'connect' follows it.
 *
 * Binary: an ArrayBuffer or typed array (Uint8Array, Node's Buffer, any ArrayBuffer view)
 * anywhere in the data of emit / emitWithAck goes out as a binary frame (its view's bytes
 * only), as does the data of an ack(data) answer; Blobs are not read (convert them with blob.arrayBuffer() first). Binary values in
 * server events and acks arrive as ArrayBuffers, in place in the data. A server handler reads
 * them into `Bytes` fields.
 *
 * Behaviour notes:
 * - No reconnect after close(), or after close codes 1008 / 4401 / 4403 (auth/policy).
 * - Rooms joined through joinEvent (data: room name, or {room}) are remembered, forgotten
 *   through leaveEvent or when the server rejects the join, and re-joined on every
 *   reconnect by emitting joinEvent with the room name (with ack, failures ignored).
 * - Frames emitted while disconnected are queued (oldest dropped past maxQueue) and sent
 *   after the rejoin frames, in order, on the next open.
 * - An ack promise rejects on timeout ('ack timeout'), on an error frame carrying its id
 *   (Error(data.message) with .data), on a disconnect after it was sent, or on close().
 */
(function (root) {
  'use strict';

  var OPEN = 1;
  var NO_RECONNECT_CODES = [1008, 4401, 4403];

  function RealtimeClient(url, options) {
    var o = options || {};
    this.url = url;
    this.options = {
      token: o.token,
      tokenTransport: o.tokenTransport || 'protocol',
      reconnect: o.reconnect !== false,
      minDelay: o.minDelay != null ? o.minDelay : 250,
      maxDelay: o.maxDelay != null ? o.maxDelay : 10000,
      ackTimeout: o.ackTimeout != null ? o.ackTimeout : 5000,
      maxQueue: o.maxQueue != null ? o.maxQueue : 100,
      recover: o.recover !== false,
      joinEvent: o.joinEvent || 'joinRoom',
      leaveEvent: o.leaveEvent || 'leaveRoom',
      WebSocket: o.WebSocket || root.WebSocket,
    };
    this.rooms = new Set();   // rooms to re-join after a reconnect
    this._listeners = {};     // event name → array of functions
    this._pending = new Map(); // ack id → {resolve, reject, timer, sent, event, room}
    this._queue = [];         // frames waiting for an open socket
    this._nextId = 1;
    this._ws = null;
    this._attempt = 0;        // reconnect attempts since the last open
    this._timer = null;       // pending reconnect timer
    this._stopped = true;     // true until connect(), and again after close()
    this._hasOpened = false;  // an earlier socket was open (so the next open is a reconnect)
    this._first = null;       // {promise, resolve, reject} for connect()
    this._gen = 0;            // bumped by connect()/close(): stale async work checks it
    this._session = null;     // recovery: {session, epoch} from the last `$session` frame
    this._offset = null;      // recovery: offset of the last history event received
    this._awaiting = null;    // {attempt, reopened} while waiting for `$session` after an open
    this._binary = null;      // {msg, parts, left}: a frame whose binary frames are being read
  }

  var proto = RealtimeClient.prototype;

  Object.defineProperty(proto, 'connected', {
    get: function () { return !!this._ws && this._ws.readyState === OPEN; },
  });

  // ---- listeners -----------------------------------------------------------

  proto.on = function (event, fn) {
    (this._listeners[event] = this._listeners[event] || []).push(fn);
    return this;
  };

  proto.off = function (event, fn) {
    var list = this._listeners[event];
    if (!list) return this;
    if (!fn) { delete this._listeners[event]; return this; }
    this._listeners[event] = list.filter(function (l) { return l !== fn && l._orig !== fn; });
    return this;
  };

  proto.once = function (event, fn) {
    var self = this;
    function wrapper(arg, ack) { self.off(event, wrapper); fn.call(self, arg, ack); }
    wrapper._orig = fn;
    return this.on(event, wrapper);
  };

  proto._dispatch = function (event, arg, ack) {
    var list = (this._listeners[event] || []).slice(); // copy: listeners may unsubscribe
    for (var i = 0; i < list.length; i++) {
      try { list[i].call(this, arg, ack); } catch (e) { console.error('realtime: listener for "' + event + '" threw', e); }
    }
  };

  // The ack(data) function handed to the listeners of a server event that carries an id: it
  // answers once, on the socket the event came from.
  proto._acker = function (id) {
    var self = this, ws = this._ws, done = false;
    return function ack(data) {
      if (done) return;
      done = true;
      if (ws !== self._ws || ws.readyState !== OPEN) return; // that connection is gone
      sendFrame(ws, { ack: id, data: data === undefined ? null : data });
    };
  };

  // ---- connection lifecycle ------------------------------------------------

  /** Starts connecting (and reconnecting); resolves on the first successful open. */
  proto.connect = function () {
    if (this.connected) return Promise.resolve();
    if (this._first) return this._first.promise;
    var first = {};
    first.promise = new Promise(function (res, rej) { first.resolve = res; first.reject = rej; });
    first.promise.catch(function () {}); // callers that don't await connect() get no unhandled rejection
    this._first = first;
    this._stopped = false;
    this._hasOpened = false;
    this._gen++;
    this._open();
    return first.promise;
  };

  /** Closes for good: no reconnect; queued frames and unanswered acks are rejected. */
  proto.close = function (code, reason) {
    var ws = this._ws, wasOpen = this.connected;
    this._stopped = true;
    this._gen++;
    this._ws = null; // the old socket's handlers now see themselves as stale
    clearTimeout(this._timer);
    if (ws) { try { ws.close(code || 1000, reason || ''); } catch (e) { /* already closing */ } }
    this._failAll(new Error('client closed'), true);
    this.rooms.clear();
    this._session = null;
    this._offset = null;
    this._awaiting = null;
    this._settleFirst(new Error('client closed'));
    if (wasOpen) this._dispatch('disconnect', { code: code || 1000, reason: reason || '' });
  };

  proto._settleFirst = function (err) {
    var f = this._first;
    this._first = null;
    if (f) { if (err) f.reject(err); else f.resolve(); }
  };

  proto._open = async function () {
    var o = this.options, gen = this._gen, token;
    try {
      if (!o.WebSocket) throw new Error('no WebSocket implementation: pass options.WebSocket');
      token = typeof o.token === 'function' ? await o.token() : o.token;
    } catch (e) {
      if (gen !== this._gen) return;
      console.warn('realtime: cannot connect:', e && e.message);
      return this._afterClose({ code: 1006, reason: String(e && e.message) });
    }
    if (gen !== this._gen) return; // close() was called while the token was being fetched
    var url = this.url, protocols = ['realtime'];
    var params = [];
    if (token && o.tokenTransport === 'query') {
      params.push('token=' + encodeURIComponent(token));
    } else if (token) {
      protocols.push('bearer.' + token);
    }
    if (o.recover) params.push(this._recoveryQuery());
    if (params.length) url += (url.indexOf('?') < 0 ? '?' : '&') + params.join('&');
    var self = this, ws;
    try { ws = new o.WebSocket(url, protocols); } catch (e) {
      return this._afterClose({ code: 1006, reason: String(e && e.message) });
    }
    this._ws = ws;
    this._binary = null;
    ws.binaryType = 'arraybuffer';
    var opened = false;
    ws.onopen = function () { if (ws === self._ws) { opened = true; self._onOpen(); } };
    ws.onmessage = function (ev) { if (ws === self._ws) self._onMessage(ev.data); };
    ws.onerror = function () { /* a close event always follows; handled there */ };
    ws.onclose = function (ev) {
      if (ws !== self._ws) return;
      self._ws = null;
      self._awaiting = null;
      // 4002: a newer connection took this session over; this client starts a new one.
      if (ev.code === 4002) { self._session = null; self._offset = null; }
      self._failSent(new Error('disconnected'));
      var info = { code: ev.code, reason: ev.reason || '' };
      if (opened) self._dispatch('disconnect', info);
      self._afterClose(info);
    };
  };

  // The recovery part of the URL: a new session, or the one to resume and how far we got.
  proto._recoveryQuery = function () {
    var s = this._session;
    if (!s || !s.session) return 'recover=1';
    var q = 'session=' + encodeURIComponent(s.session) + '&epoch=' + encodeURIComponent(s.epoch);
    if (this._offset != null) q += '&offset=' + this._offset;
    return q;
  };

  proto._onOpen = function () {
    var attempt = this._attempt, reopened = this._hasOpened;
    this._attempt = 0;
    this._hasOpened = true;
    if (this.options.recover) {
      // The server's first frame is `$session`: whether the rooms came back decides what to do.
      // A server that says nothing (one without recovery) is not waited for past 3 s.
      var self = this, ws = this._ws, awaiting = { attempt: attempt, reopened: reopened };
      this._awaiting = awaiting;
      var timer = setTimeout(function () {
        if (self._awaiting !== awaiting || ws !== self._ws) return;
        self._awaiting = null;
        self._ready(attempt, reopened, false);
      }, 3000);
      if (timer && timer.unref) timer.unref(); // in Node, not a reason to stay alive
      return;
    }
    this._ready(attempt, reopened, false);
  };

  // `$session` arrived: keep the session; on a reconnect, say whether it recovered.
  proto._onSession = function (news, awaiting) {
    news = news || {};
    var asked = !!(this._session && this._session.session);
    this._session = news.session ? { session: news.session, epoch: news.epoch } : null;
    if (!news.recovered) this._offset = null;
    this._ready(awaiting.attempt, awaiting.reopened, !!news.recovered);
    if (news.recovered) this._dispatch('recovered', { missed: news.missed, rooms: news.rooms });
    else if (awaiting.reopened && asked) this._dispatch('resync', { reason: news.reason || 'not recovered' });
  };

  // The connection is usable: re-join rooms (unless the server restored them), flush the queue.
  proto._ready = function (attempt, reopened, restored) {
    var queuedJoins = new Set(), self = this, o = this.options;
    this._queue.forEach(function (f) { if (f.event === o.joinEvent) queuedJoins.add(roomOf(f.data)); });
    this.rooms.forEach(function (room) {
      if (restored || queuedJoins.has(room)) return;
      self._request(o.joinEvent, room, {}, false, room).catch(function () {});
    });
    // Then flush what was emitted while disconnected, oldest first.
    var queue = this._queue;
    this._queue = [];
    queue.forEach(function (f) { self._send(f); });
    this._dispatch('connect');
    if (reopened) this._dispatch('reconnect', { attempt: attempt });
    this._settleFirst(null);
  };

  proto._afterClose = function (info) {
    var o = this.options;
    if (this._stopped) return;
    if (!o.reconnect || NO_RECONNECT_CODES.indexOf(info.code) >= 0) {
      this._stopped = true;
      this._failAll(new Error('disconnected'), true);
      var err = new Error('connection closed (' + info.code + (info.reason ? ': ' + info.reason : '') + ')');
      err.code = info.code;
      this._settleFirst(err);
      return;
    }
    // Exponential backoff with jitter: a random delay in [base/2, base], base doubling per attempt.
    var attempt = ++this._attempt;
    var base = Math.min(o.maxDelay, o.minDelay * Math.pow(2, attempt - 1));
    var delay = Math.round(Math.max(o.minDelay, base / 2 + Math.random() * base / 2));
    var self = this, gen = this._gen;
    this._dispatch('reconnecting', { attempt: attempt, delay: delay });
    this._timer = setTimeout(function () { if (gen === self._gen) self._open(); }, delay);
  };

  // ---- incoming frames -----------------------------------------------------

  proto._onMessage = function (raw) {
    var msg;
    if (typeof raw !== 'string') {
      var b = this._binary;
      if (!b) return; // no frame announced it
      b.parts.push(toArrayBuffer(raw));
      if (--b.left > 0) return;
      this._binary = null;
      msg = b.msg;
      msg.data = reconstruct(msg.data, b.parts);
      return this._onFrame(msg);
    }
    try { msg = JSON.parse(raw); } catch (e) { console.warn('realtime: ignoring non-JSON frame'); return; }
    if (!msg || typeof msg !== 'object') return;
    if (msg.attachments > 0) {
      this._binary = { msg: msg, parts: [], left: msg.attachments };
      return;
    }
    this._onFrame(msg);
  };

  proto._onFrame = function (msg) {
    if (this._awaiting) {
      var awaiting = this._awaiting;
      this._awaiting = null;
      if (msg.event === '$session') return this._onSession(msg.data, awaiting);
      // A server that does not answer recovery: go on without it.
      this._ready(awaiting.attempt, awaiting.reopened, false);
    }
    if (typeof msg.offset === 'number') this._offset = msg.offset;
    if (msg.ack != null) {
      var p = this._pending.get(msg.ack);
      if (p) {
        this._pending.delete(msg.ack);
        clearTimeout(p.timer);
        if (msg.event === 'error') {
          var d = msg.data || {};
          var err = new Error(d.message || 'request failed');
          err.data = msg.data;
          // A join that failed must not be re-joined later (unless an earlier join succeeded).
          if (p.forget != null) this.rooms.delete(p.forget);
          p.reject(err);
        } else {
          p.resolve(msg.data);
        }
        return;
      }
      // Late or unknown ack: only an event frame (e.g. an error) is still worth dispatching.
    }
    if (typeof msg.event !== 'string') return;
    if (msg.id != null && msg.ack == null) this._dispatch(msg.event, msg.data, this._acker(msg.id));
    else this._dispatch(msg.event, msg.data);
  };

  // ---- outgoing frames -----------------------------------------------------

  /** Fire-and-forget: sends now, or queues while disconnected. */
  proto.emit = function (event, data) {
    this._track(event, data);
    this._sendOrQueue({ event: event, data: data === undefined ? null : data });
    return this;
  };

  /** Sends with an id; resolves with the ack's data. opts.timeout overrides ackTimeout. */
  proto.emitWithAck = function (event, data, opts) {
    var added = this._track(event, data);
    return this._request(event, data, opts || {}, true, added ? roomOf(data) : null);
  };

  // forget: room to drop from this.rooms if the server answers with an error.
  proto._request = function (event, data, opts, queueable, forget) {
    var self = this, id = this._nextId++;
    var timeout = opts.timeout != null ? opts.timeout : this.options.ackTimeout;
    var frame = { event: event, data: data === undefined ? null : data, id: id };
    return new Promise(function (resolve, reject) {
      var p = { resolve: resolve, reject: reject, sent: false, forget: forget };
      p.timer = setTimeout(function () {
        self._pending.delete(id);
        var i = self._queue.indexOf(frame);
        if (i >= 0) self._queue.splice(i, 1); // don't send a request nobody waits for
        reject(new Error('ack timeout'));
      }, timeout);
      self._pending.set(id, p);
      if (queueable) self._sendOrQueue(frame);
      else if (self.connected) self._send(frame);
      else self._rejectId(id, new Error('disconnected'));
    });
  };

  proto._sendOrQueue = function (frame) {
    if (this.connected && !this._awaiting) return this._send(frame);
    this._queue.push(frame);
    if (this._queue.length > this.options.maxQueue) {
      var dropped = this._queue.shift();
      console.warn('realtime: send queue full, dropping oldest "' + dropped.event + '" frame');
      if (dropped.id != null) this._rejectId(dropped.id, new Error('dropped from send queue'));
    }
  };

  proto._send = function (frame) {
    var p = frame.id != null ? this._pending.get(frame.id) : null;
    if (frame.id != null && !p) return; // its ack already timed out or was rejected
    sendFrame(this._ws, frame);
    if (p) p.sent = true;
  };

  // Remember / forget rooms joined or left through the configured events.
  // Returns true when a join added a room that was not remembered yet.
  proto._track = function (event, data) {
    var room = roomOf(data);
    if (room == null) return false;
    if (event === this.options.joinEvent) {
      if (this.rooms.has(room)) return false;
      this.rooms.add(room);
      return true;
    }
    if (event === this.options.leaveEvent) this.rooms.delete(room);
    return false;
  };

  proto._rejectId = function (id, err) {
    var p = this._pending.get(id);
    if (!p) return;
    this._pending.delete(id);
    clearTimeout(p.timer);
    p.reject(err);
  };

  // Reject acks already sent on the socket that just closed (they can never be answered).
  proto._failSent = function (err) {
    var self = this;
    Array.from(this._pending.entries()).forEach(function (e) { if (e[1].sent) self._rejectId(e[0], err); });
  };

  // Reject every pending ack; with dropQueue, also discard queued frames.
  proto._failAll = function (err, dropQueue) {
    var self = this;
    if (dropQueue) this._queue = [];
    Array.from(this._pending.keys()).forEach(function (id) { self._rejectId(id, err); });
  };

  // ---- binary ---------------------------------------------------------------

  // Sends a frame; binary values in its data go as binary frames after it.
  function sendFrame(ws, frame) {
    var parts = [];
    var data = deconstruct(frame.data, parts);
    if (!parts.length) return ws.send(JSON.stringify(frame));
    ws.send(JSON.stringify(Object.assign({}, frame, { data: data, attachments: parts.length })));
    parts.forEach(function (part) { ws.send(part); });
  }

  function isBinary(v) {
    return v != null && typeof v === 'object' && (v instanceof ArrayBuffer || ArrayBuffer.isView(v));
  }

  // A copy of data with each binary value replaced by its placeholder; the bytes go to parts.
  function deconstruct(data, parts) {
    if (isBinary(data)) {
      parts.push(data instanceof ArrayBuffer ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      return { _placeholder: true, num: parts.length - 1 };
    }
    if (Array.isArray(data)) return data.map(function (v) { return deconstruct(v, parts); });
    if (data && typeof data === 'object' && data.constructor === Object) {
      var out = {};
      Object.keys(data).forEach(function (k) { out[k] = deconstruct(data[k], parts); });
      return out;
    }
    return data;
  }

  // data with each placeholder replaced by its part (an ArrayBuffer).
  function reconstruct(data, parts) {
    if (Array.isArray(data)) return data.map(function (v) { return reconstruct(v, parts); });
    if (data && typeof data === 'object') {
      if (data._placeholder === true && typeof data.num === 'number') return parts[data.num];
      Object.keys(data).forEach(function (k) { data[k] = reconstruct(data[k], parts); });
    }
    return data;
  }

  // A binary message as an ArrayBuffer (binaryType is 'arraybuffer'; a view is copied out).
  function toArrayBuffer(raw) {
    if (ArrayBuffer.isView(raw)) return raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    return raw;
  }

  function roomOf(data) {
    if (typeof data === 'string') return data;
    if (data && typeof data === 'object' && typeof data.room === 'string') return data.room;
    return null;
  }

  root.RealtimeClient = RealtimeClient;
  if (typeof module !== 'undefined' && module.exports) module.exports = RealtimeClient;
})(typeof globalThis !== 'undefined' ? globalThis : this);
