//! `parley-bench`: measures Parley over loopback against a built-in fake provider and, side
//! by side, a minimal WebSocket relay (the physical limit), and writes the results as a
//! Markdown table.
//!
//! `cargo run --release --bin parley-bench -- --out docs/BENCHMARKS.md`; `--only soak`
//! (or any other sections) measures some sections and replaces just those in the file.

mod cluster;
mod history;
mod measure;
mod process;
mod report;
mod soak;
mod upstream;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use measure::{Target, median, percentile};

#[derive(Parser)]
#[command(name = "parley-bench", about = "Measure Parley against the physical limit")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where to write the Markdown report (stdout too).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Chunks per streamed answer.
    #[arg(long, default_value_t = 500)]
    chunks: usize,
    /// Concurrent sessions to stream (comma-separated).
    #[arg(long, default_value = "1,100,1000", value_delimiter = ',')]
    sessions: Vec<usize>,
    /// Milliseconds between chunks of the paced provider (the latency table).
    #[arg(long, default_value_t = 50)]
    pace_ms: u64,
    /// Chunks per paced answer.
    #[arg(long, default_value_t = 100)]
    paced_chunks: usize,
    /// Concurrent sessions of the latency table (comma-separated).
    #[arg(long, default_value = "1,100,1000", value_delimiter = ',')]
    paced_sessions: Vec<usize>,
    /// Idle connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Append-latency marks.
    #[arg(long, default_value = "1,1000,10000,100000", value_delimiter = ',')]
    marks: Vec<u64>,
    /// Seconds of the soak's mixed load (600 for the long run).
    #[arg(long, default_value_t = 30)]
    soak_secs: u64,
    /// Clients of the soak.
    #[arg(long, default_value_t = 6)]
    soak_clients: usize,
    /// PostgreSQL database for the cluster section (a schema of its own is made in it).
    #[arg(long, env = "PARLEY_TEST_POSTGRES_URL")]
    postgres: Option<String>,
    /// Redis for the cluster section (keys under a prefix of their own).
    #[arg(long, env = "PARLEY_TEST_REDIS_URL")]
    redis: Option<String>,
    /// Sections to measure (comma-separated; all when absent). With `--out`, each replaces
    /// its section in the file, and the rest of the file stays.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
}

/// A section of the report.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Streaming,
    Paced,
    TurnStart,
    FanOut,
    Connections,
    RoundTrip,
    History,
    Process,
    Soak,
    Cluster,
}

