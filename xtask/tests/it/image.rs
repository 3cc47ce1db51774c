//! `cargo xtask image` against a real Docker engine, in a scratch copy of this
//! checkout: the image builds, passes its check, runs as 65532 and answers
//! /healthz; a rebuild that recompiles the app gives the same image ID; a dirty
//! tree is labelled; a failing compile tags nothing. Everything created here
//! has a unique name and is removed at the end; the shared build caches
//! (volumes boxcar-cargo-*, boxcar-target-*) are left in place.

use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, PortBinding};
use bollard::query_parameters::CreateContainerOptionsBuilder;

use crate::support::{Sweep, engine, test_name, wait_healthz};
use crate::{Checkout, Run};

fn image_id(run: &Run) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("image      sha256:"))
        .map(|id| format!("sha256:{id}"))
        .unwrap_or_else(|| panic!("no image ID in:\n{}", run.stdout))
}

#[test]
fn image_builds_checks_runs_and_reproduces() {
    let (rt, docker) = engine().expect("these tests need a Docker engine (cargo xtask test and .ci/run start one)");
    let repo = test_name("boxcar-test");
    // Its images and its containers (`<repo>-…`), whatever happens to the test.
    let _cleanup = Sweep::new(&[], std::slice::from_ref(&repo));
    let settings = "\n[app]\napi_base = \"http://127.0.0.1:9\"\n\n[[bots]]\nname = \"imagetest\"\ntoken_secret = \"imagetest_token\"\n";
    let checkout =
        Checkout::new("imagetest", &[("imagetest_token", "3001:image-test-token-AAAAAAAAAAAAAAAAAAAAAAAAA")], settings);
    let key = checkout.key_file();

    // Build, with the key supplied so the check searches for every plaintext.
    let first = checkout.run(&["image", "--repo", &repo, "--key-file", key.to_str().unwrap()]).ok();
    let id = image_id(&first);
    assert!(
        first.stderr.contains("image check: searching for 1 value(s) and the key of `imagetest`"),
        "{}",
        first.stderr
    );
    assert!(first.stdout.contains("user       65532:65532"), "{}", first.stdout);
    assert!(
        first.stdout.contains(&format!("label      org.opencontainers.image.revision={}", checkout.head())),
        "{}",
        first.stdout
    );
    assert!(!first.all().contains("image-test-token"), "a secret was printed");

    let inspect = rt.block_on(docker.inspect_image(&format!("{repo}:latest"))).unwrap();
    assert_eq!(inspect.id.as_deref(), Some(id.as_str()));
    let config = inspect.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("65532:65532"));
    assert_eq!(config.healthcheck.unwrap().test.unwrap(), ["CMD", "/usr/local/bin/app", "healthcheck"]);
    assert!(config.env.unwrap().iter().all(|e| !e.starts_with("SECRET_KEY")), "a key variable is baked in");
    let short = &checkout.head()[..12];
    assert!(rt.block_on(docker.inspect_image(&format!("{repo}:{short}"))).is_ok());

    // The standalone check agrees.
    checkout.run(&["image-check", "--image", &format!("{repo}:latest"), "--key-file", key.to_str().unwrap()]).ok();

    // Run it as an operator would: read-only root, the key as a file, port on 127.0.0.1.
    let name = format!("{repo}-run");
    let port = rt.block_on(run_container(&docker, &format!("{repo}:latest"), &name, &key));
    let health = wait_healthz(port, Duration::from_secs(30));
    assert!(health, "the container never answered /healthz");
    let state = rt.block_on(wait_healthy(&docker, &name, Duration::from_secs(40)));
    assert_eq!(state.as_deref(), Some("healthy"), "the image's HEALTHCHECK did not pass");

    // The image holds the run-time contract it was built with; given another
    // one (a variable that sends the tokens elsewhere), the app refuses to start.
    let contract = checkout.dir.path().join("target/other-service.toml");
    let mut runtime = {
        let read = rt.block_on(boxcar::ops::service_cmd::files_in_image(
            &docker,
            &format!("{repo}:latest"),
            &repo,
            &[boxcar_secrets::IMAGE_SERVICE_FILE],
        ));
        boxcar_secrets::ServiceFile::parse(&String::from_utf8(read.unwrap()[0].clone().unwrap()).unwrap()).unwrap()
    };
    assert_eq!(runtime.service, "app");
    runtime.runtime["env"].as_table_mut().unwrap().insert("APP_API_BASE".into(), "https://evil.example".into());
    std::fs::write(&contract, boxcar_secrets::ServiceFile::render("app", &runtime.runtime)).unwrap();
    let refused = format!("{repo}-other-contract");
    let (code, logs) = rt.block_on(run_to_exit(&docker, &format!("{repo}:latest"), &refused, &key, &contract));
    assert_eq!(code, 7, "{logs}");
    assert!(
        logs.contains("the run-time contract of service `app` in this image is not the one this file approves: it differs in env.APP_API_BASE (new)"),
        "{logs}"
    );
    assert!(logs.contains("[ApprovalError::Runtime]"), "{logs}");

    // Reproducible: recompile the app (same sources, new mtime, no cached binary) and compare.
    let main_rs = checkout.dir.path().join("app/src/main.rs");
    let text = std::fs::read(&main_rs).unwrap();
    std::fs::write(&main_rs, &text).unwrap();
    std::fs::remove_dir_all(checkout.dir.path().join("target/boxcar-image")).unwrap();
    let second = checkout.run(&["image", "--repo", &repo]).ok();
    assert!(second.stderr.contains("binary: warm"), "{}", second.stderr);
    assert!(second.stderr.contains("; 1 crate(s) compiled, the rest reused"), "{}", second.stderr);
    // The builder image holds all rust-toolchain.toml asks for: a build
    // container fetches nothing from rustup.
    assert!(!second.stderr.contains("info: downloading component"), "{}", second.stderr);
    assert_eq!(image_id(&second), id, "the same commit gave another image");

    // A no-op rebuild reuses the binary and gives the same ID.
    let third = checkout.run(&["image", "--repo", &repo]).ok();
    assert!(third.stderr.contains("binary: cached"), "{}", third.stderr);
    assert_eq!(image_id(&third), id);

    // A dirty tree is labelled, written as an archive without loading.
    std::fs::write(checkout.dir.path().join("NOTES.txt"), "uncommitted\n").unwrap();
    let archive = checkout.dir.path().join("target/dirty.tar");
    let dirty = checkout.run(&["image", "--repo", &repo, "--oci-archive", archive.to_str().unwrap()]).ok();
    assert!(dirty.stderr.contains("labelled dirty and is not reproducible"), "{}", dirty.stderr);
    assert!(dirty.stdout.contains(&format!("{repo}:{short}-dirty")), "{}", dirty.stdout);
    assert!(dirty.stdout.contains("dev.boxcar.dirty=true"), "{}", dirty.stdout);
    assert!(archive.exists());
    assert!(
        rt.block_on(docker.inspect_image(&format!("{repo}:{short}-dirty"))).is_err(),
        "--oci-archive loaded the image"
    );

    // A failing compile shows the compiler's error and tags nothing.
    std::fs::write(&main_rs, format!("{}\nfn broken( {{\n", String::from_utf8(text).unwrap())).unwrap();
    let before = rt.block_on(docker.inspect_image(&format!("{repo}:latest"))).unwrap().id;
    let failed = checkout.run(&["image", "--repo", &repo]).fails();
    assert!(failed.stderr.contains("the build failed"), "{}", failed.stderr);
    assert!(failed.stderr.contains("error"), "{}", failed.stderr);
    let after = rt.block_on(docker.inspect_image(&format!("{repo}:latest"))).unwrap().id;
    assert_eq!(before, after, "a failed build moved the tag");
}

