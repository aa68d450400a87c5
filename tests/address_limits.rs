//! Anonymous floods: one client address cannot take every connection slot, nor open
//! connections faster than its rate, while clients from other addresses keep connecting.
//! Clients connect from 127.0.0.1 and 127.0.0.2 (both loopback) to tell addresses apart.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::{tungstenite::client::IntoClientRequest, MaybeTlsStream};
use tower_realtime::{AllowAnonymous, Config, Data, Hub, HubBuilder, JwtAuth, RateLimit};

const ATTACKER: &str = "127.0.0.1";
const CONTROL: &str = "127.0.0.2";

fn hub(builder: HubBuilder, configure: impl FnOnce(&mut Config)) -> Hub {
    builder
        .configure(configure)
        .on("echo", |Data(v): Data<String>| async move { v })
        .build()
}

/// Serves `hub` with `Hub::serve`, which gives each request its TCP peer address.
async fn serve(hub: &Hub) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hub.clone().serve(listener, "/ws"));
    addr
}

/// A WebSocket handshake from the local address `from`, with a bearer token if given:
/// the client, or the refusal's status and body.
async fn connect_from(from: &str, server: SocketAddr, token: Option<&str>) -> Result<Client, (u16, String)> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(server).await.unwrap();
    let mut req = format!("ws://{server}/ws").into_client_request().unwrap();
    if let Some(token) = token {
        (req.headers_mut()).insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let handshake = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream));
    match tokio::time::timeout(WAIT, handshake).await.expect("answered in time") {
        Ok((ws, _)) => Ok(Client::new(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
            Err((res.status().as_u16(), body.unwrap_or_default()))
        }
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

async fn works(client: &mut Client) {
    assert_eq!(client.call("echo", json!("hi")).await["data"], json!("hi"));
}

#[tokio::test]
async fn one_anonymous_address_cannot_take_every_connection_slot() {
    let hub = hub(Hub::builder().auth(AllowAnonymous::new()), |c| {
        c.max_connections_per_address = 3;
        c.connect_rate_per_address = None;
    });
    let server = serve(&hub).await;

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(ATTACKER, server, None).await.expect("under the cap"));
    }
    let refused = connect_from(ATTACKER, server, None).await.err().expect("past the cap");
    assert_eq!(refused, (429, "too many connections from this address".to_owned()));

    // Another address connects and works.
    let mut control = connect_from(CONTROL, server, None).await.expect("another address");
    works(&mut control).await;
    works(&mut held[0]).await;

    // A connection that ends gives its address's slot back.
    held.pop().unwrap().close().await;
    assert!(eventually(|| hub.connection_count() == 3).await);
    let mut again = connect_from(ATTACKER, server, None)
        .await
        .expect("a slot is free again");
    works(&mut again).await;
}

#[tokio::test]
async fn one_anonymous_address_cannot_open_connections_faster_than_its_rate() {
    let hub = hub(Hub::builder().auth(AllowAnonymous::new()), |c| {
        c.connect_rate_per_address = Some(RateLimit::per_second(1).burst(3));
    });
    let server = serve(&hub).await;

    for _ in 0..3 {
        connect_from(ATTACKER, server, None)
            .await
            .expect("within the burst")
            .close()
            .await;
    }
    let refused = connect_from(ATTACKER, server, None).await.err().expect("past the rate");
    assert_eq!(
        refused,
        (
            429,
            "too many new connections from this address; retry later".to_owned()
        )
    );

    let mut control = connect_from(CONTROL, server, None).await.expect("another address");
    works(&mut control).await;
}

