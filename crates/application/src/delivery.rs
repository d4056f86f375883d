//! Delivering the outbox: claim due messages under a lease, send them, and record the outcome:
//! the code becomes usable when the mail server accepts its email; transient failures are
//! retried with exponential backoff and jitter, per message, up to a bound. `Dispatcher::run`
//! is the schedule (wake-ups, polling, hourly pruning, the outbox gauge); the binary only
//! starts it.

use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, stream::FuturesUnordered};
use registrar_domain::CodePolicy;
use tokio::sync::watch;
use tracing::Instrument;

use crate::{
    DispatchSignal, ErrorChain,
    ports::{
        ActivationEmail, ClaimedMail, Clock, Entropy, MailError, MailOutcome, Mailer, Pruned,
        Store, StoreError, Traces,
    },
};

/// How the dispatcher retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// How long a claim lasts; a message whose claimer died is retried after it.
    pub lease: Duration,
    /// Most messages claimed at once, and most sends in flight at once.
    pub batch: usize,
    /// Tries before giving up.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles with each try.
    pub base_backoff: Duration,
    /// Longest delay between tries.
    pub max_backoff: Duration,
    /// Give up on a message this long after it was queued, whatever its tries.
    pub max_age: Duration,
    /// Keep a settled message this long after it was queued, for inspection; then prune it.
    pub retention: Duration,
    /// Erase an account still pending this long after its last registration or takeover.
    pub pending_retention: Duration,
    /// How often the store is pruned (the first time at start-up).
    pub prune_interval: Duration,
    /// Least time from one claim to the next when a wake-up (not a full claim) calls for it.
    /// Under a stream of registrations the mail queued meanwhile is then claimed together, one
    /// statement for several emails rather than one each; an email waits at most this long
    /// more, and one queued after a quiet spell not at all.
    pub batch_window: Duration,
    /// How long the outcome of a send waits for others to be recorded with it. Nobody waits
    /// on a record (the code of an email being sent is already accepted, and claims go on
    /// meanwhile), so this is longer than [`Self::batch_window`]: under a stream of
    /// registrations the outcomes of several claims make one statement.
    pub record_window: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            batch: 32,
            max_attempts: 12,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_mins(5),
            max_age: Duration::from_hours(1),
            retention: Duration::from_hours(7 * 24),
            pending_retention: Duration::from_hours(7 * 24),
            prune_interval: Duration::from_hours(1),
            batch_window: Duration::from_millis(20),
            record_window: Duration::from_millis(100),
        }
    }
}

impl DeliveryPolicy {
    /// The delay after the `attempt`-th failed try: `base · 2^(attempt−1)`, capped, with
    /// "equal jitter" (a uniform draw from the upper half), so retries of many messages spread.
    #[must_use]
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let full = self
            .base_backoff
            .saturating_mul(1 << exponent)
            .min(self.max_backoff);
        full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

/// What one round of delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Accepted by the mail server.
    pub sent: usize,
    /// Failed this time, to be retried.
    pub retried: usize,
    /// Given up on.
    pub failed: usize,
    /// Not sent because their code died.
    pub cancelled: usize,
}

impl DeliveryReport {
    /// Messages handled in the round.
    #[must_use]
    pub fn handled(&self) -> usize {
        self.sent + self.retried + self.failed + self.cancelled
    }

    /// Counts `outcomes`.
    fn add(&mut self, outcomes: &[MailOutcome]) {
        for outcome in outcomes {
            match outcome {
                MailOutcome::Sent { .. } => self.sent += 1,
                MailOutcome::Retry { .. } => self.retried += 1,
                MailOutcome::Failed { .. } => self.failed += 1,
                MailOutcome::Cancelled => self.cancelled += 1,
            }
        }
    }
}

/// Sends that ended, waiting for their outcomes to be recorded together.
#[derive(Default)]
struct Ended {
    sends: Vec<(ClaimedMail, Attempt)>,
    /// When to record them: the record window after the first ended, or at once when nothing
    /// more is worth waiting for.
    record_at: Option<tokio::time::Instant>,
}

impl Ended {
    /// Adds a send that ended; `more` says whether another may still end and join it. A
    /// record holds at most `policy.batch` outcomes.
    fn push(&mut self, send: (ClaimedMail, Attempt), policy: &DeliveryPolicy, more: bool) {
        let now = tokio::time::Instant::now();
        self.sends.push(send);
        let due = if more && self.sends.len() < policy.batch {
            self.record_at.unwrap_or(now + policy.record_window)
        } else {
            now
        };
        self.record_at = Some(due);
    }

