//! The load: client threads speaking HTTP/1.1 over plain loopback sockets (one `Connection:
//! close` request per connection, as a crowd of distinct clients would), in the shapes the run
//! needs: a closed loop for a while (registrations, on one server or spread over several, or
//! activations), a burst sent at one instant,
//! and a `/healthz` poller beside them. Every 503 is checked for a well-formed `overloaded`
//! problem with `Retry-After`.

use std::{
    collections::BTreeMap,
    net::TcpStream,
    sync::{
        Barrier, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};

use crate::{PASSWORD, registration_body};

/// Stack of each client thread: they only format a request and read a short response.
const CLIENT_STACK: usize = 256 * 1024;
/// A client's pause after a socket-level failure, so a refused connect does not spin.
const SOCKET_ERROR_PAUSE: Duration = Duration::from_millis(10);
/// The `/healthz` poller's pause between requests: a probe, not more load.
const HEALTH_PAUSE: Duration = Duration::from_millis(10);

/// An account with its activation code.
pub type Account = (String, String);

/// What a set of clients saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// From the start to the last client's last answer.
    pub elapsed: Duration,
    /// Latency of every success (201 registered, 200 activated).
    pub ok: Vec<Duration>,
    /// 503s that were a well-formed `overloaded` problem with `Retry-After`.
    pub refused: usize,
    /// 503s that were not.
    pub malformed_refusals: usize,
    /// Anything else, by description.
    pub other: BTreeMap<String, usize>,
    /// The addresses that got a 201.
    pub created: Vec<String>,
}

impl Outcome {
    fn merge(&mut self, other: Self) {
        self.ok.extend(other.ok);
        self.refused += other.refused;
        self.malformed_refusals += other.malformed_refusals;
        for (what, count) in other.other {
            *self.other.entry(what).or_default() += count;
        }
        self.created.extend(other.created);
    }

    /// Successes per second over the whole row.
    #[must_use]
    pub fn rate(&self) -> f64 {
        count(self.ok.len()) / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Requests that were neither a success nor a well-formed refusal.
    #[must_use]
    pub fn odd(&self) -> usize {
        self.malformed_refusals + self.other.values().sum::<usize>()
    }
}

/// `usize` as `f64` for rates and ratios (counts here are far below 2^52).
#[allow(
    clippy::cast_precision_loss,
    reason = "request counts are far below 2^52"
)]
#[must_use]
pub fn count(value: usize) -> f64 {
    value as f64
}

/// How a closed-loop client treats a 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefusal {
    /// Waits `Retry-After` (or what is left of the row), then tries the same request again.
    BackOff,
    /// Tries the same request again at once, forever.
    Hammer,
}

/// `clients` threads register distinct addresses (`{prefix}-{client}-{n}@example.com`) back to
/// back for `duration`.
#[must_use]
pub fn register_for(
    port: u16,
    clients: usize,
    duration: Duration,
    prefix: &str,
    on_refusal: OnRefusal,
) -> Outcome {
    register_spread(&[port], clients, duration, prefix, on_refusal)
}

/// [`register_for`] with the clients spread over the servers of `ports` in turn (client `i`
/// talks to `ports[i % ports.len()]` only), as a load balancer would spread them.
#[must_use]
pub fn register_spread(
    ports: &[u16],
    clients: usize,
    duration: Duration,
    prefix: &str,
    on_refusal: OnRefusal,
) -> Outcome {
    let deadline = Instant::now() + duration;
    run_clients(clients, |client| {
        let port = ports[client % ports.len().max(1)];
        let mut outcome = Outcome::default();
        let mut n = 0;
        while Instant::now() < deadline {
            let email = format!("{prefix}-{client}-{n}@example.com");
            n += 1;
            let body = registration_body(&email);
            let created = until_answered(&mut outcome, deadline, on_refusal, 201, || {
                http(port, "POST /v1/users", None, Some(&body))
            });
            if created {
                outcome.created.push(email);
            }
        }
        outcome
    })
}

