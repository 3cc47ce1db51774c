//! approve, and what `check` and the commands holding a key do with content
//! nobody approved: the attacks a pull request can try, each written the way
//! an attacker would write the pull request, each refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::{Checkout, Repo, Run, git, project_root, xtask};

const TOKEN: &str = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

/// A repository with environment `prod` holding `token`, approved,
/// committed and published (origin/HEAD): the trusted base.
fn approved_repo() -> Repo {
    let repo = Repo::new();
    repo.env_with("prod", &[("token", TOKEN)]);
    repo.commit("prod");
    repo.publish();
    repo.check(&[]).ok();
    repo
}

/// Runs xtask in `repo` as an attacker whose keys are in `keys`.
fn attacker(repo: &Repo, keys: &Path, args: &[&str], stdin: &[u8]) -> Run {
    Repo::run_with(&mut xtask(repo.root.path(), keys, args), stdin)
}

/// The `error:` lines of a run that end in `[rule]`.
fn broken(run: &Run, rule: &str) -> Vec<String> {
    let tag = format!("[{rule}]");
    run.stdout.lines().filter(|l| l.starts_with("error: ") && l.ends_with(&tag)).map(str::to_owned).collect()
}

/// The interpreter of tests/python: `BOXCAR_PYTHON`, else the venv `cargo
/// xtask test` makes.
fn python() -> PathBuf {
    let python =
        std::env::var_os("BOXCAR_PYTHON").map_or_else(|| project_root().join("target/venv/bin/python"), PathBuf::from);
    assert!(
        python.exists(),
        "no Python at {}: run `cargo xtask test` (it makes target/venv with PyNaCl) or set BOXCAR_PYTHON",
        python.display()
    );
    python
}

