//! The Redis engine's history: the keys and Lua scripts that keep the cluster's history in
//! Redis, their invocations, and the parsing of their replies. Offsets and the epoch come
//! from Redis, so they hold for the whole cluster, and so do the streams and the sessions of
//! dropped connections.
//!
//! With the prefix `P`, every key carries the hash tag `{P:h}` (one slot of a Redis Cluster):
//!
//! - `{P:h}:meta`, a hash: `epoch` (the lifetime of the history) and `seq` (the last offset
//!   given out). Made again, with a new epoch, when it is missing (Redis lost its data, or the
//!   cluster was idle long enough for it to expire).
//! - `{P:h}:s:<stream>`, a stream per room, user or broadcast stream: the event with offset
//!   `N` has the id `0-N`, and the fields `e` (event), `d` (payload, JSON), `x` (connection
//!   ids left out, comma separated), `y` (rooms and users left out) and `t` (when, in ms by
//!   Redis's clock).
//! - `{P:h}:w:<stream>`, a string: `<epoch>:<the highest offset evicted from the stream>`. A
//!   stream whose mark is of another epoch holds nothing of the current one.
//! - `{P:h}:session:<id>`, a string: a dropped connection's session (JSON), kept for
//!   `session_ttl` and taken once, by its owner only.
//! - `{P:h}:revoked:<user>`, a hash: room (empty: every session) → the offset as of which the
//!   app took the user out of it (`Hub::leave_user`, `Hub::disconnect_user`), for
//!   `session_ttl`.
//!
//! Every script declares every key it touches in `KEYS`.
//!
//! The engine-neutral types (what the hub asks, what a read found) are in
//! `adapter/history.rs`.

use std::time::Duration;

use redis::{Cmd, Script, Value};

use crate::adapter::{
    history::{HistoryParams, LeftOut, Missed, StoredEvent},
    wire::{Op, Signer},
};

/// The shortest life of `{P:h}:meta` after its last use.
const META_TTL_MIN: Duration = Duration::from_secs(24 * 3600);

/// Reads the epoch, making a new one (and starting the offsets over) when there is none.
const PRELUDE: &str = r#"
local meta = KEYS[1]
local function current_epoch(candidate, ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    redis.call('DEL', meta)
    redis.call('HSET', meta, 'epoch', candidate)
    epoch = candidate
  end
  redis.call('PEXPIRE', meta, ttl)
  return epoch
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The epoch of a stream's mark and the highest offset evicted from it (nil, '0' when there
-- is none).
local function mark_of(key)
  local raw = redis.call('GET', key)
  if not raw then return nil, '0' end
  local of, mark = string.match(raw, '^(.*):(%d+)$')
  return of, mark or '0'
end
local function field(fields, name)
  for i = 1, #fields - 1, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
"#;

/// `ARGV[1]`: a new epoch, used when there is none; `ARGV[2]`: the life of `{P:h}:meta` (ms).
/// Returns `{epoch, last offset}`.
const EPOCH: &str = r#"
local epoch = current_epoch(ARGV[1], tonumber(ARGV[2]))
return {epoch, tonumber(redis.call('HGET', meta, 'seq') or '0')}
"#;

