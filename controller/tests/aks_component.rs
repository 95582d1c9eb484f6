//! Component tests of the aks provisioner against the local HTTPS ARM endpoint.

use std::time::Duration;

use kaito_api::Workspace;
use kaito_controller::azure::AzureSettings;
use kaito_controller::config::Cloud;
use kaito_controller::naming;
use kaito_controller::plan::{WorkspacePlan, plan};
use kaito_controller::provision::aks::Aks;
use kaito_controller::provision::{NodeProvisioner, ProvisionError};
use kaito_fake_arm::{self as fake_arm, Faults, PoolEvent, Running};

type R = Result<(), Box<dyn std::error::Error>>;

fn workspace(name: &str) -> Result<(Workspace, WorkspacePlan), Box<dyn std::error::Error>> {
    let text = include_str!("../../examples/inference/kaito_workspace_phi_3.yaml")
        .replace("name: workspace-phi-3-mini", &format!("name: {name}"));
    let mut ws: Workspace = serde_yaml::from_str(&text)?;
    ws.metadata.namespace = Some("default".into());
    // The API server gives every object a UID; pools are tagged with it.
    ws.metadata.uid = Some(format!("uid-{name}"));
    let p = plan(&ws, Cloud::Azure, None).map_err(|e| e.to_string())?;
    Ok((ws, p))
}

/// Settings for the local endpoint `r`, sending `token`.
fn settings(r: &Running, token: &str) -> AzureSettings {
    AzureSettings::local_endpoint(&r.url, &r.ca_pem, token)
}

#[test]
fn the_fake_speaks_the_api_version_the_client_sends() {
    assert_eq!(
        fake_arm::API_VERSION,
        kaito_controller::provision::aks::API_VERSION
    );
}

async fn setup() -> Result<(Running, Aks), Box<dyn std::error::Error>> {
    let r = fake_arm::start("127.0.0.1:0".parse()?, "test-token").await?;
    r.arm.set_faults(Faults {
        operation_ms: 300,
        ..Faults::default()
    });
    let aks = Aks::new(settings(&r, &r.token))?;
    Ok((r, aks))
}

