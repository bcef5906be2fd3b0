//! The Redis bus between two "nodes" (two buses on one Redis, one key prefix per test):
//! live frames in order and once, catching up from the stream, the stream's expiry, and an
//! outage noticed and its end announced (Redis reached through a proxy the test cuts).

use std::time::Duration;

use bytes::Bytes;
use parley::bus::{Bus, BusError, Followed, RedisBus, RedisBusConfig, Replayed};

use crate::common::proxy::{proxy, through};
use crate::common::redis;

fn config(prefix: &str) -> RedisBusConfig {
    RedisBusConfig {
        node: format!("node-{}", uuid::Uuid::new_v4().simple()),
        prefix: prefix.to_owned(),
        stream_len: 1000,
        stream_ttl: Duration::from_secs(60),
    }
}

async fn bus(url: &str, prefix: &str) -> RedisBus {
    RedisBus::open(url, config(prefix)).await.expect("Redis answers")
}

async fn named(url: &str, prefix: &str, node: &str) -> RedisBus {
    let config = RedisBusConfig { node: node.to_owned(), ..config(prefix) };
    RedisBus::open(url, config).await.expect("Redis answers")
}

fn frame(seq: u64) -> Bytes {
    Bytes::from(format!("{{\"seq\":{seq}}}"))
}

async fn next_frame(following: &mut parley::bus::Following) -> (u64, Bytes) {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), following.next())
            .await
            .expect("a frame arrives in time")
            .expect("the bus is alive");
        if let Followed::Frame { seq, frame } = next {
            return (seq, frame);
        }
    }
}

#[tokio::test]
async fn frames_reach_the_other_node_in_order_once_and_can_be_caught_up() {
    let Some(url) = redis::url() else { return };
    let prefix = redis::prefix();
    let (a, b) = (bus(&url, &prefix).await, bus(&url, &prefix).await);
    assert!(a.clustered() && a.healthy());
    let mut on_b = b.follow("session:1");
    assert_eq!(b.replay("session:1", 0).await.unwrap(), Replayed::Missing);
    let mut on_a = a.follow("session:1");
    a.replay("session:1", 0).await.unwrap();
    for seq in 1..=50 {
        a.publish("session:1", seq, 1, &frame(seq));
    }
    for seq in 1..=50 {
        assert_eq!(next_frame(&mut on_b).await, (seq, frame(seq)));
        // The publishing node's own follower gets each frame once, straight away.
        assert_eq!(next_frame(&mut on_a).await, (seq, frame(seq)));
    }
    // Another topic's frames go to its own followers only.
    a.publish("session:2", 1, 1, &frame(1));
    a.publish("session:1", 51, 1, &frame(51));
    assert_eq!(next_frame(&mut on_b).await.0, 51);

    // A node that comes late catches up from the stream, then follows.
    let Replayed::Frames { frames, newest } = b.replay("session:1", 47).await.unwrap() else {
        panic!("the stream holds the frames");
    };
    assert_eq!(newest, 51);
    assert_eq!(frames, (48..=51).map(|s| (s, frame(s))).collect::<Vec<_>>());
    let Replayed::Frames { frames, newest } = b.replay("session:1", 51).await.unwrap() else {
        panic!("the stream holds the frames");
    };
    assert_eq!((frames.len(), newest), (0, 51));
    // Another cluster's prefix sees nothing of it.
    let other = bus(&url, &redis::prefix()).await;
    assert_eq!(other.replay("session:1", 0).await.unwrap(), Replayed::Missing);
}