/// Keeps one event and publishes it with its offset, atomically.
///
/// `KEYS`: 1 `{P:h}:meta`, then for each stream its events and its mark, and last the append's
/// own key `{P:h}:once:<id>` (a node's id and a number of its own): a copy of the same command
/// that the client sends again (after its connection broke before the answer came, though
/// Redis had run it) finds that key and does nothing, so an event is never kept or published
/// twice. `ARGV`: 1 a new epoch, 2 the
/// life of `{P:h}:meta` (ms), 3 `max_events`, 4 `max_age` (ms), 5 the life of a stream (ms), 6 the
/// publish command (`PUBLISH`, or `SPUBLISH` on Redis Cluster), 7 the channel, 8 and 9 the
/// message before and after its position, 10 the event, 11 the payload, 12 the ids left out,
/// 13 the rooms and users left out. Returns the number of events evicted.
///
/// A mark is `<epoch>:<highest offset evicted>`: a stream whose mark is of another epoch (or
/// missing) holds nothing of this one, and is emptied before the event is added.
const APPEND: &str = r#"
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', 60000) then return 0 end
local epoch = current_epoch(ARGV[1], tonumber(ARGV[2]))
local seq = redis.call('HINCRBY', meta, 'seq', 1)
local offset = string.format('%d', seq)
local id = '0-' .. offset
local now = now_ms()
local max_events = tonumber(ARGV[3])
local cutoff = now - tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local evicted = 0
for i = 2, #KEYS - 2, 2 do
  local s = KEYS[i]
  local w = KEYS[i + 1]
  local of, mark = mark_of(w)
  if of ~= epoch then
    redis.call('DEL', s)
    mark = '0'
  end
  if ARGV[13] == '' then
    redis.call('XADD', s, id, 'e', ARGV[10], 'd', ARGV[11], 'x', ARGV[12], 't', now)
  else
    redis.call('XADD', s, id, 'e', ARGV[10], 'd', ARGV[11], 'x', ARGV[12], 'y', ARGV[13], 't', now)
  end
  local over = redis.call('XLEN', s) - max_events
  if over > 0 then
    local gone = redis.call('XRANGE', s, '-', '+', 'COUNT', over)
    mark = string.sub(gone[#gone][1], 3)
    redis.call('XTRIM', s, 'MAXLEN', max_events)
    evicted = evicted + #gone
  end
  -- The oldest events past max_age go too, a few per append; a reader counts any it finds
  -- as evicted, and the key expires when the stream is quiet.
  local oldest = redis.call('XRANGE', s, '-', '+', 'COUNT', 8)
  for _, e in ipairs(oldest) do
    if (tonumber(field(e[2], 't')) or now) >= cutoff then break end
    redis.call('XDEL', s, e[1])
    mark = string.sub(e[1], 3)
    evicted = evicted + 1
  end
  redis.call('SET', w, epoch .. ':' .. mark, 'PX', ttl)
  redis.call('PEXPIRE', s, ttl)
end
redis.call(ARGV[6], ARGV[7], ARGV[8] .. '"epoch":"' .. epoch .. '","offset":' .. offset .. ARGV[9])
return evicted
"#;

/// Reads what a session missed, with the last offset given out, atomically.
///
/// `KEYS`: 1 `{P:h}:meta`, then for each stream its events and its mark. `ARGV`: 1 the session's
/// epoch, 2 `max_age` (ms), 3 `max_replay`, then for each stream the offset after which its
/// events are wanted. Returns `{epoch, last offset, status}`, and with the status `ok` the
/// events of each stream (`XRANGE` replies); other statuses: `epoch` (changed), `offset` (a
/// wanted offset past the last one given out), `evicted`, `too_many`.
const READ: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
local seq = tonumber(redis.call('HGET', meta, 'seq') or '0')
if epoch ~= ARGV[1] then return {epoch or '', seq, 'epoch'} end
local cutoff = now_ms() - tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local out = {epoch, seq, 'ok'}
local total = 0
for i = 2, #KEYS - 1, 2 do
  local from = ARGV[3 + i / 2]
  if tonumber(from) > seq then return {epoch, seq, 'offset'} end
  local of, mark = mark_of(KEYS[i + 1])
  local entries = {}
  -- A stream whose mark is of another epoch holds nothing of this one.
  if of == epoch then
    if tonumber(mark) > tonumber(from) then return {epoch, seq, 'evicted'} end
    entries = redis.call('XRANGE', KEYS[i], '(0-' .. from, '+', 'COUNT', limit + 1)
  end
  for _, e in ipairs(entries) do
    if (tonumber(field(e[2], 't')) or 0) < cutoff then return {epoch, seq, 'evicted'} end
  end
  total = total + #entries
  -- One stream over the limit is too many; several may repeat an event, so their sum may
  -- reach twice the limit before the caller counts each once.
  if #entries > limit or total > 2 * limit then return {epoch, seq, 'too_many'} end
  table.insert(out, entries)
end
return out
"#;

/// Takes a session (`KEYS[1]`) for its owner: `ARGV[1]` is `1` for a user (`ARGV[2]`), `0`
/// for an anonymous connection; `ARGV[3]` the namespace. Returns `{session, revocations}`,
/// the session deleted, with the user's revocations (`KEYS[2]`, a user's only: `HGETALL`);
/// or nothing when there is none, or it is another user's or namespace's (then it stays).
const TAKE: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, session = pcall(cjson.decode, raw)
if not ok or type(session) ~= 'table' then return false end
local owner = session['user']
if owner == cjson.null then owner = nil end
local user = nil
if ARGV[1] == '1' then user = ARGV[2] end
if owner ~= user or session['ns'] ~= ARGV[3] then return false end
redis.call('DEL', KEYS[1])
local revoked = {}
if #KEYS >= 2 then revoked = redis.call('HGETALL', KEYS[2]) end
return {raw, revoked}
"#;

/// Takes a user (`KEYS[2]`, their revocations) out of a room (`ARGV[1]`; empty: out of every
/// session kept so far) as of the last offset given out (`KEYS[1]`, `{P:h}:meta`): a session kept
/// for them with the room joined at or before it does not get it back (with an empty room: a
/// session begun at or before it is not resumed). `ARGV[2]`: how long it is kept (ms, the
/// sessions' time to live).
pub(crate) const REVOKE: &str = r#"
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if seq > old then redis.call('HSET', KEYS[2], ARGV[1], seq) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return seq
"#;

/// The history scripts (sent by their SHA1; the publisher loads `append` in each pipeline
/// that runs it, so a Redis that restarted or flushed its scripts does not fail it).
pub(crate) struct HistoryScripts {
    pub(crate) epoch: Script,
    pub(crate) append: Script,
    pub(crate) read: Script,
    pub(crate) take: Script,
    /// The source of `append`, for `SCRIPT LOAD`.
    pub(crate) append_source: String,
}

impl HistoryScripts {
    pub(crate) fn new() -> Self {
        let source = |body: &str| format!("{PRELUDE}{body}");
        let append_source = source(APPEND);
        Self {
            epoch: Script::new(&source(EPOCH)),
            append: Script::new(&append_source),
            read: Script::new(&source(READ)),
            take: Script::new(TAKE),
            append_source,
        }
    }
}

/// How long a stream outlives its last event, in ms.
fn stream_ttl_ms(params: &HistoryParams) -> u64 {
    ms(params.stream_ttl()).max(1)
}

/// How long `{P:h}:meta` outlives its last use, in ms.
fn meta_ttl_ms(params: &HistoryParams) -> u64 {
    ms(META_TTL_MIN).max(stream_ttl_ms(params))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Key names: every one carries the hash tag `{P:h}`, so that the whole history is in one
/// slot of a Redis Cluster (a script touches the offset counter and its streams at once).
pub(crate) struct HistoryKeys {
    meta: String,
    /// `{P:h}:`, followed by what the key holds.
    base: String,
}

impl HistoryKeys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            meta: format!("{{{prefix}:h}}:meta"),
            base: format!("{{{prefix}:h}}:"),
        }
    }

    /// `{P:h}:session:<id>`, a dropped connection's session.
    pub(crate) fn session(&self, id: &str) -> String {
        format!("{}session:{id}", self.base)
    }

    /// `{P:h}:revoked:<user>`, a hash: room (empty: every session) → the offset as of which
    /// the user was taken out of it.
    pub(crate) fn revoked(&self, user: &str) -> String {
        format!("{}revoked:{user}", self.base)
    }

    /// `{P:h}:s:<stream>`, the events kept in a stream.
    fn stream(&self, stream: &str) -> String {
        format!("{}s:{stream}", self.base)
    }

    /// `{P:h}:w:<stream>`, the stream's mark: `<epoch>:<highest offset evicted>`.
    fn mark(&self, stream: &str) -> String {
        format!("{}w:{stream}", self.base)
    }

    /// `{P:h}:once:<id>`: set by the append `id`, so that a copy of it sent again does nothing.
    fn once(&self, id: &str) -> String {
        format!("{}once:{id}", self.base)
    }

    /// `{P:h}:meta`: on a Redis Cluster, its slot is that of every history key.
    pub(crate) fn meta(&self) -> &str {
        &self.meta
    }
}

