//! The tuning Job's data fetcher: downloads training data into a directory.
//!
//! Safety at fetch time (admission already checked the URL's text):
//! * only `http`/`https`, and host names that are not this machine or a metadata service;
//! * the host is resolved here and refused when ANY address is loopback, private, link-local,
//!   unspecified, multicast, carrier-grade NAT or reserved, also in IPv4-mapped/embedded forms;
//! * the connection goes to the checked addresses only (the client's resolver is pinned);
//! * redirects are followed by hand (at most [`MAX_REDIRECTS`]), each hop checked the same way;
//! * a size limit is enforced from Content-Length and again while streaming;
//! * data goes to a temporary file renamed into place when complete.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kaito_api::admission::{UrlPolicy, check_download_url};
use tokio::io::AsyncWriteExt;
use url::{Host, Url};

/// Redirects followed per download.
pub const MAX_REDIRECTS: usize = 5;
/// The default `--max-bytes`: 10 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// How to fetch.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Where files go (`--output`).
    pub output: PathBuf,
    /// The most bytes one file may have (`--max-bytes`).
    pub max_bytes: u64,
    /// Permit 127.0.0.1 and ::1 (tests only; never private or metadata addresses).
    pub allow_loopback: bool,
    /// TESTS ONLY: this one address may be reached whatever its kind (a test cluster's data
    /// server on a private address); `--test-only-allow-address`.
    pub test_only_allow_address: Option<IpAddr>,
    /// Retries after the first attempt on transient errors.
    pub retries: u32,
    /// The first retry's wait; doubled for each further one.
    pub backoff: Duration,
    /// Connect timeout for each attempt.
    pub connect_timeout: Duration,
    /// Longest wait for any read.
    pub read_timeout: Duration,
    /// Longest the whole fetch (every URL, retries included) may take (`--deadline-secs`): a
    /// server that trickles bytes cannot hold the tuning Job for ever.
    pub deadline: Duration,
}

/// Default overall deadline of a fetch: two hours.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(2 * 3600);

impl FetchOptions {
    /// Production defaults for `output`.
    pub fn new(output: impl Into<PathBuf>) -> Self {
        Self {
            output: output.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            allow_loopback: false,
            test_only_allow_address: None,
            retries: 3,
            backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            deadline: DEFAULT_DEADLINE,
        }
    }
}

/// Why a URL could not be fetched.
#[derive(Debug, thiserror::Error)]
#[error("fetch {url}: {cause}")]
pub struct FetchError {
    /// The URL as given.
    pub url: String,
    /// What went wrong, and the fix where there is one.
    pub cause: String,
    /// Whether another attempt may succeed (connect errors, 5xx, 429).
    pub transient: bool,
}

fn permanent(url: &str, cause: impl Into<String>) -> FetchError {
    FetchError {
        url: url.to_string(),
        cause: cause.into(),
        transient: false,
    }
}

fn transient(url: &str, cause: impl Into<String>) -> FetchError {
    FetchError {
        url: url.to_string(),
        cause: cause.into(),
        transient: true,
    }
}

const PRIVATE: &str = "a private address";
const CGNAT: &str = "a carrier-grade NAT address";
const LOOPBACK: &str = "a loopback address";

/// Why a registry at `ip` may not be dialled, if it may not. Registries are often private (in
/// the cluster, or behind a private endpoint), so private, carrier-grade NAT and loopback
/// addresses pass; cloud metadata, link-local, unspecified, multicast and reserved addresses,
/// where no registry is, are refused.
pub fn registry_blocked_reason(ip: IpAddr) -> Option<&'static str> {
    blocked_reason(ip, true).filter(|r| ![PRIVATE, CGNAT, LOOPBACK].contains(r))
}

/// Why `ip` may not be reached, if it may not. With `allow_loopback`, 127.0.0.1 and ::1 (and
/// ::ffff:127.0.0.1) pass; nothing else changes.
pub fn blocked_reason(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4, allow_loopback),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_reason(v4, allow_loopback);
            }
            if v6 == Ipv6Addr::LOCALHOST {
                return (!allow_loopback).then_some(LOOPBACK);
            }
            if let Some(v4) = embedded_v4(v6) {
                // NAT64, 6to4 and IPv4-compatible forms reach the embedded IPv4 address.
                return v4_reason(v4, false);
            }
            v6_reason(v6)
        }
    }
}

