//! Start-up and shutdown: builds the application from the configuration and serves it on
//! a listener the caller bound (so tests bind port 0).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicUsize;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Tickets;

use crate::agent::Agent;
use crate::bus::{Bus, LocalBus};
use crate::config::Config;
use crate::http::{AppState, router};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::tools::Registry;
use crate::{providers, store};

/// Events the bus buffers per topic for a slow watcher; one that falls further behind
/// catches up from its session's event log.
const BUS_CAPACITY: usize = 256;

/// Opens the store (recovering what a crash left running), builds the provider, tools,
/// bus and runtime.
pub async fn build(config: Config) -> anyhow::Result<AppState> {
    let url = config.database_url();
    let store = store::open(&url)
        .await
        .with_context(|| format!("opening the store {url}"))?;
    let recovery = store
        .recover()
        .await
        .context("recovering interrupted turns")?;
    if recovery != Default::default() {
        tracing::warn!(
            turns = recovery.turns,
            messages = recovery.messages,
            tool_calls = recovery.tool_calls,
            "marked work left running by the last stop as interrupted"
        );
    }
    if config.redis_url.is_some() {
        anyhow::bail!("PARLEY_REDIS_URL is set, but the Redis bus is not available yet; unset it");
    }
    let bus: Arc<dyn Bus> = Arc::new(LocalBus::new(BUS_CAPACITY));
    let provider = providers::build(&config.provider).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(config.workspace_root())
        .with_context(|| format!("creating {}", config.workspace_root().display()))?;
    let tools = Arc::new(
        Registry::new(&config.tools, config.workspace_root()).map_err(anyhow::Error::msg)?,
    );
    let agent = Agent {
        provider: provider.clone(),
        tools,
        max_iterations: config.agent.max_iterations.max(1),
        flush_every: Duration::from_millis(config.sessions.partial_flush_ms.max(10)),
    };
    let runtime = Runtime::new(
        store,
        bus,
        agent,
        RuntimeConfig {
            queue_depth: config.sessions.queue_depth.max(1),
            event_log_capacity: config.sessions.event_log_capacity,
            max_content_bytes: config.limits.max_content_bytes,
            system_prompt: config.agent.system_prompt.clone(),
            page_hints: config.agent.page_hints.clone(),
            approval_timeout: Duration::try_from_secs_f64(config.tools.approval_timeout_secs)
                .unwrap_or(Duration::from_secs(120)),
        },
    );
    Ok(AppState {
        runtime,
        provider: provider.describe().into(),
        provider_configured: config
            .provider
            .url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty()),
        config: Arc::new(config),
        started: Instant::now(),
        shutdown: CancellationToken::new(),
        tickets: Arc::new(Tickets::default()),
        connections: Arc::new(AtomicUsize::new(0)),
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
        store = %redacted_store(&state.config),
        bus = state.runtime.bus().describe(),
        provider = %state.provider,
        "listening on http://{addr}"
    );
    let runtime = state.runtime.clone();
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let prune = tokio::spawn(auto_prune(state.clone()));
    let connections = state.shutdown.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            // WebSockets and SSE streams end on this; their turns run on.
            connections.cancel();
        })
        .await
        .context("serving HTTP")?;
    prune.abort();
    tracing::info!("shutting down: waiting for running turns");
    runtime.shutdown(grace).await;
    tracing::info!("stopped");
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
        match state
            .runtime
            .prune(None, config.max_sessions, config.ttl_hours)
            .await
        {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned old sessions"),
            Err(err) => tracing::error!(%err, "pruning sessions failed"),
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
