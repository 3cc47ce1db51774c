//! What a reviewer would otherwise have to remember, as tests:
//! infrastructure knows nothing of the product, nothing calls the docker CLI,
//! ARCHITECTURE.md's code map names every source file, and the README names
//! every command, and the fuzz crate's lockfile is current.
//! The house of the boxcar library too (issue 21): its layers import only
//! downward, no command imports another, its files import in no cycle,
//! `anyhow` and clap stay in the command layer, each fact has one home, a
//! long file says why it is one, and every invariant ARCHITECTURE.md states
//! names the test that holds it.
//! Those read `boxcar/src` as Rust, with syn: what the compiler sees, so a
//! comment or a doc may say anything, and code under `#[cfg(test)]` (or a
//! `#[test]` function) is exempt.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::visit::{self, Visit};
use syn::{Attribute, Item, Meta, Token};

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

/// boxcar without its `engine` feature (what a fresh checkout's xtask
/// compiles first) depends on none of the engine's crates, and a command
/// that needs them is one the handover knows.
#[test]
fn the_secrets_commands_build_without_the_engine() {
    let tree = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--locked", "-p", "boxcar", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(project_root())
        .output()
        .unwrap();
    assert!(tree.status.success(), "{}", String::from_utf8_lossy(&tree.stderr));
    let tree = String::from_utf8(tree.stdout).unwrap();
    let crates: BTreeSet<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    let engine = ["bollard", "tokio", "hyper", "oci-client", "reqwest", "rustls", "ring", "notify", "minijinja", "tar"];
    let found: Vec<&&str> = engine.iter().filter(|c| crates.contains(**c)).collect();
    assert!(found.is_empty(), "boxcar without `engine` depends on {found:?}:\n{tree}");
    assert!(crates.contains("clap") && crates.contains("boxcar-secrets"), "{tree}");
    assert!(crates.len() < 100, "boxcar without `engine` has {} crates", crates.len());
}