/// `check` in `root` with `args`, and tests/python/history.py (written from
/// docs/FORMAT.md alone) on the same repository: they must find the same
/// problems of rules R0 to R5, at the same paths and commits, and refuse the
/// same bases.
fn check_both(root: &Path, keys: &Path, args: &[&str]) -> Run {
    let mut full = vec!["check"];
    full.extend(args);
    let run = Repo::run_with(&mut xtask(root, keys, &full), b"");
    let mut python = std::process::Command::new(python());
    python.arg(project_root().join("tests/python/history.py")).args(args).arg(root);
    let out = python.output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let refused = |line: &str| {
        line.starts_with("error: no trusted base")
            || line.contains("is not HEAD or an ancestor of it")
            || line.contains(": no such commit here")
            || line.contains("a shallow clone): fetch it whole")
            || line.starts_with("error: HEAD and origin/HEAD")
    };
    if out.status.code() == Some(2) {
        assert!(stdout.starts_with("BASE "), "history.py: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(run.stdout.lines().any(refused), "Python refused the base ({stdout}), Rust did not:\n{}", run.stdout);
        return run;
    }
    assert!(
        !run.stdout.lines().any(refused),
        "Rust refused the base, Python did not ({stdout}{}):\n{}",
        String::from_utf8_lossy(&out.stderr),
        run.stdout
    );
    let theirs: BTreeSet<String> = stdout.lines().map(str::to_owned).collect();
    let ours: BTreeSet<String> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .filter_map(|l| {
            let rule = l.rsplit_once(" [R")?.1.strip_suffix(']')?;
            if !matches!(rule, "0" | "1" | "2" | "3" | "4" | "5") {
                return None;
            }
            let (head, _) = l.split_once(": ")?;
            let (path, at) = match head.split_once(" at commit ") {
                Some((path, commit)) => (path, commit),
                None => (head, "worktree"),
            };
            Some(format!("R{rule} {path} {at}"))
        })
        .collect();
    assert_eq!(ours, theirs, "Rust and Python disagree\nRust:\n{}\nPython:\n{stdout}", run.stdout);
    run
}

impl Repo {
    /// `check` with `args`, held to the Python implementation's verdict.
    fn check(&self, args: &[&str]) -> Run {
        check_both(self.root.path(), self.keys.path(), args)
    }
}

impl Checkout {
    /// `check` with `args`, held to the Python implementation's verdict.
    fn check(&self, args: &[&str]) -> Run {
        check_both(self.dir.path(), self.keys.path(), args)
    }
}

/// On a branch `name` with no parent, the attacker's own `prod`: a key of
/// theirs, a token of theirs, approved by that key at serial 100.
fn orphan_with_attackers_file(repo: &Repo, name: &str, evil: &Path) {
    let root = repo.root.path();
    git(root, &["checkout", "-q", "--orphan", name]);
    git(root, &["rm", "-rfq", "."]);
    std::fs::create_dir_all(repo.path("deploy-config")).unwrap();
    attacker(repo, evil, &["keygen", "--env", "prod"], b"").ok();
    attacker(repo, evil, &["encrypt-secret", "--env", "prod", "token", "--accept-new-key"], b"attacker-token").ok();
    let text = repo.read("deploy-config/prod.toml").replace("serial = 1", "serial = 99");
    std::fs::write(repo.env_file("prod"), text).unwrap();
    attacker(repo, evil, &["approve", "--env", "prod", "--yes"], b"").ok();
    repo.commit("unrelated history");
}

#[test]
fn a_changed_setting_needs_an_approval_and_approve_shows_it() {
    let repo = approved_repo();
    let head = git(repo.root.path(), &["rev-parse", "--short=12", "HEAD"]).trim().to_owned();
    let path = repo.env_file("prod");
    let before = repo.read("deploy-config/prod.toml");
    std::fs::write(&path, format!("{before}\n[app]\napi_base = \"https://attacker.example\"\n")).unwrap();
    let run = repo.check(&[]).fails();
    assert_eq!(
        broken(&run, "R1"),
        [format!(
            "error: deploy-config/prod.toml: is not approved as it is: its content, or its environment, differs from \
             what was approved; a holder of the secret key must review the change and approve it: `cargo xtask approve \
             --env prod` (`cargo xtask check` names what changed); changed since the version approved in the base ({head}): \
             app.api_base (new) [ApprovalError::Signature] [R1]"
        )],
        "{}",
        run.stdout
    );
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
    assert!(run.stdout.contains(&format!("serial 2 in commit {head} (signature verified)")), "{}", run.stdout);
    assert!(run.stdout.contains("  app.api_base  = \"https://attacker.example\"  [new]"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("  secrets.token  {} bytes, sealed value", TOKEN.len())), "{}", run.stdout);
    assert!(run.stdout.contains("[approved before]"), "{}", run.stdout);
    assert!(!run.all().contains(TOKEN), "approve printed the value");
    assert_eq!(repo.read("deploy-config/prod.toml"), changed, "the file changed");

    let run = repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    assert!(run.stdout.contains("approved deploy-config/prod.toml (serial 3)"), "{}", run.stdout);
    repo.check(&[]).ok();
    repo.run(&["verify", "--env", "prod"]).ok();
    let again = repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    assert!(again.stdout.contains("is approved as it is (serial 3"), "{}", again.stdout);
}

#[test]
fn a_new_or_replayed_value_is_caught() {
    let repo = approved_repo();
    let first = repo.read("deploy-config/prod.toml");
    repo.run_stdin(&["encrypt-secret", "--env", "prod", "token"], b"new-token").ok();
    let run = repo.check(&[]).fails();
    assert!(run.stdout.contains("changed since the version approved in the base ("), "{}", run.stdout);
    assert!(run.stdout.contains(": secrets.token [ApprovalError::Signature] [R1]"), "{}", run.stdout);
    repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    repo.commit("new token");
    repo.check(&[]).ok();
    // The old, approved file brought back: its approval is genuine, but older.
    std::fs::write(repo.env_file("prod"), &first).unwrap();
    let run = repo.check(&[]).fails();
    let replay = broken(&run, "R3");
    assert_eq!(replay.len(), 1, "{}", run.stdout);
    assert!(
        replay[0].starts_with(
            "error: deploy-config/prod.toml: approval serial 2 is lower than serial 3, approved before it in commit "
        ),
        "{}",
        replay[0]
    );
    assert!(replay[0].contains("an older approved version was brought back"), "{}", replay[0]);
}

#[test]
fn a_merge_with_an_unrelated_root_cannot_swap_the_key() {
    let repo = approved_repo();
    let root = repo.root.path();
    let main = git(root, &["rev-parse", "--abbrev-ref", "HEAD"]).trim().to_owned();
    let evil = tempfile::tempdir().unwrap();
    git(root, &["checkout", "-q", "-b", "feature"]);
    orphan_with_attackers_file(&repo, "evil", evil.path());
    // The pull request: merge the unrelated history keeping ours, then take
    // the attacker's file in a commit of its own.
    git(root, &["checkout", "-q", "feature"]);
    git(root, &["merge", "-q", "--allow-unrelated-histories", "-s", "ours", "evil", "-m", "merge evil"]);
    git(root, &["checkout", "evil", "--", "deploy-config/prod.toml"]);
    repo.commit("update prod");
    let run = repo.check(&[]).fails();
    let swapped = broken(&run, "R2");
    // The work tree's version, the commit that took it, and the orphan's.
    assert_eq!(swapped.len(), 3, "{}", run.stdout);
    assert!(swapped.iter().all(|l| l.contains("is not endorsed by the keys environment `prod` holds in the base")));
    assert!(!run.stdout.contains("ok  deploy-config/prod.toml"), "{}", run.stdout);

    // CI checks the merge of the pull request into main against main.
    git(root, &["checkout", "-q", &main]);
    git(root, &["merge", "-q", "--no-ff", "feature", "-m", "merge pull request"]);
    // The merge commit holds the attacker's file too.
    let run = repo.check(&["--base", "origin/main"]).fails();
    assert_eq!(broken(&run, "R2").len(), 4, "{}", run.stdout);
    let run = repo.check(&[]).fails();
    assert_eq!(broken(&run, "R2").len(), 4, "{}", run.stdout);
}

#[test]
fn a_side_branch_older_than_the_file_cannot_swap_the_key() {
    let repo = Repo::new();
    let root = repo.root.path();
    std::fs::write(repo.path("README"), "a project\n").unwrap();
    repo.commit("before the environment");
    git(root, &["branch", "old"]);
    repo.env_with("prod", &[("token", TOKEN)]);
    repo.commit("prod");
    repo.publish();
    // A branch from before prod.toml existed brings in a file of its own.
    let evil = tempfile::tempdir().unwrap();
    git(root, &["checkout", "-q", "old"]);
    attacker(&repo, evil.path(), &["keygen", "--env", "prod"], b"").ok();
    repo.commit("prod, the attacker's");
    git(root, &["checkout", "-q", "-b", "feature", "origin/main"]);
    git(root, &["merge", "-q", "-s", "ours", "old", "-m", "merge old"]);
    git(root, &["checkout", "old", "--", "deploy-config/prod.toml"]);
    repo.commit("update prod");
    let run = repo.check(&[]).fails();
    assert_eq!(broken(&run, "R2").len(), 3, "{}", run.stdout);
}

#[test]
fn a_merge_cannot_bring_back_an_older_approved_file() {
    let repo = approved_repo();
    let root = repo.root.path();
    let old = repo.read("deploy-config/prod.toml");
    // The token leaked and was replaced: merged, serial 3.
    repo.run_stdin(&["encrypt-secret", "--env", "prod", "token"], b"replaced-token").ok();
    repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    repo.commit("replace the leaked token");
    repo.publish();
    // The pull request: an unrelated root holding the old approved file,
    // merged keeping ours, then the old file taken.
    git(root, &["checkout", "-q", "-b", "feature"]);
    git(root, &["checkout", "-q", "--orphan", "old"]);
    git(root, &["rm", "-rfq", "."]);
    std::fs::create_dir_all(repo.path("deploy-config")).unwrap();
    std::fs::write(repo.env_file("prod"), &old).unwrap();
    repo.commit("old");
    git(root, &["checkout", "-q", "feature"]);
    git(root, &["merge", "-q", "--allow-unrelated-histories", "-s", "ours", "old", "-m", "merge"]);
    git(root, &["checkout", "old", "--", "deploy-config/prod.toml"]);
    repo.commit("prod");
    let run = repo.check(&[]).fails();
    // The work tree's version is what the merge would bring in.
    let replays = broken(&run, "R3");
    assert_eq!(replays.len(), 1, "{}", run.stdout);
    assert!(
        replays[0].starts_with(
            "error: deploy-config/prod.toml: approval serial 2 is lower than serial 3, approved before it in the base ("
        ),
        "{}",
        run.stdout
    );
    // The service would answer to the old token: the key holder's tools say so too.
    let run = repo.run(&["verify", "--env", "prod"]).ok();
    assert!(run.stdout.contains("token"), "{}", run.stdout);
}

#[test]
fn two_approvals_of_one_serial_meeting_in_a_merge_need_a_new_one() {
    let repo = approved_repo();
    let root = repo.root.path();
    let main = git(root, &["rev-parse", "--abbrev-ref", "HEAD"]).trim().to_owned();
    // Two key holders approve different changes from the same version.
    git(root, &["checkout", "-q", "-b", "a"]);
    repo.run_stdin(&["encrypt-secret", "--env", "prod", "token"], b"token-a").ok();
    repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    repo.commit("a");
    git(root, &["checkout", "-q", &main]);
    repo.run_stdin(&["encrypt-secret", "--env", "prod", "other"], b"token-b").ok();
    repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    repo.commit("b");
    repo.publish();
    // The pull request takes a's file as it is.
    git(root, &["checkout", "-q", "a"]);
    git(root, &["merge", "-q", "-s", "ours", &main, "-m", "merge main, keep ours"]);
    let run = repo.check(&[]).fails();
    let met = broken(&run, "R3");
    assert!(!met.is_empty(), "{}", run.stdout);
    assert!(met.iter().all(|l| l.contains("approval serial 3 was also given to other content")), "{}", run.stdout);
    // Approved again, the merged file passes.
    repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    repo.commit("approve the merge");
    repo.check(&[]).ok();
}

#[test]
fn approve_believes_only_signed_history() {
    let repo = approved_repo();
    let text = repo.read("deploy-config/prod.toml");
    // The attacker's setting, with a fingerprint of it in the unsigned table
    // an older boxcar read, so the setting would show as approved before.
    let value = boxcar_secrets::read_toml("v = \"https://evil.example\"").unwrap();
    let forged = format!(
        "{text}\n[approval.entries]\n\"app.api_base\" = \"{}\"\n\n[app]\napi_base = \"https://evil.example\"\n",
        boxcar_secrets::approval::fingerprint(&value["v"]).unwrap()
    );
    std::fs::write(repo.env_file("prod"), forged).unwrap();
    let run = repo.run(&["approve", "--env", "prod"]).fails();
    assert!(run.stdout.contains("  app.api_base  = \"https://evil.example\"  [new]"), "{}", run.stdout);
    assert!(!run.stdout.contains("entries"), "{}", run.stdout);
    // The same table shows nothing in check either: the file is unapproved.
    let run = repo.check(&[]).fails();
    assert!(run.stdout.contains("app.api_base (new) [ApprovalError::Signature] [R1]"), "{}", run.stdout);
}

#[test]
fn approve_shows_every_value_whole_and_escaped() {
    let repo = approved_repo();
    let text = repo.read("deploy-config/prod.toml");
    let admins: Vec<String> = (100_000_000..100_000_030).map(|n: u64| n.to_string()).collect();
    let mut longer = admins.clone();
    longer.push("666666666".to_owned());
    std::fs::write(
        repo.env_file("prod"),
        format!("{text}\n[[bots]]\nname = \"b\"\nadmins = [{}]\n", admins.join(", ")),
    )
    .unwrap();
    repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    repo.commit("admins");
    // An id appended to a long list, and a URL reversed by a right-to-left override.
    let text = repo.read("deploy-config/prod.toml");
    let text = text.replace(&admins.join(", "), &longer.join(", "));
    std::fs::write(repo.env_file("prod"), format!("{text}\n[app]\npublic_url = \"https://\u{202e}elpmaxe.live\"\n"))
        .unwrap();
    let run = repo.run(&["approve", "--env", "prod"]).fails();
    assert!(run.stdout.contains("  bots[0].admins  [CHANGED]\n"), "{}", run.stdout);
    let shown: String = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("  bots[0].admins"))
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .map(str::trim_start)
        .collect();
    assert_eq!(shown, format!("= [{}]", longer.join(", ")), "{}", run.stdout);
    assert!(run.stdout.contains("  app.public_url  = \"https://\\u{202e}elpmaxe.live\"  [new]"), "{}", run.stdout);
    assert!(!run.all().contains('\u{202e}'), "{}", run.stdout);
    assert!(!run.stdout.contains('…'), "{}", run.stdout);
}

