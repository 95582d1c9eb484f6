//! The weights download against the test harness's local Hugging Face hub (real HTTP on
//! loopback): resume after a cut connection, corruption caught by the hash, a gated repository,
//! files in place verified rather than trusted, and the runtime process downloading, reporting
//! progress, then serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, greedy_chat, scratch};
use kaito_e2e::hub::{Fault, Hub, HubRepo};
use kaito_runtime::download::{DownloadError, Downloader, HubSource, Progress, RetryPolicy};
use kaito_runtime::testmodel::{self, Arch, ModelSpec};

const REPO: &str = "kaito-test/tiny-llama";
const TOKEN: &str = "hf_kaito_test_token";

/// A generated tiny model served as `REPO` (gated with `token`).
fn hub_with_tiny_model(token: Option<&str>) -> (Hub, std::path::PathBuf) {
    let src = scratch("hub-src").join("model");
    testmodel::write_model(&src, &ModelSpec::tiny(Arch::Llama, common::SEED)).unwrap();
    let hub = Hub::start(vec![HubRepo::from_dir(REPO, &src, token).unwrap()]).unwrap();
    (hub, src)
}

fn source(hub: &Hub, token: Option<&str>) -> HubSource {
    HubSource {
        endpoint: hub.endpoint(),
        repo: REPO.into(),
        revision: "main".into(),
        token: token.map(str::to_string),
        gguf_file: None,
    }
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    }
}

async fn download(
    hub: &Hub,
    token: Option<&str>,
    dest: &Path,
) -> (
    Result<kaito_runtime::download::Downloaded, DownloadError>,
    Progress,
) {
    let progress = Progress::default();
    let d = Downloader::new(source(hub, token), fast_retries(), progress.clone()).unwrap();
    (d.download(dest).await, progress)
}

fn same_files(a: &Path, b: &Path, names: &[&str]) {
    for name in names {
        assert_eq!(
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
            "{name} differs"
        );
    }
}

/// What the downloader takes of the generated model (not `special_tokens_map.json`).
const MODEL_FILES: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "model.safetensors",
];

#[tokio::test]
async fn a_cut_connection_resumes_with_range() {
    let (hub, src) = hub_with_tiny_model(None);
    let size = std::fs::metadata(src.join("model.safetensors"))
        .unwrap()
        .len();
    let cut = size / 3;
    hub.inject("model.safetensors", Fault::CutAfter(cut));
    let dest = scratch("dl-resume");
    let (result, progress) = download(&hub, None, &dest).await;
    let done = result.expect("the download completes after the cut");
    same_files(&src, &dest, &MODEL_FILES);
    assert!(
        !dest.join(".partial").exists(),
        "partial files are cleaned up"
    );
    let sha = hub.repo(REPO).unwrap().files["model.safetensors"]
        .sha256
        .clone();
    let gets: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == format!("/lfs/{sha}"))
        .collect();
    assert_eq!(gets.len(), 2, "one cut transfer and one resumed: {gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(
        gets[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_eq!(gets[1].status, 206);
    assert_eq!(progress.retries.get(), 1);
    assert_eq!(progress.done.get(), progress.total.get());
    let total: u64 = MODEL_FILES
        .iter()
        .map(|f| std::fs::metadata(src.join(f)).unwrap().len())
        .sum();
    assert_eq!(u64::try_from(progress.total.get()).unwrap(), total);
    assert_eq!(done.fetched_bytes, total, "nothing fetched twice");
    assert_eq!(done.commit, hub.repo(REPO).unwrap().commit);
    assert_eq!(done.files, MODEL_FILES);
    assert!(!dest.join("special_tokens_map.json").exists());
}

#[tokio::test]
async fn corruption_is_caught_by_the_hash() {
    let (hub, src) = hub_with_tiny_model(None);
    // Once: detected, downloaded again, in place and correct.
    hub.inject("model.safetensors", Fault::Corrupt(1));
    let dest = scratch("dl-corrupt-once");
    let (result, _) = download(&hub, None, &dest).await;
    result.expect("the second transfer is good");
    same_files(&src, &dest, &MODEL_FILES);
    // Every time: a clear error, and nothing corrupt left in place.
    hub.inject("model.safetensors", Fault::Corrupt(10));
    let dest = scratch("dl-corrupt-always");
    let (result, _) = download(&hub, None, &dest).await;
    let err = result.expect_err("bad data must not be accepted");
    assert_eq!(err.reason(), "ModelDownloadFailed");
    let text = err.to_string();
    assert!(
        text.starts_with("model.safetensors: sha256 ") && text.contains("the hub says"),
        "{text}"
    );
    assert!(!dest.join("model.safetensors").exists());
}

#[tokio::test]
async fn a_gated_repository_needs_its_token() {
    let (hub, src) = hub_with_tiny_model(Some(TOKEN));
    let dest = scratch("dl-gated");
    let (result, _) = download(&hub, None, &dest).await;
    let err = result.expect_err("no token");
    assert_eq!(err.reason(), "ModelDownloadUnauthorized");
    assert_eq!(
        err.to_string(),
        format!(
            "the hub answered 401 for {REPO}: the repository is gated or private and HF_TOKEN is not set"
        )
    );
    let (result, _) = download(&hub, Some("hf_wrong"), &dest).await;
    let err = result.expect_err("wrong token");
    assert!(err.to_string().contains("answered 403"), "{err}");
    assert!(err.to_string().contains("has no access"), "{err}");
    let (result, _) = download(&hub, Some(TOKEN), &dest).await;
    result.expect("the right token");
    same_files(&src, &dest, &MODEL_FILES);
}

#[tokio::test]
async fn files_in_place_are_verified_not_trusted() {
    let (hub, src) = hub_with_tiny_model(None);
    let dest = scratch("dl-cache");
    download(&hub, None, &dest).await.0.expect("first download");
    let lfs_gets = |hub: &Hub| {
        hub.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/lfs/"))
            .count()
    };
    assert_eq!(lfs_gets(&hub), 1);
    // A cache hit: verified, nothing fetched.
    let (result, progress) = download(&hub, None, &dest).await;
    let hit = result.expect("cache hit");
    assert_eq!(hit.fetched_bytes, 0);
    assert_eq!(progress.done.get(), progress.total.get());
    assert_eq!(lfs_gets(&hub), 1, "no weights fetched on a verified hit");
    // Same size, one byte changed: found by the hash and fetched again.
    let weights = dest.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&weights, &bytes).unwrap();
    let (result, _) = download(&hub, None, &dest).await;
    let again = result.expect("repaired");
    assert_eq!(again.fetched_bytes, bytes.len() as u64);
    assert_eq!(lfs_gets(&hub), 2);
    same_files(&src, &dest, &MODEL_FILES);
    // A config edited in place (a git file: checked by its blob sha1) is fetched again too.
    std::fs::write(dest.join("config.json"), b"{}").unwrap();
    download(&hub, None, &dest)
        .await
        .0
        .expect("repaired config");
    same_files(&src, &dest, &MODEL_FILES);
}

