//! The files a build sees and how they reach the builder: what git would
//! commit (never `target/`, the environment files or boxcar.toml), path
//! dependencies outside the workspace where their relative paths lead from
//! `/src`, and a tar of them whose times tell cargo which files changed since
//! the target volume last saw them.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::error::{Result, on_file};

/// Where the workspace is in the builder.
pub(super) const SRC: &str = "/src";

/// A tree of files the build sees: its place on the host and in the builder,
/// and its files relative to it.
pub(super) struct Tree {
    host: PathBuf,
    builder: PathBuf,
    pub(super) files: Vec<PathBuf>,
}

/// The files a build sees: what git tracks plus new files it does not ignore,
/// never `target/` and never key files. `excluded` (the environment files and
/// boxcar.toml) are left out too: the service reads the environment files at
/// run time and the image gets them and the contract's settings from the
/// host, so sealing a value or changing a label recompiles nothing.
///
/// Path dependencies outside the workspace (a boxcar checkout beside it, say)
/// come along: the work tree that holds each is copied to where the
/// dependency's relative path leads from `/src` in the builder.
pub(super) fn trees(sh: &xshell::Shell, root: &Path, excluded: &[PathBuf]) -> Result<Vec<Tree>> {
    let keep = |p: &PathBuf| !p.starts_with("target") && p.extension().is_none_or(|e| e != "key");
    let mut files = crate::adapters::git::tracked_files(sh, root)?;
    files.retain(|p| keep(p) && !excluded.contains(p));
    let mut trees = vec![Tree { host: root.to_owned(), builder: PathBuf::from(SRC), files }];
    for (host, builder) in outside_trees(root)? {
        let _dir = sh.push_dir(&host);
        let mut files = crate::adapters::git::tracked_files(sh, &host)?;
        files.retain(keep);
        eprintln!(
            "the build also needs {} (a path dependency outside the workspace): in the builder at {}",
            host.display(),
            builder.display()
        );
        trees.push(Tree { host, builder, files });
    }
    Ok(trees)
}

/// The work trees (git top levels, else the folders) of path dependencies
/// that lie outside `root`, read from every workspace member's manifest, and
/// where each goes in the builder: where cargo there follows the relative
/// path as written (so `..` is taken as written, not through symlinks).
fn outside_trees(root: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let canonical_root = root.canonicalize().map_err(on_file(format!("resolving {}", root.display())))?;
    let metadata = crate::vocab::contract::workspace(root)?;
    let mut manifests: Vec<PathBuf> = metadata
        .packages
        .iter()
        .map(|p| {
            // cargo reports canonical paths: read them back against the root as given.
            let path: PathBuf = p.manifest_path.clone().into();
            path.strip_prefix(&canonical_root).map(|rel| root.join(rel)).unwrap_or(path)
        })
        .collect();
    manifests.push(root.join("Cargo.toml"));
    let mut out: Vec<(PathBuf, PathBuf)> = Vec::new();
    for manifest in manifests {
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let Ok(table) = text.parse::<toml::Table>() else { continue };
        let dir = manifest.parent().unwrap_or(root).to_owned();
        for path in dependency_paths(&table) {
            let lexical = normalize(&dir.join(&path));
            let Ok(dep) = lexical.canonicalize() else { continue };
            if dep.starts_with(&canonical_root) {
                continue;
            }
            let top = std::process::Command::new("git")
                .args(["rev-parse", "--show-toplevel"])
                .current_dir(&dep)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
                .unwrap_or_else(|| dep.clone());
            // The same folder as written: `lexical` less what lies below `top`.
            let below = dep.strip_prefix(&top).unwrap_or(Path::new("")).components().count();
            let mut lexical_top = lexical.clone();
            for _ in 0..below {
                lexical_top.pop();
            }
            if !out.iter().any(|(t, _)| top.starts_with(t)) {
                out.retain(|(t, _)| !t.starts_with(&top));
                out.push((top, builder_path(root, &lexical_top)));
            }
        }
    }
    Ok(out)
}

