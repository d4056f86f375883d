//! `registrar healthcheck`: asks a running server's `/readyz` whether it is ready. The
//! container image has no shell and no HTTP client, so the binary is its own probe for a
//! container `HEALTHCHECK`; a few lines over a plain socket do, no HTTP client crate needed.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The whole check (connect, ask, read the status line) gets this long.
pub const DEADLINE: Duration = Duration::from_secs(3);

/// A status line longer than this is not one a server of ours sends.
const MAX_STATUS_LINE: usize = 1024;

/// Where to ask a server that binds `listen`: an unspecified bind address (all interfaces)
/// is reached on the loopback address of the same family.
#[must_use]
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `Ok` when the server bound to `listen` answers `GET /readyz` with 200 within [`DEADLINE`];
/// otherwise the error says what went wrong.
pub fn check(listen: SocketAddr) -> anyhow::Result<()> {
    let address = target(listen);
    let deadline = Deadline(Instant::now() + DEADLINE);
    let stream = TcpStream::connect_timeout(&address, deadline.left()?)
        .with_context(|| format!("could not connect to {address}"))?;
    let mut stream = DeadlineStream { stream, deadline };
    let request = format!(
        "GET /readyz HTTP/1.1\r\nHost: {address}\r\nUser-Agent: registrar-healthcheck\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("could not ask {address}"))?;
    let status = read_status(&mut stream)
        .with_context(|| format!("no valid answer from {address} within {DEADLINE:?}"))?;
    if status != 200 {
        bail!("{address} answered /readyz with {status}");
    }
    Ok(())
}

/// The status code of the response `reader` starts with (`HTTP/1.x SP 3DIGIT SP reason CRLF`),
/// reading no further than the status line.
fn read_status(reader: &mut impl Read) -> anyhow::Result<u16> {
    let mut line = Vec::with_capacity(64);
    let mut byte = [0_u8];
    // Byte by byte: the line is short, and nothing past it needs to be read.
    while !line.ends_with(b"\r\n") {
        if line.len() >= MAX_STATUS_LINE {
            bail!("the status line is longer than {MAX_STATUS_LINE} bytes");
        }
        match reader.read(&mut byte) {
            Ok(0) => bail!("the connection closed before a status line"),
            Ok(_) => line.push(byte[0]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error).context("could not read the answer"),
        }
    }
    parse_status_line(&line[..line.len() - 2])
}

/// The status code of a status line without its CRLF.
fn parse_status_line(line: &[u8]) -> anyhow::Result<u16> {
    let malformed = || format!("malformed status line {:?}", String::from_utf8_lossy(line));
    let rest = line
        .strip_prefix(b"HTTP/1.")
        .and_then(|rest| rest.strip_prefix(b"0 ").or(rest.strip_prefix(b"1 ")))
        .with_context(malformed)?;
    let (code, after) = rest.split_at_checked(3).with_context(malformed)?;
    if !code.iter().all(u8::is_ascii_digit) || !(after.is_empty() || after.starts_with(b" ")) {
        bail!(malformed());
    }
    code.iter()
        .try_fold(0_u16, |status, digit| {
            status.checked_mul(10)?.checked_add(u16::from(digit - b'0'))
        })
        .with_context(malformed)
}

/// The instant the check gives up.
#[derive(Debug, Clone, Copy)]
struct Deadline(Instant);

impl Deadline {
    /// The time left, or a timeout error once there is none (a zero socket timeout would
    /// mean "wait forever").
    fn left(self) -> io::Result<Duration> {
        self.0
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "the deadline passed"))
    }
}

/// A socket whose every read and write gives up at one shared deadline, so a server that
/// trickles bytes cannot stretch the check past it.
struct DeadlineStream {
    stream: TcpStream,
    deadline: Deadline,
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.deadline.left()?))?;
        self.stream.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.deadline.left()?))?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

    use super::*;

    /// Hands out one byte per read, as a slow server's packets would arrive.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    fn status(response: &str) -> anyhow::Result<u16> {
        read_status(&mut Trickle(response.as_bytes()))
    }

    #[test]
    fn the_status_code_is_read_from_the_status_line_alone() {
        assert_eq!(
            status("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap(),
            200
        );
        assert_eq!(status("HTTP/1.0 503 Service Unavailable\r\n").unwrap(), 503);
        // The reason phrase may be empty, with or without its space.
        assert_eq!(status("HTTP/1.1 204 \r\n").unwrap(), 204);
        assert_eq!(status("HTTP/1.1 200\r\n").unwrap(), 200);
        // A body that looks like a status line does not count.
        assert_eq!(
            status("HTTP/1.1 503 x\r\n\r\nHTTP/1.1 200 OK\r\n").unwrap(),
            503
        );
    }

    #[test]
    fn anything_but_a_status_line_is_refused() {
        for response in [
            "",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 2000 OK\r\n",
            "HTTP/1.1 20 OK\r\n",
            "HTTP/1.1 200OK\r\n",
            "HTTP/1.1 2x0 OK\r\n",
            "HTTP/2 200 OK\r\n",
            "HTTP/1.1  200 OK\r\n",
            "SSH-2.0-OpenSSH_9.2\r\n",
            "200 OK\r\n",
        ] {
            assert!(status(response).is_err(), "{response:?} was accepted");
        }
        let endless = format!("HTTP/1.1 200 {}", "x".repeat(4096));
        assert!(status(&endless).is_err());
    }

    #[test]
    fn an_unspecified_bind_address_is_asked_on_loopback() {
        let ask = |listen: &str| target(listen.parse().unwrap()).to_string();
        assert_eq!(ask("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(ask("[::]:8080"), "[::1]:8080");
        assert_eq!(ask("10.1.2.3:9000"), "10.1.2.3:9000");
        assert_eq!(ask("[fd00::1]:8080"), "[fd00::1]:8080");
    }
}
