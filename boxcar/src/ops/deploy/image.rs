//! The image a deploy runs, checked before anything changes: found in the
//! engine or pulled from its registry (`inspect_or_pull`, `pull_hint` for
//! what went wrong), its copy of the environment file and its run-time
//! contract approved by the key (`image_environment`), and the service's own
//! check and instance rule asked of it (`service_answers`).

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::ImageInspect;

use super::Error;
use crate::adapters::engine::is_not_found;
use crate::ops::{publish, resources, service_cmd};
use crate::vocab::contract::{Instances, Service};
use crate::vocab::show::escape;

/// The engine's login for the image's registry, when it names one: it
/// pulls with it, and a Swarm manager hands it to the nodes.
pub(super) fn login(image: &str) -> Result<Option<DockerCredentials>, Error> {
    match publish::registry_of(image) {
        Some(registry) => Ok(publish::credentials(&registry).map_err(Error::Login)?.map(|c| c.for_engine(&registry))),
        None => Ok(None),
    }
}

/// The image as the engine has it; a registry reference it lacks is pulled
/// first.
pub(super) async fn inspect_or_pull(docker: &Docker, image: &str) -> Result<ImageInspect, Error> {
    let inspecting = || resources::api(format!("inspecting the image {}", escape(image)));
    match docker.inspect_image(image).await {
        Ok(found) => Ok(found),
        Err(e) if is_not_found(&e) && publish::registry_of(image).is_some() => {
            pull(docker, image, login(image)?).await?;
            Ok(docker.inspect_image(image).await.map_err(inspecting())?)
        }
        Err(e) if is_not_found(&e) => Err(Error::NoImage { image: image.to_owned() }),
        Err(e) => Err(inspecting()(e).into()),
    }
}

/// What the image would start on: its copy of the environment file must be
/// approved by this key, and approve the run-time contract the image was
/// built with (`/etc/boxcar/service.toml`), or the service refuses to start.
/// Each says what to do: an image built before an approval is built again.
pub(super) async fn image_environment(
    docker: &Docker,
    image: &str,
    image_id: &str,
    deployment: &str,
    (service, service_arg): (&Service, &str),
    file: &boxcar_secrets::EnvFile,
    key: &boxcar_secrets::SecretKey,
) -> Result<(), Error> {
    let in_image = Service::env_file_in_image(file.env());
    let read =
        service_cmd::files_in_image(docker, image_id, deployment, &[&in_image, boxcar_secrets::IMAGE_SERVICE_FILE])
            .await?;
    let Some(Some(bytes)) = read.first() else {
        return Err(Error::NoEnvFileInImage {
            image: image.to_owned(),
            env: file.env().to_owned(),
            in_image,
            service_arg: service_arg.to_owned(),
        });
    };
    let copy = boxcar_secrets::EnvFile::parse(std::path::Path::new(&in_image), &String::from_utf8_lossy(bytes))
        .map_err(|e| Error::ImageEnvFile(Box::new(e)))?
        .for_service(Some(&service.name));
    let approved = copy.approval_with(key).map_err(|why| Error::NotApproved {
        image: image.to_owned(),
        why: Box::new(why),
        service_arg: service_arg.to_owned(),
    })?;
    if let Some(Some(text)) = read.get(1) {
        let runtime = boxcar_secrets::ServiceFile::parse(&String::from_utf8_lossy(text))
            .map_err(|e| Error::ImageServiceFile(Box::new(e)))?;
        runtime.check(copy.table()).map_err(|why| Error::ContractNotApproved {
            image: image.to_owned(),
            env: file.env().to_owned(),
            why: Box::new(why),
            service_arg: service_arg.to_owned(),
        })?;
    }
    if let Ok(here) = file.approval()
        && here.serial != approved.serial
    {
        eprintln!(
            "warning: {} carries serial {} of environment `{}`; the work tree's file is serial {}: the service \
             runs on what the image carries ({} to ship the work tree's)",
            escape(image),
            approved.serial,
            file.env(),
            here.serial,
            super::error::build_again(service_arg)
        );
    }
    Ok(())
}

