//! Child processes under measurement: `parley serve` and the baseline relay, with their
//! CPU time, resident memory and open files read from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server process.
pub struct Server {
    child: Child,
    pub addr: String,
    /// From spawn to its `listening on` line.
    pub startup: Duration,
}

impl Server {
    /// Spawns `command` and waits for its `listening on ADDR` line.
    pub fn spawn(mut command: Command) -> Server {
        let started = Instant::now();
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("the server printed its address").expect("read");
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr.trim_start_matches("http://").to_owned();
            }
        };
        let startup = started.elapsed();
        // `PARLEY_BENCH_SERVER_LOG` (a log filter for the servers) shows what they log, to
        // profile a run (e.g. `sqlx::query=debug` counts the statements of a turn).
        let echo = std::env::var_os("PARLEY_BENCH_SERVER_LOG").is_some();
        std::thread::spawn(move || {
            // To the end (a read error means the pipe is gone): a server whose pipe filled
            // would stop.
            for line in lines.map_while(Result::ok) {
                if echo {
                    eprintln!("{line}");
                }
            }
        });
        Server { child, addr, startup }
    }

    /// CPU time so far, summed over the process's threads in nanoseconds (schedstat; the
    /// clock-tick figures of /proc/PID/stat are too coarse for short runs).
    pub fn cpu(&self) -> Duration {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return Duration::ZERO;
        };
        let nanos: u64 = tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|stat| stat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
            .sum();
        Duration::from_nanos(nanos)
    }

    /// Resident memory in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }

    /// Open file descriptors.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `parley` binary next to this one.
pub fn parley_exe() -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    me.with_file_name("parley")
}

/// A fresh data folder with a token; returns the token.
pub fn prepare(data: &Path) -> String {
    let output = Command::new(parley_exe())
        .args(["token", "create", "--user", "bench", "--admin"])
        .env("PARLEY_DATA_DIR", data)
        .output()
        .expect("parley token create");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `parley serve` on a free port, tuned to let the benchmark load through.
pub fn parley(data: &Path, provider: &str) -> Server {
    parley_with(data, provider, &[])
}

/// [`parley`] with more environment.
pub fn parley_with(data: &Path, provider: &str, env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(parley_exe());
    command
        .arg("serve")
        .env("PARLEY_LISTEN", "127.0.0.1:0")
        .env("PARLEY_DATA_DIR", data)
        .env("PARLEY_PROVIDER_URL", provider)
        .env("PARLEY_LOG", server_log())
        .env("PARLEY_LIMITS__TURNS_PER_MINUTE", "0")
        .env("PARLEY_LIMITS__REQUESTS_PER_MINUTE_PER_TOKEN", "0")
        .env("PARLEY_LIMITS__REQUESTS_PER_MINUTE_PER_IP", "0")
        .env("PARLEY_LIMITS__MAX_CONNECTIONS", "100000")
        .env("PARLEY_LIMITS__MAX_CONNECTIONS_PER_USER", "100000")
        .env("PARLEY_LIMITS__MAX_CONCURRENT_TURNS", "0")
        .envs(env.iter().copied());
    Server::spawn(command)
}

/// The servers' log filter: what the bench needs, and `PARLEY_BENCH_SERVER_LOG`'s.
pub fn server_log() -> String {
    let extra = std::env::var("PARLEY_BENCH_SERVER_LOG").unwrap_or_default();
    format!("warn,parley::server=info,{extra}").trim_end_matches(',').to_owned()
}

/// The baseline relay, as a child process of this binary.
pub fn relay(provider: &str) -> Server {
    let mut command = Command::new(std::env::current_exe().expect("current exe"));
    command.args(["relay", "--provider", provider]);
    Server::spawn(command)
}
