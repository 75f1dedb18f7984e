//! User-supplied destinations (a CRM endpoint): HTTPS only, and never a private, loopback,
//! link-local or otherwise internal address, checked after DNS resolution, unless the host is
//! allow-listed by `INTEGRATION_ALLOWED_PRIVATE_HOSTS`. Checked at connect time and again
//! before each delivery (the name may resolve elsewhere by then); the client follows no
//! redirects, so an endpoint cannot bounce a delivery inward.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("must be an absolute https URL")]
    NotHttps,
    #[error("the host does not resolve")]
    Unresolvable,
    #[error("the host resolves to a private, loopback or link-local address ({0})")]
    Internal(IpAddr),
}

/// Whether an address is internal (not reachable on the public internet, or the machine
/// itself).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // carrier-grade NAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240
}

/// Checks `url`: https (or an allow-listed host), and every address it resolves to public
/// (or the host allow-listed).
pub async fn check(url: &url::Url, allowed_hosts: &[String]) -> Result<(), DestinationError> {
    let host = url.host_str().ok_or(DestinationError::NotHttps)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let allowed = allowed_hosts
        .iter()
        .any(|h| h.trim().eq_ignore_ascii_case(bare));
    if url.scheme() != "https" && !(allowed && url.scheme() == "http") {
        return Err(DestinationError::NotHttps);
    }
    if allowed {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| DestinationError::Unresolvable)?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(DestinationError::Unresolvable);
    }
    match addrs.into_iter().find(|ip| is_internal(*ip)) {
        Some(ip) => Err(DestinationError::Internal(ip)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_and_plain_http_are_refused_unless_allow_listed() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            check(&u("http://example.com/x"), &[]).await,
            Err(DestinationError::NotHttps)
        );
        assert!(matches!(
            check(&u("https://127.0.0.1:9/x"), &[]).await,
            Err(DestinationError::Internal(_))
        ));
        assert!(matches!(
            check(&u("https://[::1]:9/x"), &[]).await,
            Err(DestinationError::Internal(_))
        ));
        assert!(matches!(
            check(&u("https://localhost:9/x"), &[]).await,
            Err(DestinationError::Internal(_))
        ));
        assert_eq!(
            check(&u("http://127.0.0.1:9/x"), &["127.0.0.1".into()]).await,
            Ok(())
        );
    }
}
