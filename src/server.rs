//! Start-up and shutdown: builds the application from the configuration and serves it on
//! a listener the caller bound (so tests bind port 0).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::auth::Auth;
use crate::bus::{self, RedisBusConfig};
use crate::config::Config;
use crate::http::{AppState, Connections, router, serve};
use crate::metrics::Metrics;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::tools::Registry;
use crate::tools::mcp::McpServers;
use crate::{providers, store};

/// Opens the store, builds the provider, tools, bus and runtime, and takes over the
/// sessions a crash left unfinished.
pub async fn build(config: Config) -> anyhow::Result<AppState> {
    let store = store::open(&config.database_url())
        .await
        .with_context(|| format!("opening the store {}", config.redacted_database_url()))?;
    let node_id: Arc<str> = config.node_id().into();
    let bus_config = RedisBusConfig {
        node: node_id.to_string(),
        prefix: config.redis_prefix.clone(),
        stream_len: config.sessions.event_log_capacity.max(16),
        // Well past idle eviction: a session loaded on its owner keeps its stream.
        stream_ttl: Duration::from_secs_f64(config.sessions.idle_evict_secs.max(0.0) * 2.0)
            .max(Duration::from_secs(3600)),
    };
    let bus = bus::open(config.redis_url.as_deref(), bus_config)
        .await
        .with_context(|| format!("connecting to the bus {}", config.redacted_redis_url()))?;
    let metrics = Arc::new(Metrics::new());
    let models = Arc::new(providers::Models::build(&config, &metrics).map_err(anyhow::Error::msg)?);
    let budgets = config.budget.monthly > 0.0 || config.budget.users.values().any(|b| *b > 0.0);
    if budgets && models.configured() {
        for route in models.routes().iter().filter(|r| r.price.is_none()) {
            tracing::warn!(model = %route.id, "this model has no prices: its turns count nothing against budgets");
        }
    }
    std::fs::create_dir_all(config.workspace_root())
        .with_context(|| format!("creating {}", config.workspace_root().display()))?;
    let tools = Arc::new(
        Registry::new(&config.tools, config.workspace_root()).map_err(anyhow::Error::msg)?,
    );
    let mcp = McpServers::start(&config.mcp, tools.clone(), config.data_dir.clone());
    let metrics_allow = config.metrics.networks().map_err(anyhow::Error::msg)?.into();
    let agent = Agent {
        models: models.clone(),
        tools,
        metrics: metrics.clone(),
        max_iterations: config.agent.max_iterations.max(1),
        flush_every: Duration::from_millis(config.sessions.partial_flush_ms.max(10)),
    };
    let runtime = Runtime::new(
        store,
        bus,
        agent,
        RuntimeConfig {
            node_id: node_id.clone(),
            queue_depth: config.sessions.queue_depth.max(1),
            event_log_capacity: config.sessions.event_log_capacity,
            max_content_bytes: config.limits.max_content_bytes,
            turns_per_minute: config.limits.turns_per_minute,
            max_concurrent_turns: config.limits.max_concurrent_turns,
            system_prompt: config.agent.system_prompt.clone(),
            budget: config.budget.clone(),
            page_hints: config.agent.page_hints.clone(),
            approval_timeout: Duration::try_from_secs_f64(config.tools.approval_timeout_secs)
                .unwrap_or(Duration::from_secs(120)),
            lease: Duration::try_from_secs_f64(config.lease_secs)
                .unwrap_or(Duration::from_secs(15))
                .max(Duration::from_secs(1)),
            // No cluster bus: this node is the only one.
            exclusive: config.redis_url.is_none(),
        },
    );
    // What the last stop left unfinished: interrupted turns are marked, queued ones run.
    let adopted = runtime.adopt_orphans().await.context("taking over unfinished sessions")?;
    if adopted > 0 {
        tracing::warn!(sessions = adopted, "took over sessions the last stop left unfinished");
    }
    let auth = Arc::new(Auth::new(&config, runtime.store().clone(), runtime.bus()));
    let connections = Arc::new(Connections::shared(
        config.limits.max_connections,
        config.limits.max_connections_per_user,
        Some((runtime.bus().clone(), node_id.to_string())),
    ));
    tokio::spawn(Connections::keep_listed(Arc::downgrade(&connections)));
    Ok(AppState {
        runtime,
        provider: models.describe().into(),
        provider_configured: models.configured(),
        config: Arc::new(config),
        started: Instant::now(),
        shutdown: CancellationToken::new(),
        auth,
        connections,
        node_id,
        agui_runs: Default::default(),
        mcp,
        agent_metrics: metrics,
        metrics_allow,
    })
}

