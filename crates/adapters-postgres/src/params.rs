//! The parameters of the save and settle statements, by name. Each statement's `$n` order is
//! written once, in the `params` method of the struct it takes, beside the statement's number;
//! the statements in `sql.rs` name these structs instead of listing positions.

use std::time::SystemTime;

use registrar_application::ports::{AccountChange, ClaimedMail, MailOutcome, QueuedMail};
use registrar_domain::{ActivationCode, CodeState, User, UserStatus};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::{
    error::Failure,
    rows::{state_text, to_int, to_version},
};

/// One bound parameter.
pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

/// The user's columns as a save writes them.
pub(crate) struct UserColumns {
    email: String,
    email_key: String,
    password_hash: String,
    created_at: SystemTime,
    activated_at: Option<SystemTime>,
}

impl UserColumns {
    fn new(user: &User) -> Self {
        Self {
            email: user.email().as_str().to_owned(),
            email_key: user.email().key(),
            password_hash: user.password_hash().as_str().to_owned(),
            created_at: user.created_at(),
            activated_at: match user.status() {
                UserStatus::Pending => None,
                UserStatus::Active { activated_at } => Some(activated_at),
            },
        }
    }
}

/// The account's current code and the mail to queue, each NULL when absent: the parameters of
/// `code_and_mail!` (`$1`–`$13`), shared by `REGISTER`, `SAVE_ACCOUNT` and `SAVE_CODE_AND_MAIL`.
pub(crate) struct CodeAndMail {
    user_id: Uuid,
    code_id: Option<Uuid>,
    digest: Option<Vec<u8>>,
    issued_at: Option<SystemTime>,
    delivered_at: Option<SystemTime>,
    wrong_attempts: Option<i32>,
    state: Option<&'static str>,
    mail_id: Option<Uuid>,
    mail_code_id: Option<Uuid>,
    recipient: Option<String>,
    mail_code: Option<String>,
    queued_at: Option<SystemTime>,
    trace_context: Option<String>,
}

impl CodeAndMail {
    fn new(
        user: &User,
        code: Option<&ActivationCode>,
        mail: Option<&QueuedMail>,
    ) -> Result<Self, Failure> {
        Ok(Self {
            user_id: user.id().as_uuid(),
            code_id: code.map(|c| c.id().as_uuid()),
            digest: code.map(|c| c.digest().as_bytes().to_vec()),
            issued_at: code.map(ActivationCode::issued_at),
            delivered_at: code.and_then(ActivationCode::delivered_at),
            wrong_attempts: code
                .map(|c| to_int(c.wrong_attempts(), "wrong attempts"))
                .transpose()?,
            state: code.map(|c| state_text(c.state())),
            mail_id: mail.map(|m| m.id),
            mail_code_id: mail.map(|m| m.code_id.as_uuid()),
            recipient: mail.map(|m| m.to.as_str().to_owned()),
            mail_code: mail.map(|m| m.code.reveal()),
            queued_at: mail.map(|m| m.queued_at),
            trace_context: mail.and_then(|m| m.trace).map(|trace| trace.to_string()),
        })
    }

    /// Whether the code to write is live (a new code, or a live one with a wrong guess counted).
    pub(crate) fn writes_live_code(&self) -> bool {
        self.state == Some(state_text(CodeState::Live))
    }

    /// `$1`–`$13` of `code_and_mail!`.
    pub(crate) fn params(&self) -> [Param<'_>; 13] {
        self.params_with(&self.code_id, &self.mail_id)
    }

    /// [`Self::params`] with no code id and no mail id: the statement writes neither.
    fn params_writing_nothing(&self) -> [Param<'_>; 13] {
        self.params_with(&None::<Uuid>, &None::<Uuid>)
    }

    fn params_with<'a>(&'a self, code_id: Param<'a>, mail_id: Param<'a>) -> [Param<'a>; 13] {
        [
            code_id,
            &self.user_id,
            &self.digest,
            &self.issued_at,
            &self.delivered_at,
            &self.wrong_attempts,
            &self.state,
            mail_id,
            &self.mail_code_id,
            &self.recipient,
            &self.mail_code,
            &self.queued_at,
            &self.trace_context,
        ]
    }
}

/// One save, ready to bind: a new account (`REGISTER`) or an existing one at its expected
/// version (`SAVE_ACCOUNT`; when it writes a live code, without it and then
/// `SAVE_CODE_AND_MAIL`).
pub(crate) struct AccountWrite {
    pub(crate) user: UserColumns,
    pub(crate) code_and_mail: CodeAndMail,
    /// `None` for a new account.
    pub(crate) expected_version: Option<i64>,
}

