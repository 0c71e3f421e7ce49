//! The online store on Redis, standalone or Cluster: where a team's serving fleet shares one
//! online store, and where Feast users already keep theirs.
//!
//! Layout: one Redis string per (view, entity key), named `PREFIX:VIEW:` followed by the
//! entity key's bytes, holding the [`StoredRow`] bytes (16-byte timestamp header, then the
//! payload). One key per row spreads a view over every Cluster slot and lets Redis expire each
//! row on its own.
//!
//! - **Reads** are `MGET`s of up to [`CHUNK`] keys, sent concurrently (the Cluster client splits
//!   each by slot and puts the answers back in order): one round trip per batch and node.
//! - **Writes** are newer-wins, decided inside Redis by one Lua script ([`NEWER_WINS`]) that
//!   compares the stored row's timestamps with the new row's, so two writers (materialization
//!   and the stream, two replicas) can never let an older row replace a newer one. Standalone,
//!   a batch is one `MULTI`/`EXEC` (the script is loaded inside it too, so a restarted server
//!   cannot fail half a batch): all of it is visible or none. On a Cluster a transaction cannot
//!   span slots, so each row is atomic on its own; since writes are idempotent and newer-wins,
//!   retrying a batch a crash interrupted converges on the same state.
//! - **Expiry**: a row of a view with a ttl expires at `max(event time, now) + ttl`: never
//!   while reads would still serve it (they report it expired from `event time + ttl` on), and
//!   at most a ttl after it was written, so Redis reclaims what no read can use. Views with
//!   ttl 0 never expire.
//! - `count`, `keys` and `delete_view` walk the view's keys with `SCAN` on every primary: maintenance
//!   operations whose cost grows with the store, never on the serving path.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Script, Value, cmd, pipe};

use super::{BoxFuture, OnlineStore, StoredRow, ViewTable, WriteSummary};
use crate::StoreError;
use crate::shared::SharedCache;

/// What the shared cache's keys start with after the prefix: a `#` cannot be in a view name, so
/// they never meet a view's keys (`PREFIX:VIEW:`).
const SHARED_CACHE: &str = "#cache:";

/// Keys per `MGET` and per script call.
pub const CHUNK: usize = 512;

/// Rows of one Cluster write in flight at once.
const CLUSTER_WRITES_IN_FLIGHT: usize = 256;

/// Keys asked of each `SCAN` step.
const SCAN_COUNT: usize = 1_000;

/// The newer-wins write: `KEYS[i]` takes `ARGV[2i-1]` (a stored row) unless the row stored
/// there is newer; `ARGV[2i]` is its expiry in Unix milliseconds (`0`: none). Timestamps are
/// i64 little-endian; Lua numbers are doubles, so each is compared as a signed high word and an
/// unsigned low word, both exact. Returns how many rows were written.
pub const NEWER_WINS: &str = r"
local function order(s)
  local b = {string.byte(s, 1, 16)}
  local out = {}
  for w = 0, 1 do
    local o = w * 8
    local lo = b[o+1] + b[o+2] * 256 + b[o+3] * 65536 + b[o+4] * 16777216
    local hi = b[o+5] + b[o+6] * 256 + b[o+7] * 65536 + b[o+8] * 16777216
    if hi >= 2147483648 then hi = hi - 4294967296 end
    out[w * 2 + 1] = hi
    out[w * 2 + 2] = lo
  end
  return out
end
local function supersedes(new, old)
  for i = 1, 4 do
    if new[i] ~= old[i] then return new[i] > old[i] end
  end
  return true
end
local written = 0
for i, key in ipairs(KEYS) do
  local row = ARGV[2 * i - 1]
  local old = redis.call('GET', key)
  if (not old) or #old < 16 or supersedes(order(row), order(old)) then
    local at = ARGV[2 * i]
    if at == '0' then
      redis.call('SET', key, row)
    else
      redis.call('SET', key, row, 'PXAT', at)
    end
    written = written + 1
  end
end
return written
";

/// Where the store is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Every key starts with `PREFIX:` (several projects can share one Redis).
    pub key_prefix: String,
    /// Connecting to a server gives up after this long.
    pub connect_timeout: Duration,
    /// A command with no answer after this long fails (the store is then reported unavailable).
    pub response_timeout: Duration,
}

