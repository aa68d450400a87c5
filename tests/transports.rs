//! One scenario matrix over the three transports: the native WebSocket (`/ws`), Socket.IO over
//! WebSocket and Socket.IO over HTTP long-polling. Each case is one `async fn case(t:
//! Transport)`, run for every transport by [`matrix!`], with the same assertions: a small test
//! client ([`TestClient`]) hides how each transport carries events, acks and endings, and
//! [`Ending`] says how the server ended a connection (a WebSocket close code, the Engine.IO close
//! packet, a DISCONNECT, …) so that a case can say what each transport must show.
//!
//! Tests are named `<case>::native`, `<case>::socketio_ws` and `<case>::socketio_polling`.
#![cfg(feature = "socketio")]

mod common;

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex as StdMutex},
    time::Duration,
};

use common::{eventually, now, serve_hub, sign, token, Ws, SECRET, WAIT};
use futures_util::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use serde_json::{json, Value};
use tokio::{
    io::AsyncWriteExt,
    net::TcpStream,
    sync::{mpsc, oneshot, watch, Mutex},
    task::JoinHandle,
    time::{timeout, Instant},
};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Error as WsError, Message};
use tower_realtime::{
    socketio::SocketIoConfig, Data, DisconnectReason, Emitter, ErrorEvent, History, Hub, HubBuilder, JwtAuth,
    RateLimit, Socket,
};

// ---------------------------------------------------------------------------------------------
// The matrix

/// Runs `case(t)` for each transport: `case::native`, `case::socketio_ws`,
/// `case::socketio_polling`.
macro_rules! matrix {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::Transport;

            #[tokio::test]
            async fn native() {
                super::$case(Transport::Native).await
            }

            #[tokio::test]
            async fn socketio_ws() {
                super::$case(Transport::SioWs).await
            }

            #[tokio::test]
            async fn socketio_polling() {
                super::$case(Transport::SioPolling).await
            }
        }
    )*};
}

matrix!(
    guard_refusal,
    recovery,
    takeover,
    origin,
    flood,
    slow_consumer,
    write_stall,
    close_while_client_writes,
    shutdown,
    expired_token_is_warned_then_closed,
    refreshed_token_outlives_the_old_expiry,
    refresh_for_another_user_or_invalid_is_refused,
    expiry_told_but_not_closed_when_configured,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// The native JSON protocol at `/ws`.
    Native,
    /// Socket.IO, WebSocket only (`transport=websocket`).
    SioWs,
    /// Socket.IO over HTTP long-polling (`transport=polling`), never upgraded.
    SioPolling,
}

const SIO_WS: &str = "/socket.io/?EIO=4&transport=websocket";
const SIO_POLLING: &str = "/socket.io/?EIO=4&transport=polling";

// ---------------------------------------------------------------------------------------------
// The server

type Disconnects = Arc<StdMutex<Vec<(String, DisconnectReason)>>>;

/// A hub served on 127.0.0.1:0, with `echo` and `join` handlers and a disconnect hook that
/// records why each user's connection ended.
struct Server {
    hub: Hub,
    addr: SocketAddr,
    gone: Disconnects,
}

impl Server {
    async fn start(sio: SocketIoConfig, f: impl FnOnce(HubBuilder) -> HubBuilder) -> Self {
        let gone = Disconnects::default();
        let seen = gone.clone();
        let builder = Hub::builder()
            .auth(JwtAuth::hs256(SECRET))
            .socketio(sio)
            .on("echo", |v: Value| async move { v })
            .on("join", |s: Socket, Data(room): Data<String>| async move {
                s.join(&room)?;
                Ok::<_, ErrorEvent>(json!({ "joined": room }))
            })
            .on_disconnect(move |s: Socket, reason| {
                let seen = seen.clone();
                async move {
                    let user = s.user_id().unwrap_or("-").to_owned();
                    seen.lock().unwrap().push((user, reason));
                }
            });
        let hub = f(builder).build();
        let addr = serve_hub(&hub).await;
        Self { hub, addr, gone }
    }

    async fn connect(&self, t: Transport, user: &str) -> TestClient {
        self.connect_with(t, user, Opts::default()).await
    }

    async fn connect_with(&self, t: Transport, user: &str, opts: Opts) -> TestClient {
        match TestClient::connect(self.addr, t, user, opts).await {
            Ok(client) => client,
            Err(refused) => panic!("{t:?}: {user} was refused: {refused:?}"),
        }
    }

    /// Why `user`'s first connection ended, if it has.
    fn reason(&self, user: &str) -> Option<DisconnectReason> {
        let gone = self.gone.lock().unwrap();
        gone.iter().find(|(u, _)| u == user).map(|(_, r)| r.clone())
    }

    /// Why `user`'s first connection ended, once it has (at most [`WAIT`]).
    async fn disconnected(&self, user: &str) -> DisconnectReason {
        assert!(
            eventually(|| self.reason(user).is_some()).await,
            "{user}'s connection never ended"
        );
        self.reason(user).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// The client

/// How the server ended a connection, whatever the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// A WebSocket close frame, with its code (`None`: a close frame without one) and reason.
    WsClose(Option<u16>, String),
    /// The Engine.IO close packet `1` (in a poll's body, or a WebSocket text frame).
    EioClose,
    /// A Socket.IO DISCONNECT of the main namespace (`41`).
    Disconnect,
    /// Polling: `400 Session ID unknown`, the session gone without a word.
    SessionUnknown,
    /// Polling: another HTTP answer than 200.
    Http(u16, String),
    /// The transport ended without a close frame (EOF, reset, request error).
    Dropped(String),
}

/// Why a connection was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refused {
    /// The handshake got this HTTP answer (no 101, no open packet).
    Http {
        status: u16,
        /// Its `Access-Control-Allow-Origin`, if any.
        cors: Option<String>,
        body: String,
    },
    /// Native: upgraded, then closed before the server said hello (`$session`).
    Closed(Ending),
    /// Socket.IO: a CONNECT_ERROR with this message.
    ConnectError(String),
}

/// A recovery session as the client remembers it: native `session`/`epoch`/offset, or
/// Socket.IO `pid` and the last offset argument.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    id: String,
    epoch: Option<String>,
    offset: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Opts {
    /// The handshake's `Origin` (every request's, for polling).
    origin: Option<&'static str>,
    /// A session to resume.
    resume: Option<Session>,
    /// The token (default: `user`'s, valid for an hour).
    token: Option<String>,
}

