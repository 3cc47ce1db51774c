//! keygen, encrypt-secret, check, verify and rotate-key, with their bad inputs.

use crate::{Repo, mode};

const TOKEN: &str = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

#[test]
fn keygen_writes_public_key_in_repo_and_secret_key_outside() {
    let repo = Repo::new();
    let run = repo.run(&["keygen", "--env", "production"]).ok();
    let key_file = repo.key_file("production");
    assert_eq!(mode(&key_file), 0o600);
    let secret = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(secret.len(), 45, "base64 of 32 bytes and a newline");
    assert!(!run.all().contains(secret.trim()), "the secret key was printed");
    let file = repo.read("deploy-config/production.toml");
    assert!(file.contains("public_key = \""));
    assert!(!file.contains(secret.trim()));
    let id = key_file.file_stem().unwrap().to_str().unwrap().strip_prefix("production-").unwrap().to_owned();
    assert!(run.stdout.contains(&format!("key id      {id}")), "{}", run.stdout);
}

#[test]
fn keygen_keeps_comments_and_refuses_to_replace_a_key() {
    let repo = Repo::new();
    std::fs::write(repo.env_file("staging"), "# ours\n[app]\nlisten = \"0.0.0.0:8080\" # port\n").unwrap();
    repo.run(&["keygen", "--env", "staging"]).ok();
    let after = repo.read("deploy-config/staging.toml");
    assert!(after.starts_with("public_key = \"") && after.contains("\n# ours\n[app]\n"), "{after}");
    assert!(after.contains("listen = \"0.0.0.0:8080\" # port\n"), "{after}");

    repo.run_stdin(&["encrypt-secret", "--env", "staging", "token"], b"abc").ok();
    let before = repo.read("deploy-config/staging.toml");
    let run = repo.run(&["keygen", "--env", "staging"]).fails();
    assert!(run.stderr.contains("already has a public key"), "{}", run.stderr);
    assert!(run.stderr.contains("rotate-key --env staging"), "{}", run.stderr);
    assert_eq!(repo.read("deploy-config/staging.toml"), before, "the file changed");
    assert_eq!(repo.key_files("staging").len(), 1, "a key file was written");

    let run = repo.run(&["keygen", "--env", "staging", "--force"]).ok();
    assert!(run.stderr.contains("cannot be opened with the new one: token"), "{}", run.stderr);
    assert_ne!(repo.read("deploy-config/staging.toml"), before);
    assert_eq!(repo.key_files("staging").len(), 2);
}

#[test]
fn keygen_refuses_out_inside_the_work_tree_and_bad_names() {
    let repo = Repo::new();
    let inside = repo.path("keys/prod.key");
    let run = repo.run(&["keygen", "--env", "prod", "--out", inside.to_str().unwrap()]).fails();
    assert!(run.stderr.contains("refusing to write a secret key inside the work tree"), "{}", run.stderr);
    assert!(!inside.exists());
    assert!(!repo.env_file("prod").exists(), "the environment file was written anyway");

    let outside = repo.keys.path().join("elsewhere/prod.key");
    repo.run(&["keygen", "--env", "prod", "--out", outside.to_str().unwrap()]).ok();
    assert_eq!(mode(&outside), 0o600);

    let run = repo.run(&["keygen", "--env", "Prod"]).fails();
    assert!(run.stderr.contains("environment name `Prod` must start with a lower-case letter"), "{}", run.stderr);
}