/// Standalone or Cluster: both multiplex one connection per server and are cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
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
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis backend.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    script: Script,
    prefix: String,
    /// The server(s), without credentials: for messages.
    location: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("location", &self.location)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisStore {
    /// Connects to one Redis server (`redis://[user:password@]host:port[/db]`, or `rediss://`
    /// where the build has TLS) and checks that it answers.
    pub async fn connect(url: &str, options: &RedisOptions) -> Result<RedisStore, StoreError> {
        let location = redact(url);
        let err = |e: RedisError| connect_error(&location, e);
        let client = redis::Client::open(url).map_err(err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(err)?;
        RedisStore::ready(Conn::Single(conn), location, options).await
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each); the
    /// client learns the rest of the topology and follows slot moves.
    pub async fn connect_cluster(
        nodes: &[String],
        options: &RedisOptions,
    ) -> Result<RedisStore, StoreError> {
        let location = format!(
            "cluster {}",
            nodes
                .iter()
                .map(|n| redact(n))
                .collect::<Vec<_>>()
                .join(",")
        );
        if nodes.is_empty() {
            return Err(StoreError::Redis {
                location,
                message: "a Redis Cluster needs at least one node address".into(),
                retryable: false,
            });
        }
        let err = |e: RedisError| connect_error(&location, e);
        let client = ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.response_timeout)
            .retries(2)
            .build()
            .map_err(err)?;
        let conn = client.get_async_connection().await.map_err(err)?;
        RedisStore::ready(Conn::Cluster(conn), location, options).await
    }

    async fn ready(
        conn: Conn,
        location: String,
        options: &RedisOptions,
    ) -> Result<RedisStore, StoreError> {
        let store = RedisStore {
            conn,
            script: Script::new(NEWER_WINS),
            prefix: options.key_prefix.clone(),
            location,
        };
        let mut c = store.conn.clone();
        // Loaded up front (on every node of a Cluster) so the first write does not pay for it;
        // a server that lost its scripts since is handled where scripts run.
        store
            .script
            .prepare_invoke()
            .load_async(&mut c)
            .await
            .map_err(|e| store.error("loading the newer-wins write script", e))?;
        Ok(store)
    }

    /// The Redis key of `key` in `view`.
    pub fn redis_key(&self, view: &str, key: &[u8]) -> Vec<u8> {
        let mut k = self.view_prefix(view).into_bytes();
        k.extend_from_slice(key);
        k
    }

    fn view_prefix(&self, view: &str) -> String {
        format!("{}:{view}:", self.prefix)
    }

    fn error(&self, doing: &str, e: RedisError) -> StoreError {
        StoreError::Redis {
            location: self.location.clone(),
            message: format!("{doing}: {e}"),
            retryable: is_transient(&e),
        }
    }

    /// The primaries' addresses, to walk keys with `SCAN` (`None`: standalone, one server).
    async fn primaries(&self) -> Result<Option<Vec<(String, u16)>>, StoreError> {
        let Conn::Cluster(c) = &self.conn else {
            return Ok(None);
        };
        let slots = c
            .clone()
            .route_command(
                cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(|e| self.error("CLUSTER SLOTS", e))?;
        let mut out = cluster_primaries(&slots).map_err(|message| StoreError::Redis {
            location: self.location.clone(),
            message: format!("CLUSTER SLOTS: {message}"),
            retryable: false,
        })?;
        out.sort();
        out.dedup();
        Ok(Some(out))
    }

    /// Walks every key of `view` on every server, unlinking them if `delete`, handing each
    /// page of keys (view prefix removed) to `visit`; returns how many there were.
    async fn scan_view(
        &self,
        view: &str,
        delete: bool,
        visit: &mut (dyn FnMut(&[Vec<u8>]) + Send),
    ) -> Result<u64, StoreError> {
        let mut seen = 0u64;
        let prefix = self.view_prefix(view);
        let pattern = format!("{}*", glob_escape(&prefix));
        let nodes: Vec<Option<(String, u16)>> = match self.primaries().await? {
            None => vec![None],
            Some(p) => p.into_iter().map(Some).collect(),
        };
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut scan = cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
                let reply = match (&self.conn, &node) {
                    (Conn::Cluster(c), Some((host, port))) => {
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        });
                        c.clone().route_command(scan, route).await
                    }
                    _ => scan.query_async(&mut self.conn.clone()).await,
                };
                let (next, keys): (u64, Vec<Vec<u8>>) = reply
                    .and_then(|v| redis::from_redis_value(v).map_err(RedisError::from))
                    .map_err(|e| self.error("SCAN", e))?;
                seen += keys.len() as u64;
                let stripped: Vec<Vec<u8>> = keys
                    .iter()
                    .filter_map(|k| k.strip_prefix(prefix.as_bytes()).map(<[u8]>::to_vec))
                    .collect();
                visit(&stripped);
                if delete && !keys.is_empty() {
                    cmd("UNLINK")
                        .arg(keys)
                        .query_async::<u64>(&mut self.conn.clone())
                        .await
                        .map_err(|e| self.error("UNLINK", e))?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(seen)
    }

    async fn write_standalone(&self, args: &[(Vec<u8>, Vec<u8>, i64)]) -> Result<u64, StoreError> {
        let mut p = pipe();
        p.atomic()
            .cmd("SCRIPT")
            .arg("LOAD")
            .arg(NEWER_WINS)
            .ignore();
        for chunk in args.chunks(CHUNK) {
            p.add_command(self.eval(chunk));
        }
        let written: Vec<u64> = p
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.error("writing a batch", e))?;
        Ok(written.iter().sum())
    }

    async fn write_cluster(&self, args: Vec<(Vec<u8>, Vec<u8>, i64)>) -> Result<u64, StoreError> {
        stream::iter(args)
            .map(|(key, row, expire)| {
                let mut conn = self.conn.clone();
                async move {
                    let mut call = self.script.prepare_invoke();
                    call.key(key).arg(row).arg(expire);
                    call.invoke_async::<u64>(&mut conn).await
                }
            })
            .buffer_unordered(CLUSTER_WRITES_IN_FLIGHT)
            .map_err(|e| self.error("writing a row", e))
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await
    }

    /// One script call for a chunk of rows.
    fn eval(&self, chunk: &[(Vec<u8>, Vec<u8>, i64)]) -> Cmd {
        let mut c = cmd("EVALSHA");
        c.arg(self.script.get_hash()).arg(chunk.len());
        for (key, _, _) in chunk {
            c.arg(key);
        }
        for (_, row, expire) in chunk {
            c.arg(row).arg(*expire);
        }
        c
    }
}

