//! `cargo xtask approve`: the key holder accepts an environment file's
//! content, and what boxcar.toml gives its services at run time.
//!
//! What it shows must be the truth, since the key holder signs on the
//! strength of it: every entry in full (long values wrapped, never cut), text
//! from the file escaped (a right-to-left override cannot reorder a URL), and
//! each entry marked against the last version the key holder approved, found
//! in git history and verified by its signature (nothing the file under
//! review says about itself is believed).

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Context as _, bail};
use boxcar_secrets::approval::{self, ApprovalKey};
use boxcar_secrets::{EnvDocument, EnvFile, SealedValue, SecretKey, Secrets};
use xshell::Shell;

use crate::cli::args::OpenArgs;
use crate::vocab::project::Context;
use crate::vocab::show::escape;

/// Approve an environment file's content with its secret key.
///
/// Writes into deploy-config/<ENV>.toml what boxcar.toml gives each service
/// of the environment at run time ([boxcar.services.NAME]), then shows what
/// it approves: the keys, that run-time contract, every plain setting with
/// its whole value, and each secret's name, length and fingerprint (never a
/// value). Each entry is marked new, CHANGED, approved before or REMOVED
/// against the last version this key approved in git history (its signature
/// verified). Asks on a terminal, then signs. Services refuse to start on
/// content that is not approved, and `check` verifies approvals without any
/// key. Every value must open with the key first.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    open: OpenArgs,
    /// Approve without asking (needed when stdin is not a terminal). Review
    /// the change first: the approval is what lets a service start on it.
    #[arg(long)]
    yes: bool,
}

/// Width of the lines `approve` prints; longer values wrap.
const WIDTH: usize = 100;

pub(crate) fn run(sh: &Shell, ctx: &mut Context, args: Args) -> anyhow::Result<()> {
    let (file, key) = args.open.open(ctx)?;
    let secrets = file.open_all(&key).context("nothing was approved")?;
    let shown = ctx.show(file.path());
    let runtimes = ctx.runtimes_in(&ctx.config_dir())?;

    let mut doc = EnvDocument::load_or_new(file.path())?;
    doc.set_runtime(&runtimes);
    let mut unsigned = boxcar_secrets::read_toml(&doc.render()).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let runtime_as_it_is = runtimes
        .iter()
        .all(|(name, table)| boxcar_secrets::runtime::approved_runtime(file.table(), name) == Some(table))
        && approved_services(file.table()) == runtimes.len();
    let before = last_approved(sh, file.env(), file.table(), &key);
    // An approval that history already has a higher serial for, or another
    // approval of the same serial (two branches met), is approved again.
    let above_history = |serial: u64| {
        before.as_ref().is_none_or(|b| {
            serial > b.serial
                || (serial == b.serial && b.signatures.iter().all(|s| Some(s) == signature(file.table()).as_ref()))
        })
    };
    if runtime_as_it_is
        && let Ok(approved) = file.approval_with(&key)
        && above_history(approved.serial)
    {
        println!(
            "{shown} is approved as it is (serial {}, approval key {}); nothing to do",
            approved.serial,
            ApprovalKey::of(&key).key_id()
        );
        return Ok(());
    }
    unsigned.insert(approval::APPROVAL_KEY.to_owned(), ApprovalKey::of(&key).to_base64().into());
    print!("{}", summary(&file, &unsigned, &key, &secrets, &shown, before.as_ref())?);

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

    let serial = doc.approve_above(&key, before.as_ref().map_or(0, |b| b.serial))?;
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

/// How many services a file approves a run-time contract for.
fn approved_services(table: &toml::Table) -> usize {
    table
        .get(boxcar_secrets::runtime::BOXCAR_TABLE)
        .and_then(|b| b.get(boxcar_secrets::runtime::SERVICES))
        .and_then(toml::Value::as_table)
        .map_or(0, toml::Table::len)
}

/// The last version of environment `env` that `key` (or a key it descends
/// from) approved, anywhere in HEAD's history: where, its serial, its content.
struct Before {
    at: String,
    serial: u64,
    /// Every signature history has for that serial (two, when two branches
    /// approved it).
    signatures: Vec<String>,
    table: toml::Table,
}

/// The text of a file's `approval.signature`.
fn signature(table: &toml::Table) -> Option<String> {
    table.get(approval::APPROVAL_TABLE)?.get("signature")?.as_str().map(str::to_owned)
}

fn last_approved(sh: &Shell, env: &str, current: &toml::Table, key: &SecretKey) -> Option<Before> {
    // The approval keys that are this key holder's: this key's, and those of
    // the keys it was rotated from, as the file's endorsements prove them
    // (each endorsement is a signature by the older key).
    let mine = ApprovalKey::of(key);
    let mut trusted = vec![mine];
    if let Ok(chain) = approval::key_chain(env, current)
        && chain.last().is_some_and(|p| p.approval_key == mine)
    {
        trusted.extend(chain.iter().map(|p| p.approval_key));
    }
    // From the trusted base when there is one (the last approval is there or
    // after it), else all of HEAD's history: the signatures say whose
    // approvals they are, so no base is needed to believe them.
    let start = match crate::ops::history::start(sh, None) {
        Ok(start @ crate::ops::history::Start::Base { .. }) => start,
        _ => crate::ops::history::Start::Everything,
    };
    let history = match crate::ops::history::read(sh, &start) {
        Ok(history) => history,
        Err(e) => {
            eprintln!("warning: cannot read git history ({e:#}): every entry is shown as new");
            return None;
        }
    };
    let mut best: Option<Before> = None;
    let committed = history.nodes.iter().filter(|n| n.at != crate::ops::trust::At::WorkTree).flat_map(|n| &n.versions);
    let versions = history.outside.iter().flat_map(|(_, versions)| versions).chain(committed);
    for v in versions.filter(|v| v.env == env) {
        let Ok(table) = &v.content else { continue };
        let Ok(approved) = approval::verify(env, table) else { continue };
        if !trusted.contains(&approved.current().approval_key) {
            continue;
        }
        let sig = signature(table).unwrap_or_default();
        match &mut best {
            Some(b) if approved.serial < b.serial => {}
            Some(b) if approved.serial == b.serial => {
                if !b.signatures.contains(&sig) {
                    b.signatures.push(sig);
                }
                b.at = v.at.describe();
                b.table = table.clone();
            }
            _ => {
                best = Some(Before {
                    at: v.at.describe(),
                    serial: approved.serial,
                    signatures: vec![sig],
                    table: table.clone(),
                });
            }
        }
    }
    best
}

/// What is about to be approved, one entry a line, in four groups: the
/// keys, the run-time contract, the settings, the secrets.
fn summary(
    file: &EnvFile,
    unsigned: &toml::Table,
    key: &SecretKey,
    secrets: &Secrets,
    shown: &str,
    before: Option<&Before>,
) -> anyhow::Result<String> {
    let mut out = format!(
        "approving environment `{}` ({shown}) with key {} (approval key {}),\n",
        file.env(),
        key.key_id(),
        ApprovalKey::of(key).key_id()
    );
    match before {
        Some(b) => out.push_str(&format!(
            "compared with the last version this key approved, serial {} in {} (signature verified):\n",
            b.serial, b.at
        )),
        None => out.push_str("no version this key approved is in git history: every entry is new\n"),
    }
    let now = crate::vocab::entries::flatten(unsigned);
    let then = before.map(|b| crate::vocab::entries::flatten(&b.table)).unwrap_or_default();
    let group = |name: &str| {
        if name == "public_key" || name == approval::APPROVAL_KEY || name.starts_with(approval::PREVIOUS_KEYS) {
            0
        } else if name.starts_with("boxcar.") {
            1
        } else if name.starts_with("secrets.") {
            3
        } else {
            2
        }
    };
    let headings = [
        "keys",
        "what boxcar.toml gives the service(s) at run time",
        "settings",
        "secrets (length and fingerprint of the sealed value; never a value)",
    ];
    let mut rows: [Vec<(String, String, String)>; 4] = Default::default();
    for (name, value) in &now {
        let what = match name.strip_prefix("secrets.") {
            Some(secret) => {
                let length = secrets.get(secret).map_or(0, boxcar_secrets::SecretValue::len);
                format!("{length} bytes, sealed value {}", approval::fingerprint(value)?)
            }
            None => format!("= {}", escape(&value.to_string())),
        };
        let state = match then.get(name) {
            None => "new".to_owned(),
            Some(old) if old == value => "approved before".to_owned(),
            Some(old) if resealed(file.env(), name, old, value, key) => "approved before, sealed again".to_owned(),
            Some(_) => "CHANGED".to_owned(),
        };
        rows[group(name)].push((escape(name).into_owned(), what, state));
    }
    for name in then.keys().filter(|n| !now.contains_key(*n)) {
        rows[group(name)].push((escape(name).into_owned(), String::new(), "REMOVED".to_owned()));
    }
    for (heading, rows) in headings.iter().zip(rows) {
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!("{heading}:\n"));
        for (name, what, state) in rows {
            out.push_str(&row(&name, &what, &state));
        }
    }
    Ok(out)
}

