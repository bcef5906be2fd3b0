//! A TCP proxy a test can cut and restore, to take a database or Redis away for real.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards connections on `listen` to `upstream` until cut: then the listener closes and
/// every forwarded connection is dropped, as when the database host goes away.
pub async fn proxy(listen: SocketAddr, upstream: SocketAddr) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind(listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = CancellationToken::new();
    let stop = cut.clone();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
                () = stop.cancelled() => return,
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    });
    (addr, cut)
}

/// `url` with its `host:port` replaced by `addr`, and the `host:port` it had.
pub fn through(url: &str, addr: SocketAddr) -> (String, SocketAddr) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (creds, rest) = rest.rsplit_once('@').map_or(("", rest), |(c, r)| (c, r));
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let port = if scheme.starts_with("redis") { 6379 } else { 5432 };
    let host = if host.contains(':') { host.to_owned() } else { format!("{host}:{port}") };
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(&host).unwrap().next().unwrap();
    let at = if creds.is_empty() { String::new() } else { format!("{creds}@") };
    (format!("{scheme}://{at}{addr}/{path}"), upstream)
}
