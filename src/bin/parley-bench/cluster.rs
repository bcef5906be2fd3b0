//! What multi-node costs: two `parley serve` nodes on one PostgreSQL and one Redis (the
//! database of `--postgres`, in a schema of its own; the Redis of `--redis`, under a key
//! prefix of its own). Added latency and CPU of a watcher on the other node than the turn,
//! turns per second over one node and over two, and the PostgreSQL transactions and Redis
//! commands each turn costs.

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::Connection;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::measure::{median, percentile, read_answer};
use super::process::{self, Server};

/// Where the cluster's shared services are.
pub struct Services {
    pub postgres: String,
    pub redis: String,
}

/// A cluster under measurement.
struct Cluster {
    a: Server,
    b: Server,
    token: String,
    database: String,
    redis: redis::Client,
    schema: String,
    admin: String,
}

impl Cluster {
    async fn start(dir: &std::path::Path, services: &Services, provider: &str) -> Cluster {
        let schema = format!("parley_bench_{}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(&services.postgres).await.expect("PostgreSQL");
        let create = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut admin).await.expect("schema");
        admin.close().await.ok();
        let separator = if services.postgres.contains('?') { '&' } else { '?' };
        let database =
            format!("{}{separator}options=-c%20search_path%3D{schema}", services.postgres);
        let prefix = format!("parley-bench:{}:", std::process::id());
        let node = |name: &str| {
            let env = [
                ("PARLEY_DATABASE_URL", database.as_str()),
                ("PARLEY_REDIS_URL", services.redis.as_str()),
                ("PARLEY_REDIS_PREFIX", prefix.as_str()),
                ("PARLEY_NODE_ID", name),
            ];
            process::parley_with(&dir.join(name), provider, &env)
        };
        let (a, b) = (node("a"), node("b"));
        let output = Command::new(process::parley_exe())
            .args(["token", "create", "--user", "bench", "--admin"])
            .env("PARLEY_DATABASE_URL", &database)
            .output()
            .expect("parley token create");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let redis = redis::Client::open(services.redis.as_str()).expect("Redis URL");
        Cluster { a, b, token, database, redis, schema, admin: services.postgres.clone() }
    }

    /// PostgreSQL transactions committed or rolled back so far in the database, and Redis
    /// commands run so far (all clients: nothing else runs during the benchmark).
    async fn round_trips(&self) -> (u64, u64) {
        // The statistics reach the view within a second of the transactions.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut pg = sqlx::PgConnection::connect(&self.database).await.expect("PostgreSQL");
        let transactions: i64 = sqlx::query_scalar(
            "SELECT (xact_commit + xact_rollback)::BIGINT FROM pg_stat_database \
             WHERE datname = current_database()",
        )
        .fetch_one(&mut pg)
        .await
        .expect("pg_stat_database");
        pg.close().await.ok();
        let mut conn = self.redis.get_multiplexed_async_connection().await.expect("Redis");
        let info: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.expect("INFO");
        let commands = info
            .lines()
            .filter_map(|line| line.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum();
        (transactions as u64, commands)
    }

    /// Redis's read events (each a client's request, pipelined commands arriving together
    /// counting once) and commands so far, all clients together.
    async fn redis_counts(&self) -> (u64, u64) {
        let mut conn = self.redis.get_multiplexed_async_connection().await.expect("Redis");
        let info: String =
            redis::cmd("INFO").arg("all").query_async(&mut conn).await.expect("INFO");
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
                .unwrap_or(0u64)
        };
        let commands: u64 = info
            .lines()
            .filter(|line| line.starts_with("cmdstat_"))
            .filter_map(|line| line.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum();
        (field("total_reads_processed"), commands)
    }

    async fn stop(self) {
        drop(self.a);
        drop(self.b);
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin).await {
            let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop_schema)).execute(&mut admin).await;
        }
    }
}

