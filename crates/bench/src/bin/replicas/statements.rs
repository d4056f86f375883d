//! What the database did during a phase: `pg_stat_statements` (executions, rows and WAL bytes per
//! statement text) and the WAL position, each statement named after the store's operation and
//! put in the part of the work it belongs to (the request, the email's delivery, or the
//! dispatcher's background).

use registrar_bench::postgres::query;

/// The part of the work a statement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Part {
    /// Sent while answering the HTTP request (loads, saves, throttles, transaction control).
    Request,
    /// Sent by the dispatcher for one email: the claim and its settlement.
    Delivery,
    /// Sent on a schedule whatever the traffic: the outbox gauge, pruning, pings.
    Background,
}

impl Part {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Delivery => "delivery",
            Self::Background => "background",
        }
    }
}

/// One statement text over a phase.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    /// The store's name for it, or the start of its text.
    pub(crate) name: String,
    pub(crate) part: Part,
    /// Executions: each one round trip, or less when the driver pipelines two.
    pub(crate) calls: u64,
    /// Rows returned or changed.
    pub(crate) rows: u64,
    /// WAL the executions wrote.
    pub(crate) wal_bytes: u64,
}

/// The database's counters at the start of a phase.
pub(crate) struct Mark {
    wal: u64,
}

/// The statements of a phase and the WAL the whole cluster wrote during it.
pub(crate) struct Work {
    /// By name, the largest number of executions first.
    pub(crate) statements: Vec<Statement>,
    /// `pg_current_wal_lsn()` after minus before: every record, commit records included.
    pub(crate) wal_bytes: u64,
}

impl Work {
    /// Executions, rows and WAL bytes of the statements of the parts `parts`.
    pub(crate) fn sum(&self, parts: &[Part]) -> (u64, u64, u64) {
        self.statements
            .iter()
            .filter(|statement| parts.contains(&statement.part))
            .fold((0, 0, 0), |(calls, rows, wal), statement| {
                (
                    calls + statement.calls,
                    rows + statement.rows,
                    wal + statement.wal_bytes,
                )
            })
    }
}

/// Zeroes `pg_stat_statements` and notes the WAL position.
pub(crate) fn start(url: &str) -> Result<Mark, String> {
    query(url, "SELECT pg_stat_statements_reset()")?;
    Ok(Mark {
        wal: wal_position(url)?,
    })
}

/// What happened since `mark`: the statements of the database of `url`, without the ones this
/// program sent to measure.
pub(crate) fn since(url: &str, mark: &Mark) -> Result<Work, String> {
    let wal = wal_position(url)?;
    let text = query(
        url,
        "SELECT s.calls, s.rows, s.wal_bytes, regexp_replace(s.query, '\\s+', ' ', 'g')
         FROM pg_stat_statements AS s JOIN pg_database AS d ON d.oid = s.dbid
         WHERE d.datname = current_database()
           AND s.query NOT LIKE '%pg_stat_statements%'
           AND s.query NOT LIKE '%pg_current_wal_lsn%'",
    )?;
    let mut statements: Vec<Statement> = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let statement = parse(line).ok_or_else(|| format!("unexpected row: {line:?}"))?;
        // Texts that differ only in constants or spacing share a name: one row each.
        match statements
            .iter_mut()
            .find(|known| known.name == statement.name)
        {
            Some(known) => {
                known.calls += statement.calls;
                known.rows += statement.rows;
                known.wal_bytes += statement.wal_bytes;
            }
            None => statements.push(statement),
        }
    }
    statements.sort_by(|a, b| (a.part, b.calls).cmp(&(b.part, a.calls)));
    Ok(Work {
        statements,
        wal_bytes: wal.saturating_sub(mark.wal),
    })
}

