//! keygen, encrypt-secret, check, verify and rotate-key, with their bad inputs.

use boxcar_secrets::SecretKey;

use crate::{Repo, git, mode, xtask};

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
    assert!(run.stdout.contains("not approved yet"), "{}", run.stdout);
    repo.run(&["approve", "--env", "production", "--yes"]).ok();

    let run = repo.run(&["verify", "--env", "production", "--reveal", "a"]).ok();
    assert_eq!(run.stdout, TOKEN);
    assert!(run.stderr.contains("warning: printing the plaintext of secrets.a"), "{}", run.stderr);

    repo.run_stdin(&["encrypt-secret", "--env", "production", "nl", "--keep-trailing-newline"], b"x\n").ok();
    repo.run(&["approve", "--env", "production", "--yes"]).ok();
    assert_eq!(repo.run(&["verify", "--env", "production", "--reveal", "nl"]).ok().stdout, "x\n");
    repo.run_stdin(&["encrypt-secret", "--env", "production", "crlf"], b"x\r\n\r\n").ok();
    repo.run(&["approve", "--env", "production", "--yes"]).ok();
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
    std::fs::write(repo.env_file("production"), &swapped).unwrap();
    // Unapproved, so refused before anything is opened …
    let run = repo.run(&["verify", "--env", "production"]).fails();
    assert!(run.stderr.contains("is not approved as it is"), "{}", run.stderr);
    // `check` names what changed since the last approval (here: nothing is committed, so nothing to compare).
    let run = repo.run(&["check"]).fails();
    assert!(run.stdout.contains("deploy-config/production.toml: is not approved as it is"), "{}", run.stdout);
    // … and `approve` refuses to approve values that do not open.
    let run = repo.run(&["approve", "--env", "production", "--yes"]).fails();
    assert!(run.stderr.contains("nothing was approved"), "{}", run.stderr);
    // Approved anyway (by a key holder who did not use `approve`), opening still refuses them.
    let key = SecretKey::from_base64(&std::fs::read_to_string(repo.key_file("production")).unwrap()).unwrap();
    let path = repo.env_file("production");
    std::fs::write(&path, boxcar_secrets::approved_text(&path, &swapped, &key).unwrap()).unwrap();
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
        "error: deploy-config/production.toml: is not approved as it is: its content, or its environment, differs \
         from what was approved; a holder of the secret key must review the change and approve it: \
         `cargo xtask approve --env production` (`cargo xtask check` names what changed) \
         [ApprovalError::Signature] [R1]",
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
    assert!(run.stderr.contains("is not approved as it is"), "{}", run.stderr);
    assert_eq!(repo.read("deploy-config/production.toml"), tampered);
    assert_eq!(repo.key_files("production").len(), 1, "a new key file was left behind");
}

fn id_of(key_file: &std::path::Path) -> String {
    let stem = key_file.file_stem().unwrap().to_str().unwrap();
    stem.rsplit('-').next().unwrap().to_owned()
}

/// The `error: ` lines of a run that contain `part`.
fn errors_with(run: &crate::Run, part: &str) -> Vec<String> {
    run.stdout.lines().filter(|l| l.starts_with("error: ") && l.contains(part)).map(str::to_owned).collect()
}

fn commit(repo: &Repo, message: &str) {
    git(repo.root.path(), &["add", "-A"]);
    git(repo.root.path(), &["commit", "-qm", message]);
}

/// What `check` says to do about a current key, after its own prefix.
const RENEW: &str = "where it was issued (revoke and reissue the token, regenerate the API key, change the password) \
                     and seal the new value with `cargo xtask encrypt-secret --env production NAME`";