#[test]
fn encrypt_secret_changes_one_line_and_strips_one_newline() {
    let repo = Repo::new();
    repo.env_with("production", &[("a", "first"), ("b", "second")]);
    let before = repo.read("deploy-config/production.toml");
    let run = repo.run_stdin(&["encrypt-secret", "--env", "production", "a"], format!("{TOKEN}\n").as_bytes()).ok();
    assert!(run.stdout.starts_with("replaced secrets.a"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("({} bytes", TOKEN.len())), "{}", run.stdout);
    let after = repo.read("deploy-config/production.toml");
    let changed: Vec<_> = before.lines().zip(after.lines()).filter(|(x, y)| x != y).collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].0.starts_with("a = \"sealed:v1:"));
    assert_eq!(before.lines().count(), after.lines().count());

    let run = repo.run(&["verify", "--env", "production", "--reveal", "a"]).ok();
    assert_eq!(run.stdout, TOKEN);
    assert!(run.stderr.contains("warning: printing the plaintext of secrets.a"), "{}", run.stderr);

    repo.run_stdin(&["encrypt-secret", "--env", "production", "nl", "--keep-trailing-newline"], b"x\n").ok();
    assert_eq!(repo.run(&["verify", "--env", "production", "--reveal", "nl"]).ok().stdout, "x\n");
    repo.run_stdin(&["encrypt-secret", "--env", "production", "crlf"], b"x\r\n\r\n").ok();
    assert_eq!(repo.run(&["verify", "--env", "production", "--reveal", "crlf"]).ok().stdout, "x\r\n");
}

