//! The SMTP mailer: lettre's async SMTP transport on tokio, TLS through rustls only.
//!
//! One email is one SMTP session on a fresh connection (lettre's pool is not used): a session
//! that was cut off half-way by the time-out can never be handed to the next email, and the
//! outbox dispatcher sends one email per registration, so connection reuse would buy little.
//!
//! Time-outs (STYLE.md §2.12): lettre's async transport applies its `timeout` to the TCP
//! connect only (checked in the lettre 0.11.23 source); once connected it would wait for a
//! reply forever. So the whole attempt, from connecting to the server's reply to the message
//! data, also runs under the same deadline, and a server that never answers costs one
//! time-out, reported as transient.

use std::{error::Error as _, fmt, time::Duration};

use lettre::{
    Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp,
};
use registrar_application::ports::{ActivationEmail, MailError, Mailer};
use url::Url;
use uuid::Uuid;

use crate::activation;

/// The sender used when `MAIL_FROM` is not set.
pub const DEFAULT_MAIL_FROM: &str = "Registrar <no-reply@localhost>";
/// The longest one delivery attempt may take when no other time-out is set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The product the activation email names when no other name is set.
pub const DEFAULT_PRODUCT_NAME: &str = "Registrar";

/// What the SMTP mailer needs to know. [`SmtpSettings::new`] fills in the defaults; its
/// `Debug` output hides the password of the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// The mail server, in lettre's URL syntax (`SMTP_URL`): `smtp://host:port` (plain text),
    /// `smtp://host:port?tls=required` (STARTTLS, refusing to go on without it),
    /// `smtp://host:port?tls=opportunistic` (STARTTLS when offered), `smtps://host:port`
    /// (TLS from the first byte); `user:password@` before the host to log in, with characters
    /// such as `@`, `:` and `/` percent-encoded; a path (`smtp://host/name`) sets the name
    /// given in EHLO.
    pub url: String,
    /// The sender's mailbox (`MAIL_FROM`), like `Registrar <no-reply@example.com>` or a bare
    /// address. Default [`DEFAULT_MAIL_FROM`].
    pub from: String,
    /// The longest one delivery attempt may take, from connecting to the server's reply to the
    /// message data; also the TCP connect time-out. Must be more than zero. Default
    /// [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// The product named in the email's subject and body. Default [`DEFAULT_PRODUCT_NAME`].
    pub product_name: String,
}

impl SmtpSettings {
    /// Settings for the mail server at `url`, with the default sender, time-out and product
    /// name.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            from: DEFAULT_MAIL_FROM.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            product_name: DEFAULT_PRODUCT_NAME.to_owned(),
        }
    }

    /// The URL with its password replaced by `***`, fit for logs. A URL that does not parse is
    /// not shown at all (it might hold a password in a place no parser can find).
    #[must_use]
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &self.redacted_url())
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .field("product_name", &self.product_name)
            .finish()
    }
}

/// The URL as given when it holds no password; else its normalised form with the password
/// replaced by `***`; nothing of it when it does not parse.
fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) if parsed.password().is_none() => url.to_owned(),
        Ok(mut parsed) => {
            if parsed.set_password(Some("***")).is_err() {
                return "<a URL whose password cannot be hidden>".to_owned();
            }
            parsed.to_string()
        }
        Err(_) => "<not a valid URL>".to_owned(),
    }
}

/// Why [`SmtpMailer::new`] refused its settings. No variant shows the URL's password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SmtpConfigError {
    /// The URL is not one lettre can send through (bad syntax, unknown scheme or `tls`
    /// value, no host, TLS set-up failed).
    #[error(
        "invalid SMTP URL {url}: {reason} (expected e.g. smtp://127.0.0.1:1025, \
         smtp://user:password@host:587?tls=required or smtps://host:465)"
    )]
    InvalidUrl {
        /// The URL with its password hidden, as [`SmtpSettings::redacted_url`] shows it.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The sender is not a mailbox lettre accepts.
    #[error(
        "invalid sender {from:?}: {reason} (expected an address such as no-reply@example.com \
         or a mailbox such as \"Registrar <no-reply@example.com>\")"
    )]
    InvalidFrom {
        /// The sender as given.
        from: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A zero time-out would fail every delivery.
    #[error("the SMTP time-out must be more than zero")]
    ZeroTimeout,
}

/// Sends the activation email through an SMTP server. Built once at start-up, shared by every
/// delivery; each delivery opens its own connection.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
    product_name: String,
    server: String,
}