/// Serves `state` on `listener` until `shutdown` resolves, then lets running turns finish
/// for the configured grace period and interrupts the rest.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        node = %state.node_id,
        store = %redacted_store(&state.config),
        bus = state.runtime.bus().describe(),
        provider = %state.provider,
        "listening on http://{addr}"
    );
    warn_if_exposed(&state.config);
    if let Err(err) = offer_pairing(&state).await {
        tracing::error!(%err, "creating a pairing code failed");
    }
    let runtime = state.runtime.clone();
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let header_timeout = Duration::from_secs(state.config.limits.header_read_timeout_secs.max(1));
    let stop = state.shutdown.clone();
    let mcp = state.mcp.clone();
    let background = [
        tokio::spawn(auto_prune(state.clone())),
        tokio::spawn(evict_idle(state.clone())),
        tokio::spawn(state.auth.clone().watch_revocations(stop.clone())),
    ];
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        // WebSockets and SSE streams end on this; their turns run on.
        signal.cancel();
    });
    let turns = async {
        stop.cancelled().await;
        tracing::info!("shutting down: waiting for running turns");
        runtime.shutdown(grace).await;
    };
    // Turns wind down while connections drain: a client waiting on `POST /api/chat` gets
    // its answer (or the interrupted partial) before its connection closes.
    tokio::join!(serve(listener, router(state), header_timeout, stop.clone()), turns);
    background.iter().for_each(|task| task.abort());
    // After the turns, which may still have been calling their tools.
    mcp.stop(Duration::from_secs(10)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Warns when the server is reachable from other machines over plain HTTP.
fn warn_if_exposed(config: &Config) {
    if config.trusted_proxies().is_ok_and(|proxies| proxies.trusts_everyone()) {
        tracing::warn!(
            "trusted_proxies trusts every address: any client can name the address it is \
             limited and locked out by; list only your proxies"
        );
    }
    if !config.listen.ip().is_loopback() && !config.auth.tls_terminated {
        tracing::warn!(
            "listening on a public address without TLS: put a TLS-terminating proxy in front \
             and set auth.tls_terminated = true"
        );
    }
}

/// On a server with no tokens yet, prints a one-time pairing code to the console (never
/// to the log).
async fn offer_pairing(state: &AppState) -> anyhow::Result<()> {
    if !state.config.auth_enabled() || state.runtime.store().active_tokens().await? > 0 {
        return Ok(());
    }
    // The first client paired with a fresh server is its owner.
    let grant = crate::store::PairingGrant { user: None, admin: true };
    let code = crate::auth::new_pairing_code(state.runtime.store().as_ref(), &grant).await?;
    eprintln!(
        "\nNo API tokens yet. Pair a client within the hour with this one-time code:\n\n    {code}\n\n\
         (POST /api/pair {{\"code\": \"{code}\"}}, or sign in to the web chat with it), or create a token \
         with `parley token create --user NAME`.\n"
    );
    Ok(())
}

fn redacted_store(config: &Config) -> String {
    let url = config.database_url();
    match url.split_once("://") {
        Some(("sqlite", path)) => format!("sqlite {path}"),
        Some((scheme, _)) => scheme.to_owned(),
        None => url,
    }
}

/// Prunes sessions past `sessions.max_sessions` / `sessions.ttl_hours`, at most hourly.
async fn auto_prune(state: AppState) {
    let config = &state.config.sessions;
    if config.max_sessions == 0 && config.ttl_hours == 0 {
        return;
    }
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        match state.runtime.prune(None, config.max_sessions, config.ttl_hours).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned old sessions"),
            Err(err) => tracing::error!(%err, "pruning sessions failed"),
        }
    }
}

/// Drops idle, unwatched sessions from memory, so it stays bounded by what is in use.
async fn evict_idle(state: AppState) {
    let idle = Duration::try_from_secs_f64(state.config.sessions.idle_evict_secs)
        .unwrap_or(Duration::from_secs(600));
    let mut sweep =
        tokio::time::interval((idle / 2).clamp(Duration::from_millis(20), Duration::from_secs(60)));
    loop {
        sweep.tick().await;
        let evicted = state.runtime.evict_idle(idle).await;
        if evicted > 0 {
            tracing::debug!(evicted, "dropped idle sessions from memory");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::error!(%err, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
