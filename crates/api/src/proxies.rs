//! The client's address behind reverse proxies: `X-Forwarded-For` is believed only as far as it
//! was written by proxies the operator trusts, so a client cannot forge its address to dodge
//! the per-address limits.

use std::{fmt, net::IpAddr, str::FromStr};

/// The proxies whose `X-Forwarded-For` entries are believed: addresses and CIDR ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

/// A trusted-proxy list entry is not an IP address or CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an IP address or CIDR range: {0:?}")]
pub struct TrustedProxiesError(String);

impl FromStr for TrustedProxies {
    type Err = TrustedProxiesError;

    /// Parses a comma-separated list such as `10.0.0.0/8, 127.0.0.1, fd00::/8`.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let invalid = || TrustedProxiesError(entry.to_owned());
                let (address, bits) = match entry.split_once('/') {
                    Some((address, bits)) => (address, Some(bits)),
                    None => (entry, None),
                };
                let address: IpAddr = address.parse().map_err(|_| invalid())?;
                let max = if address.is_ipv4() { 32 } else { 128 };
                let bits = match bits {
                    Some(bits) => bits.parse::<u8>().map_err(|_| invalid())?,
                    None => max,
                };
                if bits > max {
                    return Err(invalid());
                }
                Ok((address, bits))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|(ip, bits)| format!("{ip}/{bits}"))
            .collect();
        f.write_str(&entries.join(", "))
    }
}

fn bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl TrustedProxies {
    /// Whether no proxy is trusted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|(network, prefix)| {
            let width: u32 = if network.is_ipv4() { 32 } else { 128 };
            if network.is_ipv4() != address.is_ipv4() {
                return false;
            }
            let shift = width - u32::from(*prefix);
            let (a, b) = (bits(address), bits(*network));
            shift >= width || (a >> shift) == (b >> shift)
        })
    }

    /// The client's address: the TCP peer, or, when the peer is a trusted proxy, the rightmost
    /// `X-Forwarded-For` entry that is not itself a trusted proxy. Entries left of the first
    /// untrusted one were written by whoever sent the request, so they are never believed.
    #[must_use]
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let mut client = peer;
        let entries = forwarded_for.iter().flat_map(|header| header.split(','));
        let entries: Vec<&str> = entries.map(str::trim).collect();
        for entry in entries.iter().rev() {
            if !self.trusts(client) {
                break;
            }
            match entry.parse::<IpAddr>() {
                Ok(address) => client = address,
                // Garbage from a client: stop at the last hop a trusted proxy vouched for.
                Err(_) => break,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lists_of_addresses_and_ranges_parse() {
        let proxies: TrustedProxies = " 10.0.0.0/8, 127.0.0.1 ,fd00::/8".parse().unwrap();
        assert_eq!(proxies.to_string(), "10.0.0.0/8, 127.0.0.1/32, fd00::/8");
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.1/x", "::1/129"] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("203.0.113.9"), &["198.51.100.1"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_entry_it_added_is_the_client() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        // The client forged "1.2.3.4"; the proxy appended the real peer it saw.
        let header = ["1.2.3.4, 198.51.100.7"];
        assert_eq!(proxies.client(ip("10.1.2.3"), &header), ip("198.51.100.7"));
    }

    #[test]
    fn chains_of_trusted_proxies_are_walked_from_the_right() {
        let proxies: TrustedProxies = "10.0.0.0/8, 192.0.2.10".parse().unwrap();
        let headers = ["1.2.3.4, 198.51.100.7", "192.0.2.10"];
        assert_eq!(proxies.client(ip("10.0.0.1"), &headers), ip("198.51.100.7"));
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            proxies.client(ip("203.0.113.9"), &["10.0.0.5, 1.2.3.4"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_vouched_hop() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            proxies.client(ip("10.0.0.1"), &["not-an-ip"]),
            ip("10.0.0.1")
        );
        assert_eq!(proxies.client(ip("10.0.0.1"), &[]), ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        let proxies: TrustedProxies = "127.0.0.1".parse().unwrap();
        assert_eq!(
            proxies.client(ip("::ffff:127.0.0.1"), &["198.51.100.7"]),
            ip("198.51.100.7")
        );
    }
}
