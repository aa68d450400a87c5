//! The Redis adapter on a Redis Cluster whose shards restart: each node subscribes again by
//! itself, registers again (the shards keep no data), and ops flow again.
//!
//! Runs when `REALTIME_TEST_REDIS_CLUSTER` names the cluster's primaries, comma separated
//! (`tests/redis-cluster.sh start` makes a local one); without it, it says that it did not
//! run. It restarts every primary in turn (`SHUTDOWN NOSAVE`, then `redis-server` again with
//! the same port, directory and cluster file, which needs `redis-server` in `PATH` and the
//! cluster on this machine), so it lives in a test binary of its own.

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
mod redis_common;

#[cfg(feature = "redis")]
mod cluster {
    use std::time::{Duration, Instant};

    use tower_realtime::adapter::RedisAdapter;

    use crate::redis_common::{options, reaches, seeds};

    async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(url).unwrap();
        client.get_multiplexed_async_connection().await.unwrap_or_else(|e| {
            panic!("the cluster node {url} (REALTIME_TEST_REDIS_CLUSTER) could not be reached: {e}")
        })
    }

    async fn config(c: &mut redis::aio::MultiplexedConnection, name: &str) -> String {
        let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(c).await.unwrap();
        pair.get(1)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in CONFIG GET"))
    }

    /// Stops a primary and starts it again as it was (no data), then waits until the cluster
    /// is whole again.
    async fn restart(url: &str) {
        let mut c = conn(url).await;
        let port = config(&mut c, "port").await;
        let dir = config(&mut c, "dir").await;
        let file = config(&mut c, "cluster-config-file").await;
        let timeout = config(&mut c, "cluster-node-timeout").await;
        let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").exec_async(&mut c).await;
        drop(c);
        let file = if file.starts_with('/') {
            file
        } else {
            format!("{dir}/{file}")
        };
        let status = std::process::Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &file, "--cluster-node-timeout", &timeout])
            .args(["--dir", &dir, "--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .args(["--logfile", &format!("{dir}/redis.log")])
            .status()
            .expect("redis-server could not be started (is it in PATH?)");
        assert!(status.success(), "redis-server on port {port} did not start");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                Instant::now() < deadline,
                "the cluster is not whole again after restarting {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Ok(client) = redis::Client::open(url) else { continue };
            let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                continue;
            };
            let info: String = match redis::cmd("CLUSTER").arg("INFO").query_async(&mut c).await {
                Ok(info) => info,
                Err(_) => continue,
            };
            if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_every_shard_restarts_the_nodes_subscribe_again_and_ops_flow() {
        let Some(seeds) = seeds("redis cluster restart test") else {
            return;
        };
        let prefix = format!("trt-restart-{}", std::process::id());
        let connect = || async {
            RedisAdapter::connect_cluster(&seeds, options(&prefix))
                .await
                .unwrap_or_else(|e| panic!("the Redis Cluster at {seeds:?} could not be reached: {e}"))
        };
        let (a, mut a_rx) = connect().await;
        let (b, mut b_rx) = connect().await;
        assert!(a.user_connected("ann").await.unwrap());
        assert!(reaches(&a, &mut b_rx, "before").await);

        for url in &seeds {
            restart(url).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(a.stats().subscribed && b.stats().subscribed && a.stats().reconnects > 0 && b.stats().reconnects > 0) {
            assert!(
                Instant::now() < deadline,
                "not subscribed again: {:?} {:?}",
                a.stats(),
                b.stats()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(reaches(&a, &mut b_rx, "after-ab").await, "a → b after the restarts");
        assert!(reaches(&b, &mut a_rx, "after-ba").await, "b → a after the restarts");
        // The shards lost their data: both nodes registered again, with their users.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let live = a.live_nodes().await.unwrap_or_default();
            let online = a.online_users().await;
            if live.len() == 2 && online.value == ["ann"] && !online.partial {
                break;
            }
            assert!(Instant::now() < deadline, "not registered again: {live:?} {online:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }
}
