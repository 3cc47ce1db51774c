//! `boxcar-probe`: the health check a boxcar image carries for a service that
//! has no check command of its own. Static, no shell needed:
//!
//!   boxcar-probe http PORT PATH   exit 0 when GET http://127.0.0.1:PORT/PATH answers 2xx
//!   boxcar-probe tcp PORT         exit 0 when 127.0.0.1:PORT accepts a connection
//!
//! Anything else exits 1, with one line on stderr saying why; wrong arguments
//! exit 2.
//!
//! `cargo xtask image` compiles this one file with the builder's rustc (no
//! crate, no dependency: it cannot depend on the workspace it is shipped in)
//! and puts it at /usr/local/bin/boxcar-probe. HTTP/1.0 over a blocking socket
//! with a 3 s timeout on every step: it only ever talks to its own loopback.
//!
//! Why `no_std`, calling musl's socket functions itself: with std the probe
//! was 390 KiB, most of it formatting, backtraces and the runtime's setup,
//! for one connect, one write and one read; this way it is a few KiB. The
//! calls it makes are the six below, each checked.

#![no_std]
#![no_main]

use core::ffi::{c_char, c_int, c_void};

// musl's socket and file functions (linked statically from the musl target's
// own libc). The constants are Linux's, the same on every architecture musl
// and boxcar build for (x86_64, aarch64).
#[link(name = "c")]
unsafe extern "C" {
    fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
    fn connect(fd: c_int, addr: *const SockaddrIn, len: u32) -> c_int;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn send(fd: c_int, buf: *const c_void, count: usize, flags: c_int) -> isize;
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
}

const AF_INET: c_int = 2;
const SOCK_STREAM: c_int = 1;
const SOCK_CLOEXEC: c_int = 0o2000000;
const SOL_SOCKET: c_int = 1;
const SO_RCVTIMEO: c_int = 20;
/// On Linux this bounds `connect` too, not only writes.
const SO_SNDTIMEO: c_int = 21;
/// A peer that closed makes `send` fail instead of killing the probe with
/// SIGPIPE (std ignores SIGPIPE at start-up; a `no_std` program has no such
/// start-up).
const MSG_NOSIGNAL: c_int = 0x4000;
const STDERR: c_int = 2;
const TIMEOUT_SECONDS: i64 = 3;

#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: [u8; 2],
    addr: [u8; 4],
    zero: [u8; 8],
}

#[repr(C)]
struct Timeval {
    seconds: i64,
    microseconds: i64,
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // Nothing here panics (no indexing that can fail, no arithmetic that can
    // overflow); should the compiler still keep a path to this, it fails the
    // check rather than pass it.
    say(&[b"boxcar-probe: internal error"]);
    unsafe extern "C" {
        fn _exit(status: c_int) -> !;
    }
    unsafe { _exit(1) }
}

#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let mut args: [&[u8]; 4] = [&[]; 4];
    let count = argc.max(0) as usize;
    if count > args.len() {
        return usage();
    }
    for (i, slot) in args.iter_mut().enumerate().take(count) {
        // SAFETY: the C runtime hands `argc` valid, NUL-terminated strings.
        *slot = unsafe { core::ffi::CStr::from_ptr(*argv.add(i)) }.to_bytes();
    }
    let result = match (count, args[1]) {
        (4, b"http") => port_of(args[2]).and_then(|port| http(port, args[3])),
        (3, b"tcp") => port_of(args[2]).and_then(connected).map(drop),
        _ => return usage(),
    };
    match result {
        Ok(()) => 0,
        Err(why) => {
            say(&why.parts());
            1
        }
    }
}

fn usage() -> c_int {
    say(&[b"usage: boxcar-probe http PORT PATH | boxcar-probe tcp PORT"]);
    2
}

