//! Registry credentials from a docker config JSON: the `.dockerconfigjson` key of a Kubernetes
//! `kubernetes.io/dockerconfigjson` Secret, or `$DOCKER_CONFIG/config.json`.
//!
//! ```json
//! {"auths": {"registry.example.com:5000": {"auth": "base64(user:password)"}}}
//! {"auths": {"https://index.docker.io/v1/": {"username": "u", "password": "p"}}}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// Where credentials come from when `--docker-config` is not given: `$DOCKER_CONFIG/config.json`,
/// else `$HOME/.docker/config.json` (docker's own default).
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// The credentials for `registry` (as in an image reference: `host[:port]`).
///
/// `explicit` is the `--docker-config` flag: that file must exist and parse. Without it the
/// default file is read when present. Anonymous when no entry matches.
pub fn registry_auth(explicit: Option<&Path>, registry: &str) -> Result<RegistryAuth, String> {
    let (path, text) = match explicit {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "--docker-config {}: cannot read it ({e}); pass the file holding the \
                     Secret's .dockerconfigjson key",
                    path.display()
                )
            })?;
            (path.to_path_buf(), text)
        }
        None => match default_path() {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => (path, text),
                Err(_) => return Ok(RegistryAuth::Anonymous),
            },
            None => return Ok(RegistryAuth::Anonymous),
        },
    };
    auth_from_json(&text, registry).map_err(|e| format!("{}: {e}", path.display()))
}

/// The credentials for `registry` in the docker config JSON `text`.
pub fn auth_from_json(text: &str, registry: &str) -> Result<RegistryAuth, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("not JSON ({e}); expected a docker config JSON with \"auths\""))?;
    if !value.is_object() {
        return Err("not a JSON object; expected {\"auths\":{\"host:port\":{\"auth\":\"base64(user:password)\"}}}".to_string());
    }
    let config: DockerConfig = serde_json::from_value(value).map_err(|e| {
        format!(
            "not a docker config JSON ({e}); expected {{\"auths\":{{\"host:port\":{{\"auth\":\
             \"base64(user:password)\"}}}}}}"
        )
    })?;
    let wanted = normalize(registry);
    let Some((key, entry)) = config
        .auths
        .iter()
        .find(|(key, _)| normalize(key) == wanted)
    else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| {
                format!("auths[{key:?}].auth is not base64 ({e}); write base64(user:password)")
            })?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| format!("auths[{key:?}].auth does not decode to UTF-8 text"))?;
        let Some((user, password)) = decoded.split_once(':') else {
            return Err(format!(
                "auths[{key:?}].auth decodes to no \"user:password\" pair; write base64(user:password)"
            ));
        };
        return Ok(RegistryAuth::Basic(user.to_string(), password.to_string()));
    }
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    if let Some(token) = entry.registrytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(RegistryAuth::Bearer(token.to_string()));
    }
    Err(format!(
        "auths[{key:?}] has neither \"auth\" nor \"username\" and \"password\"; add one of them"
    ))
}

/// A registry key as docker writes it (`https://host:port/v1/`, `host:port`) reduced to
/// `host:port`, lower case, with Docker Hub's several names made one.
fn normalize(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_field_username_password_and_hub_names() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        let json = format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{b64}"}},
               "https://index.docker.io/v1/":{{"username":"bob","password":"pw"}}}}}}"#
        );
        assert_eq!(
            auth_from_json(&json, "127.0.0.1:5000"),
            Ok(RegistryAuth::Basic("alice".into(), "s3:cret".into()))
        );
        assert_eq!(
            auth_from_json(&json, "index.docker.io"),
            Ok(RegistryAuth::Basic("bob".into(), "pw".into()))
        );
        assert_eq!(
            auth_from_json(&json, "other.example:5000"),
            Ok(RegistryAuth::Anonymous)
        );
    }

    #[test]
    fn broken_entries_say_what_to_fix() {
        let err = auth_from_json(r#"{"auths":{"r":{"auth":"!!"}}}"#, "r").expect_err("bad b64");
        assert!(err.contains("base64"), "{err}");
        let err = auth_from_json("[]", "r").expect_err("not an object");
        assert!(err.contains("auths"), "{err}");
        let err = auth_from_json(r#"{"auths":{"r":{}}}"#, "r").expect_err("empty entry");
        assert!(err.contains("username"), "{err}");
    }
}
