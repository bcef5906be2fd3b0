//! The Redis bus. Each topic is a stream `<prefix>log:<topic>` (entry ID `<seq>-0`, trimmed
//! to about `stream_len` entries, expiring 7/8 to all of `stream_ttl` after its last event)
//! that a node catches up from, and a channel `<prefix>live:<topic>` that carries each frame
//! once, live.
//!
//! Two connections per node, however many sessions it follows: one publishes, in batches
//! (pipelined, in order); the other (RESP3, resubscribing by itself after a reconnect)
//! holds the subscriptions, answers catch-up reads and is pinged every second, which is how
//! an outage is noticed and its end announced to the followers, so they catch up.

mod followers;
mod publisher;
mod requests;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::streams::StreamRangeReply;
use ::redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, RedisError, Value};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Bus, BusError, Following, Replayed, Request};
use followers::Followers;
use publisher::Outgoing;
use requests::Requests;

/// Settings of the Redis bus.
#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    /// This node's name: other nodes send it requests by it.
    pub node: String,
    /// Prepended to every key and channel, so several clusters (or test runs) can share
    /// one Redis.
    pub prefix: String,
    /// About how many events each topic's stream keeps for catching up.
    pub stream_len: usize,
    /// How long a stream with no new event is kept.
    pub stream_ttl: Duration,
}

/// Frames waiting for the publisher before new ones are dropped (Redis is down or slow):
/// the nodes that miss them resync.
const PUBLISH_QUEUE: usize = 100_000;

/// Raises a topic's epoch (never lowers it). KEYS: epoch key. ARGV: epoch, time to live.
const CLAIM: &str = r"
local claimed = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > claimed then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return 1
";

/// How often the bus checks Redis answers.
const PING_EVERY: Duration = Duration::from_secs(1);

struct Shared {
    config: RedisBusConfig,
    /// Subscriptions, catch-up reads, pings.
    conn: ConnectionManager,
    followers: Arc<Followers>,
    requests: Requests,
    /// Identifies this node's own frames when Redis hands them back.
    origin: u64,
    queued: AtomicUsize,
    healthy: AtomicBool,
}

/// [`Bus`] over Redis, for several nodes.
pub struct RedisBus {
    shared: Arc<Shared>,
    publisher: mpsc::UnboundedSender<Outgoing>,
}

fn unavailable(err: RedisError) -> BusError {
    BusError::Unavailable(err.to_string())
}

impl RedisBus {
    /// Connects to Redis at `url` (`redis://…`), failing within seconds if it does not
    /// answer, and starts the publisher, the push reader and the health check.
    pub async fn open(url: &str, config: RedisBusConfig) -> Result<Self, BusError> {
        let info = url.into_connection_info().map_err(|e| BusError::Other(e.to_string()))?;
        let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = ::redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| BusError::Other(e.to_string()))?;
        let (pushes, pushed) = mpsc::unbounded_channel();
        let base = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(1));
        let conn = client
            .get_connection_manager_with_config(
                base.clone().set_push_sender(pushes).set_automatic_resubscription(),
            )
            .await
            .map_err(unavailable)?;
        let publishing =
            client.get_connection_manager_with_config(base).await.map_err(unavailable)?;
        let mut origin = [0u8; 8];
        getrandom::fill(&mut origin).map_err(|e| BusError::Other(e.to_string()))?;
        let shared = Arc::new(Shared {
            config,
            conn,
            followers: Arc::new(Followers::default()),
            requests: Requests::default(),
            origin: u64::from_be_bytes(origin),
            queued: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
        });
        // Requests for this node and answers to its own: subscribed for the bus's life (the
        // connection resubscribes by itself after a reconnect).
        let mut listening = shared.conn.clone();
        let mine =
            [shared.key("node", &shared.config.node), shared.key("reply", &shared.config.node)];
        listening.subscribe(&mine).await.map_err(unavailable)?;
        let (publisher, outgoing) = mpsc::unbounded_channel();
        tokio::spawn(publisher::publish_batches(Arc::downgrade(&shared), publishing, outgoing));
        tokio::spawn(read_pushes(Arc::downgrade(&shared), pushed));
        tokio::spawn(check_health(Arc::downgrade(&shared)));
        Ok(Self { shared, publisher })
    }
}

impl RedisBus {
    /// Hands a frame to the publisher, unless too many wait already (Redis is down or
    /// slow): then it is dropped, and the nodes that needed it resync.
    fn enqueue(&self, outgoing: Outgoing) {
        let queued = &self.shared.queued;
        if queued.fetch_add(1, Ordering::Relaxed) >= PUBLISH_QUEUE {
            queued.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        // The publisher lives as long as the bus.
        let _ = self.publisher.send(outgoing);
    }
}

impl Shared {
    /// The Redis name of `name` in `space` (`log`, `live`, `node`, `reply`, `map`, `kv`).
    fn key(&self, space: &str, name: &str) -> String {
        format!("{}{space}:{name}", self.config.prefix)
    }

