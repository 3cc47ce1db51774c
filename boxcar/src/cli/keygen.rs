//! `cargo xtask keygen`: a new key pair for one deployment environment.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use boxcar_secrets::{EnvDocument, SecretKey};

use crate::cli::args::EnvArg;
use crate::vocab::keys;
use crate::vocab::project::Context;

/// Create a key pair for a deployment environment.
///
/// The public key goes into deploy-config/<ENV>.toml (created if missing;
/// comments and order of an existing file are kept). The secret key is written
/// base64-encoded, mode 0600, outside the work tree: by default to
/// $BOXCAR_KEY_DIR, $XDG_CONFIG_HOME/boxcar/keys or ~/.config/boxcar/keys, as
/// <ENV>-<KEY ID>.key. The secret key is never printed.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    at: EnvArg,
    /// Where to write the secret key (must be outside the work tree).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Replace an existing public key. Values sealed to the old key can no
    /// longer be opened; `rotate-key` keeps them instead.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    ctx.use_config_of(args.at.service.name())?;
    boxcar_secrets::check_env_name(&args.at.env)
        .map_err(|p| anyhow::anyhow!("environment name `{}` {p}", args.at.env))?;
    let path = ctx.env_path(&args.at.env);
    let mut doc = EnvDocument::load_or_new(&path)?;
    // What the new key approves with it: read before any key is written.
    let runtimes = ctx.runtimes_in(&ctx.config_dir())?;
    let stale = doc.secret_names();
    let replaced = doc.public_key_text().is_some();
    if let Some(existing) = doc.public_key_text() {
        let id = boxcar_secrets::PublicKey::from_base64(existing)
            .map(|k| k.key_id().to_string())
            .unwrap_or_else(|_| "unreadable".to_owned());
        if !args.force {
            bail!(
                "{} already has a public key (key id {id}); replacing it would make its {} sealed value(s) unreadable\n\
                 hint: to change keys and keep the secrets, run `cargo xtask rotate-key --env {}`; to start over, pass --force",
                ctx.show(&path),
                stale.len(),
                args.at.env
            );
        }
    }

    let key = SecretKey::generate();
    let id = key.key_id();
    let out = match args.out {
        Some(out) => ctx.user_path(&out),
        None => keys::default_key_path(&args.at.env, id)?,
    };
    keys::ensure_outside_work_tree(&ctx.root, &out)?;
    // A service's folder of environment files may not exist yet.
    let dir = ctx.config_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", ctx.show(&dir)))?;
    keys::write_key_file(&out, &key)?;

    doc.set_public_key(key.public_key());
    // No earlier key vouches for this one: its chain starts here.
    doc.start_new_chain();
    doc.set_runtime(&runtimes);
    // The new key approves what it was made with; for a new file, that is
    // just the key itself.
    if let Err(err) = doc.approve(&key) {
        keys::forget_unused_key(&path, &key, &out);
        return Err(err).with_context(|| format!("approving {}", ctx.show(&path)));
    }
    if let Err(err) = doc.write() {
        keys::forget_unused_key(&path, &key, &out);
        return Err(err).with_context(|| format!("writing {}", ctx.show(&path)));
    }

    let _ = crate::vocab::keys::KnownKeys::load().remember(&ctx.root, &args.at.env, key.public_key());
    let verb = if doc.exists() { "updated" } else { "created" };
    println!("generated a key pair for environment `{}`", args.at.env);
    println!("  key id      {id}");
    println!("  public key  {} ({verb}, `public_key`)", ctx.show(&path));
    println!("  secret key  {} (mode 0600)", out.display());
    println!("  approved    with approval key {}", boxcar_secrets::ApprovalKey::of(&key).key_id());
    if !runtimes.is_empty() {
        let names: Vec<&str> = runtimes.iter().map(|(n, _)| n.as_str()).collect();
        println!("              with what boxcar.toml gives {} at run time ([boxcar.services])", names.join(", "));
    }
    if args.force && replaced {
        eprintln!(
            "warning: the old key did not endorse the new one (only `rotate-key` can, with the old key): \
             `cargo xtask check` reports this change as an unendorsed key until CI compares against a later base \
             (`check --base <this commit>`); review it like a replaced key"
        );
    }
    if args.force && !stale.is_empty() {
        eprintln!(
            "warning: {} value(s) in {} were sealed to the old key and cannot be opened with the new one: {}; \
             seal them again with `cargo xtask encrypt-secret --env {} NAME`",
            stale.len(),
            ctx.show(&path),
            stale.join(", "),
            args.at.env
        );
    }
    println!("Keep the secret key out of git. The service reads it from SECRET_KEY_FILE (or SECRET_KEY).");
    Ok(())
}