async fn until_ready(aks: &Aks, ws: &Workspace, p: &WorkspacePlan) -> R {
    for _ in 0..50 {
        let rep = aks.ensure(ws, p).await?;
        if rep
            .progress
            .as_deref()
            .is_some_and(|m| m.contains("Succeeded"))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("pool never became Succeeded".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_one_pool_and_waits_for_the_operation() -> R {
    let (mut r, aks) = setup().await?;
    let (ws, p) = workspace("ws-a")?;
    let pool = naming::pool_name("default", "ws-a");
    let first = aks.ensure(&ws, &p).await?;
    assert!(first.failure.is_none(), "{first:?}");
    assert!(
        first
            .progress
            .as_deref()
            .is_some_and(|m| m.contains("creating")),
        "{first:?}"
    );
    assert!(first.requeue_after.is_some());
    let second = aks.ensure(&ws, &p).await?;
    assert!(
        second
            .progress
            .as_deref()
            .is_some_and(|m| m.contains("Creating")),
        "{second:?}"
    );
    let pools = r.arm.pools();
    assert_eq!(pools.len(), 1, "{pools:?}");
    let (state, body) = &pools[&pool];
    assert_eq!(state, "Creating");
    let props = &body["properties"];
    assert_eq!(props["vmSize"], "Standard_NC6s_v3");
    assert_eq!(props["mode"], "User");
    assert_eq!(props["nodeTaints"][0], "sku=gpu:NoSchedule");
    assert_eq!(props["nodeLabels"]["kaito.sh/workspace"], "ws-a");
    assert_eq!(props["tags"]["kaito.sh/workspacenamespace"], "default");
    until_ready(&aks, &ws, &p).await?;
    // Bounded: a missing event must fail the test, not hang the test run.
    match tokio::time::timeout(Duration::from_secs(30), r.events.recv()).await {
        Ok(Some(PoolEvent::Ready { name, .. })) => assert_eq!(name, pool),
        Ok(other) => return Err(format!("unexpected event {other:?}").into()),
        Err(_) => return Err("no Ready event from the fake ARM within 30 s".into()),
    }
    assert_eq!(r.arm.pools().len(), 1);
    // Delete: not gone at once, gone after the operation.
    assert!(!aks.release(&ws).await?);
    let mut gone = false;
    for _ in 0..50 {
        if aks.release(&ws).await? {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "pool was not deleted");
    assert!(r.arm.pools().is_empty());
    assert_eq!(
        aks.tracked_operations(),
        0,
        "nothing is kept per pool once it is gone"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_errors_reach_the_condition_and_clear() -> R {
    let (r, aks) = setup().await?;
    let (ws, p) = workspace("ws-q")?;
    r.arm.set_faults(Faults {
        quota_exceeded: true,
        operation_ms: 100,
        ..Faults::default()
    });
    let rep = aks.ensure(&ws, &p).await?;
    let (reason, message) = rep.failure.clone().ok_or("no failure reported")?;
    assert_eq!(reason, kaito_api::Reason::QuotaExceeded);
    assert!(
        message.contains("exceeding approved Standard_NC6s_v3"),
        "{message}"
    );
    assert!(
        rep.requeue_after.is_some(),
        "a quota failure must be looked at again"
    );
    assert!(r.arm.pools().is_empty());
    r.arm.set_faults(Faults {
        operation_ms: 100,
        ..Faults::default()
    });
    let rep = aks.ensure(&ws, &p).await?;
    assert!(rep.failure.is_none(), "{rep:?}");
    until_ready(&aks, &ws, &p).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried() -> R {
    let (r, aks) = setup().await?;
    let (ws, p) = workspace("ws-t")?;
    // 429 with Retry-After: 1, twice: waited out by the transport.
    r.arm.set_faults(Faults {
        throttle: 2,
        operation_ms: 100,
        ..Faults::default()
    });
    let t0 = std::time::Instant::now();
    let rep = aks.ensure(&ws, &p).await?;
    assert!(rep.failure.is_none(), "{rep:?}");
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "Retry-After was not honoured"
    );
    assert_eq!(r.arm.faults().throttle, 0);
    // One 500: retried by azure_core's policy.
    r.arm.set_faults(Faults {
        server_error: 1,
        operation_ms: 100,
        ..Faults::default()
    });
    aks.ensure(&ws, &p).await?;
    // A 500 that persists: a transient error for the reconcile loop's backoff, not a condition.
    r.arm.set_faults(Faults {
        server_error: 100,
        operation_ms: 100,
        ..Faults::default()
    });
    match aks.ensure(&ws, &p).await {
        Err(ProvisionError::Azure(m)) => {
            // azure_core's retry policy reports exhaustion without the last status.
            assert!(
                m.contains("500") || m.contains("Internal") || m.contains("retr"),
                "{m}"
            )
        }
        other => return Err(format!("expected a transient error, got {other:?}").into()),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_with_the_arm_error() -> R {
    let (r, _) = setup().await?;
    let aks = Aks::new(settings(&r, "wrong"))?;
    let (ws, p) = workspace("ws-x")?;
    let rep = aks.ensure(&ws, &p).await?;
    let (reason, message) = rep.failure.ok_or("no failure")?;
    assert_eq!(reason, kaito_api::Reason::CloudError);
    assert!(message.contains("AuthenticationFailed"), "{message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_the_same_name_but_another_uid_is_neither_updated_nor_deleted() -> R {
    let (r, aks) = setup().await?;
    // A workspace deleted while its pool stayed (finalizer removed by hand), then recreated
    // under the same name: same pool name, another UID.
    let (before, p1) = workspace("ws-u")?;
    until_ready(&aks, &before, &p1).await?;
    let pool = naming::pool_name("default", "ws-u");
    let snapshot = r.arm.pools()[&pool].clone();
    assert_eq!(
        snapshot.1["properties"]["tags"]["kaito.sh/workspaceuid"],
        "uid-ws-u"
    );
    let (mut now, _) = workspace("ws-u")?;
    now.metadata.uid = Some("uid-recreated".into());
    now.resource.count = Some(2);
    let p2 = plan(&now, Cloud::Azure, None).map_err(|e| e.to_string())?;
    let requests = r.arm.requests();
    let rep = aks.ensure(&now, &p2).await?;
    let (reason, message) = rep.failure.clone().ok_or("no failure reported")?;
    assert_eq!(reason, kaito_api::Reason::ChildNameTaken);
    for want in [
        pool.as_str(),
        "uid-ws-u",
        "uid-recreated",
        "az aks nodepool delete",
    ] {
        assert!(message.contains(want), "{want:?} missing from {message}");
    }
    assert!(rep.requeue_after.is_some(), "looked at again later");
    // Released as far as this workspace goes, but the pool is not touched.
    assert!(aks.release(&now).await?);
    assert_eq!(
        r.arm.requests(),
        requests + 2,
        "only the two GETs of ensure and release reached ARM"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(r.arm.pools()[&pool], snapshot, "the pool changed");
    Ok(())
}