/// What the background reader hands over.
#[derive(Debug)]
enum Item {
    /// A native JSON frame, or one Socket.IO packet (Engine.IO pings are answered and not
    /// handed over).
    Text(String),
    /// A WebSocket close frame.
    WsClose(Option<u16>, String),
    /// Polling: a GET answered with another status than 200.
    Status(u16, String),
    /// The transport ended or failed.
    Gone(String),
}

enum Out {
    Ws(Arc<Mutex<SplitSink<Ws, Message>>>),
    Polling { http: reqwest::Client, url: String },
}

/// What a read found in a text item.
enum Msg {
    Event(String, Value, Option<String>),
    Ack(u64, Value),
    Other,
}

/// A client of one transport. A background task reads what the server sends (for polling: it
/// keeps a GET pending, as a real client does) and answers Engine.IO pings; it can be paused
/// (no read, no pending GET).
struct TestClient {
    t: Transport,
    out: Out,
    items: mpsc::UnboundedReceiver<Item>,
    /// Items read past while waiting for an ack.
    stash: VecDeque<Item>,
    paused: watch::Sender<bool>,
    idle: watch::Receiver<bool>,
    reader: JoinHandle<()>,
    next_id: u64,
    session: Option<Session>,
    recovered: bool,
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClient").field("t", &self.t).finish_non_exhaustive()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Waits while the reader is paused; `false` once the client is gone.
async fn gate(paused: &mut watch::Receiver<bool>, idle: &watch::Sender<bool>) -> bool {
    if !*paused.borrow_and_update() {
        return true;
    }
    idle.send_replace(true);
    let open = paused.wait_for(|p| !*p).await.is_ok();
    idle.send_replace(false);
    open
}

async fn read_ws(
    mut stream: SplitStream<Ws>,
    sink: Arc<Mutex<SplitSink<Ws, Message>>>,
    sio: bool,
    tx: mpsc::UnboundedSender<Item>,
    mut paused: watch::Receiver<bool>,
    idle: watch::Sender<bool>,
) {
    loop {
        if !gate(&mut paused, &idle).await {
            return;
        }
        let next = tokio::select! {
            next = stream.next() => next,
            p = paused.wait_for(|p| *p) => match p {
                Ok(_) => continue,
                Err(_) => return,
            },
        };
        let item = match next {
            Some(Ok(Message::Text(t))) => {
                if sio && t == "2" {
                    let _ = sink.lock().await.send(Message::text("3")).await;
                    continue;
                }
                Item::Text(t.to_string())
            }
            Some(Ok(Message::Close(frame))) => match frame {
                Some(f) => Item::WsClose(Some(u16::from(f.code)), f.reason.to_string()),
                None => Item::WsClose(None, String::new()),
            },
            Some(Ok(_)) => continue,
            Some(Err(e)) => Item::Gone(e.to_string()),
            None => Item::Gone("end of stream".into()),
        };
        let last = !matches!(item, Item::Text(_));
        let _ = tx.send(item);
        if last {
            return;
        }
    }
}

async fn read_polling(
    http: reqwest::Client,
    url: String,
    tx: mpsc::UnboundedSender<Item>,
    mut paused: watch::Receiver<bool>,
    idle: watch::Sender<bool>,
) {
    loop {
        if !gate(&mut paused, &idle).await {
            return;
        }
        // Pausing cancels the pending GET: a paused client has none.
        let res = tokio::select! {
            res = http.get(&url).send() => res,
            p = paused.wait_for(|p| *p) => match p {
                Ok(_) => continue,
                Err(_) => return,
            },
        };
        let res = match res {
            Ok(res) => res,
            Err(e) => {
                let _ = tx.send(Item::Gone(format!("GET failed: {e}")));
                return;
            }
        };
        let status = res.status().as_u16();
        let body = match res.text().await {
            Ok(body) => body,
            Err(e) => {
                let _ = tx.send(Item::Gone(format!("GET body failed: {e}")));
                return;
            }
        };
        if status != 200 {
            let _ = tx.send(Item::Status(status, body));
            return;
        }
        for packet in body.split('\u{1e}') {
            match packet {
                "2" => {
                    let _ = http.post(&url).body("3").send().await;
                }
                "6" => {}
                _ => {
                    let _ = tx.send(Item::Text(packet.to_owned()));
                    if packet == "1" {
                        return;
                    }
                }
            }
        }
    }
}

/// A WebSocket handshake, or the HTTP answer that refused it.
async fn ws_handshake(url: &str, headers: Vec<(&'static str, String)>) -> Result<Ws, Refused> {
    let mut req = url.into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    match timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("the handshake timed out")
    {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(res)) => Err(Refused::Http {
            status: res.status().as_u16(),
            cors: (res.headers().get("access-control-allow-origin")).map(|v| v.to_str().unwrap().to_owned()),
            body: (res.body().as_ref())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        }),
        Err(e) => panic!("the handshake failed without an HTTP answer: {e}"),
    }
}

/// The Socket.IO CONNECT's `auth`: the token, and the session to resume.
fn sio_auth(token: &str, resume: Option<&Session>) -> Value {
    let mut auth = json!({ "token": token });
    if let Some(s) = resume {
        auth["pid"] = json!(s.id);
        if let Some(offset) = &s.offset {
            auth["offset"] = json!(offset);
        }
    }
    auth
}

impl TestClient {
    fn start(t: Transport, out: Out, spawn: impl FnOnce(ReaderParts) -> JoinHandle<()>) -> Self {
        let (tx, items) = mpsc::unbounded_channel();
        let (paused, paused_rx) = watch::channel(false);
        let (idle_tx, idle) = watch::channel(false);
        let reader = spawn(ReaderParts {
            tx,
            paused: paused_rx,
            idle: idle_tx,
        });
        Self {
            t,
            out,
            items,
            stash: VecDeque::new(),
            paused,
            idle,
            reader,
            next_id: 0,
            session: None,
            recovered: false,
        }
    }

    fn start_ws(t: Transport, ws: Ws) -> Self {
        let (sink, stream) = ws.split();
        let sink = Arc::new(Mutex::new(sink));
        let reader_sink = sink.clone();
        Self::start(t, Out::Ws(sink), move |p| {
            tokio::spawn(read_ws(
                stream,
                reader_sink,
                t != Transport::Native,
                p.tx,
                p.paused,
                p.idle,
            ))
        })
    }

