/**
 * socketio-lite.js — a small dependency-free Socket.IO v5 client (Engine.IO v4, WebSocket
 * transport only) with the same API as RealtimeClient (clients/js/realtime.js), so that an app
 * can switch between tower-realtime's native protocol and its Socket.IO endpoint by changing
 * the constructor only.
 *
 * Load it as a classic script (`<script src="/socketio-lite.js"></script>`), import it for its
 * side effect as an ES module, or `require()` it in Node. It sets `globalThis.SocketIoLite`
 * (and `module.exports` under CommonJS).
 *
 * Wire protocol (text frames only; Engine.IO packet type, then the Socket.IO packet):
 *   server → client   0{"sid",...,"pingInterval","pingTimeout"}   Engine.IO open
 *                     2                                            ping (answered with 3)
 *                     1                                            Engine.IO close
 *   client → server   40{"token":"..."}                           CONNECT, auth for the main namespace
 *   server → client   40{"sid":"..."}                             connected
 *                     44{"message":"..."}                         CONNECT_ERROR (refused)
 *                     41                                           DISCONNECT (the server ended it)
 *   either way        42["name",...args]                          event
 *                     42<id>["name",...args]                      event that wants an ack
 *                     43<id>[...args]                             ack of event <id>
 *                     45<n>-[<id>]["name",...]  + n binary frames  binary event
 *                     46<n>-<id>[...]           + n binary frames  binary ack
 * (A namespace other than '/' would go as '/nsp,' before the ack id; only '/' is used.)
 *
 * Binary, as socket.io-client does it: an ArrayBuffer or typed array (Uint8Array, Node's
 * Buffer, any ArrayBuffer view) anywhere in the data of emit / emitWithAck, or of an ack(data)
 * answer, is replaced by a placeholder {"_placeholder":true,"num":i} and its bytes (the view's
 * bytes only) follow as the i-th binary frame of a 45/46 packet. Blobs are not read (convert
 * them with blob.arrayBuffer() first). Binary in server events and acks (45/46) arrives as
 * ArrayBuffers, in place of their placeholders. Bounded: a packet announcing more than
 * MAX_ATTACHMENTS (256) frames, a bad count, or a placeholder that names no frame is dropped
 * with a console error; a packet whose frames are cut short by another packet is dropped too,
 * and stray binary frames are ignored: nothing waits for frames that never come.
 *
 * Usage:
 *   const c = new SocketIoLite('ws://host/socket.io/', { token: async () => fetchToken() });
 *   c.on('message', (data) => ...);
 *   await c.connect();
 *   const reply = await c.emitWithAck('joinRoom', 'general');
 *
 * The url may be ws(s):// or http(s)://; a url without a path gets '/socket.io/'; the query
 * EIO=4&transport=websocket is added.
 *
 * Options: token (string | () => string | Promise<string>, called on every (re)connect, sent
 * as the CONNECT's auth.token), reconnect (true), minDelay (250 ms), maxDelay (10000 ms),
 * ackTimeout (5000 ms), maxQueue (100), joinEvent ('joinRoom'), leaveEvent ('leaveRoom'),
 * WebSocket (constructor, default globalThis.WebSocket; pass require('ws') in Node 20).
 *
 * Listeners receive server events by name (with all the event's arguments) plus lifecycle
 * events: 'connect' (every CONNECT answered), 'reconnect' ({attempt}; after a drop, once rooms
 * were rejoined), 'disconnect' ({code, reason}; when a connected socket ends),
 * 'reconnecting' ({attempt, delay}) and 'connect_error' (an Error with .data; the server
 * refused the CONNECT, e.g. a bad token: no reconnect follows).
 *
 * Acks from the server: when a server event carries an ack id, its listeners get one more
 * argument, ack(data), which answers 43<id>[data]. The first call answers; later ones, or a
 * call after that connection has closed, do nothing:
 *   c.on('confirm', (question, ack) => ack(window.confirm(question)));
 *
 * Behaviour notes (as RealtimeClient):
 * - No reconnect after close(), after a CONNECT_ERROR, after a DISCONNECT (41) from the server,
 *   or after WebSocket close codes 1008 / 4401 / 4403.
 * - An ack whose first argument is an object with status 'error' and a message rejects the
 *   emitWithAck promise with Error(message) carrying .data (a Socket.IO server answers a
 *   failed request this way); errors of requests without an ack arrive as an 'error' event.
 * - Rooms joined through joinEvent (data: room name, or {room}) are remembered, forgotten
 *   through leaveEvent or when the server rejects the join, and re-joined on every reconnect
 *   that did not recover.
 * - Connection state recovery (when the server keeps a history), as socket.io-client: the
 *   CONNECT after a drop carries the session's pid and the last offset (the last string
 *   argument of an event); with the same pid back, `recovered` is true, the rooms were
 *   restored, the missed events follow, and 'recovered' fires; otherwise 'resync'
 *   ({reason}) tells the app to reload what it shows. Events kept in a history carry their
 *   offset as one more, last, argument.
 * - Events emitted while disconnected are queued (oldest dropped past maxQueue) and sent
 *   after the rejoins, in order, once connected again.
 * - An ack promise rejects on timeout ('ack timeout'), on a disconnect after it was sent, or
 *   on close().
 * - Without a ping from the server for pingInterval + pingTimeout, the connection counts as
 *   lost (code 4001) and a reconnect follows.
 */