/// Runs `image` as `name`; the port it is published on, on 127.0.0.1.
async fn run_container(docker: &Docker, image: &str, name: &str, key: &Path) -> u16 {
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        env: Some(vec!["SECRET_KEY_FILE=/run/secrets/app_key".to_owned()]),
        host_config: Some(HostConfig {
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            tmpfs: Some([("/tmp".to_owned(), String::new())].into()),
            mounts: Some(vec![Mount {
                source: Some(key.display().to_string()),
                target: Some("/run/secrets/app_key".to_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Mount::default()
            }]),
            port_bindings: Some(
                [(
                    "8080/tcp".to_owned(),
                    Some(vec![PortBinding { host_ip: Some("127.0.0.1".to_owned()), host_port: Some(String::new()) }]),
                )]
                .into(),
            ),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    // The key file is 0600 and owned by whoever runs the tests; the app runs as 65532.
    std::fs::set_permissions(key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    docker.create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body).await.unwrap();
    docker.start_container(name, None::<bollard::query_parameters::StartContainerOptions>).await.unwrap();
    let info =
        docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await.unwrap();
    let ports = info.network_settings.unwrap().ports.unwrap();
    let binding = ports["8080/tcp"].as_ref().unwrap()[0].clone();
    binding.host_port.unwrap().parse().unwrap()
}

/// Runs `image` with the key and `service_file` in place of the image's
/// `/etc/boxcar/service.toml` until it exits: its exit code and output.
async fn run_to_exit(docker: &Docker, image: &str, name: &str, key: &Path, service_file: &Path) -> (i64, String) {
    use futures::StreamExt as _;
    let bind = |source: &Path, target: &str| Mount {
        source: Some(source.display().to_string()),
        target: Some(target.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Mount::default()
    };
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        env: Some(vec!["SECRET_KEY_FILE=/run/secrets/app_key".to_owned()]),
        host_config: Some(HostConfig {
            readonly_rootfs: Some(true),
            network_mode: Some("none".to_owned()),
            mounts: Some(vec![
                bind(key, "/run/secrets/app_key"),
                bind(service_file, boxcar_secrets::IMAGE_SERVICE_FILE),
            ]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    std::fs::set_permissions(service_file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    docker.create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body).await.unwrap();
    docker.start_container(name, None::<bollard::query_parameters::StartContainerOptions>).await.unwrap();
    let code = match docker.wait_container(name, None::<bollard::query_parameters::WaitContainerOptions>).next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        other => panic!("waiting for {name}: {other:?}"),
    };
    let options = bollard::query_parameters::LogsOptionsBuilder::default().stdout(true).stderr(true).build();
    let mut logs = docker.logs(name, Some(options));
    let mut out = String::new();
    while let Some(Ok(item)) = logs.next().await {
        out.push_str(&String::from_utf8_lossy(&item.into_bytes()));
    }
    (code, out)
}

async fn wait_healthy(docker: &Docker, name: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let info =
            docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await.ok()?;
        let status = info.state.and_then(|s| s.health).and_then(|h| h.status).map(|s| s.to_string());
        if status.as_deref() == Some("healthy") || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[test]
fn no_engine_is_a_clear_error() {
    let repo = Checkout::plain("production");
    let mut cmd = repo.cmd(&["image-check", "--image", "app:latest"]);
    cmd.env("DOCKER_HOST", format!("unix://{}/no-such.sock", repo.keys.path().display()));
    let run = crate::Repo::run_with(&mut cmd, b"").fails();
    assert!(run.stderr.contains("no Docker engine at unix://"), "{}", run.stderr);
    assert!(run.stderr.contains("start the Docker engine"), "{}", run.stderr);
}

#[test]
fn a_profile_that_does_not_exist_is_refused_before_anything_runs() {
    let repo = Checkout::plain("production");
    for (args, env) in [(&["image", "--profile", "turbo"][..], None), (&["image"][..], Some("turbo"))] {
        let mut cmd = repo.cmd(args);
        cmd.env("DOCKER_HOST", format!("unix://{}/no-such.sock", repo.keys.path().display()));
        if let Some(profile) = env {
            cmd.env("BOXCAR_PROFILE", profile);
        }
        let run = crate::Repo::run_with(&mut cmd, b"").fails();
        assert!(run.stderr.contains("invalid value 'turbo' for '--profile <PROFILE>'"), "{}", run.stderr);
        assert!(run.stderr.contains("[possible values: release, fast]"), "{}", run.stderr);
        assert!(!run.stderr.contains("Docker engine"), "{}", run.stderr);
    }
}

#[test]
fn plaintext_in_an_environment_file_stops_the_build_before_the_engine() {
    let repo = Checkout::new("production", &[("token", "v")], "");
    let text = std::fs::read_to_string(repo.env_file()).unwrap();
    std::fs::write(repo.env_file(), format!("{text}pasted = \"hunter2-in-clear\"\n")).unwrap();
    // No engine is needed to refuse: point at none, to prove it was not asked.
    let mut cmd = repo.cmd(&["image"]);
    cmd.env("DOCKER_HOST", format!("unix://{}/no-such.sock", repo.keys.path().display()));
    let run = crate::Repo::run_with(&mut cmd, b"").fails();
    assert!(run.stderr.contains("secrets.pasted is not a sealed value"), "{}", run.stderr);
    assert!(run.stderr.contains("would ship in the image"), "{}", run.stderr);
    assert!(!run.stderr.contains("Docker engine"), "{}", run.stderr);
    assert!(!run.all().contains("hunter2-in-clear"));
}