/// Pulls a registry reference into the engine with `login`; the engine
/// checks what it gets against a digest in the reference.
async fn pull(docker: &Docker, image: &str, login: Option<DockerCredentials>) -> Result<(), Error> {
    use futures::StreamExt as _;
    let registry = publish::registry_of(image).unwrap_or_default();
    eprintln!("pulling {} into the engine (the service's own check runs it before anything changes)", escape(image));
    // Repository and tag (or digest) apart: a repository alone would pull every tag.
    let reference = oci_client::Reference::try_from(image)
        .map_err(|e| Error::NotAReference { image: image.to_owned(), why: e.to_string() })?;
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    let tag = reference.digest().or(reference.tag()).unwrap_or("latest");
    let options =
        bollard::query_parameters::CreateImageOptionsBuilder::default().from_image(&repository).tag(tag).build();
    let mut stream = docker.create_image(Some(options), None, login.clone());
    while let Some(item) = stream.next().await {
        let why = match item {
            Ok(info) => match info.error_detail.and_then(|d| d.message) {
                Some(message) => message,
                None => continue,
            },
            Err(e) => e.to_string(),
        };
        let hint = pull_hint(&why, &registry, login.is_some());
        return Err(Error::Pull { image: image.to_owned(), why, hint });
    }
    Ok(())
}

/// What to do about an engine's pull error (its words, from the registry).
fn pull_hint(why: &str, registry: &str, had_login: bool) -> String {
    let registry = escape(registry);
    let why = why.to_lowercase();
    let auth = ["unauthorized", "denied", "authentication required", "no basic auth credentials"];
    if auth.iter().any(|a| why.contains(a)) {
        match had_login {
            true => format!("the registry refused the login in Docker's config.json; `docker login {registry}` again"),
            false => format!("the registry wants a login: `docker login {registry}` (boxcar passes it to the engine)"),
        }
    } else if why.contains("certificate") {
        format!(
            "the engine does not trust the registry's TLS certificate: put its CA in \
             {}/{registry}/ca.crt on every engine that pulls",
            publish::DOCKER_CERTS_DIR
        )
    } else if why.contains("manifest unknown") || why.contains("not found") {
        "the registry has no such image: check the reference `cargo xtask image --push` printed".to_owned()
    } else if why.contains("connect") || why.contains("no such host") || why.contains("timeout") {
        format!("the engine cannot reach {registry}: check the address, and that the engine's host reaches it")
    } else {
        "check the reference and the registry".to_owned()
    }
}

/// The service's own check of the environment file the image carries, and
/// its instance rule: both from the image about to be deployed, before
/// anything changes. Returns whether several instances may run.
pub(super) async fn service_answers(
    docker: &Docker,
    image_id: &str,
    name: &str,
    service: &Service,
    env: &str,
) -> Result<bool, Error> {
    let file = Service::env_file_in_image(env);
    if let Some(args) = &service.check {
        let answer = service_cmd::in_image(docker, image_id, name, service, args, &file).await?;
        if answer.code != 0 {
            return Err(Error::CheckFailed {
                env: env.to_owned(),
                command: service_cmd::describe(service, args),
                lines: answer.lines(),
            });
        }
        eprintln!("the service's own check passed: `{}` on {file}", service_cmd::describe(service, args));
    }
    match &service.instances {
        Instances::One => Ok(false),
        Instances::Many => Ok(true),
        Instances::Ask(args) => {
            let answer = service_cmd::in_image(docker, image_id, name, service, args, &file).await?;
            Ok(service_cmd::many_from(service, args, &answer)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pull_hint;

    #[test]
    fn pull_errors_get_what_to_do() {
        let hint = |why: &str, login: bool| pull_hint(why, "reg.io:5000", login);
        let denied = "Head https://reg.io:5000/v2/x/manifests/sha256:1: no basic auth credentials";
        assert!(hint(denied, false).contains("`docker login reg.io:5000`"), "{}", hint(denied, false));
        for why in ["unauthorized: authentication required", "denied: requested access to the resource is denied"] {
            assert!(hint(why, true).contains("refused the login"), "{}", hint(why, true));
            assert!(hint(why, false).contains("wants a login"), "{}", hint(why, false));
        }
        let x509 = "Get https://reg.io:5000/v2/: x509: certificate signed by unknown authority";
        assert!(hint(x509, true).contains("/etc/docker/certs.d/reg.io:5000/ca.crt"), "{}", hint(x509, true));
        assert!(hint("manifest unknown: manifest unknown", true).contains("has no such image"));
        let refused = "dial tcp 10.0.0.1:5000: connect: connection refused";
        assert!(hint(refused, true).contains("cannot reach reg.io:5000"), "{}", hint(refused, true));
        assert!(hint("i/o timeout", true).contains("cannot reach"));
        assert!(hint("lookup reg.io: no such host", true).contains("cannot reach"));
        assert_eq!(hint("something else", true), "check the reference and the registry");
        // A registry name is escaped before it reaches a terminal.
        assert!(!pull_hint("connect: refused", "reg\u{1b}[2J.io", true).contains('\u{1b}'));
    }
}