    /// A request from another node (or the answer to one of ours) arrived on `channel`.
    fn request_message(self: &Arc<Self>, channel: &str, payload: &[u8]) -> bool {
        let node = &self.config.node;
        if channel == self.key("reply", node) {
            if let Some((id, _, body)) = requests::open(payload) {
                self.requests.answered(id, body);
            }
            return true;
        }
        if channel != self.key("node", node) {
            return false;
        }
        let Some((id, from, body)) = requests::open(payload) else { return true };
        let shared = Arc::downgrade(self);
        self.requests.received(Request::new(body, move |answer: Bytes| {
            let Some(shared) = shared.upgrade() else { return };
            tokio::spawn(async move {
                let envelope = requests::envelope(id, &shared.config.node, &answer);
                let mut conn = shared.conn.clone();
                let sent: Result<i64, _> = ::redis::cmd("PUBLISH")
                    .arg(shared.key("reply", &from))
                    .arg(envelope)
                    .query_async(&mut conn)
                    .await;
                if let Err(err) = sent {
                    tracing::warn!(%err, node = %from, "answering a node's request failed");
                }
            });
        }));
        true
    }

    fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::SeqCst);
        if was && !healthy {
            tracing::warn!("the Redis bus is unavailable; other nodes miss this node's events");
        } else if !was && healthy {
            tracing::info!("the Redis bus is back; followers catch up");
            self.followers.resume_all();
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn publish(&self, topic: &str, seq: u64, epoch: u64, frame: &Bytes) {
        let shared = &self.shared;
        shared.followers.deliver(&shared.key("live", topic), seq, frame);
        let frame = frame.clone();
        self.enqueue(Outgoing { topic: topic.to_owned(), seq, epoch, frame, kept: true });
    }

    async fn claim(&self, topic: &str, epoch: u64) -> Result<(), BusError> {
        let mut conn = self.shared.conn.clone();
        ::redis::cmd("EVAL")
            .arg(CLAIM)
            .arg(1)
            .arg(self.shared.key("epoch", topic))
            .arg(epoch)
            .arg(self.shared.config.stream_ttl.as_millis() as u64)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn subscribe(&self, topic: &str) -> Result<(), BusError> {
        subscribe(&self.shared, &self.shared.key("live", topic)).await
    }

    fn broadcast(&self, topic: &str, frame: &Bytes) {
        let frame = frame.clone();
        self.enqueue(Outgoing { topic: topic.to_owned(), seq: 0, epoch: 0, frame, kept: false });
    }

    fn follow(&self, topic: &str) -> Following {
        let channel = self.shared.key("live", topic);
        let (frames, guard) = self.shared.followers.add(&channel);
        // The subscription is made before the follower reads the stream (see `subscribe`).
        Following { frames, _guard: Some(Box::new(guard)) }
    }

    async fn replay(&self, topic: &str, after: u64) -> Result<Replayed, BusError> {
        let shared = &self.shared;
        subscribe(shared, &shared.key("live", topic)).await?;
        let key = shared.key("log", topic);
        let mut conn = shared.conn.clone();
        let (range, newest): (StreamRangeReply, StreamRangeReply) = ::redis::pipe()
            .cmd("XRANGE")
            .arg(&key)
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .add_command(newest_entry(&key))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let Some(newest) = newest.ids.first() else {
            return Ok(Replayed::Missing);
        };
        let frames = range.ids.iter().filter_map(entry).collect();
        Ok(Replayed::Frames { frames, newest: entry_seq(&newest.id).unwrap_or(0) })
    }

    async fn request(&self, node: &str, body: Bytes, timeout: Duration) -> Result<Bytes, BusError> {
        let shared = &self.shared;
        let (id, answer) = shared.requests.start();
        let envelope = requests::envelope(id, &shared.config.node, &body);
        let mut conn = shared.conn.clone();
        let listeners: Result<i64, _> = ::redis::cmd("PUBLISH")
            .arg(shared.key("node", node))
            .arg(envelope)
            .query_async(&mut conn)
            .await;
        match listeners {
            Ok(0) => {
                shared.requests.forget(id);
                return Err(BusError::NoSuchNode(node.to_owned()));
            }
            Ok(_) => {}
            Err(err) => {
                shared.requests.forget(id);
                return Err(unavailable(err));
            }
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => {
                shared.requests.forget(id);
                Err(BusError::Timeout(node.to_owned()))
            }
        }
    }

    fn requests(&self) -> Option<mpsc::Receiver<Request>> {
        self.shared.requests.take_incoming()
    }

    async fn put(
        &self,
        key: &str,
        field: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let key = self.shared.key("map", key);
        let mut conn = self.shared.conn.clone();
        ::redis::pipe()
            .cmd("HSET")
            .arg(&key)
            .arg(field)
            .arg(value.as_ref())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.as_millis() as u64)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn remove(&self, key: &str, field: &str) -> Result<(), BusError> {
        let mut conn = self.shared.conn.clone();
        ::redis::cmd("HDEL")
            .arg(self.shared.key("map", key))
            .arg(field)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn entries(&self, key: &str) -> Result<Vec<(String, Bytes)>, BusError> {
        let mut conn = self.shared.conn.clone();
        let entries: Vec<(String, Vec<u8>)> = ::redis::cmd("HGETALL")
            .arg(self.shared.key("map", key))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(entries.into_iter().map(|(field, value)| (field, Bytes::from(value))).collect())
    }

    async fn count(&self, key: &str, window: Duration) -> Result<(u64, Duration), BusError> {
        let key = self.shared.key("kv", key);
        let mut conn = self.shared.conn.clone();
        // The expiry is set by the window's first event only (`NX`): fixed windows.
        let (count, _, left): (u64, i64, i64) = ::redis::pipe()
            .cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window.as_millis() as u64)
            .arg("NX")
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok((count, Duration::from_millis(left.max(0) as u64)))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), BusError> {
        let mut conn = self.shared.conn.clone();
        ::redis::cmd("SET")
            .arg(self.shared.key("kv", key))
            .arg(value.as_ref())
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, BusError> {
        let mut conn = self.shared.conn.clone();
        let value: Option<Vec<u8>> = ::redis::cmd("GETDEL")
            .arg(self.shared.key("kv", key))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(value.map(Bytes::from))
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, BusError> {
        let mut conn = self.shared.conn.clone();
        let left: i64 = ::redis::cmd("PTTL")
            .arg(self.shared.key("kv", key))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok((left > 0).then(|| Duration::from_millis(left as u64)))
    }

    async fn delete(&self, key: &str) -> Result<(), BusError> {
        let mut conn = self.shared.conn.clone();
        ::redis::cmd("DEL")
            .arg(self.shared.key("kv", key))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn newest(&self, topic: &str) -> Result<Option<u64>, BusError> {
        let mut conn = self.shared.conn.clone();
        let newest: StreamRangeReply = newest_entry(&self.shared.key("log", topic))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(newest.ids.first().and_then(|entry| entry_seq(&entry.id)))
    }

    fn clustered(&self) -> bool {
        true
    }

    fn describe(&self) -> &'static str {
        "redis"
    }

    fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst)
    }
}

/// Subscribes the connection to `channel` unless it already is. Awaited before a follower
/// reads the stream, so no frame falls between the read and the live feed.
async fn subscribe(shared: &Shared, channel: &str) -> Result<(), BusError> {
    let mut subscribed = shared.subscribed().await;
    if !subscribed.contains(channel) {
        shared.conn.clone().subscribe(channel).await.map_err(unavailable)?;
        subscribed.insert(channel.to_owned());
    }
    Ok(())
}

impl Shared {
    async fn subscribed(&self) -> tokio::sync::MutexGuard<'_, HashSet<String>> {
        self.followers.subscribed.lock().await
    }
}

/// Reads the newest entry of the stream `key`.
fn newest_entry(key: &str) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd("XREVRANGE");
    cmd.arg(key).arg("+").arg("-").arg("COUNT").arg(1);
    cmd
}

