//! The client's address behind reverse proxies. The forwarding header name the client only
//! when the connection comes from a trusted proxy (`trusted_proxies`); otherwise anyone
//! could pick the address their requests are limited and locked out by. Only the one header
//! the proxy writes (`forwarded_header`: `X-Forwarded-For` by default, or `Forwarded`) is
//! read: a proxy that appends to one passes a client's forged other one through untouched.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// One entry of `trusted_proxies`: an address, or a network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.0.0.0/8`, `192.168.1.7`, `::1` or `fd00::/8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("trusted_proxies: {text:?} is not an address or a network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("trusted_proxies: bad prefix length in {text:?}"))?,
        };
        Ok(Self { addr, prefix })
    }

    /// Whether this network is every address (`0.0.0.0/0`, `::/0`).
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Which forwarding header the trusted proxies write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, ...`
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`
    Forwarded,
}

impl ForwardedHeader {
    /// `x-forwarded-for` or `forwarded` (any case).
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            other => Err(format!(
                "forwarded_header must be \"x-forwarded-for\" or \"forwarded\", not {other:?}"
            )),
        }
    }
}

/// The proxies whose forwarding header is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<Network>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Parses the configured entries; an entry that does not parse is an error.
    pub fn parse<S: AsRef<str>>(entries: &[S], header: ForwardedHeader) -> Result<Self, String> {
        let networks = entries
            .iter()
            .map(|e| e.as_ref())
            .filter(|e| !e.trim().is_empty())
            .map(Network::parse)
            .collect::<Result<_, _>>()?;
        Ok(Self { networks, header })
    }

    /// Whether every address is trusted, so that any client can name its own address.
    pub fn trusts_everyone(&self) -> bool {
        self.networks.iter().any(Network::is_everything)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the
    /// rightmost hop of the configured header that is not itself a trusted proxy. A hop
    /// that cannot be read (or a header line that is not text) stops the walk: the last
    /// address known for certain is used.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded_hops(headers, self.header);
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = hop else { return client };
            client = canonical(*ip);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// The hops named by the header (`Forwarded`'s `for=` parameters, or the
/// `X-Forwarded-For` list), leftmost first, all lines of it joined; `None` for a hop that
/// is not an address (`unknown`, `_hidden`, junk).
fn forwarded_hops(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    let joined = values.join(",");
    if values.is_empty() {
        return Vec::new();
    }
    match header {
        ForwardedHeader::XForwardedFor => joined.split(',').map(node_address).collect(),
        ForwardedHeader::Forwarded => joined
            .split(',')
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    key.trim().eq_ignore_ascii_case("for").then(|| node_address(value))
                })?
            })
            .collect(),
    }
}

/// The address of a node as written in forwarding headers: `1.2.3.4`, `1.2.3.4:80`,
/// `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn node_address(value: &str) -> Option<IpAddr> {
    let value = value.trim().trim_matches('"');
    if let Ok(ip) = value.parse() {
        return Some(ip);
    }
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    value.rsplit_once(':').and_then(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().ok()).map(Into::into)
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_match_by_prefix() {
        let net = Network::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        assert!(Network::parse("::1").unwrap().contains(ip("::1")));
        assert!(Network::parse("fd00::/8").unwrap().contains(ip("fd12::5")));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("proxy.local").is_err());
    }

    #[test]
    fn headers_are_ignored_unless_the_peer_is_trusted() {
        let none = TrustedProxies::default();
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(none.client(ip("9.9.9.9"), &spoofed), ip("9.9.9.9"));
        let trusted =
            TrustedProxies::parse(&["127.0.0.1"], ForwardedHeader::XForwardedFor).unwrap();
        assert_eq!(trusted.client(ip("9.9.9.9"), &spoofed), ip("9.9.9.9"));
        assert_eq!(trusted.client(ip("127.0.0.1"), &spoofed), ip("1.2.3.4"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted =
            TrustedProxies::parse(&["10.0.0.0/8", "127.0.0.1"], ForwardedHeader::XForwardedFor)
                .unwrap();
        // The client forged the first entry; the proxies appended the rest.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 5.5.5.5, 10.0.0.2")]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &chain), ip("5.5.5.5"));
        // Every hop trusted: the leftmost one.
        let inner = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.2")]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &inner), ip("10.0.0.7"));
        // Several header lines read as one list.
        let lines = headers(&[("x-forwarded-for", "5.5.5.5"), ("x-forwarded-for", "10.0.0.2")]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &lines), ip("5.5.5.5"));
        // An unreadable hop: the last address known for certain.
        let junk = headers(&[("x-forwarded-for", "5.5.5.5, garbage")]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &junk), ip("127.0.0.1"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let xff = TrustedProxies::parse(&["127.0.0.1"], ForwardedHeader::XForwardedFor).unwrap();
        let rfc = TrustedProxies::parse(&["127.0.0.1"], ForwardedHeader::Forwarded).unwrap();
        // The proxy appended to one header; the client forged the other.
        let both = headers(&[
            ("forwarded", "for=192.0.2.60;proto=https, for=\"[2001:db8:cafe::17]:4711\""),
            ("x-forwarded-for", "7.7.7.7"),
        ]);
        assert_eq!(xff.client(ip("127.0.0.1"), &both), ip("7.7.7.7"));
        assert_eq!(rfc.client(ip("127.0.0.1"), &both), ip("2001:db8:cafe::17"));
        let port = headers(&[("forwarded", "For=198.51.100.17:8080")]);
        assert_eq!(rfc.client(ip("127.0.0.1"), &port), ip("198.51.100.17"));
        assert_eq!(xff.client(ip("127.0.0.1"), &port), ip("127.0.0.1"));
        let hidden = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(rfc.client(ip("127.0.0.1"), &hidden), ip("127.0.0.1"));
        let none = headers(&[]);
        assert_eq!(rfc.client(ip("127.0.0.1"), &none), ip("127.0.0.1"));
        assert!(ForwardedHeader::parse("X-Real-IP").is_err());
        let open = TrustedProxies::parse(&["0.0.0.0/0"], ForwardedHeader::default()).unwrap();
        assert!(open.trusts_everyone() && !xff.trusts_everyone());
    }
}
