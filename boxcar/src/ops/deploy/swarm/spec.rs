//! The Swarm service a deploy sends: `service_spec` (tasks hardened and
//! limited like a standalone container, the key as a secret file, one task
//! at a time updated and rolled back on failure), the image reference pinned
//! so a rollback brings back exactly the previous bytes (`pinned_image`), and
//! the update order when the running service holds a host port
//! (`stop_first_if_port_held`).

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, HealthConfig, Limit, Mount, MountTmpfsOptions,
    MountType, MountVolumeOptions, Service, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecPrivileges, TaskSpecContainerSpecSecrets,
    TaskSpecLogDriver, TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use boxcar_secrets::SECRET_KEY_FILE;

use crate::vocab::labels::{IMAGE_ID as LABEL_IMAGE_ID, SPEC as LABEL_SPEC};
use crate::vocab::layout::{KEY_FILE_NAME, SWARM_KEY_FILE};
use crate::vocab::plan::{HARDENING, Plan, PublishMode};

/// Healthcheck of the service's tasks: Swarm counts a task as running only
/// once it passes, and replaces (or rolls back) one that turns unhealthy.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

const HEALTH_START: Duration = Duration::from_secs(5);

/// How long a new task must stay up for an update step to count as good:
/// longer than the 15 s (interval × retries) it takes to notice a task that
/// turned unhealthy right after its first passing check.
const UPDATE_MONITOR: Duration = Duration::from_secs(30);

/// The reference tasks run: the one asked for when it is pinned by digest,
/// else the image's registry digest when it has one (any node can pull it),
/// else the image ID (only this engine has it). Never a tag: a rollback must
/// bring back exactly the previous image, and a tag may have moved to the
/// broken one.
pub(super) fn pinned_image(requested: &str, image: &bollard::models::ImageInspect, id: &str) -> (String, bool) {
    if crate::ops::publish::is_pinned(requested) {
        return (requested.to_owned(), true);
    }
    // The digest of the repository asked for (`REPO:TAG` → `REPO@sha256:…`),
    // else the first: an image pulled under several names has one of each.
    let repository = requested.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(requested, |(r, _)| r);
    let digests = image.repo_digests.as_deref().unwrap_or_default();
    let same = digests.iter().find(|d| d.split_once('@').is_some_and(|(r, _)| r == repository));
    match same.or(digests.first()) {
        Some(digest) => (digest.clone(), true),
        None => (id.to_owned(), false),
    }
}

/// What decides whether the service already runs what a deploy asks for:
/// the whole spec boxcar would send (image, settings, limits, hardening).
pub(super) fn spec_hash(spec: &ServiceSpec) -> String {
    crate::vocab::plan::spec_hash(&serde_json::to_value(spec).unwrap_or_default())
}

/// The data volume (one per node, shared by a node's old and new tasks), if
/// the service keeps data, and an in-memory /tmp.
fn mounts(plan: &Plan) -> Vec<Mount> {
    let mut mounts = Vec::new();
    if let Some(path) = &plan.service.data {
        mounts.push(Mount {
            typ: Some(MountType::VOLUME),
            source: Some(plan.data_volume()),
            target: Some(path.clone()),
            volume_options: Some(MountVolumeOptions { labels: Some(plan.labels("data")), ..Default::default() }),
            ..Mount::default()
        });
    }
    mounts.push(Mount {
        typ: Some(MountType::TMPFS),
        target: Some(crate::vocab::layout::TMP.to_owned()),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some(16 * 1024 * 1024),
            mode: Some(0o1777),
            ..Default::default()
        }),
        ..Mount::default()
    });
    mounts
}