    /// Connects `user` over `t`. Native clients always take part in recovery (`recover=1`),
    /// so that the server says hello (`$session`) as Socket.IO's CONNECT answer does.
    async fn connect(addr: SocketAddr, t: Transport, user: &str, opts: Opts) -> Result<Self, Refused> {
        let mut headers = Vec::new();
        let bearer = opts.token.clone().unwrap_or_else(|| token(user));
        if let Some(origin) = opts.origin {
            headers.push(("origin", origin.to_owned()));
        }
        match t {
            Transport::Native => {
                let query = match &opts.resume {
                    None => "recover=1".to_owned(),
                    Some(s) => {
                        let mut q = format!("session={}", s.id);
                        if let Some(epoch) = &s.epoch {
                            q.push_str(&format!("&epoch={epoch}"));
                        }
                        if let Some(offset) = &s.offset {
                            q.push_str(&format!("&offset={offset}"));
                        }
                        q
                    }
                };
                headers.push(("authorization", format!("Bearer {bearer}")));
                let ws = ws_handshake(&format!("ws://{addr}/ws?{query}"), headers).await?;
                let mut c = Self::start_ws(t, ws);
                match c.next_item().await {
                    Item::Text(text) => {
                        let frame: Value = serde_json::from_str(&text).unwrap();
                        assert_eq!(frame["event"], "$session", "the server's hello: {frame}");
                        let news = &frame["data"];
                        c.recovered = news["recovered"] == true;
                        c.session = news["session"].as_str().map(|id| Session {
                            id: id.to_owned(),
                            epoch: news["epoch"].as_str().map(str::to_owned),
                            offset: match c.recovered {
                                true => opts.resume.as_ref().and_then(|s| s.offset.clone()),
                                false => None,
                            },
                        });
                        Ok(c)
                    }
                    Item::WsClose(code, reason) => Err(Refused::Closed(Ending::WsClose(code, reason))),
                    other => panic!("Native: neither hello nor close: {other:?}"),
                }
            }
            Transport::SioWs => {
                let ws = ws_handshake(&format!("ws://{addr}{SIO_WS}"), headers).await?;
                let mut c = Self::start_ws(t, ws);
                match c.next_item().await {
                    Item::Text(open) if open.starts_with('0') => {}
                    other => panic!("SioWs: an open packet first, got {other:?}"),
                }
                c.send(&format!("40{}", sio_auth(&bearer, opts.resume.as_ref())))
                    .await
                    .expect("CONNECT sent");
                c.sio_connected(opts.resume.as_ref()).await.map(|()| c)
            }
            Transport::SioPolling => {
                let mut default_headers = reqwest::header::HeaderMap::new();
                for (name, value) in headers {
                    default_headers.insert(name, value.parse().unwrap());
                }
                let http = reqwest::Client::builder()
                    .default_headers(default_headers)
                    .build()
                    .unwrap();
                let base = format!("http://{addr}{SIO_POLLING}");
                let res = timeout(WAIT, http.get(&base).send())
                    .await
                    .expect("the handshake timed out")
                    .expect("the handshake failed");
                let status = res.status().as_u16();
                let cors = (res.headers().get("access-control-allow-origin")).map(|v| v.to_str().unwrap().to_owned());
                let body = res.text().await.unwrap();
                if status != 200 {
                    return Err(Refused::Http { status, cors, body });
                }
                assert!(body.starts_with('0'), "an open packet: {body}");
                let open: Value = serde_json::from_str(&body[1..]).unwrap();
                let url = format!("{base}&sid={}", open["sid"].as_str().unwrap());
                let reader_http = http.clone();
                let reader_url = url.clone();
                let mut c = Self::start(t, Out::Polling { http, url }, move |p| {
                    tokio::spawn(read_polling(reader_http, reader_url, p.tx, p.paused, p.idle))
                });
                c.send(&format!("40{}", sio_auth(&bearer, opts.resume.as_ref())))
                    .await
                    .expect("CONNECT sent");
                c.sio_connected(opts.resume.as_ref()).await.map(|()| c)
            }
        }
    }

