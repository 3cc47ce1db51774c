//! `boxcar-probe`, the static health probe an image carries when its
//! service has no health command of its own: compiled from one file with the
//! builder's rustc, cached by builder and source.

use std::path::Path;

use super::compile::run_build;
use super::error::{Error, Result, on_engine, on_file};
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use sha2::{Digest as _, Sha256};

/// The source of boxcar's health probe (see the file's own docs).
const PROBE_SOURCE: &str = include_str!("../../../probe/boxcar-probe.rs");

/// How rustc compiles the probe: for musl, small, no unwinding (it is
/// `no_std`), its paths not the build container's.
const PROBE_RUSTC_ARGS: &[&str] = &[
    "--edition=2021",
    "--target=x86_64-unknown-linux-musl",
    "-Copt-level=s",
    "-Cpanic=abort",
    "-Ccodegen-units=1",
    "-Clto=fat",
    "-Cstrip=symbols",
    "--remap-path-prefix=/probe=probe",
];

/// Compiles (or reuses) `boxcar-probe`, the static health probe an image
/// carries when its service has no check command of its own: one file, the
/// builder's rustc, no crate and no workspace, so it builds the same in any
/// project. Cached in `target/boxcar-image/` by builder and source.
pub(super) async fn probe(docker: &Docker, root: &Path, builder: &str) -> Result<Vec<u8>> {
    let builder_id = builder.rsplit(':').next().unwrap_or(builder);
    let hash = hex::encode(Sha256::digest(PROBE_SOURCE.as_bytes()));
    let cached = root.join("target/boxcar-image").join(format!("boxcar-probe-{builder_id}-{}", &hash[..16]));
    if let Ok(binary) = std::fs::read(&cached) {
        return Ok(binary);
    }
    let name = format!("boxcar-probe-build-{}-{}", std::process::id(), &hash[..8]);
    let body = ContainerCreateBody {
        image: Some(builder.to_owned()),
        cmd: Some(
            ["rustc"]
                .iter()
                .chain(PROBE_RUSTC_ARGS)
                .chain(&["-o", "/probe/boxcar-probe", "/probe/boxcar-probe.rs"])
                .map(|a| (*a).to_owned())
                .collect(),
        ),
        working_dir: Some("/probe".to_owned()),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
        .await
        .map_err(on_engine("creating the probe's build container"))?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(PROBE_SOURCE.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "probe/boxcar-probe.rs", PROBE_SOURCE.as_bytes())?;
    let result = run_build(docker, &name, tar.into_inner()?, 1, "/probe/boxcar-probe").await;
    let _ = docker
        .remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).v(true).build()))
        .await;
    let (binary, _, _) = result.map_err(|e| Error::Probe { source: Box::new(e) })?;
    if let Some(dir) = cached.parent() {
        std::fs::create_dir_all(dir).map_err(on_file(format!("creating {}", dir.display())))?;
    }
    boxcar_secrets::write_atomic(&cached, &binary, Some(0o755))
        .map_err(on_file(format!("writing {}", cached.display())))?;
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe as the builder compiles it (the host's rustc, which CI pins
    /// to the builder's toolchain, with the musl target), asked of listeners
    /// on loopback: exit 0 only for a 2xx answer or, with `tcp`, a
    /// connection; 1 with one line saying why otherwise; 2 for bad arguments.
    #[test]
    fn the_probe_answers_as_documented() {
        use std::io::{Read as _, Write as _};
        use std::net::TcpListener;

        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("boxcar-probe.rs");
        let binary = dir.path().join("boxcar-probe");
        std::fs::write(&source, PROBE_SOURCE).unwrap();
        let built = std::process::Command::new("rustc")
            .args(PROBE_RUSTC_ARGS.iter().filter(|a| !a.starts_with("--remap")))
            .arg("-o")
            .args([&binary, &source])
            .output()
            .unwrap();
        assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
        let size = std::fs::metadata(&binary).unwrap().len();
        assert!(size < 64 * 1024, "the probe is {size} bytes");

        // A listener that answers each connection with `reply` (or nothing).
        let serve = |reply: &'static [u8]| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                // The whole head (the probe may send it in pieces), or what
                // came before the probe closed.
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if !reply.is_empty() {
                    let _ = conn.write_all(reply);
                }
                String::from_utf8_lossy(&request).into_owned()
            });
            port.to_string()
        };
        let run = |args: &[&str]| {
            let out = std::process::Command::new(&binary).args(args).output().unwrap();
            // Killed by a signal: 128 + the signal, as a shell says it.
            let code = out.status.code().unwrap_or_else(|| {
                128 + std::os::unix::process::ExitStatusExt::signal(&out.status).unwrap_or_default()
            });
            (code, String::from_utf8(out.stderr).unwrap())
        };

        assert_eq!(run(&["http", &serve(b"HTTP/1.1 204 No Content\r\n\r\n"), "/healthz"]), (0, String::new()));
        let port = serve(b"HTTP/1.0 503 Service Unavailable\r\n\r\n");
        assert_eq!(run(&["http", &port, "/healthz"]), (1, format!("127.0.0.1:{port}/healthz answered 503\n")));
        let port = serve(b"SSH-2.0-OpenSSH_9.2\r\n");
        assert_eq!(run(&["http", &port, "/h"]), (1, format!("127.0.0.1:{port}/h: not an HTTP answer\n")));
        let port = serve(b"HTTP/1.1 2");
        assert_eq!(run(&["http", &port, "/h"]), (1, format!("127.0.0.1:{port}/h: no answer\n")));
        assert_eq!(run(&["tcp", &serve(b"")]), (0, String::new()));

        // A peer that answers and closes before the request is all sent: a
        // failed send, not a probe killed by SIGPIPE. Whether the reset comes
        // before the last send is the scheduler's choice (about half the
        // time), so eight rounds.
        // Long (an argument may hold up to 128 KiB), so the send outlasts the peer.
        let long = format!("/{}", "a".repeat(100 << 10));
        for _ in 0..8 {
            let early = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = early.local_addr().unwrap().port().to_string();
            std::thread::spawn(move || {
                let (mut conn, _) = early.accept().unwrap();
                let _ = conn.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
                // Closing with the request unread resets the connection.
                drop(conn);
            });
            let (code, said) = run(&["http", &port, &long]);
            assert!(code == 0 || code == 1, "exit {code}: {}", &said[..said.len().min(200)]);
        }

        // Nothing listens on a port just freed.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
        assert_eq!(run(&["tcp", &closed]), (1, format!("127.0.0.1:{closed}: no connection\n")));
        assert_eq!(run(&["http", &closed, "/"]), (1, format!("127.0.0.1:{closed}: no connection\n")));

        for (args, said) in [
            (&["http", "0", "/"][..], "`0` is not a port\n"),
            (&["http", "65536", "/"], "`65536` is not a port\n"),
            (&["http", "80a", "/"], "`80a` is not a port\n"),
            (&["tcp", ""], "`` is not a port\n"),
            (&["http", "80", "healthz"], "`healthz` is not a URL path\n"),
            (&["http", "80", "/a b"], "`/a b` is not a URL path\n"),
            (&["http", "80", "/a\r\nX: y"], "`/a\r\nX: y` is not a URL path\n"),
        ] {
            assert_eq!(run(args), (1, said.to_owned()), "{args:?}");
        }
        let usage = "usage: boxcar-probe http PORT PATH | boxcar-probe tcp PORT\n".to_owned();
        for args in [&[][..], &["http", "80"], &["tcp", "80", "/"], &["udp", "80"], &["http", "80", "/", "x"]] {
            assert_eq!(run(args), (2, usage.clone()), "{args:?}");
        }
    }
}
