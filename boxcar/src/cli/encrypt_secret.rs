//! `cargo xtask encrypt-secret`: seal one value read from stdin into an environment file.

use std::io::{IsTerminal as _, Read as _};

use anyhow::{Context as _, bail};
use boxcar_secrets::{EnvDocument, PublicKey};
use zeroize::Zeroizing;

use crate::cli::args::BaseArg;
use crate::cli::args::EnvArg;
use crate::vocab::project::Context;

/// Seal a secret value into deploy-config/<ENV>.toml.
///
/// The value is read from stdin, never from the command line (argv shows in
/// `ps` and shell history): `printf %s "$TOKEN" | cargo xtask encrypt-secret
/// --env production api_key`. On a terminal it prompts twice without
/// echo. Newline policy: exactly one trailing "\n" (or "\r\n") is removed,
/// because `echo` and editors add one; other whitespace is kept.
/// Only the line `NAME = "sealed:…"` under [secrets] changes; every other byte
/// of the file stays as it was. Sealing needs no secret key, so the file is
/// left unapproved: a key holder approves it with `cargo xtask approve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    at: EnvArg,
    /// Secret name (a-z, 0-9, `_`; starts with a letter), the key under [secrets].
    name: String,
    /// Keep a trailing newline in the value instead of removing one.
    #[arg(long)]
    keep_trailing_newline: bool,
    /// Seal to the file's public key even though nothing shows it is the
    /// environment's: no key the trusted base holds endorsed it, or (without
    /// a base) it is not the one this machine sealed to before. For a key you
    /// know is right, such as one you have just made.
    #[arg(long)]
    accept_new_key: bool,
    #[command(flatten)]
    base: BaseArg,
}

pub(crate) fn run(sh: &xshell::Shell, ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    ctx.use_config_of(args.at.service.name())?;
    boxcar_secrets::check_secret_name(&args.name).map_err(|p| anyhow::anyhow!("secret name `{}` {p}", args.name))?;
    let file = ctx.load_env(&args.at.env)?;
    let key = file.public_key();
    let known = crate::vocab::keys::KnownKeys::load();
    if !args.accept_new_key {
        refuse_an_unknown_key(sh, ctx, &file, &known, &args)?;
    }

    let value = if std::io::stdin().is_terminal() {
        prompt(&args.at.env, &args.name, &key.key_id().to_string())?
    } else {
        // Room for the largest value up front: a growing buffer would leave
        // unwiped copies behind each time it moved.
        let limit = boxcar_secrets::MAX_VALUE_LEN + 2;
        let mut buf = Zeroizing::new(Vec::with_capacity(limit + 1));
        std::io::stdin().lock().take(limit as u64 + 1).read_to_end(&mut buf).context("reading the value from stdin")?;
        if !args.keep_trailing_newline {
            strip_one_newline(&mut buf);
        }
        buf
    };
    if value.is_empty() {
        bail!(
            "the value is empty: nothing to seal\n\
             hint: pipe the value in, e.g. `printf %s \"$VALUE\" | cargo xtask encrypt-secret --env {} {}`",
            args.at.env,
            args.name
        );
    }
    if value.first().is_some_and(u8::is_ascii_whitespace) || value.last().is_some_and(u8::is_ascii_whitespace) {
        eprintln!("warning: the value starts or ends with whitespace; it is sealed exactly as given");
    }

    let sealed = boxcar_secrets::seal(key, &args.at.env, &args.name, &value)?;
    let mut doc = EnvDocument::load_or_new(file.path())?;
    let replaced = doc.set_secret(&args.name, &sealed)?;
    doc.write().with_context(|| format!("writing {}", ctx.show(file.path())))?;
    if let Err(e) = known.remember(&ctx.root, &args.at.env, key) {
        eprintln!("warning: cannot remember the key sealed to ({e:#}); the next run cannot tell if it changed");
    }
    println!(
        "{} secrets.{} in {} ({} bytes, sealed to key {})",
        if replaced { "replaced" } else { "added" },
        args.name,
        ctx.show(file.path()),
        value.len(),
        key.key_id()
    );
    println!(
        "not approved yet: services refuse to start on {} until a holder of the secret key reviews it and runs \
         `cargo xtask approve {}--env {}`",
        ctx.show(file.path()),
        ctx.service_arg(),
        args.at.env
    );
    Ok(())
}