    /// Reads the answer to a Socket.IO CONNECT.
    async fn sio_connected(&mut self, resume: Option<&Session>) -> Result<(), Refused> {
        loop {
            match self.next_item().await {
                Item::Text(p) if p.starts_with("40") => {
                    let data: Value = serde_json::from_str(&p[2..]).unwrap();
                    self.recovered = resume.is_some_and(|s| data["pid"].as_str() == Some(s.id.as_str()));
                    self.session = data["pid"].as_str().map(|pid| Session {
                        id: pid.to_owned(),
                        epoch: None,
                        offset: match self.recovered {
                            true => resume.and_then(|s| s.offset.clone()),
                            false => None,
                        },
                    });
                    return Ok(());
                }
                Item::Text(p) if p.starts_with("44") => {
                    let data: Value = serde_json::from_str(&p[2..]).unwrap();
                    return Err(Refused::ConnectError(
                        data["message"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
                Item::Text(_) => {}
                other => panic!(
                    "{:?}: the connection ended before the CONNECT answer: {other:?}",
                    self.t
                ),
            }
        }
    }

    /// The client's recovery session, as of the last event read.
    fn session(&self) -> Option<Session> {
        self.session.clone()
    }

    /// Whether the server said this connection recovered the session it presented.
    fn recovered(&self) -> bool {
        self.recovered
    }

    /// Sends one text frame (WebSocket) or one POST (polling).
    async fn send(&self, text: &str) -> Result<(), String> {
        match &self.out {
            Out::Ws(sink) => (sink.lock().await.send(Message::text(text)).await).map_err(|e| e.to_string()),
            Out::Polling { .. } => match self.post(text.to_owned()).await? {
                (200, _) => Ok(()),
                (status, body) => Err(format!("POST answered {status}: {body}")),
            },
        }
    }

    /// A POST of `body` to the polling session: the status and body of its answer.
    async fn post(&self, body: String) -> Result<(u16, String), String> {
        let Out::Polling { http, url } = &self.out else {
            panic!("{:?}: not a polling client", self.t)
        };
        let res = timeout(WAIT, http.post(url).body(body).send())
            .await
            .map_err(|_| "the POST timed out".to_owned())?
            .map_err(|e| format!("the POST failed: {e}"))?;
        let status = res.status().as_u16();
        Ok((status, res.text().await.unwrap_or_default()))
    }

    fn encode_event(&self, event: &str, data: &Value, id: Option<u64>) -> String {
        match (self.t, id) {
            (Transport::Native, None) => json!({ "event": event, "data": data }).to_string(),
            (Transport::Native, Some(id)) => json!({ "event": event, "data": data, "id": id }).to_string(),
            (_, None) => format!("42{}", json!([event, data])),
            (_, Some(id)) => format!("42{id}{}", json!([event, data])),
        }
    }

    /// Sends `n` events at once: back to back on a WebSocket, in one POST for polling.
    async fn emit_many(&self, event: &str, data: Value, n: usize) -> Result<(), String> {
        let packets: Vec<String> = (0..n).map(|_| self.encode_event(event, &data, None)).collect();
        match &self.out {
            Out::Ws(sink) => {
                let mut sink = sink.lock().await;
                for p in packets {
                    sink.feed(Message::text(p)).await.map_err(|e| e.to_string())?;
                }
                sink.flush().await.map_err(|e| e.to_string())
            }
            Out::Polling { .. } => self.send(&packets.join("\u{1e}")).await,
        }
    }

    /// Sends an event with an ack id and returns the answer's data (the handler's reply, or
    /// the error object).
    async fn call(&mut self, event: &str, data: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let text = self.encode_event(event, &data, Some(id));
        if let Err(e) = self.send(&text).await {
            panic!("{:?}: {event} could not be sent: {e}", self.t);
        }
        let mut skipped = Vec::new();
        let answer = loop {
            let item = self.next_item().await;
            match &item {
                Item::Text(text) => {
                    if let Msg::Ack(ack, data) = self.parse(text) {
                        if ack == id {
                            break data;
                        }
                    }
                }
                other => panic!(
                    "{:?}: the connection ended while {event} waited for its ack: {other:?}",
                    self.t
                ),
            }
            skipped.push(item);
        };
        for item in skipped.into_iter().rev() {
            self.stash.push_front(item);
        }
        answer
    }

    fn parse(&self, text: &str) -> Msg {
        if self.t == Transport::Native {
            let frame: Value = serde_json::from_str(text).unwrap();
            if let Some(ack) = frame["ack"].as_u64() {
                return Msg::Ack(ack, frame["data"].clone());
            }
            return match frame["event"].as_str() {
                Some(event) => Msg::Event(
                    event.to_owned(),
                    frame["data"].clone(),
                    frame["offset"].as_u64().map(|o| o.to_string()),
                ),
                None => Msg::Other,
            };
        }
        let (kind, rest) = match text.get(..2) {
            Some(kind @ ("42" | "43")) => (kind, &text[2..]),
            _ => return Msg::Other,
        };
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let id = rest[..digits].parse::<u64>().ok();
        let Ok(Value::Array(mut args)) = serde_json::from_str::<Value>(&rest[digits..]) else {
            return Msg::Other;
        };
        match kind {
            "43" => Msg::Ack(id.unwrap_or_default(), args.first().cloned().unwrap_or_default()),
            _ => {
                let offset = match args.len() {
                    3 => args.pop().and_then(|o| o.as_str().map(str::to_owned)),
                    _ => None,
                };
                let name = args.first().and_then(Value::as_str).unwrap_or_default().to_owned();
                Msg::Event(name, args.get(1).cloned().unwrap_or_default(), offset)
            }
        }
    }

    async fn next_item(&mut self) -> Item {
        if let Some(item) = self.stash.pop_front() {
            return item;
        }
        match timeout(WAIT, self.items.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => Item::Gone("the reader has stopped".into()),
            Err(_) => panic!("{:?}: nothing from the server within {WAIT:?}", self.t),
        }
    }

    /// The next event: its name and data (acks and other packets are skipped). Takes the
    /// event's offset into the session.
    async fn next_event(&mut self) -> (String, Value) {
        loop {
            match self.next_item().await {
                Item::Text(text) => {
                    if let Msg::Event(name, data, offset) = self.parse(&text) {
                        if let (Some(offset), Some(session)) = (offset, &mut self.session) {
                            session.offset = Some(offset);
                        }
                        return (name, data);
                    }
                }
                other => panic!(
                    "{:?}: the connection ended while an event was awaited: {other:?}",
                    self.t
                ),
            }
        }
    }

    /// Reads (skipping events) until the server ends the connection; says how it did.
    async fn expect_closed(&mut self) -> Ending {
        loop {
            return match self.next_item().await {
                Item::Text(text) => match (self.t, text.as_str()) {
                    (Transport::Native, _) => continue,
                    (_, "1") => Ending::EioClose,
                    (_, "41") => Ending::Disconnect,
                    _ => continue,
                },
                Item::WsClose(code, reason) => Ending::WsClose(code, reason),
                Item::Status(400, body) if body.contains("Session ID unknown") => Ending::SessionUnknown,
                Item::Status(status, body) => Ending::Http(status, body),
                Item::Gone(e) => Ending::Dropped(e),
            };
        }
    }

    /// Stops reading: no more reads from the WebSocket, no pending GET.
    async fn pause(&mut self) {
        self.paused.send_replace(true);
        let stopped = timeout(WAIT, self.idle.wait_for(|idle| *idle)).await;
        assert!(matches!(stopped, Ok(Ok(_))), "{:?}: the reader did not stop", self.t);
    }

    fn resume(&mut self) {
        self.paused.send_replace(false);
    }

    /// Lets the background reader get back to the server (a polling client's next GET
    /// pending).
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Goes away without a word: the TCP connection is dropped; a polling client stops
    /// polling (its pending GET cancelled).
    fn drop_abruptly(self) {
        drop(self);
    }
}

struct ReaderParts {
    tx: mpsc::UnboundedSender<Item>,
    paused: watch::Receiver<bool>,
    idle: watch::Sender<bool>,
}

/// A control client kept busy (an `echo` every 50 ms) until `stop`, so that short pings do not
/// close it; the task gives it back.
fn keep_alive(mut c: TestClient) -> (oneshot::Sender<()>, JoinHandle<TestClient>) {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return c,
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    assert_eq!(c.call("echo", json!("keep-alive")).await, json!("keep-alive"), "{:?}: the control", c.t);
                }
            }
        }
    });
    (stop, task)
}

