//! The SMTP mailer: lettre's async SMTP client on tokio, TLS through rustls only.
//!
//! One email is one SMTP session on a fresh connection: a session that was cut off half-way by
//! the time-out can never be handed to the next email, and the outbox dispatcher sends one email
//! per registration, so connection reuse would buy little.
//!
//! The mailer opens the TCP connection itself, with `TCP_NODELAY` set, and hands it to lettre's
//! [`AsyncSmtpConnection`]; it then does what lettre's `AsyncSmtpTransport` does on the
//! connection (checked in the lettre 0.11.23 source): STARTTLS when `tls=required` (failing when
//! the server offers none) or when `tls=opportunistic` and offered, TLS from the first byte for
//! `smtps://`, AUTH PLAIN or LOGIN when the URL holds a password, the email, then QUIT whose
//! outcome is ignored. lettre's transport leaves Nagle's algorithm on, and lettre writes the
//! message data and the closing `.` line as two writes: with Nagle on, the second waits for the
//! server's (delayed) ACK of the first, about 40 ms on every email.
//!
//! Time-outs (every network call is bounded): the TCP connect to each address of the host is bounded by the
//! time-out, and the whole attempt, from connecting to the server's reply to the message data,
//! runs under the same deadline, so a server that never answers costs one time-out, reported as
//! transient.

