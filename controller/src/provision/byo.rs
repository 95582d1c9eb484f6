//! The `byo` provisioner: bring your own nodes; the controller creates and deletes none.

use kaito_api::Workspace;

use super::{NodeProvisioner, ProvisionError, ProvisionReport};
use crate::plan::WorkspacePlan;

/// Bring your own nodes: nothing to create, nothing to remove.
#[derive(Clone, Debug, Default)]
pub struct Byo;

impl NodeProvisioner for Byo {
    async fn ensure(
        &self,
        _: &Workspace,
        _: &WorkspacePlan,
    ) -> Result<ProvisionReport, ProvisionError> {
        Ok(ProvisionReport::default())
    }
    async fn release(&self, _: &Workspace) -> Result<bool, ProvisionError> {
        Ok(true)
    }
    fn cleanup_hint(&self, _: &Workspace) -> String {
        "nothing (bring-your-own nodes are never created or deleted by the controller)".into()
    }
}