/// A WebSocket client on a bare TCP stream: a handshake by hand, frames written and read by
/// hand.
mod raw {
    use std::net::SocketAddr;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
        time::timeout,
    };

    use super::WAIT;

    pub const TEXT: u8 = 0x1;
    pub const CLOSE: u8 = 0x8;
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A whole masked frame, as a client sends it.
    pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u64;
        let mut f = Vec::with_capacity(payload.len() + 14);
        f.push(0x80 | opcode);
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&len.to_be_bytes());
        }
        f.extend_from_slice(&MASK);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        f
    }

    /// Completes a handshake to `target`; reads the answer's head byte by byte so that no frame
    /// is consumed with it.
    pub async fn handshake(addr: SocketAddr, target: &str, headers: &[(&str, String)]) -> TcpStream {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut req = format!(
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        );
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = timeout(WAIT, tcp.read_u8()).await.expect("no handshake answer");
            head.push(byte.expect("a handshake answer"));
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        tcp
    }

    async fn read_exact(tcp: &mut TcpStream, buf: &mut [u8]) -> Result<(), String> {
        match timeout(WAIT, tcp.read_exact(buf)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("read failed: {e}")),
            Err(_) => Err("nothing from the server in time".into()),
        }
    }

    /// The next frame from the server: its opcode and payload.
    pub async fn read_frame(tcp: &mut TcpStream) -> Result<(u8, Vec<u8>), String> {
        let mut h = [0u8; 2];
        read_exact(tcp, &mut h).await?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                read_exact(tcp, &mut b).await?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                read_exact(tcp, &mut b).await?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        read_exact(tcp, &mut payload).await?;
        Ok((h[0] & 0x0f, payload))
    }

    /// Reads up to the server's close frame (skipping everything else): its code.
    pub async fn close_code(tcp: &mut TcpStream) -> Result<u16, String> {
        loop {
            let (op, payload) = read_frame(tcp).await.map_err(|e| format!("no close frame: {e}"))?;
            if op == CLOSE {
                return match payload.get(..2) {
                    Some(code) => Ok(u16::from_be_bytes([code[0], code[1]])),
                    None => Err("a close frame without a code".into()),
                };
            }
        }
    }
}

/// A client that completes its handshake (and Socket.IO CONNECT), then never reads: a raw
/// TCP stream, or a polling session that is never polled.
#[allow(dead_code)] // held only to keep the connection open
enum Stalled {
    Tcp(TcpStream),
    Polling(reqwest::Client),
}

impl Stalled {
    async fn open(addr: SocketAddr, t: Transport, user: &str) -> Self {
        let connect = format!("40{}", json!({ "token": token(user) }));
        match t {
            Transport::Native => {
                let bearer = format!("Bearer {}", token(user));
                Self::Tcp(raw::handshake(addr, "/ws", &[("Authorization", bearer)]).await)
            }
            Transport::SioWs => {
                let mut tcp = raw::handshake(addr, SIO_WS, &[]).await;
                tcp.write_all(&raw::frame(raw::TEXT, connect.as_bytes())).await.unwrap();
                Self::Tcp(tcp)
            }
            Transport::SioPolling => {
                let http = reqwest::Client::new();
                let base = format!("http://{addr}{SIO_POLLING}");
                let body = http.get(&base).send().await.unwrap().text().await.unwrap();
                let open: Value = serde_json::from_str(&body[1..]).unwrap();
                let url = format!("{base}&sid={}", open["sid"].as_str().unwrap());
                let res = http.post(&url).body(connect).send().await.unwrap();
                assert_eq!(res.status(), 200);
                Self::Polling(http)
            }
        }
    }
}

/// What a server close must look like on `t`: the WebSocket close code on the native
/// transport; for Socket.IO, the server telling the client that it closed the session (the
/// Engine.IO close packet, or over WebSocket a close frame).
fn assert_closed_by_server(t: Transport, ending: &Ending, code: u16, reason: &str) {
    match t {
        Transport::Native => assert_eq!(ending, &Ending::WsClose(Some(code), reason.to_owned()), "{t:?}"),
        Transport::SioWs => assert!(
            matches!(ending, Ending::EioClose | Ending::WsClose(..)),
            "{t:?}: expected the Engine.IO close packet or a WebSocket close, got {ending:?}"
        ),
        Transport::SioPolling => assert_eq!(ending, &Ending::EioClose, "{t:?}: expected the Engine.IO close packet"),
    }
}

// ---------------------------------------------------------------------------------------------
// The cases

/// A connect guard refuses mallory with a reason: native close `1008` with it, Socket.IO a
/// CONNECT_ERROR with it. Alice, on the same server, is let in and answered.
async fn guard_refusal(t: Transport) {
    const REASON: &str = "mallory is not welcome here";
    let s = Server::start(SocketIoConfig::default(), |b| {
        b.guard_connect(|s: &Socket| match s.user_id() {
            Some("mallory") => Err(REASON),
            _ => Ok(()),
        })
    })
    .await;
    let refused = TestClient::connect(s.addr, t, "mallory", Opts::default())
        .await
        .expect_err("mallory is refused");
    let expected = match t {
        Transport::Native => Refused::Closed(Ending::WsClose(Some(1008), REASON.to_owned())),
        Transport::SioWs | Transport::SioPolling => Refused::ConnectError(REASON.to_owned()),
    };
    assert_eq!(refused, expected, "{t:?}");
    assert!(!s.hub.is_online("mallory"));

    let mut alice = s.connect(t, "alice").await;
    assert_eq!(
        alice.call("echo", json!({ "hi": 1 })).await,
        json!({ "hi": 1 }),
        "{t:?}"
    );
    assert!(eventually(|| s.hub.connection_count() == 1).await, "{t:?}");
}

