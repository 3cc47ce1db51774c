//! A Swarm service's tasks, read through the manager: which serve
//! (`serving`, `running_tasks`), which failed, a rollback let settle
//! (`settle`), why tasks failed and on which node, with the last lines of
//! the latest one's log (`task_report`), and where the service is reachable
//! (`published`).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{EndpointPortConfigPublishModeEnum, Service, Task, TaskState};
use bollard::query_parameters::ListTasksOptionsBuilder;

use super::cluster::node_names;
use crate::ops::resources::{self, api};

/// The image a service's spec runs.
pub(super) fn image_of(service: &Service) -> Option<String> {
    service.spec.as_ref()?.task_template.as_ref()?.container_spec.as_ref()?.image.clone()
}

/// The image a task runs.
pub(super) fn task_image(task: &Task) -> Option<String> {
    task.spec.as_ref()?.container_spec.as_ref()?.image.clone()
}

fn state(task: &Task) -> Option<TaskState> {
    task.status.as_ref()?.state
}

/// A task that should run and does (Swarm counts it as running once healthy).
pub(super) fn serving(task: &Task) -> bool {
    task.desired_state == Some(TaskState::RUNNING) && state(task) == Some(TaskState::RUNNING)
}

/// A task that failed, or that its node rejected.
pub(super) fn failed(task: &Task) -> bool {
    matches!(state(task), Some(TaskState::FAILED | TaskState::REJECTED))
}

/// Tasks that should run and do (Swarm counts a task as running once healthy).
pub(super) async fn running_tasks(docker: &Docker, service: &str) -> Result<usize, resources::Error> {
    let tasks = tasks(docker, service).await?;
    Ok(tasks.iter().filter(|t| serving(t)).count())
}

/// The service's tasks, old and new.
pub(super) async fn tasks(docker: &Docker, service: &str) -> Result<Vec<Task>, resources::Error> {
    let filters: HashMap<String, Vec<String>> = [("service".to_owned(), vec![service.to_owned()])].into();
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    docker.list_tasks(Some(options)).await.map_err(api(format!("listing the tasks of {service}")))
}

/// After the engine says a rollback completed, its last replaced task may
/// still be stopping beside its successor: waits (up to 30 s) until exactly
/// `replicas` tasks serve, so that "the previous version runs" is what
/// `status` shows when `deploy` returns.
pub(super) async fn settle(docker: &Docker, name: &str, replicas: u64) -> Result<(), resources::Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let serving = tasks(docker, name).await?.iter().filter(|t| serving(t)).count() as u64;
        if serving == replicas || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Why tasks failed and on which node, with the last log lines of the
/// latest one (read through the manager, wherever the task ran).
pub(super) async fn task_report(docker: &Docker, failed: &[&Task]) -> String {
    let nodes = node_names(docker).await;
    let host_of = |id: Option<&str>| id.and_then(|id| nodes.get(id)).cloned().unwrap_or_else(|| "?".to_owned());
    let mut out = String::new();
    let mut latest: Option<&Task> = None;
    let mut pull_failed = BTreeSet::new();
    let mut stopped_early = false;
    for t in failed {
        let status = t.status.clone().unwrap_or_default();
        let why = status.err.or(status.message).unwrap_or_default();
        if why.contains("No such image") || why.contains("pull") {
            pull_failed.insert(host_of(t.node_id.as_deref()));
        }
        stopped_early |= matches!(status.state, Some(TaskState::COMPLETE | TaskState::SHUTDOWN));
        out.push_str(&format!(
            "task {} on node {}: {}: {}\n",
            t.id.as_deref().map(|i| i.get(..12).unwrap_or(i)).unwrap_or("?"),
            crate::vocab::show::escape(&host_of(t.node_id.as_deref())),
            status.state.map(|s| s.to_string()).unwrap_or_else(|| "?".to_owned()),
            crate::vocab::show::escape(&why)
        ));
        if latest.is_none_or(|l| format!("{:?}", l.updated_at) < format!("{:?}", t.updated_at)) {
            latest = Some(t);
        }
    }
    if !pull_failed.is_empty() {
        let image = failed.iter().find_map(|t| task_image(t)).unwrap_or_default();
        let registry =
            crate::vocab::show::escape(&crate::ops::publish::registry_of(&image).unwrap_or_default()).into_owned();
        let nodes: Vec<String> = pull_failed.iter().map(|n| crate::vocab::show::escape(n).into_owned()).collect();
        out.push_str(&format!(
            "node(s) {} could not pull the image from {registry}: each node must reach {registry} \
             (network, firewall), trust its CA ({}/{registry}/ca.crt on the node), and be let in with the \
             login `deploy` hands over (Docker's config.json where `deploy` runs)\n",
            nodes.join(", "),
            crate::ops::publish::DOCKER_CERTS_DIR
        ));
    }
    if stopped_early {
        out.push_str(
            "a task that exits or fails its health check before the update's monitor period ends counts as \
             failed: check the image's health check against what the new version serves\n",
        );
    }
    // A task the node rejected never ran: it has no log.
    if let Some(task) = latest.filter(|t| state(t) != Some(TaskState::REJECTED))
        && let Some(id) = task.id.as_deref()
    {
        out.push_str("last log lines of the failed task:\n");
        out.push_str(&task_log_lines(docker, id, 30).await);
    }
    out
}

/// The last lines of a task's log, from whichever node ran it.
async fn task_log_lines(docker: &Docker, task: &str, n: usize) -> String {
    resources::read_log(docker.task_logs(task, Some(resources::tail_options(n)))).await
}

/// Where the service is reachable: the ingress port, or each running task's
/// port on its node.
pub(super) async fn published(docker: &Docker, name: &str) -> Option<String> {
    let service = docker.inspect_service(name, None::<bollard::query_parameters::InspectServiceOptions>).await.ok()?;
    let ports = service.endpoint?.ports?;
    let p = ports.first()?;
    if p.publish_mode != Some(EndpointPortConfigPublishModeEnum::HOST) {
        return Some(format!("*:{} -> {} (ingress: every node)", p.published_port?, p.target_port?));
    }
    let tasks = tasks(docker, name).await.ok()?;
    let mut host_ports: Vec<String> = tasks
        .iter()
        .filter(|t| serving(t))
        .filter_map(|t| {
            let port = t.status.as_ref()?.port_status.as_ref()?.ports.as_ref()?.first()?.published_port?;
            Some(format!("*:{port} -> {} (host mode, slot {})", p.target_port.unwrap_or(0), t.slot.unwrap_or(0)))
        })
        .collect();
    host_ports.sort();
    (!host_ports.is_empty()).then(|| host_ports.join(", "))
}