/// Where the epoch and the offset go in an encoded history emit.
const POSITION: &str = r#""epoch":"","offset":0"#;

/// The append script's invocation for `op` (a [`HistoryEmit`](Op::HistoryEmit), encoded with
/// an empty epoch and offset 0 as `encoded`), kept in `streams` and published on `channel`
/// (with `SPUBLISH` when `sharded`, on Redis Cluster; the channel is then in the history's
/// slot); with a `signer`, in a signed frame whose position is where the script inserts the
/// epoch and offset.
#[allow(clippy::too_many_arguments)]
pub(crate) fn append_cmd(
    scripts: &HistoryScripts,
    keys: &HistoryKeys,
    params: &HistoryParams,
    channel: &str,
    sharded: bool,
    op: &Op,
    encoded: &[u8],
    streams: &[String],
    signer: Option<&Signer>,
    id: &str,
) -> Option<Cmd> {
    let Op::HistoryEmit {
        except,
        except_rooms,
        except_users,
        event,
        data,
        ..
    } = op
    else {
        return None;
    };
    let at = encoded.windows(POSITION.len()).position(|w| w == POSITION.as_bytes())?;
    let (head, tail) = (encoded.get(..at)?, encoded.get(at.checked_add(POSITION.len())?..)?);
    let sealed;
    let head = match signer {
        Some(signer) => {
            sealed = signer.seal_split(head, tail)?;
            &sealed[..]
        }
        None => head,
    };
    let except: Vec<String> = except.iter().map(u64::to_string).collect();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(scripts.append.get_hash())
        .arg(2 + 2 * streams.len())
        .arg(&keys.meta);
    for stream in streams {
        cmd.arg(keys.stream(stream)).arg(keys.mark(stream));
    }
    cmd.arg(keys.once(id));
    cmd.arg(&*params.new_epoch)
        .arg(meta_ttl_ms(params))
        .arg(params.max_events.max(1))
        .arg(ms(params.max_age))
        .arg(stream_ttl_ms(params))
        .arg(if sharded { "SPUBLISH" } else { "PUBLISH" })
        .arg(channel)
        .arg(head)
        .arg(tail)
        .arg(event)
        .arg(data.get())
        .arg(except.join(","))
        .arg(LeftOut::encode(except_rooms, except_users));
    Some(cmd)
}