#[test]
fn check_finds_keys_in_hex_url_safe_base64_and_kubernetes_secrets() {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let repo = Repo::new();
    // Made here, with a URL-safe form that differs from its standard one.
    let (key, raw) = loop {
        let key = SecretKey::generate();
        let raw = STANDARD.decode(&*key.to_base64()).unwrap();
        if URL_SAFE_NO_PAD.encode(&raw).contains(['-', '_']) {
            break (key, raw);
        }
    };
    std::fs::write(repo.env_file("production"), format!("public_key = \"{}\"\n", key.public_key().to_base64()))
        .unwrap();
    repo.run_stdin(&["encrypt-secret", "--env", "production", "api_key"], b"v").ok();
    let hex: String = raw.iter().map(|b| format!("{b:02X}")).collect();
    std::fs::write(repo.path("key.hex"), format!("# backup\nkey = {hex}\n")).unwrap();
    let url = URL_SAFE_NO_PAD.encode(&raw);
    std::fs::write(repo.path("key.url"), format!("SECRET_KEY={url}\n")).unwrap();
    // A Kubernetes Secret made from the key file: base64 of its text.
    let wrapped = STANDARD.encode(format!("{}\n", &*key.to_base64()));
    std::fs::write(
        repo.path("secret.yaml"),
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: key\ndata: {{SECRET_KEY: {wrapped}}}\n"),
    )
    .unwrap();

    let run = repo.run(&["check"]).fails();
    let id = key.key_id();
    let expect = [
        ("key.hex:2", "hex"),
        ("key.url:1", "URL-safe base64"),
        ("secret.yaml:5", "base64 of a text that holds it (as a Kubernetes Secret's `data` holds a key file)"),
    ]
    .map(|(at, how)| {
        format!(
            "error: {at}: the secret key of environment `production` (key id {id}, written as {how}) is in this file: \
             whoever can read the repository can open every value sealed to this key, in every commit; remove it, run \
             `cargo xtask rotate-key --env production`, then change each credential sealed to it (`api_key`) {RENEW}: \
             rotating alone seals the same credentials again, and the old sealed values stay readable in git history \
             with this key"
        )
    });
    assert_eq!(errors_with(&run, "the secret key of"), expect, "{}", run.stdout);
    for secret in [hex.as_str(), &url, &wrapped, &key.to_base64()] {
        assert!(!run.all().contains(secret), "the key was printed");
    }
}

