//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas are safe: only the
//! holder reconciles; a holder that cannot renew within the lease duration stops.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

/// One candidate for the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// How long a lease lasts without renewal.
    pub lease_duration: Duration,
}

/// Whether `lease` is held by someone else who renewed it recently enough, at `now`.
pub fn held_by_other(lease: &Lease, identity: &str, now: jiff::Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return false;
    }
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    match &spec.renew_time {
        Some(MicroTime(t)) => now.as_second() < t.as_second() + secs,
        None => false,
    }
}

impl LeaderElector {
    /// A candidate `identity` for lease `name` in `api`'s namespace.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, lease_duration: Duration) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            lease_duration,
        }
    }

    /// Takes or renews the lease; Ok(true) when this candidate holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = jiff::Timestamp::now();
        let secs = i32::try_from(self.lease_duration.as_secs()).unwrap_or(15);
        let existing = self.api.get_opt(&self.name).await?;
        let result = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| true)
            }
            Some(lease) if held_by_other(&lease, &self.identity, now) => Ok(false),
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    spec.holder_identity = Some(self.identity.clone());
                }
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(secs);
                // resourceVersion from the get makes this a compare-and-swap.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| true)
            }
        };
        match result {
            Ok(b) => Ok(b),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::obj;

    #[test]
    fn expiry_decides_who_may_take_the_lease() {
        let lease: Lease = obj(
            "metadata: {name: l}\nspec: {holderIdentity: a, leaseDurationSeconds: 15, renewTime: '2026-01-01T00:00:00.000000Z'}",
        );
        let at = |s: &str| s.parse::<jiff::Timestamp>().expect("ts");
        assert!(held_by_other(&lease, "b", at("2026-01-01T00:00:10Z")));
        assert!(
            !held_by_other(&lease, "b", at("2026-01-01T00:00:16Z")),
            "expired"
        );
        assert!(
            !held_by_other(&lease, "a", at("2026-01-01T00:00:10Z")),
            "own lease"
        );
    }
}
