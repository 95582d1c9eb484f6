//! Which URLs tuning input may be downloaded from. The same check runs at admission and,
//! again after DNS resolution and redirects, in the data fetcher.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Which destinations a download may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlPolicy {
    /// Only public addresses (the default, always in production).
    PublicOnly,
    /// Loopback is allowed too: for tests that serve data from 127.0.0.1 only.
    AllowLoopback,
    /// This one address is allowed too, whatever its kind: for a test cluster whose data server
    /// sits on a private address (the local cluster's node bridge). Set only by the hidden
    /// `--test-only-allow-data-address` settings; never in production.
    TestOnlyAllowAddress(IpAddr),
}

/// Host names that always mean "this machine" or a cloud's metadata service.
const BLOCKED_HOSTS: [&str; 4] = [
    "localhost",
    "metadata",
    "metadata.google.internal",
    "metadata.azure.internal",
];

/// Checks that `raw` is an http(s) URL with a host that is not loopback, private,
/// link-local or a cloud metadata endpoint. The message says what is wrong.
pub fn check_download_url(raw: &str, policy: UrlPolicy) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| {
        format!("{raw:?} is not a valid URL ({e}); write e.g. https://host/path/data.parquet")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {:?} is not allowed; use an http or https URL",
            url.scheme()
        ));
    }
    match url.host() {
        None => Err(format!("{raw:?} has no host")),
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            let local = d == "localhost" || d.ends_with(".localhost");
            if local && policy == UrlPolicy::AllowLoopback {
                return Ok(url);
            }
            if BLOCKED_HOSTS.contains(&d.as_str()) || local {
                return Err(format!(
                    "host {d} points at this machine or a metadata service; use a public URL"
                ));
            }
            Ok(url)
        }
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), policy).map(|()| url),
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), policy).map(|()| url),
    }
}

/// Why `ip` may not be reached, if it may not.
pub fn blocked_ip_reason(ip: IpAddr, policy: UrlPolicy) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if policy == UrlPolicy::TestOnlyAllowAddress(ip) {
        return None;
    }
    if ip.is_loopback() {
        return (policy != UrlPolicy::AllowLoopback).then_some("a loopback address");
    }
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(168, 63, 129, 16) {
        Some("a cloud metadata address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
        Some("a private address")
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || o[0] == 0 {
        Some("not a routable address")
    } else {
        None
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if seg[..4] == [0xfd00, 0x0ec2, 0, 0] {
        Some("a cloud metadata address")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("a private address")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("not a routable address")
    } else {
        None
    }
}

fn check_ip(ip: IpAddr, policy: UrlPolicy) -> Result<(), String> {
    match blocked_ip_reason(ip, policy) {
        Some(reason) => Err(format!(
            "{ip} is {reason}; training data must come from a public URL"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_https_urls_pass() {
        let seed = "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/train-00000-of-00001-54e3756291ca09c6.parquet?download=true";
        assert!(check_download_url(seed, UrlPolicy::PublicOnly).is_ok());
        assert!(check_download_url("http://8.8.8.8/data.csv", UrlPolicy::PublicOnly).is_ok());
    }

    #[test]
    fn local_private_link_local_and_metadata_targets_are_refused() {
        for bad in [
            "http://169.254.169.254/latest/meta-data",
            "http://localhost/x",
            "http://LOCALHOST./x",
            "http://api.localhost/x",
            "http://127.0.0.1/x",
            "http://2130706433/x",
            "http://0x7f000001/x",
            "http://10.0.0.1/x",
            "http://172.16.3.4/x",
            "http://192.168.1.1/x",
            "http://100.64.0.1/x",
            "http://168.63.129.16/x",
            "http://[::1]/x",
            "http://[::ffff:10.0.0.1]/x",
            "http://[fe80::1]/x",
            "http://[fd00:ec2::254]/x",
            "http://0.0.0.0/x",
            "http://metadata.google.internal/x",
        ] {
            assert!(
                check_download_url(bad, UrlPolicy::PublicOnly).is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn only_http_and_https_with_a_host() {
        for bad in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "example.com/x",
            "https://",
        ] {
            assert!(
                check_download_url(bad, UrlPolicy::PublicOnly).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn test_policy_allows_loopback_but_still_refuses_private_and_metadata() {
        assert!(check_download_url("http://127.0.0.1:8080/x", UrlPolicy::AllowLoopback).is_ok());
        assert!(check_download_url("http://localhost:8080/x", UrlPolicy::AllowLoopback).is_ok());
        assert!(check_download_url("http://10.0.0.1/x", UrlPolicy::AllowLoopback).is_err());
        assert!(check_download_url("http://169.254.169.254/x", UrlPolicy::AllowLoopback).is_err());
    }

    #[test]
    fn the_test_only_address_is_allowed_and_nothing_else() {
        let policy = UrlPolicy::TestOnlyAllowAddress("10.88.77.1".parse().expect("an IP address"));
        assert!(check_download_url("http://10.88.77.1:8080/train.parquet", policy).is_ok());
        for other in [
            "http://10.88.77.2/x",
            "http://127.0.0.1/x",
            "http://169.254.169.254/x",
            "http://localhost/x",
        ] {
            assert!(check_download_url(other, policy).is_err(), "{other}");
        }
        assert!(check_download_url("http://10.88.77.1/x", UrlPolicy::PublicOnly).is_err());
    }
}