impl AccountWrite {
    pub(crate) fn new(change: &AccountChange) -> Result<Self, Failure> {
        let user = change.account.user();
        Ok(Self {
            user: UserColumns::new(user),
            code_and_mail: CodeAndMail::new(user, change.account.code(), change.mail.as_ref())?,
            expected_version: change.expected_version.map(to_version).transpose()?,
        })
    }

    /// `REGISTER`: `$1`–`$13` of `code_and_mail!` (`$2` is the user's id), then `$14` email,
    /// `$15` email key, `$16` password hash, `$17` created at, `$18` activated at.
    pub(crate) fn register_params(&self) -> [Param<'_>; 18] {
        self.with_user(self.code_and_mail.params())
    }

    /// `SAVE_ACCOUNT`, the whole save: [`Self::register_params`], then `$19` the expected
    /// version, `$20` the current code id, `$21` its state as saved.
    pub(crate) fn save_params<'a>(&'a self, version: &'a i64) -> [Param<'a>; 21] {
        self.at_version(&self.register_params(), version)
    }

    /// `SAVE_ACCOUNT` without the code and the mail (`$1` and `$8` NULL): the first statement of
    /// a save that writes a live code, `SAVE_CODE_AND_MAIL` being the second.
    pub(crate) fn save_user_params<'a>(&'a self, version: &'a i64) -> [Param<'a>; 21] {
        self.at_version(
            &self.with_user(self.code_and_mail.params_writing_nothing()),
            version,
        )
    }

    /// `code_and_mail`, then the user's columns (`$14`–`$18`).
    fn with_user<'a>(&'a self, code_and_mail: [Param<'a>; 13]) -> [Param<'a>; 18] {
        let user = &self.user;
        joined(
            code_and_mail,
            [
                &user.email,
                &user.email_key,
                &user.password_hash,
                &user.created_at,
                &user.activated_at,
            ],
        )
    }

    /// `register`, then the version check and the current code (`$19`–`$21`).
    fn at_version<'a>(&'a self, register: &[Param<'a>; 18], version: &'a i64) -> [Param<'a>; 21] {
        joined(
            *register,
            [
                version,
                &self.code_and_mail.code_id,
                &self.code_and_mail.state,
            ],
        )
    }
}

/// `first`, then `then`: one statement's parameters from the lists it shares with another.
fn joined<'a, const A: usize, const B: usize, const N: usize>(
    first: [Param<'a>; A],
    then: [Param<'a>; B],
) -> [Param<'a>; N] {
    const { assert!(A + B == N, "the joined lists must fill the result exactly") };
    std::array::from_fn(|i| if i < A { first[i] } else { then[i - A] })
}

/// Claimed messages and their outcomes, one array element per message: the
/// parameters of `FINISH_MAIL` (`$1`–`$5`).
pub(crate) struct Settlements<'a> {
    ids: Vec<Uuid>,
    claims: Vec<Uuid>,
    outcomes: Vec<&'static str>,
    times: Vec<Option<SystemTime>>,
    errors: Vec<Option<&'a str>>,
}

impl<'a> Settlements<'a> {
    pub(crate) fn new(settled: &[(&ClaimedMail, &'a MailOutcome)]) -> Self {
        let mut columns = Self {
            ids: Vec::with_capacity(settled.len()),
            claims: Vec::with_capacity(settled.len()),
            outcomes: Vec::with_capacity(settled.len()),
            times: Vec::with_capacity(settled.len()),
            errors: Vec::with_capacity(settled.len()),
        };
        for (mail, outcome) in settled {
            let (name, time, error) = match outcome {
                MailOutcome::Sent { accepted_at } => ("sent", Some(*accepted_at), None),
                MailOutcome::Retry {
                    next_attempt_at,
                    error,
                } => ("retry", Some(*next_attempt_at), Some(error.as_str())),
                MailOutcome::Failed { error } => ("failed", None, Some(error.as_str())),
                MailOutcome::Cancelled => ("cancelled", None, None),
            };
            columns.ids.push(mail.id);
            columns.claims.push(mail.claim);
            columns.outcomes.push(name);
            columns.times.push(time);
            columns.errors.push(error);
        }
        columns
    }

    /// Whether each message, in the order given, is among the ids the statement settled.
    pub(crate) fn recorded(&self, settled: &[Uuid]) -> Vec<bool> {
        self.ids.iter().map(|id| settled.contains(id)).collect()
    }

    pub(crate) fn params(&self) -> [Param<'_>; 5] {
        [
            &self.ids,
            &self.claims,
            &self.outcomes,
            &self.times,
            &self.errors,
        ]
    }
}