/// The service boxcar sends for `plan`: its tasks (the image by `reference`,
/// hardened, limited, the key secret mounted as a file), how they update and
/// roll back, and where the port is published.
pub(super) fn service_spec(
    plan: &Plan,
    reference: &str,
    spec_label: &str,
    secret_id: &str,
    secret_name: &str,
    no_new_privileges: bool,
) -> ServiceSpec {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let mut labels = plan.labels("app");
    labels.insert(LABEL_SPEC.to_owned(), spec_label.to_owned());
    labels.insert(LABEL_IMAGE_ID.to_owned(), reference.to_owned());
    // One instance at a time: the old task stops before the new one starts.
    // Several: the new task starts first, no gap, unless it would need the
    // port the old one holds on the node.
    let host_port_held = plan.publish_mode == PublishMode::Host && plan.publish.port != 0;
    let (order, rollback_order) = if plan.many && !host_port_held {
        (ServiceSpecUpdateConfigOrderEnum::START_FIRST, ServiceSpecRollbackConfigOrderEnum::START_FIRST)
    } else {
        (ServiceSpecUpdateConfigOrderEnum::STOP_FIRST, ServiceSpecRollbackConfigOrderEnum::STOP_FIRST)
    };
    let container = container_spec(plan, reference, labels.clone(), (secret_id, secret_name), no_new_privileges);
    ServiceSpec {
        name: Some(plan.name.clone()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources {
                limits: Some(Limit { memory_bytes: Some(plan.memory_bytes), pids: Some(plan.pids()), nano_cpus: None }),
                ..TaskSpecResources::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(nanos(Duration::from_secs(5))),
                max_attempts: None,
                window: None,
            }),
            log_driver: Some(TaskSpecLogDriver {
                name: Some(crate::ops::deploy::LOG_DRIVER.to_owned()),
                options: Some(crate::ops::deploy::log_options()),
            }),
            ..TaskSpec::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(plan.replicas as i64) }),
            ..ServiceSpecMode::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(nanos(UPDATE_MONITOR)),
            max_failure_ratio: Some(0.0),
            order: Some(order),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(nanos(UPDATE_MONITOR)),
            max_failure_ratio: Some(0.0),
            order: Some(rollback_order),
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                target_port: Some(i64::from(plan.service.port)),
                published_port: (plan.publish.port != 0).then_some(i64::from(plan.publish.port)),
                protocol: Some(bollard::models::EndpointPortConfigProtocolEnum::TCP),
                publish_mode: Some(match plan.publish_mode {
                    PublishMode::Ingress => EndpointPortConfigPublishModeEnum::INGRESS,
                    PublishMode::Host => EndpointPortConfigPublishModeEnum::HOST,
                }),
                name: None,
            }]),
            ..EndpointSpec::default()
        }),
        ..ServiceSpec::default()
    }
}

/// The tasks' container: the image by `reference`, hardened (no new
/// privileges only where the engine's API can say so), the key secret
/// mounted as a file of the service's user, the image's own health check.
fn container_spec(
    plan: &Plan,
    reference: &str,
    labels: HashMap<String, String>,
    (secret_id, secret_name): (&str, &str),
    no_new_privileges: bool,
) -> TaskSpecContainerSpec {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    TaskSpecContainerSpec {
        image: Some(reference.to_owned()),
        // The spec label on the task makes every change a rolling update.
        labels: Some(labels),
        env: Some(vec![
            format!("{}={}", boxcar_secrets::DEPLOY_ENV, plan.env),
            format!("{SECRET_KEY_FILE}={SWARM_KEY_FILE}"),
        ]),
        user: Some(format!("{0}:{0}", plan.service.user)),
        read_only: Some(HARDENING.read_only_root),
        capability_drop: Some(HARDENING.cap_drop()),
        privileges: (no_new_privileges && HARDENING.no_new_privileges)
            .then(|| TaskSpecContainerSpecPrivileges { no_new_privileges: Some(true), ..Default::default() }),
        mounts: Some(mounts(plan)),
        stop_grace_period: Some(nanos(Duration::from_secs(10))),
        health_check: Some(HealthConfig {
            // No test: the engine keeps the image's HEALTHCHECK command and
            // takes only the timing from here.
            test: None,
            interval: Some(nanos(HEALTH_INTERVAL)),
            timeout: Some(nanos(Duration::from_secs(3))),
            retries: Some(3),
            start_period: Some(nanos(HEALTH_START)),
            start_interval: None,
        }),
        secrets: Some(vec![TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(KEY_FILE_NAME.to_owned()),
                uid: Some(plan.service.user.to_string()),
                gid: Some(plan.service.user.to_string()),
                mode: Some(0o400),
            }),
            secret_id: Some(secret_id.to_owned()),
            secret_name: Some(secret_name.to_owned()),
        }]),
        ..TaskSpecContainerSpec::default()
    }
}

