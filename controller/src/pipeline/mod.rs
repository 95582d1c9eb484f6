//! The stages of one reconcile, in order:
//!
//! 1. [`fetch::inputs`] (async): the workspace's nodes (from the reflector) and the
//!    parameters of `inference.config`;
//! 2. [`desired::plan`] (pure): what it runs, or why the spec cannot be satisfied;
//! 3. the provisioner makes sure the nodes exist ([`crate::provision`], async);
//! 4. [`fetch::children`] (async): the StatefulSet and Services, or the Job and ConfigMap;
//! 5. [`desired::children`] (pure): the child objects the workspace wants;
//! 6. [`apply::apply`] (async): writes only the children that differ from what was found
//!    ([`apply::to_write`], pure);
//! 7. [`crate::status::compute`] (pure): the status from what was observed, written only when
//!    it changed; [`next_action`] (pure): when to look again.
//!
//! [`crate::reconcile`] runs them in this order inside kube-runtime's finalizer.

pub mod apply;
pub mod desired;
pub mod fetch;

use std::time::Duration;

use kube::runtime::controller::Action;

/// When to reconcile again after a reconcile that succeeded: after the provisioner's
/// `requeue_after` (a cloud operation in progress); never on its own when the workspace is
/// settled (served, or tuned) or its spec is invalid (a change of the spec wakes it);
/// otherwise a 5-minute safety net (the watches wake it on every change that matters).
pub fn next_action(settled: bool, invalid: bool, requeue_after: Option<Duration>) -> Action {
    if let Some(after) = requeue_after {
        Action::requeue(after)
    } else if settled || invalid {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_or_invalid_workspace_waits_for_a_change() {
        let cloud = Some(Duration::from_secs(10));
        assert_eq!(next_action(true, false, None), Action::await_change());
        assert_eq!(next_action(false, true, None), Action::await_change());
        assert_eq!(
            next_action(false, false, None),
            Action::requeue(Duration::from_secs(300))
        );
        assert_eq!(
            next_action(true, false, cloud),
            Action::requeue(Duration::from_secs(10))
        );
    }
}
