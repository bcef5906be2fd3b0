//! The publishing side of the Redis bus: one task per node writes every frame, in order,
//! in pipelined batches, on a connection of its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ::redis::aio::ConnectionManager;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Shared, followers};

/// Appends a frame to its topic's stream and publishes it, in one step, unless the topic
/// was claimed for a later epoch (the publisher lost the session to another node) or the
/// stream holds a later entry already: such a frame goes nowhere. A published frame also
/// claims the topic for its epoch (and keeps the claim as long as the stream). The
/// expiries are refreshed when the publisher asks (see [`REFRESH_SHARE`]), not with every
/// frame, and set whenever the stream or the claim is made anew (also after Redis lost
/// the one but not the other).
/// KEYS: stream, epoch key. ARGV: epoch, stream length, entry id, frame, channel, payload,
/// stream time to live (ms), `1` to refresh the expiries.
const PUBLISH: &str = r"
local claimed = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) < claimed then return 0 end
if ARGV[8] == '1' then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
local ok, added = pcall(redis.call, 'XADD', KEYS[1], 'NOMKSTREAM', 'MAXLEN', '~', ARGV[2], ARGV[3], 'f', ARGV[4])
if not ok then return 0 end
if not added then
  ok = pcall(redis.call, 'XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[3], 'f', ARGV[4])
  if not ok then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
end
if tonumber(ARGV[1]) > claimed then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[7])
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

/// A topic's expiries are refreshed once per this share of their time to live while it is
/// published to: a stream and its claim then expire between 7/8 of `stream_ttl` and
/// `stream_ttl` after its last frame, for two commands per refresh instead of per frame.
const REFRESH_SHARE: u32 = 8;

/// A frame on its way to Redis.
pub(super) struct Outgoing {
    pub topic: String,
    pub seq: u64,
    /// The publisher's claim on the topic ([`Bus::claim`]).
    pub epoch: u64,
    pub frame: Bytes,
    /// Whether the topic's stream keeps it (events), or it goes out live only (broadcasts).
    pub kept: bool,
}

/// Writes frames to Redis in batches, in order: each event is appended to its topic's
/// stream and published on its channel in one step (refused if its publisher lost the
/// topic), each broadcast published. A batch that fails for want of Redis is tried again,
/// in order, until Redis is back (frames queue meanwhile, up to `PUBLISH_QUEUE`).
pub(super) async fn publish_batches(
    shared: std::sync::Weak<Shared>,
    mut conn: ConnectionManager,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut batch = Vec::new();
    // When each topic's expiries were last refreshed (by a batch Redis took).
    let mut refreshed: HashMap<String, Instant> = HashMap::new();
    let mut swept = Instant::now();
    while outgoing.recv_many(&mut batch, 512).await > 0 {
        let mut pause = Duration::from_millis(50);
        loop {
            let Some(shared) = shared.upgrade() else { return };
            let ttl = shared.config.stream_ttl.as_millis() as u64;
            let every = shared.config.stream_ttl / REFRESH_SHARE;
            if swept.elapsed() > shared.config.stream_ttl {
                refreshed.retain(|_, at| at.elapsed() < every);
                swept = Instant::now();
            }
            // The first frame of each topic due a refresh asks for it.
            let mut refreshing: HashSet<&str> = HashSet::new();
            let mut pipe = ::redis::pipe();
            for out in &batch {
                let payload = followers::payload(shared.origin, out.seq, &out.frame);
                let channel = shared.key("live", &out.topic);
                if out.kept {
                    let due = refreshed.get(&out.topic).is_none_or(|at| at.elapsed() >= every);
                    let refresh = due && refreshing.insert(out.topic.as_str());
                    pipe.cmd("EVAL")
                        .arg(PUBLISH)
                        .arg(2)
                        .arg(shared.key("log", &out.topic))
                        .arg(shared.key("epoch", &out.topic))
                        .arg(out.epoch)
                        .arg(shared.config.stream_len)
                        .arg(format!("{}-0", out.seq))
                        .arg(out.frame.as_ref())
                        .arg(channel)
                        .arg(payload)
                        .arg(ttl)
                        .arg(u8::from(refresh))
                        .ignore();
                } else {
                    pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                }
            }
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    let now = Instant::now();
                    for topic in refreshing {
                        refreshed.insert(topic.to_owned(), now);
                    }
                    break;
                }
                Err(err)
                    if err.is_io_error()
                        || err.is_timeout()
                        || err.is_connection_dropped()
                        || matches!(
                            err.retry_method(),
                            ::redis::RetryMethod::WaitAndRetry
                                | ::redis::RetryMethod::RetryImmediately
                                | ::redis::RetryMethod::Reconnect
                        ) =>
                {
                    tracing::warn!(%err, frames = batch.len(), "publishing to Redis failed; retrying");
                    shared.set_healthy(false);
                }
                Err(err) => {
                    tracing::warn!(%err, frames = batch.len(), "Redis refused published frames");
                    break;
                }
            }
            drop(shared);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        if let Some(shared) = shared.upgrade() {
            shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        }
        batch.clear();
    }
}
