//! The Redis bus between two "nodes" (two buses on one Redis, one key prefix per test):
//! live frames in order and once, catching up from the stream, the stream's expiry, and an
//! outage noticed and its end announced (Redis reached through a proxy the test cuts).

use std::time::Duration;

use bytes::Bytes;
use parley::bus::{Bus, Followed, RedisBus, RedisBusConfig, Replayed};

use crate::common::proxy::{proxy, through};
use crate::common::redis;

fn config(prefix: &str) -> RedisBusConfig {
    RedisBusConfig {
        prefix: prefix.to_owned(),
        stream_len: 1000,
        stream_ttl: Duration::from_secs(60),
    }
}

async fn bus(url: &str, prefix: &str) -> RedisBus {
    RedisBus::open(url, config(prefix)).await.expect("Redis answers")
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
        a.publish("session:1", seq, &frame(seq));
    }
    for seq in 1..=50 {
        assert_eq!(next_frame(&mut on_b).await, (seq, frame(seq)));
        // The publishing node's own follower gets each frame once, straight away.
        assert_eq!(next_frame(&mut on_a).await, (seq, frame(seq)));
    }
    // Another topic's frames go to its own followers only.
    a.publish("session:2", 1, &frame(1));
    a.publish("session:1", 51, &frame(51));
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
    a.publish("session:1", 1, &frame(1));
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
    a.publish("session:1", 1, &frame(1));
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
    a.publish("session:1", 2, &frame(2));

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
    a.publish("session:1", 3, &frame(3));
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