#[tokio::test]
async fn a_revision_the_hub_does_not_have_is_not_found() {
    let (hub, _) = hub_with_tiny_model(None);
    let mut src = source(&hub, None);
    src.revision = "0".repeat(40);
    let d = Downloader::new(src, fast_retries(), Progress::default()).unwrap();
    let err = d
        .download(&scratch("dl-404"))
        .await
        .expect_err("no such revision");
    assert_eq!(err.reason(), "ModelNotFound");
    assert!(
        err.to_string().contains("was not found on the hub"),
        "{err}"
    );
}

async fn get_text(client: &reqwest::Client, url: String) -> (u16, String) {
    let r = client.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_runtime_downloads_reports_progress_then_serves() {
    let (hub, _) = hub_with_tiny_model(None);
    hub.inject("model.safetensors", Fault::Stall(Duration::from_secs(3)));
    let weights = scratch("rt-weights");
    let endpoint = hub.endpoint();
    let mut server = Server::start(
        &weights,
        &["--model-repo", REPO, "--model-revision", "main"],
        &[("HF_ENDPOINT", endpoint.as_str())],
    );
    let client = reqwest::Client::new();
    // While the hub stalls: alive, not ready, the download visible in /metrics.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = get_text(&client, server.url("/health")).await;
        assert_eq!(code, 503, "{body}");
        if body.contains("Downloading") {
            let metrics = get_text(&client, server.url("/metrics")).await.1;
            if metric(&metrics, "kaito_runtime_model_download_size_bytes") > 0.0 {
                assert_eq!(get_text(&client, server.url("/healthz")).await.0, 200);
                break;
            }
        }
        assert!(Instant::now() < deadline, "never saw the download: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.wait_ready(Duration::from_secs(60)).await;
    let metrics = get_text(&client, server.url("/metrics")).await.1;
    let size = metric(&metrics, "kaito_runtime_model_download_size_bytes");
    assert_eq!(metric(&metrics, "kaito_runtime_model_download_bytes"), size);
    let r = client
        .post(server.url("/chat"))
        .json(&greedy_chat("hello", 4))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A restart finds the weights in place, verifies them and fetches nothing.
    drop(server);
    let before = hub.requests().len();
    let mut again = Server::start(
        &weights,
        &["--model-repo", REPO],
        &[("HF_ENDPOINT", endpoint.as_str())],
    );
    again.wait_ready(Duration::from_secs(60)).await;
    let fetched: Vec<_> = hub.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/lfs/"))
        .cloned()
        .collect();
    assert!(
        fetched.is_empty(),
        "a verified cache is not fetched again: {fetched:?}"
    );
}

#[test]
fn a_refused_download_ends_the_runtime_with_the_reason_for_kubernetes() {
    let (hub, _) = hub_with_tiny_model(Some(TOKEN));
    let dir = scratch("rt-gated");
    let log = dir.join("termination-log");
    std::fs::write(&log, "").unwrap();
    let endpoint = hub.endpoint();
    let mut server = Server::start(
        &dir.join("weights"),
        &[
            "--model-repo",
            REPO,
            "--termination-log",
            log.to_str().unwrap(),
        ],
        &[("HF_ENDPOINT", endpoint.as_str())],
    );
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let message = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        message,
        format!(
            "ModelDownloadUnauthorized: downloading the weights failed: the hub answered 401 for \
             {REPO}: the repository is gated or private and HF_TOKEN is not set"
        )
    );
}
