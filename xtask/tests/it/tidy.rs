//! What a reviewer would otherwise have to remember, as tests:
//! infrastructure knows nothing of the product, nothing calls the docker CLI,
//! ARCHITECTURE.md's code map names every source file, and the README names
//! every command.

use std::path::{Path, PathBuf};

use crate::{git, project_root};

/// Files git tracks (and new ones it does not ignore), repository-relative.
fn files() -> Vec<PathBuf> {
    let list = git(&project_root(), &["ls-files", "-z", "--cached", "--others", "--exclude-standard"]);
    list.split('\0').filter(|s| !s.is_empty()).map(PathBuf::from).filter(|p| project_root().join(p).is_file()).collect()
}

/// Words of the example app's domain (the Telegram runner) that infrastructure
/// must not contain: its port, its user, its variables, its binary's path and
/// what it does. Matched case-insensitively.
const PRODUCT_WORDS: &[&str] =
    &["8080", "65532", "app_", "bots", "telegram", "usr/local/bin/app", "webhook", "readyz", "bot api", "polling"];

/// Infrastructure: the boxcar library (code, templates, builder, probe) and
/// the secrets library, except the one file that holds the defaults.
fn is_infrastructure(path: &Path) -> bool {
    let infra =
        path.starts_with("boxcar") && !path.starts_with("boxcar-secrets") || path.starts_with("boxcar-secrets/src");
    infra && path != Path::new("boxcar/src/vocab/defaults.rs") && !path.to_string_lossy().ends_with(".md")
}

#[test]
fn infrastructure_knows_nothing_of_the_product() {
    let mut found = Vec::new();
    let mut scanned = 0;
    for path in files().into_iter().filter(|p| is_infrastructure(p)) {
        let Ok(text) = std::fs::read_to_string(project_root().join(&path)) else { continue };
        scanned += 1;
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            for word in PRODUCT_WORDS {
                if lower.contains(word) {
                    found.push(format!("{}:{}: `{word}`: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(scanned > 20, "only {scanned} infrastructure files found");
    assert!(
        found.is_empty(),
        "product words in infrastructure (they belong in boxcar.toml or the app):\n{}",
        found.join("\n")
    );
}

/// Engine work goes through bollard: no program runs `docker`. (Tests may
/// drive the CLI as a user would, for `docker stack deploy`.)
#[test]
fn nothing_runs_the_docker_cli() {
    let mut found = Vec::new();
    for path in files() {
        let shown = path.to_string_lossy();
        let is_code = shown.ends_with(".rs") && path.components().any(|c| c.as_os_str() == "src");
        if !is_code {
            continue;
        }
        let text = std::fs::read_to_string(project_root().join(&path)).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains("Command::new(\"docker\")") || line.contains("cmd!(sh, \"docker ") {
                found.push(format!("{shown}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "the docker CLI is called; use bollard:\n{}", found.join("\n"));
}

/// Every source file is named in ARCHITECTURE.md's code map, in the section
/// of its folder (`### \`folder/\``), by its path inside that folder.
#[test]
fn the_code_map_names_every_source_file() {
    let map = std::fs::read_to_string(project_root().join("ARCHITECTURE.md")).unwrap();
    let mut sections: Vec<(String, String)> = Vec::new();
    for part in map.split("\n### ").skip(1) {
        let (heading, body) = part.split_once('\n').unwrap_or((part, ""));
        let Some(folder) = heading.trim().strip_prefix('`').and_then(|h| h.split('`').next()) else { continue };
        sections.push((folder.trim_end_matches('/').to_owned(), body.to_owned()));
    }
    assert!(sections.len() >= 6, "no code map sections in ARCHITECTURE.md");
    let is_source = |p: &Path| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        ["rs", "j2", "py", "html"].iter().any(|e| name.ends_with(&format!(".{e}"))) || name.ends_with("Dockerfile")
    };
    let mut missing = Vec::new();
    for path in files().into_iter().filter(|p| is_source(p)) {
        let shown = path.to_string_lossy().into_owned();
        let section = sections
            .iter()
            .filter(|(folder, _)| shown.starts_with(&format!("{folder}/")))
            .max_by_key(|(folder, _)| folder.len());
        let Some((folder, body)) = section else {
            missing.push(format!("{shown} (no section for its folder)"));
            continue;
        };
        let inside = &shown[folder.len() + 1..];
        if !body.contains(&format!("`{inside}`")) && !body.contains(&format!("`{inside}:")) {
            missing.push(format!("{shown} (as `{inside}` under `{folder}/`)"));
        }
    }
    assert!(missing.is_empty(), "ARCHITECTURE.md's code map does not name:\n{}", missing.join("\n"));
}

/// The README names every command `cargo xtask --help` lists.
#[test]
fn the_readme_names_every_command() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_xtask")).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // Command lines are indented two spaces; their descriptions' continuations more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 14, "{help}");
    let readme = std::fs::read_to_string(project_root().join("README.md")).unwrap();
    let missing: Vec<&&str> = commands.iter().filter(|c| !readme.contains(&format!("cargo xtask {c}"))).collect();
    assert!(missing.is_empty(), "README.md never shows `cargo xtask` {missing:?}");
}
