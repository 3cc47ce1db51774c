//! The service contract as this repository uses it: the app's image is
//! byte for byte what it was before boxcar.toml existed, docker/runner.Dockerfile
//! describes it, `check` runs the app's own check, and a bad contract stops
//! every command before the engine is touched.

use boxcar::ops::build::assemble::{self, Spec};
use boxcar::vocab::contract::{Contract, Service};
use serde_json::Value;

use crate::{Checkout, project_root};

/// The app as this repository's boxcar.toml declares it.
fn app() -> Service {
    let mut contract = Contract::load(&project_root()).unwrap().expect("boxcar.toml");
    contract.resolve(&project_root()).unwrap();
    contract.pick(Some("app")).unwrap().clone()
}

/// The inputs of assemble.rs's own test before the contract (commit 9223376).
fn spec() -> Spec {
    let mut service = app();
    service.source = Some("https://example.invalid/boxcar".to_owned());
    service.version = "0.1.0".to_owned();
    Spec {
        service,
        binary: b"\x7fELF pretend".to_vec(),
        probe: None,
        env_files: vec![("production.toml".to_owned(), b"public_key = \"x\"\n".to_vec())],
        files: Vec::new(),
        ca_bundle: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
        epoch: 1_700_000_000,
        revision: "abc".to_owned(),
        dirty: false,
        profile: boxcar::ops::build::compile::Profile::Release,
    }
}