/// The xtask's engine build (`--features engine`, which a fresh checkout's
/// first engine command, `demo` or `test` makes after the light one) turns on
/// no feature of a crate the light build compiled: cargo compiles a crate
/// once per feature set, so one new feature of syn or typenum compiles every
/// derive macro, serde and the crypto stack a second time. boxcar's
/// Cargo.toml asks for those features in both builds.
#[test]
fn the_engine_build_reuses_every_crate_the_light_build_compiled() {
    let features = |engine: bool| {
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo.args([
            "tree",
            "--locked",
            "-p",
            "xtask",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p} [{f}]",
        ]);
        if engine {
            cargo.args(["--features", "engine"]);
        }
        let out = cargo.current_dir(project_root()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let crates = |tree: &str| -> BTreeMap<String, String> {
        tree.lines()
            .filter_map(|l| {
                let (name, features) = l.trim_end_matches(" (*)").split_once(" [")?;
                // Host (derive macros, build scripts) and target builds of a crate are apart.
                Some((name.replace(" (proc-macro)", ""), features.trim_end_matches(']').to_owned()))
            })
            .filter(|(name, _)| !name.starts_with("boxcar ") && !name.starts_with("xtask "))
            .fold(BTreeMap::new(), |mut all, (name, features)| {
                let seen: &mut String = all.entry(name).or_default();
                if !seen.contains(&features) {
                    seen.push_str(&format!("[{features}]"));
                }
                all
            })
    };
    let (light, engine) = (crates(&features(false)), crates(&features(true)));
    let changed: Vec<String> = light
        .iter()
        .filter(|(name, features)| engine.get(*name).is_some_and(|e| e != *features))
        .map(|(name, features)| format!("{name}: {features} light, {} engine", engine[name]))
        .collect();
    assert!(
        changed.is_empty(),
        "the engine build compiles these again with other features; ask for the engine's in boxcar/Cargo.toml:\n{}",
        changed.join("\n")
    );
    assert!(engine.len() > light.len() + 100, "{} crates light, {} engine", light.len(), engine.len());
}

/// The fuzz crate's lockfile (its own workspace, so the main one's builds do
/// not keep it current) agrees with what its manifests ask for: a stale one is
/// rewritten by `cargo fuzz run` and leaves the tree dirty after the suite.
#[test]
fn the_fuzz_lockfile_is_current() {
    let manifest = project_root().join("boxcar-secrets/fuzz/Cargo.toml");
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boxcar-secrets/fuzz/Cargo.lock is out of date; run `cargo metadata --manifest-path boxcar-secrets/fuzz/Cargo.toml` and commit it:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// The boxcar library's house (issue 21). These tests read the source with syn
// rather than by matching lines: a `use` tree, a path in an expression, a
// derive, a string literal and a `#[cfg(test)]` item are then what the
// compiler says they are, and a comment is never code.

/// The layers of `boxcar/src`, bottom to top: each file imports only from its
/// own layer and those below it.
const LAYERS: &[&str] = &["adapters", "vocab", "ops", "cli", "lib.rs"];

/// The layer of a file of `boxcar/src` (by its path inside `src/`), as an
/// index into [`LAYERS`].
fn layer(inside: &str) -> Option<usize> {
    let top = inside.split('/').next()?;
    LAYERS.iter().position(|l| *l == top)
}

/// Whether a file of `boxcar/src` is in the command layer (`cli/` or `lib.rs`).
fn in_command_layer(inside: &str) -> bool {
    inside == "lib.rs" || inside.starts_with("cli/")
}

/// The command a file of `cli/` belongs to (`cli/deploy.rs` and anything in
/// `cli/deploy/` are `deploy`), or `None` for the command layer's shared
/// helpers (`cli/mod.rs`, `cli/args.rs`) and files outside `cli/`.
fn command_of(inside: &str) -> Option<&str> {
    let rest = inside.strip_prefix("cli/")?;
    if rest == "mod.rs" || rest == "args.rs" {
        return None;
    }
    let first = rest.split('/').next()?;
    Some(first.strip_suffix(".rs").unwrap_or(first))
}

/// A crate's source as the compiler sees it outside tests: the files its
/// module tree declares from `src/lib.rs` (or `src/main.rs`), and what each
/// names outside test code.
struct Crate {
    files: Vec<SourceFile>,
    /// Module path (without `crate`) to the index of the file that holds it;
    /// an inline module maps to its file.
    modules: HashMap<Vec<String>, usize>,
}

struct SourceFile {
    /// Repository-relative, with `/`.
    path: String,
    /// Relative to the crate's `src/`.
    inside: String,
    /// The module it is, without `crate`.
    module: Vec<String>,
    text: String,
    found: Found,
}

/// What one file names outside test code.
#[derive(Default)]
struct Found {
    paths: Vec<Named>,
    literals: Vec<Literal>,
    /// The paths of `#[derive(...)]` entries, as written.
    derives: Vec<(usize, Vec<String>)>,
    /// Line ranges (first, last) of test code: `#[cfg(test)]` items and
    /// `#[test]` functions.
    test_lines: Vec<(usize, usize)>,
}

/// A path named in code, with the file of this crate it resolves to.
struct Named {
    line: usize,
    segments: Vec<String>,
    how: How,
    target: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// In a `use` item.
    Use,
    /// Written out in code (`crate::ops::x::y()`, `super::z`, `child::f()`),
    /// in a type, a pattern, an attribute or a macro's tokens.
    Written,
    /// Through a name a `use` brought in scope (`use crate::ops::build;`
    /// then `build::assemble::f()`): the `use` is the import, this only adds
    /// the file it reaches.
    Alias,
}

/// A string (or byte string) literal in code.
struct Literal {
    line: usize,
    value: String,
    /// As written, to tell the line of a needle in a literal of several lines.
    source: String,
}

impl Literal {
    fn line_of(&self, needle: &str) -> usize {
        self.line + self.source.find(needle).map_or(0, |at| self.source[..at].matches('\n').count())
    }
}

/// The boxcar library, read once for all the tests that need it.
fn boxcar() -> &'static Crate {
    static BOXCAR: OnceLock<Crate> = OnceLock::new();
    BOXCAR.get_or_init(|| Crate::load(&project_root(), "boxcar/src"))
}

impl Crate {
    /// Reads the crate whose sources are in `src` (relative to `root`, as
    /// its files' paths are). `#[path]` attributes are not followed: the
    /// workspace has none.
    fn load(root: &Path, src: &str) -> Crate {
        let src = Path::new(src);
        let top = if root.join(src).join("lib.rs").is_file() { "lib.rs" } else { "main.rs" };
        let mut krate = Crate { files: Vec::new(), modules: HashMap::new() };
        let mut trees = Vec::new();
        krate.add(root, src, &src.join(top), Vec::new(), src.to_owned(), &mut trees);
        let found: Vec<Found> = trees
            .iter()
            .zip(&krate.files)
            .map(|(tree, file)| {
                let mut walker = Walker {
                    modules: &krate.modules,
                    module: file.module.clone(),
                    scopes: Vec::new(),
                    found: Found::default(),
                };
                let scope = walker.aliases(&tree.items);
                walker.scopes.push(scope);
                walker.visit_file(tree);
                walker.found
            })
            .collect();
        for (file, found) in krate.files.iter_mut().zip(found) {
            file.found = found;
        }
        krate
    }

    /// Adds `file` as `module`, whose `mod name;` children are in `children`,
    /// then the files it declares.
    fn add(
        &mut self,
        root: &Path,
        src: &Path,
        file: &Path,
        module: Vec<String>,
        children: PathBuf,
        trees: &mut Vec<syn::File>,
    ) {
        let path = file.to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let tree = syn::parse_file(&text).unwrap_or_else(|e| panic!("{path}:{}: {e}", e.span().start().line));
        let mut declared = Vec::new();
        declarations(root, &tree.items, &module, &children, &mut declared);
        let index = self.files.len();
        self.modules.insert(module.clone(), index);
        let inside = file.strip_prefix(src).unwrap_or(file).to_string_lossy().replace('\\', "/");
        self.files.push(SourceFile { path, inside, module, text, found: Found::default() });
        trees.push(tree);
        for (sub, file) in declared {
            match file {
                None => {
                    self.modules.insert(sub, index);
                }
                Some((file, folder)) => self.add(root, src, &file, sub, folder, trees),
            }
        }
    }

    fn file(&self, index: usize) -> &SourceFile {
        &self.files[index]
    }
}

/// A module `items` declare outside test code: an inline one (`None`), or
/// the file of a `mod name;` and the folder of that file's own children.
type Declared = (Vec<String>, Option<(PathBuf, PathBuf)>);

fn declarations(root: &Path, items: &[Item], module: &[String], children: &Path, out: &mut Vec<Declared>) {
    for item in items {
        let Item::Mod(m) = item else { continue };
        if is_test(&m.attrs) {
            continue;
        }
        let name = m.ident.to_string();
        let sub = [module, std::slice::from_ref(&name)].concat();
        let folder = children.join(&name);
        match &m.content {
            Some((_, inner)) => {
                out.push((sub.clone(), None));
                declarations(root, inner, &sub, &folder, out);
            }
            None => {
                let flat = children.join(format!("{name}.rs"));
                let file = if root.join(&flat).is_file() { flat } else { folder.join("mod.rs") };
                out.push((sub, Some((file, folder))));
            }
        }
    }
}

/// Whether attributes mark test code: `#[cfg(test)]`, `#[cfg(all(test, ..))]`,
/// `#[test]` or a runtime's `#[tokio::test]`.
fn is_test(attrs: &[Attribute]) -> bool {
    fn cfg_test(meta: &Meta) -> bool {
        match meta {
            Meta::Path(p) => p.is_ident("test"),
            Meta::List(list) if list.path.is_ident("all") => list
                .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                .is_ok_and(|all| all.iter().any(cfg_test)),
            _ => false,
        }
    }
    attrs.iter().any(|a| {
        let path = a.path();
        if path.is_ident("cfg") {
            a.parse_args::<Meta>().is_ok_and(|m| cfg_test(&m))
        } else {
            matches!(a.meta, Meta::Path(_)) && path.segments.last().is_some_and(|s| s.ident == "test")
        }
    })
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// Each path a `use` tree names, expanded (`a::{b, c::{self, d}}` names
/// `a::b`, `a::c` and `a::c::d`), with the name it brings in scope and its line.
fn use_paths(tree: &syn::UseTree) -> Vec<(Vec<String>, Option<String>, usize)> {
    fn named(
        prefix: &[String],
        ident: &syn::Ident,
        rename: Option<&syn::Ident>,
    ) -> (Vec<String>, Option<String>, usize) {
        let mut path = prefix.to_vec();
        let is_self = ident == "self";
        if !is_self {
            path.push(ident.to_string());
        }
        let alias = match rename {
            Some(r) => Some(r.to_string()),
            None if is_self => prefix.last().cloned(),
            None => Some(ident.to_string()),
        };
        (path, alias.filter(|a| a != "_"), ident.span().start().line)
    }
    fn walk(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Option<String>, usize)>) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                walk(&p.tree, prefix, out);
                prefix.pop();
            }
            syn::UseTree::Name(n) => out.push(named(prefix, &n.ident, None)),
            syn::UseTree::Rename(r) => out.push(named(prefix, &r.ident, Some(&r.rename))),
            syn::UseTree::Glob(g) => out.push((prefix.clone(), None, g.span().start().line)),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| walk(t, prefix, out)),
        }
    }
    let mut out = Vec::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// Walks one file's syntax tree outside test code, noting what it names.