/// The epoch invocation.
pub(crate) fn epoch_invocation<'a>(
    scripts: &'a HistoryScripts,
    keys: &HistoryKeys,
    params: &HistoryParams,
) -> redis::ScriptInvocation<'a> {
    let mut invocation = scripts.epoch.prepare_invoke();
    invocation
        .key(&keys.meta)
        .arg(&*params.new_epoch)
        .arg(meta_ttl_ms(params));
    invocation
}

/// The read invocation: the events of `streams` (each with the offset after which they are
/// wanted), for a session of `epoch`.
pub(crate) fn read_invocation<'a>(
    scripts: &'a HistoryScripts,
    keys: &HistoryKeys,
    params: &HistoryParams,
    epoch: &str,
    streams: &[(String, u64)],
) -> redis::ScriptInvocation<'a> {
    let mut invocation = scripts.read.prepare_invoke();
    invocation
        .key(&keys.meta)
        .arg(epoch)
        .arg(ms(params.max_age))
        .arg(params.max_replay);
    for (stream, from) in streams {
        invocation.key(keys.stream(stream)).key(keys.mark(stream)).arg(*from);
    }
    invocation
}

/// The take invocation: session `id`, for `user` (none: anonymous) in namespace `ns`.
pub(crate) fn take_invocation<'a>(
    scripts: &'a HistoryScripts,
    keys: &HistoryKeys,
    id: &str,
    user: Option<&str>,
    ns: &str,
) -> redis::ScriptInvocation<'a> {
    let mut invocation = scripts.take.prepare_invoke();
    invocation.key(keys.session(id));
    if let Some(user) = user {
        invocation.key(keys.revoked(user));
    }
    invocation
        .arg(if user.is_some() { "1" } else { "0" })
        .arg(user.unwrap_or(""))
        .arg(ns);
    invocation
}

/// The revoke script's invocation, as a command for the publisher: `user` out of `room`
/// (empty: out of every session kept so far), remembered for `ttl`.
pub(crate) fn revoke_cmd(keys: &HistoryKeys, user: &str, room: &str, ttl: Duration) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(REVOKE)
        .arg(2)
        .arg(&keys.meta)
        .arg(keys.revoked(user))
        .arg(room)
        .arg(ms(ttl).max(1));
    cmd
}

/// Why a reply could not be read.
#[derive(Debug)]
pub(crate) struct Malformed;

fn text(v: &Value) -> Result<String, Malformed> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| Malformed),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        _ => Err(Malformed),
    }
}

fn number(v: &Value) -> Result<u64, Malformed> {
    match v {
        Value::Int(n) => u64::try_from(*n).map_err(|_| Malformed),
        other => text(other)?.parse().map_err(|_| Malformed),
    }
}