/// A client in a room drops without a word; an event goes to the room while it is away; it
/// comes back with its session and position, is told it recovered, and gets the event.
async fn recovery(t: Transport) {
    // Short Socket.IO pings: a polling client that stops polling is seen gone within 600 ms.
    let sio = SocketIoConfig::default().ping(Duration::from_millis(300), Duration::from_millis(300));
    let s = Server::start(sio, |b| b.history(History::new().rooms("*"))).await;
    let mut a = s.connect(t, "alice").await;
    assert!(a.session().is_some(), "{t:?}: a recovery session");
    assert!(!a.recovered());
    assert_eq!(a.call("join", json!("general")).await, json!({ "joined": "general" }));
    s.hub.to_room("general").emit("said", &json!("first"));
    assert_eq!(a.next_event().await, ("said".to_owned(), json!("first")), "{t:?}");
    let position = a.session().unwrap();
    assert!(position.offset.is_some(), "{t:?}: the event carried an offset");

    a.drop_abruptly();
    assert!(
        eventually(|| s.hub.connection_count() == 0).await,
        "{t:?}: the drop was not seen"
    );
    s.hub.to_room("general").emit("said", &json!("missed"));

    let resume = Opts {
        resume: Some(position.clone()),
        ..Opts::default()
    };
    let mut b = s.connect_with(t, "alice", resume).await;
    assert!(b.recovered(), "{t:?}: told it recovered");
    assert_eq!(b.session().map(|s| s.id), Some(position.id), "{t:?}: the same session");
    assert_eq!(b.next_event().await, ("said".to_owned(), json!("missed")), "{t:?}");
    assert_eq!(s.hub.room_users("general"), ["alice"], "{t:?}: back in its room");
    assert_eq!(s.hub.counters().recovered, 1, "{t:?}");
}

/// A client comes back with its session while its old connection still holds it: the old one
/// is put out (native `4002`; Socket.IO: its session is closed by the server) and the new one
/// recovers.
async fn takeover(t: Transport) {
    let s = Server::start(SocketIoConfig::default(), |b| b.history(History::new().rooms("*"))).await;
    let mut a = s.connect(t, "alice").await;
    assert_eq!(a.call("join", json!("general")).await, json!({ "joined": "general" }));
    s.hub.to_room("general").emit("said", &json!(0));
    assert_eq!(a.next_event().await, ("said".to_owned(), json!(0)), "{t:?}");
    let position = a.session().expect("a recovery session");
    // Delivered to A (its reader takes it), but A's position is still before it.
    s.hub.to_room("general").emit("said", &json!(1));
    a.settle().await;

    let resume = Opts {
        resume: Some(position.clone()),
        ..Opts::default()
    };
    let mut b = s.connect_with(t, "alice", resume).await;
    assert!(b.recovered(), "{t:?}: B resumed A's session");
    assert_eq!(b.session().map(|s| s.id), Some(position.id), "{t:?}");
    assert_eq!(b.next_event().await, ("said".to_owned(), json!(1)), "{t:?}: the replay");

    let ending = a.expect_closed().await;
    match t {
        Transport::Native => assert_eq!(
            ending,
            Ending::WsClose(Some(4002), "session taken over by a newer connection".to_owned())
        ),
        Transport::SioWs | Transport::SioPolling => {
            assert_eq!(ending, Ending::EioClose, "{t:?}: A's session is closed by the server")
        }
    }
    assert_eq!(
        s.disconnected("alice").await,
        DisconnectReason::ServerClosed(4002, "session taken over by a newer connection".into()),
        "{t:?}"
    );
    assert!(eventually(|| s.hub.connection_count() == 1).await, "{t:?}");
    s.hub.to_room("general").emit("said", &json!("live"));
    assert_eq!(b.next_event().await, ("said".to_owned(), json!("live")), "{t:?}");
}

/// An allowed `Origin` is let in on every transport; another gets `403` without CORS headers.
async fn origin(t: Transport) {
    const GOOD: &str = "http://localhost:5173";
    const EVIL: &str = "http://evil.example";
    let s = Server::start(SocketIoConfig::default(), |b| b.allow_origin(GOOD)).await;
    let good = Opts {
        origin: Some(GOOD),
        ..Opts::default()
    };
    let mut c = s.connect_with(t, "alice", good).await;
    assert_eq!(
        c.call("echo", json!("from the app")).await,
        json!("from the app"),
        "{t:?}"
    );

    let evil = Opts {
        origin: Some(EVIL),
        ..Opts::default()
    };
    match TestClient::connect(s.addr, t, "mallory", evil).await {
        Err(Refused::Http { status, cors, body }) => {
            assert_eq!(status, 403, "{t:?}: {body}");
            assert_eq!(cors, None, "{t:?}: a refused origin gets no CORS header");
        }
        other => panic!("{t:?}: expected a 403, got {other:?}"),
    }
    assert_eq!(s.hub.counters().rejected_origin, 1, "{t:?}");
    assert_eq!(s.hub.connection_count(), 1, "{t:?}");
}

/// A client that keeps sending past its rate limit is closed for flooding; a control client
/// keeps working.
async fn flood(t: Transport) {
    let s = Server::start(SocketIoConfig::default(), |b| {
        b.rate_limit(RateLimit::per_second(1))
            .configure(|c| c.rate_limit_flood_threshold = 3)
    })
    .await;
    let mut control = s.connect(t, "control").await;
    let mut flooder = s.connect(t, "flooder").await;
    flooder.settle().await;
    // The server may close while the client still writes: a failed send is no failure here.
    let _ = flooder.emit_many("echo", json!("flood"), 20).await;
    let ending = flooder.expect_closed().await;
    assert_closed_by_server(t, &ending, 1008, "rate limit exceeded");
    assert_eq!(
        s.disconnected("flooder").await,
        DisconnectReason::ServerClosed(1008, "rate limit exceeded".into()),
        "{t:?}"
    );
    assert!(eventually(|| s.hub.connection_count() == 1).await, "{t:?}");
    assert_eq!(
        control.call("echo", json!("still here")).await,
        json!("still here"),
        "{t:?}"
    );
}

