//! The connections, to one Redis or to a Redis Cluster, and how they are made again
//! ([`Connector`]). The command connection reconnects by itself; the cluster one also follows
//! the slots as they move (`MOVED`/`ASK` redirections and topology refreshes are the client
//! library's). A connection that stays unusable anyway is replaced by a new one: the command
//! connection by the heartbeat, the subscription by the subscriber.

use std::time::Duration;

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub},
    cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo},
    Client, Cmd, Pipeline, ProtocolVersion, PushInfo, RedisFuture, Value,
};
use tokio::sync::mpsc;

use super::{
    keys::Keys,
    options::{RedisAdapterError, RedisOptions},
};

/// A multiplexed command connection: cheap to clone, every clone sharing it.
#[derive(Clone)]
pub(super) enum Conn {
    /// One Redis (or a primary).
    Single(ConnectionManager),
    /// A Redis Cluster: each command goes to the shard of its keys.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection subscribed to this node's channels.
pub(super) enum Subscription {
    /// One Redis: a pub/sub connection of its own.
    Single(PubSub),
    /// A Redis Cluster: a cluster connection (RESP3) subscribed to shard channels, whose
    /// messages come as pushes.
    Cluster {
        conn: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    },
}

/// Makes the connections: the first ones, and new ones for those that stay unusable.
pub(super) enum Connector {
    Single(Client),
    Cluster {
        /// For commands (RESP2).
        commands: Box<ClusterClient>,
        /// For the subscription (RESP3: messages of sharded pub/sub come as pushes).
        pushes: Box<ClusterClient>,
    },
}

impl Connector {
    /// The connector of one Redis at `url`.
    pub(super) fn single(url: &str) -> Result<Self, RedisAdapterError> {
        Ok(Connector::Single(Client::open(url)?))
    }

    /// The connector of the Redis Cluster reached through `seeds`.
    pub(super) fn cluster(seeds: &[String]) -> Result<Self, RedisAdapterError> {
        let builder = || ClusterClientBuilder::new(seeds.to_vec());
        Ok(Connector::Cluster {
            commands: Box::new(builder().build()?),
            pushes: Box::new(builder().use_protocol(ProtocolVersion::RESP3).build()?),
        })
    }

    /// A command connection, connected within `command_timeout`.
    pub(super) async fn connect(&self, options: &RedisOptions) -> Result<Conn, RedisAdapterError> {
        let limit = options.command_timeout;
        Ok(match self {
            Connector::Single(client) => Conn::Single(
                timed(
                    limit,
                    ConnectionManager::new_with_config(client.clone(), manager_config(options)),
                )
                .await?,
            ),
            Connector::Cluster { commands, .. } => {
                Conn::Cluster(timed(limit, commands.get_async_connection_with_config(cluster_config(limit))).await?)
            }
        })
    }

    /// A new command connection, that connects on its first command.
    pub(super) fn reconnect(&self, options: &RedisOptions) -> Result<Conn, RedisAdapterError> {
        Ok(match self {
            Connector::Single(client) => Conn::Single(ConnectionManager::new_lazy_with_config(
                client.clone(),
                manager_config(options),
            )?),
            Connector::Cluster { commands, .. } => Conn::Cluster(
                commands.get_pending_async_connection_with_config(cluster_config(options.command_timeout)),
            ),
        })
    }

    /// A new connection subscribed to the channels of `keys`, within `limit`.
    pub(super) async fn subscribe(&self, keys: &Keys, limit: Duration) -> Result<Subscription, RedisAdapterError> {
        match self {
            Connector::Single(client) => {
                timed(limit, async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&keys.listen).await?;
                    Ok(Subscription::Single(pubsub))
                })
                .await
            }
            Connector::Cluster { pushes, .. } => {
                let (tx, rx) = mpsc::unbounded_channel();
                let config = cluster_config(limit).set_push_sender(tx);
                let conn = timed(limit, pushes.get_async_connection_with_config(config)).await?;
                // Each `SSUBSCRIBE` is for one slot: one per channel, all at once.
                let each = keys.listen.iter().map(|channel| {
                    let mut conn = conn.clone();
                    async move { timed(limit, conn.ssubscribe(channel.as_str())).await }
                });
                for result in futures_util::future::join_all(each).await {
                    result?;
                }
                Ok(Subscription::Cluster { conn, pushes: rx })
            }
        }
    }
}

/// Pings every primary of a Redis Cluster: all must answer.
pub(super) async fn ping_primaries(conn: &ClusterConnection) -> redis::RedisResult<()> {
    let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::AllSucceeded)));
    conn.clone().route_command(redis::cmd("PING"), all).await.map(drop)
}

/// A connection manager's settings (one Redis): every connection attempt and every answer
/// within `command_timeout`.
fn manager_config(options: &RedisOptions) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.command_timeout))
        .set_response_timeout(Some(options.command_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(options.command_timeout)
}

/// A cluster connection's settings: every connection attempt and every answer within `limit`.
fn cluster_config(limit: Duration) -> ClusterConfig {
    ClusterConfig::new()
        .set_connection_timeout(limit)
        .set_response_timeout(limit)
}

/// `f`, failed when it takes longer than `limit`: every wait for Redis is bounded.
pub(super) async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisAdapterError> {
    match tokio::time::timeout(limit, f).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RedisAdapterError::Timeout(limit)),
    }
}
