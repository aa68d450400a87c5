//! The Redis cluster layer against a real Redis: ops between nodes, presence, node death,
//! queries, and an outage made with a TCP proxy that can be cut and restored.
//!
//! The tests run when `REALTIME_TEST_REDIS` names the server (`.ci/run` sets
//! `redis://127.0.0.1:6379`); without it each one says that it did not run. With it, a Redis
//! that cannot be reached is a failure. Each test uses a channel and key prefix of its own.

#[cfg(not(feature = "redis"))]
#[test]
fn redis_tests_need_the_feature() {
    // Straight to stderr: the harness keeps a passing test's `println!` to itself.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "redis test did not run: build with --features redis");
}

#[cfg(feature = "redis")]
#[path = "common/proxy.rs"]
mod proxy;

#[cfg(feature = "redis")]
mod redis_common;

#[cfg(feature = "redis")]
mod cluster {
    use super::proxy::{through, Proxy};
    use crate::redis_common::next_op;
    use std::{
        collections::{HashMap, HashSet},
        hash::{BuildHasher, Hasher},
        time::{Duration, Instant},
    };

    use serde_json::{json, Value};
    use tokio::{sync::mpsc::Receiver, task::JoinHandle};
    use tower_realtime::adapter::{Inbound, Op, Query, RedisAdapter, RedisOptions, Target};

    /// How long a test waits for something that should arrive.
    const WAIT: Duration = Duration::from_secs(5);
    /// How long a test waits to be sure something does not arrive.
    const QUIET: Duration = Duration::from_millis(400);
    /// Scheduling and round-trip slack on top of a documented bound.
    const SLACK: Duration = Duration::from_millis(400);

