//! Which files are scanned and how much of each: a listed file is read
//! whole up to a limit, and one that cannot be (too large, gone, a folder, a
//! device, a link out of the work tree) says why, since passing it would say
//! it holds no key without having read it.

use std::path::{Component, Path, PathBuf};

/// Largest file scanned, in bytes. GitHub refuses files over 100 MiB, so no
/// file of a repository pushed there is larger; a file is read whole, once.
pub(super) const MAX_SCANNED: u64 = 100 * 1024 * 1024;

/// Why a listed file was not scanned; shown with what to do about it.
#[derive(Debug)]
pub(crate) enum Unscannable {
    TooLarge { len: u64 },
    Gone,
    Unreadable(std::io::Error),
    LinkOutside { target: PathBuf },
    Directory,
    Special,
}

impl std::fmt::Display for Unscannable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: u64 = 1024 * 1024;
        match self {
            Unscannable::TooLarge { len } => write!(
                f,
                "it is {} MiB, over the scan limit of {} MiB (GitHub refuses files over 100 MiB); \
                 keep it out of git (Git LFS, a release asset, a download at build time)",
                len.div_ceil(MIB),
                MAX_SCANNED / MIB
            ),
            Unscannable::Gone => f.write_str(
                "git lists it, but it is not in the work tree; commit its removal (`git rm --cached PATH`) \
                 or restore it (`git checkout -- PATH`), then check again",
            ),
            Unscannable::Unreadable(err) => {
                write!(f, "it cannot be read ({err}); make it readable by the user that runs check")
            }
            Unscannable::LinkOutside { target } => write!(
                f,
                "it is a symlink to {}, outside the work tree, which check does not follow; \
                 commit the file itself, or remove the link",
                crate::vocab::show::escape(&target.display().to_string())
            ),
            Unscannable::Directory => f.write_str(
                "git lists a file here, but it is a directory; commit what is really there, then check again",
            ),
            Unscannable::Special => f.write_str(
                "it is a FIFO, socket or device, not a regular file; remove it from the work tree, then check again",
            ),
        }
    }
}

/// The content of `path` (relative to `work_tree`) to scan: `None` for a
/// symlink that stays inside the work tree, whose target, when git holds it, is
/// scanned under its own path (git stores only the link's text).
pub(crate) fn read(work_tree: &Path, path: &Path) -> Result<Option<Vec<u8>>, Unscannable> {
    use std::io::Read as _;
    let full = work_tree.join(path);
    let meta = std::fs::symlink_metadata(&full).map_err(unreadable)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return link_inside(work_tree, path).map(|()| None);
    }
    if kind.is_dir() {
        return Err(Unscannable::Directory);
    }
    if !kind.is_file() {
        return Err(Unscannable::Special);
    }
    if meta.len() > MAX_SCANNED {
        return Err(Unscannable::TooLarge { len: meta.len() });
    }
    let mut bytes = Vec::new();
    // Bounded again as it is read: the file may grow after its metadata was read.
    std::fs::File::open(&full).and_then(|f| f.take(MAX_SCANNED).read_to_end(&mut bytes)).map_err(unreadable)?;
    Ok(Some(bytes))
}

fn unreadable(err: std::io::Error) -> Unscannable {
    match err.kind() {
        std::io::ErrorKind::NotFound => Unscannable::Gone,
        _ => Unscannable::Unreadable(err),
    }
}

/// Whether the symlink `path` leads inside `work_tree`: where it resolves,
/// or, when its target does not exist, where its text points.
fn link_inside(work_tree: &Path, path: &Path) -> Result<(), Unscannable> {
    let root = work_tree.canonicalize().map_err(unreadable)?;
    let link = root.join(path);
    let target = match link.canonicalize() {
        Ok(real) => real,
        Err(_) => {
            let text = std::fs::read_link(&link).map_err(unreadable)?;
            lexical(&link.parent().unwrap_or(&root).join(text))
        }
    };
    if target.starts_with(&root) { Ok(()) } else { Err(Unscannable::LinkOutside { target }) }
}

/// `path` with `.` and `..` taken as written, without asking the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            // `.` stays: a path's components skip it anyway.
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscannable_files_say_why() {
        let tree = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = tree.path();
        let read = |rel: &str| read(root, Path::new(rel));
        std::fs::write(root.join("ok.txt"), b"text").unwrap();
        assert_eq!(read("ok.txt").unwrap(), Some(b"text".to_vec()));

        // The limit itself is scanned; a byte more is not (sparse files).
        let big = std::fs::File::create(root.join("limit.bin")).unwrap();
        big.set_len(MAX_SCANNED).unwrap();
        assert_eq!(read("limit.bin").unwrap().map(|b| b.len() as u64), Some(MAX_SCANNED));
        big.set_len(MAX_SCANNED + 1).unwrap();
        let why = read("limit.bin").unwrap_err();
        assert!(matches!(why, Unscannable::TooLarge { len } if len == MAX_SCANNED + 1), "{why:?}");
        assert!(why.to_string().starts_with("it is 101 MiB, over the scan limit of 100 MiB"), "{why}");

        let why = read("gone.txt").unwrap_err();
        assert!(matches!(why, Unscannable::Gone), "{why:?}");
        assert!(why.to_string().contains("git lists it, but it is not in the work tree"), "{why}");
        let why = read("ok.txt/under").unwrap_err();
        assert!(matches!(why, Unscannable::Unreadable(_)), "{why:?}");
        assert!(why.to_string().starts_with("it cannot be read (Not a directory"), "{why}");

        std::fs::create_dir(root.join("dir")).unwrap();
        let why = read("dir").unwrap_err();
        assert!(matches!(why, Unscannable::Directory), "{why:?}");
        assert!(why.to_string().contains("it is a directory"), "{why}");
        let _socket = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
        let why = read("socket").unwrap_err();
        assert!(matches!(why, Unscannable::Special), "{why:?}");
        assert!(why.to_string().starts_with("it is a FIFO, socket or device"), "{why}");

        // Symlinks inside the work tree are left to their targets' own paths,
        // existing or not; one that leads out is a problem, existing or not.
        let link = |to: &Path, name: &str| std::os::unix::fs::symlink(to, root.join(name)).unwrap();
        link(Path::new("ok.txt"), "in-file");
        link(Path::new("dir"), "in-dir");
        link(Path::new("missing"), "in-missing");
        link(&root.join("dir/../ok.txt"), "in-absolute");
        for name in ["in-file", "in-dir", "in-missing", "in-absolute"] {
            assert_eq!(read(name).unwrap(), None, "{name}");
        }
        std::fs::write(outside.path().join("key"), b"x").unwrap();
        link(&outside.path().join("key"), "out-file");
        link(Path::new("dir/../../elsewhere/missing"), "out-missing");
        for (name, target) in [
            ("out-file", outside.path().canonicalize().unwrap().join("key")),
            ("out-missing", root.canonicalize().unwrap().parent().unwrap().join("elsewhere/missing")),
        ] {
            let why = read(name).unwrap_err();
            assert!(matches!(&why, Unscannable::LinkOutside { target: t } if *t == target), "{name}: {why:?}");
            let text = why.to_string();
            assert!(
                text.starts_with(&format!("it is a symlink to {}, outside the work tree", target.display())),
                "{text}"
            );
        }
    }
}
