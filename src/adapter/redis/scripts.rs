//! The Lua scripts that keep node liveness and presence atomic in Redis.
//!
//! Every script takes the same keys and first arguments, and touches no other key: every key
//! is declared in `KEYS` and carries the hash tag `{<prefix>}`, so that on Redis Cluster they
//! all live in one slot.
//!
//! - `KEYS[1]`: `{<prefix>}:nodes`, a sorted set: node id → time of its last heartbeat (ms,
//!   Redis's clock, so the nodes' clocks do not matter);
//! - `KEYS[2]`: `{<prefix>}:presence`, a hash: user → live connections on every live node;
//! - `KEYS[3]`: `{<prefix>}:presence:<node>`, the calling node's users (user → live
//!   connections on it);
//! - `KEYS[4..]`: the presence hashes of nodes the caller takes for dead (it learnt them from
//!   an earlier answer), which the script may reap;
//! - `ARGV[1]`: `{<prefix>}:presence:`, the start of every node's hash (a node id follows);
//! - `ARGV[2]`: the node timeout in ms; `ARGV[3]`: the calling node's id; `ARGV[4]`: how long
//!   the keys live without any heartbeat (ms).
//!
//! Every script starts by reaping dead nodes (last heartbeat older than the timeout): each is
//! removed from the set, its users' connections are taken off the totals, its hash deleted,
//! and the users left with no connection anywhere are returned as gone offline. The caller
//! reports them to its hub, so each one is reported by exactly one node. A script finds the
//! dead nodes itself, but can only touch the hashes it was given: when a dead node's hash is
//! missing from `KEYS`, it changes nothing and answers `{"reap", <dead node ids>}`, and the
//! caller runs it again with those hashes (the script checks again that they are dead).

use redis::Script;

/// Shared by every script: the clock, and `reap()`.
const PRELUDE: &str = r#"
local nodes_key = KEYS[1]
local global_key = KEYS[2]
local own_key = KEYS[3]
local hash_prefix = ARGV[1]
local timeout = tonumber(ARGV[2])
local node = ARGV[3]
local retention = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - timeout

-- The presence hashes this script may touch, by node id.
local hashes = {}
hashes[node] = own_key
for i = 4, #KEYS do hashes[string.sub(KEYS[i], #hash_prefix + 1)] = KEYS[i] end

local function dead_nodes()
  return redis.call('ZRANGEBYSCORE', nodes_key, '-inf', '(' .. cutoff, 'LIMIT', 0, 64)
end

-- The dead nodes whose hashes were not given (nil when there is none): the script must stop
-- before changing anything, and be run again with them.
local function unreachable()
  local missing = {}
  for _, id in ipairs(dead_nodes()) do
    if not hashes[id] then table.insert(missing, id) end
  end
  if #missing > 0 then return {'reap', missing} end
  return nil
end

-- Applies a node's new count for a user to the cluster total. Returns 1 when the user came
-- online cluster-wide, -1 when they went offline, 0 otherwise.
local function shift(user, delta)
  if delta == 0 then return 0 end
  local total = redis.call('HINCRBY', global_key, user, delta)
  local before = total - delta
  if total <= 0 then
    redis.call('HDEL', global_key, user)
    if before > 0 then return -1 end
    return 0
  end
  if before <= 0 then return 1 end
  return 0
end

local function reap()
  local offline = {}
  for _, id in ipairs(dead_nodes()) do
    local h = hashes[id]
    if h then
      redis.call('ZREM', nodes_key, id)
      local entries = redis.call('HGETALL', h)
      for i = 1, #entries, 2 do
        local n = tonumber(entries[i + 1]) or 0
        if n > 0 and shift(entries[i], -n) == -1 then
          table.insert(offline, entries[i])
        end
      end
      redis.call('DEL', h)
    end
  end
  return offline
end

local function keep()
  redis.call('PEXPIRE', nodes_key, retention)
  redis.call('PEXPIRE', global_key, retention)
  redis.call('PEXPIRE', own_key, retention)
end

local missing = unreachable()
if missing then return missing end
"#;

/// Heartbeat: `{added, offline, live}`. `added` is 1 when the node was not in the set (it had
/// been reaped, or Redis lost its data): its presence must be published again (sync).
const HEARTBEAT: &str = r#"
local added = redis.call('ZADD', nodes_key, now, node)
local offline = reap()
local live = redis.call('ZRANGEBYSCORE', nodes_key, cutoff, '+inf')
keep()
return {added, offline, live}
"#;

/// A user's connection count on this node changed: `ARGV[5]` = user, `ARGV[6]` = the new
/// count. Returns `{change, offline}`: change 1 = came online cluster-wide, -1 = went
/// offline, 0 = neither, -2 = this node is not registered (nothing was changed).
const PRESENCE: &str = r#"
local offline = reap()
if not redis.call('ZSCORE', nodes_key, node) then return {-2, offline} end
local user = ARGV[5]
local new = tonumber(ARGV[6]) or 0
local h = own_key
local old = tonumber(redis.call('HGET', h, user)) or 0
if new > 0 then redis.call('HSET', h, user, new) else redis.call('HDEL', h, user) end
return {shift(user, new - old), offline}
"#;

/// Registers the node and replaces its hash with its actual users: `ARGV[5..]` are pairs of
/// user, count. Returns `{online, offline}`: users who came online or went offline
/// cluster-wide by this (and by reaping).
const SYNC: &str = r#"
redis.call('ZADD', nodes_key, now, node)
local offline = reap()
local online = {}
local h = own_key
local old = {}
local entries = redis.call('HGETALL', h)
for i = 1, #entries, 2 do old[entries[i]] = tonumber(entries[i + 1]) or 0 end
local function apply(user, new)
  local delta = new - (old[user] or 0)
  old[user] = nil
  if delta == 0 then return end
  if new > 0 then redis.call('HSET', h, user, new) else redis.call('HDEL', h, user) end
  local change = shift(user, delta)
  if change == 1 then table.insert(online, user) elseif change == -1 then table.insert(offline, user) end
end
for i = 5, #ARGV - 1, 2 do apply(ARGV[i], tonumber(ARGV[i + 1]) or 0) end
local gone = {}
for user, _ in pairs(old) do table.insert(gone, user) end
for _, user in ipairs(gone) do apply(user, 0) end
keep()
return {online, offline}
"#;

/// `{users online anywhere, offline}`.
const ONLINE: &str = r#"
local offline = reap()
return {redis.call('HKEYS', global_key), offline}
"#;

/// `{live node ids, offline}`.
const LIVE: &str = r#"
local offline = reap()
return {redis.call('ZRANGEBYSCORE', nodes_key, cutoff, '+inf'), offline}
"#;

/// The compiled scripts (each is sent by its SHA1; Redis gets the source again after a
/// restart or `SCRIPT FLUSH`).
pub(crate) struct Scripts {
    pub(crate) heartbeat: Script,
    pub(crate) presence: Script,
    pub(crate) sync: Script,
    pub(crate) online: Script,
    pub(crate) live: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            heartbeat: with_prelude(HEARTBEAT),
            presence: with_prelude(PRESENCE),
            sync: with_prelude(SYNC),
            online: with_prelude(ONLINE),
            live: with_prelude(LIVE),
        }
    }
}
