//! `boxcar-probe`: the health check a boxcar image carries for a service that
//! has no check command of its own. Static, std only, no shell needed:
//!
//!   boxcar-probe http PORT PATH   exit 0 when GET http://127.0.0.1:PORT/PATH answers 2xx
//!   boxcar-probe tcp PORT         exit 0 when 127.0.0.1:PORT accepts a connection
//!
//! `cargo xtask image` compiles this one file with the builder's rustc (no
//! crate, no dependency: it cannot depend on the workspace it is shipped in)
//! and puts it at /usr/local/bin/boxcar-probe. HTTP/1.0 over a blocking socket
//! with a 3 s timeout on every step: it only ever talks to its own loopback.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["http", port, path] => port_of(port).and_then(|p| http(p, path)),
        ["tcp", port] => port_of(port).and_then(|p| connect(p).map(drop)),
        _ => Err("usage: boxcar-probe http PORT PATH | boxcar-probe tcp PORT".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("boxcar-probe: {why}");
            ExitCode::FAILURE
        }
    }
}

fn port_of(text: &str) -> Result<u16, String> {
    text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("`{text}` is not a port"))
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    Ok(stream)
}

fn http(port: u16, path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("`{path}` is not a URL path"));
    }
    let mut stream = connect(port)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: boxcar-probe\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
    // "HTTP/1.x NNN": twelve bytes say it all.
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| format!("127.0.0.1:{port}{path}: no answer: {e}"))?;
    if !head.starts_with(b"HTTP/1.") {
        return Err(format!("127.0.0.1:{port}{path}: not an HTTP answer"));
    }
    match head[9] {
        b'2' => Ok(()),
        _ => Err(format!("127.0.0.1:{port}{path} answered {}", String::from_utf8_lossy(&head[9..12]))),
    }
}