/// An update away from a fixed host-mode port stops each old task first,
/// as one to it does: a new task started beside an old one that holds the
/// port on its node waits forever ("host-mode port already in use"), on
/// Docker 20.10 even when the new spec asks for another port.
pub(super) fn stop_first_if_port_held(mut spec: ServiceSpec, running: &Service) -> ServiceSpec {
    let ports = running.spec.as_ref().and_then(|s| s.endpoint_spec.as_ref()).and_then(|e| e.ports.as_ref());
    let held = ports.is_some_and(|ports| {
        ports.iter().any(|p| {
            p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST) && p.published_port.is_some_and(|n| n != 0)
        })
    });
    if held && let Some(update) = spec.update_config.as_mut() {
        update.order = Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST);
    }
    spec
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::vocab::labels::DEPLOYMENT as LABEL_DEPLOYMENT;
    use crate::vocab::plan::{Deployment, KeyDelivery, Publish, Request};

    pub(in crate::ops::deploy::swarm) fn plan(many: bool) -> Plan {
        let key = boxcar_secrets::SecretKey::generate();
        let request = Request {
            env: "production".into(),
            name: None,
            replicas: 1,
            many,
            memory_mib: None,
            publish: Publish { address: None, port: 9000 },
            publish_mode: PublishMode::Ingress,
        };
        let deployment = Deployment::new(&crate::vocab::contract::tests::service(), request, key.key_id()).unwrap();
        Plan {
            deployment,
            key: std::sync::Arc::new(key),
            image: "svc:latest".into(),
            key_delivery: KeyDelivery::Auto,
            timeout: Duration::from_secs(60),
            network: None,
        }
    }

    #[test]
    fn leaving_a_fixed_host_port_stops_first() {
        let p = plan(true);
        let new = service_spec(&p, "i", "h", "sid", "n", false);
        assert_eq!(new.update_config.as_ref().unwrap().order, Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST));
        let running = |mode, port| Service {
            spec: Some(ServiceSpec {
                endpoint_spec: Some(EndpointSpec {
                    ports: Some(vec![EndpointPortConfig {
                        publish_mode: Some(mode),
                        published_port: port,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let order = |s: ServiceSpec| s.update_config.unwrap().order;
        let host = EndpointPortConfigPublishModeEnum::HOST;
        let ingress = EndpointPortConfigPublishModeEnum::INGRESS;
        assert_eq!(
            order(stop_first_if_port_held(new.clone(), &running(host, Some(9000)))),
            Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST)
        );
        for (mode, port) in [(host, Some(0)), (host, None), (ingress, Some(9000))] {
            assert_eq!(
                order(stop_first_if_port_held(new.clone(), &running(mode, port))),
                Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
                "{mode:?} {port:?}"
            );
        }
        assert_eq!(order(stop_first_if_port_held(new.clone(), &Service::default())), order(new));
    }

    #[test]
    fn the_pinned_reference_wins() {
        let pinned = format!("reg.io/svc@sha256:{}", "b".repeat(64));
        let digest = format!("reg.io/svc@sha256:{}", "c".repeat(64));
        let with = bollard::models::ImageInspect { repo_digests: Some(vec![digest.clone()]), ..Default::default() };
        let without = bollard::models::ImageInspect::default();
        assert_eq!(pinned_image(&pinned, &with, "sha256:id"), (pinned.clone(), true));
        assert_eq!(pinned_image("reg.io/svc:v1", &with, "sha256:id"), (digest.clone(), true));
        // Pulled under two names: the digest of the one asked for.
        let other = format!("other.io:5000/team/svc@sha256:{}", "d".repeat(64));
        let both = bollard::models::ImageInspect {
            repo_digests: Some(vec![digest.clone(), other.clone()]),
            ..Default::default()
        };
        assert_eq!(pinned_image("other.io:5000/team/svc:v1", &both, "sha256:id"), (other, true));
        assert_eq!(
            pinned_image("other.io:5000/team/svc", &both, "sha256:id").0,
            format!("other.io:5000/team/svc@sha256:{}", "d".repeat(64))
        );
        assert_eq!(pinned_image("svc:latest", &both, "sha256:id"), (digest, true));
        assert_eq!(pinned_image("svc:latest", &without, "sha256:id"), ("sha256:id".to_owned(), false));
    }

    #[test]
    fn one_instance_stops_first_and_many_start_first() {
        let spec = service_spec(&plan(false), "sha256:1", "h", "sid", "svc-production-key-x", false);
        let update = spec.update_config.unwrap();
        assert_eq!(update.order, Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST));
        assert_eq!(update.failure_action, Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK));
        let spec = service_spec(&plan(true), "sha256:1", "h", "sid", "svc-production-key-x", false);
        assert_eq!(spec.update_config.unwrap().order, Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST));
        // Several on a fixed host port: the old task holds the port, so it stops first.
        for (port, order) in
            [(9000, ServiceSpecUpdateConfigOrderEnum::STOP_FIRST), (0, ServiceSpecUpdateConfigOrderEnum::START_FIRST)]
        {
            let mut p = plan(true);
            let request = Request {
                env: "production".into(),
                name: None,
                replicas: 3,
                many: true,
                memory_mib: None,
                publish: Publish { address: None, port },
                publish_mode: PublishMode::Host,
            };
            p.deployment = Deployment::new(&crate::vocab::contract::tests::service(), request, p.key.key_id()).unwrap();
            let spec = service_spec(&p, "sha256:1", "h", "sid", "svc-production-key-x", false);
            assert_eq!(spec.update_config.unwrap().order, Some(order), "port {port}");
        }
    }

    #[test]
    fn the_spec_holds_the_secret_by_reference_only() {
        let p = plan(false);
        let spec = service_spec(&p, "sha256:1", "h", "sid", "svc-production-key-x", true);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains(p.key.to_base64().as_str()));
        let c = spec.task_template.unwrap().container_spec.unwrap();
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.capability_drop.unwrap(), ["ALL"]);
        assert!(c.env.unwrap().contains(&format!("SECRET_KEY_FILE={SWARM_KEY_FILE}")));
        let secret = &c.secrets.unwrap()[0];
        assert_eq!(secret.file.as_ref().unwrap().mode, Some(0o400));
        assert_eq!(secret.file.as_ref().unwrap().uid.as_deref(), Some("1000"));
        assert_eq!(secret.file.as_ref().unwrap().name.as_deref(), Some("boxcar-key"));
        let mounts = c.mounts.unwrap();
        assert_eq!(mounts[0].target.as_deref(), Some("/var/lib/svc"));
        assert_eq!(mounts[0].source.as_deref(), Some("svc-production-data"));
    }

    #[test]
    fn the_spec_is_the_whole_deployment() {
        let p = plan(true);
        let spec = service_spec(&p, "reg.io/svc@sha256:1", "hash", "sid", "svc-production-key-x", true);
        assert_eq!(spec.name.as_deref(), Some("svc-production"));
        let labels = spec.labels.clone().unwrap();
        assert_eq!(labels[LABEL_DEPLOYMENT], "svc-production");
        assert_eq!((labels[LABEL_SPEC].as_str(), labels[LABEL_IMAGE_ID].as_str()), ("hash", "reg.io/svc@sha256:1"));
        let task = spec.task_template.clone().unwrap();
        let c = task.container_spec.clone().unwrap();
        assert_eq!(c.image.as_deref(), Some("reg.io/svc@sha256:1"));
        assert_eq!(c.labels.as_ref(), Some(&labels), "the task carries the spec label: every change rolls");
        assert_eq!(c.privileges.and_then(|p| p.no_new_privileges), Some(true));
        assert_eq!(c.stop_grace_period, Some(10_000_000_000));
        let health = c.health_check.unwrap();
        assert_eq!(health.test, None, "the image's own HEALTHCHECK command");
        assert_eq!(
            (health.interval, health.retries, health.start_period),
            (Some(5_000_000_000), Some(3), Some(5_000_000_000))
        );
        let mounts = c.mounts.unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[0].volume_options.as_ref().and_then(|o| o.labels.as_ref()), Some(&p.labels("data")));
        assert_eq!((mounts[1].typ, mounts[1].target.as_deref()), (Some(MountType::TMPFS), Some("/tmp")));
        let tmpfs = mounts[1].tmpfs_options.clone().unwrap();
        assert_eq!((tmpfs.size_bytes, tmpfs.mode), (Some(16 * 1024 * 1024), Some(0o1777)));
        let limits = task.resources.unwrap().limits.unwrap();
        assert_eq!((limits.memory_bytes, limits.pids), (Some(p.memory_bytes), Some(p.pids())));
        assert_eq!(task.restart_policy.unwrap().condition, Some(TaskSpecRestartPolicyConditionEnum::ANY));
        let log = task.log_driver.unwrap();
        assert_eq!((log.name.as_deref(), log.options.unwrap()["max-size"].as_str()), (Some("json-file"), "10m"));
        assert_eq!(spec.mode.unwrap().replicated.unwrap().replicas, Some(p.replicas as i64));
        let rollback = spec.rollback_config.unwrap();
        assert_eq!(rollback.order, Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST));
        assert_eq!(rollback.failure_action, Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE));
        let port = &spec.endpoint_spec.unwrap().ports.unwrap()[0];
        assert_eq!((port.target_port, port.published_port), (Some(9000), Some(9000)));
        assert_eq!(port.publish_mode, Some(EndpointPortConfigPublishModeEnum::INGRESS));
        // No new privileges only where the engine's API can say so.
        let old_api = service_spec(&p, "i", "h", "sid", "n", false);
        assert!(old_api.task_template.unwrap().container_spec.unwrap().privileges.is_none());
    }
}