#[test]
fn a_replaced_key_fails_check_even_with_everything_re_signed() {
    let repo = approved_repo();
    // A legitimate rotation: the old key endorses the new one.
    repo.run(&["rotate-key", "--env", "prod"]).ok();
    let run = repo.check(&[]).ok();
    assert!(run.stdout.contains("2 key(s) endorsed from the base"), "{}", run.stdout);
    repo.commit("rotated");

    // An attacker's key: new public key, every value sealed and the file
    // approved with it, and the key chain dropped.
    let evil = tempfile::tempdir().unwrap();
    attacker(&repo, evil.path(), &["keygen", "--env", "prod", "--force"], b"").ok();
    attacker(&repo, evil.path(), &["encrypt-secret", "--env", "prod", "token", "--accept-new-key"], b"attacker-token")
        .ok();
    attacker(&repo, evil.path(), &["approve", "--env", "prod", "--yes"], b"").ok();
    let run = repo.check(&[]).fails();
    assert!(run.stdout.contains("is not endorsed by the keys environment `prod` holds in the base"), "{}", run.stdout);
    // The maintainer's next seal notices the swapped key and seals nothing.
    let before = repo.read("deploy-config/prod.toml");
    let run = repo.run_stdin(&["encrypt-secret", "--env", "prod", "other"], b"secret").fails();
    assert!(run.stderr.contains("is not endorsed by the keys environment"), "{}", run.stderr);
    assert!(run.stderr.contains("--accept-new-key"), "{}", run.stderr);
    assert_eq!(repo.read("deploy-config/prod.toml"), before);
    // On a machine that never sealed anything for it, too.
    let fresh = tempfile::tempdir().unwrap();
    let run = attacker(&repo, fresh.path(), &["encrypt-secret", "--env", "prod", "other"], b"secret").fails();
    assert!(run.stderr.contains("is not endorsed by the keys environment"), "{}", run.stderr);
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
    let run = repo.check(&[]).fails();
    assert!(run.stdout.contains(": previous_keys[0].endorsement [ApprovalError::Signature] [R1]"), "{}", run.stdout);

    // A shallow clone cannot show the history before its one commit.
    git(repo.root.path(), &["checkout", "-q", "HEAD", "--", "deploy-config/prod.toml"]);
    let clone = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.root.path().display());
    git(clone.path(), &["clone", "-q", "--depth", "1", &url, "c"]);
    let run = Repo::run_with(&mut xtask(&clone.path().join("c"), repo.keys.path(), &["check"]), b"").fails();
    assert!(run.stdout.contains("shallow clone"), "{}", run.stdout);
    let first = git(repo.root.path(), &["rev-list", "--max-parents=0", "HEAD"]).trim().to_owned();
    let run = Repo::run_with(&mut xtask(&clone.path().join("c"), repo.keys.path(), &["check", "--base", &first]), b"")
        .fails();
    assert!(run.stdout.contains(&format!("--base {first}: no such commit here")), "{}", run.stdout);
}