fn entry_seq(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

fn entry(entry: &::redis::streams::StreamId) -> Option<(u64, Bytes)> {
    let seq = entry_seq(&entry.id)?;
    match entry.map.get("f")? {
        Value::BulkString(bytes) => Some((seq, Bytes::copy_from_slice(bytes))),
        _ => None,
    }
}

/// Hands frames other nodes published to this node's followers; notes disconnections.
async fn read_pushes(
    shared: std::sync::Weak<Shared>,
    mut pushed: mpsc::UnboundedReceiver<PushInfo>,
) {
    while let Some(push) = pushed.recv().await {
        let Some(shared) = shared.upgrade() else { return };
        match push.kind {
            PushKind::Message => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                else {
                    continue;
                };
                let channel = String::from_utf8_lossy(channel);
                if shared.request_message(&channel, payload) {
                    continue;
                }
                let Some((origin, seq, frame)) = followers::parse(payload) else { continue };
                if origin != shared.origin {
                    shared.followers.deliver(&channel, seq, &frame);
                }
            }
            PushKind::Disconnection => shared.set_healthy(false),
            _ => {}
        }
    }
}

/// Pings Redis every second: an outage marks the bus unhealthy, its end tells followers
/// to catch up. Also drops the subscriptions nobody follows any more.
async fn check_health(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let mut conn = shared.conn.clone();
        let pong = ::redis::cmd("PING").query_async::<String>(&mut conn).await;
        shared.set_healthy(pong.is_ok());
        if pong.is_ok() {
            let mut subscribed = shared.subscribed().await;
            let idle: Vec<String> =
                subscribed.iter().filter(|c| !shared.followers.followed(c)).cloned().collect();
            for channel in idle {
                if conn.unsubscribe(&channel).await.is_ok() {
                    subscribed.remove(&channel);
                }
            }
        }
    }
}
