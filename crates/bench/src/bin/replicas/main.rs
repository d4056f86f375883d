//! `just bench-replicas`: the measured half of the capacity model (`docs/capacity.md`), in one
//! run on one machine, against one private PostgreSQL cluster with `pg_stat_statements` loaded
//! and the test toolkit's SMTP server receiving every email over TCP:
//!
//! 1. **Database work per operation.** One release server; `pg_stat_statements` and the WAL
//!    position are read around an idle phase (the dispatcher's background), a phase of
//!    registrations that ends once every email was accepted, and a phase that activates those
//!    accounts.
//! 2. **The database ceiling.** One server with Argon2 made cheap (m = 8 KiB, t = 1), many
//!    clients: registrations/s and the CPU PostgreSQL used meanwhile.
//! 3. **Replicas.** 1, 2 and 3 servers (default Argon2 costs, one `REGISTRAR_SECRET`) on the one
//!    database, the clients spread over them: registrations/s, CPU, memory per replica.
//!
//! Every address that got a 201 must have received exactly one email; the exit status is 1
//! otherwise, or when the run could not be made. It prints its figures and rewrites its section
//! of `docs/capacity.md`. The servers' logs stay in the temporary directory
//! (`registrar-replicas-*.log`) until the next run.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports its figures and its warnings on the terminal"
)]

mod report;
mod statements;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use registrar_bench::{
    client::{self, Account, OnRefusal, Outcome},
    machine::{self, Machine},
    postgres::{Database, query},
    server::{self, Server, Setup},
    utc_now,
};
use registrar_testing::smtp::{FakeSmtp, Received, Script};

use statements::Work;

/// The code key every replica shares, so that any of them can check a code another issued.
const SECRET: &str = "registrar-bench-replicas-shared-secret";
/// Clients of the registration and activation phases of the database-work measurement: enough
/// to keep the server busy, few enough that the phases stay short.
const OPERATION_CLIENTS: usize = 4;
/// The longest the activation phase may take (it ends when every account is activated).
const ACTIVATION_LIMIT: Duration = Duration::from_mins(5);
/// How long the mail server may wait for the last email of a phase.
const MAIL_PATIENCE: Duration = Duration::from_mins(1);
/// A fresh server's first moments (migrations checked, the start-up prune) are not
/// part of its idle cost.
const SETTLE: Duration = Duration::from_secs(2);
/// The replica counts measured.
const REPLICAS: [usize; 3] = [1, 2, 3];

const USAGE: &str = "usage: replicas [--seconds S] [--operation-seconds S] [--idle-seconds S] \
[--ceiling-seconds S] [--clients N] [--ceiling-clients N] [--docs DIR]

  --seconds S            registrations per replica count (1, 2, 3 replicas), seconds (10)
  --operation-seconds S  registrations whose database work is measured, seconds (5)
  --idle-seconds S       the idle server's background work, seconds (10)
  --ceiling-seconds S    registrations with Argon2 made cheap, seconds (10)
  --clients N            clients spread over the replicas (32)
  --ceiling-clients N    clients of the ceiling measurement (64)
  --docs DIR             the docs/ folder whose capacity.md is rewritten (the workspace's)";

/// The run's knobs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Options {
    pub(crate) load: Duration,
    pub(crate) operations: Duration,
    pub(crate) idle: Duration,
    pub(crate) ceiling: Duration,
    pub(crate) clients: usize,
    pub(crate) ceiling_clients: usize,
    docs: PathBuf,
}

