//! The figures of a run: on the terminal, and as the generated section of `docs/capacity.md`
//! (the hand-written half of that page reads them).

use std::{fmt::Write as _, path::Path};

use registrar_bench::Stats;

use crate::{
    Load, Measured, Options,
    statements::{Part, Work},
};

const BEGIN: &str =
    "<!-- replicas: written by `just bench-replicas`; edits between these markers are lost -->";
const END: &str = "<!-- replicas: end -->";

const LOAD_HEADERS: [&str; 17] = [
    "set-up",
    "clients",
    "201",
    "503",
    "other",
    "s",
    "201/s",
    "p50 ms",
    "p99 ms",
    "PostgreSQL cores",
    "servers' cores",
    "driver cores",
    "other processes' cores",
    "201/s per PostgreSQL core",
    "RSS idle MiB",
    "RSS after MiB",
    "peak RSS MiB",
];

/// The summary lines printed at the end of a run.
pub(crate) fn terminal(measured: &Measured) -> String {
    let mut text = String::new();
    for line in work_rows(measured) {
        let _ = writeln!(text, "{}", line.join("  "));
    }
    for load in std::iter::once(&measured.ceiling).chain(&measured.replicas) {
        let _ = writeln!(text, "{}", load_row(load).join("  "));
    }
    let _ = write!(text, "{}", mail_line(measured));
    text
}

/// Rewrites the generated section of `path`.
pub(crate) fn write(path: &Path, measured: &Measured, options: &Options) -> Result<(), String> {
    registrar_bench::write_section(
        path,
        (BEGIN, END),
        "# Capacity\n",
        &markdown(measured, options),
    )
}

fn markdown(measured: &Measured, options: &Options) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{BEGIN}");
    let _ = writeln!(text, "## Measured ({})\n", measured.started);
    let _ = writeln!(
        text,
        "```sh\njust bench-replicas\n# = cargo build --release -p registrar && \
         cargo run --release -p registrar-bench --bin replicas -- {}\n```\n",
        options.flags()
    );
    let _ = writeln!(text, "- Machine: {}", measured.machine);
    let _ = writeln!(
        text,
        "- PostgreSQL: {}, `pg_stat_statements` loaded, `max_connections` = {}",
        measured.database, measured.max_connections
    );
    let _ = writeln!(
        text,
        "- Servers: the release binary, unpinned, default pool sizes, FakeSmtp (the test \
         toolkit's SMTP server, over TCP) as the mail server\n"
    );

    let _ = writeln!(text, "### Database work per operation\n");
    let operations = &measured.operations;
    let _ = writeln!(
        text,
        "{} registrations and their emails in {:.1} s, then {} activations in {:.1} s, 4 \
         clients, per-address limits on; the idle server for {:.1} s before them. {} other \
         answers.\n",
        operations.registered,
        operations.registration_seconds,
        operations.activated,
        operations.activation_seconds,
        operations.idle_seconds,
        operations.odd
    );
    text.push_str(&table(
        &[
            "per",
            "statements",
            "rows",
            "WAL bytes (statements)",
            "WAL bytes (whole phase)",
        ],
        &work_rows(measured),
    ));
    let _ = writeln!(text, "\nBy statement (per operation of its phase):\n");
    text.push_str(&table(
        &[
            "phase",
            "statement",
            "part",
            "calls",
            "per op",
            "rows/op",
            "WAL B/op",
        ],
        &statement_rows(measured),
    ));

    let _ = writeln!(
        text,
        "\n### Registrations/s: the database ceiling and 1–3 replicas\n"
    );
    text.push_str(&table(
        &LOAD_HEADERS,
        &std::iter::once(&measured.ceiling)
            .chain(&measured.replicas)
            .map(load_row)
            .collect::<Vec<_>>(),
    ));
    let _ = writeln!(
        text,
        "\nRSS columns are per replica (each replica's figure, separated by `/`).\n"
    );
    let _ = writeln!(
        text,
        "### Every email exactly once\n\n{}\n",
        mail_line(measured)
    );
    let _ = writeln!(text, "### Derived from this run\n");
    for line in derived(measured) {
        let _ = writeln!(text, "- {line}");
    }
    let _ = writeln!(text, "{END}");
    text
}