#[test]
fn an_approval_does_not_move_to_another_environment() {
    let repo = approved_repo();
    std::fs::copy(repo.env_file("prod"), repo.env_file("copy")).unwrap();
    let run = repo.check(&[]).fails();
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
    let run = repo.check(&[]).fails();
    assert!(run.stdout.contains("`public_key` is a point of small order"), "{}", run.stdout);
    let run = repo.run_stdin(&["encrypt-secret", "--env", "prod", "other"], b"x").fails();
    assert!(run.stderr.contains("point of small order"), "{}", run.stderr);

    // A truncated signature.
    let sig = text.lines().find(|l| l.starts_with("signature = ")).unwrap();
    std::fs::write(&path, text.replace(sig, &format!("{}\"", &sig[..sig.len() - 9]))).unwrap();
    let run = repo.check(&[]).fails();
    assert!(run.stdout.contains("`approval.signature`"), "{}", run.stdout);

    // A name with a terminal escape in it is shown, not obeyed; so are the
    // controls that reorder or hide text.
    std::fs::write(&path, format!("{text}\n[x]\n\"a\\u001b[2Jb\" = 1\n\"c\\u202ed\\u200b\" = 2\n")).unwrap();
    let run = repo.check(&[]).fails();
    assert!(run.stdout.contains("x.\"a\\u001B[2Jb\" (new)"), "{}", run.stdout);
    assert!(run.stdout.contains("x.\"c\\u{202e}d\\u{200b}\" (new)"), "{}", run.stdout);
    assert!(!run.all().contains(['\u{1b}', '\u{202e}', '\u{200b}']), "{}", run.stdout);

    // TOML 1.1 syntax, which a TOML 1.0 reader cannot read.
    std::fs::write(&path, format!("{text}\n[x]\ny = \"\\e[2J\"\n")).unwrap();
    let run = repo.check(&[]).fails();
    assert!(run.stdout.contains("the escape `\\e` (write `\\u001b`) is TOML 1.1"), "{}", run.stdout);
}

