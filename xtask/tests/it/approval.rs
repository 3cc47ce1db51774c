//! approve, and what `check` and the commands holding a key do with content
//! nobody approved: the attacks a pull request can try, each refused.

use crate::{Repo, git, xtask};

const TOKEN: &str = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

fn commit(repo: &Repo, message: &str) {
    git(repo.root.path(), &["add", "-A"]);
    git(repo.root.path(), &["commit", "-qm", message]);
}

/// A repository with environment `prod` holding `token`, approved and committed.
fn approved_repo() -> Repo {
    let repo = Repo::new();
    repo.env_with("prod", &[("token", TOKEN)]);
    commit(&repo, "prod");
    repo.run(&["check"]).ok();
    repo
}

#[test]
fn a_changed_setting_needs_an_approval_and_approve_shows_it() {
    let repo = approved_repo();
    let path = repo.env_file("prod");
    let before = repo.read("deploy-config/prod.toml");
    std::fs::write(&path, format!("{before}\n[app]\napi_base = \"https://attacker.example\"\n")).unwrap();
    let run = repo.run(&["check"]).fails();
    assert!(
        run.stdout
            .contains("deploy-config/prod.toml: is not approved as it is: changed since it was approved: app.api_base"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("cargo xtask approve --env prod"), "{}", run.stdout);
    // Commands that hold the key refuse too.
    let run = repo.run(&["verify", "--env", "prod"]).fails();
    assert!(run.stderr.contains("is not approved as it is"), "{}", run.stderr);
    let run = repo.run(&["rotate-key", "--env", "prod"]).fails();
    assert!(run.stderr.contains("is not approved as it is"), "{}", run.stderr);
    assert_eq!(repo.key_files("prod").len(), 1, "rotate-key wrote a key");

    // Not on a terminal, approve shows the change and asks for --yes.
    let changed = repo.read("deploy-config/prod.toml");
    let run = repo.run(&["approve", "--env", "prod"]).fails();
    assert!(run.stderr.contains("run again with --yes"), "{}", run.stderr);
    assert!(run.stdout.contains("app.api_base"), "{}", run.stdout);
    assert!(run.stdout.contains("= \"https://attacker.example\"  [new]"), "{}", run.stdout);
    assert!(run.stdout.contains("secrets.token"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("{} bytes, sealed value", TOKEN.len())), "{}", run.stdout);
    assert!(run.stdout.contains("[approved before]"), "{}", run.stdout);
    assert!(!run.all().contains(TOKEN), "approve printed the value");
    assert_eq!(repo.read("deploy-config/prod.toml"), changed, "the file changed");

    let run = repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    assert!(run.stdout.contains("approved deploy-config/prod.toml (serial 3)"), "{}", run.stdout);
    repo.run(&["check"]).ok();
    repo.run(&["verify", "--env", "prod"]).ok();
    let again = repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    assert!(again.stdout.contains("is approved as it is (serial 3"), "{}", again.stdout);
}

#[test]
fn a_new_or_replayed_value_is_caught() {
    let repo = approved_repo();
    let first = repo.read("deploy-config/prod.toml");
    repo.run_stdin(&["encrypt-secret", "--env", "prod", "token"], b"new-token").ok();
    let run = repo.run(&["check"]).fails();
    assert!(run.stdout.contains("changed since it was approved: secrets.token"), "{}", run.stdout);
    repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    commit(&repo, "new token");
    repo.run(&["check"]).ok();
    // The old, approved file brought back: its approval is genuine, but older.
    std::fs::write(repo.env_file("prod"), &first).unwrap();
    let run = repo.run(&["check"]).fails();
    assert!(run.stdout.contains("approval serial 2 is lower than serial 3"), "{}", run.stdout);
    assert!(run.stdout.contains("an older approved version was brought back"), "{}", run.stdout);
}

#[test]
fn a_replaced_key_fails_check_even_with_everything_re_signed() {
    let repo = approved_repo();
    // A legitimate rotation: the old key endorses the new one.
    repo.run(&["rotate-key", "--env", "prod"]).ok();
    let run = repo.run(&["check"]).ok();
    assert!(run.stdout.contains("2 key(s) from the first"), "{}", run.stdout);
    commit(&repo, "rotated");

    // An attacker's key: new public key, every value sealed and the file
    // approved with it, and the key chain dropped.
    let evil = tempfile::tempdir().unwrap();
    let attacker = |args: &[&str], stdin: &[u8]| {
        let mut cmd = xtask(repo.root.path(), evil.path(), args);
        Repo::run_with(&mut cmd, stdin)
    };
    attacker(&["keygen", "--env", "prod", "--force"], b"").ok();
    attacker(&["encrypt-secret", "--env", "prod", "token"], b"attacker-token").ok();
    attacker(&["approve", "--env", "prod", "--yes"], b"").ok();
    let run = repo.run(&["check"]).fails();
    assert!(run.stdout.contains("was not endorsed by any earlier key of environment `prod`"), "{}", run.stdout);
    // The maintainer's next seal notices the swapped key and seals nothing.
    let before = repo.read("deploy-config/prod.toml");
    let run = repo.run_stdin(&["encrypt-secret", "--env", "prod", "other"], b"secret").fails();
    assert!(run.stderr.contains("but this machine sealed to"), "{}", run.stderr);
    assert!(run.stderr.contains("--accept-new-key"), "{}", run.stderr);
    assert_eq!(repo.read("deploy-config/prod.toml"), before);
    repo.run_stdin(&["encrypt-secret", "--env", "prod", "other", "--accept-new-key"], b"secret").ok();
    // The real key holder's tools refuse it too.
    let run = repo.run(&["verify", "--env", "prod", "--key-file", repo.key_files("prod")[0].to_str().unwrap()]).fails();
    assert!(run.stderr.contains("uses key id"), "{}", run.stderr);

    // A forged endorsement in the real chain: the approval covers the chain.
    git(repo.root.path(), &["checkout", "-q", "HEAD", "--", "deploy-config/prod.toml"]);
    let text = repo.read("deploy-config/prod.toml");
    let line = text.lines().find(|l| l.starts_with("endorsement = ")).unwrap();
    let forged = line.replace("endorsement = \"", "endorsement = \"AAAA");
    let forged = format!("{}\"", &forged[..forged.len() - 5]);
    std::fs::write(repo.env_file("prod"), text.replace(line, &forged)).unwrap();
    let run = repo.run(&["check"]).fails();
    assert!(run.stdout.contains("changed since it was approved: previous_keys"), "{}", run.stdout);

    // A shallow clone cannot show the chain: reported, not passed.
    git(repo.root.path(), &["checkout", "-q", "HEAD", "--", "deploy-config/prod.toml"]);
    let clone = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.root.path().display());
    git(clone.path(), &["clone", "-q", "--depth", "1", &url, "c"]);
    let run = Repo::run_with(&mut xtask(&clone.path().join("c"), repo.keys.path(), &["check"]), b"").fails();
    assert!(run.stdout.contains("shallow clone"), "{}", run.stdout);
}

