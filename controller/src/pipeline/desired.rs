//! The pure stages between the reads and the writes: the **plan** (what the workspace runs,
//! or why its spec cannot be satisfied) and the **desired children** (the Services and
//! StatefulSet of an inference workspace, the ConfigMap and Job of a tuning one), decided from
//! the workspace, the plan and the children the fetch stage found. No client here: every
//! function is a plain function of its inputs, tested from inline YAML.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kaito_api::Workspace;
use kaito_api::admission::EngineParams;
use kaito_presets::GpuShape;
use kube::ResourceExt;

use crate::config::Config;
use crate::inference::{self, BuildError};
use crate::ownership::{self, controlled_by};
use crate::plan::{self, WorkloadKind, WorkspacePlan};
use crate::tuning;

/// The plan of `ws`, or why its spec cannot be satisfied (the message of an `InvalidSpec`
/// condition): the sizing, the serving image the planned nodes need (`{computeCapability}`),
/// and the parameters of `inference.config` (`engine`, as fetched) must all be sound.
pub fn plan(
    ws: &Workspace,
    config: &Config,
    byo_shape: Option<&GpuShape>,
    engine: &Result<EngineParams, String>,
) -> Result<WorkspacePlan, String> {
    let p = plan::plan(ws, config.cloud, byo_shape).map_err(|e| e.to_string())?;
    if p.kind == WorkloadKind::Inference && p.preset.is_some() {
        inference::serving_image(ws, &p, &config.workload).map_err(|e| e.to_string())?;
    }
    engine.as_ref().map_err(Clone::clone)?;
    Ok(p)
}

/// The children of a workspace the fetch stage found (None or empty where it did not look).
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The serving StatefulSet `<ws>`.
    pub statefulset: Option<StatefulSet>,
    /// The Services `<ws>` and `<ws>-headless` that exist.
    pub services: Vec<Service>,
    /// The tuning Job `<ws>`.
    pub job: Option<Job>,
    /// The built-in training ConfigMap.
    pub config_map: Option<ConfigMap>,
}

/// What the fetch stage has to look at for `plan` (None: the spec is invalid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The StatefulSet; the Services too when `services` (the nodes are ready, or the
    /// StatefulSet exists: then the workload is kept).
    Inference,
    /// The Job; the ConfigMap named so when the Job does not exist yet and the nodes are
    /// ready.
    Tuning {
        /// The built-in training ConfigMap's name, when the workspace uses it.
        config_map: Option<String>,
    },
}

/// What to look up for `plan`.
pub fn lookup(ws: &Workspace, plan: &WorkspacePlan) -> Lookup {
    match plan.kind {
        WorkloadKind::Inference => Lookup::Inference,
        WorkloadKind::Tuning => Lookup::Tuning {
            config_map: ws
                .tuning
                .as_ref()
                .filter(|t| t.config.is_none())
                .map(|_| tuning::default_config_name(crate::naming::name(ws))),
        },
    }
}

/// One child object the workspace wants.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    /// A Service.
    Service(Service),
    /// The serving StatefulSet.
    StatefulSet(StatefulSet),
    /// The built-in training ConfigMap.
    ConfigMap(ConfigMap),
    /// The tuning Job.
    Job(Job),
}

impl Child {
    /// Its kind, as the API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Service(_) => "Service",
            Self::StatefulSet(_) => "StatefulSet",
            Self::ConfigMap(_) => "ConfigMap",
            Self::Job(_) => "Job",
        }
    }

    /// Its metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Service(o) => &o.metadata,
            Self::StatefulSet(o) => &o.metadata,
            Self::ConfigMap(o) => &o.metadata,
            Self::Job(o) => &o.metadata,
        }
    }

    /// Its metadata, to change.
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Service(o) => &mut o.metadata,
            Self::StatefulSet(o) => &mut o.metadata,
            Self::ConfigMap(o) => &mut o.metadata,
            Self::Job(o) => &mut o.metadata,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// The metadata of the object of the same kind and name in `found`.
    pub fn found<'a>(&self, found: &'a Found) -> Option<&'a ObjectMeta> {
        let name = self.name();
        let same = |m: &ObjectMeta| m.name.as_deref() == Some(name);
        match self {
            Self::Service(_) => found.services.iter().map(|s| &s.metadata).find(|m| same(m)),
            Self::StatefulSet(_) => found.statefulset.as_ref().map(|s| &s.metadata),
            Self::ConfigMap(_) => found.config_map.as_ref().map(|c| &c.metadata),
            Self::Job(_) => found.job.as_ref().map(|j| &j.metadata),
        }
        .filter(|m| same(m))
    }
}

