//! The key of a Swarm deployment as a Swarm secret, `<name>-key-<key id>`:
//! made once per key (`ensure_secret`, `secret_spec`), never in the service
//! spec itself, and removed once no service uses it.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::SecretSpec;
use bollard::query_parameters::ListSecretsOptionsBuilder;

use crate::ops::resources::{self, api};
use crate::vocab::labels::DEPLOYMENT as LABEL_DEPLOYMENT;
use crate::vocab::plan::{Plan, filters};

/// The secret for the plan's key: reused when boxcar made it before, created
/// otherwise. Returns its ID, name, and whether it was created now.
pub(super) async fn ensure_secret(docker: &Docker, plan: &Plan) -> Result<(String, String, bool), resources::Error> {
    let name = plan.key_resource();
    if let Some(secret) = find_secret(docker, &name).await? {
        let labels = secret.spec.as_ref().and_then(|s| s.labels.clone()).unwrap_or_default();
        if labels.get(LABEL_DEPLOYMENT) != Some(&plan.name) {
            return Err(resources::Error::NotOurs { kind: "Swarm secret", name });
        }
        return Ok((secret.id.unwrap_or_default(), name, false));
    }
    let created =
        docker.create_secret(secret_spec(plan)).await.map_err(api(format!("creating the Swarm secret {name}")))?;
    Ok((created.id, name, true))
}

/// The Swarm secret of the plan's key: the key file's bytes, base64 as the
/// API takes them, named and labelled for the deployment.
fn secret_spec(plan: &Plan) -> SecretSpec {
    let mut data = zeroize::Zeroizing::new(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &plan.key_file_bytes()[..],
    ));
    SecretSpec {
        name: Some(plan.key_resource()),
        labels: Some(plan.labels("key")),
        // Moved out of the wiping wrapper into the request, which cannot wipe it.
        data: Some(std::mem::take(&mut *data)),
        ..SecretSpec::default()
    }
}

async fn find_secret(docker: &Docker, name: &str) -> Result<Option<bollard::models::Secret>, resources::Error> {
    let filters: HashMap<String, Vec<String>> = [("name".to_owned(), vec![name.to_owned()])].into();
    let options = ListSecretsOptionsBuilder::default().filters(&filters).build();
    let secrets = docker.list_secrets(Some(options)).await.map_err(api("listing Swarm secrets"))?;
    // The name filter matches prefixes too.
    Ok(secrets.into_iter().find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name)))
}

/// Whether any service of the Swarm mounts the secret.
pub(super) async fn secret_in_use(docker: &Docker, secret_name: &str) -> bool {
    let services = docker.list_services(None::<bollard::query_parameters::ListServicesOptions>).await;
    services.unwrap_or_default().iter().any(|s| {
        let secrets = s.spec.as_ref().and_then(|s| s.task_template.as_ref()).and_then(|t| t.container_spec.as_ref());
        secrets
            .and_then(|c| c.secrets.as_ref())
            .is_some_and(|list| list.iter().any(|r| r.secret_name.as_deref() == Some(secret_name)))
    })
}

/// Removes a secret on a path that reports something else: failures are warnings.
pub(super) async fn delete_secret(docker: &Docker, name: &str) {
    match docker.delete_secret(name).await {
        Ok(()) => eprintln!("removed the Swarm secret {name}"),
        Err(e) => eprintln!("warning: could not remove the Swarm secret {name}: {e}"),
    }
}

/// Removes this deployment's key secrets other than `keep` that no service uses.
pub(super) async fn remove_unused_secrets(docker: &Docker, name: &str, keep: &str) {
    let options = ListSecretsOptionsBuilder::default().filters(&filters(name)).build();
    for secret in docker.list_secrets(Some(options)).await.unwrap_or_default() {
        let Some(secret_name) = secret.spec.as_ref().and_then(|s| s.name.clone()) else { continue };
        if secret_name != keep && !secret_in_use(docker, &secret_name).await {
            delete_secret(docker, &secret_name).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::deploy::swarm::spec::tests::plan;

    #[test]
    fn the_secret_holds_the_key_file() {
        let p = plan(false);
        let spec = secret_spec(&p);
        assert_eq!(spec.name, Some(p.key_resource()));
        assert_eq!(spec.labels, Some(p.labels("key")));
        let data = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, spec.data.unwrap()).unwrap();
        assert_eq!(data, p.key_file_bytes()[..]);
        assert!(!format!("{:?}", SecretSpec { data: None, ..secret_spec(&p) }).contains(p.key.to_base64().as_str()));
    }
}
