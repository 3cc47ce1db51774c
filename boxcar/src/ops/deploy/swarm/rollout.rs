//! A Swarm service rolled out and watched until it converges: a first deploy
//! (`create`) waits for its tasks and removes a service that does not start;
//! an update (`update`) waits for the engine's word, and a rollback or a pause
//! is reported with the new version's failed tasks.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{Service, ServiceSpec, ServiceUpdateStatus, ServiceUpdateStatusStateEnum, Task, TaskState};
use bollard::query_parameters::UpdateServiceOptions;

use super::tasks::{failed, serving, settle, task_image, task_report, tasks};
use crate::ops::deploy::Error;
use crate::ops::resources::api;
use crate::vocab::plan::Plan;
use crate::vocab::show::escape;

/// Failed tasks of a first deploy before boxcar gives up and removes it.
const FIRST_DEPLOY_FAILURES: usize = 3;

/// Creates the service and waits until `plan.replicas` tasks serve; removes
/// it when too many tasks fail or the deploy's timeout passes.
pub(super) async fn create(
    docker: &Docker,
    plan: &Plan,
    spec: ServiceSpec,
    login: Option<DockerCredentials>,
) -> Result<(), Error> {
    let name = &plan.name;
    docker.create_service(spec, login).await.map_err(api(format!("creating the service {name}")))?;
    eprintln!("waiting for {} task(s) of {name} to pass their healthcheck", plan.replicas);
    let deadline = Instant::now() + plan.timeout;
    loop {
        let tasks = tasks(docker, name).await?;
        let running = tasks.iter().filter(|t| serving(t)).count();
        let failed: Vec<&Task> = tasks.iter().filter(|t| failed(t)).collect();
        if running as u64 >= plan.replicas {
            return Ok(());
        }
        let why = if failed.len() >= FIRST_DEPLOY_FAILURES {
            Some(format!("{} task(s) failed", failed.len()))
        } else if Instant::now() > deadline {
            Some(format!("not every task was healthy after {}", humantime::format_duration(plan.timeout)))
        } else {
            None
        };
        if let Some(why) = why {
            let report = task_report(docker, &failed).await;
            remove_service(docker, name).await;
            return Err(Error::ServiceNotStarted { name: name.clone(), why, report });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Updates the running `service` to `spec` (its tasks on `new_image`) and
/// waits until the engine says the update completed, rolled back or paused,
/// or the deploy's timeout passes.
pub(super) async fn update(
    docker: &Docker,
    plan: &Plan,
    service: &Service,
    spec: ServiceSpec,
    new_image: &str,
    login: Option<DockerCredentials>,
) -> Result<(), Error> {
    let name = &plan.name;
    let before = service.update_status.as_ref().map(|s| format!("{:?}", s.started_at));
    let started = Instant::now();
    send_update(docker, name, service, spec, login).await?;
    eprintln!("waiting for the update of {name} to converge (one task at a time, rolled back on failure)");
    let deadline = started + plan.timeout;
    let mut last_state = None;
    // Why the engine rolled back, as it said when it started to.
    let mut reason = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = docker
            .inspect_service(name, None::<bollard::query_parameters::InspectServiceOptions>)
            .await
            .map_err(api(format!("inspecting the service {name}")))?;
        let status = now.update_status.clone().unwrap_or_default();
        // The state of this update, not one before it.
        let fresh = status.started_at.is_some() && Some(format!("{:?}", status.started_at)) != before;
        if fresh && status.state != last_state {
            if let Some(s) = status.state {
                eprintln!("update: {s} ({:.1} s)", started.elapsed().as_secs_f64());
            }
            last_state = status.state;
        }
        if fresh && reason.is_none() && status.state == Some(ServiceUpdateStatusStateEnum::ROLLBACK_STARTED) {
            reason = Some(status.message.clone().unwrap_or_default());
        }
        match status.state.filter(|_| fresh) {
            Some(ServiceUpdateStatusStateEnum::COMPLETED) => return Ok(()),
            Some(
                ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED
                | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED
                | ServiceUpdateStatusStateEnum::PAUSED,
            ) => {
                return Err(failed_update(docker, plan, new_image, &status, reason.as_deref(), started).await);
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(Error::UpdateTimeout {
                name: name.clone(),
                timeout: plan.timeout,
                state: status.state.map(|s| s.to_string()).unwrap_or_else(|| "not started".to_owned()),
            });
        }
    }
}

/// Sends the new spec, at the version of the service as read.
async fn send_update(
    docker: &Docker,
    name: &str,
    service: &Service,
    spec: ServiceSpec,
    login: Option<DockerCredentials>,
) -> Result<(), Error> {
    let version = service.version.as_ref().and_then(|v| v.index).ok_or(Error::NoServiceVersion)?;
    let options = UpdateServiceOptions {
        version: i32::try_from(version).map_err(|source| Error::ServiceVersion { source })?,
        ..UpdateServiceOptions::default()
    };
    docker.update_service(name, spec, options, login).await.map_err(api(format!("updating the service {name}")))?;
    Ok(())
}

/// An update the engine rolled back or paused, with the engine's message,
/// the `reason` it gave when the rollback started, and the report of the new
/// version's tasks it stopped.
async fn failed_update(
    docker: &Docker,
    plan: &Plan,
    new_image: &str,
    status: &ServiceUpdateStatus,
    reason: Option<&str>,
    started: Instant,
) -> Error {
    let name = &plan.name;
    let rolled_back = status.state == Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED);
    if rolled_back && let Err(e) = settle(docker, name, plan.replicas).await {
        return e.into();
    }
    let tasks = match tasks(docker, name).await {
        Ok(tasks) => tasks,
        Err(e) => return e.into(),
    };
    // The new version's tasks the engine stopped: failed, or
    // shut down by the rollback while still starting.
    let failed: Vec<&Task> = tasks
        .iter()
        .filter(|t| task_image(t).as_deref() == Some(new_image))
        .filter(|t| failed(t) || t.desired_state != Some(TaskState::RUNNING))
        .collect();
    let report = task_report(docker, &failed).await;
    let message = status.message.clone().unwrap_or_default();
    let message = match reason {
        Some(why) if !why.is_empty() => format!("{} ({})", escape(&message), escape(why)),
        _ => escape(&message).into_owned(),
    };
    Error::UpdateFailed { name: name.clone(), after: started.elapsed(), message, rolled_back, report }
}

/// Removes a service on a path that reports something else: failures are warnings.
async fn remove_service(docker: &Docker, name: &str) {
    if let Err(e) = docker.delete_service(name).await {
        eprintln!("warning: could not remove the service {name}: {e}");
    }
}