impl SmtpMailer {
    /// Checks the settings and builds the mailer. Connects to nothing: a server that is down
    /// shows up later, as transient delivery failures.
    ///
    /// # Errors
    /// [`SmtpConfigError`] when the URL, the sender or the time-out is not usable.
    pub fn new(settings: &SmtpSettings) -> Result<Self, SmtpConfigError> {
        let server = settings.redacted_url();
        if settings.timeout.is_zero() {
            return Err(SmtpConfigError::ZeroTimeout);
        }
        let from: Mailbox =
            settings
                .from
                .trim()
                .parse()
                .map_err(
                    |error: lettre::address::AddressError| SmtpConfigError::InvalidFrom {
                        from: settings.from.clone(),
                        reason: error.to_string(),
                    },
                )?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.url)
            .map_err(|error| SmtpConfigError::InvalidUrl {
                url: server.clone(),
                reason: error
                    .source()
                    .map_or_else(|| error.to_string(), ToString::to_string),
            })?
            .timeout(Some(settings.timeout))
            .build();
        Ok(Self {
            transport,
            from,
            timeout: settings.timeout,
            product_name: settings.product_name.clone(),
            server,
        })
    }

    /// The server's URL with its password hidden, for the start-up log.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The sender every email goes out from, as it appears in the `From` header.
    #[must_use]
    pub fn sender(&self) -> String {
        self.from.to_string()
    }

    /// The longest one delivery attempt may take.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The activation email as a MIME message: multipart/alternative, plain text then HTML.
    fn activation_message(&self, email: &ActivationEmail) -> Result<Message, MailError> {
        let to = recipient(email.to.as_str())?;
        let content = activation::render(
            &self.product_name,
            &email.code.reveal(),
            email.valid_for,
            email.to.as_str(),
        );
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(content.subject)
            .date_now()
            .message_id(Some(format!(
                "<{}@{}>",
                Uuid::new_v4().simple(),
                self.from.email.domain()
            )))
            .multipart(MultiPart::alternative_plain_html(
                content.text,
                content.html,
            ))
            .map_err(|error| {
                MailError::Permanent(format!("the activation email could not be built: {error}"))
            })
    }
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .field("product_name", &self.product_name)
            .finish_non_exhaustive()
    }
}

impl Mailer for SmtpMailer {
    #[tracing::instrument(name = "send activation email", skip_all, fields(server = %self.server))]
    async fn send_activation(&self, email: &ActivationEmail) -> Result<(), MailError> {
        let message = self.activation_message(email)?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(response)) => {
                tracing::debug!(
                    reply = %response.code(),
                    "the mail server accepted the activation email"
                );
                Ok(())
            }
            Ok(Err(error)) => Err(classify(&error)),
            Err(_elapsed) => Err(MailError::Transient(format!(
                "the mail server did not accept the email within {:?}",
                self.timeout
            ))),
        }
    }
}

/// The recipient as lettre's address type. An address lettre refuses will never be sent.
fn recipient(address: &str) -> Result<Address, MailError> {
    address.parse().map_err(|error| {
        MailError::Permanent(format!("the recipient address cannot be sent to: {error}"))
    })
}

/// Sorts a failed delivery: only a 5xx reply says that this message will never be taken.
///
/// Everything else may go away on a later try: 4xx replies, time-outs, refused or dropped
/// connections, TLS failures, garbled replies, and lettre's own refusals after talking to the
/// server (no STARTTLS offered although `tls=required`, no common AUTH mechanism), which are
/// about the server or its configuration rather than about this message. The outbox dispatcher
/// gives up after a bounded number of tries either way.
///
/// The text is lettre's description of the failure and the server's reply; the message body,
/// and so the code, never appears in it.
fn classify(error: &smtp::Error) -> MailError {
    // 53x replies (530, 534, 535, 538) are about authentication: the relay's credentials, an
    // operator's fix, not this email. Retried, the email goes out once the fix is deployed.
    let authentication = error
        .status()
        .is_some_and(|code| code.category == smtp::response::Category::Unspecified3);
    if authentication {
        MailError::Transient(format!("the mail server refused our credentials: {error}"))
    } else if error.is_permanent() {
        MailError::Permanent(format!("the mail server refused the email: {error}"))
    } else if error.is_transient() {
        MailError::Transient(format!("the mail server deferred the email: {error}"))
    } else if error.is_timeout() {
        MailError::Transient(format!("timed out talking to the mail server: {error}"))
    } else {
        MailError::Transient(format!("could not deliver to the mail server: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_lettre_refuses_is_a_permanent_failure() {
        let error = recipient("not an address").unwrap_err();
        assert!(matches!(error, MailError::Permanent(_)), "{error:?}");
    }

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(
            redact("smtp://ada:s3cret@mail.example.com:587?tls=required"),
            "smtp://ada:***@mail.example.com:587?tls=required"
        );
        assert_eq!(redact("smtp://127.0.0.1:1025"), "smtp://127.0.0.1:1025");
        assert_eq!(redact("smtp://"), "smtp://");
        assert_eq!(redact("smtp//ada:s3cret@host"), "<not a valid URL>");
        assert_eq!(
            redact("smtps://ada%40example.com:p%40ss@mail.example.com"),
            "smtps://ada%40example.com:***@mail.example.com"
        );
    }
}