impl Cli {
    fn wants(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the baseline relay (used by the benchmark itself).
    Relay {
        #[arg(long)]
        provider: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(Command::Relay { provider }) = cli.command {
        runtime.block_on(upstream::relay(provider));
        return;
    }
    let sections = runtime.block_on(run(&cli));
    let report = if cli.only.is_empty() {
        format!("{}{sections}", header(&cli))
    } else {
        let date = parley::clock::rfc3339(parley::clock::now_ms());
        let args: Vec<String> = std::env::args().skip(1).collect();
        report::noted(&sections, &date[..10], &format!("parley-bench {}", args.join(" ")))
    };
    print!("{report}");
    if let Some(out) = &cli.out {
        // The hand-written analysis below the tables survives a re-run.
        let previous = std::fs::read_to_string(out).unwrap_or_default();
        let text = if cli.only.is_empty() {
            report::full(&previous, &report)
        } else {
            report::merge(&previous, &report)
        };
        std::fs::write(out, text).expect("write the report");
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn run(cli: &Cli) -> String {
    let dir = tempfile_dir();
    let provider = format!("http://{}/v1", upstream::fake_provider(cli.chunks).await);
    let token = process::prepare(&dir.join("data"));
    let parley = process::parley(&dir.join("data"), &provider);
    let relay = process::relay(&provider);
    let idle_rss = parley.rss();
    let mut out = String::new();

    if cli.wants(Section::Streaming) {
        out.push_str(&streaming(cli, &parley, &relay, &token).await);
    }
    if cli.wants(Section::Paced) {
        out.push_str(&paced(cli, &parley, &relay, &token).await);
    }
    if cli.wants(Section::TurnStart) {
        out.push_str(&turn_start(&parley, &relay, &token).await);
    }
    if cli.wants(Section::FanOut) {
        writeln!(out, "\n## Fan-out (one session, every watcher gets every chunk)\n").ok();
        writeln!(out, "| watchers | delivered chunks/s |\n|---:|---:|").ok();
        for watchers in [1, 10, 100] {
            let mut rates = Vec::new();
            for run in 0..cli.runs {
                let (delivered, elapsed) = measure::fan_out(&parley, watchers, run, &token).await;
                rates.push(delivered as f64 / elapsed.as_secs_f64());
            }
            writeln!(out, "| {watchers} | {:.0} |", median(rates)).ok();
        }
    }
    if cli.wants(Section::Connections) {
        // A server of its own: memory the sections before freed would be reused by the
        // connections, and hide what each one costs.
        let data = dir.join("connections");
        let token = process::prepare(&data);
        let server = process::parley(&data, &provider);
        out.push_str(&connections(cli, &server, &token).await);
    }
    if cli.wants(Section::RoundTrip) {
        out.push_str(&round_trip(&parley, &token).await);
    }
    if cli.wants(Section::History) {
        out.push_str(&history_table(&dir, &cli.marks).await);
    }
    if cli.wants(Section::Process) {
        let size = std::fs::metadata(process::parley_exe()).map(|m| m.len()).unwrap_or(0);
        writeln!(out, "\n## Process\n").ok();
        writeln!(out, "| figure | value | target |\n|---|---:|---|").ok();
        writeln!(out, "| binary size | {:.1} MiB | |", size as f64 / 1048576.0).ok();
        writeln!(out, "| start-up to listening | {:.0} ms | |", parley.startup.as_secs_f64() * 1e3)
            .ok();
        writeln!(
            out,
            "| idle resident memory | {:.1} MiB | < 20 MB |",
            idle_rss as f64 / 1048576.0
        )
        .ok();
    }
    if cli.wants(Section::Soak) {
        // A server of its own, so the figures start from a cold process.
        let data = dir.join("soak");
        let token = process::prepare(&data);
        let server = process::parley_with(&data, &provider, soak::ENV);
        out.push_str(&soak::run(&server, &token, cli.soak_clients, cli.soak_secs).await.section());
    }
    if cli.wants(Section::Cluster) {
        match (&cli.postgres, &cli.redis) {
            (Some(postgres), Some(redis)) => {
                let services =
                    cluster::Services { postgres: postgres.clone(), redis: redis.clone() };
                let (runs, pace, chunks) = (cli.runs, cli.pace_ms, cli.paced_chunks);
                let data = dir.join("cluster");
                let section = cluster::section(
                    &data, &parley, &token, &services, &provider, runs, pace, chunks,
                )
                .await;
                out.push_str(&section);
            }
            _ => {
                writeln!(out, "\n## Cluster\n\nNot measured: needs `--postgres` and `--redis`.")
                    .ok();
            }
        }
    }
    drop(parley);
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Throughput, latency and CPU per chunk with the provider streaming as fast as it can.
async fn streaming(
    cli: &Cli,
    parley: &process::Server,
    relay: &process::Server,
    token: &str,
) -> String {
    let mut out = String::new();
    writeln!(out, "\n## Streaming relay ({} chunks per answer)\n", cli.chunks).ok();
    writeln!(out, "| sessions | server | chunks/s | ratio to relay | p50 latency | p99 latency | CPU per chunk | CPU ratio |").ok();
    writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|").ok();
    let streams = Streams { parley, relay, token, runs: cli.runs };
    for (n, &sessions) in cli.sessions.iter().enumerate() {
        let id = format!("s{}", n * 100);
        let relay_fig = streams.medians(Target::Relay, sessions, &id, "go").await;
        let parley_fig = streams.medians(Target::Parley, sessions, &id, "go").await;
        writeln!(
            out,
            "| {sessions} | relay | {:.0} | 1.00 | {:.0} µs | {:.0} µs | {:.2} µs | 1.00 |",
            relay_fig.rate, relay_fig.p50, relay_fig.p99, relay_fig.cpu
        )
        .ok();
        writeln!(
            out,
            "| {sessions} | parley | {:.0} | {:.2} | {:.0} µs (+{:.0}) | {:.0} µs (+{:.0}) | {:.2} µs | {:.2} |",
            parley_fig.rate,
            parley_fig.rate / relay_fig.rate,
            parley_fig.p50,
            parley_fig.p50 - relay_fig.p50,
            parley_fig.p99,
            parley_fig.p99 - relay_fig.p99,
            parley_fig.cpu,
            parley_fig.cpu / relay_fig.cpu.max(0.001),
        )
        .ok();
    }
    out
}

/// How long a message takes to become a model request, one turn at a time on an idle
/// server: Parley's turn start (admission, its commit, the history read) against the
/// relay's forwarding alone.
async fn turn_start(parley: &process::Server, relay: &process::Server, token: &str) -> String {
    const SESSIONS: usize = 20;
    const TURNS: usize = 10;
    let mut out = String::new();
    writeln!(out, "\n## Turn start (a message until its model request arrives)\n").ok();
    writeln!(
        out,
        "{SESSIONS} sessions one after another each send {TURNS} messages one after another; \
         each is stamped as the client sends it, and the fake provider notes when the model \
         request arrives. Parley's figure includes the turn's admission, its commit, the \
         history read and the request's larger body (system prompt, tools, history).\n"
    )
    .ok();
    writeln!(out, "| figure | relay | parley | added |\n|---|---:|---:|---:|").ok();
    const METRIC: &str = "parley_turn_start_seconds";
    let mut relay_starts = measure::turn_starts(relay, Target::Relay, token, SESSIONS, TURNS).await;
    let before = measure::scrape(parley, token, METRIC).await;
    let mut parley_starts =
        measure::turn_starts(parley, Target::Parley, token, SESSIONS, TURNS).await;
    let (mean, median) = measure::scrape(parley, token, METRIC).await.since(&before);
    relay_starts.sort_unstable();
    parley_starts.sort_unstable();
    for (name, p) in [("median", 0.5), ("p99", 0.99)] {
        let r = percentile(&relay_starts, p) as f64 / 1e3;
        let q = percentile(&parley_starts, p) as f64 / 1e3;
        writeln!(out, "| {name} | {r:.0} µs | {q:.0} µs | {:.0} µs |", q - r).ok();
    }
    writeln!(
        out,
        "\nIn the server (`{METRIC}`: a turn taken off its session's queue until its first \
         model call): mean {:.0} µs, median ≤ {:.0} µs (the upper bound of its histogram \
         bucket).",
        mean * 1e6,
        median * 1e6
    )
    .ok();
    out
}

/// Memory per idle authenticated WebSocket, and the time to accept one.
async fn connections(cli: &Cli, parley: &process::Server, token: &str) -> String {
    let mut out = String::new();
    let (per_connection, accept) = measure::idle_connections(parley, cli.connections, token).await;
    writeln!(out, "\n## Connections\n").ok();
    writeln!(out, "| figure | value | target |\n|---|---:|---|").ok();
    writeln!(
        out,
        "| memory per idle authenticated WebSocket ({} open) | {:.1} KiB | < 20 KiB |",
        cli.connections,
        per_connection as f64 / 1024.0
    )
    .ok();
    writeln!(
        out,
        "| time to accept one (100 connecting at a time) | {:.2} ms | milliseconds |",
        accept.as_secs_f64() * 1e3
    )
    .ok();
    out
}

/// A turn with two tool calls, as the client sees it and as the server reports it.
async fn round_trip(parley: &process::Server, token: &str) -> String {
    let mut out = String::new();
    let (round_trip, in_server) = measure::agent_round_trip(parley, token, 50).await;
    writeln!(out, "\n## Agent round trip (two tool calls, zero-latency provider)\n").ok();
    writeln!(out, "| figure | value |\n|---|---:|").ok();
    writeln!(
        out,
        "| turn, as the client sees it (median of 50) | {:.2} ms |",
        round_trip.as_secs_f64() * 1e3
    )
    .ok();
    writeln!(out, "| turn, as the server reports it | {:.2} ms |", in_server.as_secs_f64() * 1e3)
        .ok();
    out
}

/// History appends and page reads, SQLite in process.
async fn history_table(dir: &std::path::Path, marks: &[u64]) -> String {
    let mut out = String::new();
    let history = history::measure(dir, marks).await;
    writeln!(out, "\n## History (SQLite, in process)\n").ok();
    writeln!(out, "| figure | value |\n|---|---:|").ok();
    for (mark, latency) in &history.appends {
        writeln!(out, "| append at message {mark} | {:.0} µs |", us(*latency)).ok();
    }
    if let (Some(first), Some(last)) = (history.appends.first(), history.appends.last()) {
        writeln!(
            out,
            "| last / first (target ≤ 2) | {:.2} |",
            last.1.as_secs_f64() / first.1.as_secs_f64()
        )
        .ok();
    }
    writeln!(
        out,
        "| newest page of 100 at 10 000 messages | {:.2} ms |",
        history.open_page.as_secs_f64() * 1e3
    )
    .ok();
    writeln!(
        out,
        "| page 1 of 10 000 sessions | {:.2} ms |",
        history.list_page.as_secs_f64() * 1e3
    )
    .ok();
    out
}

/// Medians over a table row's runs.
#[derive(Clone, Copy)]
struct Figures {
    /// Chunks delivered per second.
    rate: f64,
    /// Latency percentiles, µs.
    p50: f64,
    p99: f64,
    /// CPU time per chunk, µs.
    cpu: f64,
}

/// The two servers a streaming table compares.
struct Streams<'a> {
    parley: &'a process::Server,
    relay: &'a process::Server,
    token: &'a str,
    runs: usize,
}

impl Streams<'_> {
    /// `sessions` clients stream one answer each, asking with `content`, `runs` times.
    async fn medians(&self, target: Target, sessions: usize, id: &str, content: &str) -> Figures {
        let server = if target == Target::Relay { self.relay } else { self.parley };
        let (mut rate, mut p50, mut p99, mut cpu) = (vec![], vec![], vec![], vec![]);
        for run in 0..self.runs {
            let id = format!("{id}-{run}");
            let mut result =
                measure::stream(server, target, sessions, &id, self.token, content).await;
            result.latencies.sort_unstable();
            rate.push(result.chunks as f64 / result.elapsed.as_secs_f64());
            p50.push(percentile(&result.latencies, 0.5) as f64 / 1e3);
            p99.push(percentile(&result.latencies, 0.99) as f64 / 1e3);
            cpu.push(us(result.cpu) / result.chunks.max(1) as f64);
        }
        Figures { rate: median(rate), p50: median(p50), p99: median(p99), cpu: median(cpu) }
    }
}

/// Latency at a model's pace: every session's provider sends a chunk every `pace_ms`
/// (phases spread), so the figures are the path's cost rather than a backlog's.
async fn paced(
    cli: &Cli,
    parley: &process::Server,
    relay: &process::Server,
    token: &str,
) -> String {
    let mut out = String::new();
    let content = format!("pace {} {}", cli.pace_ms, cli.paced_chunks);
    writeln!(
        out,
        "\n## Latency at a model's pace ({} chunks per answer, one every {} ms)\n",
        cli.paced_chunks, cli.pace_ms
    )
    .ok();
    writeln!(out, "Provider chunk sent → client received. Added = Parley − relay, same run.\n")
        .ok();
    writeln!(out, "| sessions | chunks/s | relay p50 | relay p99 | parley p50 | parley p99 | added p50 | added p99 | CPU ratio |").ok();
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|").ok();
    let streams = Streams { parley, relay, token, runs: cli.runs };
    for (n, &sessions) in cli.paced_sessions.iter().enumerate() {
        let id = format!("p{}", n * 100);
        let r = streams.medians(Target::Relay, sessions, &id, &content).await;
        let p = streams.medians(Target::Parley, sessions, &id, &content).await;
        writeln!(
            out,
            "| {sessions} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.2} |",
            p.rate,
            r.p50,
            r.p99,
            p.p50,
            p.p99,
            p.p50 - r.p50,
            p.p99 - r.p99,
            p.cpu / r.cpu.max(0.001)
        )
        .ok();
    }
    out
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("parley-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn header(cli: &Cli) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0))
        })
        .unwrap_or(0);
    let date = parley::clock::rfc3339(parley::clock::now_ms());
    format!(
        "# Benchmarks\n\nMachine: {cpu}, {cores} cores, {:.0} GiB. Date: {}. Command: \
         `cargo run --release --bin parley-bench -- --out docs/BENCHMARKS.md` \
         (medians of {} runs; every ratio is measured in the same run). The relay is the \
         physical limit: accept a WebSocket, stream one upstream completion, forward each \
         delta, nothing else. Latency is provider chunk sent → client received, on one \
         machine, with the provider streaming as fast as the path takes it.\n",
        mem as f64 / 1048576.0,
        &date[..10],
        cli.runs
    )
}