#[test]
fn an_approval_does_not_move_to_another_environment() {
    let repo = approved_repo();
    std::fs::copy(repo.env_file("prod"), repo.env_file("copy")).unwrap();
    let run = repo.run(&["check"]).fails();
    assert!(run.stdout.contains("deploy-config/copy.toml: is not approved as it is"), "{}", run.stdout);
    assert!(!run.stdout.contains("deploy-config/prod.toml: is not"), "{}", run.stdout);
}

#[test]
fn bad_keys_truncated_approvals_and_control_characters() {
    let repo = approved_repo();
    let text = repo.read("deploy-config/prod.toml");
    let path = repo.env_file("prod");
    let pk = text.lines().find(|l| l.starts_with("public_key = ")).unwrap();

    // All zeros: a point of small order, which anyone could open values sealed to.
    std::fs::write(&path, text.replace(pk, "public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"")).unwrap();
    let run = repo.run(&["check"]).fails();
    assert!(run.stdout.contains("`public_key` is a point of small order"), "{}", run.stdout);
    let run = repo.run_stdin(&["encrypt-secret", "--env", "prod", "other"], b"x").fails();
    assert!(run.stderr.contains("point of small order"), "{}", run.stderr);

    // A truncated signature.
    let sig = text.lines().find(|l| l.starts_with("signature = ")).unwrap();
    std::fs::write(&path, text.replace(sig, &format!("{}\"", &sig[..sig.len() - 9]))).unwrap();
    let run = repo.run(&["check"]).fails();
    assert!(run.stdout.contains("`approval.signature`"), "{}", run.stdout);

    // A name with a terminal escape in it is shown, not obeyed.
    std::fs::write(&path, format!("{text}\n[x]\n\"a\\u001b[2Jb\" = 1\n")).unwrap();
    let run = repo.run(&["check"]).fails();
    assert!(run.stdout.contains("x.a\\u{1b}[2Jb"), "{}", run.stdout);
    assert!(!run.all().contains('\u{1b}'), "{}", run.stdout);
}

#[test]
fn a_restart_with_a_new_key_is_reported_until_check_starts_from_it() {
    let repo = approved_repo();
    // The key is lost: a new one, which nothing can endorse.
    repo.run(&["keygen", "--env", "prod", "--force"]).ok();
    repo.run_stdin(&["encrypt-secret", "--env", "prod", "token", "--accept-new-key"], TOKEN.as_bytes()).ok();
    repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    commit(&repo, "restart");
    let run = repo.run(&["check"]).fails();
    assert!(run.stdout.contains("was not endorsed by any earlier key"), "{}", run.stdout);
    // Starting from the restart (as CI would, once it is reviewed and merged), it passes.
    let run = repo.run(&["check", "--base", "HEAD"]).ok();
    assert!(run.stdout.contains("approved (serial"), "{}", run.stdout);
    let run = repo.run(&["check", "--base", "no-such-ref"]).fails();
    assert!(run.stdout.contains("--base no-such-ref: no such commit here"), "{}", run.stdout);
}

#[test]
fn the_first_approval_must_keep_the_key_the_file_had() {
    let repo = Repo::new();
    // A file from before approvals: a public key and nothing else.
    let old = boxcar_secrets::SecretKey::generate();
    std::fs::write(repo.env_file("prod"), format!("public_key = \"{}\"\n", old.public_key().to_base64())).unwrap();
    commit(&repo, "before approvals");
    // Its first approval brings in another key.
    std::fs::remove_file(repo.env_file("prod")).unwrap();
    repo.run(&["keygen", "--env", "prod"]).ok();
    let run = repo.run(&["check"]).fails();
    assert!(run.stdout.contains("the first approval (the work tree) brought in key"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("not the key {} the file had before", old.key_id())), "{}", run.stdout);
}
