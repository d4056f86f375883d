//! Whether a PostgreSQL server lets the `postgres` user in without a password: a start-up
//! message over TCP and the first reply, read by hand so that finding a server needs neither a
//! client library nor a runtime.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// Patience for a server on the loopback interface.
const PATIENCE: Duration = Duration::from_secs(3);
/// Protocol version 3.0.
const PROTOCOL: u32 = 196_608;

/// True when a server at `address` answers `postgres`'s start-up with "authentication OK".
pub(super) fn lets_postgres_in(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, PATIENCE) else {
        return false;
    };
    if stream.set_read_timeout(Some(PATIENCE)).is_err() {
        return false;
    }
    let mut body = PROTOCOL.to_be_bytes().to_vec();
    for text in ["user", "postgres", "database", "postgres", ""] {
        body.extend_from_slice(text.as_bytes());
        body.push(0);
    }
    let Ok(length) = u32::try_from(body.len() + 4) else {
        return false;
    };
    let mut message = length.to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    if stream.write_all(&message).is_err() {
        return false;
    }
    // AuthenticationOk: 'R', length 8, code 0.
    let mut reply = [0u8; 9];
    let ok = stream.read_exact(&mut reply).is_ok() && reply == [b'R', 0, 0, 0, 8, 0, 0, 0, 0];
    // Say goodbye (Terminate), so the server logs no broken connection.
    let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
    ok
}