/// When a row written now should expire (Unix ms; 0: never): its ttl after its event time, but
/// never earlier than a ttl from now (a row is never dropped while reads would still serve it).
pub fn expire_at_ms(event_ts_micros: i64, ttl_seconds: u64, now_ms: i64) -> i64 {
    if ttl_seconds == 0 {
        return 0;
    }
    let ttl_ms = i64::try_from(ttl_seconds.saturating_mul(1_000)).unwrap_or(i64::MAX);
    (event_ts_micros / 1_000).max(now_ms).saturating_add(ttl_ms)
}

impl OnlineStore for RedisStore {
    fn write_batch<'a>(
        &'a self,
        table: &'a ViewTable,
        rows: Vec<(Vec<u8>, StoredRow)>,
    ) -> BoxFuture<'a, Result<WriteSummary, StoreError>> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(WriteSummary::default());
            }
            let now = kiln_core::time::now_micros() / 1_000;
            let total = rows.len() as u64;
            let args: Vec<(Vec<u8>, Vec<u8>, i64)> = rows
                .into_iter()
                .map(|(key, row)| {
                    let expire = expire_at_ms(row.event_ts, table.ttl_seconds, now);
                    (self.redis_key(&table.name, &key), row.to_bytes(), expire)
                })
                .collect();
            let written = match &self.conn {
                Conn::Single(_) => self.write_standalone(&args).await?,
                Conn::Cluster(_) => self.write_cluster(args).await?,
            };
            Ok(WriteSummary {
                written,
                kept_newer: total.saturating_sub(written),
            })
        })
    }

    fn get_many<'a>(
        &'a self,
        view: &'a str,
        keys: &'a [Vec<u8>],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredRow>>, StoreError>> {
        Box::pin(async move {
            let mgets: Vec<Cmd> = keys
                .chunks(CHUNK)
                .map(|chunk| {
                    let mut mget = cmd("MGET");
                    for k in chunk {
                        mget.arg(self.redis_key(view, k));
                    }
                    mget
                })
                .collect();
            let replies: Vec<Vec<Option<Vec<u8>>>> = stream::iter(mgets)
                .map(|mget| {
                    let mut conn = self.conn.clone();
                    async move { mget.query_async(&mut conn).await }
                })
                .buffered(16)
                .try_collect()
                .await
                .map_err(|e| self.error("reading rows", e))?;
            replies
                .into_iter()
                .flatten()
                .zip(keys)
                .map(|(bytes, key)| {
                    bytes
                        .map(|b| {
                            StoredRow::from_bytes(&b).map_err(|reason| StoreError::CorruptRow {
                                view: view.to_string(),
                                key: hex(key),
                                reason,
                            })
                        })
                        .transpose()
                })
                .collect()
        })
    }

    fn delete_view<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.scan_view(view, true, &mut |_| {}).await.map(drop) })
    }

    fn count<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move { self.scan_view(view, false, &mut |_| {}).await })
    }

    fn keys<'a>(&'a self, view: &'a str) -> BoxFuture<'a, Result<Vec<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            self.scan_view(view, false, &mut |page| out.extend_from_slice(page))
                .await?;
            // SCAN may return a key more than once (a rehash during the walk).
            out.sort_unstable();
            out.dedup();
            Ok(out)
        })
    }

    fn describe(&self) -> String {
        format!("redis at {} (keys {}:*)", self.location, self.prefix)
    }
}