#[test]
fn line_breaks_a_checkout_changes_keep_the_approval() {
    let repo = approved_repo();
    let text = repo.read("deploy-config/prod.toml");
    std::fs::write(repo.env_file("prod"), format!("{text}\n[app]\nnote = \"\"\"\nfirst\nsecond\"\"\"\n")).unwrap();
    repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    // What `core.autocrlf` does on checkout: every line break CR LF.
    let crlf = repo.read("deploy-config/prod.toml").replace('\n', "\r\n");
    std::fs::write(repo.env_file("prod"), crlf).unwrap();
    let run = repo.check(&[]).ok();
    assert!(run.stdout.contains("ok  deploy-config/prod.toml"), "{}", run.stdout);
    repo.run(&["verify", "--env", "prod"]).ok();
}

#[test]
fn no_trusted_base_is_never_a_pass() {
    let repo = Repo::new();
    repo.env_with("prod", &[("token", TOKEN)]);
    // No commit: nothing to follow, and the note says the key is new.
    let run = repo.check(&[]).ok();
    assert!(run.stdout.contains("is new (there is no history before it): its first key is"), "{}", run.stdout);
    repo.commit("prod");
    // History, but no origin/HEAD and no --base.
    let run = repo.check(&[]).fails();
    assert!(run.stdout.contains("error: no trusted base to check the history from"), "{}", run.stdout);
    assert!(run.stdout.contains("--base origin/main"), "{}", run.stdout);
    repo.check(&["--base", "HEAD"]).ok();
    // A base that is not an ancestor of HEAD.
    let root = repo.root.path();
    let main = git(root, &["rev-parse", "--abbrev-ref", "HEAD"]).trim().to_owned();
    git(root, &["checkout", "-q", "--orphan", "other"]);
    repo.commit("other root");
    git(root, &["checkout", "-q", &main]);
    let run = repo.check(&["--base", "other"]).fails();
    assert!(run.stdout.contains("error: --base other ("), "{}", run.stdout);
    assert!(run.stdout.contains("is not HEAD or an ancestor of it"), "{}", run.stdout);
}