    fn redis_url() -> Option<String> {
        match std::env::var("REALTIME_TEST_REDIS") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                // Straight to stderr: the harness keeps a passing test's `println!` to itself.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "redis test did not run: set REALTIME_TEST_REDIS=redis://127.0.0.1:6379"
                );
                None
            }
        }
    }

    fn random_hex() -> String {
        let n = std::collections::hash_map::RandomState::new().build_hasher().finish();
        format!("{n:016x}")
    }

    /// Options for a test: its own prefix, and short timings.
    fn options(prefix: &str) -> RedisOptions {
        let mut o = RedisOptions::default();
        o.prefix = prefix.to_owned();
        o.heartbeat = Duration::from_millis(200);
        o.node_timeout = Duration::from_millis(800);
        o.query_timeout = Duration::from_millis(1000);
        o.command_timeout = Duration::from_millis(500);
        o
    }

    fn new_prefix() -> String {
        format!("trt-test-{}", random_hex())
    }

    async fn node(url: &str, options: RedisOptions) -> (RedisAdapter, Receiver<Inbound>) {
        match RedisAdapter::connect(url, options).await {
            Ok(pair) => pair,
            Err(e) => panic!("Redis at {url} could not be reached (REALTIME_TEST_REDIS is set): {e}"),
        }
    }

    async fn nodes(url: &str, prefix: &str, n: usize) -> Vec<(RedisAdapter, Receiver<Inbound>)> {
        let mut all = Vec::new();
        for _ in 0..n {
            all.push(node(url, options(prefix)).await);
        }
        all
    }

    fn emit(seq: u64, origin: &str) -> Op {
        Op::emit(
            "/",
            vec![Target::Room("general".into())],
            vec![],
            "message",
            &json!({ "origin": origin, "seq": seq }),
        )
        .unwrap()
    }

    /// The next op on `rx`, skipping presence reports.
    /// The next presence report on `rx`, skipping the rest.
    async fn next_presence(rx: &mut Receiver<Inbound>, within: Duration) -> Option<(Vec<String>, Vec<String>)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Inbound::PresenceChanged { online, offline })) => return Some((online, offline)),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Every presence report on `rxs` until `deadline`: (index of the receiver, online,
    /// offline, when it was read).
    async fn presence_reports(
        rxs: &mut [&mut Receiver<Inbound>],
        deadline: Instant,
    ) -> Vec<(usize, Vec<String>, Vec<String>, Instant)> {
        let mut reports = Vec::new();
        while Instant::now() < deadline {
            for (i, rx) in rxs.iter_mut().enumerate() {
                while let Ok(message) = rx.try_recv() {
                    if let Inbound::PresenceChanged { online, offline } = message {
                        reports.push((i, online, offline, Instant::now()));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reports
    }

    fn emit_data(op: &Op) -> Value {
        match op {
            Op::Emit { data, .. } => serde_json::from_str(data.get()).unwrap(),
            other => panic!("expected an emit, got {other:?}"),
        }
    }

    /// Answers every query on `rx` with `answer`, until the receiver closes.
    fn answer_queries(mut rx: Receiver<Inbound>, answer: Value) -> JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if let Inbound::Query { reply, .. } = message {
                    reply.send(answer.clone());
                }
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_exchange_ops_never_echoed_to_the_sender() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let mut n = nodes(&url, &prefix, 2).await;
        let (b, mut b_rx) = n.pop().unwrap();
        let (a, mut a_rx) = n.pop().unwrap();
        assert_ne!(a.node_id(), b.node_id());

        assert!(a.publish(&emit(1, "a")));
        let (from, op) = next_op(&mut b_rx, WAIT).await.expect("b gets a's emit");
        assert_eq!(from, a.node_id());
        assert_eq!(emit_data(&op), json!({ "origin": "a", "seq": 1 }));
        match op {
            Op::Emit { ns, targets, event, .. } => {
                assert_eq!(ns, "/");
                assert_eq!(targets, vec![Target::Room("general".into())]);
                assert_eq!(event, "message");
            }
            _ => unreachable!(),
        }

        assert!(b.publish(&Op::Join {
            conn: 7 << 40,
            room: "r".into()
        }));
        let (from, op) = next_op(&mut a_rx, WAIT).await.expect("a gets b's join");
        assert_eq!(from, b.node_id());
        assert!(matches!(op, Op::Join { conn, room } if conn == 7 << 40 && room == "r"));

        for (rx, name) in [(&mut a_rx, "a"), (&mut b_rx, "b")] {
            assert!(
                next_op(rx, QUIET).await.is_none(),
                "{name} got its own op back, or a duplicate"
            );
        }
        assert_eq!(a.stats().published, 1);
        assert_eq!(a.stats().received, 1);
        assert_eq!(a.stats().lost, 0);
        // Several heartbeats and subscription pings later, nothing has broken.
        tokio::time::sleep(Duration::from_millis(700)).await;
        for s in [a.stats(), b.stats()] {
            assert!(s.link_up && s.subscribed, "{s:?}");
            assert_eq!((s.reconnects, s.malformed, s.dropped, s.lost), (0, 0, 0, 0), "{s:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_nodes_each_op_reaches_every_other_node_exactly_once() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let n = nodes(&url, &prefix, 3).await;
        const PER_NODE: u64 = 100;
        for (i, (adapter, _)) in n.iter().enumerate() {
            for seq in 0..PER_NODE {
                assert!(adapter.publish(&emit(seq, &i.to_string())));
            }
        }
        let ids: Vec<String> = n.iter().map(|(a, _)| a.node_id().to_owned()).collect();
        let (_adapters, receivers): (Vec<_>, Vec<_>) = n.into_iter().unzip();
        for (i, mut rx) in receivers.into_iter().enumerate() {
            let mut seen: HashMap<(String, u64), usize> = HashMap::new();
            let expected = 2 * PER_NODE as usize;
            let mut got = 0;
            while got < expected {
                let Some((from, op)) = next_op(&mut rx, WAIT).await else {
                    panic!("node {i} got {got} of {expected} ops");
                };
                let data = emit_data(&op);
                let origin = data["origin"].as_str().unwrap().to_owned();
                assert_ne!(origin, i.to_string(), "node {i} got its own op");
                assert_eq!(from, ids[origin.parse::<usize>().unwrap()], "`node` is the sender");
                *seen.entry((origin, data["seq"].as_u64().unwrap())).or_default() += 1;
                got += 1;
            }
            assert!(
                next_op(&mut rx, QUIET).await.is_none(),
                "node {i} got more than {expected}"
            );
            assert_eq!(seen.len(), expected, "node {i} got a duplicate");
            assert!(seen.values().all(|&c| c == 1));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_targeted_op_reaches_its_node_only() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let mut n = nodes(&url, &prefix, 3).await;
        let (_c, mut c_rx) = n.pop().unwrap();
        let (b, mut b_rx) = n.pop().unwrap();
        let (a, _a_rx) = n.pop().unwrap();
        assert!(a.publish_to(b.node_id(), &Op::Disconnect { conn: 42 }));
        let (from, op) = next_op(&mut b_rx, WAIT).await.expect("b gets it");
        assert_eq!(from, a.node_id());
        assert!(matches!(op, Op::Disconnect { conn: 42 }));
        assert!(next_op(&mut c_rx, QUIET).await.is_none(), "c must not get b's op");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn presence_first_and_last_connection_across_nodes() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let mut n = nodes(&url, &prefix, 2).await;
        let (b, _b_rx) = n.pop().unwrap();
        let (a, _a_rx) = n.pop().unwrap();

        assert!(a.user_connected("alice").await.unwrap(), "first connection anywhere");
        assert!(!b.user_connected("alice").await.unwrap(), "already online on a");
        assert!(!a.user_connected("alice").await.unwrap(), "a second tab on a");
        assert!(b.user_connected("bob").await.unwrap());

        let online = b.online_users().await;
        assert!(!online.partial);
        assert_eq!(online.value, vec!["alice", "bob"]);
        assert_eq!(a.online_users().await.value, vec!["alice", "bob"]);

        assert!(!a.user_disconnected("alice").await.unwrap());
        assert!(!a.user_disconnected("alice").await.unwrap(), "still on b");
        assert!(
            b.user_disconnected("alice").await.unwrap(),
            "the last connection anywhere"
        );
        assert!(
            !b.user_disconnected("alice").await.unwrap(),
            "unknown user: nothing happens"
        );
        assert_eq!(a.online_users().await.value, vec!["bob"]);
        assert!(b.user_disconnected("bob").await.unwrap());
        assert!(a.online_users().await.value.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn presence_race_exactly_one_node_sees_the_first_and_the_last() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let mut n = nodes(&url, &prefix, 2).await;
        let (b, _b_rx) = n.pop().unwrap();
        let (a, _a_rx) = n.pop().unwrap();
        for round in 0..50 {
            let user = format!("racer-{round}");
            let (x, y) = tokio::join!(
                tokio::spawn({
                    let (a, user) = (a.clone(), user.clone());
                    async move { a.user_connected(&user).await.unwrap() }
                }),
                tokio::spawn({
                    let (b, user) = (b.clone(), user.clone());
                    async move { b.user_connected(&user).await.unwrap() }
                }),
            );
            assert!(x.unwrap() ^ y.unwrap(), "round {round}: exactly one `came online`");
            let (x, y) = tokio::join!(
                tokio::spawn({
                    let (a, user) = (a.clone(), user.clone());
                    async move { a.user_disconnected(&user).await.unwrap() }
                }),
                tokio::spawn({
                    let (b, user) = (b.clone(), user.clone());
                    async move { b.user_disconnected(&user).await.unwrap() }
                }),
            );
            assert!(x.unwrap() ^ y.unwrap(), "round {round}: exactly one `went offline`");
        }
        assert!(a.online_users().await.value.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_node_leaves_the_cluster_view_within_the_bound() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let mut n = nodes(&url, &prefix, 3).await;
        let (c, mut c_rx) = n.pop().unwrap();
        let (b, b_rx) = n.pop().unwrap();
        let (a, mut a_rx) = n.pop().unwrap();
        let b_id = b.node_id().to_owned();
        let opts = a.options().clone();

        assert!(a.user_connected("alice").await.unwrap());
        assert!(b.user_connected("bob").await.unwrap());
        assert!(!b.user_connected("alice").await.unwrap());
        let live = a.live_nodes().await.unwrap();
        assert_eq!(live.len(), 3);
        assert!(live.contains(&b_id));

        // b dies: its tasks stop with the last handle, its heartbeats with them.
        drop(b);
        drop(b_rx);
        let died = Instant::now();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            a.live_nodes().await.unwrap().contains(&b_id),
            "a node is not dead before its timeout"
        );
        loop {
            if !a.live_nodes().await.unwrap().contains(&b_id) {
                break;
            }
            assert!(
                died.elapsed() <= opts.liveness_bound() + SLACK,
                "b still live {:?} after it died (bound {:?})",
                died.elapsed(),
                opts.liveness_bound()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = died.elapsed();
        assert!(
            left >= opts.node_timeout - opts.heartbeat - SLACK,
            "left too early: {left:?}"
        );

        // bob is offline everywhere, alice (still on a) is not.
        let online = c.online_users().await;
        assert_eq!(online.value, vec!["alice"]);
        assert!(!online.partial);

        // Exactly one live node (whichever reaped b) reports bob offline, within the bound.
        let reports = presence_reports(&mut [&mut a_rx, &mut c_rx], died + opts.presence_expiry_bound() + SLACK).await;
        assert_eq!(reports.len(), 1, "{reports:?}");
        let (_, came, went, at) = &reports[0];
        assert!(came.is_empty());
        assert_eq!(went, &vec!["bob".to_owned()], "alice is still on a");
        let after = at.duration_since(died);
        assert!(
            after <= opts.presence_expiry_bound() + SLACK,
            "reported after {after:?}"
        );
        assert!(
            a.user_disconnected("alice").await.unwrap(),
            "a had alice's last connection"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_nodes_users_are_reported_by_heartbeats_alone() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let mut n = nodes(&url, &prefix, 2).await;
        let (b, b_rx) = n.pop().unwrap();
        let (a, mut a_rx) = n.pop().unwrap();
        let opts = a.options().clone();
        assert!(b.user_connected("bob").await.unwrap());
        drop((b, b_rx));
        let died = Instant::now();
        // Nobody asks anything: a's heartbeat reaps b.
        let (_, went) = next_presence(&mut a_rx, opts.presence_expiry_bound() + SLACK)
            .await
            .expect("a's heartbeat reports bob offline");
        assert_eq!(went, vec!["bob"]);
        assert!(died.elapsed() <= opts.presence_expiry_bound() + SLACK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_leaves_at_once_and_its_users_go_offline() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let mut n = nodes(&url, &prefix, 2).await;
        let (b, _b_rx) = n.pop().unwrap();
        let (a, mut a_rx) = n.pop().unwrap();
        assert!(b.user_connected("bob").await.unwrap());
        b.shutdown().await.unwrap();
        assert_eq!(a.live_nodes().await.unwrap(), vec![a.node_id().to_owned()]);
        let (_, went) = next_presence(&mut a_rx, WAIT).await.expect("bob goes offline");
        assert_eq!(went, vec!["bob"]);
        assert!(!b.publish(&emit(1, "b")), "nothing is sent after shutdown");
        assert!(next_op(&mut a_rx, QUIET).await.is_none());
        assert_eq!((b.stats().published, b.stats().lost), (0, 1));
        assert!(b.user_disconnected("bob").await.is_err(), "b is out of the cluster");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_gather_answers_and_mark_missing_nodes() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let mut n = nodes(&url, &prefix, 4).await;
        let (d, mut d_rx) = n.pop().unwrap();
        let (c, c_rx) = n.pop().unwrap();
        let (b, b_rx) = n.pop().unwrap();
        let (a, _a_rx) = n.pop().unwrap();
        let _b = answer_queries(b_rx, json!(["b1", "b2"]));
        // d refuses every query by dropping the reply handle: an error reply, at once.
        let _d = tokio::spawn(async move {
            while let Some(message) = d_rx.recv().await {
                drop(message);
            }
        });
        // c does not read its queue: it never answers.
        let query = Query::RoomMembers {
            ns: "/".into(),
            room: "general".into(),
        };
        let timeout = Duration::from_millis(600);
        let started = Instant::now();
        let answer = a.request(query.clone(), Some(timeout)).await;
        let took = started.elapsed();
        assert_eq!(answer.value, vec![json!(["b1", "b2"])]);
        assert!(answer.partial);
        let mut missing = vec![c.node_id().to_owned(), d.node_id().to_owned()];
        missing.sort();
        assert_eq!(answer.missing_nodes, missing);
        assert!(took >= timeout - Duration::from_millis(50), "waited for c: {took:?}");
        assert!(took <= timeout + SLACK, "but not longer than the timeout: {took:?}");

        // Once c answers and d is gone, the answer is complete, and quick.
        let _c = answer_queries(c_rx, json!(["c1"]));
        d.shutdown().await.unwrap();
        drop(d);
        let started = Instant::now();
        let answer = a.request(query, None).await;
        assert!(!answer.partial, "{answer:?}");
        assert!(answer.missing_nodes.is_empty());
        let mut values: Vec<String> = answer.value.iter().map(|v| v.to_string()).collect();
        values.sort();
        assert_eq!(values, vec![r#"["b1","b2"]"#, r#"["c1"]"#]);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "no waiting when all answer"
        );

        // b asks too: it gets a's silence (a does not read its queue) and c's answer.
        let answer = b.request(Query::ConnectionCount { ns: None }, Some(timeout)).await;
        assert_eq!(answer.value, vec![json!(["c1"])]);
        assert_eq!(answer.missing_nodes, vec![a.node_id().to_owned()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_node_gets_a_complete_empty_answer() {
        let Some(url) = redis_url() else { return };
        let (a, _rx) = node(&url, options(&new_prefix())).await;
        let answer = a.request(Query::ConnectionCount { ns: None }, None).await;
        assert!(!answer.partial);
        assert!(answer.value.is_empty());
        assert_eq!(a.live_nodes().await.unwrap(), vec![a.node_id().to_owned()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wire_format_is_versioned() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let (a, mut a_rx) = node(&url, options(&prefix)).await;
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let channel = format!("{prefix}#all");
        let publish = |payload: &'static str| {
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(&channel).arg(payload);
            cmd
        };
        let v1 = r#"{"v":1,"node":"elsewhere","op":{"emit":{"ns":"/chat","targets":["all",{"connection":5}],"except":[3],"event":"hi","data":[1,{"x":null}]}}}"#;
        let v2 = r#"{"v":2,"node":"elsewhere","op":{"emit":{"ns":"/","targets":["all"],"event":"hi","data":1}}}"#;
        let junk = "not json";
        let unknown = r#"{"v":1,"node":"elsewhere","op":{"teleport":{"to":"mars"}}}"#;
        for payload in [v2, junk, unknown, v1] {
            publish(payload).exec_async(&mut conn).await.unwrap();
        }
        let (from, op) = next_op(&mut a_rx, WAIT).await.expect("the v1 op arrives");
        assert_eq!(from, "elsewhere");
        match op {
            Op::Emit {
                ns,
                targets,
                except,
                event,
                data,
                attachments,
                ..
            } => {
                assert!(attachments.is_empty(), "an op without the field has none");
                assert_eq!(ns, "/chat");
                assert_eq!(targets, vec![Target::All, Target::Connection(5)]);
                assert_eq!(except, vec![3]);
                assert_eq!(event, "hi");
                assert_eq!(data.get(), r#"[1,{"x":null}]"#, "the payload is passed on as it came");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(next_op(&mut a_rx, QUIET).await.is_none());
        let stats = a.stats();
        assert_eq!(stats.malformed, 3);
        assert_eq!(stats.received, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_id_reused_after_a_crash_starts_clean() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let mut opts = options(&prefix);
        opts.node_id = Some("web-1".into());
        let (first, first_rx) = node(&url, opts.clone()).await;
        assert!(first.user_connected("carol").await.unwrap());
        drop((first, first_rx));
        // Restarted within the node timeout, with the same id: carol's old connection must not
        // count any more.
        let (second, mut second_rx) = node(&url, opts).await;
        assert_eq!(second.node_id(), "web-1");
        let (_, went) = next_presence(&mut second_rx, WAIT)
            .await
            .expect("carol's stale presence is cleared");
        assert_eq!(went, vec!["carol"]);
        assert!(second.online_users().await.value.is_empty());
        assert!(second.user_connected("carol").await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn presence_is_published_again_when_redis_loses_its_data() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let mut n = nodes(&url, &prefix, 2).await;
        let (b, mut b_rx) = n.pop().unwrap();
        let (a, mut a_rx) = n.pop().unwrap();
        assert!(a.user_connected("alice").await.unwrap());
        assert!(b.user_connected("bob").await.unwrap());
        assert!(!b.user_connected("alice").await.unwrap());

        // What a Redis restart without persistence does to this cluster's keys.
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut del = redis::cmd("DEL");
        del.arg(format!("{{{prefix}}}:nodes"))
            .arg(format!("{{{prefix}}}:presence"))
            .arg(format!("{{{prefix}}}:presence:{}", a.node_id()))
            .arg(format!("{{{prefix}}}:presence:{}", b.node_id()));
        del.exec_async(&mut conn).await.unwrap();

        // Each node registers again on its next heartbeat and brings its users back; a user
        // on both nodes comes back online once.
        let reports = presence_reports(&mut [&mut a_rx, &mut b_rx], Instant::now() + Duration::from_secs(2)).await;
        let mut back: Vec<String> = Vec::new();
        for (_, online, offline, _) in reports {
            assert!(offline.is_empty());
            back.extend(online);
        }
        back.sort();
        assert_eq!(back, vec!["alice", "bob"]);
        assert_eq!(a.online_users().await.value, vec!["alice", "bob"]);
        assert_eq!(a.live_nodes().await.unwrap().len(), 2);
        assert!(!a.user_disconnected("alice").await.unwrap());
        assert!(b.user_disconnected("alice").await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_fails_plainly_when_redis_is_not_there() {
        let Some(_url) = redis_url() else { return };
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let started = Instant::now();
        let result = RedisAdapter::connect(&format!("redis://{closed}"), options(&new_prefix())).await;
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let mut bad = options("p");
        bad.node_timeout = bad.heartbeat;
        assert!(RedisAdapter::connect("redis://127.0.0.1:1", bad).await.is_err());
    }

    async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_outage_counts_losses_then_the_node_subscribes_again() {
        let Some(url) = redis_url() else { return };
        let prefix = new_prefix();
        let (upstream, _) = through(&url, None).await;
        let proxy = Proxy::start(upstream).await;
        let (_, proxied) = through(&url, Some(proxy.addr)).await;

        let (a, mut a_rx) = node(&url, options(&prefix)).await;
        let (c, mut c_rx) = node(&proxied, options(&prefix)).await;
        assert!(c.publish(&emit(0, "c")));
        next_op(&mut a_rx, WAIT).await.expect("c reaches a before the outage");
        assert!(a.publish(&emit(0, "a")));
        next_op(&mut c_rx, WAIT).await.expect("a reaches c before the outage");
        assert!(c.user_connected("cy").await.unwrap());

        proxy.cut();
        let cut_at = Instant::now();
        until("c notices the outage", WAIT, || {
            let s = c.stats();
            !s.link_up && !s.subscribed
        })
        .await;
        println!("outage noticed after {:?}", cut_at.elapsed());
        let lost_before = c.stats().lost;
        for seq in 1..=20 {
            assert!(!c.publish(&emit(seq, "c")), "publish during the outage is lost at once");
        }
        assert!(c.stats().lost >= lost_before + 20);
        assert!(
            c.user_connected("cy").await.is_err(),
            "presence fails, without panicking"
        );
        assert!(c.live_nodes().await.is_err());
        let degraded = c.online_users().await;
        assert!(degraded.partial);
        assert_eq!(degraded.value, vec!["cy"], "c's own users, marked partial");
        assert!(a.publish(&emit(99, "a")), "a is fine");
        assert!(
            next_op(&mut a_rx, QUIET).await.is_none(),
            "nothing of c's lost ops arrives"
        );
        assert!(
            next_op(&mut c_rx, QUIET).await.is_none(),
            "c hears nothing while cut off"
        );

        let reconnects = c.stats().reconnects;
        proxy.restore();
        let restored_at = Instant::now();
        until("c subscribes again", Duration::from_secs(10), || {
            let s = c.stats();
            s.link_up && s.subscribed && s.reconnects > reconnects
        })
        .await;
        println!("back after {:?}", restored_at.elapsed());
        assert!(a.publish(&emit(100, "a")));
        let (_, op) = next_op(&mut c_rx, WAIT).await.expect("c receives again");
        assert_eq!(emit_data(&op)["seq"], 100);
        assert!(c.publish(&emit(101, "c")));
        let (_, op) = next_op(&mut a_rx, WAIT).await.expect("c reaches a again");
        assert_eq!(emit_data(&op)["seq"], 101);
        assert!(next_op(&mut a_rx, QUIET).await.is_none(), "no lost op shows up late");

        // c's connection made during the outage is published on its next sync: cy has two.
        let deadline = Instant::now() + WAIT;
        while a.online_users().await.value != vec!["cy"] {
            assert!(Instant::now() < deadline, "c's presence is back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!c.user_disconnected("cy").await.unwrap());
        assert!(
            c.user_disconnected("cy").await.unwrap(),
            "the outage-time connection was the last"
        );
        let live: HashSet<String> = a.live_nodes().await.unwrap().into_iter().collect();
        assert!(live.contains(c.node_id()));
    }
}