/// `clients` threads activate the accounts of `accounts` back to back for `duration`, or until
/// none is left.
#[must_use]
pub fn activate_for(
    port: u16,
    clients: usize,
    duration: Duration,
    accounts: &Mutex<Vec<Account>>,
) -> Outcome {
    let deadline = Instant::now() + duration;
    run_clients(clients, |_| {
        let mut outcome = Outcome::default();
        while Instant::now() < deadline {
            let Some((email, code)) = accounts.lock().ok().and_then(|mut left| left.pop()) else {
                break;
            };
            let credentials =
                base64::engine::general_purpose::STANDARD.encode(format!("{email}:{PASSWORD}"));
            let authorization = format!("Authorization: Basic {credentials}\r\n");
            let body = json!({ "code": code }).to_string();
            until_answered(&mut outcome, deadline, OnRefusal::BackOff, 200, || {
                http(
                    port,
                    "POST /v1/users/me/activation",
                    Some(&authorization),
                    Some(&body),
                )
            });
        }
        outcome
    })
}

/// `clients` registrations released at the same instant (each on its own connection, already
/// made), each sent once: a 503 is counted, not retried.
#[must_use]
pub fn burst(port: u16, clients: usize, prefix: &str) -> Outcome {
    let barrier = Barrier::new(clients);
    run_clients(clients, |client| {
        let mut outcome = Outcome::default();
        let email = format!("{prefix}-{client}@example.com");
        let body = registration_body(&email);
        let stream = connect(port);
        barrier.wait();
        let started = Instant::now();
        let answer =
            stream.and_then(|stream| exchange(stream, "POST /v1/users", None, Some(&body)));
        record(&mut outcome, answer, started, 201);
        if outcome.ok.len() == 1 {
            outcome.created.push(email);
        }
        outcome
    })
}

/// Polls `/healthz` one request at a time until `stop` is set; the latencies of its 200s.
#[must_use]
pub fn poll_health(port: u16, stop: &AtomicBool) -> Outcome {
    health(port, || !stop.load(Ordering::Relaxed))
}

/// `requests` sequential `/healthz` requests on an idle server.
#[must_use]
pub fn health_idle(port: u16, requests: usize) -> Outcome {
    let mut sent = 0;
    health(port, || {
        sent += 1;
        sent <= requests
    })
}

/// The nice value of the `/healthz` probe's thread.
const PROBE_NICENESS: i32 = -10;

/// `/healthz`, one request at a time with a pause between, while `more` says so.
///
/// The probe runs beside the load driver's client threads (hundreds of them under load) and,
/// pinned, beside PostgreSQL: at their priority it would wait for its own CPU, and that wait
/// is not the server's. It asks for a higher priority, as a load balancer's probe on a machine
/// of its own would not queue behind a load generator; where it may not (no `CAP_SYS_NICE`), it
/// says so and measures anyway.
fn health(port: u16, mut more: impl FnMut() -> bool) -> Outcome {
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), PROBE_NICENESS)
    {
        eprintln!("warning: the /healthz probe runs at the load driver's priority: {error}");
    }
    let mut outcome = Outcome::default();
    while more() {
        let started = Instant::now();
        record(
            &mut outcome,
            http(port, "GET /healthz", None, None),
            started,
            200,
        );
        thread::sleep(HEALTH_PAUSE);
    }
    outcome
}

/// Runs `client(index)` on `clients` threads and merges what they saw; `elapsed` is measured
/// from before the first thread starts to after the last one ends.
fn run_clients(clients: usize, client: impl Fn(usize) -> Outcome + Sync) -> Outcome {
    let started = Instant::now();
    let mut total = Outcome::default();
    thread::scope(|scope| {
        let client = &client;
        let handles: Vec<_> = (0..clients)
            .filter_map(|index| {
                thread::Builder::new()
                    .stack_size(CLIENT_STACK)
                    .spawn_scoped(scope, move || client(index))
                    .ok()
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(outcome) => total.merge(outcome),
                Err(_) => *total.other.entry("client panicked".to_owned()).or_default() += 1,
            }
        }
    });
    total.elapsed = started.elapsed();
    total
}