#[test]
fn a_removed_environment_is_reported() {
    let repo = approved_repo();
    std::fs::remove_file(repo.env_file("prod")).unwrap();
    repo.commit("remove prod");
    let run = repo.check(&[]).fails();
    let gone = broken(&run, "R4");
    assert_eq!(gone.len(), 1, "{}", run.stdout);
    assert!(gone[0].starts_with("error: deploy-config/prod.toml at commit "), "{}", gone[0]);
    assert!(gone[0].contains("environment `prod` is gone from the work tree"), "{}", gone[0]);
    // Once the removal is merged, checks from there on pass.
    repo.publish();
    repo.check(&[]).ok();
}

#[test]
fn a_restart_with_a_new_key_is_reported_until_check_starts_from_it() {
    let repo = approved_repo();
    // The key is lost: a new one, which nothing can endorse.
    repo.run(&["keygen", "--env", "prod", "--force"]).ok();
    repo.run_stdin(&["encrypt-secret", "--env", "prod", "token", "--accept-new-key"], TOKEN.as_bytes()).ok();
    repo.run(&["approve", "--env", "prod", "--yes"]).ok();
    repo.commit("restart");
    let run = repo.check(&[]).fails();
    assert!(run.stdout.contains("is not endorsed by the keys environment"), "{}", run.stdout);
    // Starting from the restart (as CI would, once it is reviewed and merged), it passes.
    let run = repo.check(&["--base", "HEAD"]).ok();
    assert!(run.stdout.contains("approved (serial"), "{}", run.stdout);
    let run = repo.check(&["--base", "no-such-ref"]).fails();
    assert!(run.stdout.contains("--base no-such-ref: no such commit here"), "{}", run.stdout);
}

