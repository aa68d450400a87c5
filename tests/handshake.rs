//! The handshake: pass-through, every rejection with its status, and the token sources.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower_realtime::{Hub, JwtAuth};

fn hub() -> Hub {
    Hub::builder().auth(JwtAuth::hs256(SECRET)).build()
}

fn ws_request(addr: std::net::SocketAddr, path: &str) -> tokio_tungstenite::tungstenite::http::Request<()> {
    format!("ws://{addr}{path}").into_client_request().unwrap()
}

fn with_token(addr: std::net::SocketAddr, token: &str) -> tokio_tungstenite::tungstenite::http::Request<()> {
    let mut req = ws_request(addr, "/ws");
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

#[tokio::test]
async fn other_paths_pass_through_untouched() {
    let hub = hub();
    let addr = serve_hub(&hub).await;
    let http = reqwest::Client::new();
    let res = http.get(format!("http://{addr}/hello")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "hello from the app");
    // Exact match: `/ws-admin` and `/ws/x` are the app's, and the app has no such route.
    for path in ["/ws-admin", "/ws/x", "/w"] {
        let res = http.get(format!("http://{addr}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn valid_token_upgrades_from_each_source() {
    let hub = hub();
    let addr = serve_hub(&hub).await;
    let t = token("alice");

    let (status, _) = handshake_status(with_token(addr, &t)).await;
    assert_eq!(status, 101, "Authorization header");

    let mut req = ws_request(addr, "/ws");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("realtime, bearer.{t}").parse().unwrap(),
    );
    let (_ws, res) = tokio_tungstenite::connect_async(req).await.expect("subprotocol token");
    assert_eq!(res.status(), 101);
    // The reply selects the fixed protocol name, never the token.
    assert_eq!(res.headers()["sec-websocket-protocol"], "realtime");

    let (status, _) = handshake_status(ws_request(addr, &format!("/ws?token={t}"))).await;
    assert_eq!(status, 101, "query parameter");
}

#[tokio::test]
async fn rejections_are_precise() {
    let hub = hub();
    let addr = serve_hub(&hub).await;
    let now = now();
    let rsa_private = include_bytes!("fixtures/rsa_private.pem");

    let cases: Vec<(&str, String)> = vec![
        ("bad signature", {
            let t = token("alice");
            let (head, _) = t.rsplit_once('.').unwrap();
            format!("{head}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        }),
        ("tampered payload", {
            let t = token("alice");
            let parts: Vec<&str> = t.split('.').collect();
            let forged = sign(&json!({ "sub": "admin", "exp": now + 3600 }));
            let forged_payload = forged.split('.').nth(1).unwrap();
            format!("{}.{}.{}", parts[0], forged_payload, parts[2])
        }),
        (
            "expired beyond leeway",
            sign(&json!({ "sub": "alice", "exp": now - 60 })),
        ),
        (
            "string exp",
            sign(&json!({ "sub": "alice", "exp": (now + 3600).to_string() })),
        ),
        ("no exp", sign(&json!({ "sub": "alice" }))),
        (
            "not yet valid",
            sign(&json!({ "sub": "alice", "exp": now + 3600, "nbf": now + 600 })),
        ),
        ("alg none", {
            use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
            format!(
                "{}.{}.",
                B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
                B64.encode(json!({ "sub": "alice", "exp": now + 3600 }).to_string().as_bytes())
            )
        }),
        (
            "RS-signed token against an HS key",
            sign_pem(
                Algorithm::RS256,
                rsa_private,
                &json!({ "sub": "alice", "exp": now + 3600 }),
            ),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, t) in cases {
        let (status, body) = handshake_status(with_token(addr, &t)).await;
        assert_eq!(status, 401, "{what}");
        let body: serde_json::Value = serde_json::from_str(body.as_deref().unwrap_or("")).expect("401 body is JSON");
        assert!(body["error"].is_string(), "{what}: {body}");
    }

    let (status, body) = handshake_status(ws_request(addr, "/ws")).await;
    assert_eq!(status, 401, "no token");
    assert_eq!(body.unwrap(), r#"{"error":"missing token"}"#);

    // Within the 5 s leeway: accepted.
    let (status, _) = handshake_status(with_token(addr, &sign(&json!({ "sub": "alice", "exp": now - 2 })))).await;
    assert_eq!(status, 101, "expired within leeway");
    assert!(hub.counters().rejected_auth >= 10);
}

#[tokio::test]
async fn hs_signed_token_against_an_rs_key_is_refused() {
    let hub = Hub::builder()
        .auth(JwtAuth::rs256_pem(include_bytes!("fixtures/rsa_public.pem")).unwrap())
        .build();
    let addr = serve_hub(&hub).await;
    let claims = json!({ "sub": "alice", "exp": now() + 3600 });
    // A classic confusion attack: HS256 keyed with the RSA public key.
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(include_bytes!("fixtures/rsa_public.pem")),
    )
    .unwrap();
    assert_eq!(handshake_status(with_token(addr, &t)).await.0, 401);
    let good = sign_pem(Algorithm::RS256, include_bytes!("fixtures/rsa_private.pem"), &claims);
    assert_eq!(handshake_status(with_token(addr, &good)).await.0, 101);
}

#[tokio::test]
async fn es256_tokens_verify() {
    let hub = Hub::builder()
        .auth(JwtAuth::es256_pem(include_bytes!("fixtures/ec_public.pem")).unwrap())
        .build();
    let addr = serve_hub(&hub).await;
    let good = sign_pem(
        Algorithm::ES256,
        include_bytes!("fixtures/ec_private.pem"),
        &json!({ "sub": "bob", "exp": now() + 3600 }),
    );
    assert_eq!(handshake_status(with_token(addr, &good)).await.0, 101);
}

#[tokio::test]
async fn audience_and_issuer_must_match_when_configured() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET).audience("chat").issuer("auth.example"))
        .build();
    let addr = serve_hub(&hub).await;
    let exp = now() + 3600;
    let ok = sign(&json!({ "sub": "a", "exp": exp, "aud": "chat", "iss": "auth.example" }));
    assert_eq!(handshake_status(with_token(addr, &ok)).await.0, 101);
    for claims in [
        json!({ "sub": "a", "exp": exp, "aud": "billing", "iss": "auth.example" }),
        json!({ "sub": "a", "exp": exp, "iss": "auth.example" }),
        json!({ "sub": "a", "exp": exp, "aud": "chat", "iss": "evil" }),
        json!({ "sub": "a", "exp": exp, "aud": "chat" }),
    ] {
        assert_eq!(
            handshake_status(with_token(addr, &sign(&claims))).await.0,
            401,
            "{claims}"
        );
    }
}

/// Sends a raw HTTP/1.1 request and returns the status line's code, the headers and the body.
async fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    // Read the head, then the body its Content-Length announces.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let text = loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("no answer")
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                break text;
            }
        }
        assert!(n > 0, "connection closed mid-answer: {text}");
    };
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

#[tokio::test]
async fn malformed_handshakes_get_400_405_426_and_403() {
    let hub = hub();
    let addr = serve_hub(&hub).await;
    let t = token("alice");
    let req = |method: &str, extra: &str, skip: &str| {
        let mut headers = vec![
            format!("Host: {addr}"),
            "Upgrade: websocket".into(),
            "Connection: Upgrade".into(),
            "Sec-WebSocket-Version: 13".into(),
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into(),
            format!("Authorization: Bearer {t}"),
        ];
        headers.retain(|h| skip.is_empty() || !h.starts_with(skip));
        format!("{method} /ws HTTP/1.1\r\n{}\r\n{extra}\r\n", headers.join("\r\n"))
    };

    let (code, text) = raw(addr, &req("POST", "Content-Length: 0\r\n", "")).await;
    assert_eq!(code, 405, "{text}");
    assert!(text.to_ascii_lowercase().contains("allow: get"));

    let (code, text) = raw(addr, &req("GET", "", "Upgrade:")).await;
    assert_eq!(code, 400);
    assert!(text.contains("Upgrade: websocket"), "{text}");

    let (code, _) = raw(addr, &req("GET", "", "Connection:")).await;
    assert_eq!(code, 400);

    let (code, text) = raw(addr, &req("GET", "", "Sec-WebSocket-Key")).await;
    assert_eq!(code, 400);
    assert!(text.contains("Sec-WebSocket-Key"), "{text}");

    let (code, _) = raw(addr, &req("GET", "Sec-WebSocket-Key: short\r\n", "Sec-WebSocket-Key")).await;
    assert_eq!(code, 400);

    let (code, text) = raw(
        addr,
        &req("GET", "Sec-WebSocket-Version: 8\r\n", "Sec-WebSocket-Version"),
    )
    .await;
    assert_eq!(code, 426, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("sec-websocket-version: 13"),
        "{text}"
    );

    let (code, text) = raw(addr, &req("GET", "Origin: http://evil.example\r\n", "")).await;
    assert_eq!(code, 403, "{text}");

    // Its own host as Origin is fine.
    let (code, text) = raw(addr, &req("GET", &format!("Origin: http://{addr}\r\n"), "")).await;
    assert_eq!(code, 101, "{text}");
}

#[tokio::test]
async fn allowed_origins_are_configurable() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .allow_origin("https://app.example")
        .build();
    let addr = serve_hub(&hub).await;
    let mut req = with_token(addr, &token("a"));
    req.headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    assert_eq!(handshake_status(req).await.0, 101);
    let mut req = with_token(addr, &token("a"));
    req.headers_mut()
        .insert("origin", "https://other.example".parse().unwrap());
    assert_eq!(handshake_status(req).await.0, 403);

    let any = Hub::builder().auth(JwtAuth::hs256(SECRET)).allow_any_origin().build();
    let addr = serve_hub(&any).await;
    let mut req = with_token(addr, &token("a"));
    req.headers_mut()
        .insert("origin", "https://other.example".parse().unwrap());
    assert_eq!(handshake_status(req).await.0, 101);
}

#[tokio::test]
async fn anonymous_is_opt_in() {
    let closed = Hub::builder().build();
    let addr = serve_hub(&closed).await;
    assert_eq!(handshake_status(ws_request(addr, "/ws")).await.0, 401);

    let open = Hub::builder().auth(tower_realtime::AllowAnonymous::new()).build();
    let addr = serve_hub(&open).await;
    assert_eq!(handshake_status(ws_request(addr, "/ws")).await.0, 101);
}
