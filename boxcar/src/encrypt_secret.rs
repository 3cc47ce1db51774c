//! `cargo xtask encrypt-secret`: seal one value read from stdin into an environment file.

use std::io::{IsTerminal as _, Read as _};

use anyhow::{Context as _, bail};
use boxcar_secrets::{EnvDocument, PublicKey};
use zeroize::Zeroizing;

use crate::project::{Context, EnvArg};

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
    /// Seal to the file's public key even though it is not the one this
    /// machine sealed to before for this repository and environment (after a
    /// rotation you know of).
    #[arg(long)]
    accept_new_key: bool,
}

pub(crate) fn run(ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    ctx.use_config_of(&args.at.service)?;
    boxcar_secrets::check_secret_name(&args.name).map_err(|p| anyhow::anyhow!("secret name `{}` {p}", args.name))?;
    let file = ctx.load_env(&args.at.env)?;
    let key = file.public_key();
    let known = crate::keys::KnownKeys::load();
    if let Some(before) = known.get(&ctx.root, &args.at.env)
        && before != *key
        && !args.accept_new_key
    {
        bail!(
            "{} now names public key {} ({}), but this machine sealed to {} ({}) for environment `{}` before; \
             nothing was sealed. A pull request can swap the key to read what you seal: if the change is a rotation \
             you know of, pass --accept-new-key",
            ctx.show(file.path()),
            key.key_id(),
            fingerprint(key),
            before.key_id(),
            fingerprint(&before),
            args.at.env
        );
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
         `cargo xtask approve --env {}`",
        ctx.show(file.path()),
        args.at.env
    );
    Ok(())
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