#[tokio::test]
async fn authenticated_users_are_limited_per_user_not_per_address_unless_asked() {
    let unlimited = hub(Hub::builder().auth(JwtAuth::hs256(SECRET)), |c| {
        c.max_connections_per_address = 1;
    });
    let server = serve(&unlimited).await;
    let mut alice = connect_from(ATTACKER, server, Some(&token("alice")))
        .await
        .expect("alice");
    let mut bob = connect_from(ATTACKER, server, Some(&token("bob")))
        .await
        .expect("bob, same address");
    works(&mut alice).await;
    works(&mut bob).await;

    let limited = hub(Hub::builder().auth(JwtAuth::hs256(SECRET)), |c| {
        c.max_connections_per_address = 1;
        c.address_limits_for_users = true;
    });
    let server = serve(&limited).await;
    let mut alice = connect_from(ATTACKER, server, Some(&token("alice")))
        .await
        .expect("alice");
    let refused = connect_from(ATTACKER, server, Some(&token("bob")))
        .await
        .err()
        .expect("bob");
    assert_eq!(refused.0, 429);
    let mut carol = connect_from(CONTROL, server, Some(&token("carol")))
        .await
        .expect("another address");
    works(&mut alice).await;
    works(&mut carol).await;
}

#[tokio::test]
async fn without_a_known_address_the_per_address_limits_do_not_apply() {
    // axum without connect info: the server does not know the peer address.
    let hub = hub(Hub::builder().auth(AllowAnonymous::new()), |c| {
        c.max_connections_per_address = 1;
    });
    let server = serve_hub(&hub).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            connect_from(ATTACKER, server, None)
                .await
                .expect("no address, no limit"),
        );
    }
    for client in &mut clients {
        works(client).await;
    }
}

/// Behind a trusted proxy that appends the client address to `X-Forwarded-For`: Socket.IO
/// CONNECTs from one address past the cap get a `CONNECT_ERROR`; an address the client wrote
/// itself (the header's first entry) does not count.
#[cfg(feature = "socketio")]
#[tokio::test]
async fn socketio_connects_from_one_forwarded_address_past_the_cap_get_connect_error() {
    use tower_realtime::socketio::SocketIoConfig;

    let hub = hub(
        Hub::builder()
            .auth(AllowAnonymous::new())
            .socketio(SocketIoConfig::default())
            .client_address_from_header("x-forwarded-for"),
        |c| {
            c.max_connections_per_address = 2;
            c.connect_rate_per_address = None;
        },
    );
    let server = serve_hub(&hub).await;

    // One polling session, its CONNECT to `/`, and the answer.
    async fn connect(server: SocketAddr, forwarded: &str) -> (reqwest::Client, String, String) {
        let http = reqwest::Client::new();
        let base = format!("http://{server}/socket.io/?EIO=4&transport=polling");
        let get = |url: String| http.get(url).header("x-forwarded-for", forwarded).send();
        let body = get(base.clone()).await.unwrap().text().await.unwrap();
        let open: serde_json::Value = serde_json::from_str(&body[1..]).unwrap();
        let url = format!("{base}&sid={}", open["sid"].as_str().unwrap());
        let post = http.post(&url).header("x-forwarded-for", forwarded).body("40");
        assert_eq!(post.send().await.unwrap().status(), 200);
        let answer = tokio::time::timeout(WAIT, get(url.clone())).await.unwrap().unwrap();
        let answer = answer.text().await.unwrap();
        (http, url, answer)
    }

    for n in 0..2 {
        // Each client writes a different address of its own first: it does not count.
        let (_, _, answer) = connect(server, &format!("6.6.6.{n}, 10.0.0.1")).await;
        assert!(answer.starts_with("40{\"sid\""), "{answer}");
    }
    let (_, _, answer) = connect(server, "6.6.6.9, 10.0.0.1").await;
    assert_eq!(answer, r#"44{"message":"too many connections from this address"}"#);

    // Another address connects, and its socket works.
    let (http, url, answer) = connect(server, "10.0.0.2").await;
    assert!(answer.starts_with("40{\"sid\""), "{answer}");
    let post = http.post(&url).header("x-forwarded-for", "10.0.0.2");
    post.body("421[\"echo\",\"hi\"]").send().await.unwrap();
    let mut seen = String::new();
    while !seen.contains("431[\"hi\"]") {
        let res = tokio::time::timeout(WAIT, http.get(&url).send())
            .await
            .unwrap()
            .unwrap();
        seen.push_str(&res.text().await.unwrap());
    }
}