/// `path` with `.` and `..` taken lexically, as cargo reads a relative
/// path dependency.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every `path = "…"` of a manifest's dependency tables.
fn dependency_paths(table: &toml::Table) -> Vec<String> {
    let mut tables: Vec<&toml::Table> = Vec::new();
    let sections = ["dependencies", "dev-dependencies", "build-dependencies"];
    for section in sections {
        tables.extend(table.get(section).and_then(toml::Value::as_table));
    }
    if let Some(ws) = table.get("workspace").and_then(toml::Value::as_table) {
        tables.extend(ws.get("dependencies").and_then(toml::Value::as_table));
    }
    if let Some(targets) = table.get("target").and_then(toml::Value::as_table) {
        for target in targets.values().filter_map(toml::Value::as_table) {
            for section in sections {
                tables.extend(target.get(section).and_then(toml::Value::as_table));
            }
        }
    }
    tables
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(|d| d.get("path").and_then(toml::Value::as_str).map(ToOwned::to_owned))
        .collect()
}

/// Where `outside` lands in the builder: its path relative to `root`, taken
/// from `/src` (`..` stops at `/`), which is where cargo in the builder
/// follows the relative path to it.
fn builder_path(root: &Path, outside: &Path) -> PathBuf {
    let root: Vec<_> = root.components().collect();
    let outside_parts: Vec<_> = outside.components().collect();
    let common = root.iter().zip(&outside_parts).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::from(SRC);
    for _ in common..root.len() {
        path.pop();
    }
    for part in &outside_parts[common..] {
        path.push(part);
    }
    path
}

/// One file of the source trees, read once.
pub(super) struct Source {
    /// Where it goes in the builder, relative to `/`.
    name: PathBuf,
    full: PathBuf,
    /// Of the path itself (a symlink stays one).
    meta: std::fs::Metadata,
    data: Vec<u8>,
    /// Of its content.
    hash: String,
}

/// The files of the source trees, and a hash of their names and contents.
pub(super) fn read(trees: &[Tree]) -> Result<(Vec<Source>, String)> {
    let mut sources = Vec::new();
    let mut hash = Sha256::new();
    for tree in trees {
        let base = tree.builder.strip_prefix("/").unwrap_or(&tree.builder);
        for file in &tree.files {
            let full = tree.host.join(file);
            let name = base.join(file);
            let data = std::fs::read(&full).map_err(on_file(format!("reading {}", full.display())))?;
            hash.update((name.as_os_str().len() as u64).to_le_bytes());
            hash.update(name.as_os_str().as_encoded_bytes());
            hash.update((data.len() as u64).to_le_bytes());
            hash.update(&data);
            let meta = std::fs::symlink_metadata(&full).map_err(on_file(format!("reading {}", full.display())))?;
            let file_hash = hex::encode(Sha256::digest(&data));
            sources.push(Source { name, full, meta, data, hash: file_hash });
        }
    }
    Ok((sources, hex::encode(hash.finalize())))
}

/// Where the target volume records the content of every source file its
/// builds were given (builder path → SHA-256), as a path in a tar unpacked
/// at `/`.
pub(super) const SOURCES_RECORD: &str = "target/.boxcar-sources.json";