use std::{
    error::Error as _,
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

#[expect(
    deprecated,
    reason = "AsyncNetworkStream is lettre's only way to run its TLS set-up on our own socket"
)]
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::{
    Address, Message,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        self,
        authentication::{Credentials, DEFAULT_MECHANISMS},
        client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters},
        extension::ClientId,
        response::Response,
    },
};
use registrar_application::ports::{ActivationEmail, MailError, Mailer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
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
    endpoint: Endpoint,
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
        let endpoint =
            Endpoint::parse(&settings.url).map_err(|reason| SmtpConfigError::InvalidUrl {
                url: server.clone(),
                reason,
            })?;
        Ok(Self {
            endpoint,
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
            .map_err(|error| MailError::Permanent(Box::new(SendFailure::Build(error))))
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
        match tokio::time::timeout(self.timeout, self.deliver(&message)).await {
            Ok(Ok(response)) => {
                tracing::debug!(
                    reply = %response.code(),
                    "the mail server accepted the activation email"
                );
                Ok(())
            }
            Ok(Err(Failure::Smtp(error))) => Err(classify(error)),
            Ok(Err(Failure::Connect(error))) => {
                Err(MailError::Transient(Box::new(SendFailure::Connect(error))))
            }
            Err(_elapsed) => Err(MailError::Transient(Box::new(SendFailure::Deadline(
                self.timeout,
            )))),
        }
    }
}

impl SmtpMailer {
    /// One SMTP session, as lettre's `AsyncSmtpTransport` (without its pool) runs it, on a socket
    /// with `TCP_NODELAY` set. Returns the server's reply to the message data.
    async fn deliver(&self, message: &Message) -> Result<Response, Failure> {
        let endpoint = &self.endpoint;
        let tcp = connect(&endpoint.host, endpoint.port, self.timeout)
            .await
            .map_err(Failure::Connect)?;
        let stream: Box<dyn AsyncTokioStream> = match &endpoint.tls {
            Tls::Implicit(parameters) => {
                Box::new(ImplicitTls::handshake(tcp, parameters.clone()).await?)
            }
            Tls::None | Tls::Required(_) | Tls::Opportunistic(_) => Box::new(tcp),
        };
        let hello = &endpoint.hello_name;
        let mut connection = AsyncSmtpConnection::connect_with_transport(stream, hello).await?;
        match &endpoint.tls {
            Tls::Opportunistic(parameters) if connection.can_starttls() => {
                connection.starttls(parameters.clone(), hello).await?;
            }
            // Fails, before any MAIL, when the server does not offer STARTTLS.
            Tls::Required(parameters) => connection.starttls(parameters.clone(), hello).await?,
            Tls::None | Tls::Opportunistic(_) | Tls::Implicit(_) => {}
        }
        if let Some(credentials) = &endpoint.credentials {
            connection.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        let response = connection
            .send(message.envelope(), &message.formatted())
            .await?;
        // QUIT and close; the server has taken the email, so how QUIT goes does not matter.
        connection.abort().await;
        Ok(response)
    }
}

/// Why a delivery attempt failed before the deadline.
#[derive(Debug)]
enum Failure {
    /// No TCP connection to any address of the server.
    Connect(io::Error),
    /// lettre's report: TLS, the SMTP conversation, or the server's reply.
    Smtp(smtp::Error),
}

impl From<smtp::Error> for Failure {
    fn from(error: smtp::Error) -> Self {
        Self::Smtp(error)
    }
}

/// Where and how to talk SMTP, read from the URL as lettre's `from_url` reads it.
#[derive(Clone)]
struct Endpoint {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    hello_name: ClientId,
}

/// How the connection is encrypted.
#[derive(Clone)]
enum Tls {
    /// Plain text (`smtp://` without `tls`).
    None,
    /// STARTTLS, or no email (`tls=required`).
    Required(TlsParameters),
    /// STARTTLS when the server offers it (`tls=opportunistic`).
    Opportunistic(TlsParameters),
    /// TLS from the first byte (`smtps://`).
    Implicit(TlsParameters),
}

impl Endpoint {
    /// Mirrors lettre 0.11.23's `from_connection_url`: the default port by mode (25, 587, 465),
    /// the path as the EHLO name, credentials only when a password is given (percent-decoded).
    /// The error is the reason, without the URL.
    fn parse(url: &str) -> Result<Self, String> {
        let url = Url::parse(url).map_err(|error| error.to_string())?;
        let tls_parameter = url
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value.into_owned());
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| "smtp host undefined".to_owned())?
            .to_owned();
        let parameters = || {
            TlsParameters::new(host.clone()).map_err(|error| {
                error
                    .source()
                    .map_or_else(|| error.to_string(), ToString::to_string)
            })
        };
        let (default_port, tls) = match (url.scheme(), tls_parameter.as_deref()) {
            ("smtp", None) => (smtp::SMTP_PORT, Tls::None),
            ("smtp", Some("required")) => (smtp::SUBMISSION_PORT, Tls::Required(parameters()?)),
            ("smtp", Some("opportunistic")) => {
                (smtp::SUBMISSION_PORT, Tls::Opportunistic(parameters()?))
            }
            ("smtps", _) => (smtp::SUBMISSIONS_PORT, Tls::Implicit(parameters()?)),
            (scheme, tls) => {
                return Err(format!(
                    "Unknown scheme '{scheme}' or tls parameter '{tls:?}'"
                ));
            }
        };
        let hello_name = if url.path().len() > 1 {
            ClientId::Domain(url.path().trim_matches('/').to_owned())
        } else {
            ClientId::default()
        };
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(
                percent_decode(url.username())?,
                percent_decode(password)?,
            )),
            None => None,
        };
        Ok(Self {
            port: url.port().unwrap_or(default_port),
            host,
            tls,
            credentials,
            hello_name,
        })
    }
}

/// Undoes the URL's percent-encoding of a user name or password.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded)
        .map_err(|_| "the user name or password is not UTF-8 once decoded".to_owned())
}

/// Connects to the first address of `host` that answers, each try bounded by `timeout` (as
/// lettre does), and turns Nagle's algorithm off on the socket.
pub(crate) async fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let mut last_error = None;
    for address in tokio::net::lookup_host((host, port)).await? {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(error)) => last_error = Some(error),
            Err(_elapsed) => {
                last_error = Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection timed out",
                ));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "could not resolve to any supported address",
        )
    }))
}

/// A TLS session on our own socket, set up by lettre (rustls, with the `TlsParameters` it
/// would use for `smtps://`), in the tokio stream form lettre's connection takes.
#[derive(Debug)]
#[expect(deprecated, reason = "see the import of AsyncNetworkStream")]
struct ImplicitTls(AsyncNetworkStream);