impl Options {
    /// The flags of `args` (without the program's name) over the defaults.
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut options = Self {
            load: Duration::from_secs(10),
            operations: Duration::from_secs(5),
            idle: Duration::from_secs(10),
            ceiling: Duration::from_secs(10),
            clients: 32,
            ceiling_clients: 64,
            docs: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs"),
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|&number| number > 0)
                    .ok_or_else(|| format!("{flag} {value}: not a positive whole number"))
            };
            let count = || number().and_then(|n| usize::try_from(n).map_err(|e| e.to_string()));
            match flag.as_str() {
                "--seconds" => options.load = Duration::from_secs(number()?),
                "--operation-seconds" => options.operations = Duration::from_secs(number()?),
                "--idle-seconds" => options.idle = Duration::from_secs(number()?),
                "--ceiling-seconds" => options.ceiling = Duration::from_secs(number()?),
                "--clients" => options.clients = count()?,
                "--ceiling-clients" => options.ceiling_clients = count()?,
                "--docs" => options.docs = PathBuf::from(value),
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        Ok(options)
    }

    /// The flags that give these options, as the report repeats them.
    pub(crate) fn flags(&self) -> String {
        format!(
            "--seconds {} --operation-seconds {} --idle-seconds {} --ceiling-seconds {} \
             --clients {} --ceiling-clients {}",
            self.load.as_secs(),
            self.operations.as_secs(),
            self.idle.as_secs(),
            self.ceiling.as_secs(),
            self.clients,
            self.ceiling_clients
        )
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match Options::parse(args).and_then(|options| run(&options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("replicas: an email was lost or sent twice (see above)");
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("replicas: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The whole run; `Ok(false)` when it completed but some address did not get exactly one email.
fn run(options: &Options) -> Result<bool, String> {
    let binary = server::release_binary()?;
    let started = utc_now();
    let machine = Machine::read();
    let machine_line = machine.describe();
    println!("replicas: {machine_line}; {}", options.flags());

    let mut fallback = None;
    let database = Database::start(None, &mut fallback)?;
    if let Some(reason) = fallback {
        database.remove();
        return Err(format!(
            "{reason}; this run restarts its PostgreSQL with pg_stat_statements, so it needs a \
             private cluster"
        ));
    }
    let result = measure(options, &binary, &database).map(|mut measured| {
        measured.machine = machine_line;
        measured.started = started;
        measured.database.clone_from(&database.description);
        measured
    });
    database.remove();
    let measured = result?;
    println!("{}", report::terminal(&measured));
    let path = options.docs.join("capacity.md");
    report::write(&path, &measured, options)?;
    println!("replicas: wrote {}", path.display());
    Ok(measured.mail.exactly_once())
}

/// Everything measured.
#[derive(Default)]
pub(crate) struct Measured {
    pub(crate) started: String,
    pub(crate) machine: String,
    pub(crate) database: String,
    pub(crate) max_connections: String,
    pub(crate) operations: Operations,
    pub(crate) ceiling: Load,
    pub(crate) replicas: Vec<Load>,
    pub(crate) mail: Mail,
}

/// The database-work phases.
#[derive(Default)]
pub(crate) struct Operations {
    pub(crate) idle: Option<Work>,
    pub(crate) idle_seconds: f64,
    pub(crate) registered: usize,
    pub(crate) registrations: Option<Work>,
    pub(crate) registration_seconds: f64,
    pub(crate) activated: usize,
    pub(crate) activations: Option<Work>,
    pub(crate) activation_seconds: f64,
    /// Requests of the phases that were neither a success nor a well-formed 503.
    pub(crate) odd: usize,
}

/// One closed-loop registration load on one or more servers.
#[derive(Default)]
pub(crate) struct Load {
    /// The database ceiling (Argon2 made cheap), not a replicas row.
    pub(crate) ceiling: bool,
    pub(crate) servers: usize,
    pub(crate) clients: usize,
    pub(crate) outcome: Outcome,
    /// CPU seconds used during the load: PostgreSQL, the servers together, this driver.
    pub(crate) postgres_cpu: f64,
    pub(crate) servers_cpu: f64,
    pub(crate) driver_cpu: f64,
    /// CPU seconds every process on the machine used during the load, ours included.
    pub(crate) machine_cpu: f64,
    /// Per server: `VmRSS` before the load, `VmRSS` after it, `VmHWM`; KiB.
    pub(crate) memory: Vec<(u64, u64, u64)>,
}

/// Every email the mail server received, by recipient, against the addresses that got a 201.
#[derive(Default)]
pub(crate) struct Mail {
    pub(crate) created: usize,
    pub(crate) messages: usize,
    pub(crate) missing: usize,
    pub(crate) duplicated: usize,
    pub(crate) unexpected: usize,
}

impl Mail {
    pub(crate) fn exactly_once(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.unexpected == 0
    }
}

/// What every server of the run shares: the binary, the database, the mail server.
struct Context<'a> {
    binary: &'a Path,
    database: &'a Database,
    smtp: &'a FakeSmtp,
    smtp_url: String,
}

impl Context<'_> {
    /// A server on the database and the mail server with `settings` besides; its log is
    /// `registrar-replicas-{name}.log` in the temporary directory.
    fn server(&self, name: &str, settings: &[(&str, &str)]) -> Result<Server, String> {
        let log = std::env::temp_dir().join(format!("registrar-replicas-{name}.log"));
        let mut all = vec![
            ("SMTP_URL", self.smtp_url.as_str()),
            ("REGISTRAR_SECRET", SECRET),
        ];
        all.extend_from_slice(settings);
        Server::start_with(
            &Setup {
                binary: self.binary,
                cpus: None,
                database_url: Some(&self.database.url),
                log,
            },
            &all,
        )
    }

    /// Waits until every address of `created` has an email; warns when some never came.
    fn await_mail(&self, created: &[String]) {
        let arrived = self.smtp.wait_until(MAIL_PATIENCE, |messages| {
            let recipients: HashSet<String> = messages.iter().map(Received::to).collect();
            created.iter().all(|email| recipients.contains(email))
        });
        if !arrived {
            eprintln!(
                "replicas: warning: not every email arrived within {} s",
                MAIL_PATIENCE.as_secs()
            );
        }
    }
}

fn measure(options: &Options, binary: &Path, database: &Database) -> Result<Measured, String> {
    database.preload("pg_stat_statements")?;
    query(
        &database.url,
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
    )?;
    let smtp = FakeSmtp::start(Script::default());
    let context = Context {
        binary,
        database,
        smtp: &smtp,
        smtp_url: smtp.url(),
    };
    let mut created = Vec::new();
    let mut measured = Measured {
        max_connections: query(&database.url, "SHOW max_connections")?
            .trim()
            .to_owned(),
        ..Measured::default()
    };
    measured.operations = operations(&context, options, &mut created)?;
    measured.ceiling = ceiling(&context, options, &mut created)?;
    for replicas in REPLICAS {
        measured
            .replicas
            .push(replicated(&context, options, replicas, &mut created)?);
    }
    measured.mail = tally(&created, &smtp.messages());
    Ok(measured)
}

/// The database work of the idle server, of registrations with their emails, and of
/// activations, on one server with the per-address limits on (as in production; raised so
/// that one client address may register them all).
fn operations(
    context: &Context<'_>,
    options: &Options,
    created: &mut Vec<String>,
) -> Result<Operations, String> {
    let url = &context.database.url;
    let server = context.server(
        "operations",
        &[
            ("REGISTRAR_RATE_LIMITS", "on"),
            ("REGISTRAR_REGISTRATIONS_PER_ADDRESS", "1000000"),
        ],
    )?;
    thread::sleep(SETTLE);
    let mut phases = Operations::default();

    let (mark, started) = (statements::start(url)?, Instant::now());
    thread::sleep(options.idle);
    phases.idle = Some(statements::since(url, &mark)?);
    phases.idle_seconds = started.elapsed().as_secs_f64();
    println!("idle: {:.1} s measured", phases.idle_seconds);

    let (mark, started) = (statements::start(url)?, Instant::now());
    let outcome = client::register_for(
        server.port,
        OPERATION_CLIENTS,
        options.operations,
        "operation",
        OnRefusal::BackOff,
    );
    context.await_mail(&outcome.created);
    phases.registrations = Some(statements::since(url, &mark)?);
    phases.registration_seconds = started.elapsed().as_secs_f64();
    phases.registered = outcome.created.len();
    phases.odd += outcome.odd();
    println!(
        "registrations: {} with their emails in {:.1} s",
        phases.registered, phases.registration_seconds
    );

    let accounts = Mutex::new(codes(&context.smtp.messages(), &outcome.created));
    created.extend(outcome.created);
    let (mark, started) = (statements::start(url)?, Instant::now());
    let activated =
        client::activate_for(server.port, OPERATION_CLIENTS, ACTIVATION_LIMIT, &accounts);
    phases.activations = Some(statements::since(url, &mark)?);
    phases.activation_seconds = started.elapsed().as_secs_f64();
    phases.activated = activated.ok.len();
    phases.odd += activated.odd();
    println!(
        "activations: {} in {:.1} s",
        phases.activated, phases.activation_seconds
    );
    stop(vec![server]);
    Ok(phases)
}

/// The activation code of each address of `created`, from its email.
fn codes(messages: &[Received], created: &[String]) -> Vec<Account> {
    let wanted: HashSet<&String> = created.iter().collect();
    messages
        .iter()
        .filter_map(|message| {
            let to = message.to();
            let code = code_in(&message.data)?;
            wanted.contains(&to).then_some((to, code))
        })
        .collect()
}

/// The 4-digit code of an activation email: the first line of the text that is only 4 digits.
fn code_in(message: &str) -> Option<String> {
    message
        .lines()
        .map(str::trim)
        .find(|line| line.len() == 4 && line.bytes().all(|byte| byte.is_ascii_digit()))
        .map(str::to_owned)
}

/// Registrations/s of one server whose hashing costs next to nothing, so that the database
/// (and whatever else shares the CPUs) sets the pace.
fn ceiling(
    context: &Context<'_>,
    options: &Options,
    created: &mut Vec<String>,
) -> Result<Load, String> {
    let server = context.server(
        "ceiling",
        &[
            ("REGISTRAR_ARGON2_MEMORY_KIB", "8"),
            ("REGISTRAR_ARGON2_ITERATIONS", "1"),
        ],
    )?;
    thread::sleep(SETTLE);
    let load = Load {
        ceiling: true,
        ..measure_load(
            context,
            std::slice::from_ref(&server),
            options.ceiling_clients,
            options.ceiling,
            "ceiling",
        )
    };
    println!(
        "ceiling: {:.1} registrations/s with Argon2 m=8 KiB t=1",
        load.outcome.rate()
    );
    context.await_mail(&load.outcome.created);
    created.extend(load.outcome.created.iter().cloned());
    stop(vec![server]);
    Ok(load)
}

/// `replicas` servers with the default costs on the one database, the clients spread over them.
fn replicated(
    context: &Context<'_>,
    options: &Options,
    replicas: usize,
    created: &mut Vec<String>,
) -> Result<Load, String> {
    let mut servers = Vec::with_capacity(replicas);
    for replica in 1..=replicas {
        servers.push(context.server(&format!("{replicas}-{replica}"), &[])?);
    }
    thread::sleep(SETTLE);
    let load = measure_load(
        context,
        &servers,
        options.clients,
        options.load,
        &format!("replicas{replicas}"),
    );
    println!(
        "{replicas} replica(s): {:.1} registrations/s",
        load.outcome.rate()
    );
    context.await_mail(&load.outcome.created);
    created.extend(load.outcome.created.iter().cloned());
    stop(servers);
    Ok(load)
}

/// `clients` registering for `duration` over `servers`, with the CPU each party used and the
/// servers' memory.
fn measure_load(
    context: &Context<'_>,
    servers: &[Server],
    clients: usize,
    duration: Duration,
    prefix: &str,
) -> Load {
    let servers_cpu = || servers.iter().filter_map(Server::cpu_seconds).sum::<f64>();
    let driver_cpu =
        || machine::cpu_ticks(std::process::id()).map_or(0.0, machine::ticks_to_seconds);
    let machine_cpu = || machine::busy_ticks().map_or(0.0, machine::ticks_to_seconds);
    let idle: Vec<u64> = servers
        .iter()
        .map(|server| server.memory_kib().map_or(0, |(rss, _)| rss))
        .collect();
    let before = (
        context.database.cpu_seconds().unwrap_or_default(),
        servers_cpu(),
        driver_cpu(),
        machine_cpu(),
    );
    let ports: Vec<u16> = servers.iter().map(|server| server.port).collect();
    let outcome = client::register_spread(&ports, clients, duration, prefix, OnRefusal::BackOff);
    let memory = servers
        .iter()
        .zip(idle)
        .map(|(server, idle)| {
            let (rss, peak) = server.memory_kib().unwrap_or_default();
            (idle, rss, peak)
        })
        .collect();
    Load {
        ceiling: false,
        servers: servers.len(),
        clients,
        postgres_cpu: context.database.cpu_seconds().unwrap_or_default() - before.0,
        servers_cpu: servers_cpu() - before.1,
        driver_cpu: driver_cpu() - before.2,
        machine_cpu: machine_cpu() - before.3,
        memory,
        outcome,
    }
}

fn stop(servers: Vec<Server>) {
    for server in servers {
        if !server.stop() {
            eprintln!("replicas: warning: a server did not stop cleanly on SIGTERM");
        }
    }
}

/// The emails received against the addresses that got a 201.
fn tally(created: &[String], messages: &[Received]) -> Mail {
    let mut by_recipient: HashMap<String, usize> = HashMap::new();
    for message in messages {
        *by_recipient.entry(message.to()).or_default() += 1;
    }
    let expected: HashSet<&String> = created.iter().collect();
    Mail {
        created: created.len(),
        messages: messages.len(),
        missing: created
            .iter()
            .filter(|email| !by_recipient.contains_key(*email))
            .count(),
        duplicated: by_recipient.values().filter(|&&count| count > 1).count(),
        unexpected: by_recipient
            .keys()
            .filter(|email| !expected.contains(email))
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Options, code_in};

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn flags_override_the_defaults_and_nonsense_is_refused() {
        let options = parse(&["--seconds", "3", "--clients", "8"]).unwrap();
        assert_eq!(options.load, Duration::from_secs(3));
        assert_eq!(options.clients, 8);
        assert_eq!(options.ceiling_clients, 64);
        assert!(parse(&["--seconds"]).is_err());
        assert!(parse(&["--seconds", "0"]).is_err());
        assert!(parse(&["--speed", "3"]).is_err());
    }

    #[test]
    fn the_code_is_the_first_line_of_four_digits() {
        let email = "Hello,\r\n\r\nyour code is:\r\n\r\n    0427\r\n\r\nvalid for 60s, 2026\r\n";
        assert_eq!(code_in(email).as_deref(), Some("0427"));
        assert_eq!(code_in("no code here 1234 inline"), None);
    }
}
