//! The Redis adapter on a Redis Cluster whose slots move between primaries while it runs:
//! every slot the adapter uses (its broadcast channels, each node's own channel, the liveness
//! and presence keys, the history's keys) is migrated to another primary and back, the way
//! `redis-cli --cluster reshard` does it (`CLUSTER SETSLOT … IMPORTING`/`MIGRATING`, the keys
//! moved with `MIGRATE`, then `CLUSTER SETSLOT … NODE` on every primary). After each move, ops
//! flow both ways and presence is whole.
//!
//! Runs when `REALTIME_TEST_REDIS_CLUSTER` names the cluster's primaries, comma separated
//! (`tests/redis-cluster.sh start` makes a local one); without it, it says that it did not
//! run. It changes which primary owns which slot (and puts every slot back where it was), so
//! it lives in a test binary of its own.

#[cfg(not(feature = "redis"))]
#[test]
fn redis_cluster_tests_need_the_feature() {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "redis cluster slot migration test did not run: build with --features redis"
    );
}

#[cfg(feature = "redis")]
mod redis_common;

#[cfg(feature = "redis")]
mod cluster {
    use std::{
        collections::BTreeMap,
        time::{Duration, Instant},
    };

    use redis::aio::MultiplexedConnection;
    use tokio::sync::mpsc::Receiver;
    use tower_realtime::adapter::{Adapter, Inbound, RedisAdapter};

    use crate::redis_common::{options, reaches, seeds};

    /// A primary: its connection, id and address.
    struct Primary {
        conn: MultiplexedConnection,
        id: String,
        host: String,
        port: u16,
    }

    async fn primaries(seeds: &[String]) -> Vec<Primary> {
        let mut out = Vec::new();
        for url in seeds {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap_or_else(|e| {
                panic!("the cluster node {url} (REALTIME_TEST_REDIS_CLUSTER) could not be reached: {e}")
            });
            let id: String = redis::cmd("CLUSTER").arg("MYID").query_async(&mut conn).await.unwrap();
            let info = client.get_connection_info();
            let (host, port) = match info.addr() {
                redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
                other => panic!("a TCP address was expected for {url}, not {other:?}"),
            };
            out.push(Primary { conn, id, host, port });
        }
        out
    }

    async fn keyslot(conn: &mut MultiplexedConnection, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(conn)
            .await
            .unwrap()
    }