/// Reads the epoch script's reply: `(epoch, last offset)`.
pub(crate) fn parse_epoch(v: &Value) -> Result<(String, u64), Malformed> {
    match v {
        Value::Array(items) if items.len() == 2 => Ok((text(&items[0])?, number(&items[1])?)),
        _ => Err(Malformed),
    }
}

/// Reads the read script's reply.
pub(crate) fn parse_missed(v: &Value) -> Result<Missed, Malformed> {
    let Value::Array(items) = v else { return Err(Malformed) };
    let [epoch, upto, status, streams @ ..] = &items[..] else {
        return Err(Malformed);
    };
    let epoch = text(epoch)?;
    let upto = number(upto)?;
    match text(status)?.as_str() {
        "epoch" => return Ok(Missed::EpochChanged { epoch }),
        "offset" => return Ok(Missed::UnknownOffset),
        "evicted" => return Ok(Missed::Evicted),
        "too_many" => return Ok(Missed::TooMany),
        "ok" => {}
        _ => return Err(Malformed),
    }
    let mut events = Vec::new();
    for stream in streams {
        let Value::Array(entries) = stream else {
            return Err(Malformed);
        };
        for entry in entries {
            events.push(parse_entry(entry)?);
        }
    }
    Ok(Missed::Events { epoch, upto, events })
}