struct Walker<'a> {
    modules: &'a HashMap<Vec<String>, usize>,
    /// The module being walked (the file's, then its inline modules').
    module: Vec<String>,
    /// Names `use` items brought in scope that lead into the crate, innermost last.
    scopes: Vec<HashMap<String, Vec<String>>>,
    found: Found,
}

impl Walker<'_> {
    /// `segments` as a path from the crate root when it leads into this
    /// crate: from `crate`, `self`, `super`, a child module of the module
    /// walked, or (with `aliases`) a name a `use` brought in scope.
    fn absolute(&self, segments: &[String], aliases: bool) -> Option<(Vec<String>, How)> {
        let (first, rest) = segments.split_first()?;
        match first.as_str() {
            "crate" => Some((rest.to_vec(), How::Written)),
            "self" => Some(([&self.module[..], rest].concat(), How::Written)),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                let base = self.module.len().checked_sub(ups)?;
                Some(([&self.module[..base], &segments[ups..]].concat(), How::Written))
            }
            _ => {
                let child = [&self.module[..], segments].concat();
                if self.modules.contains_key(&child[..=self.module.len()]) {
                    return Some((child, How::Written));
                }
                let target = self.scopes.iter().rev().find_map(|s| s.get(first)).filter(|_| aliases)?;
                Some(([&target[..], rest].concat(), How::Alias))
            }
        }
    }

    /// The file that holds the item at `absolute`: its longest prefix that is a module.
    fn file_of(&self, absolute: &[String]) -> Option<usize> {
        (0..=absolute.len()).rev().find_map(|n| self.modules.get(&absolute[..n]).copied())
    }

    fn name(&mut self, line: usize, segments: Vec<String>, is_use: bool) {
        let (target, how) = match self.absolute(&segments, true) {
            Some((absolute, how)) => (self.file_of(&absolute), how),
            None => (None, How::Written),
        };
        let how = if is_use { How::Use } else { how };
        self.found.paths.push(Named { line, segments, how, target });
    }

    fn path(&mut self, path: &syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() > 1 {
            let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.name(path.segments[0].ident.span().start().line, segments, false);
        }
    }

    /// The names `use` items among `items` bring in scope, when they lead into the crate.
    fn aliases(&self, items: &[Item]) -> HashMap<String, Vec<String>> {
        let mut scope = HashMap::new();
        for item in items {
            let Item::Use(u) = item else { continue };
            if is_test(&u.attrs) || u.leading_colon.is_some() {
                continue;
            }
            for (segments, alias, _) in use_paths(&u.tree) {
                if let Some(alias) = alias
                    && let Some((absolute, _)) = self.absolute(&segments, false)
                {
                    scope.insert(alias, absolute);
                }
            }
        }
        scope
    }

    /// A macro's or an attribute's tokens, which syn leaves unparsed: the
    /// paths (`a::b`, not `::a::b`) and literals in them.
    fn scan(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let colon = |i: usize| matches!(trees.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ':');
        let joint_colons = |i: usize| {
            colon(i) && colon(i + 1) && matches!(&trees[i], TokenTree::Punct(p) if p.spacing() == Spacing::Joint)
        };
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => self.scan(g.stream()),
                TokenTree::Literal(l) => self.literal(&syn::Lit::new(l.clone())),
                TokenTree::Ident(first) => {
                    let leading = i >= 2 && joint_colons(i - 2);
                    let line = first.span().start().line;
                    let mut segments = vec![first.to_string()];
                    while joint_colons(i + 1)
                        && let Some(TokenTree::Ident(next)) = trees.get(i + 3)
                    {
                        segments.push(next.to_string());
                        i += 3;
                    }
                    if segments.len() > 1 && !leading {
                        self.name(line, segments, false);
                    }
                }
                TokenTree::Punct(_) => {}
            }
            i += 1;
        }
    }

    fn literal(&mut self, lit: &syn::Lit) {
        let (value, source) = match lit {
            syn::Lit::Str(s) => (s.value(), s.token().to_string()),
            syn::Lit::ByteStr(b) => (String::from_utf8_lossy(&b.value()).into_owned(), b.token().to_string()),
            _ => return,
        };
        self.found.literals.push(Literal { line: lit.span().start().line, value, source });
    }

    fn skip(&mut self, span: proc_macro2::Span) {
        self.found.test_lines.push((span.start().line, span.end().line));
    }
}

impl<'ast> Visit<'ast> for Walker<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        if is_test(item_attrs(item)) {
            self.skip(item.span());
            return;
        }
        visit::visit_item(self, item);
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        if let syn::ImplItem::Fn(f) = item
            && is_test(&f.attrs)
        {
            self.skip(item.span());
            return;
        }
        visit::visit_impl_item(self, item);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        for attr in &m.attrs {
            self.visit_attribute(attr);
        }
        if let Some((_, items)) = &m.content {
            self.module.push(m.ident.to_string());
            let scope = self.aliases(items);
            self.scopes.push(scope);
            for item in items {
                self.visit_item(item);
            }
            self.scopes.pop();
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        for attr in &u.attrs {
            self.visit_attribute(attr);
        }
        if u.leading_colon.is_some() {
            return;
        }
        for (segments, alias, line) in use_paths(&u.tree) {
            // A `use` inside a function: its name joins the module's scope,
            // which is wider than Rust's but names the same files.
            if let Some(alias) = alias
                && let Some((absolute, _)) = self.absolute(&segments, false)
                && let Some(scope) = self.scopes.last_mut()
            {
                scope.entry(alias).or_insert(absolute);
            }
            self.name(line, segments, true);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.path(path);
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.scan(mac.tokens.clone());
    }

    fn visit_attribute(&mut self, attr: &'ast Attribute) {
        if attr.path().is_ident("doc") {
            return;
        }
        if attr.path().is_ident("derive") {
            if let Ok(derives) = attr.parse_args_with(Punctuated::<syn::Path, Token![,]>::parse_terminated) {
                for derive in &derives {
                    let segments = derive.segments.iter().map(|s| s.ident.to_string()).collect();
                    self.found.derives.push((derive.span().start().line, segments));
                    self.path(derive);
                }
            }
            return;
        }
        match &attr.meta {
            Meta::List(list) => self.scan(list.tokens.clone()),
            Meta::NameValue(nv) => self.visit_expr(&nv.value),
            Meta::Path(_) => {}
        }
    }

    fn visit_lit(&mut self, lit: &'ast syn::Lit) {
        self.literal(lit);
    }
}

/// Offences, sorted by file and line, one a line.
#[derive(Default)]
struct Offences(BTreeSet<(String, usize, String)>);