/// The model's figures, each with its arithmetic.
fn derived(measured: &Measured) -> Vec<String> {
    let mut lines = Vec::new();
    let cores =
        |load: &Load, cpu: f64| cpu / load.outcome.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let ceiling = &measured.ceiling;
    let postgres_cores = cores(ceiling, ceiling.postgres_cpu);
    let per_postgres_core = ceiling.outcome.rate() / postgres_cores.max(f64::MIN_POSITIVE);
    lines.push(format!(
        "Database ceiling: {:.0} registrations/s while PostgreSQL used {postgres_cores:.2} \
         cores: {:.0} / {postgres_cores:.2} = **{per_postgres_core:.0} registrations/s per \
         PostgreSQL core**.",
        ceiling.outcome.rate(),
        ceiling.outcome.rate()
    ));
    let Some(one) = measured.replicas.first() else {
        return lines;
    };
    let (rate, server, postgres) = (
        one.outcome.rate(),
        cores(one, one.servers_cpu),
        cores(one, one.postgres_cpu),
    );
    let per_server_core = rate / server.max(f64::MIN_POSITIVE);
    lines.push(format!(
        "Cores per 100 registrations/s (1 replica): 100 × ({server:.2} server + {postgres:.2} \
         PostgreSQL) / {rate:.1} = **{:.2} cores** ({:.2} server, {:.2} PostgreSQL).",
        100.0 * (server + postgres) / rate.max(f64::MIN_POSITIVE),
        100.0 * server / rate.max(f64::MIN_POSITIVE),
        100.0 * postgres / rate.max(f64::MIN_POSITIVE)
    ));
    let replica = 2.0 * per_server_core;
    lines.push(format!(
        "Replicas per PostgreSQL core: a replica with 2 cores (the deployment's CPU limit) \
         serves 2 × {rate:.1} / {server:.2} = {replica:.0} registrations/s, so one PostgreSQL \
         core keeps up with {per_postgres_core:.0} / {replica:.0} = **{:.1} replicas**.",
        per_postgres_core / replica.max(f64::MIN_POSITIVE)
    ));
    let loads = || measured.replicas.iter().flat_map(|load| &load.memory);
    let peak = loads().map(|memory| memory.2).max().unwrap_or_default();
    let idle = loads().map(|memory| memory.0).max().unwrap_or_default();
    lines.push(format!(
        "Memory per replica: at most {:.1} MiB idle and **{:.1} MiB at its peak** (the highest \
         of any replica in the rows above).",
        number(idle) / 1024.0,
        number(peak) / 1024.0
    ));
    lines
}

/// Per registration and per activation (the HTTP request's statements, then the dispatcher's
/// passes the phase caused: claims, settlements, the outbox gauge), and per second of idle.
fn work_rows(measured: &Measured) -> Vec<Vec<String>> {
    const DISPATCHER: [Part; 2] = [Part::Delivery, Part::Background];
    let operations = &measured.operations;
    let mut rows = Vec::new();
    let mut row = |label: &str, work: Option<&Work>, parts: &[Part], whole: bool, per: f64| {
        let Some(work) = work else { return };
        let (calls, rows_touched, wal) = work.sum(parts);
        rows.push(vec![
            label.to_owned(),
            format!("{:.2}", number(calls) / per),
            format!("{:.2}", number(rows_touched) / per),
            format!("{:.0}", number(wal) / per),
            if whole {
                format!("{:.0}", number(work.wal_bytes) / per)
            } else {
                "(in the line above)".to_owned()
            },
        ]);
    };
    let registered = count(operations.registered).max(1.0);
    let registrations = operations.registrations.as_ref();
    row(
        "registration: the request",
        registrations,
        &[Part::Request],
        true,
        registered,
    );
    row(
        "registration: its email's delivery",
        registrations,
        &DISPATCHER,
        false,
        registered,
    );
    let activated = count(operations.activated).max(1.0);
    let activations = operations.activations.as_ref();
    row(
        "activation: the request",
        activations,
        &[Part::Request],
        true,
        activated,
    );
    row(
        "activation: the dispatcher's work meanwhile",
        activations,
        &DISPATCHER,
        false,
        activated,
    );
    row(
        "second of idle, per server",
        operations.idle.as_ref(),
        &[Part::Request, Part::Delivery, Part::Background],
        true,
        operations.idle_seconds.max(f64::MIN_POSITIVE),
    );
    rows
}

