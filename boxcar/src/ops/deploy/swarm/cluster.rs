//! Whether a Swarm can take a deploy, asked before anything is pulled or
//! changed: the engine must be a manager (`is_manager`, `check_cluster`), and
//! its nodes able to run what is asked (`check_nodes`, from a `NodesAsk`).

use std::collections::HashMap;

use bollard::Docker;

use crate::ops::deploy::Error;
use crate::ops::resources;
use crate::vocab::plan::PublishMode;

/// Whether the engine is a Swarm manager (it can take service commands).
pub(crate) async fn is_manager(docker: &Docker) -> bool {
    match docker.info().await {
        Ok(info) => info.swarm.and_then(|s| s.control_available).unwrap_or(false),
        Err(_) => false,
    }
}

/// Before anything is pulled or changed: the engine must be a Swarm
/// manager, and the Swarm's nodes able to run what is asked (`check_nodes`).
pub(crate) async fn check_cluster(docker: &Docker, ask: &NodesAsk<'_>) -> Result<(), Error> {
    if !is_manager(docker).await {
        return Err(Error::NotManager);
    }
    let nodes = docker
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
        .map_err(resources::api("listing the Swarm's nodes"))?;
    check_nodes(ask, &nodes)
}

/// What a deploy asks of a Swarm's nodes.
#[derive(Debug)]
pub(crate) struct NodesAsk<'a> {
    pub(crate) image: &'a str,
    pub(crate) publish_mode: PublishMode,
    pub(crate) port: u16,
    pub(crate) replicas: u64,
}

/// Refuses what a Swarm of these nodes cannot run: an image not pinned by a
/// registry digest on more than one node, and more tasks on one host-mode
/// port than there are nodes to take them.
fn check_nodes(ask: &NodesAsk<'_>, nodes: &[bollard::models::Node]) -> Result<(), Error> {
    use bollard::models::{NodeSpecAvailabilityEnum, NodeState};
    if nodes.len() > 1 && !crate::ops::publish::is_pinned(ask.image) {
        return Err(Error::UnpinnedImage { nodes: nodes.len(), image: ask.image.to_owned() });
    }
    if ask.publish_mode == PublishMode::Host && ask.port != 0 && ask.replicas > 1 {
        let ready = nodes
            .iter()
            .filter(|n| n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY))
            .filter(|n| n.spec.as_ref().and_then(|s| s.availability) == Some(NodeSpecAvailabilityEnum::ACTIVE))
            .count();
        if ask.replicas as usize > ready {
            return Err(Error::TooFewNodes { port: ask.port, ready, replicas: ask.replicas });
        }
    }
    Ok(())
}

/// Node ID → host name, of the Swarm's nodes (empty if the manager does not say).
pub(super) async fn node_names(docker: &Docker) -> HashMap<String, String> {
    let nodes = docker.list_nodes(None::<bollard::query_parameters::ListNodesOptions>).await.unwrap_or_default();
    nodes.into_iter().filter_map(|n| Some((n.id?, n.description?.hostname?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: bool, active: bool) -> bollard::models::Node {
        use bollard::models::{NodeSpec, NodeSpecAvailabilityEnum, NodeState, NodeStatus};
        bollard::models::Node {
            status: Some(NodeStatus {
                state: Some(if ready { NodeState::READY } else { NodeState::DOWN }),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                availability: Some(if active {
                    NodeSpecAvailabilityEnum::ACTIVE
                } else {
                    NodeSpecAvailabilityEnum::DRAIN
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ask(replicas: u64, port: u16, image: &str) -> NodesAsk<'_> {
        NodesAsk { image, publish_mode: PublishMode::Host, port, replicas }
    }

    #[test]
    fn several_nodes_need_a_pinned_image_and_a_node_per_host_port() {
        let pinned = format!("reg.io:5000/svc@sha256:{}", "a".repeat(64));
        let three = [node(true, true), node(true, true), node(true, true)];
        check_nodes(&ask(3, 9000, &pinned), &three).unwrap();
        check_nodes(&ask(1, 9000, "svc:latest"), &three[..1]).unwrap();
        // One task needs no node of its own for its port.
        check_nodes(&ask(1, 9000, "svc:latest"), &[node(false, true)]).unwrap();
        let hub = format!("svc@sha256:{}", "a".repeat(64));
        for unpinned in ["svc:latest", "reg.io:5000/svc:v1", "sha256:abc", hub.as_str()] {
            let err = check_nodes(&ask(1, 9000, unpinned), &three[..2]).unwrap_err().to_string();
            assert!(err.contains("has 2 nodes") && err.contains("image --push"), "{err}");
        }
        // A node down or drained takes no task on the port.
        for nodes in [
            vec![node(true, true), node(true, true), node(false, true)],
            vec![node(true, true), node(true, true), node(true, false)],
        ] {
            let err = check_nodes(&ask(3, 9000, &pinned), &nodes).unwrap_err().to_string();
            assert!(err.contains("2 node(s) are ready for --replicas 3"), "{err}");
            check_nodes(&ask(2, 9000, &pinned), &nodes).unwrap();
            check_nodes(&ask(3, 0, &pinned), &nodes).unwrap();
            check_nodes(&NodesAsk { publish_mode: PublishMode::Ingress, ..ask(3, 9000, &pinned) }, &nodes).unwrap();
        }
    }
}