fn parse_entry(v: &Value) -> Result<StoredEvent, Malformed> {
    let Value::Array(parts) = v else { return Err(Malformed) };
    let [id, Value::Array(fields)] = &parts[..] else {
        return Err(Malformed);
    };
    let id = text(id)?;
    let offset = id.strip_prefix("0-").ok_or(Malformed)?.parse().map_err(|_| Malformed)?;
    let (mut event, mut data, mut except, mut left_out) = (None, None, Vec::new(), LeftOut::default());
    for pair in fields.chunks(2) {
        let [name, value] = pair else { return Err(Malformed) };
        match text(name)?.as_str() {
            "e" => event = Some(text(value)?),
            "d" => data = Some(text(value)?),
            "x" => {
                except = (text(value)?.split(',').filter(|s| !s.is_empty()))
                    .map(|s| s.parse().map_err(|_| Malformed))
                    .collect::<Result<_, _>>()?;
            }
            "y" => left_out = serde_json::from_str(&text(value)?).map_err(|_| Malformed)?,
            _ => {}
        }
    }
    Ok(StoredEvent {
        offset,
        event: event.ok_or(Malformed)?,
        data: data.ok_or(Malformed)?,
        except,
        left_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_read_reply_is_parsed() {
        let entry = |id: &str, data: &str, except: &str| {
            let mut fields = vec![bulk("e"), bulk("said"), bulk("d"), bulk(data), bulk("x"), bulk(except)];
            if !except.is_empty() {
                fields.extend([bulk("y"), bulk(r#"{"users":["42"]}"#)]);
            }
            fields.extend([bulk("t"), bulk("1700000000000")]);
            Value::Array(vec![bulk(id), Value::Array(fields)])
        };
        let reply = Value::Array(vec![
            bulk("abcd"),
            Value::Int(9),
            bulk("ok"),
            Value::Array(vec![entry("0-4", "1", ""), entry("0-7", "\"x\"", "12,13")]),
            Value::Array(vec![]),
        ]);
        let Missed::Events { epoch, upto, events } = parse_missed(&reply).unwrap() else {
            panic!("events expected");
        };
        assert_eq!((epoch.as_str(), upto), ("abcd", 9));
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].offset, 7);
        assert_eq!(events[1].data, "\"x\"");
        assert_eq!(events[1].except, vec![12, 13]);
        assert_eq!(events[0].left_out, LeftOut::default());
        assert_eq!(events[1].left_out.users, ["42"]);
        let changed = Value::Array(vec![bulk("new"), Value::Int(1), bulk("epoch")]);
        assert_eq!(
            parse_missed(&changed).unwrap(),
            Missed::EpochChanged { epoch: "new".into() }
        );
        assert!(parse_missed(&Value::Int(1)).is_err());
    }

    /// A history emit of event `e` to room `r`, leaving out `except` and `except_rooms`.
    fn room_emit(except: Vec<u64>, except_rooms: Vec<String>) -> Op {
        Op::HistoryEmit {
            epoch: String::new(),
            offset: 0,
            ns: "/".into(),
            targets: vec![crate::adapter::Target::Room("r".into())],
            except,
            except_rooms,
            except_users: Vec::new(),
            event: "e".into(),
            data: serde_json::value::to_raw_value(&1).unwrap(),
        }
    }

    fn params(max_events: usize, max_age: Duration) -> HistoryParams {
        HistoryParams {
            new_epoch: "e1".into(),
            max_events,
            max_age,
            session_ttl: max_age,
            max_replay: 10,
        }
    }

    #[test]
    fn the_position_is_found_in_an_encoded_history_emit() {
        let op = room_emit(vec![5], vec!["c".into()]);
        let encoded = crate::adapter::wire::encode("n", &op).unwrap();
        let params = params(3, Duration::from_secs(1));
        let cmd = append_cmd(
            &HistoryScripts::new(),
            &HistoryKeys::new("p"),
            &params,
            "p#all",
            false,
            &op,
            &encoded,
            &["r1:/:r".into()],
            None,
            "n:1",
        )
        .unwrap();
        let args: Vec<String> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect();
        // Every key the script touches is declared, all in the history's slot.
        assert_eq!(
            args[2..7],
            ["4", "{p:h}:meta", "{p:h}:s:r1:/:r", "{p:h}:w:r1:/:r", "{p:h}:once:n:1"]
        );
        assert_eq!(args[12..14], ["PUBLISH", "p#all"]);
        assert_eq!(args[14], r#"{"v":1,"node":"n","op":{"history_emit":{"#);
        assert_eq!(
            args[15],
            r#","ns":"/","targets":[{"room":"r"}],"except":[5],"except_rooms":["c"],"event":"e","data":1}}}"#
        );
        assert_eq!(args[18], "5");
        assert_eq!(args[19], r#"{"rooms":["c"]}"#);
        assert_eq!(args.len(), 20);
    }

    /// The same append run twice (a copy the client sent again after its connection broke,
    /// though Redis had run the first): one event kept, one offset given out, one publish.
    #[tokio::test]
    async fn an_append_sent_twice_keeps_and_publishes_one_event() {
        let url = match std::env::var("REALTIME_TEST_REDIS") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "the Redis append test did not run: set REALTIME_TEST_REDIS=redis://127.0.0.1:6379"
                );
                return;
            }
        };
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} (REALTIME_TEST_REDIS) could not be reached: {e}"));
        let prefix = format!("trt-once-{}", std::process::id());
        let (keys, scripts) = (HistoryKeys::new(&prefix), HistoryScripts::new());
        let op = room_emit(Vec::new(), Vec::new());
        let encoded = crate::adapter::wire::encode("n", &op).unwrap();
        let params = params(10, Duration::from_secs(60));
        let channel = format!("{prefix}#all");
        let mut sub = client.get_async_pubsub().await.unwrap();
        sub.subscribe(&channel).await.unwrap();
        let stream = "r1:/:r".to_owned();
        let append = |id: &str| {
            append_cmd(
                &scripts,
                &keys,
                &params,
                &channel,
                false,
                &op,
                &encoded,
                std::slice::from_ref(&stream),
                None,
                id,
            )
            .unwrap()
        };
        let () = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(&scripts.append_source)
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .unwrap();
        let first = append("n:1");
        let _: i64 = first.query_async(&mut conn).await.unwrap();
        let _: i64 = first.query_async(&mut conn).await.unwrap();
        let len: i64 = redis::cmd("XLEN")
            .arg(keys.stream(&stream))
            .query_async(&mut conn)
            .await
            .unwrap();
        let seq: i64 = redis::cmd("HGET")
            .arg(&keys.meta)
            .arg("seq")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!((len, seq), (1, 1), "kept once, one offset given out");
        // Another append (another id) is kept.
        let _: i64 = append("n:2").query_async(&mut conn).await.unwrap();
        let len: i64 = redis::cmd("XLEN")
            .arg(keys.stream(&stream))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(len, 2);
        let mut published = Vec::new();
        use futures_util::StreamExt;
        let mut messages = sub.on_message();
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), messages.next()).await {
            published.push(msg.get_payload::<String>().unwrap());
        }
        assert_eq!(published.len(), 2, "published once per append: {published:?}");
        drop(messages);
        let mut del = redis::cmd("DEL");
        for key in [
            keys.meta.clone(),
            keys.stream(&stream),
            keys.mark(&stream),
            keys.once("n:1"),
            keys.once("n:2"),
        ] {
            del.arg(key);
        }
        let _: i64 = del.query_async(&mut conn).await.unwrap();
    }
}
