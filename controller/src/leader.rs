//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas are safe: only the
//! holder reconciles.
//!
//! No decision compares this process's wall clock with a time another process wrote:
//!
//! - a standby ([`Observer`]) takes the lease only after it has seen the same lease record
//!   (holder, `renewTime`, `resourceVersion`) unchanged for the holder's `leaseDurationSeconds`,
//!   measured on its own monotonic clock from the moment it first saw that record;
//! - the leader ([`Leadership`]) gives up (the process exits) when it has not renewed within
//!   the renew deadline, measured on its own monotonic clock from the start of its last
//!   successful renewal. The renewal a standby last saw started no later than the standby saw
//!   it, so the leader is gone `lease_duration - renew_deadline` before a standby may take over;
//! - every API call is bounded by [`Timing::call_timeout`], and a renewal also by the renew
//!   deadline, so a hung call cannot keep an old leader reconciling.
//!
//! The `renewTime`/`acquireTime` written are informational (for `kubectl` and other tools).
//! Neither `kube` 5 (kube-runtime has no leader election) nor the lease crates built on it
//! fit: those decide expiry from the holder's `renewTime` against the local wall clock.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

/// Why leader election cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The durations do not allow a safe election.
    #[error("leader election timing: {0}")]
    Timing(String),
    /// One lease API call did not answer within its timeout.
    #[error("lease API call timed out after {0:?}")]
    CallTimeout(Duration),
    /// The API server refused or failed a lease call.
    #[error("lease API call failed: {0}")]
    Api(#[from] kube::Error),
    /// Another candidate holds the lease now.
    #[error("the lease is held by {0:?} now")]
    Lost(String),
    /// No renewal succeeded within the renew deadline.
    #[error("could not renew the lease within the renew deadline ({0:?})")]
    RenewDeadline(Duration),
}