#[test]
fn the_first_approval_must_keep_the_key_the_file_had() {
    let repo = Repo::new();
    // A file from before approvals: a public key and nothing else.
    let old = boxcar_secrets::SecretKey::generate();
    std::fs::write(repo.env_file("prod"), format!("public_key = \"{}\"\n", old.public_key().to_base64())).unwrap();
    repo.commit("before approvals");
    repo.publish();
    // Its first approval brings in another key.
    std::fs::remove_file(repo.env_file("prod")).unwrap();
    repo.run(&["keygen", "--env", "prod"]).ok();
    let run = repo.check(&[]).fails();
    let swapped = broken(&run, "R2");
    assert_eq!(swapped.len(), 1, "{}", run.stdout);
    assert!(swapped[0].contains("is not endorsed by the keys environment `prod` holds in the base"), "{}", run.stdout);
    // Keeping the key, the first approval passes (with the old key's holder's approval key).
    let repo = Repo::new();
    repo.run(&["keygen", "--env", "prod"]).ok();
    let key = repo.key_file("prod");
    let text = repo.read("deploy-config/prod.toml");
    let pk = text.lines().find(|l| l.starts_with("public_key = ")).unwrap().to_owned();
    std::fs::write(repo.env_file("prod"), format!("{pk}\n")).unwrap();
    repo.commit("before approvals");
    repo.publish();
    repo.run(&["approve", "--env", "prod", "--yes", "--key-file", key.to_str().unwrap()]).ok();
    repo.check(&[]).ok();
}

/// `hello-api`'s environment `hello` in a copy of this workspace, approved
/// and published, then sealed again with another key value and published:
/// `(checkout, the first approved file)`.
fn hello_with_a_replaced_key() -> (Checkout, String) {
    let c = Checkout::plain("hello");
    c.hello("first-api-key-0001");
    let first = std::fs::read_to_string(c.dir.path().join("examples/hello-api/deploy-config/hello.toml")).unwrap();
    let mut seal = c.cmd(&["encrypt-secret", "--service", "hello-api", "--env", "hello", "api_key"]);
    Repo::run_with(&mut seal, b"second-api-key-0002").ok();
    c.approve_service("hello-api", "hello");
    c.commit();
    c.publish();
    (c, first)
}