impl Offences {
    fn add(&mut self, path: &str, line: usize, what: String) {
        self.0.insert((path.to_owned(), line, what));
    }

    fn check(&self, title: &str) {
        let lines: Vec<String> = self.0.iter().map(|(path, line, what)| format!("{path}:{line}: {what}")).collect();
        assert!(lines.is_empty(), "{title} ({}):\n{}", lines.len(), lines.join("\n"));
    }
}

/// Imports flow downward only: `lib.rs` on top, then `cli/`, `ops/`,
/// `vocab/` and `adapters/`. Every path in `boxcar/src` outside test code is
/// resolved to the file it names: each path of a `use` tree, and each path
/// written in code (`crate::ops::x::y()` in a function, a type, a derive, a
/// macro's tokens), from `crate::`, `self::`, `super::` or a child module.
/// A file outside the four folders and `lib.rs` is in no layer, which is an
/// offence too.
#[test]
fn layers_import_only_downward() {
    let krate = boxcar();
    assert!(krate.files.len() > 20, "only {} files in boxcar/src's module tree", krate.files.len());
    upward_imports(krate).check("imports from a higher layer of boxcar/src (adapters < vocab < ops < cli < lib.rs)");
}

fn upward_imports(krate: &Crate) -> Offences {
    let mut offences = Offences::default();
    for file in &krate.files {
        let Some(from) = layer(&file.inside) else {
            offences.add(&file.path, 1, format!("in no layer: move it into one of {LAYERS:?}"));
            continue;
        };
        for named in file.found.paths.iter().filter(|n| n.how != How::Alias) {
            let Some(target) = named.target.map(|t| krate.file(t)) else { continue };
            let Some(to) = layer(&target.inside) else { continue };
            if to > from {
                offences.add(
                    &file.path,
                    named.line,
                    format!(
                        "{} imports `{}` from {} ({}, a higher layer): move what it needs down to {} or below, \
                         or hand it in from above",
                        LAYERS[from],
                        named.segments.join("::"),
                        target.path,
                        LAYERS[to],
                        LAYERS[from]
                    ),
                );
            }
        }
    }
    offences
}

/// A command (a file of `cli/`, or a folder of one command) imports from no
/// other command: only from itself, the command layer's shared `cli/mod.rs`
/// and `cli/args.rs`, and the layers below.
#[test]
fn no_command_imports_another_command() {
    let krate = boxcar();
    let commands = krate.files.iter().filter(|f| command_of(&f.inside).is_some()).count();
    assert!(commands > 5, "only {commands} command files in boxcar/src/cli");
    commands_importing_commands(krate).check("a command imports another command");
}

fn commands_importing_commands(krate: &Crate) -> Offences {
    let mut offences = Offences::default();
    for file in &krate.files {
        let Some(command) = command_of(&file.inside) else { continue };
        for named in file.found.paths.iter().filter(|n| n.how != How::Alias) {
            let Some(target) = named.target.map(|t| krate.file(t)) else { continue };
            match command_of(&target.inside) {
                Some(other) if other != command => offences.add(
                    &file.path,
                    named.line,
                    format!(
                        "command `{command}` imports `{}` from command `{other}` ({}): move it to cli/args.rs if it \
                         is about arguments, else down to ops/ or vocab/",
                        named.segments.join("::"),
                        target.path
                    ),
                ),
                _ => {}
            }
        }
    }
    offences
}

/// The files of `boxcar/src` import one another in no cycle (outside test
/// code), counting every path that names a file. A module's file may import
/// its own child modules (to re-export them, say): those arrows are left out,
/// so a child that calls back into its parent is not a cycle by that alone.
/// Each cycle is reported as a path of files, each with the line of the
/// import that leads to the next; together they cover every arrow of every
/// cycle.
#[test]
fn the_file_graph_has_no_cycle() {
    let cycles = cycles(boxcar());
    assert!(
        cycles.is_empty(),
        "files of boxcar/src import one another in a cycle ({}); break each at one arrow (move what both need \
         down into a file of its own, or hand it in as an argument):\n{}",
        cycles.len(),
        cycles.join("\n")
    );
}

fn cycles(krate: &Crate) -> Vec<String> {
    let mut arrows: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (from, file) in krate.files.iter().enumerate() {
        for named in &file.found.paths {
            let Some(to) = named.target.filter(|t| *t != from) else { continue };
            let child = &krate.file(to).module;
            if child.len() == file.module.len() + 1 && child.starts_with(&file.module) {
                continue;
            }
            let line = arrows.entry((from, to)).or_insert(named.line);
            *line = (*line).min(named.line);
        }
    }
    let next = |from: usize| arrows.range((from, 0)..=(from, usize::MAX)).map(|(&(_, to), _)| to);
    // The shortest path of arrows from `from` to `to`, both included.
    let shortest = |from: usize, to: usize| -> Option<Vec<usize>> {
        let mut before: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([from]);
        while let Some(at) = queue.pop_front() {
            for n in next(at) {
                if n == to {
                    let mut path = vec![to, at];
                    while let Some(&b) = before.get(path.last()?) {
                        path.push(b);
                    }
                    path.reverse();
                    return Some(path);
                }
                if n != from && !before.contains_key(&n) {
                    before.insert(n, at);
                    queue.push_back(n);
                }
            }
        }
        None
    };
    let mut covered = BTreeSet::new();
    let mut cycles = Vec::new();
    for &(from, to) in arrows.keys() {
        if covered.contains(&(from, to)) {
            continue;
        }
        // An arrow is on a cycle when its head leads back to its tail.
        let Some(back) = shortest(to, from) else { continue };
        let cycle: Vec<usize> = std::iter::once(from).chain(back).collect();
        let mut shown = Vec::new();
        for pair in cycle.windows(2) {
            covered.insert((pair[0], pair[1]));
            shown.push(format!("{}:{}", krate.file(pair[0]).path, arrows[&(pair[0], pair[1])]));
        }
        shown.push(krate.file(from).path.clone());
        cycles.push(shown.join(" -> "));
    }
    cycles
}

/// `anyhow` only in the command layer (`cli/`, `lib.rs`): below it, the
/// library returns typed errors a caller can match. Any path from `anyhow`
/// outside test code counts (a `use`, `anyhow::Result`, `anyhow::bail!`).
#[test]
fn anyhow_only_in_the_command_layer() {
    anyhow_below_the_command_layer(boxcar()).check("anyhow below the command layer");
}