    /// Which primary (by index) owns each of `slots`, once every primary's `CLUSTER SLOTS`
    /// says the same (within 5 s).
    async fn owners(all: &mut [Primary], slots: &[u16]) -> BTreeMap<u16, usize> {
        let ports: Vec<u16> = all.iter().map(|p| p.port).collect();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mut maps = Vec::new();
            for p in all.iter_mut() {
                let map: Vec<redis::Value> = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut p.conn)
                    .await
                    .unwrap();
                let mine: BTreeMap<u16, usize> = (slots.iter())
                    .filter_map(|&slot| Some((slot, ports.iter().position(|&port| owns(&map, slot, port))?)))
                    .collect();
                maps.push(mine);
            }
            if maps.windows(2).all(|w| w[0] == w[1]) {
                return maps.pop().unwrap_or_default();
            }
            if Instant::now() >= deadline {
                panic!("the primaries disagree on who owns the slots: {maps:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `CLUSTER SLOTS` says the primary on `port` owns `slot`.
    fn owns(slots: &[redis::Value], slot: u16, port: u16) -> bool {
        slots.iter().any(|range| {
            let redis::Value::Array(fields) = range else {
                return false;
            };
            let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end)), Some(redis::Value::Array(node))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return false;
            };
            let owner_port = match node.get(1) {
                Some(redis::Value::Int(p)) => *p,
                _ => return false,
            };
            (*start..=*end).contains(&i64::from(slot)) && owner_port == i64::from(port)
        })
    }

    /// Moves `slot` from primary `from` to primary `to`, with its keys, as a reshard does.
    async fn migrate(all: &mut [Primary], slot: u16, from: usize, to: usize) {
        let (from_id, to_id) = (all[from].id.clone(), all[to].id.clone());
        let (to_host, to_port) = (all[to].host.clone(), all[to].port);
        let setslot = |state: &'static str, id: String| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(state).arg(id);
            cmd
        };
        let () = setslot("IMPORTING", from_id.clone())
            .query_async(&mut all[to].conn)
            .await
            .unwrap();
        let () = setslot("MIGRATING", to_id.clone())
            .query_async(&mut all[from].conn)
            .await
            .unwrap();
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut all[from].conn)
                .await
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let () = redis::cmd("MIGRATE")
                .arg(&to_host)
                .arg(to_port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut all[from].conn)
                .await
                .unwrap();
        }
        // The new owner first, then the old one, then the rest (as redis-cli does); then
        // until every primary says so (the cluster's gossip may carry an older view for a
        // moment), so that the next move starts from one view.
        let mut order = vec![to, from];
        order.extend((0..all.len()).filter(|i| *i != to && *i != from));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for &i in &order {
                let () = setslot("NODE", to_id.clone())
                    .query_async(&mut all[i].conn)
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if owners(all, &[slot]).await.get(&slot) == Some(&to) {
                return;
            }
            assert!(Instant::now() < deadline, "slot {slot} did not settle on primary {to}");
        }
    }

    /// Ops flow both ways and presence is whole.
    async fn healthy(
        a: &RedisAdapter,
        a_rx: &mut Receiver<Inbound>,
        b: &RedisAdapter,
        b_rx: &mut Receiver<Inbound>,
        when: &str,
    ) {
        assert!(
            reaches(a, b_rx, &format!("{when}-ab")).await,
            "{when}: an op from a never reached b ({:?}, {:?})",
            a.stats(),
            b.stats()
        );
        assert!(
            reaches(b, a_rx, &format!("{when}-ba")).await,
            "{when}: an op from b never reached a ({:?}, {:?})",
            a.stats(),
            b.stats()
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let live = a.live_nodes().await.unwrap_or_default();
            let online = b.online_users().await;
            if live.len() == 2 && online.value == ["ann"] && !online.partial {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{when}: presence not whole: {live:?} {online:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn while_every_slot_the_adapter_uses_moves_to_another_primary_and_back_ops_and_presence_hold() {
        let Some(seeds) = seeds("redis cluster slot migration test") else {
            return;
        };
        let prefix = format!("trt-migrate-{}", std::process::id());
        let connect = || async {
            RedisAdapter::connect_cluster(&seeds, options(&prefix))
                .await
                .unwrap_or_else(|e| panic!("the Redis Cluster at {seeds:?} could not be reached: {e}"))
        };
        let (a, mut a_rx) = connect().await;
        let (b, mut b_rx) = connect().await;
        assert!(a.user_connected("ann").await.unwrap());
        healthy(&a, &mut a_rx, &b, &mut b_rx, "before").await;

        let mut all = primaries(&seeds).await;
        assert!(
            all.len() >= 2,
            "a cluster of at least two primaries is needed: {seeds:?}"
        );
        // Two groups, moved one after the other: a subscription's check may be a message on
        // the node's own channel, which must not hide a broadcast channel that moved alone.
        let mut shared: Vec<String> = (0..16).map(|i| format!("{{{prefix}:b:{i}}}")).collect();
        shared.push(format!("{{{prefix}}}"));
        shared.push(format!("{{{prefix}:h}}"));
        let own: Vec<String> = [Adapter::node_id(&a), Adapter::node_id(&b)]
            .iter()
            .map(|node| format!("{{{prefix}:n:{node}}}"))
            .collect();
        let mut groups: Vec<Vec<u16>> = Vec::new();
        let mut taken = Vec::new();
        for tags in [&shared, &own] {
            let mut slots = Vec::new();
            for tag in tags {
                let slot = keyslot(&mut all[0].conn, tag).await;
                if !taken.contains(&slot) {
                    taken.push(slot);
                    slots.push(slot);
                }
            }
            groups.push(slots);
        }
        let before = owners(&mut all, &taken).await;
        assert_eq!(before.len(), taken.len(), "every slot has an owner: {before:?}");

        // Each slot to the next primary, a group at a time, then every one back; ops and
        // presence checked after each step.
        let n = all.len();
        for (step, slots) in ["broadcast channels and keys moved", "nodes' own channels moved"]
            .iter()
            .zip(&groups)
        {
            for slot in slots {
                let from = before[slot];
                migrate(&mut all, *slot, from, (from + 1) % n).await;
            }
            let now = owners(&mut all, slots).await;
            assert!(
                slots.iter().all(|slot| now[slot] == (before[slot] + 1) % n),
                "{step}: {before:?} → {now:?}"
            );
            healthy(&a, &mut a_rx, &b, &mut b_rx, step).await;
        }
        for (slot, &from) in &before {
            migrate(&mut all, *slot, (from + 1) % n, from).await;
        }
        assert_eq!(owners(&mut all, &taken).await, before, "every slot back where it was");
        healthy(&a, &mut a_rx, &b, &mut b_rx, "moved back").await;

        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }
}