/// A pull request can swap `public_key` for the attacker's, to read what is
/// sealed next. The key is the environment's when a key the trusted base
/// holds endorsed it (`check`'s R2, from git history: right on any machine);
/// without a base, when it is the key this machine sealed to before.
/// Anything else is refused, saying why.
fn refuse_an_unknown_key(
    sh: &xshell::Shell,
    ctx: &Context,
    file: &boxcar_secrets::EnvFile,
    known: &crate::vocab::keys::KnownKeys,
    args: &Args,
) -> anyhow::Result<()> {
    let key = file.public_key();
    let says = match what_history_says(sh, ctx, file, args) {
        Ok(says) => says,
        Err(e) => History::CannotTell(format!("{e:#}")),
    };
    let sealed_to = known.get(&ctx.root, file.env());
    match (says, sealed_to) {
        (History::Endorsed, _) => Ok(()),
        (History::Swapped(problem), _) => bail!(
            "{problem}\nnothing was sealed: a pull request can swap the key to read what you seal. If the change is \
             a rotation you know of, pass --accept-new-key"
        ),
        (_, Some(before)) if before == *key => Ok(()),
        (History::None | History::CannotTell(_), Some(before)) => bail!(
            "{} now names public key {} ({}), but this machine sealed to {} ({}) for environment `{}` before, and git \
             history cannot tell which is the environment's; nothing was sealed. A pull request can swap the key to \
             read what you seal: if the change is a rotation you know of, pass --accept-new-key, or pass --base with a \
             commit you trust",
            ctx.show(file.path()),
            key.key_id(),
            fingerprint(key),
            before.key_id(),
            fingerprint(&before),
            file.env()
        ),
        // No commit yet, or no git: no pull request can have swapped it.
        (History::None, None) => Ok(()),
        (History::CannotTell(why), None) => bail!(
            "cannot tell whether public key {} ({}) of {} is environment `{}`'s: {why}, and this machine never sealed \
             to it; nothing was sealed. Pass --base with a commit you trust, or --accept-new-key if you know the key \
             (you made it, or its holder told you its fingerprint)",
            key.key_id(),
            fingerprint(key),
            ctx.show(file.path()),
            file.env()
        ),
    }
}

/// What git history says of an environment file's key.
enum History {
    /// A key the trusted base holds endorsed it.
    Endorsed,
    /// Nothing the base holds endorsed it: `check`'s R2 line.
    Swapped(String),
    /// There is no history (no commit yet, or no git).
    None,
    /// History cannot tell (no base, or an environment new since the base): why.
    CannotTell(String),
}

fn what_history_says(
    sh: &xshell::Shell,
    ctx: &Context,
    file: &boxcar_secrets::EnvFile,
    args: &Args,
) -> anyhow::Result<History> {
    let start = match crate::ops::history::start(sh, args.base.base.as_deref()) {
        Ok(start @ crate::ops::history::Start::Base { .. }) => start,
        Ok(_) => return Ok(History::None),
        Err(why) => return Ok(History::CannotTell(why.to_string())),
    };
    let path = file.path().strip_prefix(&ctx.root).unwrap_or(file.path()).to_owned();
    let verdict = crate::ops::trust::evaluate(&crate::ops::history::read(sh, &start)?, &|_| None);
    let swapped = verdict
        .problems
        .iter()
        .find(|p| p.rule == crate::ops::trust::Rule::R2 && p.at == crate::ops::trust::At::WorkTree && p.path == path);
    Ok(match (swapped, verdict.files.get(&path)) {
        (Some(problem), _) => History::Swapped(problem.to_string()),
        (None, Some(f)) if f.new => History::CannotTell("it is a new environment since the base".to_owned()),
        (None, _) => History::Endorsed,
    })
}

/// The whole SHA-256 of a public key in hex: a key id is short enough to collide on purpose.
fn fingerprint(key: &PublicKey) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes one trailing `\n` or `\r\n`.
fn strip_one_newline(buf: &mut Vec<u8>) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
}

fn prompt(env: &str, name: &str, key_id: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    eprintln!("sealing secrets.{name} for environment `{env}` (key id {key_id}); input is not echoed");
    let first = Zeroizing::new(rpassword::prompt_password(format!("{name}: ")).context("reading the value")?);
    let second = Zeroizing::new(rpassword::prompt_password(format!("{name} (again): ")).context("reading the value")?);
    if first != second {
        bail!("the two entries differ; nothing was written");
    }
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::strip_one_newline;

    #[test]
    fn newline_policy() {
        for (input, out) in [
            (&b"abc\n"[..], &b"abc"[..]),
            (b"abc\r\n", b"abc"),
            (b"abc\n\n", b"abc\n"),
            (b"abc", b"abc"),
            (b"abc \n", b"abc "),
            (b"\n", b""),
        ] {
            let mut v = input.to_vec();
            strip_one_newline(&mut v);
            assert_eq!(v, out);
        }
    }
}