/// Why the probe failed, as the pieces of one line.
enum Why<'a> {
    NotAPort(&'a [u8]),
    NotAPath(&'a [u8]),
    Refused(Port),
    NoAnswer(Port, &'a [u8]),
    NotHttp(Port, &'a [u8]),
    Answered(Port, &'a [u8], [u8; 3]),
    NoSocket,
}

/// A port, with its decimal text kept for messages.
#[derive(Clone, Copy)]
struct Port {
    number: u16,
    text: [u8; 5],
    len: usize,
}

impl Port {
    fn text(&self) -> &[u8] {
        self.text.get(..self.len).unwrap_or(&[])
    }
}

impl Why<'_> {
    fn parts(&self) -> [&[u8]; 6] {
        const LOOPBACK: &[u8] = b"127.0.0.1:";
        match self {
            Why::NotAPort(text) => [b"`", text, b"` is not a port", b"", b"", b""],
            Why::NotAPath(text) => [b"`", text, b"` is not a URL path", b"", b"", b""],
            Why::Refused(port) => [LOOPBACK, port.text(), b": no connection", b"", b"", b""],
            Why::NoAnswer(port, path) => [LOOPBACK, port.text(), path, b": no answer", b"", b""],
            Why::NotHttp(port, path) => [LOOPBACK, port.text(), path, b": not an HTTP answer", b"", b""],
            Why::Answered(port, path, status) => [LOOPBACK, port.text(), path, b" answered ", status, b""],
            Why::NoSocket => [b"cannot open a socket", b"", b"", b"", b"", b""],
        }
    }
}

/// One line on stderr, in one write so lines of concurrent probes do not mix.
fn say(parts: &[&[u8]]) {
    let mut line = [0u8; 512];
    let mut len = 0;
    for byte in parts.iter().flat_map(|p| p.iter()).chain(b"\n") {
        // A path is at most what fits; the line ends whatever is cut.
        if let Some(slot) = line.get_mut(len) {
            *slot = *byte;
            len += 1;
        }
    }
    if let Some(last) = line.get_mut(len.saturating_sub(1)) {
        *last = b'\n';
    }
    // SAFETY: `line` holds `len` initialised bytes.
    unsafe { write(STDERR, line.as_ptr().cast(), len) };
}

fn port_of(text: &[u8]) -> Result<Port, Why<'_>> {
    if text.is_empty() || text.len() > 5 {
        return Err(Why::NotAPort(text));
    }
    let mut number: u32 = 0;
    for byte in text {
        if !byte.is_ascii_digit() {
            return Err(Why::NotAPort(text));
        }
        number = number * 10 + u32::from(byte - b'0');
    }
    match u16::try_from(number) {
        Ok(number) if number > 0 => {
            let mut port = Port { number, text: [0; 5], len: text.len() };
            port.text.get_mut(..text.len()).unwrap_or(&mut []).copy_from_slice(text);
            Ok(port)
        }
        _ => Err(Why::NotAPort(text)),
    }
}

/// A socket connected to the port on 127.0.0.1, with every step bounded.
fn connected<'a>(port: Port) -> Result<Socket, Why<'a>> {
    // SAFETY: plain calls with valid pointers and lengths; every result is checked.
    unsafe {
        let fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(Why::NoSocket);
        }
        let socket = Socket(fd);
        let timeout = Timeval { seconds: TIMEOUT_SECONDS, microseconds: 0 };
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            let size = core::mem::size_of::<Timeval>() as u32;
            if setsockopt(fd, SOL_SOCKET, option, (&raw const timeout).cast(), size) != 0 {
                return Err(Why::NoSocket);
            }
        }
        let addr = SockaddrIn { family: AF_INET as u16, port: port.number.to_be_bytes(), addr: [127, 0, 0, 1], zero: [0; 8] };
        if connect(fd, &addr, core::mem::size_of::<SockaddrIn>() as u32) != 0 {
            return Err(Why::Refused(port));
        }
        Ok(socket)
    }
}

/// A socket, closed when dropped (the process ends right after, but a probe
/// that leaked descriptors would be a poor model).
struct Socket(c_int);

impl Drop for Socket {
    fn drop(&mut self) {
        unsafe extern "C" {
            fn close(fd: c_int) -> c_int;
        }
        // SAFETY: the descriptor is this value's own.
        unsafe { close(self.0) };
    }
}

fn http(port: Port, path: &[u8]) -> Result<(), Why<'_>> {
    if path.first() != Some(&b'/') || path.iter().any(|b| b.is_ascii_control() || *b == b' ') {
        return Err(Why::NotAPath(path));
    }
    let socket = connected(port)?;
    let request: [&[u8]; 3] = [b"GET ", path, b" HTTP/1.0\r\nHost: localhost\r\nUser-Agent: boxcar-probe\r\n\r\n"];
    for part in request {
        let mut rest = part;
        while !rest.is_empty() {
            // SAFETY: `rest` is a live slice; the result is checked.
            let wrote = unsafe { send(socket.0, rest.as_ptr().cast(), rest.len(), MSG_NOSIGNAL) };
            match usize::try_from(wrote) {
                Ok(n) if n > 0 => rest = rest.get(n..).unwrap_or(&[]),
                _ => return Err(Why::NoAnswer(port, path)),
            }
        }
    }
    // "HTTP/1.x NNN": twelve bytes say it all.
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        let free = head.get_mut(got..).unwrap_or(&mut []);
        // SAFETY: `free` is a live, writable slice; the result is checked.
        let n = unsafe { read(socket.0, free.as_mut_ptr().cast(), free.len()) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => got += n,
            _ => return Err(Why::NoAnswer(port, path)),
        }
    }
    if !head.starts_with(b"HTTP/1.") {
        return Err(Why::NotHttp(port, path));
    }
    let [.., s0, s1, s2] = head;
    match s0 {
        b'2' => Ok(()),
        _ => Err(Why::Answered(port, path, [s0, s1, s2])),
    }
}