    /// The sends to record now, leaving none.
    fn take(&mut self) -> Vec<(ClaimedMail, Attempt)> {
        self.record_at = None;
        std::mem::take(&mut self.sends)
    }
}

/// Waits until `at` (not at all once it has come, not even for the timer's next tick), or
/// forever when there is no `at`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) if at <= tokio::time::Instant::now() => {}
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One message's send: what became of it, and the email and span it was sent in, for when its
/// outcome is recorded.
struct Attempt {
    span: tracing::Span,
    email: ActivationEmail,
    outcome: MailOutcome,
}

/// The outbox delivery use case.
pub struct Dispatcher<S, M, C, E, T> {
    store: S,
    mailer: M,
    clock: C,
    entropy: E,
    traces: T,
    codes: CodePolicy,
    policy: DeliveryPolicy,
}

impl<S, M, C, E, T> Dispatcher<S, M, C, E, T>
where
    S: Store,
    M: Mailer,
    C: Clock,
    E: Entropy,
    T: Traces,
{
    /// A dispatcher over these ports.
    pub fn new(
        store: S,
        mailer: M,
        clock: C,
        entropy: E,
        traces: T,
        codes: CodePolicy,
        policy: DeliveryPolicy,
    ) -> Self {
        Self {
            store,
            mailer,
            clock,
            entropy,
            traces,
            codes,
            policy,
        }
    }

    /// Claims the messages due now, sends them concurrently and records every outcome: one
    /// round of what [`Self::run`] does continuously, for a caller that drives delivery itself.
    pub async fn deliver_due(&self) -> Result<DeliveryReport, StoreError> {
        let mut sending: FuturesUnordered<_> = self
            .claim(self.policy.batch)
            .await?
            .into_iter()
            .map(|mail| self.send(mail))
            .collect();
        let mut report = DeliveryReport::default();
        let mut failure = None;
        // A store error is reported once the sends in flight have ended, not by abandoning
        // them halfway through a conversation with the mail server.
        self.drain(
            &mut sending,
            &mut Ended::default(),
            |recorded| match recorded {
                Ok(outcomes) => report.add(&outcomes),
                Err(error) => {
                    failure.get_or_insert(error);
                }
            },
        )
        .await;
        failure.map_or(Ok(report), Err)
    }

    /// Claims up to `limit` messages due now.
    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedMail>, StoreError> {
        self.store
            .claim_mail(self.clock.now(), self.policy.lease, limit)
            .await
    }

    /// Sends `mail`, yielding it with what became of it.
    async fn send(&self, mail: ClaimedMail) -> (ClaimedMail, Attempt) {
        let attempt = self.attempt(&mail).await;
        (mail, attempt)
    }

    /// Records the outcomes of the sends `ended` in one store call. Returns the outcomes.
    async fn record(
        &self,
        ended: Vec<(ClaimedMail, Attempt)>,
    ) -> Result<Vec<MailOutcome>, StoreError> {
        let settled: Vec<_> = ended
            .iter()
            .map(|(mail, attempt)| (mail, &attempt.outcome))
            .collect();
        let recorded = self.store.finish_mail(&settled).await?;
        for ((_, attempt), recorded) in ended.iter().zip(recorded) {
            if recorded && matches!(attempt.outcome, MailOutcome::Sent { .. }) {
                self.mailer
                    .delivery_recorded(&attempt.email)
                    .instrument(attempt.span.clone())
                    .await;
            }
        }
        Ok(ended
            .into_iter()
            .map(|(_, attempt)| attempt.outcome)
            .collect())
    }

    /// Messages waiting to be sent.
    pub async fn depth(&self) -> Result<u64, StoreError> {
        self.store.outbox_depth().await
    }

    /// Deletes settled messages older than the retention, throttle windows that are over and
    /// accounts left pending past their retention, so no table grows without bound.
    pub async fn prune(&self) -> Result<Pruned, StoreError> {
        let now = self.clock.now();
        let before = |retention| now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        self.store
            .prune(
                now,
                before(self.policy.retention),
                before(self.policy.pending_retention),
            )
            .await
    }

    /// Sends one claimed email (unless its code died), in a span that starts a trace of its
    /// own and links to the request that queued the email.
    async fn attempt(&self, mail: &ClaimedMail) -> Attempt {
        let span = tracing::info_span!(
            "deliver activation email",
            user_id = %mail.user_id,
            attempt = mail.attempts
        );
        if let Some(trace) = mail.trace {
            self.traces.link(&span, trace);
        }
        let email = ActivationEmail {
            to: mail.to.clone(),
            code: mail.code,
            valid_for: self.codes.ttl(),
        };
        let outcome = async {
            let outcome = if mail.code_alive {
                let result = self.mailer.send_activation(&email).await;
                self.outcome(mail, result)
            } else {
                MailOutcome::Cancelled
            };
            match &outcome {
                MailOutcome::Sent { .. } => {
                    metrics::counter!("registrar_emails_sent_total").increment(1);
                }
                MailOutcome::Retry { error, .. } => {
                    tracing::warn!(%error, "activation email not accepted; will retry");
                    metrics::counter!("registrar_email_attempts_failed_total").increment(1);
                }
                MailOutcome::Failed { error } => {
                    tracing::error!(%error, "gave up on an activation email");
                    metrics::counter!("registrar_emails_failed_total").increment(1);
                }
                MailOutcome::Cancelled => {
                    metrics::counter!("registrar_emails_cancelled_total").increment(1);
                }
            }
            outcome
        }
        .instrument(span.clone())
        .await;
        Attempt {
            span,
            email,
            outcome,
        }
    }

    fn outcome(&self, mail: &ClaimedMail, result: Result<(), MailError>) -> MailOutcome {
        let now = self.clock.now();
        match result {
            Ok(()) => MailOutcome::Sent { accepted_at: now },
            Err(error @ MailError::Permanent(_)) => MailOutcome::Failed {
                error: ErrorChain(&error).to_string(),
            },
            Err(error @ MailError::Transient(_)) => {
                let error = ErrorChain(&error).to_string();
                let next_attempt_at = now + self.policy.backoff(mail.attempts, self.entropy.unit());
                let too_old = next_attempt_at
                    .duration_since(mail.queued_at)
                    .unwrap_or_default()
                    > self.policy.max_age;
                if mail.attempts >= self.policy.max_attempts || too_old {
                    MailOutcome::Failed {
                        error: format!("gave up after {} tries: {error}", mail.attempts),
                    }
                } else {
                    MailOutcome::Retry {
                        next_attempt_at,
                        error,
                    }
                }
            }
        }
    }

    /// Delivers due email whenever `signal` wakes it (mail queued in this process) or every
    /// `poll`, keeps the `registrar_outbox_depth` gauge (counted at most once per `poll`), and
    /// prunes every [`DeliveryPolicy::prune_interval`] (first at start-up), until `stop` holds
    /// `true`; the sends in flight then end and are recorded.
    ///
    /// Up to [`DeliveryPolicy::batch`] sends are in flight at once, and it claims while they
    /// are: a slow send (a mail server that takes its time over one message) holds up neither
    /// the mail queued after it nor the record of the others.
    ///
    /// Under a stream of registrations this loop is part of the cost of every one, so it asks
    /// the store for no more than the work needs: it claims again at once only after a full
    /// claim (a shorter one means nothing else was due, and mail queued meanwhile has left a
    /// wake-up); a wake-up within [`DeliveryPolicy::batch_window`] of the last claim waits
    /// for the window's end, so the mail of several registrations makes one claim; the outcomes
    /// of sends that end within [`DeliveryPolicy::record_window`] of each other make one
    /// record, while claims and sends go on; and it counts the outbox for the gauge on a timer
    /// rather than after every claim.
    pub async fn run(
        &self,
        signal: DispatchSignal,
        poll: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let now = tokio::time::Instant::now();
        let (mut next_prune, mut next_count, mut next_poll) = (now, now, now + poll);
        // When to claim next, if a claim is called for: at once at start-up.
        let mut claim_at = Some(now);
        let mut last_claim = now;
        let mut sending = FuturesUnordered::new();
        let mut ended = Ended::default();
        while !*stop.borrow() {
            let room = self.policy.batch.saturating_sub(sending.len());
            tokio::select! {
                () = sleep_until_some(claim_at), if room > 0 => {
                    last_claim = tokio::time::Instant::now();
                    next_poll = last_claim + poll;
                    claim_at = match self.claim(room).await {
                        Ok(claimed) => {
                            let full = claimed.len() == room;
                            sending.extend(claimed.into_iter().map(|mail| self.send(mail)));
                            // A full claim: more may be due.
                            full.then_some(last_claim)
                        }
                        Err(error) => {
                            tracing::warn!(
                                error = %ErrorChain(&error),
                                "could not claim outbox messages"
                            );
                            None
                        }
                    };
                }
                Some(send) = sending.next(), if !sending.is_empty() => {
                    ended.push(send, &self.policy, true);
                }
                () = sleep_until_some(ended.record_at) => {
                    report_failure(self.record(ended.take()).await);
                }
                () = signal.notified() => {
                    let paced = last_claim + self.policy.batch_window;
                    claim_at = Some(claim_at.map_or(paced, |at| at.min(paced)));
                }
                () = tokio::time::sleep_until(next_poll) => {
                    next_poll = tokio::time::Instant::now() + poll;
                    claim_at = Some(tokio::time::Instant::now());
                }
                changed = stop.changed() => if changed.is_err() {
                    break;
                },
            }
            if tokio::time::Instant::now() >= next_count {
                if let Ok(depth) = self.depth().await {
                    #[allow(
                        clippy::cast_precision_loss,
                        reason = "a gauge; exact above 2^53 messages does not matter"
                    )]
                    metrics::gauge!("registrar_outbox_depth").set(depth as f64);
                }
                next_count = tokio::time::Instant::now() + poll;
            }
            if tokio::time::Instant::now() >= next_prune {
                self.prune_and_report().await;
                next_prune = tokio::time::Instant::now() + self.policy.prune_interval;
            }
        }
        self.drain(&mut sending, &mut ended, report_failure).await;
    }

    /// Lets the sends in `sending` end and records their outcomes, with those already in
    /// `ended`: the outcomes of sends that end within [`DeliveryPolicy::record_window`] of
    /// each other together, and at once when no send is left to wait for. Hands each record's
    /// result to `recorded`.
    ///
    /// Not to be cancelled: the outcomes taken from `sending` would be lost.
    async fn drain<F>(
        &self,
        sending: &mut FuturesUnordered<F>,
        ended: &mut Ended,
        mut recorded: impl FnMut(Result<Vec<MailOutcome>, StoreError>),
    ) where
        F: Future<Output = (ClaimedMail, Attempt)>,
    {
        if sending.is_empty() && !ended.sends.is_empty() {
            ended.record_at = Some(tokio::time::Instant::now());
        }
        loop {
            tokio::select! {
                Some(send) = sending.next(), if !sending.is_empty() => {
                    let more = !sending.is_empty();
                    ended.push(send, &self.policy, more);
                }
                () = sleep_until_some(ended.record_at), if ended.record_at.is_some() => {
                    recorded(self.record(ended.take()).await);
                }
                else => break,
            }
        }
    }

    /// One prune, logged and counted; a failure waits for the next one.
    async fn prune_and_report(&self) {
        match self.prune().await {
            Ok(pruned) => {
                metrics::counter!("registrar_pruned_total", "what" => "mail")
                    .increment(pruned.mail);
                metrics::counter!("registrar_pruned_total", "what" => "throttles")
                    .increment(pruned.throttles);
                metrics::counter!("registrar_pruned_total", "what" => "pending_accounts")
                    .increment(pruned.pending_accounts);
                if pruned != Pruned::default() {
                    tracing::info!(
                        mail = pruned.mail,
                        throttles = pruned.throttles,
                        pending_accounts = pruned.pending_accounts,
                        "pruned settled mail, throttle windows that are over and abandoned accounts"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "could not prune the store");
            }
        }
    }
}

/// Logs a record that failed: its messages stay claimed and are retried when their lease runs
/// out.
fn report_failure(recorded: Result<Vec<MailOutcome>, StoreError>) {
    if let Err(error) = recorded {
        tracing::warn!(
            error = %ErrorChain(&error),
            "could not record what became of outbox messages; they are retried when their \
             lease runs out"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let policy = DeliveryPolicy::default();
        assert_eq!(policy.backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(policy.backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(policy.backoff(4, 1.0), Duration::from_secs(8));
        assert_eq!(policy.backoff(20, 1.0), Duration::from_mins(5));
        assert_eq!(policy.backoff(u32::MAX, 0.0), Duration::from_secs(150));
    }
}
