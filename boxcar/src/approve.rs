//! `cargo xtask approve`: the key holder accepts an environment file's content.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Context as _, bail};
use boxcar_secrets::approval::{self, APPROVAL_TABLE};
use boxcar_secrets::{ApprovalKey, EnvDocument, EnvFile, SecretKey, Secrets};

use crate::project::{Context, OpenArgs};
use crate::show::escape;

/// Approve an environment file's content with its secret key.
///
/// Shows what it approves (the keys, every plain setting, and each secret's
/// name, length and fingerprint; never a value), marking what changed since
/// the last approval, asks on a terminal, and writes the approval into
/// deploy-config/<ENV>.toml. Services refuse to start on content that is not
/// approved, and `check` verifies approvals without any key. Every value must
/// open with the key first.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    open: OpenArgs,
    /// Approve without asking (needed when stdin is not a terminal). Review
    /// the change first: the approval is what lets a service start on it.
    #[arg(long)]
    yes: bool,
}

pub(crate) fn run(ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let (file, key) = ctx.open(&args.open)?;
    let secrets = file.open_all(&key).context("nothing was approved")?;
    let shown = ctx.show(file.path());

    if let Ok(approved) = file.approval_with(&key) {
        println!(
            "{shown} is approved as it is (serial {}, approval key {}); nothing to do",
            approved.serial,
            ApprovalKey::of(&key).key_id()
        );
        return Ok(());
    }
    print!("{}", summary(&file, &key, &secrets, &shown)?);

    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("nothing was approved: review the list above, then run again with --yes (stdin is not a terminal)");
        }
        eprint!("approve this content for environment `{}`? [y/N] ", file.env());
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("nothing was approved");
        }
    }

    let mut doc = EnvDocument::load_or_new(file.path())?;
    let serial = doc.approve(&key)?;
    let text = doc.render();
    // What is written must be what a service accepts.
    EnvFile::parse(file.path(), &text)?
        .open_approved(&key)
        .context("the approved file does not verify (nothing was written)")?;
    boxcar_secrets::write_atomic(file.path(), text.as_bytes(), None)
        .with_context(|| format!("writing {shown} (nothing was approved)"))?;
    println!("approved {shown} (serial {serial}); commit it");
    Ok(())
}

/// What is about to be approved, one line per entry: the keys, every plain
/// setting with its value, every secret with its length and fingerprint.
fn summary(file: &EnvFile, key: &SecretKey, secrets: &Secrets, shown: &str) -> anyhow::Result<String> {
    let table = file.table();
    let fingerprints = approval::entry_fingerprints(table).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let listed = table.get(APPROVAL_TABLE).and_then(|a| a.get("entries")).and_then(toml::Value::as_table);
    let state = |name: &str, fp: &str| match listed {
        None => "new",
        Some(listed) => match listed.get(name).and_then(toml::Value::as_str) {
            None => "new",
            Some(old) if old == fp => "approved before",
            Some(_) => "CHANGED",
        },
    };
    let mut out = format!(
        "approving environment `{}` ({shown}) with key {} (approval key {}):\n",
        file.env(),
        key.key_id(),
        ApprovalKey::of(key).key_id()
    );
    let mut rows: Vec<(String, String, &str)> = Vec::new();
    for (name, fp) in &fingerprints {
        let what = if let Some(secret) = name.strip_prefix("secrets.") {
            let length = secrets.get(secret).map_or(0, boxcar_secrets::SecretValue::len);
            format!("{length} bytes, sealed value {fp}")
        } else {
            let value = lookup(table, name).map(show_value).unwrap_or_default();
            format!("= {value}")
        };
        rows.push((escape(name).into_owned(), what, state(name, fp)));
    }
    if let Some(listed) = listed {
        for name in listed.keys().filter(|n| !fingerprints.contains_key(n.as_str())) {
            rows.push((escape(name).into_owned(), String::new(), "REMOVED"));
        }
    }
    let width = rows.iter().map(|(n, _, _)| n.chars().count()).max().unwrap_or(0);
    for (name, what, state) in rows {
        out.push_str(&format!("  {name:<width$}  {what}  [{state}]\n"));
    }
    Ok(out)
}

/// The value an entry name (`key` or `table.key`) stands for.
fn lookup<'a>(table: &'a toml::Table, name: &str) -> Option<&'a toml::Value> {
    if let Some(value) = table.get(name) {
        return Some(value);
    }
    let (outer, inner) = name.split_once('.')?;
    table.get(outer)?.as_table()?.get(inner)
}

/// A setting's value as TOML, escaped and cut to one short line.
fn show_value(value: &toml::Value) -> String {
    let text = escape(&value.to_string()).into_owned();
    if text.chars().count() > 100 { format!("{}…", text.chars().take(100).collect::<String>()) } else { text }
}