/// With the contract's values equal to what xtask used to hard-code, the
/// image is the same to the byte but for one file: `/etc/boxcar/service.toml`
/// (the run-time contract the environment's approval covers) came with the
/// approval-history work, and the ID changed once for it. Without that file,
/// the layer and so the image ID are what the code before boxcar.toml wrote
/// for these inputs.
#[test]
fn the_app_image_is_what_it_was_before_the_contract() {
    use sha2::Digest as _;
    let tags = ["app:latest".to_owned(), "app:abc".to_owned()];
    let built = assemble::build(&spec(), &tags).unwrap();
    assert_eq!(built.image_id, "sha256:dbbd32d0a83a932393c2bea9e4cbc507a919ca4c8b7ae331bdc541f49d1fd2db");

    let layer = assemble::layer(&spec()).unwrap();
    let mut without = tar::Builder::new(Vec::new());
    let mut found = false;
    for entry in tar::Archive::new(&layer[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("etc/boxcar/service.toml") {
            found = true;
            continue;
        }
        let header = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        without.append(&header, &data[..]).unwrap();
    }
    assert!(found, "no service file in the layer");
    let hex = |bytes: &[u8]| -> String { sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect() };
    let config = assemble::config(&spec(), &hex(&without.into_inner().unwrap()));
    let id = format!("sha256:{}", hex(&serde_json::to_vec(&config).unwrap()));
    assert_eq!(id, "sha256:7ac66dd23e28e1fcdf805bd234983124b99f15cc7cdf2409fea9d3c98330cb3f");
}

/// docker/runner.Dockerfile documents the image; its settings must be the
/// ones `config` writes.
#[test]
fn the_runner_dockerfile_says_what_the_image_is() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/runner.Dockerfile");
    let text = std::fs::read_to_string(path).unwrap().replace("\\\n", " ");
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let find = |word: &str| -> String {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{word} ")))
            .unwrap_or_else(|| panic!("no {word}"))
            .trim()
            .to_owned()
    };
    let c = assemble::config(&spec(), "00");
    let c = &c["config"];
    assert_eq!(find("USER"), c["User"].as_str().unwrap());
    assert_eq!(find("WORKDIR"), c["WorkingDir"].as_str().unwrap());
    let ports: Vec<&String> = c["ExposedPorts"].as_object().unwrap().keys().collect();
    assert_eq!(vec![&find("EXPOSE")], ports);
    let volumes: Vec<&String> = c["Volumes"].as_object().unwrap().keys().collect();
    assert_eq!(vec![&find("VOLUME")], volumes);
    let env: Vec<String> = find("ENV").split_whitespace().map(str::to_owned).collect();
    let expected: Vec<String> = c["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    assert_eq!(env, expected);
    let json = |v: &Value| serde_json::to_string(v).unwrap().replace(',', ", ");
    assert_eq!(find("ENTRYPOINT"), json(&c["Entrypoint"]));
    assert_eq!(find("CMD"), json(&c["Cmd"]));
    let hc = &c["Healthcheck"];
    let secs = |k: &str| hc[k].as_u64().unwrap() / 1_000_000_000;
    let test: Vec<Value> = hc["Test"].as_array().unwrap()[1..].to_vec();
    assert_eq!(
        find("HEALTHCHECK"),
        format!(
            "--interval={}s --timeout={}s --start-period={}s --retries={} CMD {}",
            secs("Interval"),
            secs("Timeout"),
            secs("StartPeriod"),
            hc["Retries"],
            json(&Value::Array(test))
        )
    );
    // Every file the layer holds is listed in the Dockerfile's comment.
    let layer = assemble::layer(&spec()).unwrap();
    for e in tar::Archive::new(&layer[..]).entries().unwrap() {
        let p = e.unwrap().path().unwrap().display().to_string();
        let listed = p.trim_end_matches('/').rsplit('/').next().unwrap().to_owned();
        let listed =
            if p.contains("deploy-config/") && p.ends_with(".toml") { "<env>.toml".to_owned() } else { listed };
        assert!(text.contains(&listed), "docker/runner.Dockerfile does not mention {p}");
    }
}

/// `check` runs the app's own check (boxcar.toml's `check`) on each of its
/// environment files: bot settings are the app's business, not boxcar's.
#[test]
fn check_runs_the_services_own_check() {
    let settings =
        "\n[[bots]]\nname = \"b\"\ntoken_secret = \"good\"\n[[bots]]\nname = \"c\"\ntoken_secret = \"missing\"\n";
    let checkout = Checkout::new("staging", &[("good", "3001:check-test-token-AAAAAAAAAAAAAAAAAAAAAAAAAA")], settings);
    let run = checkout.run(&["check"]).fails();
    assert!(
        run.stdout.contains(
            "error: deploy-config/staging.toml: `app check-config`: deploy-config/staging.toml: bots[1].token_secret: \
             no secret `missing` in [secrets]"
        ),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    std::fs::write(
        checkout.env_file(),
        std::fs::read_to_string(checkout.env_file()).unwrap().replace("\"missing\"", "\"good\""),
    )
    .unwrap();
    checkout.approve("staging");
    let run = checkout.run(&["check"]).ok();
    assert!(run.stdout.contains("ok  deploy-config/staging.toml: 1 secret(s) sealed to key"), "{}", run.stdout);
    assert!(run.stdout.contains("`app check-config` passed"), "{}", run.stdout);
}

/// Each bad contract: one line naming the field, before any engine or build,
/// and nothing written.
#[test]
fn a_bad_contract_stops_every_command_first() {
    let checkout = Checkout::plain("staging");
    let contract = checkout.dir.path().join("boxcar.toml");
    let good = std::fs::read_to_string(&contract).unwrap();
    let cases = [
        (
            good.replace("name = \"hello-api\"\n", "name = \"hello-api\"\npackage = \"nope\"\n"),
            "package = `nope` is not a package of this workspace",
        ),
        (
            good.replace("name = \"hello-api\"\n", "name = \"hello-api\"\nbin = \"bot-api-standin\"\n"),
            "bin = `bot-api-standin` is not a binary target of package `hello-api`",
        ),
        (good.replace("port = 9000", "port = 90000"), "port = 90000 is not a port; use 1 to 65535"),
        (
            good.replace("health.http = \"/healthz\"\ninstances", "health.http = \"healthz\"\ninstances"),
            "health.http = `healthz` must be a URL path with a leading `/`",
        ),
        (good.replace("data = \"/data\"", "data = \"data\""), "data = `data` must be an absolute path"),
        (good.replace("port = 9000", "prot = 9000"), "unknown field `prot`"),
        (
            good.replace("name = \"hello-api\"", "name = \"app\""),
            "service `app` (the 2th [[service]]) is declared twice",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&contract, &text).unwrap();
        for args in [
            &["image", "--service", "hello-api"][..],
            &["deploy", "--env", "staging", "--service", "hello-api"],
            &["manifests", "--env", "staging", "--format", "compose", "--service", "hello-api"],
            &["check"],
        ] {
            let run = checkout.run(args).fails();
            assert!(run.stderr.contains(expected), "{args:?}, expected `{expected}`:\n{}", run.stderr);
            assert!(!run.all().contains("Docker engine"), "{args:?} reached for the engine:\n{}", run.all());
        }
        assert_eq!(std::fs::read_to_string(&contract).unwrap(), text, "a command changed boxcar.toml");
        assert_eq!(crate::git(checkout.dir.path(), &["status", "--porcelain", "--", "deploy-config"]), "");
    }
    // Two services and no default: commands ask which.
    std::fs::write(&contract, good.replace("default = \"app\"\n", "")).unwrap();
    let run = checkout.run(&["image"]).fails();
    assert!(run.stderr.contains("declares 2 services: pick one with --service (app, hello-api)"), "{}", run.stderr);
    // No contract: say how to write one.
    std::fs::remove_file(&contract).unwrap();
    let run = checkout.run(&["image"]).fails();
    assert!(run.stderr.contains("this project has no boxcar.toml: declare the service to ship"), "{}", run.stderr);
}