/// A tar of the sources, to unpack at `/` in the builder, with the volume's
/// updated record of them.
///
/// cargo decides what to recompile by modification times: a file is stale
/// when it is newer than the start of the compile that last read it. Host
/// times alone can lie to it: a file saved while a build ran (after the
/// sources were copied, before the compile started), or a file of another
/// checkout sharing the target volume, can carry a time older than that
/// compile with other content, and cargo would keep a binary of the old
/// code. So a file whose content differs from what `record` says the volume
/// was last given gets the time `bump_to` (after every compile so far); the
/// others keep their own, and an unchanged tree recompiles nothing.
/// Returns the tar and how many files were bumped.
pub(super) fn tar(
    sources: &[Source],
    mut record: std::collections::BTreeMap<String, String>,
    bump_to: u64,
) -> Result<(Vec<u8>, usize)> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let mut bumped = 0;
    for source in sources {
        let key = source.name.to_string_lossy().into_owned();
        let meta =
            std::fs::symlink_metadata(&source.full).map_err(on_file(format!("reading {}", source.full.display())))?;
        if meta.file_type().is_symlink() {
            tar.append_path_with_name(&source.full, &source.name)
                .map_err(on_file(format!("archiving {}", source.full.display())))?;
        } else {
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&source.meta);
            if record.get(&key) != Some(&source.hash) {
                header.set_mtime(bump_to.max(header.mtime().unwrap_or(0)));
                bumped += 1;
            }
            header.set_cksum();
            tar.append_data(&mut header, &source.name, &source.data[..])
                .map_err(on_file(format!("archiving {}", source.full.display())))?;
        }
        record.insert(key, source.hash.clone());
    }
    let json = serde_json::to_vec_pretty(&record)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(bump_to);
    header.set_cksum();
    tar.append_data(&mut header, SOURCES_RECORD, &json[..])?;
    Ok((tar.into_inner()?, bumped))
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn outside_trees_land_where_relative_paths_lead_from_src() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(builder_path(&p("/tmp/x/ws"), &p("/tmp/x/boxcar")), p("/boxcar"));
        assert_eq!(builder_path(&p("/tmp/x/ws"), &p("/tmp/x/ws2/lib")), p("/ws2/lib"));
        assert_eq!(builder_path(&p("/a/b"), &p("/c/d")), p("/c/d"));
        assert_eq!(normalize(&p("/tmp/x/ws/svc/../../boxcar/./lib")), p("/tmp/x/boxcar/lib"));
        let table: toml::Table = r#"
            [dependencies]
            a = { path = "../a" }
            b = "1"
            [workspace.dependencies]
            c = { path = "c" }
            [target.'cfg(unix)'.dev-dependencies]
            d = { path = "/abs/d" }
        "#
        .parse()
        .unwrap();
        let mut paths = dependency_paths(&table);
        paths.sort();
        assert_eq!(paths, ["../a", "/abs/d", "c"]);
    }

    #[test]
    fn files_whose_content_the_volume_has_not_seen_are_newer_than_every_compile() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("ws");
        std::fs::create_dir_all(host.join("src")).unwrap();
        for (file, text) in [("src/same.rs", "same"), ("src/edited.rs", "new text"), ("src/added.rs", "added")] {
            std::fs::write(host.join(file), text).unwrap();
        }
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for file in ["src/same.rs", "src/edited.rs", "src/added.rs"] {
            std::fs::File::options().write(true).open(host.join(file)).unwrap().set_modified(old).unwrap();
        }
        let files = ["src/added.rs", "src/edited.rs", "src/same.rs"].map(PathBuf::from).to_vec();
        let trees = [Tree { host, builder: PathBuf::from("/src"), files }];
        let (sources, _) = read(&trees).unwrap();
        let sum = |text: &str| hex::encode(Sha256::digest(text.as_bytes()));
        let record: std::collections::BTreeMap<String, String> = [
            ("src/src/same.rs".to_owned(), sum("same")),
            ("src/src/edited.rs".to_owned(), sum("old text")),
            ("other/checkout.rs".to_owned(), sum("kept")),
        ]
        .into();
        let (tar, bumped) = tar(&sources, record, 2_000_000).unwrap();
        assert_eq!(bumped, 2);
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = std::collections::BTreeMap::new();
        let mut new_record = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            if path == SOURCES_RECORD {
                entry.read_to_string(&mut new_record).unwrap();
            } else {
                seen.insert(path, entry.header().mtime().unwrap());
            }
        }
        assert_eq!(
            seen,
            [
                ("src/src/added.rs".to_owned(), 2_000_000),
                ("src/src/edited.rs".to_owned(), 2_000_000),
                ("src/src/same.rs".to_owned(), 1_000_000),
            ]
            .into()
        );
        let new_record: std::collections::BTreeMap<String, String> = serde_json::from_str(&new_record).unwrap();
        assert_eq!(new_record["src/src/edited.rs"], sum("new text"));
        assert_eq!(new_record["src/src/added.rs"], sum("added"));
        assert_eq!(new_record["other/checkout.rs"], sum("kept"));
        assert_eq!(new_record.len(), 4);
    }
}