fn statement_rows(measured: &Measured) -> Vec<Vec<String>> {
    let operations = &measured.operations;
    let phases = [
        (
            "registrations",
            operations.registrations.as_ref(),
            count(operations.registered),
        ),
        (
            "activations",
            operations.activations.as_ref(),
            count(operations.activated),
        ),
        (
            "idle (per s)",
            operations.idle.as_ref(),
            operations.idle_seconds,
        ),
    ];
    let mut rows = Vec::new();
    for (phase, work, per) in phases {
        let Some(work) = work else { continue };
        let per = per.max(f64::MIN_POSITIVE);
        for statement in &work.statements {
            rows.push(vec![
                phase.to_owned(),
                format!("`{}`", statement.name),
                statement.part.label().to_owned(),
                statement.calls.to_string(),
                format!("{:.2}", number(statement.calls) / per),
                format!("{:.2}", number(statement.rows) / per),
                format!("{:.0}", number(statement.wal_bytes) / per),
            ]);
        }
    }
    rows
}

fn load_row(load: &Load) -> Vec<String> {
    let seconds = load.outcome.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let stats = Stats::of(load.outcome.ok.clone());
    let cores = |cpu: f64| format!("{:.2}", cpu / seconds);
    let per_core = if load.postgres_cpu > 0.0 {
        format!("{:.0}", load.outcome.rate() / (load.postgres_cpu / seconds))
    } else {
        "–".to_owned()
    };
    let mib = |pick: fn(&(u64, u64, u64)) -> u64| {
        load.memory
            .iter()
            .map(|memory| format!("{:.1}", number(pick(memory)) / 1024.0))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    vec![
        setup_label(load),
        load.clients.to_string(),
        load.outcome.ok.len().to_string(),
        load.outcome.refused.to_string(),
        load.outcome.odd().to_string(),
        format!("{seconds:.2}"),
        format!("{:.1}", load.outcome.rate()),
        format!("{:.1}", stats.p50.as_secs_f64() * 1000.0),
        format!("{:.1}", stats.p99.as_secs_f64() * 1000.0),
        cores(load.postgres_cpu),
        cores(load.servers_cpu),
        cores(load.driver_cpu),
        cores((load.machine_cpu - load.postgres_cpu - load.servers_cpu - load.driver_cpu).max(0.0)),
        per_core,
        mib(|memory| memory.0),
        mib(|memory| memory.1),
        mib(|memory| memory.2),
    ]
}

fn setup_label(load: &Load) -> String {
    match load.servers {
        0 => "none".to_owned(),
        1 if load.ceiling => "ceiling: 1 server, Argon2 m=8 KiB t=1".to_owned(),
        1 => "1 replica".to_owned(),
        replicas => format!("{replicas} replicas"),
    }
}

fn mail_line(measured: &Measured) -> String {
    let mail = &measured.mail;
    format!(
        "{} addresses got a 201; the mail server received {} emails: {} addresses without \
         one, {} with more than one, {} emails to an address that got no 201 — {}.",
        mail.created,
        mail.messages,
        mail.missing,
        mail.duplicated,
        mail.unexpected,
        if mail.exactly_once() {
            "every email exactly once"
        } else {
            "**not** exactly once"
        }
    )
}

/// A Markdown table.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut text = format!("| {} |\n|", headers.join(" | "));
    for column in 0..headers.len() {
        text.push_str(if column < 2 { "---|" } else { "---:|" });
    }
    text.push('\n');
    for row in rows {
        let _ = writeln!(text, "| {} |", row.join(" | "));
    }
    text
}

#[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn number(value: u64) -> f64 {
    value as f64
}

fn count(value: usize) -> f64 {
    registrar_bench::client::count(value)
}