fn anyhow_below_the_command_layer(krate: &Crate) -> Offences {
    let mut offences = Offences::default();
    for file in krate.files.iter().filter(|f| !in_command_layer(&f.inside)) {
        let mut lines: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for named in file.found.paths.iter().filter(|n| n.segments[0] == "anyhow") {
            lines.entry(named.line).or_default().insert(format!("`{}`", named.segments.join("::")));
        }
        for (line, names) in lines {
            let names = names.into_iter().collect::<Vec<_>>().join(", ");
            offences.add(
                &file.path,
                line,
                format!("{names}: return a typed error (an enum naming the field or resource) instead; anyhow is for cli/ and lib.rs"),
            );
        }
    }
    offences
}

/// clap only in the command layer (`cli/`, `lib.rs`): no derive of
/// `clap::Args`, `Parser`, `Subcommand` or `ValueEnum` (written out or
/// imported), and no other path from `clap`, outside test code below it.
#[test]
fn clap_only_in_the_command_layer() {
    clap_below_the_command_layer(boxcar()).check("clap below the command layer");
}

fn clap_below_the_command_layer(krate: &Crate) -> Offences {
    const DERIVES: &[&str] = &["Args", "Parser", "Subcommand", "ValueEnum"];
    let mut offences = Offences::default();
    for file in krate.files.iter().filter(|f| !in_command_layer(&f.inside)) {
        let mut lines: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        let imports_clap = file.found.paths.iter().any(|n| n.how == How::Use && n.segments[0] == "clap");
        for named in file.found.paths.iter().filter(|n| n.segments[0] == "clap") {
            lines.entry(named.line).or_default().insert(format!("`{}`", named.segments.join("::")));
        }
        for (line, derive) in &file.found.derives {
            if imports_clap && derive.len() == 1 && DERIVES.contains(&derive[0].as_str()) {
                lines.entry(*line).or_default().insert(format!("derive `{}` (clap's)", derive[0]));
            }
        }
        for (line, names) in lines {
            let names = names.into_iter().collect::<Vec<_>>().join(", ");
            offences.add(
                &file.path,
                line,
                format!(
                    "{names}: arguments belong to a command's Args in cli/ (or cli/args.rs); pass plain values down"
                ),
            );
        }
    }
    offences
}

/// A fact boxcar writes in one place.
struct Fact {
    what: &'static str,
    /// Found in a string literal that contains it (or, with `whole`, is it).
    needle: &'static str,
    whole: bool,
    /// The files that may write it (repository-relative).
    homes: &'static [&'static str],
    /// What to use instead.
    instead: &'static str,
    /// Also looked for in `boxcar/templates/*.j2` and `xtask/src`, which have no home for it.
    everywhere: bool,
}

const FACTS: &[Fact] = &[
    Fact {
        what: "the label prefix",
        needle: "dev.boxcar",
        whole: false,
        homes: &["boxcar/src/vocab/labels.rs"],
        instead: "a name from vocab::labels",
        everywhere: true,
    },
    Fact {
        what: "the CA bundle path",
        needle: "ca-certificates.crt",
        whole: false,
        homes: &["boxcar/src/vocab/layout.rs"],
        instead: "vocab::layout::CA_BUNDLE",
        everywhere: false,
    },
    Fact {
        what: "the key mount folder",
        needle: "/run/secrets",
        whole: false,
        homes: &["boxcar/src/vocab/layout.rs"],
        instead: "a path from vocab::layout (SECRETS_DIR, SWARM_KEY_FILE, VOLUME_KEY_FILE)",
        everywhere: false,
    },
    Fact {
        what: "the key file's name",
        needle: "boxcar-key",
        whole: false,
        homes: &["boxcar/src/vocab/layout.rs"],
        instead: "vocab::layout::KEY_FILE_NAME",
        everywhere: true,
    },
    Fact {
        what: "a hardening word",
        needle: "no-new-privileges",
        whole: false,
        homes: &["boxcar/src/vocab/plan.rs"],
        instead: "vocab::plan::HARDENING",
        everywhere: true,
    },
    Fact {
        what: "a hardening word",
        needle: "ALL",
        whole: true,
        homes: &["boxcar/src/vocab/plan.rs"],
        instead: "vocab::plan::HARDENING",
        everywhere: true,
    },
    Fact {
        what: "the default config folder",
        needle: "deploy-config",
        whole: false,
        homes: &["boxcar/src/vocab/defaults.rs", "boxcar-secrets/src/environment.rs"],
        instead: "vocab::defaults::CONFIG_DIR (boxcar_secrets::DEFAULT_CONFIG_DIR in the secrets library)",
        everywhere: false,
    },
];

/// Each fact is written once, in its home: in a string literal of code
/// outside tests (a comment or a doc may say it). The library's facts are
/// looked for in `boxcar/src` (and the default config folder in
/// `boxcar-secrets/src`, whose home is `environment.rs`); the label prefix,
/// the key file's name and the hardening words also in `xtask/src`, which
/// has no home for them, and in `boxcar/templates/*.j2`, which take them from
/// the render context: there any text outside a `{# #}` comment counts (a
/// YAML comment is output), and `ALL` as a word.
#[test]
fn each_fact_is_defined_once() {
    let secrets = Crate::load(&project_root(), "boxcar-secrets/src");
    let xtask = Crate::load(&project_root(), "xtask/src");
    // Each crate, and the facts it is searched for.
    let sources = [
        (boxcar(), (|_| true) as fn(&Fact) -> bool),
        (&secrets, |f| f.needle == "deploy-config"),
        (&xtask, |f| f.everywhere),
    ];
    let mut offences = Offences::default();
    for (krate, searched) in sources {
        facts_outside_their_homes(krate, searched, &mut offences);
    }
    let templates = project_root().join("boxcar/templates");
    let mut scanned = 0;
    for entry in std::fs::read_dir(&templates).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "j2") {
            continue;
        }
        scanned += 1;
        let shown = format!("boxcar/templates/{}", path.file_name().unwrap().to_string_lossy());
        facts_in_a_template(&shown, &std::fs::read_to_string(&path).unwrap(), &mut offences);
    }
    assert!(scanned >= 2, "only {scanned} templates in boxcar/templates");
    offences.check("a fact written outside its home");
}

/// The facts `searched` finds in `krate`'s string literals outside their homes.
fn facts_outside_their_homes(krate: &Crate, searched: fn(&Fact) -> bool, offences: &mut Offences) {
    for fact in FACTS.iter().filter(|f| searched(f)) {
        for file in krate.files.iter().filter(|f| !fact.homes.contains(&f.path.as_str())) {
            for lit in &file.found.literals {
                let found = if fact.whole { lit.value == fact.needle } else { lit.value.contains(fact.needle) };
                if found {
                    offences.add(
                        &file.path,
                        lit.line_of(fact.needle),
                        format!(
                            "{} `{}` written outside its home ({}): use {}",
                            fact.what,
                            fact.needle,
                            fact.homes.join(", "),
                            fact.instead
                        ),
                    );
                }
            }
        }
    }
}