/// The IPv4 address inside the IPv6 forms that carry one to the network: IPv4-compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`) and 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    let compatible = s[..6] == [0, 0, 0, 0, 0, 0] && ip != Ipv6Addr::UNSPECIFIED;
    let nat64 =
        s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1);
    if compatible || nat64 {
        Some(low(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(low(s[1], s[2]))
    } else {
        None
    }
}

fn v4_reason(ip: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        (!(allow_loopback && ip == Ipv4Addr::LOCALHOST)).then_some(LOOPBACK)
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(168, 63, 129, 16) {
        Some("a cloud metadata address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_private() {
        Some(PRIVATE)
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some(CGNAT)
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("an unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_broadcast()
        || o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || ip.is_documentation()
    {
        Some("a reserved address")
    } else {
        None
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if s[..4] == [0xfd00, 0x0ec2, 0, 0] {
        Some("a cloud metadata address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if ip.is_loopback() {
        Some(LOOPBACK)
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
        Some(PRIVATE)
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("a reserved address")
    } else {
        None
    }
}

/// Checks the URL's text, resolves its host and checks every address. Returns the host name to
/// pin (None for IP literals) and the checked socket addresses.
async fn resolve_checked(
    raw: &str,
    url: &Url,
    opts: &FetchOptions,
) -> Result<(Option<String>, Vec<SocketAddr>), FetchError> {
    let allow_loopback = opts.allow_loopback;
    let policy = match opts.test_only_allow_address {
        Some(ip) => UrlPolicy::TestOnlyAllowAddress(ip),
        None if allow_loopback => UrlPolicy::AllowLoopback,
        None => UrlPolicy::PublicOnly,
    };
    check_download_url(url.as_str(), policy)
        .map_err(|e| permanent(raw, format!("refused: {e}")))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| permanent(raw, "the URL has no port and no known default"))?;
    let (domain, addrs) = match url.host() {
        None => return Err(permanent(raw, "refused: the URL has no host")),
        Some(Host::Ipv4(ip)) => (None, vec![SocketAddr::new(IpAddr::V4(ip), port)]),
        Some(Host::Ipv6(ip)) => (None, vec![SocketAddr::new(IpAddr::V6(ip), port)]),
        Some(Host::Domain(d)) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((d, port))
                .await
                .map_err(|e| transient(raw, format!("cannot resolve host {d}: {e}")))?
                .collect();
            if addrs.is_empty() {
                return Err(transient(raw, format!("host {d} resolves to no address")));
            }
            (Some(d.to_string()), addrs)
        }
    };
    for addr in &addrs {
        if Some(addr.ip()) == opts.test_only_allow_address {
            continue;
        }
        if let Some(reason) = blocked_reason(addr.ip(), allow_loopback) {
            let host = url.host_str().unwrap_or_default();
            return Err(permanent(
                raw,
                format!(
                    "refused: host {host} resolves to {} which is {reason}; training data must \
                     come from a public http(s) URL",
                    addr.ip()
                ),
            ));
        }
    }
    Ok((domain, addrs))
}

/// The local file name for `url`: its path's last segment with anything but ASCII letters,
/// digits, `.`, `-` and `_` replaced, no leading dots, at most 200 characters.
pub fn file_name_for(url: &Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    let cleaned: String = cleaned.chars().take(200).collect();
    if cleaned.is_empty() {
        "download".to_string()
    } else {
        cleaned
    }
}

/// Removes the temporary file unless the download completed.
struct PartGuard {
    path: PathBuf,
    keep: bool,
}

impl Drop for PartGuard {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Downloads every URL into `opts.output`, in order; stops at the first failure.
pub async fn fetch_all(urls: &[String], opts: &FetchOptions) -> Result<Vec<PathBuf>, FetchError> {
    crate::install_crypto_provider();
    let mut planned: Vec<(String, Url, PathBuf)> = Vec::new();
    for raw in urls {
        let url = Url::parse(raw).map_err(|e| {
            permanent(
                raw,
                format!("not a valid URL ({e}); write e.g. https://host/path/data.parquet"),
            )
        })?;
        let mut name = file_name_for(&url);
        if planned
            .iter()
            .any(|(_, _, p)| p.file_name() == Some(std::ffi::OsStr::new(&name)))
        {
            name = format!("{}-{name}", planned.len() + 1);
        }
        planned.push((raw.clone(), url, opts.output.join(name)));
    }
    tokio::fs::create_dir_all(&opts.output).await.map_err(|e| {
        permanent(
            urls.first().map(String::as_str).unwrap_or_default(),
            format!("--output {}: cannot create it ({e})", opts.output.display()),
        )
    })?;
    let first = planned.first().map(|(raw, _, _)| raw.clone());
    match tokio::time::timeout(opts.deadline, fetch_planned(planned, opts)).await {
        Ok(result) => result,
        Err(_) => Err(permanent(
            first.as_deref().unwrap_or_default(),
            format!(
                "the download did not finish within --deadline-secs {} (partial files removed); \
                 raise it for a large or slow source, or check the server",
                opts.deadline.as_secs()
            ),
        )),
    }
}

/// Downloads each planned URL in turn, retrying transient errors.
async fn fetch_planned(
    planned: Vec<(String, Url, PathBuf)>,
    opts: &FetchOptions,
) -> Result<Vec<PathBuf>, FetchError> {
    let mut done = Vec::new();
    for (raw, url, dest) in planned {
        let mut attempt = 0;
        loop {
            match fetch_once(&raw, &url, &dest, opts).await {
                Ok(bytes) => {
                    tracing::info!(url = %raw, file = %dest.display(), bytes, "downloaded");
                    done.push(dest);
                    break;
                }
                Err(e) if e.transient && attempt < opts.retries => {
                    let wait = opts.backoff.saturating_mul(2u32.saturating_pow(attempt));
                    attempt += 1;
                    tracing::warn!(
                        url = %raw, cause = %e.cause, attempt, retries = opts.retries,
                        wait_ms = wait.as_millis() as u64, "transient error, retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(done)
}

fn status_error(raw: &str, status: reqwest::StatusCode, at: &Url) -> FetchError {
    let cause = format!("{at} answered HTTP {status}");
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        transient(raw, cause)
    } else {
        permanent(
            raw,
            format!("{cause}; check that the URL is right and public"),
        )
    }
}

fn request_error(raw: &str, e: &reqwest::Error) -> FetchError {
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause.push_str(&format!(": {s}"));
        source = s.source();
    }
    // Connect, timeout and body errors may pass; anything else (a bad request) will not.
    if e.is_connect() || e.is_timeout() || e.is_body() || e.is_request() || e.is_decode() {
        transient(raw, cause)
    } else {
        permanent(raw, cause)
    }
}

/// One attempt: follows redirects by hand and streams the body into a temporary file next to
/// `dest`. Returns the bytes written.
async fn fetch_once(
    raw: &str,
    start: &Url,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<u64, FetchError> {
    let mut url = start.clone();
    let mut hops = 0;
    let mut response = loop {
        let (domain, addrs) = resolve_checked(raw, &url, opts).await?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .user_agent(concat!("kaito-adapter/", env!("CARGO_PKG_VERSION")));
        if let Some(domain) = &domain {
            builder = builder.resolve_to_addrs(domain, &addrs);
        }
        let client = builder
            .build()
            .map_err(|e| permanent(raw, format!("cannot build the HTTP client: {e}")))?;
        let response = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| request_error(raw, &e))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| {
                    permanent(raw, format!("{url} answered {status} with no Location"))
                })?;
            let next = url.join(location).map_err(|e| {
                permanent(
                    raw,
                    format!("{url} redirects to an invalid URL {location:?} ({e})"),
                )
            })?;
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(permanent(
                    raw,
                    format!("more than {MAX_REDIRECTS} redirects (last to {next})"),
                ));
            }
            tracing::info!(url = %raw, from = %url, to = %next, "following redirect");
            url = next;
            continue;
        }
        if !status.is_success() {
            return Err(status_error(raw, status, &url));
        }
        break response;
    };

    let total = response.content_length();
    if let Some(len) = total.filter(|len| *len > opts.max_bytes) {
        return Err(permanent(
            raw,
            format!(
                "the body is {len} bytes (Content-Length), over --max-bytes {}; raise --max-bytes \
                 or use a smaller file",
                opts.max_bytes
            ),
        ));
    }
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let part = dest.with_file_name(format!(".{file_name}.part"));
    let mut guard = PartGuard {
        path: part.clone(),
        keep: false,
    };
    let mut file = tokio::fs::File::create(&part)
        .await
        .map_err(|e| permanent(raw, format!("cannot create {}: {e}", part.display())))?;
    tracing::info!(url = %raw, file = %dest.display(), bytes = ?total, "downloading");
    let mut written: u64 = 0;
    let mut last_log = Instant::now();
    while let Some(chunk) = response.chunk().await.map_err(|e| request_error(raw, &e))? {
        written = written.saturating_add(chunk.len() as u64);
        if written > opts.max_bytes {
            return Err(permanent(
                raw,
                format!(
                    "the body exceeds --max-bytes {}; raise --max-bytes or use a smaller file",
                    opts.max_bytes
                ),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| permanent(raw, format!("cannot write {}: {e}", part.display())))?;
        if last_log.elapsed() >= Duration::from_secs(2) {
            last_log = Instant::now();
            match total {
                Some(t) if t > 0 => tracing::info!(
                    url = %raw, bytes = written, total = t,
                    percent = written.saturating_mul(100) / t, "progress"
                ),
                _ => tracing::info!(url = %raw, bytes = written, "progress"),
            }
        }
    }
    if let Some(t) = total.filter(|t| *t != written) {
        return Err(transient(
            raw,
            format!("the body ended after {written} of {t} bytes"),
        ));
    }
    file.flush()
        .await
        .and(file.sync_all().await)
        .map_err(|e| permanent(raw, format!("cannot write {}: {e}", part.display())))?;
    drop(file);
    tokio::fs::rename(&part, dest).await.map_err(|e| {
        permanent(
            raw,
            format!(
                "cannot rename {} to {}: {e}",
                part.display(),
                dest.display()
            ),
        )
    })?;
    guard.keep = true;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn private_and_special_addresses_are_blocked_in_every_form() {
        for bad in [
            "127.0.0.1",
            "127.0.0.2",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(
                blocked_reason(ip(bad), false).is_some(),
                "{bad} must be blocked"
            );
        }
        for good in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "100.128.0.1"] {
            assert_eq!(blocked_reason(ip(good), false), None, "{good} is public");
        }
    }

    #[test]
    fn registries_may_be_private_but_never_at_metadata_or_link_local_addresses() {
        for ok in [
            "10.0.0.4",
            "192.168.1.2",
            "100.64.0.1",
            "127.0.0.1",
            "::1",
            "fd12::1",
            "8.8.8.8",
        ] {
            let ip: IpAddr = ok.parse().expect("ip");
            assert_eq!(registry_blocked_reason(ip), None, "{ok}");
        }
        for (bad, why) in [
            ("169.254.169.254", "a cloud metadata address"),
            ("::ffff:169.254.169.254", "a cloud metadata address"),
            ("168.63.129.16", "a cloud metadata address"),
            ("fd00:ec2::254", "a cloud metadata address"),
            ("169.254.10.1", "a link-local address"),
            ("fe80::1", "a link-local address"),
            ("0.0.0.0", "an unspecified address"),
            ("224.0.0.1", "a multicast address"),
        ] {
            let ip: IpAddr = bad.parse().expect("ip");
            assert_eq!(registry_blocked_reason(ip), Some(why), "{bad}");
        }
    }

    #[test]
    fn allow_loopback_permits_only_the_two_loopback_addresses() {
        for ok in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(blocked_reason(ip(ok), true), None, "{ok}");
        }
        for bad in [
            "127.0.0.2",
            "10.0.0.1",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fd00::1",
        ] {
            assert!(blocked_reason(ip(bad), true).is_some(), "{bad}");
        }
    }

    #[test]
    fn file_names_are_sanitized() {
        let name = |u: &str| file_name_for(&Url::parse(u).expect("url"));
        assert_eq!(name("https://h/a/b/train.parquet?x=1"), "train.parquet");
        assert_eq!(
            name("https://h/a/..%2F..%2Fetc%2Fpasswd"),
            "_2F.._2Fetc_2Fpasswd"
        );
        assert_eq!(name("https://h/"), "download");
        assert_eq!(name("https://h/.."), "download");
        assert_eq!(name("https://h/..hidden"), "hidden");
        assert_eq!(name("https://h/a%20b.csv"), "a_20b.csv");
    }
}