/// Sends `send()` until it is answered `success` or something other than a refusal, or the
/// deadline passes; says whether it succeeded.
fn until_answered(
    outcome: &mut Outcome,
    deadline: Instant,
    on_refusal: OnRefusal,
    success: u16,
    send: impl Fn() -> Result<Response, String>,
) -> bool {
    loop {
        let started = Instant::now();
        match record(outcome, send(), started, success) {
            Answer::Success => return true,
            Answer::Refused(retry_after) => {
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                if on_refusal == OnRefusal::BackOff {
                    thread::sleep(retry_after.min(deadline - now));
                }
            }
            Answer::Other => return false,
        }
    }
}

enum Answer {
    Success,
    Refused(Duration),
    Other,
}

/// Counts `answer` into `outcome` and says what it was.
fn record(
    outcome: &mut Outcome,
    answer: Result<Response, String>,
    started: Instant,
    success: u16,
) -> Answer {
    let latency = started.elapsed();
    match answer {
        Ok(response) if response.status == success => {
            outcome.ok.push(latency);
            Answer::Success
        }
        Ok(response) if response.status == 503 => {
            if let Some(retry_after) = response.overloaded() {
                outcome.refused += 1;
                Answer::Refused(retry_after)
            } else {
                outcome.malformed_refusals += 1;
                Answer::Refused(Duration::from_secs(1))
            }
        }
        Ok(response) => {
            *outcome
                .other
                .entry(format!("HTTP {}", response.status))
                .or_default() += 1;
            Answer::Other
        }
        Err(error) => {
            *outcome.other.entry(error).or_default() += 1;
            thread::sleep(SOCKET_ERROR_PAUSE);
            Answer::Other
        }
    }
}

/// One HTTP response.
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    /// The `Retry-After` of a well-formed `overloaded` problem, or `None` for anything else.
    fn overloaded(&self) -> Option<Duration> {
        let header = |name: &str| {
            self.head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let problem_json = header("content-type")
            .is_some_and(|value| value.starts_with("application/problem+json"));
        let retry_after = header("retry-after")?.parse::<u64>().ok()?;
        let problem: Value = serde_json::from_str(&self.body).ok()?;
        let overloaded = problem["type"]
            .as_str()
            .is_some_and(|kind| kind.ends_with("/overloaded"));
        (problem_json && overloaded).then(|| Duration::from_secs(retry_after))
    }
}

/// One request on a fresh connection.
fn http(
    port: u16,
    request_line: &str,
    headers: Option<&str>,
    json_body: Option<&str>,
) -> Result<Response, String> {
    exchange(connect(port)?, request_line, headers, json_body)
}

fn connect(port: u16) -> Result<TcpStream, String> {
    crate::connect(port).map_err(failure)
}

/// Writes the request, reads the response to the end of the connection.
fn exchange(
    stream: TcpStream,
    request_line: &str,
    headers: Option<&str>,
    json_body: Option<&str>,
) -> Result<Response, String> {
    let (status, head, body) =
        crate::exchange(stream, request_line, headers.unwrap_or(""), json_body).map_err(failure)?;
    Ok(Response { status, head, body })
}

/// `stage: why`, the key a failed request is counted under.
fn failure((stage, error): crate::HttpError) -> String {
    format!("{stage}: {error}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Response;

    fn response(head: &str, body: &str) -> Response {
        Response {
            status: 503,
            head: format!("HTTP/1.1 503 Service Unavailable\r\n{head}"),
            body: body.to_owned(),
        }
    }

    const PROBLEM: &str = r#"{"type":"/problems/overloaded","status":503}"#;

    #[test]
    fn a_refusal_counts_as_overloaded_only_when_it_is_the_problem_with_retry_after() {
        let good = response(
            "Content-Type: application/problem+json\r\nretry-after: 1",
            PROBLEM,
        );
        assert_eq!(good.overloaded(), Some(Duration::from_secs(1)));
        let no_retry = response("Content-Type: application/problem+json", PROBLEM);
        assert_eq!(no_retry.overloaded(), None);
        let plain = response("Content-Type: text/plain\r\nRetry-After: 1", PROBLEM);
        assert_eq!(plain.overloaded(), None);
        let other_problem = response(
            "Content-Type: application/problem+json\r\nRetry-After: 1",
            r#"{"type":"/problems/unavailable"}"#,
        );
        assert_eq!(other_problem.overloaded(), None);
    }
}