(function (root) {
  'use strict';

  var OPEN = 1;
  var NO_RECONNECT_CODES = [1008, 4401, 4403];
  var MAX_ATTACHMENTS = 256; // binary frames one packet may announce

  function SocketIoLite(url, options) {
    var o = options || {};
    this.url = url;
    this.options = {
      token: o.token,
      reconnect: o.reconnect !== false,
      minDelay: o.minDelay != null ? o.minDelay : 250,
      maxDelay: o.maxDelay != null ? o.maxDelay : 10000,
      ackTimeout: o.ackTimeout != null ? o.ackTimeout : 5000,
      maxQueue: o.maxQueue != null ? o.maxQueue : 100,
      joinEvent: o.joinEvent || 'joinRoom',
      leaveEvent: o.leaveEvent || 'leaveRoom',
      WebSocket: o.WebSocket || root.WebSocket,
    };
    this.id = null;           // the Socket.IO socket id, while connected
    this.rooms = new Set();   // rooms to re-join after a reconnect
    this._listeners = {};     // event name → array of functions
    this._pending = new Map(); // ack id → {resolve, reject, timer, sent, forget}
    this._queue = [];         // frames waiting for a connected socket
    this._nextId = 0;
    this._ws = null;
    this._ready = false;      // the namespace CONNECT was answered on this._ws
    this._pingTimer = null;   // fires when the server stopped pinging
    this._pingWindow = 0;     // pingInterval + pingTimeout from the open packet
    this._attempt = 0;        // reconnect attempts since the last connect
    this._timer = null;       // pending reconnect timer
    this._stopped = true;     // true until connect(), and again after close()
    this._hasOpened = false;  // an earlier socket was connected (so the next one is a reconnect)
    this._first = null;       // {promise, resolve, reject} for connect()
    this._gen = 0;            // bumped by connect()/close(): stale async work checks it
    this._binary = null;      // {type, id, payload, parts, left}: a 45/46 packet collecting its frames
  }

  var proto = SocketIoLite.prototype;

  Object.defineProperty(proto, 'connected', {
    get: function () { return this._ready && !!this._ws && this._ws.readyState === OPEN; },
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
    function wrapper() { self.off(event, wrapper); fn.apply(self, arguments); }
    wrapper._orig = fn;
    return this.on(event, wrapper);
  };

  // Calls the listeners of `event` with `args` (an array).
  proto._dispatchArgs = function (event, args) {
    var list = (this._listeners[event] || []).slice(); // copy: listeners may unsubscribe
    for (var i = 0; i < list.length; i++) {
      try { list[i].apply(this, args); } catch (e) { console.error('socketio-lite: listener for "' + event + '" threw', e); }
    }
  };

  proto._dispatch = function (event, arg) {
    this._dispatchArgs(event, arguments.length > 1 ? [arg] : []);
  };

  // The ack(data) function handed to the listeners of a server event that carries an ack id:
  // it answers once, on the socket the event came from.
  proto._acker = function (id) {
    var self = this, ws = this._ws, done = false;
    return function ack(data) {
      if (done) return;
      done = true;
      if (ws !== self._ws || !self.connected) return; // that connection is gone
      sendPacket(ws, '3', id, data === undefined ? [] : [data]);
    };
  };

  // ---- connection lifecycle ------------------------------------------------

  /** Starts connecting (and reconnecting); resolves on the first successful CONNECT. */
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

  /** Closes for good: no reconnect; queued events and unanswered acks are rejected. */
  proto.close = function (code, reason) {
    var ws = this._ws, wasOpen = this.connected;
    this._stopped = true;
    this._gen++;
    this._detach();
    clearTimeout(this._timer);
    if (ws) {
      try { if (wasOpen) ws.send('41'); } catch (e) { /* closing anyway */ }
      try { ws.close(code || 1000, reason || ''); } catch (e) { /* already closing */ }
    }
    this._failAll(new Error('client closed'), true);
    this.rooms.clear();
    this._pid = null;
    this._offset = null;
    this._settleFirst(new Error('client closed'));
    if (wasOpen) this._dispatch('disconnect', { code: code || 1000, reason: reason || '' });
  };

  // Forgets the current socket (its handlers then see themselves as stale).
  proto._detach = function () {
    this._ws = null;
    this._binary = null;
    this._ready = false;
    this.id = null;
    clearTimeout(this._pingTimer);
  };

  proto._settleFirst = function (err) {
    var f = this._first;
    this._first = null;
    if (f) { if (err) f.reject(err); else f.resolve(); }
  };

  proto._endpoint = function () {
    var u = new URL(this.url, root.location ? root.location.href : undefined);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
    if (u.pathname === '' || u.pathname === '/') u.pathname = '/socket.io/';
    u.searchParams.set('EIO', '4');
    u.searchParams.set('transport', 'websocket');
    return u.toString();
  };

  proto._open = async function () {
    var o = this.options, gen = this._gen, token, url;
    try {
      if (!o.WebSocket) throw new Error('no WebSocket implementation: pass options.WebSocket');
      url = this._endpoint();
      token = typeof o.token === 'function' ? await o.token() : o.token;
    } catch (e) {
      if (gen !== this._gen) return;
      console.warn('socketio-lite: cannot connect:', e && e.message);
      return this._afterClose({ code: 1006, reason: String(e && e.message) });
    }
    if (gen !== this._gen) return; // close() was called while the token was being fetched
    var self = this, ws;
    try { ws = new o.WebSocket(url); } catch (e) {
      return this._afterClose({ code: 1006, reason: String(e && e.message) });
    }
    try { ws.binaryType = 'arraybuffer'; } catch (e) { /* not settable: Buffers (Node) are copied out; Blobs drop their packet */ }
    this._ws = ws;
    this._ready = false;
    ws.onopen = function () { /* the Engine.IO open packet follows */ };
    ws.onmessage = function (ev) { if (ws === self._ws) self._onMessage(ev.data, token); };
    ws.onerror = function () { /* a close event always follows; handled there */ };
    ws.onclose = function (ev) { self._lost(ws, { code: ev.code, reason: ev.reason || '' }); };
  };

  // The socket `ws` ended (closed, or went silent): disconnect, then maybe reconnect.
  proto._lost = function (ws, info, noReconnect) {
    if (ws !== this._ws) return;
    var wasReady = this._ready;
    this._detach();
    if (ws.readyState === OPEN) { try { ws.close(); } catch (e) { /* closing anyway */ } }
    this._failSent(new Error('disconnected'));
    if (wasReady) this._dispatch('disconnect', info);
    if (noReconnect) this._stop(info);
    else this._afterClose(info);
  };

  // No more reconnects: pending acks and queued events fail, connect() rejects.
  proto._stop = function (info, err) {
    this._stopped = true;
    this._failAll(new Error('disconnected'), true);
    if (!err) {
      err = new Error('connection closed (' + info.code + (info.reason ? ': ' + info.reason : '') + ')');
      err.code = info.code;
    }
    this._settleFirst(err);
  };

  proto._onConnected = function (sid, pid) {
    var attempt = this._attempt, reopened = this._hasOpened;
    // The same pid back means the server restored the rooms and replays what was missed.
    var hadPid = !!this._pid;
    this.recovered = !!pid && pid === this._pid;
    this._pid = pid || null;
    if (!this.recovered) this._offset = null;
    this._ready = true;
    this.id = sid;
    this._attempt = 0;
    this._hasOpened = true;
    // Re-join remembered rooms first (unless restored), skipping rooms whose join is queued.
    var queuedJoins = new Set(), self = this, o = this.options, restored = this.recovered;
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
    if (this.recovered) this._dispatch('recovered', { rooms: Array.from(this.rooms) });
    else if (reopened && hadPid) this._dispatch('resync', { reason: 'not recovered' });
    this._settleFirst(null);
  };

  proto._afterClose = function (info) {
    var o = this.options;
    if (this._stopped) return;
    if (!o.reconnect || NO_RECONNECT_CODES.indexOf(info.code) >= 0) return this._stop(info);
    // Exponential backoff with jitter: a random delay in [base/2, base], base doubling per attempt.
    var attempt = ++this._attempt;
    var base = Math.min(o.maxDelay, o.minDelay * Math.pow(2, attempt - 1));
    var delay = Math.round(Math.max(o.minDelay, base / 2 + Math.random() * base / 2));
    var self = this, gen = this._gen;
    this._dispatch('reconnecting', { attempt: attempt, delay: delay });
    this._timer = setTimeout(function () { if (gen === self._gen) self._open(); }, delay);
  };

  proto._armPing = function () {
    var self = this, ws = this._ws;
    clearTimeout(this._pingTimer);
    if (!this._pingWindow) return;
    this._pingTimer = setTimeout(function () { self._lost(ws, { code: 4001, reason: 'ping timeout' }); }, this._pingWindow);
  };

  // ---- incoming frames -----------------------------------------------------

  proto._onMessage = function (raw, token) {
    if (typeof raw !== 'string') return this._onBinaryFrame(raw);
    if (raw.length === 0) return;
    var ws = this._ws;
    switch (raw[0]) {
      case '0': { // Engine.IO open
        var open = parseJson(raw.slice(1)) || {};
        this._pingWindow = (open.pingInterval || 25000) + (open.pingTimeout || 20000);
        this._armPing();
        // Connection state recovery, as socket.io-client does it: after a drop, the session's
        // pid and the offset of the last event kept in a history go with the CONNECT.
        var auth = token ? { token: String(token) } : null;
        if (this._pid) {
          auth = auth || {};
          auth.pid = this._pid;
          if (this._offset != null) auth.offset = this._offset;
        }
        ws.send('40' + (auth ? JSON.stringify(auth) : ''));
        return;
      }
      case '1': return this._lost(ws, { code: 1000, reason: 'transport close' });
      case '2': this._armPing(); ws.send('3' + raw.slice(1)); return;
      case '4':
        if (this._binary) { // its binary frames were cut short: drop it, go on with this one
          console.error('socketio-lite: dropping a binary packet: ' + this._binary.left + ' of its binary frames did not come');
          this._binary = null;
        }
        return this._onPacket(raw.slice(1));
      default: return; // 3 (pong), 5 (upgrade), 6 (noop)
    }
  };

  // One Socket.IO packet: type digit, [attachments '-' (types 5 and 6)], [namespace ','],
  // [ack id], [JSON].
  proto._onPacket = function (s) {
    var type = s[0], i = 1, attachments = 0;
    if (type === '5' || type === '6') {
      var dash = s.indexOf('-', 1);
      var count = dash > 1 && dash <= 4 ? s.slice(1, dash) : '';
      attachments = /^[0-9]+$/.test(count) ? Number(count) : NaN;
      if (!(attachments >= 1 && attachments <= MAX_ATTACHMENTS)) {
        console.error('socketio-lite: dropping a binary packet with a bad attachment count: ' + JSON.stringify(s.slice(0, 12)));
        return;
      }
      i = dash + 1;
    }
    if (s[i] === '/') {
      var comma = s.indexOf(',', i);
      var nsp = comma < 0 ? s.slice(i) : s.slice(i, comma);
      if (nsp !== '/') return; // only the main namespace is used
      i = comma < 0 ? s.length : comma + 1;
    }
    var start = i;
    while (i < s.length && s[i] >= '0' && s[i] <= '9') i++;
    var id = i > start ? Number(s.slice(start, i)) : null;
    var payload = i < s.length ? parseJson(s.slice(i)) : undefined;
    if (attachments) {
      if (!Array.isArray(payload)) {
        console.error('socketio-lite: dropping a binary packet whose data is not an array');
        return;
      }
      // 5 is a binary EVENT, 6 a binary ACK: dispatched as such once the frames are in.
      this._binary = { type: type === '5' ? '2' : '3', id: id, payload: payload, parts: [], left: attachments };
      return;
    }
    this._handlePacket(type, id, payload);
  };

  // A binary frame: the next attachment of the packet being collected.
  proto._onBinaryFrame = function (raw) {
    var b = this._binary;
    if (!b) return; // no packet announced it
    var part = toArrayBuffer(raw);
    if (!part) {
      console.error('socketio-lite: dropping a binary packet: an attachment is not an ArrayBuffer (binaryType?)');
      this._binary = null;
      return;
    }
    b.parts.push(part);
    if (--b.left > 0) return;
    this._binary = null;
    var payload;
    try { payload = reconstruct(b.payload, b.parts); } catch (e) {
      console.error('socketio-lite: dropping a binary packet: ' + e.message);
      return;
    }
    this._handlePacket(b.type, b.id, payload);
  };

  proto._handlePacket = function (type, id, payload) {
    var ws = this._ws;
    switch (type) {
      case '0': // CONNECT answered
        if (!this._ready) this._onConnected(payload && payload.sid, payload && payload.pid);
        return;
      case '4': { // CONNECT_ERROR
        var d = payload && typeof payload === 'object' ? payload : { message: String(payload) };
        var err = new Error(d.message || 'connection refused');
        err.data = d;
        this._dispatch('connect_error', err);
        this._stop(null, err);
        return this._lost(ws, { code: 4401, reason: err.message }, true);
      }
      case '1': // DISCONNECT from the server
        return this._lost(ws, { code: 4000, reason: 'io server disconnect' }, true);
      case '2': // EVENT
        if (!Array.isArray(payload) || typeof payload[0] !== 'string') return;
        var args = payload.slice(1);
        // An event kept in a history ends with its offset (only when the server gave a pid).
        if (this._pid && args.length && typeof args[args.length - 1] === 'string') this._offset = args[args.length - 1];
        if (id != null) args.push(this._acker(id));
        this._dispatchArgs(payload[0], args);
        return;
      case '3': { // ACK
        var p = id != null ? this._pending.get(id) : null;
        if (!p) return; // late or unknown
        this._pending.delete(id);
        clearTimeout(p.timer);
        var first = Array.isArray(payload) ? payload[0] : undefined;
        if (first && typeof first === 'object' && first.status === 'error' && typeof first.message === 'string') {
          var e = new Error(first.message);
          e.data = first;
          // A join that failed must not be re-joined later.
          if (p.forget != null) this.rooms.delete(p.forget);
          p.reject(e);
        } else {
          p.resolve(first === undefined ? null : first);
        }
        return;
      }
      default: return;
    }
  };

  // ---- outgoing frames -----------------------------------------------------

  /** Fire-and-forget: sends now, or queues while disconnected. */
  proto.emit = function (event, data) {
    this._track(event, data);
    this._sendOrQueue({ event: event, data: data });
    return this;
  };

  /** Sends with an ack id; resolves with the ack's first argument. opts.timeout overrides ackTimeout. */
  proto.emitWithAck = function (event, data, opts) {
    var added = this._track(event, data);
    return this._request(event, data, opts || {}, true, added ? roomOf(data) : null);
  };

  // forget: room to drop from this.rooms if the server answers with an error.
  proto._request = function (event, data, opts, queueable, forget) {
    var self = this, id = this._nextId++;
    var timeout = opts.timeout != null ? opts.timeout : this.options.ackTimeout;
    var frame = { event: event, data: data, id: id };
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
    if (this.connected) return this._send(frame);
    this._queue.push(frame);
    if (this._queue.length > this.options.maxQueue) {
      var dropped = this._queue.shift();
      console.warn('socketio-lite: send queue full, dropping oldest "' + dropped.event + '" event');
      if (dropped.id != null) this._rejectId(dropped.id, new Error('dropped from send queue'));
    }
  };

  proto._send = function (frame) {
    var p = frame.id != null ? this._pending.get(frame.id) : null;
    if (frame.id != null && !p) return; // its ack already timed out or was rejected
    var args = frame.data === undefined ? [frame.event] : [frame.event, frame.data];
    sendPacket(this._ws, '2', frame.id, args);
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

  // Reject every pending ack; with dropQueue, also discard queued events.
  proto._failAll = function (err, dropQueue) {
    var self = this;
    if (dropQueue) this._queue = [];
    Array.from(this._pending.keys()).forEach(function (id) { self._rejectId(id, err); });
  };

  // ---- binary ---------------------------------------------------------------

  // Sends an EVENT ('2') or ACK ('3') packet with `args`; binary values in them make it a
  // BINARY_EVENT / BINARY_ACK ('5' / '6'): placeholders in the JSON, then one binary frame each.
  function sendPacket(ws, type, id, args) {
    var parts = [];
    var data = deconstruct(args, parts);
    var head = '4' + (parts.length ? String(Number(type) + 3) + parts.length + '-' : type);
    ws.send(head + (id != null ? id : '') + JSON.stringify(data));
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
    if (data && typeof data === 'object' && (data.constructor === Object || Object.getPrototypeOf(data) === null)) {
      var out = {};
      Object.keys(data).forEach(function (k) { out[k] = deconstruct(data[k], parts); });
      return out;
    }
    return data;
  }

  // data with each placeholder replaced by its part (an ArrayBuffer); throws on a placeholder
  // that names no part.
  function reconstruct(data, parts) {
    if (Array.isArray(data)) return data.map(function (v) { return reconstruct(v, parts); });
    if (data && typeof data === 'object') {
      if (data._placeholder === true) {
        var n = data.num;
        if (typeof n !== 'number' || n % 1 !== 0 || n < 0 || n >= parts.length) {
          throw new Error('bad placeholder ' + JSON.stringify(data) + ' (' + parts.length + ' attachments)');
        }
        return parts[n];
      }
      var out = {};
      Object.keys(data).forEach(function (k) { out[k] = reconstruct(data[k], parts); });
      return out;
    }
    return data;
  }

  // A binary frame as an ArrayBuffer (binaryType is 'arraybuffer'; a view is copied out), or
  // null for anything else (a Blob).
  function toArrayBuffer(raw) {
    if (raw instanceof ArrayBuffer) return raw;
    if (ArrayBuffer.isView(raw)) return raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    return null;
  }

  function roomOf(data) {
    if (typeof data === 'string') return data;
    if (data && typeof data === 'object' && typeof data.room === 'string') return data.room;
    return null;
  }

  function parseJson(text) {
    try { return JSON.parse(text); } catch (e) { return undefined; }
  }

  root.SocketIoLite = SocketIoLite;
  if (typeof module !== 'undefined' && module.exports) module.exports = SocketIoLite;
})(typeof globalThis !== 'undefined' ? globalThis : this);