fn wal_position(url: &str) -> Result<u64, String> {
    let text = query(url, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")?;
    text.trim()
        .parse()
        .map_err(|_| format!("not a WAL position: {text:?}"))
}

/// `calls \t rows \t wal_bytes \t query`.
fn parse(line: &str) -> Option<Statement> {
    let mut fields = line.splitn(4, '\t');
    let calls = fields.next()?.parse().ok()?;
    let rows = fields.next()?.parse().ok()?;
    let wal_bytes = fields.next()?.parse().ok()?;
    let text = fields.next()?.trim();
    let (name, part) = identify(text);
    Some(Statement {
        name,
        part,
        calls,
        rows,
        wal_bytes,
    })
}

/// The store's operations by a phrase only their statement has (crates/adapters-postgres,
/// `sql.rs`), as `pg_stat_statements` shows it: constants, quoted texts included, become `$n`.
/// The first match wins.
const KNOWN: [(&str, &str, Part); 15] = [
    ("saved_user AS", "save (account)", Part::Request),
    ("WITH new_user AS", "register (new account)", Part::Request),
    ("saved_code AS", "save (code and mail)", Part::Request),
    ("claimed AS", "claim_mail", Part::Delivery),
    ("AS o(id, claim, outcome", "finish_mail", Part::Delivery),
    (
        "count(*) FROM email_outbox",
        "outbox_depth",
        Part::Background,
    ),
    ("DELETE FROM email_outbox", "prune (mail)", Part::Background),
    (
        "DELETE FROM throttles",
        "prune (throttles)",
        Part::Background,
    ),
    (
        "activated_at IS NULL AND created_at <",
        "prune (pending accounts)",
        Part::Background,
    ),
    // Counts a hit too: named before `throttle_hit`, whose phrase it contains.
    ("refused AS (", "registration_state", Part::Request),
    ("INSERT INTO throttles", "throttle_hit", Part::Request),
    ("JOIN throttles AS t", "login_state", Part::Request),
    ("WHERE u.email_key =", "account_by_email", Part::Request),
    ("WHERE u.id =", "account_by_id", Part::Request),
    ("lease_until > $2", "mail_being_sent", Part::Request),
];

/// The name and part of a statement text.
fn identify(text: &str) -> (String, Part) {
    if let Some((_, name, part)) = KNOWN.iter().find(|(phrase, _, _)| text.contains(phrase)) {
        return ((*name).to_owned(), *part);
    }
    let upper = text.trim().to_ascii_uppercase();
    match upper.as_str() {
        "SELECT 1" | "SELECT $1" => ("ping".to_owned(), Part::Background),
        "BEGIN" | "START TRANSACTION" | "COMMIT" | "ROLLBACK" => (upper.clone(), Part::Request),
        _ => (text.chars().take(60).collect(), Part::Request),
    }
}

#[cfg(test)]
mod tests {
    use super::{Part, identify, parse};

    #[test]
    fn the_store_s_statements_are_named_and_put_where_they_belong() {
        let claim = "WITH due AS ( SELECT id FROM email_outbox WHERE status = 'pending' ) , \
                     claimed AS ( UPDATE email_outbox AS o SET lease_until = $2 ) SELECT 1";
        assert_eq!(identify(claim), ("claim_mail".to_owned(), Part::Delivery));
        assert_eq!(
            identify("SELECT count(*) FROM email_outbox WHERE status = 'pending'"),
            ("outbox_depth".to_owned(), Part::Background)
        );
        assert_eq!(identify("begin"), ("BEGIN".to_owned(), Part::Request));
        let finish = "WITH outcome AS ( SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS o(id, \
                      claim, outcome, at, error) ), settled AS ( UPDATE email_outbox AS m SET \
                      lease_until = NULL ) SELECT id FROM settled";
        assert_eq!(identify(finish), ("finish_mail".to_owned(), Part::Delivery));
        let save = "WITH saved_user AS ( UPDATE users SET version = version + 1 ), cancelled \
                    AS ( UPDATE email_outbox AS o SET status = 'cancelled' ) SELECT 1";
        assert_eq!(identify(save), ("save (account)".to_owned(), Part::Request));
        assert_eq!(identify("SELECT now()").1, Part::Request);
    }

    #[test]
    fn a_row_of_psql_becomes_a_statement_and_garbage_does_not() {
        let statement = parse("12\t3\t4096\tCOMMIT").unwrap();
        assert_eq!(
            (statement.calls, statement.rows, statement.wal_bytes),
            (12, 3, 4096)
        );
        assert_eq!(statement.name, "COMMIT");
        assert!(parse("twelve\t3\t4096\tCOMMIT").is_none());
        assert!(parse("12\t3").is_none());
    }
}
