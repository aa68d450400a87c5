//! The Redis adapter on a Redis Cluster: ops between nodes travel on sharded pub/sub, and
//! spread over the shards.
//!
//! The test runs when `REALTIME_TEST_REDIS_CLUSTER` names the cluster's primaries, comma
//! separated (`tests/redis-cluster.sh start` makes a local one and prints the variable); without
//! it, it says that it did not run. With it, a cluster that cannot be reached is a failure.

#[cfg(not(feature = "redis"))]
#[test]
fn redis_cluster_tests_need_the_feature() {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "redis cluster test did not run: build with --features redis"
    );
}

#[cfg(feature = "redis")]
mod cluster {
    use std::time::Duration;

    use tokio::sync::mpsc::Receiver;
    use tower_realtime::adapter::{Inbound, Op, RedisAdapter, RedisOptions};

    const WAIT: Duration = Duration::from_secs(5);

    fn seeds() -> Option<Vec<String>> {
        match std::env::var("REALTIME_TEST_REDIS_CLUSTER") {
            Ok(urls) if !urls.is_empty() => Some(urls.split(',').map(str::to_owned).collect()),
            _ => {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "redis cluster test did not run: run tests/redis-cluster.sh start, and set \
                     REALTIME_TEST_REDIS_CLUSTER=redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103"
                );
                None
            }
        }
    }

    fn options(prefix: &str, node: &str) -> RedisOptions {
        let mut o = RedisOptions::default();
        o.prefix = prefix.to_owned();
        o.node_id = Some(node.to_owned());
        o.heartbeat = Duration::from_millis(200);
        o.node_timeout = Duration::from_millis(800);
        o.command_timeout = Duration::from_millis(500);
        o
    }

    /// A command to one node of the cluster (not routed).
    async fn ask(url: &str, cmd: &redis::Cmd) -> redis::Value {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap_or_else(|e| {
            panic!("the cluster node {url} (REALTIME_TEST_REDIS_CLUSTER) could not be reached: {e}")
        });
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// How many `SPUBLISH` a node has run.
    async fn spublished(url: &str) -> u64 {
        let mut info = redis::cmd("INFO");
        info.arg("commandstats");
        let text: String = redis::from_redis_value(ask(url, &info).await).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("cmdstat_spublish:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    /// The shard channels of a node that match `pattern` and have a subscriber.
    async fn shard_channels(url: &str, pattern: &str) -> Vec<String> {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("SHARDCHANNELS").arg(pattern);
        redis::from_redis_value(ask(url, &cmd).await).unwrap()
    }

    async fn next_op(rx: &mut Receiver<Inbound>) -> Option<(String, Op)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Inbound::Op { from, op })) => return Some((from, op)),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ops_between_nodes_go_out_on_more_than_one_shard() {
        let Some(seeds) = seeds() else { return };
        // Fixed names: the channels each node uses, and their shards, are the same every run.
        let prefix = "trt-spread";
        let mut nodes = Vec::new();
        for i in 0..8 {
            let node = format!("spread-{i}");
            match RedisAdapter::connect_cluster(&seeds, options(prefix, &node)).await {
                Ok(pair) => nodes.push(pair),
                Err(e) => {
                    panic!("the Redis Cluster at {seeds:?} (REALTIME_TEST_REDIS_CLUSTER) could not be reached: {e}")
                }
            }
        }
        // The nodes' channels have subscribers on more than one shard.
        let mut shards_listening = 0;
        for url in &seeds {
            if !shard_channels(url, &format!("{{{prefix}:*")).await.is_empty() {
                shards_listening += 1;
            }
        }
        assert!(shards_listening >= 2, "channels on {shards_listening} shard(s)");

        let before: Vec<u64> = futures_util::future::join_all(seeds.iter().map(|u| spublished(u))).await;
        for (adapter, _) in &nodes {
            for n in 0..3 {
                let op = Op::DisconnectUser {
                    user: format!("{}:{n}", adapter.node_id()),
                };
                assert!(adapter.publish(&op));
            }
        }
        // Every node gets every other node's ops, each node's in order.
        for (adapter, rx) in &mut nodes {
            let mut seen = std::collections::HashMap::<String, u64>::new();
            for _ in 0..7 * 3 {
                let (from, op) = next_op(rx).await.expect("every op arrives");
                assert_ne!(from, adapter.node_id(), "never echoed");
                let Op::DisconnectUser { user } = op else {
                    panic!("another op")
                };
                let next = seen.entry(from.clone()).or_default();
                assert_eq!(user, format!("{from}:{next}"), "in the order published");
                *next += 1;
            }
            assert_eq!(seen.len(), 7);
        }
        let after: Vec<u64> = futures_util::future::join_all(seeds.iter().map(|u| spublished(u))).await;
        let shards_publishing = before.iter().zip(&after).filter(|(b, a)| a > b).count();
        assert!(
            shards_publishing >= 2,
            "ops went out on {shards_publishing} shard(s): {before:?} → {after:?}"
        );
        for (adapter, _) in &nodes {
            adapter.shutdown().await.unwrap();
        }
    }
}
