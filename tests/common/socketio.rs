//! A hand-driven Engine.IO long-polling client, for the Socket.IO tests.
#![allow(dead_code)]

use std::net::SocketAddr;

use serde_json::Value;

use super::WAIT;

pub struct Polling {
    pub http: reqwest::Client,
    pub base: String,
    pub sid: String,
    /// Packets of a body read past the one a caller waited for.
    stash: std::sync::Mutex<std::collections::VecDeque<String>>,
}

impl Polling {
    pub async fn open(addr: SocketAddr) -> (Self, Value) {
        Self::handshake(reqwest::Client::new(), addr).await.unwrap()
    }

    /// A handshake from `local` (an address of the loopback network, 127.0.0.0/8).
    pub async fn open_from(addr: SocketAddr, local: std::net::IpAddr) -> Result<(Self, Value), (u16, Value)> {
        let http = reqwest::Client::builder().local_address(local).build().unwrap();
        Self::handshake(http, addr).await
    }

    /// A handshake: the session and its open packet, or the refusal's status and JSON body.
    pub async fn handshake(http: reqwest::Client, addr: SocketAddr) -> Result<(Self, Value), (u16, Value)> {
        let base = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
        let res = http.get(&base).send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        if status != 200 {
            return Err((status, serde_json::from_str(&body).unwrap_or(Value::String(body))));
        }
        assert!(body.starts_with('0'), "an open packet: {body}");
        let open: Value = serde_json::from_str(&body[1..]).unwrap();
        let sid = open["sid"].as_str().unwrap().to_owned();
        let stash = Default::default();
        Ok((Self { http, base, sid, stash }, open))
    }

    pub fn url(&self) -> String {
        format!("{}&sid={}", self.base, self.sid)
    }

    pub async fn post(&self, body: &str) -> reqwest::Response {
        self.http.post(self.url()).body(body.to_owned()).send().await.unwrap()
    }

    pub async fn get(&self) -> (u16, String) {
        let res = tokio::time::timeout(WAIT, self.http.get(self.url()).send())
            .await
            .unwrap()
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// Polls until a packet satisfying `pred` arrives (answering pings on the way).
    pub async fn until(&self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let next = self.stash.lock().unwrap().pop_front();
            let packet = match next {
                Some(p) => p,
                None => {
                    let (status, body) = self.get().await;
                    assert_eq!(status, 200, "{body}");
                    self.stash
                        .lock()
                        .unwrap()
                        .extend(body.split('\u{1e}').map(str::to_owned));
                    continue;
                }
            };
            if packet == "2" {
                self.post("3").await;
            }
            if pred(&packet) {
                return packet;
            }
        }
    }
}