#[tokio::test]
async fn a_quiet_stream_expires() {
    let Some(url) = redis::url() else { return };
    let prefix = redis::prefix();
    let short = RedisBusConfig { stream_ttl: Duration::from_millis(200), ..config(&prefix) };
    let a = RedisBus::open(&url, short).await.unwrap();
    a.publish("session:1", 1, 1, &frame(1));
    let mut held = false;
    for _ in 0..100 {
        match a.replay("session:1", 0).await.unwrap() {
            Replayed::Frames { .. } => held = true,
            Replayed::Missing if held => return,
            Replayed::Missing => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the stream was held: {held}, and never expired");
}

#[tokio::test]
async fn a_stream_published_to_outlives_its_time_to_live() {
    // Expiries are refreshed once in a while, not with every frame: a topic published to
    // for three times its time to live keeps its stream (and its claim: a frame of an
    // older epoch is still refused at the end).
    let Some(url) = redis::url() else { return };
    let prefix = redis::prefix();
    let short = RedisBusConfig { stream_ttl: Duration::from_secs(1), ..config(&prefix) };
    let a = RedisBus::open(&url, short).await.unwrap();
    a.claim("session:1", 2).await.unwrap();
    for seq in 1..=30 {
        a.publish("session:1", seq, 2, &frame(seq));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.publish("session:1", 31, 1, &frame(31));
    let mut replayed = a.replay("session:1", 0).await.unwrap();
    for _ in 0..50 {
        if matches!(&replayed, Replayed::Frames { newest: 30, .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        replayed = a.replay("session:1", 0).await.unwrap();
    }
    let Replayed::Frames { frames, newest } = replayed else {
        panic!("the stream expired while it was published to");
    };
    assert_eq!((frames.first().map(|(seq, _)| *seq), newest), (Some(1), 30));
}

#[tokio::test]
async fn a_stream_made_anew_gets_its_expiry() {
    // Redis lost the stream (evicted, flushed) but not the topic's claim, and the frame
    // that makes it again is not one that refreshes expiries: the new stream expires all
    // the same.
    let Some(url) = redis::url() else { return };
    let prefix = redis::prefix();
    let a = bus(&url, &prefix).await;
    a.publish("session:1", 1, 1, &frame(1));
    let client = ::redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}log:session:1");
    for _ in 0..100 {
        if matches!(a.replay("session:1", 0).await.unwrap(), Replayed::Frames { .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _: () = ::redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    a.publish("session:1", 2, 1, &frame(2));
    let mut ttl = -2;
    for _ in 0..100 {
        ttl = ::redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
        if ttl != -2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ttl > 0, "the stream was made again without an expiry (PTTL {ttl})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_noticed_and_its_end_announced() {
    let Some(url) = redis::url() else { return };
    let prefix = redis::prefix();
    let (_, upstream) = through(&url, "127.0.0.1:1".parse().unwrap());
    let (addr, cut) = proxy("127.0.0.1:0".parse().unwrap(), upstream).await;
    let (proxied, _) = through(&url, addr);
    let b = bus(&proxied, &prefix).await;
    let a = bus(&url, &prefix).await;
    let mut on_b = b.follow("session:1");
    b.replay("session:1", 0).await.unwrap();
    a.publish("session:1", 1, 1, &frame(1));
    assert_eq!(next_frame(&mut on_b).await.0, 1);

    cut.cancel();
    for _ in 0..100 {
        if !b.healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!b.healthy(), "the outage is noticed");
    assert!(a.healthy(), "a node that still reaches Redis is fine");
    assert!(b.replay("session:1", 0).await.is_err(), "reads fail fast");
    // What is published meanwhile misses b, but stays in the stream.
    a.publish("session:1", 2, 1, &frame(2));

    let (_, restored) = proxy(addr, upstream).await;
    let resumed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match on_b.next().await.expect("the bus is alive") {
                Followed::Resumed => return,
                Followed::Frame { .. } => {}
            }
        }
    })
    .await;
    assert!(resumed.is_ok(), "followers are told the bus is back");
    assert!(b.healthy());
    let Replayed::Frames { frames, .. } = b.replay("session:1", 1).await.unwrap() else {
        panic!("the stream holds frame 2");
    };
    assert_eq!(frames, [(2, frame(2))]);
    // Live delivery works again (the subscription came back by itself).
    a.publish("session:1", 3, 1, &frame(3));
    assert_eq!(next_frame(&mut on_b).await.0, 3);
    restored.cancel();
}

#[tokio::test]
async fn a_redis_that_does_not_answer_fails_the_start_quickly() {
    let started = std::time::Instant::now();
    let opened = RedisBus::open("redis://127.0.0.1:1", config("x:")).await;
    assert!(opened.is_err());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_node_answers_another_nodes_requests_and_a_missing_node_fails_fast() {
    let Some(url) = redis::url() else { return };
    let prefix = redis::prefix();
    let (a, b) = (named(&url, &prefix, "a").await, named(&url, &prefix, "b").await);
    let mut incoming = b.requests().expect("the requests, once");
    assert!(b.requests().is_none());
    tokio::spawn(async move {
        while let Some(request) = incoming.recv().await {
            let mut answer = b"re: ".to_vec();
            answer.extend_from_slice(&request.body);
            if request.body.as_ref() != b"ignore me" {
                request.reply(answer.into());
            }
        }
    });
    let timeout = Duration::from_secs(2);
    let answer = a.request("b", Bytes::from_static(b"hello"), timeout).await.unwrap();
    assert_eq!(answer, Bytes::from_static(b"re: hello"));
    // Several at once each get their own answer.
    let asks = (0..20).map(|i| a.request("b", Bytes::from(format!("q{i}")), timeout));
    let answers = futures_util::future::join_all(asks).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), Bytes::from(format!("re: q{i}")));
    }
    let started = std::time::Instant::now();
    let missing = a.request("c", Bytes::from_static(b"anyone?"), timeout).await;
    assert!(matches!(missing, Err(BusError::NoSuchNode(_))), "{missing:?}");
    assert!(started.elapsed() < timeout, "fails at once, not by timing out");
    let ignored =
        a.request("b", Bytes::from_static(b"ignore me"), Duration::from_millis(300)).await;
    assert!(matches!(ignored, Err(BusError::Timeout(_))), "{ignored:?}");
}

#[tokio::test]
async fn shared_maps_are_seen_by_every_node() {
    let Some(url) = redis::url() else { return };
    let prefix = redis::prefix();
    let (a, b) = (bus(&url, &prefix).await, bus(&url, &prefix).await);
    let ttl = Duration::from_secs(60);
    a.put("approvals:alice", "r1", Bytes::from_static(b"one"), ttl).await.unwrap();
    a.put("approvals:alice", "r2", Bytes::from_static(b"two"), ttl).await.unwrap();
    a.put("approvals:bob", "r3", Bytes::from_static(b"three"), ttl).await.unwrap();
    let mut entries = b.entries("approvals:alice").await.unwrap();
    entries.sort();
    assert_eq!(
        entries,
        [
            ("r1".to_owned(), Bytes::from_static(b"one")),
            ("r2".to_owned(), Bytes::from_static(b"two"))
        ]
    );
    b.remove("approvals:alice", "r1").await.unwrap();
    assert_eq!(a.entries("approvals:alice").await.unwrap().len(), 1);
    assert!(a.entries("approvals:nobody").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_node_that_lost_a_topic_publishes_nothing_more_on_it() {
    let Some(url) = redis::url() else { return };
    let prefix = redis::prefix();
    let (old, new, watcher) =
        (bus(&url, &prefix).await, bus(&url, &prefix).await, bus(&url, &prefix).await);
    let mut following = watcher.follow("session:7");
    watcher.replay("session:7", 0).await.unwrap();
    old.claim("session:7", 1).await.unwrap();
    old.publish("session:7", 1, 1, &frame(1));
    assert_eq!(next_frame(&mut following).await.0, 1);
    // Another node takes the session over (epoch 2); the old one has not noticed yet.
    new.claim("session:7", 2).await.unwrap();
    // A claim never goes back.
    old.claim("session:7", 1).await.unwrap();
    old.publish("session:7", 2, 1, &frame(2));
    new.publish("session:7", 2, 2, &frame(2));
    let (seq, frame_seen) = next_frame(&mut following).await;
    assert_eq!((seq, frame_seen), (2, frame(2)));
    old.publish("session:7", 3, 1, &frame(3));
    new.publish("session:7", 3, 2, &Bytes::from_static(b"{\"from\":\"new\"}"));
    assert_eq!(next_frame(&mut following).await.1, Bytes::from_static(b"{\"from\":\"new\"}"));
    let Replayed::Frames { frames, .. } = watcher.replay("session:7", 0).await.unwrap() else {
        panic!("the stream holds the frames");
    };
    let from_new = Bytes::from_static(b"{\"from\":\"new\"}");
    assert_eq!(frames, [(1, frame(1)), (2, frame(2)), (3, from_new)], "only the holder's");
}