/// The facts a template (`shown`, holding `text`) writes itself instead of
/// taking them from the render context.
fn facts_in_a_template(shown: &str, text: &str, offences: &mut Offences) {
    // `{# #}` comments blanked, line breaks kept.
    let mut code = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("{#") {
        code.push_str(&rest[..at]);
        let end = rest[at..].find("#}").map_or(rest.len(), |e| at + e + 2);
        code.extend(rest[at..end].chars().filter(|c| *c == '\n'));
        rest = &rest[end..];
    }
    code.push_str(rest);
    for (n, line) in code.lines().enumerate() {
        for fact in FACTS.iter().filter(|f| f.everywhere) {
            let found = if fact.whole {
                line.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == fact.needle)
            } else {
                line.contains(fact.needle)
            };
            if found {
                offences.add(
                    shown,
                    n + 1,
                    format!("{} `{}` written in a template: take it from the render context", fact.what, fact.needle),
                );
            }
        }
    }
}

/// Above this many lines of code outside tests, a file says why it is one.
const LONG_FILE: usize = 400;

/// A file of `boxcar/src` with more than [`LONG_FILE`] lines outside test
/// code says why it is one file. The rule: its lines, less those of
/// `#[cfg(test)]` items and `#[test]` functions (attributes included), are
/// counted, blank and comment lines too; when there are more than 400, the
/// leading `//!` block (the file's first lines, each starting with `//!`, up
/// to the first line that does not) must contain "one file" or "one room",
/// in any case, across a line break too.
#[test]
fn long_files_say_why() {
    long_files_that_do_not_say_why(boxcar()).check("long files that do not say why they are one");
}

fn long_files_that_do_not_say_why(krate: &Crate) -> Offences {
    let mut offences = Offences::default();
    for file in &krate.files {
        let total = file.text.lines().count();
        let mut test = vec![false; total + 1];
        for &(first, last) in &file.found.test_lines {
            test[first.min(total)..=last.min(total)].iter_mut().for_each(|t| *t = true);
        }
        let code = (1..=total).filter(|n| !test[*n]).count();
        if code <= LONG_FILE {
            continue;
        }
        let leading: Vec<&str> =
            file.text.lines().map_while(|l| l.trim_start().strip_prefix("//!")).map(str::trim).collect();
        let leading = leading.join(" ").split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        if !leading.contains("one file") && !leading.contains("one room") {
            offences.add(
                &file.path,
                1,
                format!(
                    "{code} lines outside tests (over {LONG_FILE}): split it into files that hold one room each, \
                     or say in its leading //! block why it is \"one file\" (or \"one room\")"
                ),
            );
        }
    }
    offences
}

/// ARCHITECTURE.md states only invariants a test enforces. Its section
/// `## Invariants` (up to the next `#` or `##` heading) holds bullets (lines
/// starting with `- ` or `* `, continued on the lines after until a blank
/// line), and each bullet ends with the test that enforces it, in
/// backticks, maybe followed by `.` or `)`:
///
/// ```text
/// ## Invariants
///
/// - Imports flow downward only: `adapters/`, `vocab/`, `ops/`, `cli/`, `lib.rs`. `tidy::layers_import_only_downward`
/// - An environment with no trusted base never passes. `approval::no_trusted_base_is_never_a_pass`
/// - An entry is shown escaped (`boxcar::vocab::show::tests::controls_become_visible`).
/// ```
///
/// A name is a path: `tidy::x` is `fn x` in `xtask/tests/it/tidy.rs` (and so
/// for any file of `xtask/tests/it`, with inline or file modules after it);
/// `boxcar::ops::x::tests::y` is `fn y` in the module `ops::x::tests` of the
/// crate `boxcar` (a workspace member, `-` read as `_`), found from its
/// `src/lib.rs` (or `src/main.rs`) as the compiler would. The function must
/// carry `#[test]` (or a runtime's `#[tokio::test]`).
#[test]
fn the_architecture_states_only_enforced_invariants() {
    let text = std::fs::read_to_string(project_root().join("ARCHITECTURE.md")).unwrap();
    match invariants(&text) {
        Ok(offences) => offences.check("invariants ARCHITECTURE.md states that no test enforces"),
        Err(missing) => panic!("ARCHITECTURE.md{missing}"),
    }
}

/// What [`the_architecture_states_only_enforced_invariants`] finds wrong in
/// `text`, or why it found no invariants at all.
fn invariants(text: &str) -> Result<Offences, String> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_end() == "## Invariants") else {
        return Err(" has no `## Invariants` section: add one whose bullets each end with the test that enforces \
                    them, e.g. `tidy::layers_import_only_downward`"
            .to_owned());
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("# ") || l.starts_with("## "))
        .map_or(lines.len(), |n| start + 1 + n);
    let mut bullets: Vec<(usize, String)> = Vec::new();
    let mut open = false;
    for (n, line) in lines.iter().enumerate().take(end).skip(start + 1) {
        if let Some(rest) = line.strip_prefix("- ").or_else(|| line.strip_prefix("* ")) {
            bullets.push((n + 1, rest.trim().to_owned()));
            open = true;
        } else if line.trim().is_empty() || line.starts_with('#') {
            open = false;
        } else if open && let Some((_, bullet)) = bullets.last_mut() {
            bullet.push(' ');
            bullet.push_str(line.trim());
        }
    }
    if bullets.is_empty() {
        return Err(format!(":{}: `## Invariants` has no bullets", start + 1));
    }
    let mut offences = Offences::default();
    let mut members = None;
    for (line, bullet) in &bullets {
        let Some(name) = named_test(bullet) else {
            offences.add(
                "ARCHITECTURE.md",
                *line,
                "names no test: end the bullet with the test that enforces it, in backticks (`tidy::x`)".to_owned(),
            );
            continue;
        };
        if let Err(why) = find_test(name, &mut members) {
            offences.add("ARCHITECTURE.md", *line, format!("`{name}`: {why}: name a test that exists, or write one"));
        }
    }
    Ok(offences)
}

/// The test a bullet ends with: its last backticked text, when that is a path.
fn named_test(bullet: &str) -> Option<&str> {
    let end = bullet.trim_end().trim_end_matches(['.', ')', ';']).trim_end().strip_suffix('`')?;
    let name = &end[end.rfind('`')? + 1..];
    let is_path = name.contains("::")
        && name.split("::").all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    is_path.then_some(name)
}