/// A client that reads nothing while 1,000 events are emitted to it is closed as a slow
/// consumer (native `1013`; Socket.IO: its session closed by the server).
async fn slow_consumer(t: Transport) {
    let s = Server::start(SocketIoConfig::default(), |b| b.configure(|c| c.outbound_queue = 8)).await;
    let mut control = s.connect(t, "control").await;
    let mut slow = s.connect(t, "slow").await;
    slow.pause().await;
    for i in 0..1000 {
        s.hub.to_user("slow").emit("tick", &json!(i));
    }
    assert!(
        eventually(|| s.hub.counters().slow_consumer_closes == 1).await,
        "{t:?}: {:?}",
        s.hub.counters()
    );
    slow.resume();
    let ending = slow.expect_closed().await;
    assert_closed_by_server(t, &ending, 1013, "slow consumer");
    assert_eq!(
        s.disconnected("slow").await,
        DisconnectReason::ServerClosed(1013, "slow consumer".into()),
        "{t:?}"
    );
    assert!(eventually(|| s.hub.connection_count() == 1).await, "{t:?}");
    assert_eq!(s.hub.counters().slow_consumer_closes, 1, "{t:?}");
    assert_eq!(
        control.call("echo", json!("still here")).await,
        json!("still here"),
        "{t:?}"
    );
}

