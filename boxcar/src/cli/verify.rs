//! `cargo xtask verify`: open every secret of an environment with its key, printing lengths only.

use std::io::{IsTerminal as _, Write as _};

use anyhow::{Context as _, bail};

use crate::cli::args::OpenArgs;
use crate::vocab::project::Context;

/// Open every secret of an environment, as the service will at startup.
///
/// Prints each name and its length, never a value. The key comes from
/// --key-file, SECRET_KEY_FILE, SECRET_KEY, or the default key file for the
/// environment's key id. Exits non-zero if anything fails to open.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    open: OpenArgs,
    /// Print the plaintext of one secret to stdout, for debugging. It will be
    /// in your terminal's scrollback and in anything stdout is piped to.
    #[arg(long, value_name = "NAME")]
    reveal: Option<String>,
}

pub(crate) fn run(ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let (file, key) = args.open.open(ctx)?;
    let secrets = file.open_approved(&key)?;

    let width = secrets.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut summary =
        format!("environment `{}`: {} secret(s) opened with key {}\n", file.env(), secrets.len(), key.key_id());
    for (name, value) in secrets.iter() {
        summary.push_str(&format!("  {name:<width$}  {} bytes\n", value.len()));
    }

    let Some(name) = args.reveal else {
        print!("{summary}");
        return Ok(());
    };
    // Revealing: stdout carries the value alone, so it can be piped.
    eprint!("{summary}");
    let Some(value) = secrets.get(&name) else {
        bail!("{} has no secret `{name}`", ctx.show(file.path()));
    };
    eprintln!("warning: printing the plaintext of secrets.{name} to stdout, as asked with --reveal");
    let mut out = std::io::stdout().lock();
    if std::io::stdout().is_terminal() {
        // To a terminal, control characters in the value are shown, not
        // obeyed: a sealed value is anyone's text, and escape sequences could
        // rewrite the screen. Piped, the bytes go out as they are.
        let shown = zeroize::Zeroizing::new(crate::vocab::show::escape_bytes(value.expose_bytes()));
        out.write_all(shown.as_bytes()).context("writing to stdout")?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(value.expose_bytes()).context("writing to stdout")?;
    }
    out.flush()?;
    Ok(())
}