#[test]
fn moving_the_folder_cannot_bring_back_an_old_file() {
    let (c, first) = hello_with_a_replaced_key();
    let root = c.dir.path();
    // The pull request: the file removed, its first version in a new folder,
    // and the service pointed at it.
    git(root, &["rm", "-q", "examples/hello-api/deploy-config/hello.toml"]);
    std::fs::create_dir_all(root.join("hello-config")).unwrap();
    std::fs::write(root.join("hello-config/hello.toml"), &first).unwrap();
    let contract = std::fs::read_to_string(root.join("boxcar.toml")).unwrap();
    std::fs::write(
        root.join("boxcar.toml"),
        contract.replace("config_dir = \"examples/hello-api/deploy-config\"", "config_dir = \"hello-config\""),
    )
    .unwrap();
    c.commit();
    let base = git(root, &["rev-parse", "origin/main"]).trim().to_owned();
    for args in [vec!["check"], vec!["check", "--base", &base]] {
        let run = c.check(&args[1..]).fails();
        let replay = broken(&run, "R3");
        assert_eq!(replay.len(), 1, "{}", run.stdout);
        assert!(replay.iter().all(|l| l.starts_with("error: hello-config/hello.toml")), "{}", run.stdout);
        assert!(replay[0].contains("approval serial 2 is lower than serial 3"), "{}", run.stdout);
        // What the old file approved for the service is not what boxcar.toml says now.
        assert!(run.stdout.contains("config_dir"), "{}", run.stdout);
        assert!(
            run.stdout.contains("environment `hello` moved: examples/hello-api/deploy-config/hello.toml in the base"),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn a_folder_moved_as_it_is_is_followed_once_approved() {
    let (c, _) = hello_with_a_replaced_key();
    let root = c.dir.path();
    git(root, &["mv", "examples/hello-api/deploy-config", "hello-config"]);
    let contract = std::fs::read_to_string(root.join("boxcar.toml")).unwrap();
    std::fs::write(
        root.join("boxcar.toml"),
        contract.replace("config_dir = \"examples/hello-api/deploy-config\"", "config_dir = \"hello-config\""),
    )
    .unwrap();
    // The move changes what the service is given: its key holder approves it.
    let run = c.check(&[]).fails();
    assert_eq!(broken(&run, "R6").len(), 1, "{}", run.stdout);
    assert!(run.stdout.contains("`cargo xtask approve --service hello-api --env hello`"), "{}", run.stdout);
    c.approve_service("hello-api", "hello");
    c.commit();
    let run = c.check(&[]).ok();
    assert!(run.stdout.contains("note: environment `hello` moved"), "{}", run.stdout);
    assert!(run.stdout.contains("ok  hello-config/hello.toml"), "{}", run.stdout);
}

#[test]
fn a_contract_override_is_not_approved_and_no_image_is_built_from_it() {
    let c = Checkout::plain("hello");
    c.hello("the-api-key-0001");
    let root = c.dir.path();
    let contract = std::fs::read_to_string(root.join("boxcar.toml")).unwrap();
    let evil =
        contract.replace("env.PORT = \"{port}\"", "env.PORT = \"{port}\"\nenv.API_BASE = \"https://evil.example\"");
    assert_ne!(evil, contract);
    std::fs::write(root.join("boxcar.toml"), &evil).unwrap();
    let run = c.check(&[]).fails();
    let r6 = broken(&run, "R6");
    assert_eq!(r6.len(), 1, "{}", run.stdout);
    assert!(r6[0].contains("boxcar.toml gives service `hello-api` at run time what environment `hello` did not approve (approved another: it differs in env.API_BASE (new))"), "{}", r6[0]);
    // No image is built from it: refused before anything is compiled.
    let run = c.run(&["image", "--service", "hello-api"]).fails();
    assert!(run.stderr.contains("env.API_BASE (new)"), "{}", run.stderr);
    assert!(run.stderr.contains("cargo xtask approve --service hello-api --env hello"), "{}", run.stderr);
    assert!(!run.stderr.contains("binary:"), "{}", run.stderr);
    // approve shows the new variable, and then the contract passes.
    let run = c.run(&["approve", "--service", "hello-api", "--env", "hello"]).fails();
    assert!(
        run.stdout.contains("  boxcar.services.hello-api.env.API_BASE  = \"https://evil.example\"  [new]"),
        "{}",
        run.stdout
    );
    c.approve_service("hello-api", "hello");
    c.check(&[]).ok();
}

#[test]
fn an_unapproved_file_stops_the_image_and_hints_name_the_service() {
    let c = Checkout::plain("hello");
    c.hello("the-api-key-0001");
    let mut seal = c.cmd(&["encrypt-secret", "--service", "hello-api", "--env", "hello", "api_key"]);
    let run = Repo::run_with(&mut seal, b"another-api-key").ok();
    assert!(run.stdout.contains("`cargo xtask approve --service hello-api --env hello`"), "{}", run.stdout);
    let run = c.check(&[]).fails();
    assert!(run.stdout.contains("`cargo xtask approve --service hello-api --env hello`"), "{}", run.stdout);
    let run = c.run(&["image", "--service", "hello-api"]).fails();
    assert!(
        run.stderr.contains("examples/hello-api/deploy-config/hello.toml: is not approved as it is"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("`cargo xtask approve --service hello-api --env hello`"), "{}", run.stderr);
}