#[expect(deprecated, reason = "see the import of AsyncNetworkStream")]
impl ImplicitTls {
    async fn handshake(tcp: TcpStream, parameters: TlsParameters) -> Result<Self, smtp::Error> {
        let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
        stream.upgrade_tls(parameters).await?;
        Ok(Self(stream))
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        match futures_util::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, unfilled) {
            Poll::Ready(Ok(read)) => {
                buf.advance(read);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures_util::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_util::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_util::io::AsyncWrite::poll_close(Pin::new(&mut self.0), cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}

/// The recipient as lettre's address type. An address lettre refuses will never be sent.
fn recipient(address: &str) -> Result<Address, MailError> {
    address
        .parse()
        .map_err(|error| MailError::Permanent(Box::new(SendFailure::Recipient(error))))
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
fn classify(error: smtp::Error) -> MailError {
    // 53x replies (530, 534, 535, 538) are about authentication: the relay's credentials, an
    // operator's fix, not this email. Retried, the email goes out once the fix is deployed.
    let authentication = error
        .status()
        .is_some_and(|code| code.category == smtp::response::Category::Unspecified3);
    if authentication {
        MailError::Transient(Box::new(SendFailure::Credentials(error)))
    } else if error.is_permanent() {
        MailError::Permanent(Box::new(SendFailure::Refused(error)))
    } else if error.is_transient() {
        MailError::Transient(Box::new(SendFailure::Deferred(error)))
    } else if error.is_timeout() {
        MailError::Transient(Box::new(SendFailure::TimedOut(error)))
    } else {
        MailError::Transient(Box::new(SendFailure::Delivery(error)))
    }
}

/// Why an email was not sent, as the port's error carries it, with lettre's error (or the
/// socket's) as its source.
#[derive(Debug, thiserror::Error)]
enum SendFailure {
    #[error("the activation email could not be built")]
    Build(#[source] lettre::error::Error),
    #[error("the recipient address cannot be sent to")]
    Recipient(#[source] lettre::address::AddressError),
    #[error("the mail server refused our credentials")]
    Credentials(#[source] smtp::Error),
    #[error("the mail server refused the email")]
    Refused(#[source] smtp::Error),
    #[error("the mail server deferred the email")]
    Deferred(#[source] smtp::Error),
    #[error("timed out talking to the mail server")]
    TimedOut(#[source] smtp::Error),
    #[error("could not deliver to the mail server")]
    Delivery(#[source] smtp::Error),
    #[error("could not deliver to the mail server: Connection error")]
    Connect(#[source] io::Error),
    #[error("the mail server did not accept the email within {0:?}")]
    Deadline(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_to_the_mail_server_has_nagle_turned_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();

        let stream = connect("127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap();

        assert!(stream.nodelay().unwrap());
    }

    #[test]
    fn the_url_is_read_as_lettre_reads_it() {
        let plain = Endpoint::parse("smtp://127.0.0.1:1025/registrar.example.com").unwrap();
        assert_eq!((plain.host.as_str(), plain.port), ("127.0.0.1", 1025));
        assert!(matches!(plain.tls, Tls::None));
        assert!(plain.credentials.is_none());
        assert_eq!(
            plain.hello_name,
            ClientId::Domain("registrar.example.com".to_owned())
        );

        let required =
            Endpoint::parse("smtp://ada%40example.com:p%40ss@mail.example.com?tls=required")
                .unwrap();
        assert_eq!(required.port, 587);
        assert!(matches!(required.tls, Tls::Required(_)));
        assert_eq!(
            required.credentials,
            Some(Credentials::new(
                "ada@example.com".to_owned(),
                "p@ss".to_owned()
            ))
        );
        assert_eq!(required.hello_name, ClientId::default());

        let opportunistic = Endpoint::parse("smtp://mail.example.com?tls=opportunistic").unwrap();
        assert_eq!(opportunistic.port, 587);
        assert!(matches!(opportunistic.tls, Tls::Opportunistic(_)));

        let implicit = Endpoint::parse("smtps://ada@mail.example.com").unwrap();
        assert_eq!(implicit.port, 465);
        assert!(matches!(implicit.tls, Tls::Implicit(_)));
        assert!(implicit.credentials.is_none(), "no password, no AUTH");

        assert_eq!(Endpoint::parse("smtp://mail.example.com").unwrap().port, 25);
        assert!(Endpoint::parse("smtp://").is_err());
    }

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
