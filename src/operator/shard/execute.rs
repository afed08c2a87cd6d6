//! Carries out a replication [`Decision`]: first records it (`spec.primary`, then
//! the status), then acts — Events, Pod deletions, role commands — so an operator
//! restarted in between continues from what was recorded.

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Patch;
use kube::{Api, ResourceExt};

use super::agent;
use super::replication::{Command, Decision, State, command_annotation};
use crate::api::Shard;
use crate::api::shard::ChangeKind;
use crate::operator::context::Context;
use crate::operator::error::{self, Result};
use crate::operator::kubeapi;
use crate::operator::names::ROLE_COMMAND_ANNOTATION;

/// Writes what `decision` decided before anything acts on it: `spec.primary` (after
/// a failover or a rolling update), then the replication state of the status.
/// `shard` is updated to what was written.
pub async fn record(ctx: &Context, shard: &mut Shard, decision: &Decision) -> Result<()> {
    let name = shard.name_any();
    let api: Api<Shard> =
        Api::namespaced(ctx.client.clone(), &shard.namespace().unwrap_or_default());
    if let Some(primary) = &decision.spec_primary {
        let patch = serde_json::json!({ "spec": { "primary": primary } });
        api.patch(&name, &kubeapi::merge_params(), &Patch::Merge(&patch))
            .await
            .map_err(error::api("patch", "Shard", name.clone()))?;
        tracing::info!(%primary, "set spec.primary to the new primary");
        shard.spec.primary = Some(primary.clone());
    }
    if decision.state == State::of(shard) {
        return Ok(());
    }
    let mut status = shard.status.clone().unwrap_or_default();
    decision.state.write_to(&mut status);
    kubeapi::apply_status(&api, &name, &status).await?;
    tracing::info!(
        epoch = status.epoch,
        primary = ?status.primary,
        change = ?status.change.as_ref().map(|c| (c.kind, c.phase, &c.from, &c.to)),
        "recorded the replication state"
    );
    shard.status = Some(status);
    Ok(())
}

/// Acts on a recorded `decision`: Events, metrics, Pod deletions, then the role
/// commands (with the agent token `token`).
pub async fn act(ctx: &Context, shard: &Shard, decision: &Decision, token: &str) -> Result<()> {
    let reference = kubeapi::shard_ref(shard);
    let namespace = shard.namespace().unwrap_or_default();
    for note in &decision.events {
        tracing::info!(reason = note.reason, note = %note.note, "replication");
        if note.warning {
            ctx.warning(&reference, note.reason, "Replication", note.note.clone())
                .await;
        } else {
            ctx.normal(&reference, note.reason, "Replication", note.note.clone())
                .await;
        }
    }
    if let Some(done) = &decision.completed {
        let kind = match done.kind {
            ChangeKind::Failover => "failover",
            ChangeKind::Switchover => "switchover",
        };
        ctx.metrics
            .failover_completed(kind, &namespace, &shard.name_any(), done.seconds);
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    for deletion in &decision.delete_pods {
        if kubeapi::delete(&pods, &deletion.pod).await? {
            tracing::info!(pod = %deletion.pod, reason = deletion.reason, "deleted Pod");
            ctx.warning(&reference, deletion.reason, "Delete", deletion.note.clone())
                .await;
        }
    }
    let sends = decision.commands.iter().map(|c| send(&pods, c, token));
    for failed_fence in join_all(sends).await.into_iter().flatten() {
        if kubeapi::delete(&pods, &failed_fence).await? {
            let note = format!(
                "deleted Pod {failed_fence} to fence the old primary: its agent did not take \
                 the fence command"
            );
            ctx.warning(&reference, "Fenced", "Delete", note).await;
        }
    }
    Ok(())
}

/// Sends one command; records it on the Pod when taken. Returns the Pod to delete
/// when a fence was not taken.
async fn send(pods: &Api<Pod>, command: &Command, token: &str) -> Option<String> {
    let c = &command.command;
    let taken = match agent::send_role(&command.host, token, c).await {
        Ok(answer) if answer.accepted => {
            tracing::info!(pod = %command.pod, epoch = c.epoch, role = ?c.role,
                upstream = ?c.upstream.as_ref().map(|u| u.address()), "role command taken");
            annotate(pods, &command.pod, c).await;
            true
        }
        Ok(answer) => {
            tracing::warn!(pod = %command.pod, epoch = c.epoch, held = answer.epoch,
                message = %answer.message, "role command refused");
            false
        }
        Err(error) => {
            tracing::warn!(pod = %command.pod, %error, "sending a role command failed");
            false
        }
    };
    (!taken && command.fence).then(|| command.pod.clone())
}

/// Records on the Pod that its agent took `command` (best effort: without it the
/// command is only sent again).
async fn annotate(pods: &Api<Pod>, pod: &str, command: &crate::api::agent::RoleCommand) {
    let patch = serde_json::json!({
        "metadata": { "annotations": { ROLE_COMMAND_ANNOTATION: command_annotation(command) } }
    });
    if let Err(error) = pods
        .patch(pod, &kubeapi::merge_params(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(%pod, %error, "annotating the Pod with its role command failed");
    }
}