/// The children a workspace wants, in the order they are applied (Services before the
/// StatefulSet that names the headless one; the ConfigMap before the Job that mounts it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// The objects, each complete (server-side apply with one field manager).
    pub children: Vec<Child>,
    /// A child's name is held by an object that is not the workspace's: what and how to clear
    /// it. The controller never takes such an object over; the workload waits.
    pub name_taken: Option<String>,
}

/// The desired children of `ws` with `plan`, given what was `found` and whether its nodes are
/// ready:
///
/// - inference: the two Services and the StatefulSet, once the nodes are ready (and kept once
///   the StatefulSet exists);
/// - tuning: the built-in ConfigMap (unless `tuning.config` names one) and the Job, once the
///   nodes are ready; an existing Job is left as it is (its template is immutable);
/// - nothing of a child whose name an object that is not the workspace's holds: `name_taken`
///   says which.
pub fn children(
    ws: &Workspace,
    plan: &WorkspacePlan,
    config: &Config,
    engine: &EngineParams,
    found: &Found,
    nodes_ready: bool,
) -> Result<Desired, BuildError> {
    let taken = |kind: &str, meta: &ObjectMeta| Desired {
        children: Vec::new(),
        name_taken: Some(ownership::child_name_taken(kind, meta, ws)),
    };
    match plan.kind {
        WorkloadKind::Inference => {
            if let Some(s) = found
                .statefulset
                .as_ref()
                .filter(|s| !controlled_by(&s.metadata, ws))
            {
                return Ok(taken("StatefulSet", &s.metadata));
            }
            if !nodes_ready && found.statefulset.is_none() {
                return Ok(Desired::default());
            }
            let services = inference::services(ws);
            for svc in &services {
                let name = svc.name_any();
                if let Some(have) = found
                    .services
                    .iter()
                    .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
                    .filter(|s| !controlled_by(&s.metadata, ws))
                {
                    return Ok(taken("Service", &have.metadata));
                }
            }
            let sts =
                inference::statefulset(ws, plan, &config.workload, config.provisioner, engine)?;
            let mut children: Vec<Child> = services.into_iter().map(Child::Service).collect();
            children.push(Child::StatefulSet(sts));
            Ok(Desired {
                children,
                name_taken: None,
            })
        }
        WorkloadKind::Tuning => {
            match &found.job {
                Some(j) if !controlled_by(&j.metadata, ws) => {
                    return Ok(taken("Job", &j.metadata));
                }
                Some(_) => return Ok(Desired::default()),
                None if !nodes_ready => return Ok(Desired::default()),
                None => {}
            }
            let mut children = Vec::new();
            if let Some(cm) = tuning::default_config_map(ws, plan) {
                if let Some(have) = found
                    .config_map
                    .as_ref()
                    .filter(|c| !controlled_by(&c.metadata, ws))
                {
                    // Without its ConfigMap the Job waits until that name is free.
                    return Ok(taken("ConfigMap", &have.metadata));
                }
                children.push(Child::ConfigMap(cm));
            }
            children.push(Child::Job(tuning::job(
                ws,
                plan,
                &config.workload,
                config.provisioner,
            )?));
            Ok(Desired {
                children,
                name_taken: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cloud, Provisioner};
    use crate::testutil::{obj, ws};

    const PHI: &str = "
metadata: {name: phi, namespace: team, uid: uid-1}
resource: {instanceType: Standard_NC6s_v3, count: 1, labelSelector: {matchLabels: {apps: phi}}}
inference: {preset: {name: phi-3-mini-4k-instruct}}
";

    const TUNE: &str = "
metadata: {name: tune, namespace: team, uid: uid-2}
resource: {instanceType: Standard_NC24ads_A100_v4, count: 1, labelSelector: {matchLabels: {apps: tune}}}
tuning:
  preset: {name: phi-3-mini-4k-instruct}
  method: qlora
  input: {urls: ['https://example.com/data.parquet']}
  output: {image: 'registry.example.com/adapters/tune:1', imagePushSecret: push}
";

    fn config() -> Config {
        Config::new(Cloud::Azure, Provisioner::Karpenter)
    }

    fn planned(w: &Workspace) -> WorkspacePlan {
        plan(w, &config(), None, &Ok(EngineParams::default())).expect("plan")
    }

    fn desired(w: &Workspace, found: &Found, nodes_ready: bool) -> Desired {
        children(
            w,
            &planned(w),
            &config(),
            &EngineParams::default(),
            found,
            nodes_ready,
        )
        .expect("children")
    }

    fn names(d: &Desired) -> Vec<String> {
        d.children
            .iter()
            .map(|c| format!("{} {}", c.kind(), c.name()))
            .collect()
    }

    fn owned_by(w: &Workspace) -> String {
        format!(
            "ownerReferences: [{{apiVersion: kaito.sh/v1beta1, kind: Workspace, name: {}, uid: {}, controller: true}}]",
            crate::naming::name(w),
            crate::naming::uid(w)
        )
    }

    #[test]
    fn an_inference_workspace_wants_its_services_then_its_statefulset_once_nodes_are_ready() {
        let w = ws(PHI);
        assert_eq!(desired(&w, &Found::default(), false), Desired::default());
        let d = desired(&w, &Found::default(), true);
        assert_eq!(
            names(&d),
            ["Service phi", "Service phi-headless", "StatefulSet phi"]
        );
        assert_eq!(d.name_taken, None);
        let Child::StatefulSet(sts) = &d.children[2] else {
            panic!("{d:?}")
        };
        let spec = sts.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("phi-headless"));
        for c in &d.children {
            assert_eq!(c.meta().namespace.as_deref(), Some("team"));
            assert!(controlled_by(c.meta(), &w), "{c:?}");
        }
    }

    #[test]
    fn an_existing_statefulset_is_kept_while_the_nodes_are_not_ready() {
        let w = ws(PHI);
        let found = Found {
            statefulset: Some(obj(&format!(
                "metadata: {{name: phi, namespace: team, {}}}",
                owned_by(&w)
            ))),
            ..Found::default()
        };
        assert_eq!(desired(&w, &found, false).children.len(), 3);
    }

    #[test]
    fn a_child_name_held_by_someone_else_wants_nothing_and_says_which() {
        let w = ws(PHI);
        let theirs: Service = obj("metadata: {name: phi-headless, namespace: team}");
        let found = Found {
            services: vec![theirs],
            ..Found::default()
        };
        let d = desired(&w, &found, true);
        assert!(d.children.is_empty(), "{d:?}");
        let why = d.name_taken.expect("name taken");
        assert!(
            why.starts_with("Service team/phi-headless already exists"),
            "{why}"
        );
        let found = Found {
            statefulset: Some(obj("metadata: {name: phi, namespace: team}")),
            ..Found::default()
        };
        let why = desired(&w, &found, true).name_taken.expect("name taken");
        assert!(why.starts_with("StatefulSet team/phi"), "{why}");
    }

    #[test]
    fn a_tuning_workspace_wants_its_config_map_and_job_once_and_never_again() {
        let w = ws(TUNE);
        assert_eq!(desired(&w, &Found::default(), false), Desired::default());
        let d = desired(&w, &Found::default(), true);
        assert_eq!(
            names(&d),
            [
                format!(
                    "ConfigMap {}",
                    tuning::default_config_name(crate::naming::name(&w))
                ),
                "Job tune".to_string()
            ]
        );
        let existing = Found {
            job: Some(obj(&format!(
                "metadata: {{name: tune, namespace: team, {}}}",
                owned_by(&w)
            ))),
            ..Found::default()
        };
        assert_eq!(desired(&w, &existing, true), Desired::default());
        let foreign_cm = Found {
            config_map: Some(obj("metadata: {name: tune-tuning-config, namespace: team}")),
            ..Found::default()
        };
        let d = desired(&w, &foreign_cm, true);
        assert!(d.children.is_empty(), "no Job without its ConfigMap: {d:?}");
        assert!(
            d.name_taken
                .expect("taken")
                .starts_with("ConfigMap team/tune-tuning-config")
        );
        assert_eq!(
            lookup(&w, &planned(&w)),
            Lookup::Tuning {
                config_map: Some(tuning::default_config_name("tune"))
            }
        );
    }

    #[test]
    fn a_spec_that_cannot_be_planned_says_why() {
        let w = ws(&PHI.replace("phi-3-mini-4k-instruct", "no-such-model"));
        let why = plan(&w, &config(), None, &Ok(EngineParams::default())).expect_err("invalid");
        assert!(why.contains("no-such-model"), "{why}");
        let w = ws(PHI);
        let why =
            plan(&w, &config(), None, &Err("inference.config: bad".into())).expect_err("invalid");
        assert_eq!(why, "inference.config: bad");
    }
}