/// Whether a secret's old and new sealed values hold the same plaintext
/// (sealed again, after a rotation say): the key holder can tell.
fn resealed(env: &str, name: &str, old: &toml::Value, new: &toml::Value, key: &SecretKey) -> bool {
    let Some(secret) = name.strip_prefix("secrets.") else { return false };
    let open = |v: &toml::Value| SealedValue::parse(v.as_str()?).ok()?.open(key, env, secret).ok();
    match (open(old), open(new)) {
        (Some(a), Some(b)) => a.expose_bytes() == b.expose_bytes(),
        _ => false,
    }
}

/// One entry: `  name  value  [state]` when it fits in [`WIDTH`], else the
/// name and state on a line and the whole value below, wrapped.
fn row(name: &str, what: &str, state: &str) -> String {
    let one = format!("  {name}  {what}  [{state}]\n");
    if one.chars().count() <= WIDTH + 1 {
        return one;
    }
    let mut out = format!("  {name}  [{state}]\n");
    let chars: Vec<char> = what.chars().collect();
    for chunk in chars.chunks(WIDTH - 6) {
        out.push_str("      ");
        out.extend(chunk);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_wrap_whole() {
        assert_eq!(row("a", "= 1", "new"), "  a  = 1  [new]\n");
        let long = format!("= \"{}\"", "x".repeat(200));
        let out = row("app.list", &long, "CHANGED");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "  app.list  [CHANGED]");
        assert_eq!(lines.len(), 4);
        assert!(lines[1..].iter().all(|l| l.starts_with("      ") && l.chars().count() <= WIDTH));
        let joined: String = lines[1..].iter().map(|l| l.trim_start()).collect();
        assert_eq!(joined, long);
    }

    #[test]
    fn services_approved_are_counted() {
        let t: toml::Table = "[boxcar.services.a]\n[boxcar.services.b]\n".parse().unwrap();
        assert_eq!(approved_services(&t), 2);
        assert_eq!(approved_services(&toml::Table::new()), 0);
    }
}