/// The durations of leader election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a standby waits, after it last saw the lease change, before it takes it; the
    /// leader writes it into the Lease (`leaseDurationSeconds`, whole seconds).
    pub lease_duration: Duration,
    /// How long the leader goes on without a successful renewal before it stops.
    pub renew_deadline: Duration,
    /// Pause between two attempts (renewals, or a standby's looks at the lease).
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// Checks that a leader stops before a standby may take over, and renews more than once
    /// within the deadline.
    pub fn validate(&self) -> Result<(), LeaderError> {
        let err = |s: String| Err(LeaderError::Timing(s));
        if self.lease_duration < Duration::from_secs(1) {
            return err(format!(
                "the lease duration ({:?}) must be at least 1s (the Lease holds whole seconds)",
                self.lease_duration
            ));
        }
        if self.lease_duration.subsec_nanos() != 0 {
            return err(format!(
                "the lease duration ({:?}) must be whole seconds",
                self.lease_duration
            ));
        }
        if i32::try_from(self.lease_duration.as_secs()).is_err() {
            return err(format!(
                "the lease duration ({:?}) is too long",
                self.lease_duration
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return err(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return err(format!(
                "the retry period ({:?}) must be above zero and shorter than the renew deadline \
                 ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }

    /// The bound of one lease API call: half the renew deadline, so a leader gets at least two
    /// tries within the deadline.
    pub fn call_timeout(&self) -> Duration {
        self.renew_deadline / 2
    }
}

/// What a standby can tell from one look at the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nobody holds it, or the holder let it expire: it may be taken.
    Free,
    /// This candidate holds it.
    Ours,
    /// Someone else holds it; it expires after `remaining` more without a change.
    Held {
        /// The holder.
        holder: String,
        /// How much longer it must stay unchanged before it may be taken.
        remaining: Duration,
    },
}

/// The part of a lease whose change shows that its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: String,
    renew_time: Option<jiff::Timestamp>,
    resource_version: Option<String>,
    duration: Duration,
}

/// A standby's memory of the lease: the last record seen and when (on the local monotonic
/// clock) it was first seen. Pure: the caller passes the time.
#[derive(Debug, Default)]
pub struct Observer {
    seen: Option<(Record, Instant)>,
}

impl Observer {
    /// Judges `lease` for candidate `identity`, seen at `now`. `default_duration` applies when
    /// the lease states none.
    pub fn observe(
        &mut self,
        lease: &Lease,
        identity: &str,
        default_duration: Duration,
        now: Instant,
    ) -> Verdict {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.unwrap_or_default();
        if holder.is_empty() {
            self.seen = None;
            return Verdict::Free;
        }
        if holder == identity {
            self.seen = None;
            return Verdict::Ours;
        }
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(default_duration, Duration::from_secs);
        let record = Record {
            holder: holder.clone(),
            renew_time: spec.renew_time.map(|MicroTime(t)| t),
            resource_version: lease.metadata.resource_version.clone(),
            duration,
        };
        let first_seen = match &self.seen {
            Some((r, at)) if *r == record => *at,
            _ => {
                self.seen = Some((record, now));
                now
            }
        };
        let unchanged_for = now.saturating_duration_since(first_seen);
        if unchanged_for >= duration {
            Verdict::Free
        } else {
            Verdict::Held {
                holder,
                remaining: duration - unchanged_for,
            }
        }
    }
}

/// The leader's side: when its last successful renewal started (local monotonic clock).
#[derive(Debug, Clone, Copy)]
pub struct Leadership {
    renewed: Instant,
    renew_deadline: Duration,
}

impl Leadership {
    /// Leadership won (or renewed) by an attempt that started at `started`.
    pub fn new(started: Instant, renew_deadline: Duration) -> Self {
        Self {
            renewed: started,
            renew_deadline,
        }
    }

    /// A renewal that started at `started` succeeded.
    pub fn renewed(&mut self, started: Instant) {
        self.renewed = self.renewed.max(started);
    }

    /// When the leader must have stopped unless it renews first.
    pub fn deadline(&self) -> Instant {
        self.renewed + self.renew_deadline
    }

    /// Whether the leader must stop at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

/// One candidate for the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    observer: Observer,
}

impl LeaderElector {
    /// A candidate `identity` for lease `name` in `api`'s namespace.
    pub fn new(
        api: Api<Lease>,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Result<Self, LeaderError> {
        timing.validate()?;
        Ok(Self {
            api,
            name: name.into(),
            identity: identity.into(),
            timing,
            observer: Observer::default(),
        })
    }

    /// The durations in use.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// One lease API call, bounded by the call timeout.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaderError> {
        let limit = self.timing.call_timeout();
        match tokio::time::timeout(limit, call).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(LeaderError::CallTimeout(limit)),
        }
    }

    /// Takes or renews the lease; Ok(true) when this candidate holds it afterwards, Ok(false)
    /// when someone else does (or won a race for it).
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let wall = jiff::Timestamp::now();
        // validate() made sure it fits.
        let secs = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self.bounded(self.api.get_opt(&self.name)).await?;
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
                        acquire_time: Some(MicroTime(wall)),
                        renew_time: Some(MicroTime(wall)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.bounded(self.api.create(&PostParams::default(), &lease))
                    .await
            }
            Some(mut lease) => {
                let verdict = self.observer.observe(
                    &lease,
                    &self.identity,
                    self.timing.lease_duration,
                    Instant::now(),
                );
                if let Verdict::Held { .. } = verdict {
                    return Ok(false);
                }
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if verdict == Verdict::Free {
                    spec.acquire_time = Some(MicroTime(wall));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    spec.holder_identity = Some(self.identity.clone());
                }
                spec.renew_time = Some(MicroTime(wall));
                spec.lease_duration_seconds = Some(secs);
                // resourceVersion from the get makes this a compare-and-swap.
                self.bounded(self.api.replace(&self.name, &PostParams::default(), &lease))
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(LeaderError::Api(kube::Error::Api(e))) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits (one attempt per retry period; failed calls are passed to `on_error`) until this
    /// candidate holds the lease, and returns the leadership won.
    pub async fn acquire(&mut self, mut on_error: impl FnMut(&LeaderError)) -> Leadership {
        loop {
            let started = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => return Leadership::new(started, self.timing.renew_deadline),
                Ok(false) => {}
                Err(e) => on_error(&e),
            }
            tokio::time::sleep_until(started + self.timing.retry_period).await;
        }
    }

    /// Renews the lease every retry period for as long as it can, and returns why it stopped
    /// leading: the lease was taken, or no renewal succeeded within the renew deadline (each
    /// renewal is cut off at the deadline). Failed renewals are passed to `on_error`.
    pub async fn hold(
        &mut self,
        mut leadership: Leadership,
        mut on_error: impl FnMut(&LeaderError),
    ) -> LeaderError {
        loop {
            let next = (Instant::now() + self.timing.retry_period).min(leadership.deadline());
            tokio::time::sleep_until(next).await;
            let started = Instant::now();
            if leadership.expired(started) {
                return LeaderError::RenewDeadline(self.timing.renew_deadline);
            }
            let attempt =
                tokio::time::timeout_at(leadership.deadline(), self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => leadership.renewed(started),
                Ok(Ok(false)) => {
                    let holder = self
                        .observer
                        .seen
                        .as_ref()
                        .map(|(r, _)| r.holder.clone())
                        .unwrap_or_default();
                    return LeaderError::Lost(holder);
                }
                Ok(Err(e)) => on_error(&e),
                Err(_) => {}
            }
            if leadership.expired(Instant::now()) {
                return LeaderError::RenewDeadline(self.timing.renew_deadline);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::obj;

    const S15: Duration = Duration::from_secs(15);

    fn lease(holder: &str, renew: &str, rv: &str) -> Lease {
        obj(&format!(
            "metadata: {{name: l, resourceVersion: '{rv}'}}\nspec: {{holderIdentity: '{holder}', \
             leaseDurationSeconds: 15, renewTime: '{renew}'}}"
        ))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn an_unchanged_lease_expires_after_its_duration_on_the_observers_clock() {
        let t0 = Instant::now();
        let l = lease("a", "2026-01-01T00:00:00.000000Z", "1");
        let mut o = Observer::default();
        assert_eq!(
            o.observe(&l, "b", S15, t0),
            Verdict::Held {
                holder: "a".into(),
                remaining: S15
            }
        );
        assert_eq!(
            o.observe(&l, "b", S15, t0 + secs(14)),
            Verdict::Held {
                holder: "a".into(),
                remaining: secs(1)
            }
        );
        assert_eq!(o.observe(&l, "b", S15, t0 + secs(15)), Verdict::Free);
    }

    /// An observer that saw a's lease (rv 1) at `t0`, then `next` 14 s later: still held.
    fn saw_then(next: &Lease, t0: Instant) -> Observer {
        let mut o = Observer::default();
        o.observe(
            &lease("a", "2026-01-01T00:00:00.000000Z", "1"),
            "b",
            S15,
            t0,
        );
        assert!(matches!(
            o.observe(next, "b", S15, t0 + secs(14)),
            Verdict::Held { .. }
        ));
        o
    }

    #[test]
    fn a_renewal_restarts_the_observers_count() {
        let t0 = Instant::now();
        let renewed = lease("a", "2026-01-01T00:00:10.000000Z", "2");
        let mut o = saw_then(&renewed, t0);
        assert!(matches!(
            o.observe(&renewed, "b", S15, t0 + secs(28)),
            Verdict::Held { remaining, .. } if remaining == secs(1)
        ));
        assert_eq!(o.observe(&renewed, "b", S15, t0 + secs(29)), Verdict::Free);
        // A holder whose clock stands still (same renewTime) but who keeps writing is alive.
        let same_time = lease("a", "2026-01-01T00:00:00.000000Z", "2");
        let mut o = saw_then(&same_time, t0);
        assert!(matches!(
            o.observe(&same_time, "b", S15, t0 + secs(20)),
            Verdict::Held { .. }
        ));
    }

    /// The holder's clock is 20 s behind the standby's: it just renewed, yet its renewTime
    /// reads 20 s ago by the standby's clock. The standby must not take the lease at once
    /// (before the fix it compared renewTime + 15 s with its own clock and did).
    #[test]
    fn a_holder_with_a_slow_clock_that_just_renewed_keeps_the_lease() {
        let standby_wall = "2026-01-01T00:00:20Z"
            .parse::<jiff::Timestamp>()
            .expect("ts");
        let renew = standby_wall - jiff::SignedDuration::from_secs(20);
        let l = lease("a", &renew.to_string(), "7");
        let t0 = Instant::now();
        let mut o = Observer::default();
        assert!(matches!(
            o.observe(&l, "b", S15, t0),
            Verdict::Held { remaining, .. } if remaining == S15
        ));
        assert!(matches!(
            o.observe(&l, "b", S15, t0 + secs(10)),
            Verdict::Held { .. }
        ));
    }

    /// The holder's clock is an hour ahead and it died: its renewTime lies in the standby's
    /// future. The standby takes over one lease duration after it last saw a change, not an
    /// hour later.
    #[test]
    fn a_dead_holder_with_a_fast_clock_does_not_block_the_lease() {
        let l = lease("a", "2099-01-01T00:00:00.000000Z", "7");
        let t0 = Instant::now();
        let mut o = Observer::default();
        assert!(matches!(o.observe(&l, "b", S15, t0), Verdict::Held { .. }));
        assert_eq!(o.observe(&l, "b", S15, t0 + S15), Verdict::Free);
    }

    #[test]
    fn empty_own_and_durationless_leases() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        let free: Lease = obj("metadata: {name: l}\nspec: {holderIdentity: ''}");
        assert_eq!(o.observe(&free, "b", S15, t0), Verdict::Free);
        let no_spec: Lease = obj("metadata: {name: l}");
        assert_eq!(o.observe(&no_spec, "b", S15, t0), Verdict::Free);
        assert_eq!(
            o.observe(&lease("b", "2026-01-01T00:00:00Z", "1"), "b", S15, t0),
            Verdict::Ours
        );
        // Without leaseDurationSeconds the candidate's own duration applies.
        let bare: Lease =
            obj("metadata: {name: l, resourceVersion: '3'}\nspec: {holderIdentity: a}");
        assert!(matches!(
            o.observe(&bare, "b", secs(4), t0),
            Verdict::Held { remaining, .. } if remaining == secs(4)
        ));
        assert_eq!(o.observe(&bare, "b", secs(4), t0 + secs(4)), Verdict::Free);
        // A new holder starts a new count.
        let other = lease("c", "2026-01-01T00:00:00Z", "4");
        assert!(matches!(
            o.observe(&other, "b", S15, t0 + secs(5)),
            Verdict::Held { remaining, .. } if remaining == S15
        ));
    }

    #[test]
    fn the_leader_stops_before_a_standby_may_take_over() {
        let timing = Timing::default();
        timing.validate().expect("defaults are valid");
        let t0 = Instant::now();
        let mut l = Leadership::new(t0, timing.renew_deadline);
        assert!(!l.expired(t0 + secs(9)));
        assert!(l.expired(t0 + secs(10)));
        l.renewed(t0 + secs(5));
        assert!(!l.expired(t0 + secs(14)));
        assert!(l.expired(t0 + secs(15)));
        // An older attempt finishing late does not move the deadline back.
        l.renewed(t0 + secs(1));
        assert!(!l.expired(t0 + secs(14)));
        // A standby that first saw the renewal started at t0+5 no earlier than t0+5 may take
        // over at t0+5+15 at the earliest; the leader stopped at t0+15.
        let mut o = Observer::default();
        let seen = lease("a", "2026-01-01T00:00:05Z", "9");
        o.observe(&seen, "b", timing.lease_duration, t0 + secs(5));
        assert!(l.expired(t0 + secs(15)));
        assert!(matches!(
            o.observe(&seen, "b", timing.lease_duration, t0 + secs(15)),
            Verdict::Held { .. }
        ));
    }

    #[test]
    fn unsafe_timings_are_refused() {
        let ok = Timing::default();
        assert!(ok.validate().is_ok());
        assert_eq!(ok.call_timeout(), secs(5));
        for bad in [
            Timing {
                renew_deadline: secs(15),
                ..ok
            },
            Timing {
                retry_period: secs(10),
                ..ok
            },
            Timing {
                retry_period: Duration::ZERO,
                ..ok
            },
            Timing {
                lease_duration: Duration::from_millis(15_500),
                ..ok
            },
            Timing {
                lease_duration: Duration::from_millis(500),
                renew_deadline: Duration::from_millis(400),
                retry_period: Duration::from_millis(100),
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(LeaderError::Timing(_))),
                "{bad:?}"
            );
        }
    }

    /// Short real-time durations for the tests against a hung API server (valid ones: the
    /// lease is whole seconds).
    const FAST: Timing = Timing {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(400),
        retry_period: Duration::from_millis(100),
    };

    /// A lease API that never answers: each call gives up after the call timeout.
    #[tokio::test]
    async fn a_hung_lease_call_times_out() {
        let mut elector = hung_elector().await;
        let t0 = Instant::now();
        let r = elector.try_acquire_or_renew().await;
        let took = t0.elapsed();
        assert!(
            matches!(r, Err(LeaderError::CallTimeout(d)) if d == FAST.call_timeout()),
            "{r:?}"
        );
        assert!(took >= FAST.call_timeout(), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    /// With every renewal hanging, the leader gives up at the renew deadline.
    #[tokio::test]
    async fn a_leader_whose_renewals_hang_stops_at_the_renew_deadline() {
        let mut elector = hung_elector().await;
        let t0 = Instant::now();
        let leadership = Leadership::new(t0, FAST.renew_deadline);
        let mut errors = 0;
        let why = elector.hold(leadership, |_| errors += 1).await;
        let took = t0.elapsed();
        assert!(matches!(why, LeaderError::RenewDeadline(_)), "{why}");
        assert!(took >= FAST.renew_deadline, "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert!(errors >= 1, "the timed-out calls are reported");
    }

    /// An elector whose API server accepts connections and never answers.
    async fn hung_elector() -> LeaderElector {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().expect("uri"));
        let client = kube::Client::try_from(config).expect("client");
        LeaderElector::new(Api::namespaced(client, "ns"), "l", "me", FAST).expect("elector")
    }
}
