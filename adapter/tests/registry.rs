//! publish and pull against a real OCI registry (Debian's docker-registry, distribution 2.8)
//! on loopback with htpasswd (bcrypt) basic auth over plain http.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kaito_adapter::registry::{RegistryOptions, publish, pull};

const USER: &str = "kaito";
const PASSWORD: &str = "tr4in-me";

/// The registry binary, or None (after printing a skip line) when it is not installed.
/// With KAITO_REQUIRE_REGISTRY=1 a missing binary fails the test instead.
fn registry_binary() -> Option<PathBuf> {
    let candidates = std::iter::once(PathBuf::from("/usr/bin/docker-registry")).chain(
        std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("docker-registry"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    );
    for c in candidates {
        if c.is_file() {
            return Some(c);
        }
    }
    if std::env::var("KAITO_REQUIRE_REGISTRY").as_deref() == Ok("1") {
        panic!(
            "docker-registry not found: install docker-registry (apt-get install docker-registry)"
        );
    }
    eprintln!(
        "SKIP: docker-registry not installed (apt-get install docker-registry); registry tests skipped"
    );
    None
}

/// A registry process on 127.0.0.1:<free port>, storage and config in a temp dir; killed on drop.
struct Registry {
    child: Child,
    host: String,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    async fn start(binary: &Path) -> Self {
        kaito_adapter::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let hash = bcrypt::hash_with_result(PASSWORD, 5)
            .expect("bcrypt hash")
            .format_for_version(bcrypt::Version::TwoA);
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{USER}:{hash}\n")).expect("write htpasswd");
        let storage = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: kaito-test\n    path: {}\n",
                storage.display(),
                htpasswd.display()
            ),
        )
        .expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Registry {
            child,
            host: format!("127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            let probe = client
                .get(format!("http://{}/v2/", registry.host))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status() == reqwest::StatusCode::UNAUTHORIZED) {
                break;
            }
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited ({status}): {}", registry.log());
            }
            assert!(
                Instant::now() < deadline,
                "registry not ready: {}",
                registry.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        registry
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A docker config JSON as Kubernetes stores it in a dockerconfigjson Secret
    /// (`kubectl create secret docker-registry` writes username, password and auth).
    fn docker_config(&self, dir: &Path, password: &str) -> PathBuf {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        let json = serde_json::json!({"auths": {self.host.clone(): {
            "username": USER, "password": password, "auth": auth}}});
        let path = dir.join(".dockerconfigjson");
        std::fs::write(&path, json.to_string()).expect("write docker config");
        path
    }

    fn options(&self, docker_config: Option<PathBuf>) -> RegistryOptions {
        RegistryOptions {
            docker_config,
            insecure_registries: vec![self.host.clone()],
            ..RegistryOptions::default()
        }
    }
}

/// A tiny adapter: a PEFT-like config and a valid safetensors file with one F32 tensor.
fn write_adapter(dir: &Path) {
    std::fs::write(
        dir.join("adapter_config.json"),
        br#"{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj","v_proj"]}"#,
    )
    .expect("write config");
    let header = br#"{"base_model.model.layers.0.q_proj.lora_A.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    for v in [1.0f32, 2.0, 3.0, 4.0] {
        st.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(dir.join("adapter_model.safetensors"), st).expect("write safetensors");
}

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaito-adapter"));
    cmd.env_remove("DOCKER_CONFIG").env("HOME", "/nonexistent");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_then_pull_round_trips_the_adapter_bytes() {
    let Some(binary) = registry_binary() else {
        return;
    };
    let registry = Registry::start(&binary).await;
    let work = tempfile::tempdir().expect("tempdir");
    let source = work.path().join("adapter");
    std::fs::create_dir(&source).expect("mkdir");
    write_adapter(&source);
    let config = registry.docker_config(work.path(), PASSWORD);
    let image = format!("{}/adapters/phi-3-lora:v1", registry.host);

    let out = bin()
        .args(["publish", "--source"])
        .arg(&source)
        .args([
            "--target",
            &image,
            "--insecure-registry",
            &registry.host,
            "--docker-config",
        ])
        .arg(&config)
        .output()
        .expect("run publish");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "publish failed: {}\nregistry log: {}",
        String::from_utf8_lossy(&out.stderr),
        registry.log()
    );
    println!("manifest:\n{stdout}");
    let manifest: serde_json::Value = serde_json::from_str(&stdout).expect("manifest JSON");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1));

    // Publishing the same adapter again gives the same manifest (a deterministic layer).
    let again = publish(&source, &image, &registry.options(Some(config.clone())))
        .await
        .expect("publish again");
    assert_eq!(
        serde_json::to_value(&again.manifest).expect("manifest value"),
        manifest
    );

    let output = work.path().join("pulled");
    let out = bin()
        .args([
            "pull",
            "--image",
            &image,
            "--insecure-registry",
            &registry.host,
            "--output",
        ])
        .arg(&output)
        .arg("--docker-config")
        .arg(&config)
        .output()
        .expect("run pull");
    assert!(
        out.status.success(),
        "pull failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["adapter_config.json", "adapter_model.safetensors"] {
        assert_eq!(
            std::fs::read(output.join(name)).expect("pulled file"),
            std::fs::read(source.join(name)).expect("source file"),
            "{name} must round-trip byte for byte"
        );
    }
    let mut names: Vec<_> = std::fs::read_dir(&output)
        .expect("read output")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["adapter_config.json", "adapter_model.safetensors"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_or_no_credentials_is_a_clear_auth_error() {
    let Some(binary) = registry_binary() else {
        return;
    };
    let registry = Registry::start(&binary).await;
    let work = tempfile::tempdir().expect("tempdir");
    write_adapter(work.path());
    let image = format!("{}/adapters/denied:v1", registry.host);

    let bad = registry.docker_config(work.path(), "not-the-password");
    let err = publish(work.path(), &image, &registry.options(Some(bad)))
        .await
        .expect_err("a wrong password must fail");
    println!("wrong password: {err}");
    assert!(err.contains("refused authentication"), "{err}");
    assert!(err.contains("user \"kaito\""), "{err}");
    assert!(err.contains("--docker-config"), "names the fix: {err}");
    assert!(
        !err.contains("not-the-password"),
        "never prints the password: {err}"
    );

    // No matching entry: anonymous, refused the same way.
    let other = work.path().join("other.json");
    std::fs::write(
        &other,
        r#"{"auths":{"elsewhere.example:5000":{"auth":"dTpw"}}}"#,
    )
    .expect("write");
    let err = publish(work.path(), &image, &registry.options(Some(other)))
        .await
        .expect_err("anonymous push must fail");
    assert!(err.contains("anonymous"), "{err}");

    let err = pull(
        &image,
        &work.path().join("out"),
        u64::MAX,
        &registry.options(None),
    )
    .await
    .expect_err("anonymous pull must fail");
    assert!(
        err.contains("refused authentication") || err.contains("anonymous"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pulling_an_image_without_an_adapter_says_so() {
    let Some(binary) = registry_binary() else {
        return;
    };
    let registry = Registry::start(&binary).await;
    let work = tempfile::tempdir().expect("tempdir");
    let config = registry.docker_config(work.path(), PASSWORD);
    let image = format!("{}/plain/not-an-adapter:v1", registry.host);

    // An image whose one layer has files, but none under data/.
    let mut tar = tar::Builder::new(Vec::new());
    let body = b"hello";
    let mut header = tar::Header::new_ustar();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "etc/readme.txt", &body[..])
        .expect("tar entry");
    let layer = tar.into_inner().expect("tar");
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::HttpsExcept(vec![registry.host.clone()]),
        ..Default::default()
    });
    let reference: oci_client::Reference = image.parse().expect("reference");
    client
        .push(
            &reference,
            &[oci_client::client::ImageLayer::oci_v1(layer, None)],
            oci_client::client::Config::oci_v1(
                br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec(),
                None,
            ),
            &oci_client::secrets::RegistryAuth::Basic(USER.into(), PASSWORD.into()),
            None,
        )
        .await
        .expect("push a non-adapter image");

    let out = bin()
        .args([
            "pull",
            "--image",
            &image,
            "--insecure-registry",
            &registry.host,
            "--output",
        ])
        .arg(work.path().join("out"))
        .arg("--docker-config")
        .arg(&config)
        .output()
        .expect("run pull");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "image {image} has no adapter: expected data/adapter_config.json and data/adapter_model.safetensors"
        )),
        "{stderr}"
    );

    // A missing image is named too.
    let err = pull(
        &format!("{}/plain/absent:v1", registry.host),
        &work.path().join("out2"),
        u64::MAX,
        &registry.options(Some(config)),
    )
    .await
    .expect_err("absent image");
    assert!(err.contains("absent"), "{err}");
}

#[tokio::test]
async fn publish_names_the_missing_file() {
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("adapter_config.json"), b"{}").expect("write");
    let err = publish(
        work.path(),
        "127.0.0.1:1/never/pushed:v1",
        &RegistryOptions::default(),
    )
    .await
    .expect_err("model file missing");
    assert!(
        err.contains("adapter_model.safetensors is missing"),
        "{err}"
    );
    assert!(err.contains("--source"), "{err}");

    std::fs::write(work.path().join("adapter_model.safetensors"), b"short").expect("write");
    std::fs::remove_file(work.path().join("adapter_config.json")).expect("rm");
    let err = publish(work.path(), "127.0.0.1:1/x:v1", &RegistryOptions::default())
        .await
        .expect_err("config missing");
    assert!(err.contains("adapter_config.json is missing"), "{err}");

    std::fs::write(work.path().join("adapter_config.json"), b"{}").expect("write");
    let err = publish(work.path(), "127.0.0.1:1/x:v1", &RegistryOptions::default())
        .await
        .expect_err("invalid safetensors");
    assert!(err.contains("not a safetensors file"), "{err}");
}
