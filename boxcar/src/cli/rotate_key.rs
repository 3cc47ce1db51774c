//! `cargo xtask rotate-key`: a new key pair for an environment, with every secret sealed again.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use boxcar_secrets::{EnvDocument, EnvFile, KeyPair, SecretKey};

use crate::cli::args::OpenArgs;
use crate::vocab::keys;
use crate::vocab::project::Context;

/// Replace an environment's key pair and re-seal every secret to the new key.
///
/// Opens every secret with the current key, makes a new pair, seals each value
/// again, opens the result with the new key to check it, and only then writes
/// the new key file and replaces deploy-config/<ENV>.toml (both by atomic
/// rename). If anything fails, the file and the old key stay as they were.
/// The old key endorses the new one in [[previous_keys]], and the new key
/// approves the result. The old key file is kept: deployments still running need it until they are
/// redeployed with the new key.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    open: OpenArgs,
    /// Where to write the new secret key (outside the work tree).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

pub(crate) fn run(ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let (file, old_key) = args.open.open(ctx)?;
    let secrets = file.open_approved(&old_key).context("opening the current secrets (nothing was changed)")?;

    let new_key = SecretKey::generate();
    let mut doc = EnvDocument::load_or_new(file.path())?;
    // The old key vouches for the new one, so `check` can follow the chain.
    doc.endorse(&old_key, &KeyPair::of(&new_key));
    doc.set_public_key(new_key.public_key());
    for (name, value) in secrets.iter() {
        let sealed = boxcar_secrets::seal(new_key.public_key(), file.env(), name, value.expose_bytes())?;
        doc.set_secret(name, &sealed)?;
    }
    doc.approve(&new_key)?;
    let text = doc.render();

    // Check the result before anything touches the disk.
    let reopened = EnvFile::parse(file.path(), &text)?
        .open_approved(&new_key)
        .context("the re-sealed file does not open with the new key (nothing was changed)")?;
    let same = reopened.len() == secrets.len()
        && secrets.iter().all(|(n, v)| reopened.get(n).is_some_and(|r| r.expose_bytes() == v.expose_bytes()));
    if !same {
        bail!("the re-sealed values differ from the originals (nothing was changed)");
    }

    let out = match args.out {
        Some(out) => ctx.user_path(&out),
        None => keys::default_key_path(file.env(), new_key.key_id())?,
    };
    keys::ensure_outside_work_tree(&ctx.root, &out)?;
    keys::write_key_file(&out, &new_key)?;
    if let Err(err) = boxcar_secrets::write_atomic(file.path(), text.as_bytes(), None) {
        keys::forget_unused_key(file.path(), &new_key, &out);
        return Err(err).with_context(|| format!("writing {} (nothing was changed)", ctx.show(file.path())));
    }

    // This machine made the new key: sealing to it is expected.
    let _ = crate::vocab::keys::KnownKeys::load().remember(&ctx.root, file.env(), new_key.public_key());
    println!("rotated environment `{}`: {} secret(s) sealed again", file.env(), secrets.len());
    println!("  old key id  {}", old_key.key_id());
    println!("  new key id  {}", new_key.key_id());
    println!("  new secret key  {} (mode 0600)", out.display());
    println!("Commit {}, redeploy with the new key, then delete the old key file.", ctx.show(file.path()));
    println!("The same credentials were sealed again: if the old key leaked, it still opens them in git history.");
    println!(
        "After a leak, also change each one where it was issued ({}) \
         and seal the new value with `cargo xtask encrypt-secret --env {} NAME`.",
        secrets.iter().map(|(name, _)| crate::vocab::show::escape(name).into_owned()).collect::<Vec<_>>().join(", "),
        file.env()
    );
    Ok(())
}