#[test]
fn encrypt_secret_bad_input_writes_nothing() {
    let repo = Repo::new();
    repo.env_with("production", &[]);
    let before = repo.read("deploy-config/production.toml");
    for (args, stdin, message) in [
        (&["encrypt-secret", "--env", "production", "t"][..], &b""[..], "the value is empty"),
        (&["encrypt-secret", "--env", "production", "t"], b"\n", "the value is empty"),
        (&["encrypt-secret", "--env", "production", "Bad-Name"], b"x", "secret name `Bad-Name`"),
        (&["encrypt-secret", "--env", "staging", "t"], b"x", "deploy-config/staging.toml does not exist; create"),
        (&["encrypt-secret", "--env", "production", "t", "the-value"], b"x", "unexpected argument"),
    ] {
        let run = repo.run_stdin(args, stdin).fails();
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    let big = vec![b'x'; 64 * 1024 + 1];
    let run = repo.run_stdin(&["encrypt-secret", "--env", "production", "t"], &big).fails();
    assert!(run.stderr.contains("at most 65536"), "{}", run.stderr);
    assert_eq!(repo.read("deploy-config/production.toml"), before);
}

#[test]
fn verify_prints_lengths_never_values() {
    let repo = Repo::new();
    repo.env_with("production", &[("telegram_token", TOKEN), ("db_password", "hunter2-hunter2")]);
    let run = repo.run(&["verify", "--env", "production"]).ok();
    assert!(run.stdout.contains("2 secret(s) opened"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("telegram_token  {} bytes", TOKEN.len())), "{}", run.stdout);
    assert!(!run.all().contains(TOKEN) && !run.all().contains("hunter2"));
}

#[test]
fn verify_key_sources() {
    let repo = Repo::new();
    repo.env_with("production", &[("t", "v")]);
    let key_file = repo.key_file("production");
    let key = std::fs::read_to_string(&key_file).unwrap();

    let mut cmd = repo.cmd(&["verify", "--env", "production"]);
    cmd.env("SECRET_KEY", key.trim());
    let run = repo.run_cmd(cmd, b"").ok();
    assert!(run.stderr.contains("using the secret key from SECRET_KEY"), "{}", run.stderr);

    let mut cmd = repo.cmd(&["verify", "--env", "production"]);
    cmd.env("SECRET_KEY_FILE", &key_file);
    repo.run_cmd(cmd, b"").ok();

    let mut cmd = repo.cmd(&["verify", "--env", "production"]);
    cmd.env("SECRET_KEY_FILE", &key_file).env("SECRET_KEY", key.trim());
    let run = repo.run_cmd(cmd, b"").fails();
    assert!(run.stderr.contains("both SECRET_KEY and SECRET_KEY_FILE are set"), "{}", run.stderr);

    let missing = repo.keys.path().join("nope.key");
    let run = repo.run(&["verify", "--env", "production", "--key-file", missing.to_str().unwrap()]).fails();
    assert!(run.stderr.contains("cannot read the key file") && run.stderr.contains("nope.key"), "{}", run.stderr);

    let loose = repo.keys.path().join("loose.key");
    std::fs::write(&loose, &key).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let run = repo.run(&["verify", "--env", "production", "--key-file", loose.to_str().unwrap()]).ok();
    assert!(run.stderr.contains("can be read by other users (mode 0644); run `chmod 600"), "{}", run.stderr);

    let garbage = repo.keys.path().join("garbage.key");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let run = repo.run(&["verify", "--env", "production", "--key-file", garbage.to_str().unwrap()]).fails();
    assert!(run.stderr.contains("is not valid base64"), "{}", run.stderr);

    let short = repo.keys.path().join("short.key");
    std::fs::write(&short, "AAAAAAAA\n").unwrap();
    let run = repo.run(&["verify", "--env", "production", "--key-file", short.to_str().unwrap()]).fails();
    assert!(run.stderr.contains("decodes to 6 bytes; an X25519 key is 32 bytes"), "{}", run.stderr);

    std::fs::remove_file(&key_file).unwrap();
    let run = repo.run(&["verify", "--env", "production"]).fails();
    assert!(run.stderr.contains("no secret key for environment `production`"), "{}", run.stderr);
}

#[test]
fn verify_wrong_key_names_both_key_ids() {
    let repo = Repo::new();
    repo.env_with("production", &[("t", "v")]);
    repo.env_with("staging", &[("t", "v")]);
    let staging_key = repo.key_file("staging");
    let run = repo.run(&["verify", "--env", "production", "--key-file", staging_key.to_str().unwrap()]).fails();
    let prod_id = id_of(&repo.key_file("production"));
    let staging_id = id_of(&staging_key);
    assert!(
        run.stderr.contains(&format!("has key id {staging_id}, but environment `production` uses key id {prod_id}")),
        "{}",
        run.stderr
    );
}

#[test]
fn values_moved_between_environments_or_names_are_refused() {
    let repo = Repo::new();
    repo.env_with("production", &[("token", "prod-value"), ("other", "x")]);
    let text = repo.read("deploy-config/production.toml");
    let line = |name: &str| text.lines().find(|l| l.starts_with(&format!("{name} = "))).unwrap().to_owned();
    // Swap the two values' names.
    let swapped = text
        .replace(&line("token"), &line("other").replacen("other", "token", 1))
        .replace(&line("other"), &line("token").replacen("token", "other", 1));
    std::fs::write(repo.env_file("production"), swapped).unwrap();
    let run = repo.run(&["verify", "--env", "production"]).fails();
    assert!(run.stderr.contains("2 secrets cannot be opened"), "{}", run.stderr);
    assert!(
        run.stderr.contains("secrets.token sealed for environment `production` as `other`, but found in environment `production` as `token`"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("prod-value"));
}

#[test]
fn check_reports_every_problem_one_line_each() {
    let repo = Repo::new();
    repo.env_with("production", &[("good", "v")]);
    repo.env_with("staging", &[("good", "v")]);
    let prod = repo.read("deploy-config/production.toml");
    let staging = repo.read("deploy-config/staging.toml");
    let staging_value = staging.lines().find(|l| l.starts_with("good = ")).unwrap().replacen("good", "foreign", 1);
    let good = prod.lines().find(|l| l.starts_with("good = ")).unwrap();
    let mut bad = prod.clone();
    bad.push_str("plain = \"hunter2\"\n");
    bad.push_str(&format!("{staging_value}\n"));
    bad.push_str(&format!("{}\n", good.replacen("good", "future", 1).replace("sealed:v1:", "sealed:v9:")));
    let id = good.split(':').nth(2).unwrap();
    bad.push_str(&format!("broken = \"sealed:v1:{id}:not*base64\"\n"));
    std::fs::write(repo.env_file("production"), &bad).unwrap();
    std::fs::write(
        repo.path("notes.txt"),
        format!("oops {}", std::fs::read_to_string(repo.key_file("staging")).unwrap()),
    )
    .unwrap();
    let prod_key = std::fs::read_to_string(repo.key_file("production")).unwrap();
    std::fs::write(repo.path("deploy.env"), format!("DEPLOY_ENV=production\nSECRET_KEY={}", prod_key.trim())).unwrap();
    std::fs::write(repo.env_file("broken"), "public_key = [").unwrap();
    std::fs::write(repo.env_file("nokey"), "[secrets]\n").unwrap();
    std::fs::write(repo.env_file("shortkey"), "public_key = \"AAAA\"\n").unwrap();

    let run = repo.run(&["check"]).fails();
    let errors: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("error: ")).collect();
    let expect = [
        "error: deploy-config/broken.toml: malformed TOML",
        "error: deploy-config/nokey.toml: `public_key` is missing; create a key pair with `cargo xtask keygen --env nokey`",
        "error: deploy-config/production.toml: secrets.broken has a body that is not valid base64",
        "error: deploy-config/production.toml: secrets.foreign was sealed to key",
        "error: deploy-config/production.toml: secrets.future has unknown format version `v9`",
        "error: deploy-config/production.toml: secrets.plain is not a sealed value",
        "error: deploy-config/shortkey.toml: `public_key` decodes to 3 bytes; an X25519 key is 32 bytes",
        "error: deploy.env:2: the secret key of environment `production`",
        "error: notes.txt:1: the secret key of environment `staging`",
    ];
    assert_eq!(errors.len(), expect.len(), "{}", run.stdout);
    for (line, prefix) in errors.iter().zip(expect) {
        assert!(line.starts_with(prefix), "{line}\n  does not start with\n{prefix}");
    }
    assert!(!run.all().contains("hunter2"));
    assert!(run.stderr.contains(&format!("check found {} problem(s)", expect.len())), "{}", run.stderr);
    assert!(run.stdout.contains("ok  deploy-config/staging.toml"), "{}", run.stdout);
}

#[test]
fn check_passes_on_a_clean_repo() {
    let repo = Repo::new();
    repo.env_with("production", &[("t", TOKEN)]);
    let run = repo.run(&["check"]).ok();
    assert!(run.stdout.contains("ok  no secret key of any environment"), "{}", run.stdout);
}

#[test]
fn rotate_key_reseals_everything_and_keeps_the_old_key_file() {
    let repo = Repo::new();
    repo.env_with("production", &[("a", "alpha"), ("b", TOKEN)]);
    std::fs::write(
        repo.env_file("production"),
        format!("# keep this comment\n{}", repo.read("deploy-config/production.toml")),
    )
    .unwrap();
    let old_key = repo.key_file("production");
    let run = repo.run(&["rotate-key", "--env", "production"]).ok();
    assert!(run.stdout.contains("2 secret(s) sealed again"), "{}", run.stdout);
    let files = repo.key_files("production");
    assert_eq!(files.len(), 2);
    let new_key = files.into_iter().find(|f| *f != old_key).unwrap();
    assert_eq!(mode(&new_key), 0o600);
    assert!(repo.read("deploy-config/production.toml").starts_with("# keep this comment\n"));

    let run =
        repo.run(&["verify", "--env", "production", "--key-file", new_key.to_str().unwrap(), "--reveal", "b"]).ok();
    assert_eq!(run.stdout, TOKEN);
    repo.run(&["verify", "--env", "production", "--key-file", old_key.to_str().unwrap()]).fails();
    repo.run(&["check"]).ok();
}

#[test]
fn rotate_key_failure_changes_nothing() {
    let repo = Repo::new();
    repo.env_with("production", &[("a", "alpha")]);
    let text = repo.read("deploy-config/production.toml");
    // Flip one base64 character of the sealed value.
    let at = text.rfind('"').unwrap() - 5;
    let mut tampered = text.into_bytes();
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    std::fs::write(repo.env_file("production"), &tampered).unwrap();

    let run = repo.run(&["rotate-key", "--env", "production"]).fails();
    assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);
    assert!(run.stderr.contains("secrets.a fails authentication"), "{}", run.stderr);
    assert_eq!(repo.read("deploy-config/production.toml"), tampered);
    assert_eq!(repo.key_files("production").len(), 1, "a new key file was left behind");
}

fn id_of(key_file: &std::path::Path) -> String {
    let stem = key_file.file_stem().unwrap().to_str().unwrap();
    stem.rsplit('-').next().unwrap().to_owned()
}
