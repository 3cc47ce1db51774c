//! Taking the secret key from a program's environment: `SECRET_KEY` or
//! `SECRET_KEY_FILE`, then scrubbing it so neither children nor
//! `/proc/self/environ` can see it.
//!
//! **Call [`take_from_env`] before any thread starts** (first thing in `main`,
//! before building a tokio runtime). Changing the environment while another
//! thread reads it is undefined behaviour in C and `unsafe` in Rust 2024.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::IntakeError;
use crate::key::SecretKey;

/// Variable holding the base64 secret key itself.
pub const SECRET_KEY: &str = "SECRET_KEY";
/// Variable holding the path of a file with the base64 secret key.
pub const SECRET_KEY_FILE: &str = "SECRET_KEY_FILE";

/// Where a secret key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The `SECRET_KEY` variable.
    EnvVar,
    /// A file, named by `SECRET_KEY_FILE` or on a command line.
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::EnvVar => f.write_str("SECRET_KEY"),
            KeySource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A secret key and where it came from.
#[derive(Debug)]
pub struct Intake {
    /// The key.
    pub key: SecretKey,
    /// Where it came from.
    pub source: KeySource,
    /// Things the user should fix but that do not stop the program
    /// (a key file others can read).
    pub warnings: Vec<String>,
}

/// Reads the secret key from `SECRET_KEY` or `SECRET_KEY_FILE`; `Ok(None)` when
/// neither is set.
///
/// Both variables are removed from the environment whatever the outcome, and
/// the bytes of `SECRET_KEY`'s value in the process's original environment
/// block are overwritten, so `/proc/<pid>/environ` no longer shows the key.
/// What this cannot hide: the value the engine keeps (`docker inspect` shows
/// `--env`), and copies made before this call. Prefer `SECRET_KEY_FILE`.
///
/// Must run while the process has one thread (see the module docs): it
/// counts the threads in `/proc/self/task` first and, with more than one (or
/// none it can count), refuses with [`IntakeError::Threads`] and changes
/// nothing, rather than write the environment while another thread may read it.
pub fn take_from_env() -> Result<Option<Intake>, IntakeError> {
    match thread_count() {
        Some(1) => {}
        count => return Err(IntakeError::Threads { count }),
    }
    let inline = std::env::var_os(SECRET_KEY).map(|v| Zeroizing::new(v.into_encoded_bytes()));
    let file = std::env::var_os(SECRET_KEY_FILE);
    scrub(SECRET_KEY);
    scrub(SECRET_KEY_FILE);
    match (inline, file) {
        (Some(_), Some(_)) => Err(IntakeError::Both),
        (None, None) => Ok(None),
        (Some(bytes), None) => {
            let text = std::str::from_utf8(&bytes).map_err(|_| IntakeError::NotUnicode)?;
            let key = SecretKey::from_base64(text).map_err(IntakeError::EnvKey)?;
            Ok(Some(Intake { key, source: KeySource::EnvVar, warnings: Vec::new() }))
        }
        (None, Some(path)) => read_key_file(Path::new(&path), SECRET_KEY_FILE).map(Some),
    }
}

/// Reads a key file: base64 of the 32-byte key, one trailing newline allowed.
/// `origin` says where the path came from, for messages. A file that group or
/// others can read gives a warning, not an error: orchestrators often mount
/// secrets read-only for everyone inside a container.
pub fn read_key_file(path: &Path, origin: &'static str) -> Result<Intake, IntakeError> {
    let read_err = |source| IntakeError::ReadFile { path: path.to_owned(), origin, cause: source };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let mut warnings = Vec::new();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "the key file {} can be read by other users (mode {mode:04o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
    }
    // A key file is 45 bytes; read a little more so a wrong file is reported
    // by length, without reading a large one into memory.
    let mut text = Zeroizing::new(String::with_capacity(256));
    file.take(256).read_to_string(&mut text).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            IntakeError::FileKey { path: path.to_owned(), cause: crate::error::KeyError::Base64 }
        } else {
            read_err(e)
        }
    })?;
    let key = SecretKey::from_base64(&text)
        .map_err(|source| IntakeError::FileKey { path: path.to_owned(), cause: source })?;
    Ok(Intake { key, source: KeySource::File(path.to_owned()), warnings })
}

/// How many threads this process has, from `/proc/self/task`.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(Iterator::count)
}

/// Removes `name` from the environment after overwriting its value's bytes
/// wherever the C environment block holds them.
#[allow(unsafe_code)] // the only way to reach the environment block the kernel exposes
fn scrub(name: &str) {
    unsafe extern "C" {
        // POSIX: the process's environment, a NULL-terminated array of
        // NUL-terminated `NAME=value` strings. The strings given at exec live
        // in the block `/proc/self/environ` reads.
        static mut environ: *mut *mut std::ffi::c_char;
    }
    let prefix = format!("{name}=");
    // SAFETY: the caller guarantees one thread (module docs), so nothing reads
    // or changes the environment meanwhile. `environ` is NULL or a
    // NULL-terminated array of valid NUL-terminated strings; we only write
    // inside each string's bounds, before its NUL.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let s = *entry;
            let bytes = std::ffi::CStr::from_ptr(s).to_bytes();
            if bytes.starts_with(prefix.as_bytes()) {
                let value_len = bytes.len() - prefix.len();
                let value = s.add(prefix.len()).cast::<u8>();
                for i in 0..value_len {
                    std::ptr::write_volatile(value.add(i), b'\0');
                }
            }
            entry = entry.add(1);
        }
        std::env::remove_var(name);
    }
}

/// Only for tests of this module: whether the raw environment block of this
/// process still contains `needle`.
#[doc(hidden)]
pub fn proc_environ_contains(needle: &[u8]) -> std::io::Result<bool> {
    let raw = std::fs::read("/proc/self/environ")?;
    Ok(raw.windows(needle.len()).any(|w| w == needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_source_names_the_variable_or_the_file() {
        assert_eq!(KeySource::EnvVar.to_string(), "SECRET_KEY");
        assert_eq!(KeySource::File(PathBuf::from("/run/secrets/key")).to_string(), "/run/secrets/key");
    }
}