/// A client that completes its handshake and then accepts nothing while the server writes
/// large events to it ends within a few seconds (over polling: a session never polled ends
/// after `ping_interval + ping_timeout`); a control client is served throughout.
async fn write_stall(t: Transport) {
    let (interval, window) = (Duration::from_millis(300), Duration::from_millis(200));
    let sio = SocketIoConfig::default().ping(interval, window);
    let s = Server::start(sio, |b| {
        b.configure(|c| {
            c.ping_interval = interval;
            c.ping_timeout = window;
        })
    })
    .await;
    let control = s.connect(t, "control").await;
    let (stop, control) = keep_alive(control);
    let _stalled = Stalled::open(s.addr, t, "stalled").await;
    assert!(eventually(|| s.hub.is_online("stalled")).await, "{t:?}: connected");

    let start = Instant::now();
    let pad = "w".repeat(64 * 1024);
    let mut seq = 0u64;
    while s.reason("stalled").is_none() {
        assert!(
            start.elapsed() < WAIT,
            "{t:?}: still open after {:?} and {seq} events of 64 KiB",
            start.elapsed()
        );
        s.hub.to_user("stalled").emit("big", &json!({ "seq": seq, "pad": pad }));
        seq += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reason = s.reason("stalled").unwrap();
    assert!(
        matches!(reason, DisconnectReason::ServerClosed(4001, _)),
        "{t:?}: ended after {:?}: {reason:?}",
        start.elapsed()
    );
    assert!(eventually(|| s.hub.connection_count() == 1).await, "{t:?}");
    let _ = stop.send(());
    let mut control = timeout(WAIT, control)
        .await
        .expect("the control stopped")
        .expect("the control was served throughout");
    assert_eq!(control.call("echo", json!("served")).await, json!("served"), "{t:?}");
}

/// The server closes a connection while its client is still writing a message over the limit,
/// and the client, which writes its whole message before it reads, still gets the close code
/// (`1009` on both WebSocket transports); over polling the POST gets `413`.
async fn close_while_client_writes(t: Transport) {
    const BIG: usize = 10 << 20;
    let s = Server::start(SocketIoConfig::default(), |b| b).await;
    let filler = "x".repeat(BIG);
    let message = match t {
        Transport::Native => json!({ "event": "big", "data": filler }).to_string(),
        Transport::SioWs | Transport::SioPolling => format!("42{}", json!(["big", filler])),
    };
    if t == Transport::SioPolling {
        let c = s.connect(t, "writer").await;
        let answer = c.post(message).await.map(|(status, _)| status);
        assert_eq!(answer, Ok(413), "{t:?}: a POST over maxPayload");
        return;
    }
    let mut tcp = match t {
        Transport::Native => {
            let bearer = format!("Bearer {}", token("writer"));
            raw::handshake(s.addr, "/ws", &[("Authorization", bearer)]).await
        }
        _ => {
            let mut tcp = raw::handshake(s.addr, SIO_WS, &[]).await;
            let connect = format!("40{}", json!({ "token": token("writer") }));
            tcp.write_all(&raw::frame(raw::TEXT, connect.as_bytes())).await.unwrap();
            tcp
        }
    };
    assert!(eventually(|| s.hub.is_online("writer")).await, "{t:?}: connected");
    let frame = raw::frame(raw::TEXT, message.as_bytes());
    let started = Instant::now();
    let wrote = timeout(WAIT, tcp.write_all(&frame)).await;
    let elapsed = started.elapsed();
    // Only then reads.
    let code = raw::close_code(&mut tcp).await;
    assert!(
        matches!(wrote, Ok(Ok(()))),
        "{t:?}: the client could not write its whole message: {wrote:?} after {elapsed:?} (then read {code:?})"
    );
    assert_eq!(code, Ok(1009), "{t:?}");
    assert!(eventually(|| s.hub.connection_count() == 0).await, "{t:?}");
}

/// `Hub::shutdown` with a client connected: native close `1001`; Socket.IO the Engine.IO close
/// packet (polling: in the pending GET's body; WebSocket: a text frame before the close).
async fn shutdown(t: Transport) {
    let s = Server::start(SocketIoConfig::default(), |b| b).await;
    let mut c = s.connect(t, "alice").await;
    assert_eq!(c.call("echo", json!(1)).await, json!(1));
    c.settle().await;
    let hub = s.hub.clone();
    let shutdown = tokio::spawn(async move { hub.shutdown().await });
    let ending = c.expect_closed().await;
    match t {
        Transport::Native => assert_eq!(ending, Ending::WsClose(Some(1001), "server shutting down".to_owned())),
        Transport::SioWs | Transport::SioPolling => assert_eq!(ending, Ending::EioClose, "{t:?}"),
    }
    let open = timeout(WAIT, shutdown).await.expect("shutdown returned").unwrap();
    assert_eq!(open, 0, "{t:?}: connections still open after the shutdown");
    assert_eq!(
        s.disconnected("alice").await,
        DisconnectReason::ServerClosed(1001, "server shutting down".into()),
        "{t:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Token lifetime

/// A server that warns 1 s before a token expires, with no leeway on `exp` (a connection's
/// deadline is `exp` plus the leeway).
async fn expiring_server() -> Server {
    Server::start(SocketIoConfig::default(), |b| {
        b.auth(JwtAuth::hs256(SECRET).leeway(Duration::ZERO))
            .configure(|c| c.token_expiry_warning = Some(Duration::from_secs(1)))
    })
    .await
}

/// Connects `user` with a token that expires at `exp` (unix seconds).
async fn connect_until(s: &Server, t: Transport, user: &str, exp: u64) -> TestClient {
    let opts = Opts {
        token: Some(sign(&json!({ "sub": user, "exp": exp }))),
        ..Opts::default()
    };
    s.connect_with(t, user, opts).await
}

/// The next event of `c`, which must be `name`; returns its data.
async fn expect_event(c: &mut TestClient, name: &str) -> Value {
    let (event, data) = c.next_event().await;
    assert_eq!(event, name, "{:?}: {data}", c.t);
    data
}

/// How an expired connection must end: native close `4003`; Socket.IO a DISCONNECT of its
/// namespace.
fn assert_expired(t: Transport, ending: &Ending) {
    match t {
        Transport::Native => assert_eq!(ending, &Ending::WsClose(Some(4003), "token expired".into()), "{t:?}"),
        Transport::SioWs | Transport::SioPolling => assert_eq!(ending, &Ending::Disconnect, "{t:?}"),
    }
}

/// A connection whose token expires without a refresh is warned (`token_expiring`), told
/// (`error`, code `4003`) and closed (`4003`; Socket.IO: DISCONNECT) at its expiry; a control
/// connection with a long token is neither warned nor closed.
async fn expired_token_is_warned_then_closed(t: Transport) {
    let s = expiring_server().await;
    let mut control = s.connect(t, "control").await;
    let exp = now() + 2;
    let mut victim = connect_until(&s, t, "victim", exp).await;
    let warning = expect_event(&mut victim, "token_expiring").await;
    assert_eq!(warning["expires_at"], json!(exp), "{t:?}");
    assert!(warning["expires_in_ms"].as_u64().unwrap() <= 2000, "{t:?}: {warning}");
    let error = expect_event(&mut victim, "error").await;
    assert_eq!(error["status"], "token_expired", "{t:?}");
    assert_eq!(error["code"], 4003, "{t:?}");
    assert_expired(t, &victim.expect_closed().await);
    assert_eq!(
        s.disconnected("victim").await,
        DisconnectReason::ServerClosed(4003, "token expired".into()),
        "{t:?}"
    );
    assert_eq!(
        control.call("echo", json!("still here")).await,
        json!("still here"),
        "{t:?}"
    );
    assert_eq!(s.reason("control"), None, "{t:?}");
    // The control connection heard nothing of it.
    let (event, _) = {
        s.hub.to_user("control").emit("ping-me", &json!(1));
        control.next_event().await
    };
    assert_eq!(event, "ping-me", "{t:?}: the control was warned");
}

/// A connection that sends `$refresh` with a new token for the same user before its expiry
/// stays past the old deadline.
async fn refreshed_token_outlives_the_old_expiry(t: Transport) {
    let s = expiring_server().await;
    let mut control = s.connect(t, "control").await;
    let started = Instant::now();
    let exp = now() + 2;
    let mut alice = connect_until(&s, t, "alice", exp).await;
    let fresh = sign(&json!({ "sub": "alice", "exp": now() + 3600 }));
    let answer = alice.call("$refresh", json!({ "token": fresh })).await;
    assert_eq!(answer["status"], "ok", "{t:?}: {answer}");
    // Past the old deadline (at most 2 s after `started`), with the warning's time too.
    tokio::time::sleep_until(started + Duration::from_millis(3000)).await;
    assert_eq!(alice.call("echo", json!("alive")).await, json!("alive"), "{t:?}");
    assert_eq!(s.reason("alice"), None, "{t:?}: closed despite the refresh");
    s.hub.to_user("alice").emit("after", &json!(1));
    assert_eq!(
        alice.next_event().await,
        ("after".to_owned(), json!(1)),
        "{t:?}: no warning, no error"
    );
    assert_eq!(control.call("echo", json!("ok")).await, json!("ok"), "{t:?}");
}

/// `$refresh` with an invalid token, or with a valid token for another user, is refused with
/// an error ack; the connection still works meanwhile and closes at its old deadline (`4003`).
async fn refresh_for_another_user_or_invalid_is_refused(t: Transport) {
    let s = expiring_server().await;
    let mut control = s.connect(t, "control").await;
    let started = Instant::now();
    let exp = now() + 2;
    let mut mallory = connect_until(&s, t, "mallory", exp).await;
    let invalid = mallory.call("$refresh", json!({ "token": "not.a.token" })).await;
    assert_eq!(invalid["status"], "unauthorized", "{t:?}: {invalid}");
    let missing = mallory.call("$refresh", json!({})).await;
    assert_eq!(missing["status"], "unauthorized", "{t:?}: {missing}");
    let alices = sign(&json!({ "sub": "alice", "exp": now() + 3600 }));
    let other = mallory.call("$refresh", json!({ "token": alices })).await;
    assert_eq!(other["status"], "forbidden", "{t:?}: {other}");
    assert_eq!(mallory.call("echo", json!("still")).await, json!("still"), "{t:?}");
    assert_expired(t, &mallory.expect_closed().await);
    // At the old deadline (at most 2 s after `started`), not later.
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "{t:?}: {:?}",
        started.elapsed()
    );
    assert_eq!(
        s.disconnected("mallory").await,
        DisconnectReason::ServerClosed(4003, "token expired".into()),
        "{t:?}"
    );
    assert!(!s.hub.is_online("alice"), "{t:?}");
    assert_eq!(control.call("echo", json!("ok")).await, json!("ok"), "{t:?}");
}

/// With `close_on_token_expiry` off and no warning, an expired connection gets the `error`
/// event (no `token_expiring` before it) and stays open.
async fn expiry_told_but_not_closed_when_configured(t: Transport) {
    let s = Server::start(SocketIoConfig::default(), |b| {
        b.auth(JwtAuth::hs256(SECRET).leeway(Duration::ZERO)).configure(|c| {
            c.token_expiry_warning = None;
            c.close_on_token_expiry = false;
        })
    })
    .await;
    let mut control = s.connect(t, "control").await;
    let mut bob = connect_until(&s, t, "bob", now() + 1).await;
    let error = expect_event(&mut bob, "error").await;
    assert_eq!(error["code"], 4003, "{t:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bob.call("echo", json!("open")).await, json!("open"), "{t:?}");
    assert_eq!(s.reason("bob"), None, "{t:?}");
    assert_eq!(control.call("echo", json!("ok")).await, json!("ok"), "{t:?}");
}