#[test]
fn check_finds_the_secret_key_of_a_retired_public_key() {
    let repo = Repo::new();
    repo.env_with("production", &[("token", TOKEN)]);
    commit(&repo, "production");
    repo.publish();
    let old_key = repo.key_file("production");
    let old_id = id_of(&old_key);
    let run = repo.run(&["rotate-key", "--env", "production"]).ok();
    assert!(
        run.stdout.contains(
            "The same credentials were sealed again: if the old key leaked, it still opens them in git history.\n\
             After a leak, also change each one where it was issued (token) and seal the new value with \
             `cargo xtask encrypt-secret --env production NAME`.\n"
        ),
        "{}",
        run.stdout
    );
    commit(&repo, "rotate");
    let run = repo.run(&["check"]).ok();
    assert!(
        run.stdout.contains(
            "ok  no secret key of any environment in 1 tracked file(s) (1 current and 1 retired key(s) looked for)"
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("note: "), "{}", run.stdout);

    let old = std::fs::read_to_string(&old_key).unwrap();
    std::fs::write(repo.path("notes.txt"), format!("the old key, unused now:\n{old}")).unwrap();
    commit(&repo, "notes");
    let run = repo.run(&["check"]).fails();
    let expect = format!(
        "error: notes.txt:2: the secret key of environment `production`'s retired key {old_id} (written as base64) \
         is in this file: it still opens every value sealed to it in git history; remove it, then change each \
         credential sealed to it (`token`) {RENEW}: `rotate-key` would not help, it seals the same credentials again"
    );
    assert_eq!(errors_with(&run, ""), [expect], "{}", run.stdout);
}

#[test]
fn check_outside_git_knows_retired_keys_from_previous_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (current, old) = (SecretKey::generate(), SecretKey::generate());
    std::fs::create_dir(dir.path().join("deploy-config")).unwrap();
    std::fs::write(
        dir.path().join("deploy-config/production.toml"),
        format!(
            "public_key = \"{}\"\n\n[[previous_keys]]\npublic_key = \"{}\"\n",
            current.public_key().to_base64(),
            old.public_key().to_base64()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("leak.txt"), format!("\n{}\n", &*old.to_base64())).unwrap();
    // Build output is not part of the project.
    std::fs::create_dir(dir.path().join("target")).unwrap();
    std::fs::write(dir.path().join("target/key"), &*current.to_base64()).unwrap();

    let run = Repo::run_with(&mut xtask(dir.path(), keys.path(), &["check"]), b"").fails();
    assert!(
        run.stdout.contains(
            "note: not a git checkout: the retired keys looked for are only those under [[previous_keys]] of the \
             files in deploy-config/; keys of earlier versions of these files are not known\n"
        ),
        "{}",
        run.stdout
    );
    let expect = format!(
        "error: leak.txt:2: the secret key of environment `production`'s retired key {} (written as base64) is in \
         this file: it still opens every value sealed to it in git history; remove it, then change each credential \
         sealed to it {RENEW}: `rotate-key` would not help, it seals the same credentials again",
        old.key_id()
    );
    assert_eq!(errors_with(&run, "the secret key of"), [expect], "{}", run.stdout);
}

#[test]
fn check_reports_files_it_cannot_scan() {
    let repo = Repo::new();
    repo.env_with("production", &[("t", "v")]);
    let root = repo.root.path();
    // A link out of the work tree, to the key file: not followed, not passed.
    let key_file = repo.key_file("production");
    std::os::unix::fs::symlink(&key_file, repo.path("key-link")).unwrap();
    // A link inside is left to its target's own path.
    std::os::unix::fs::symlink("deploy-config/production.toml", repo.path("inside-link")).unwrap();
    // One byte over the limit (sparse, so the test writes nothing).
    std::fs::File::create(repo.path("big.bin")).unwrap().set_len(100 * 1024 * 1024 + 1).unwrap();
    std::fs::write(repo.path("gone.txt"), "x").unwrap();
    git(root, &["add", "gone.txt"]);
    std::fs::remove_file(repo.path("gone.txt")).unwrap();
    // Repositories of their own: a submodule, and one `git add` would record as one.
    let other = tempfile::tempdir().unwrap();
    git(other.path(), &["init", "-q"]);
    std::fs::write(other.path().join("file"), "x").unwrap();
    git(other.path(), &["add", "file"]);
    git(other.path(), &["commit", "-qm", "other"]);
    git(root, &["-c", "protocol.file.allow=always", "submodule", "add", "-q", other.path().to_str().unwrap(), "sub"]);
    std::fs::create_dir(repo.path("nested")).unwrap();
    git(&repo.path("nested"), &["init", "-q"]);
    std::fs::write(repo.path("nested/file"), "x").unwrap();

    let run = repo.run(&["check"]).fails();
    let target = key_file.canonicalize().unwrap();
    let expect = [
        "big.bin: not scanned for secret keys: it is 101 MiB, over the scan limit of 100 MiB (GitHub refuses files \
         over 100 MiB); keep it out of git (Git LFS, a release asset, a download at build time)"
            .to_owned(),
        "gone.txt: not scanned for secret keys: git lists it, but it is not in the work tree; commit its removal \
         (`git rm --cached PATH`) or restore it (`git checkout -- PATH`), then check again"
            .to_owned(),
        format!(
            "key-link: not scanned for secret keys: it is a symlink to {}, outside the work tree, which check does \
             not follow; commit the file itself, or remove the link",
            target.display()
        ),
    ]
    .map(|e| format!("error: {e}"));
    assert_eq!(errors_with(&run, ""), expect, "{}", run.stdout);
}

#[test]
fn check_refuses_a_shallow_clone_and_passes_a_full_one() {
    let repo = Repo::new();
    repo.env_with("production", &[("t", "v")]);
    commit(&repo, "production");
    repo.run(&["rotate-key", "--env", "production"]).ok();
    commit(&repo, "rotate");
    let url = format!("file://{}", repo.root.path().display());

    let shallow = tempfile::tempdir().unwrap();
    git(shallow.path(), &["clone", "-q", "--depth", "1", &url, "."]);
    let run = Repo::run_with(&mut xtask(shallow.path(), repo.keys.path(), &["check"]), b"").fails();
    let expect = "error: the history of deploy-config/ cannot be read in a shallow clone; fetch the full history \
                  (fetch-depth: 0) so check can look for the secret keys of the public keys these files had before";
    assert_eq!(errors_with(&run, "the history of"), [expect], "{}", run.stdout);

    let full = tempfile::tempdir().unwrap();
    git(full.path(), &["clone", "-q", &url, "."]);
    let run = Repo::run_with(&mut xtask(full.path(), repo.keys.path(), &["check"]), b"").ok();
    assert!(run.stdout.contains("(1 current and 1 retired key(s) looked for)"), "{}", run.stdout);
}