/// The section, measured on a fresh two-node cluster, against `single` (a node alone on
/// SQLite, whose token is `single_token`) for reference.
#[allow(clippy::too_many_arguments)]
pub async fn section(
    dir: &std::path::Path,
    single: &Server,
    single_token: &str,
    services: &Services,
    provider: &str,
    runs: usize,
    pace_ms: u64,
    paced_chunks: usize,
) -> String {
    let cluster = Cluster::start(dir, services, provider).await;
    let mut out = String::new();
    writeln!(out, "\n## Cluster (two nodes, PostgreSQL + Redis on this machine)\n").ok();
    writeln!(
        out,
        "Latency at a model's pace ({paced_chunks} chunks per answer, one every {pace_ms} ms), \
         provider chunk sent → watcher received. A node alone (SQLite, in-process bus); then \
         the cluster, the turn run on node a and the watcher on a (same node) or on b (its \
         events cross Redis). CPU is the nodes' (both, in the cluster) per delivered chunk; \
         the ratio is to the node alone.\n"
    )
    .ok();
    writeln!(
        out,
        "| sessions | watcher | p50 | p99 | added p50 | added p99 | CPU per chunk | CPU ratio |"
    )
    .ok();
    writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|").ok();
    let content = format!("pace {pace_ms} {paced_chunks}");
    for (n, sessions) in [1usize, 100].into_iter().enumerate() {
        let mut figures = Vec::new();
        let both = [&cluster.a, &cluster.b];
        let alone = [single];
        let paths = [
            (
                "node alone",
                Route { submit: single, watch: single, nodes: &alone, token: single_token },
            ),
            (
                "same node",
                Route {
                    submit: &cluster.a,
                    watch: &cluster.a,
                    nodes: &both,
                    token: &cluster.token,
                },
            ),
            (
                "other node",
                Route {
                    submit: &cluster.a,
                    watch: &cluster.b,
                    nodes: &both,
                    token: &cluster.token,
                },
            ),
        ];
        for (label, path) in &paths {
            let (mut p50, mut p99, mut cpu) = (vec![], vec![], vec![]);
            for run in 0..runs {
                let id = format!("x{n}-{label}-{run}").replace(' ', "");
                let (latencies, cpu_per_chunk) = paced(path, sessions, &id, &content).await;
                p50.push(percentile(&latencies, 0.5) as f64 / 1e3);
                p99.push(percentile(&latencies, 0.99) as f64 / 1e3);
                cpu.push(cpu_per_chunk);
            }
            figures.push((label, median(p50), median(p99), median(cpu)));
        }
        let same = figures[0];
        for (label, p50, p99, cpu) in figures {
            writeln!(
                out,
                "| {sessions} | {label} | {p50:.0} µs | {p99:.0} µs | {:.0} µs | {:.0} µs | {cpu:.1} µs | {:.2} |",
                p50 - same.1,
                p99 - same.2,
                cpu / same.3.max(0.001)
            )
            .ok();
        }
    }

    writeln!(
        out,
        "\nTurns (a five-chunk answer, zero-latency provider), 400 at once over 100 sessions, \
         each sent to node a alone, or alternately to a and b (a node not running a \
         session forwards its messages to the one that does). Both nodes share this \
         machine's cores. Round trips per turn include everything the nodes did meanwhile \
         (lease renewals, health pings).\n"
    )
    .ok();
    writeln!(
        out,
        "| nodes | turns/s | PostgreSQL transactions per turn | Redis commands per turn |"
    )
    .ok();
    writeln!(out, "|---:|---:|---:|---:|").ok();
    for (label, spread) in [("1", false), ("2", true)] {
        let (mut rates, mut pg, mut rd) = (vec![], vec![], vec![]);
        for run in 0..runs {
            let before = cluster.round_trips().await;
            let (turns, elapsed) = turns(&cluster, spread, &format!("t{label}-{run}")).await;
            let after = cluster.round_trips().await;
            rates.push(turns as f64 / elapsed.as_secs_f64());
            pg.push((after.0 - before.0) as f64 / turns as f64);
            rd.push((after.1 - before.1) as f64 / turns as f64);
        }
        writeln!(out, "| {label} | {:.0} | {:.1} | {:.1} |", median(rates), median(pg), median(rd))
            .ok();
    }
    writeln!(
        out,
        "\nStreaming across nodes: 100 sessions, each answer 500 chunks as fast as the path \
         takes them, the turn on node a and its watcher on b. Redis round trips are its read \
         events (a pipelined batch arriving at once counts once), both nodes' and the \
         bench's few together.\n"
    )
    .ok();
    writeln!(out, "| chunks delivered | Redis round trips per chunk | Redis commands per chunk |")
        .ok();
    writeln!(out, "|---:|---:|---:|").ok();
    let (mut trips, mut commands, mut chunks) = (vec![], vec![], vec![]);
    let other = Route { submit: &cluster.a, watch: &cluster.b, nodes: &[], token: &cluster.token };
    for run in 0..runs {
        let before = cluster.redis_counts().await;
        let (latencies, _) = paced(&other, 100, &format!("fast-{run}"), "go").await;
        let after = cluster.redis_counts().await;
        let delivered = latencies.len().max(1) as f64;
        trips.push((after.0 - before.0) as f64 / delivered);
        commands.push((after.1 - before.1) as f64 / delivered);
        chunks.push(delivered);
    }
    writeln!(out, "| {:.0} | {:.3} | {:.2} |", median(chunks), median(trips), median(commands))
        .ok();
    cluster.stop().await;
    out
}