fn connect_error(location: &str, e: RedisError) -> StoreError {
    StoreError::Redis {
        location: location.to_string(),
        message: format!("cannot connect: {e}"),
        retryable: is_transient(&e),
    }
}

/// Whether trying again later may succeed: the server was unreachable, slow or restarting.
fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
}

/// `url` without its password (`redis://user:***@host:6379`).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map_or(auth, |(u, _)| u);
            let user = if auth.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

/// Escapes `SCAN MATCH` glob characters.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The primaries in a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ...], replicas...]]`.
fn cluster_primaries(reply: &Value) -> Result<Vec<(String, u16)>, String> {
    let Value::Array(ranges) = reply else {
        return Err(format!("expected an array, got {reply:?}"));
    };
    ranges
        .iter()
        .map(|range| {
            let primary = match range {
                Value::Array(items) => items.get(2),
                _ => None,
            };
            let Some(Value::Array(node)) = primary else {
                return Err(format!("a slot range without a primary: {range:?}"));
            };
            match (node.first(), node.get(1)) {
                (Some(Value::BulkString(host)), Some(Value::Int(port))) => Ok((
                    String::from_utf8_lossy(host).into_owned(),
                    u16::try_from(*port).map_err(|_| format!("port {port} out of range"))?,
                )),
                _ => Err(format!("a primary without host and port: {node:?}")),
            }
        })
        .collect()
}

impl SharedCache for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            cmd("GET")
                .arg(format!("{}{SHARED_CACHE}{key}", self.prefix))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.error("reading the shared cache", e))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            cmd("SET")
                .arg(format!("{}{SHARED_CACHE}{key}", self.prefix))
                .arg(value)
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64)
                .query_async::<()>(&mut self.conn.clone())
                .await
                .map_err(|e| self.error("writing the shared cache", e))
        })
    }

    fn describe(&self) -> String {
        format!(
            "redis at {} (keys {}{SHARED_CACHE}*)",
            self.location, self.prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_a_ttl_after_the_event_but_never_sooner_than_a_ttl_from_now() {
        assert_eq!(expire_at_ms(5_000_000, 0, 9_000), 0);
        assert_eq!(expire_at_ms(5_000_000, 10, 1_000), 15_000);
        assert_eq!(expire_at_ms(5_000_000, 10, 9_000), 19_000);
        assert_eq!(expire_at_ms(i64::MAX, u64::MAX, 0), i64::MAX);
    }

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://u:secret@h:1"), "redis://u:***@h:1");
        assert_eq!(redact("redis://:secret@h:1"), "redis://:***@h:1");
        assert_eq!(redact("rediss://token@h:1"), "rediss://***@h:1");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn cluster_slots_replies_name_their_primaries() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5),
                node("a", 1),
                node("r", 9),
            ]),
            Value::Array(vec![Value::Int(6), Value::Int(9), node("b", 2)]),
        ]);
        assert_eq!(
            cluster_primaries(&reply),
            Ok(vec![("a".to_string(), 1), ("b".to_string(), 2)])
        );
        assert!(cluster_primaries(&Value::Int(1)).is_err());
        assert!(cluster_primaries(&Value::Array(vec![Value::Array(vec![])])).is_err());
    }
}