/// Finds the `#[test]` function `name` names (see
/// [`the_architecture_states_only_enforced_invariants`]). `members` caches the
/// workspace's crates: name to the file their module tree starts from.
fn find_test(name: &str, members: &mut Option<HashMap<String, PathBuf>>) -> Result<(), String> {
    let segments: Vec<&str> = name.split("::").collect();
    let (first, rest) = segments.split_first().ok_or("an empty name")?;
    let it = Path::new("xtask/tests/it").join(format!("{first}.rs"));
    let (file, folder) = if project_root().join(&it).is_file() {
        (it, Path::new("xtask/tests/it").join(first))
    } else {
        let members = members.get_or_insert_with(workspace_members);
        let root = members.get(*first).ok_or_else(|| format!("no xtask/tests/it/{first}.rs and no crate `{first}`"))?;
        (root.clone(), root.parent().unwrap_or(Path::new("")).to_owned())
    };
    find_fn(&file, &folder, rest)
}

/// Finds the `#[test]` function at `path` (modules, then its name) in `file`,
/// whose `mod name;` children are in `folder`.
fn find_fn(file: &Path, folder: &Path, path: &[&str]) -> Result<(), String> {
    let shown = file.to_string_lossy().replace('\\', "/");
    let text = std::fs::read_to_string(project_root().join(file)).map_err(|e| format!("{shown}: {e}"))?;
    let tree = syn::parse_file(&text).map_err(|e| format!("{shown}: {e}"))?;
    let mut items = &tree.items[..];
    let mut folder = folder.to_owned();
    for (n, module) in path.iter().enumerate() {
        if n + 1 == path.len() {
            let found = items.iter().any(|i| matches!(i, Item::Fn(f) if f.sig.ident == module && is_test(&f.attrs)));
            return if found { Ok(()) } else { Err(format!("no #[test] fn {module} in {shown}")) };
        }
        let found = items.iter().find_map(|i| match i {
            Item::Mod(m) if m.ident == module => Some(m),
            _ => None,
        });
        let m = found.ok_or_else(|| format!("no module `{module}` in {shown}"))?;
        match &m.content {
            Some((_, inner)) => {
                items = inner;
                folder = folder.join(module);
            }
            None => {
                let flat = folder.join(format!("{module}.rs"));
                let file = if project_root().join(&flat).is_file() { flat } else { folder.join(module).join("mod.rs") };
                return find_fn(&file, &folder.join(module), &path[n + 1..]);
            }
        }
    }
    Err("names a module, not a test".to_owned())
}

/// The workspace's crates, by name with `-` read as `_`: the file their
/// module tree starts from (the library's, else the first binary's),
/// repository-relative. cargo says, rather than a reading of the manifests.
fn workspace_members() -> HashMap<String, PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1"])
        .current_dir(project_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = project_root();
    let mut members = HashMap::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        let targets = package["targets"].as_array().into_iter().flatten();
        let kinds =
            |t: &&serde_json::Value, kind: &str| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == kind));
        let target = targets.clone().find(|t| kinds(t, "lib")).or_else(|| targets.clone().find(|t| kinds(t, "bin")));
        let (Some(name), Some(src)) = (package["name"].as_str(), target.and_then(|t| t["src_path"].as_str())) else {
            continue;
        };
        let src = Path::new(src);
        members.insert(name.replace('-', "_"), src.strip_prefix(&root).unwrap_or(src).to_owned());
    }
    members
}

/// The tests above are only as good as the reading of the source: a small
/// crate with each kind of import shows what it resolves, what it exempts and
/// what it sees in macros, derives and literals.
#[test]
fn the_source_reader_sees_each_kind_of_import() {
    let files = [
        ("src/lib.rs", "pub mod a;\npub mod b;\nmod c {\n    pub mod d;\n}\nuse crate::{a::x, b::{self, y as z}};\n"),
        (
            "src/a/mod.rs",
            "pub mod inner;\npub fn x() {}\npub fn f() {\n    inner::g();\n    crate::b::y();\n}\n\
             #[cfg(test)]\nmod tests {\n    use crate::c::d::h;\n}\n",
        ),
        ("src/a/inner.rs", "pub fn g() {\n    super::super::c::d::h();\n    let _ = vec![crate::b::y()];\n}\n"),
        (
            "src/b.rs",
            "use crate::a as top;\npub fn y() {}\npub fn w() -> anyhow::Result<()> {\n    top::inner::g();\n    Ok(())\n}\n\
             #[test]\nfn t() {\n    crate::c::d::h();\n}\n",
        ),
        (
            "src/c/d.rs",
            "/// \"dev.boxcar\" in a doc\npub fn h() {}\n#[derive(Debug, clap::ValueEnum)]\nenum E {\n    X,\n}\n\
             // \"boxcar-key\" in a comment\nconst S: &str = \"a\n dev.boxcar.x\";\n",
        ),
    ];
    let (_dir, krate) = scratch_crate(&files);
    let seen = |inside: &str| -> BTreeSet<String> {
        let file = krate.files.iter().find(|f| f.inside == inside).unwrap();
        file.found
            .paths
            .iter()
            .filter_map(|n| {
                let how = match n.how {
                    How::Use => "use",
                    How::Written => "written",
                    How::Alias => "alias",
                };
                n.target.map(|t| format!("{}:{} {how} {}", n.line, krate.file(t).inside, n.segments.join("::")))
            })
            .collect()
    };
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(krate.files.len(), 5);
    assert_eq!(seen("lib.rs"), set(&["6:a/mod.rs use crate::a::x", "6:b.rs use crate::b", "6:b.rs use crate::b::y"]));
    assert_eq!(seen("a/mod.rs"), set(&["4:a/inner.rs written inner::g", "5:b.rs written crate::b::y"]));
    assert_eq!(seen("a/inner.rs"), set(&["2:c/d.rs written super::super::c::d::h", "3:b.rs written crate::b::y"]));
    assert_eq!(seen("b.rs"), set(&["1:a/mod.rs use crate::a", "4:a/inner.rs alias top::inner::g"]));
    let b = krate.files.iter().find(|f| f.inside == "b.rs").unwrap();
    assert!(b.found.paths.iter().any(|n| n.segments == ["anyhow", "Result"] && n.line == 3));
    assert_eq!(b.found.test_lines, [(7, 10)]);
    let d = krate.files.iter().find(|f| f.inside == "c/d.rs").unwrap();
    assert_eq!(d.found.derives, [(3, vec!["Debug".to_owned()]), (3, vec!["clap".to_owned(), "ValueEnum".to_owned()])]);
    let literals: Vec<(usize, &str)> =
        d.found.literals.iter().map(|l| (l.line_of("dev.boxcar"), l.value.as_str())).collect();
    assert_eq!(literals, [(9, "a\n dev.boxcar.x")]);
}

