//! The `parley` command: argument parsing and start-up, nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use parley::config::Config;

#[derive(Parser)]
#[command(
    name = "parley",
    version,
    about = "A self-hosted gateway for AI agents"
)]
struct Cli {
    /// Configuration file (missing is fine).
    #[arg(
        long,
        global = true,
        default_value = "parley.toml",
        env = "PARLEY_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web chat, WebSocket, SSE and REST APIs.
    Serve(Overrides),
    /// Print the effective configuration with secrets redacted.
    Config(Overrides),
}

/// Flags that override the file and the environment.
#[derive(Args)]
struct Overrides {
    /// Address to bind (port 0 picks a free one).
    #[arg(long)]
    listen: Option<String>,
    /// Data folder.
    #[arg(long)]
    data_dir: Option<String>,
    /// `sqlite://PATH`.
    #[arg(long)]
    database_url: Option<String>,
    /// Provider base URL including `/v1`.
    #[arg(long)]
    provider_url: Option<String>,
    /// Model name sent upstream.
    #[arg(long)]
    model: Option<String>,
}

impl Overrides {
    fn into_map(self) -> BTreeMap<String, String> {
        [
            ("listen", self.listen),
            ("data_dir", self.data_dir),
            ("database_url", self.database_url),
            ("provider.url", self.provider_url),
            ("provider.model", self.model),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?)))
        .collect()
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PARLEY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match cli.command {
        Command::Config(overrides) => {
            let config = Config::load(&cli.config, &overrides.into_map())
                .context("reading the configuration")?;
            print!("{}", config.redacted_toml());
            Ok(())
        }
        Command::Serve(overrides) => {
            let config = Config::load(&cli.config, &overrides.into_map())
                .context("reading the configuration")?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if !config.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {}: authentication is not implemented yet, so Parley only \
             binds loopback addresses (e.g. 127.0.0.1:8787)",
            config.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let state = parley::server::build(config).await?;
    parley::server::run(listener, state, parley::server::shutdown_signal()).await
}
