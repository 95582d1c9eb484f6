//! publish and pull against a real OCI registry (Debian's docker-registry, distribution 2.8)
//! on loopback with htpasswd (bcrypt) basic auth over plain http.

use std::path::{Path, PathBuf};
use std::process::Command;

use kaito_adapter::registry::{RegistryOptions, publish, pull};
use kaito_e2e::registry::{PASSWORD, Registry, USER};

/// A registry on loopback, or None when docker-registry is not installed (the test is then
/// skipped; `.ci/run` sets KAITO_REQUIRE_REGISTRY=1 and installs it, so there it fails).
fn registry() -> Option<Registry> {
    kaito_adapter::install_crypto_provider();
    Registry::start().expect("start docker-registry")
}

fn options(registry: &Registry, docker_config: Option<PathBuf>) -> RegistryOptions {
    RegistryOptions {
        docker_config,
        insecure_registries: vec![registry.host().to_owned()],
        ..RegistryOptions::default()
    }
}

fn docker_config(registry: &Registry, dir: &Path, password: &str) -> PathBuf {
    registry
        .docker_config(dir, password)
        .expect("write docker config")
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

/// A scratch directory (removed on drop) with the tiny adapter in its subdirectory `adapter`;
/// returns both.
fn work_with_adapter() -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().expect("tempdir");
    let source = work.path().join("adapter");
    std::fs::create_dir(&source).expect("mkdir");
    write_adapter(&source);
    (work, source)
}

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaito-adapter"));
    cmd.env_remove("DOCKER_CONFIG").env("HOME", "/nonexistent");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_then_pull_round_trips_the_adapter_bytes() {
    let Some(registry) = registry() else {
        return;
    };
    let (work, source) = work_with_adapter();
    let config = docker_config(&registry, work.path(), PASSWORD);
    let image = format!("{}/adapters/phi-3-lora:v1", registry.host());

    let out = bin()
        .args(["publish", "--source"])
        .arg(&source)
        .args([
            "--target",
            &image,
            "--insecure-registry",
            registry.host(),
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
    let again = publish(&source, &image, &options(&registry, Some(config.clone())))
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
            registry.host(),
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
    let Some(registry) = registry() else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    write_adapter(work.path());
    let image = format!("{}/adapters/denied:v1", registry.host());

    let bad = docker_config(&registry, work.path(), "not-the-password");
    let err = publish(work.path(), &image, &options(&registry, Some(bad)))
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
    let err = publish(work.path(), &image, &options(&registry, Some(other)))
        .await
        .expect_err("anonymous push must fail");
    assert!(err.contains("anonymous"), "{err}");

    let err = pull(
        &image,
        &work.path().join("out"),
        u64::MAX,
        &options(&registry, None),
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
    let Some(registry) = registry() else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let config = docker_config(&registry, work.path(), PASSWORD);
    let image = format!("{}/plain/not-an-adapter:v1", registry.host());

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
        protocol: oci_client::client::ClientProtocol::HttpsExcept(vec![registry.host().to_owned()]),
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
            registry.host(),
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
        &format!("{}/plain/absent:v1", registry.host()),
        &work.path().join("out2"),
        u64::MAX,
        &options(&registry, Some(config)),
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

#[tokio::test(flavor = "multi_thread")]
async fn an_image_bigger_than_max_bytes_is_refused_before_its_layer_is_downloaded() {
    let Some(registry) = registry() else {
        return;
    };
    let (work, source) = work_with_adapter();
    // A 1 MiB tensor of values gzip cannot shrink (a xorshift sequence).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let header = br#"{"base_model.model.layers.0.q_proj.lora_A.weight":{"dtype":"U8","shape":[1048576],"data_offsets":[0,1048576]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.extend((0..1 << 20).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    std::fs::write(source.join("adapter_model.safetensors"), st).expect("write safetensors");
    let config = docker_config(&registry, work.path(), PASSWORD);
    let opts = options(&registry, Some(config));
    let image = format!("{}/adapters/too-big:v1", registry.host());
    let published = publish(&source, &image, &opts).await.expect("publish");
    let layer = published.manifest.layers[0].digest.clone();
    assert!(published.manifest.layers[0].size > 1 << 20);

    let err = pull(&image, &work.path().join("out"), 64 << 10, &opts)
        .await
        .expect_err("over --max-bytes");
    assert!(
        err.contains("more than --max-bytes 65536; nothing was downloaded"),
        "{err}"
    );
    let log = registry.log();
    assert!(
        !log.contains(&format!("GET /v2/adapters/too-big/blobs/{layer}")),
        "the layer was downloaded although its declared size is over the limit:\n{log}"
    );
}