/// Each kind of offence the invariants' reader reports, on a sample.
#[test]
fn the_invariants_reader_finds_each_kind_of_offence() {
    let sample = "# X\n\n## Invariants\n\nSome words first.\n\n\
                  - Enforced. `tidy::layers_import_only_downward`\n\
                  - Enforced over two lines,\n  by a test elsewhere (`approval::no_trusted_base_is_never_a_pass`).\n\
                  - In a crate's own tests. `boxcar::vocab::show::tests::controls_become_visible`\n\
                  - Said, not enforced.\n\
                  - Names a test that is not there. `tidy::no_such_test`\n\
                  - Names a helper, not a test. `tidy::layer`\n\
                  - Names a module that is not there. `boxcar::vocab::nowhere::tests::x`\n\
                  \n## Next\n\n- Not an invariant.\n";
    let offences = invariants(sample).unwrap();
    let found: Vec<usize> = offences.0.iter().map(|(_, line, _)| *line).collect();
    assert_eq!(found, [11, 12, 13, 14], "{:?}", offences.0);
    assert!(invariants("# X\n## Code map\n").is_err());
    assert!(invariants("## Invariants\n\nOnly words.\n").is_err());
}

/// A crate of `files` (path, text) in a scratch folder, read.
fn scratch_crate(files: &[(&str, impl AsRef<[u8]>)]) -> (tempfile::TempDir, Crate) {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let krate = Crate::load(dir.path(), "src");
    (dir, krate)
}

/// Each check of the house finds what it should on a small crate shaped like
/// boxcar, and nothing more: an import up a layer (in a `use` and in an
/// expression), a file in no layer, a command calling another, a cycle,
/// anyhow and clap below the command layer, a long file that does not say
/// why; with test code, a parent re-exporting its child, the shared helpers
/// of `cli/`, and a long file that says why, all let be.
#[test]
fn the_house_checks_find_each_offence() {
    let long = |doc: &str, lines: usize| format!("{doc}{}", "pub fn f() {}\n".repeat(lines));
    let files = [
        ("src/lib.rs", "pub mod adapters;\npub mod cli;\npub mod ops;\npub mod vocab;\npub mod extra;\n".to_owned()),
        ("src/extra.rs", String::new()),
        ("src/adapters/mod.rs", "pub mod engine;\n".to_owned()),
        ("src/adapters/engine.rs", "use crate::vocab::x::f;\n".to_owned()),
        ("src/vocab/mod.rs", "pub mod x;\npub mod y;\npub mod long;\npub mod said;\npub mod tested;\n".to_owned()),
        ("src/vocab/x.rs", "pub fn f() {\n    crate::vocab::y::g();\n}\n".to_owned()),
        (
            "src/vocab/y.rs",
            "pub fn g() {\n    super::x::f();\n}\npub fn e() -> anyhow::Result<()> {\n    Ok(())\n}\n\
             #[derive(clap::ValueEnum, Clone)]\npub enum E {\n    A,\n}\n"
                .to_owned(),
        ),
        ("src/vocab/long.rs", long("//! Long.\n", 401)),
        ("src/vocab/said.rs", long("//! Long, and one\n//! file: it holds one room.\n", 401)),
        ("src/vocab/tested.rs", format!("{}#[cfg(test)]\nmod tests {{\n{}}}\n", long("//! Tested.\n", 390), "\n".repeat(50))),
        (
            "src/ops/mod.rs",
            "pub fn run() {\n    crate::cli::args::parse();\n}\n#[cfg(test)]\nmod tests {\n    use crate::cli::deploy::run;\n}\n"
                .to_owned(),
        ),
        ("src/cli/mod.rs", "pub mod args;\npub mod deploy;\npub mod dev;\npub use deploy::run;\n".to_owned()),
        ("src/cli/args.rs", "pub fn parse() {}\n".to_owned()),
        (
            "src/cli/deploy.rs",
            "use super::args::parse;\npub fn run() -> anyhow::Result<()> {\n    super::dev::watch();\n    crate::ops::run();\n    Ok(())\n}\n"
                .to_owned(),
        ),
        ("src/cli/dev.rs", "pub fn watch() {}\n".to_owned()),
    ];
    let (_dir, krate) = scratch_crate(&files);
    let lines =
        |offences: Offences| offences.0.into_iter().map(|(path, line, _)| format!("{path}:{line}")).collect::<Vec<_>>();
    assert_eq!(lines(upward_imports(&krate)), ["src/adapters/engine.rs:1", "src/extra.rs:1", "src/ops/mod.rs:2"]);
    assert_eq!(lines(commands_importing_commands(&krate)), ["src/cli/deploy.rs:3"]);
    assert_eq!(cycles(&krate), ["src/vocab/x.rs:2 -> src/vocab/y.rs:2 -> src/vocab/x.rs"]);
    assert_eq!(lines(anyhow_below_the_command_layer(&krate)), ["src/vocab/y.rs:4"]);
    assert_eq!(lines(clap_below_the_command_layer(&krate)), ["src/vocab/y.rs:7"]);
    assert_eq!(lines(long_files_that_do_not_say_why(&krate)), ["src/vocab/long.rs:1"]);
}

/// The facts check finds a fact written outside its home, in code and in a
/// template, and lets its home, comments and tests be.
#[test]
fn the_facts_check_finds_each_kind_of_offence() {
    let files = [
        ("boxcar/src/lib.rs", "pub mod vocab;\npub mod ops;\n".to_owned()),
        ("boxcar/src/vocab/mod.rs", "pub mod labels;\n".to_owned()),
        ("boxcar/src/vocab/labels.rs", "pub const P: &str = \"dev.boxcar.x\";\n".to_owned()),
        (
            "boxcar/src/ops/mod.rs",
            "/// Says \"dev.boxcar\" in a comment.\npub const A: &str = \"a\";\npub const B: &[&str] = &[\"ALL\"];\n\
             pub const C: &str = \"ALLOWED\";\n#[cfg(test)]\nmod tests {\n    const D: &str = \"dev.boxcar.y\";\n}\n\
             pub const E: &str = \"x.dev.boxcar.z\";\n"
                .to_owned(),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in &files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let krate = Crate::load(dir.path(), "boxcar/src");
    let mut offences = Offences::default();
    facts_outside_their_homes(&krate, |_| true, &mut offences);
    let text = "{# cap_drop: [ALL] in a comment #}\nread_only: true\ncap_drop: [ALL]\nlabel: dev.boxcar.env\n";
    facts_in_a_template("t.yaml.j2", text, &mut offences);
    let found: Vec<String> = offences.0.into_iter().map(|(path, line, _)| format!("{path}:{line}")).collect();
    assert_eq!(found, ["boxcar/src/ops/mod.rs:3", "boxcar/src/ops/mod.rs:9", "t.yaml.j2:3", "t.yaml.j2:4"]);
}
