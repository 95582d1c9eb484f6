//! Helpers shared by the unit tests of several modules: parsing a command line, timestamps,
//! the seed Workspaces under `examples/` with a status of the tests' choosing.

use clap::Parser as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kaito_api::{Workspace, WorkspaceStatus};

use crate::cli::Cli;

pub(crate) fn parse(args: &[&str]) -> Cli {
    let mut v = vec!["kubectl-kaito"];
    v.extend_from_slice(args);
    match Cli::try_parse_from(v) {
        Ok(c) => c,
        Err(e) => panic!("{args:?} did not parse: {e}"),
    }
}

pub(crate) fn ts(s: &str) -> jiff::Timestamp {
    s.parse().expect("timestamp literal")
}

pub(crate) fn seed(file: &str) -> serde_json::Value {
    let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("seed readable");
    serde_yaml::from_str(&text).expect("seed is YAML")
}

pub(crate) fn cond(t: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: t.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(ts("2026-01-01T23:58:00Z")),
        observed_generation: None,
    }
}

pub(crate) fn sample_ws(conditions: Vec<Condition>) -> Workspace {
    seed_ws(
        "inference/kaito_workspace_phi_3.yaml",
        conditions,
        "Pending",
    )
}

/// The seed `file` in namespace default, created 5 minutes before the tests' "now", with this
/// status on one node.
pub(crate) fn seed_ws(file: &str, conditions: Vec<Condition>, state: &str) -> Workspace {
    let mut ws: Workspace = serde_json::from_value(seed(file)).expect("seed");
    ws.metadata.namespace = Some("default".into());
    ws.metadata.creation_timestamp = Some(Time(ts("2026-01-01T23:55:00Z")));
    ws.status = Some(WorkspaceStatus {
        worker_nodes: Some(vec!["gpu-1".into()]),
        conditions: Some(conditions),
        state: Some(state.into()),
        target_node_count: Some(1),
    });
    ws
}
