//! The demo's declared events and their TypeScript (`clients/js/types/chat.d.ts`): the
//! committed file is what the demo's hub writes, and it covers every event of the README's
//! demo contract, both ways. `.ci/run` type-checks `tests/node/types/chat.ts` (socket.io-client
//! and the native client) against it with `tsc --strict`.
#![cfg(feature = "typed")]

mod common;

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

use common::{typescript, SECRET};

const TYPES: &str = "clients/js/types/chat.d.ts";

fn written() -> String {
    let (_app, hub) = chat::app(SECRET.to_owned(), None);
    hub.typescript()
}

/// Regenerate with `UPDATE_TYPES=1 cargo test --test chat_types`.
#[test]
fn the_committed_chat_types_are_what_the_demo_writes() {
    typescript::assert_committed(TYPES, &written(), "chat_types");
}

/// The members of one interface of the generated file, by name.
fn members(ts: &str, interface: &str) -> Vec<String> {
    let start = ts.find(&format!("export interface {interface} {{\n")).expect(interface);
    let body = &ts[start..];
    let body = &body[body.find('\n').unwrap() + 1..body.find("\n}").unwrap()];
    body.lines()
        .map(|line| line.trim().split(':').next().unwrap().trim_matches('"').to_owned())
        .collect()
}

#[test]
fn the_chat_types_cover_every_event_of_the_demo_contract() {
    let ts = written();
    let client = members(&ts, "ClientToServerEvents");
    let server = members(&ts, "ServerToClientEvents");
    // The README's demo contract, both ways.
    let contract_client = [
        "joinRoom",
        "leaveRoom",
        "message",
        "messageToRoom",
        "privateMessage",
        "setStatus",
        "whoami",
        "shareFile",
        "typing",
    ];
    let contract_server = [
        "onlineUsers",
        "statuses",
        "presence",
        "userJoined",
        "userLeft",
        "message",
        "roomMessage",
        "privateMessage",
        "status",
        "fileShared",
        "typing",
        "notification",
        "error",
        "token_expiring",
    ];
    let mut want = contract_client.map(str::to_owned).to_vec();
    want.sort();
    assert_eq!(client, want, "client → server");
    let mut want = contract_server.map(str::to_owned).to_vec();
    want.sort();
    assert_eq!(server, want, "server → client");
    // Nothing typed loosely: every payload's Rust type is known (`message` is any JSON value,
    // `JsonValue`).
    assert_eq!(typescript::loose_types(&ts), Vec::<String>::new(), "{ts}");
}

/// Every event the demo handles or sends is a declared one: its source names no event as a
/// string, so none escapes the generated file.
#[test]
fn the_demo_sends_and_handles_declared_events_only() {
    let source = include_str!("../examples/chat.rs");
    for untyped in [".on(\"", ".emit(\"", ".emit_with_ack(\"", ".on_any("] {
        assert!(
            !source.contains(untyped),
            "examples/chat.rs uses `{untyped}`: declare the event instead"
        );
    }
}
