//! Registrar's outbound mail adapters, both implementing the application's `Mailer` port:
//!
//! - [`SmtpMailer`] delivers the activation email over SMTP (lettre, rustls only), configured
//!   from an [`SmtpSettings`] (`SMTP_URL`, `MAIL_FROM`, a time-out and the product name), and
//!   sorts failures into transient (worth retrying) and permanent ones.
//! - [`LogMailer`] "sends" the activation email by writing the address and the code to the
//!   log: the zero-setup default for local development, and the only place a code ever reaches
//!   a log.
#![forbid(unsafe_code)]

mod activation;
mod smtp;

pub use smtp::{
    DEFAULT_MAIL_FROM, DEFAULT_PRODUCT_NAME, DEFAULT_TIMEOUT, SmtpConfigError, SmtpMailer,
    SmtpSettings,
};

use registrar_application::ports::{ActivationEmail, MailError, Mailer};

/// Writes each activation email to the log as one event, and counts it as accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogMailer;

impl Mailer for LogMailer {
    /// Accepted at once; the code is shown by [`Mailer::delivery_recorded`], once it works.
    async fn send_activation(&self, _email: &ActivationEmail) -> Result<(), MailError> {
        Ok(())
    }

    async fn delivery_recorded(&self, email: &ActivationEmail) {
        tracing::info!(
            to = %email.to,
            code = %email.code.reveal(),
            valid_for_seconds = email.valid_for.as_secs(),
            "activation email (log mailer: not sent anywhere)"
        );
    }
}

/// The mailer a deployment chose: SMTP when `SMTP_URL` is set, the log otherwise.
#[derive(Debug, Clone)]
pub enum AnyMailer {
    /// Codes go to the log.
    Log(LogMailer),
    /// Codes go out by email.
    Smtp(Box<SmtpMailer>),
}

impl Mailer for AnyMailer {
    async fn send_activation(&self, email: &ActivationEmail) -> Result<(), MailError> {
        match self {
            Self::Log(mailer) => mailer.send_activation(email).await,
            Self::Smtp(mailer) => mailer.send_activation(email).await,
        }
    }

    async fn delivery_recorded(&self, email: &ActivationEmail) {
        match self {
            Self::Log(mailer) => mailer.delivery_recorded(email).await,
            Self::Smtp(mailer) => mailer.delivery_recorded(email).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use registrar_domain::{CodeDigits, Email};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[tokio::test]
    async fn the_code_and_address_go_to_the_log_in_one_event_once_delivery_is_recorded() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(captured.clone())
            .finish();
        let email = ActivationEmail {
            to: Email::parse("ada@example.com").unwrap(),
            code: CodeDigits::parse("0421").unwrap(),
            valid_for: Duration::from_mins(1),
        };
        let _guard = tracing::subscriber::set_default(subscriber);
        LogMailer.send_activation(&email).await.unwrap();
        assert!(
            captured.0.lock().unwrap().is_empty(),
            "the code was shown before its delivery was recorded"
        );
        LogMailer.delivery_recorded(&email).await;

        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 1, "{output}");
        assert!(lines[0].contains(r#""to":"ada@example.com""#), "{output}");
        assert!(lines[0].contains(r#""code":"0421""#), "{output}");
    }
}
