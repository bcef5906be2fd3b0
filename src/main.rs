//! The `parley` command: argument parsing and start-up, nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use parley::auth::tokens;
use parley::clock::rfc3339;
use parley::config::Config;
use parley::store::{AuditEntry, PairingGrant, Store};

#[derive(Parser)]
#[command(name = "parley", version, about = "A self-hosted gateway for AI agents")]
struct Cli {
    /// Configuration file (missing is fine).
    #[arg(long, global = true, default_value = "parley.toml", env = "PARLEY_CONFIG")]
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
    /// Chat with the agent of a running server from this terminal.
    Chat(ChatArgs),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// The MCP servers of the configuration.
    Mcp {
        #[command(subcommand)]
        action: McpAction,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Move an installation's data between stores.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Print a fresh one-time pairing code (valid for an hour). Without `--user` it creates
    /// a new user; with it, it pairs a new device of that user.
    Pair {
        /// Pair a new device of this user.
        #[arg(long)]
        user: Option<String>,
        /// Make the paired token an admin token (needs `--user`).
        #[arg(long, requires = "user")]
        admin: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
}

/// The arguments of `parley chat`.
#[derive(Args)]
struct ChatArgs {
    /// The server's address.
    #[arg(long, env = "PARLEY_URL", default_value = "http://127.0.0.1:8787")]
    url: String,
    /// The token to use. Prefer the PARLEY_TOKEN variable: other users of this machine can
    /// read a command line.
    #[arg(long, env = "PARLEY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Continue this session (or start one under this id).
    #[arg(long)]
    session: Option<String>,
    /// The model to answer with (one of the server's).
    #[arg(long)]
    model: Option<String>,
}

#[derive(Subcommand)]
enum McpAction {
    /// Start each configured server, print its state and its tools, and stop it.
    List,
}

#[derive(Subcommand)]
enum StoreAction {
    /// Copy every user, token, session, message, turn, tool call, pairing code and audit
    /// entry of one store into another (`sqlite://PATH`, `postgres://…`), keys kept. Stop
    /// the servers using them first.
    Copy {
        /// The store to read.
        #[arg(long)]
        from: String,
        /// The store to fill; it must be empty unless `--replace`.
        #[arg(long)]
        to: String,
        /// Delete everything in the target first.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token and print it (it is shown only this once).
    Create {
        /// The user the token acts as.
        #[arg(long)]
        user: String,
        /// Let the token list every session, prune and manage tokens.
        #[arg(long)]
        admin: bool,
        /// A note to recognise the token by.
        #[arg(long)]
        label: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id; open connections using it are closed.
    Revoke { id: String },
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
    fn load(self, file: &std::path::Path) -> anyhow::Result<Config> {
        let map: BTreeMap<String, String> = [
            ("listen", self.listen),
            ("data_dir", self.data_dir),
            ("database_url", self.database_url),
            ("provider.url", self.provider_url),
            ("provider.model", self.model),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?)))
        .collect();
        let (config, warnings) = Config::load(file, &map).context("reading the configuration")?;
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `serve` logs to stdout as it always has; the other commands print their result there
    // (a token, a pairing code, the configuration), so their log lines (such as a warning
    // about an unknown PARLEY_* variable) go to stderr, where they cannot be mistaken for it.
    let logs_to_stdout = matches!(cli.command, Command::Serve(_));
    let ansi = if logs_to_stdout {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
    } else {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PARLEY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmcp=warn")),
        )
        .with_ansi(ansi)
        .with_writer(move || -> Box<dyn std::io::Write> {
            if logs_to_stdout { Box::new(std::io::stdout()) } else { Box::new(std::io::stderr()) }
        })
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Config(overrides) => {
            print!("{}", overrides.load(&cli.config)?.redacted_toml());
            Ok(())
        }
        Command::Serve(overrides) => runtime.block_on(serve(overrides.load(&cli.config)?)),
        Command::Chat(args) => {
            let options = parley::client::ChatOptions {
                url: args.url,
                token: args.token,
                session: args.session,
                model: args.model,
            };
            let result = runtime.block_on(parley::client::run(options));
            // The thread reading standard input may be blocked in a read: leave without
            // waiting for it.
            runtime.shutdown_background();
            result.map_err(|err| match err {
                parley::client::ClientError::Unauthorized { .. } => anyhow::anyhow!(
                    "{err}: set PARLEY_TOKEN (or pass --token) to a token of this server \
                     (`parley token create --user NAME` makes one)"
                ),
                other => other.into(),
            })
        }
        Command::Token { action, overrides } => {
            runtime.block_on(token(action, overrides.load(&cli.config)?))
        }
        Command::Mcp { action: McpAction::List, overrides } => {
            runtime.block_on(mcp_list(overrides.load(&cli.config)?))
        }
        Command::Store { action: StoreAction::Copy { from, to, replace } } => {
            runtime.block_on(copy_store(&from, &to, replace))
        }
        Command::Pair { user, admin, overrides } => runtime.block_on(async {
            if user.as_deref().is_some_and(|user| !tokens::valid_user(user)) {
                anyhow::bail!("user names are 1-64 characters of A-Z a-z 0-9 . _ -");
            }
            let store = open_store(&overrides.load(&cli.config)?).await?;
            // On a server nobody can use yet, the code makes its owner (an admin).
            let admin = admin || (user.is_none() && store.active_tokens().await? == 0);
            let grant = PairingGrant { user, admin };
            let code = parley::auth::new_pairing_code(store.as_ref(), &grant).await?;
            let detail =
                format!("for {} (command line)", grant.user.as_deref().unwrap_or("a new user"));
            store
                .audit(&AuditEntry {
                    at: parley::clock::now_ms(),
                    kind: "pairing_code_created".into(),
                    user: None,
                    ip: None,
                    detail: Some(detail),
                })
                .await?;
            println!("{code}");
            Ok(())
        }),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let state = parley::server::build(config).await?;
    parley::server::run(listener, state, parley::server::shutdown_signal()).await
}

async fn open_store(config: &Config) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    parley::store::open(&config.database_url())
        .await
        .with_context(|| format!("opening the store {}", config.redacted_database_url()))
}

async fn token(action: TokenAction, config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let audit = |kind: &str, user: &str, id: &str| AuditEntry {
        at: parley::clock::now_ms(),
        kind: kind.to_owned(),
        user: Some(user.to_owned()),
        ip: None,
        detail: Some(format!("{id} (command line)")),
    };
    match action {
        TokenAction::Create { user, admin, label } => {
            if !tokens::valid_user(&user) {
                anyhow::bail!("user names are 1-64 characters of A-Z a-z 0-9 . _ -");
            }
            let (record, secret) = tokens::issue(store.as_ref(), &user, admin, label.as_deref())
                .await
                .context("creating the token")?;
            store.audit(&audit("token_created", &user, &record.id)).await?;
            println!("{secret}");
        }
        TokenAction::List => {
            for token in store.list_tokens().await? {
                println!(
                    "{}\t{}\t{}\t{}\tcreated {}\t{}",
                    token.id,
                    token.user,
                    if token.admin { "admin" } else { "user" },
                    token.label.as_deref().unwrap_or("-"),
                    rfc3339(token.created_at),
                    token
                        .revoked_at
                        .map_or("active".to_owned(), |at| format!("revoked {}", rfc3339(at))),
                );
            }
        }
        TokenAction::Revoke { id } => {
            let record = store.revoke_token(&id).await.map_err(|err| match err {
                parley::store::StoreError::NotFound => anyhow::anyhow!("no active token {id}"),
                other => other.into(),
            })?;
            store.audit(&audit("token_revoked", &record.user, &record.id)).await?;
            println!("revoked {} ({})", record.id, record.user);
        }
    }
    Ok(())
}

async fn mcp_list(config: Config) -> anyhow::Result<()> {
    if config.mcp.servers.is_empty() {
        println!("no MCP servers configured ([mcp.servers.NAME] in parley.toml)");
        return Ok(());
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let (listing, all_running) =
        parley::tools::mcp::describe(&config).await.map_err(anyhow::Error::msg)?;
    print!("{listing}");
    if !all_running {
        anyhow::bail!("some MCP servers are not running");
    }
    Ok(())
}

async fn copy_store(from: &str, to: &str, replace: bool) -> anyhow::Result<()> {
    use parley::config::redact_url;
    use parley::store::copy;
    let source = copy::open_tables(from, true)
        .await
        .with_context(|| format!("opening the store {}", redact_url(from)))?;
    let target = copy::open_tables(to, false)
        .await
        .with_context(|| format!("opening the store {}", redact_url(to)))?;
    let copied = copy::copy(source.as_ref(), target.as_ref(), replace)
        .await
        .with_context(|| format!("copying {} to {}", redact_url(from), redact_url(to)))?;
    for (table, rows) in copied {
        println!("{table}\t{rows}");
    }
    Ok(())
}