/// `sessions` watchers on `watcher`, each session's turn run on node a at a model's pace;
/// returns the sorted chunk latencies (ns) and both nodes' CPU per chunk (µs).
/// Where a paced run submits its turns and watches them, and whose CPU it counts.
struct Route<'a> {
    submit: &'a Server,
    watch: &'a Server,
    nodes: &'a [&'a Server],
    token: &'a str,
}

async fn paced(path: &Route<'_>, sessions: usize, run: &str, content: &str) -> (Vec<u64>, f64) {
    let mut sockets = Vec::new();
    for i in 0..sessions {
        let url = format!("ws://{}/ws/chat?session_id={run}-{i}", path.watch.addr);
        let mut request = url.into_client_request().expect("request");
        let bearer = format!("Bearer {}", path.token).parse().expect("header");
        request.headers_mut().insert("authorization", bearer);
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
        socket.next().await.expect("session_start").expect("frame");
        sockets.push(socket);
    }
    // Reading before the messages go: the first chunks are not left waiting on the bench.
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let latencies = read_answer(&mut socket).await;
                let _ = socket.close(None).await;
                latencies
            })
        })
        .collect();
    let cpu_now = || path.nodes.iter().map(|node| node.cpu()).sum::<Duration>();
    let cpu = cpu_now();
    let client = reqwest::Client::new();
    for i in 0..sessions {
        let url = format!("http://{}/api/sessions/{run}-{i}/messages", path.submit.addr);
        let response = client
            .post(url)
            .bearer_auth(path.token)
            .json(&serde_json::json!({"content": content}))
            .send()
            .await
            .expect("submit");
        assert_eq!(response.status(), 202);
    }
    let mut latencies = Vec::new();
    for reader in readers {
        latencies.extend(reader.await.expect("reader"));
    }
    let cpu = cpu_now() - cpu;
    latencies.sort_unstable();
    let per_chunk = cpu.as_secs_f64() * 1e6 / latencies.len().max(1) as f64;
    (latencies, per_chunk)
}

/// 400 waiting chats over 100 sessions at once, to node a or spread over both; returns the
/// turns answered and the time taken.
async fn turns(cluster: &Cluster, spread: bool, run: &str) -> (usize, Duration) {
    let client = reqwest::Client::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(400));
    let started = Instant::now();
    let chats = (0..400).map(|i| {
        let node = if spread && i % 2 == 1 { &cluster.b } else { &cluster.a };
        let url = format!("http://{}/api/chat", node.addr);
        let (client, token, gate) = (client.clone(), cluster.token.clone(), gate.clone());
        let body =
            serde_json::json!({"content": "pace 0 5", "session_id": format!("{run}-{}", i % 100)});
        async move {
            let _permit = gate.acquire_owned().await.expect("gate");
            let response = client.post(url).bearer_auth(token).json(&body).send().await;
            response.is_ok_and(|r| r.status() == 200)
        }
    });
    let answered = futures_util::future::join_all(chats).await.into_iter().filter(|ok| *ok).count();
    (answered, started.elapsed())
}
