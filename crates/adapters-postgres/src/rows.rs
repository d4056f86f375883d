//! Between rows and domain values: how code states are spelled in the schema, and how a loaded
//! row becomes an `Account` or a `ClaimedMail` again. A stored value that the domain refuses is
//! reported as invalid data, never unwrapped.

use std::time::SystemTime;

use registrar_application::{
    TraceContext,
    ports::{ClaimedMail, Lookup, Versioned},
};
use registrar_domain::{
    Account, ActivationCode, CodeDeath, CodeDigest, CodeDigits, CodeId, CodeState, Email,
    PasswordHash, User, UserId, UserStatus,
};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::Failure;

/// The `activation_codes.state` text of a code state.
pub(crate) fn state_text(state: CodeState) -> &'static str {
    match state {
        CodeState::Live => "live",
        CodeState::Used => "used",
        CodeState::Dead(CodeDeath::Replaced) => "replaced",
        CodeState::Dead(CodeDeath::TooManyAttempts) => "too_many_attempts",
        CodeState::Dead(CodeDeath::Undeliverable) => "undeliverable",
    }
}

fn parse_state(text: &str) -> Result<CodeState, Failure> {
    Ok(match text {
        "live" => CodeState::Live,
        "used" => CodeState::Used,
        "replaced" => CodeState::Dead(CodeDeath::Replaced),
        "too_many_attempts" => CodeState::Dead(CodeDeath::TooManyAttempts),
        "undeliverable" => CodeState::Dead(CodeDeath::Undeliverable),
        _ => return Err(Failure::Invalid("unknown code state".into())),
    })
}

/// `value`, unless the conversion or time arithmetic that made it left the range of `what`.
pub(crate) fn in_range<T>(value: Option<T>, what: &str) -> Result<T, Failure> {
    value.ok_or_else(|| Failure::Invalid(format!("{what} out of range")))
}

/// A `u32` count as an `integer` column.
pub(crate) fn to_int(value: u32, what: &str) -> Result<i32, Failure> {
    in_range(i32::try_from(value).ok(), what)
}

fn from_int(value: i32, what: &str) -> Result<u32, Failure> {
    in_range(u32::try_from(value).ok(), what)
}

/// An account's version as its `bigint` column.
pub(crate) fn to_version(version: u64) -> Result<i64, Failure> {
    in_range(i64::try_from(version).ok(), "version")
}

fn email(text: &str) -> Result<Email, Failure> {
    Email::parse(text).map_err(|_| Failure::Invalid("stored email does not parse".into()))
}

/// The columns of an account in a row: what [`account`] reads.
const ACCOUNT_COLUMNS: usize = 13;

/// An account from a row of `ACCOUNT_BY_EMAIL` / `ACCOUNT_BY_ID` (or of [`lookup`]'s statements).
pub(crate) fn account(row: &Row) -> Result<Versioned, Failure> {
    let activated_at: Option<SystemTime> = row.try_get(4)?;
    let hash: String = row.try_get(2)?;
    let user = User::restore(
        UserId::from_uuid(row.try_get(0)?),
        email(row.try_get(1)?)?,
        PasswordHash::from_phc(hash)
            .map_err(|_| Failure::Invalid("stored password hash does not parse".into()))?,
        row.try_get(3)?,
        activated_at.map_or(UserStatus::Pending, |activated_at| UserStatus::Active {
            activated_at,
        }),
    );
    let version: i64 = row.try_get(5)?;
    let version =
        u64::try_from(version).map_err(|_| Failure::Invalid("negative version".into()))?;
    let code = match row.try_get::<_, Option<Uuid>>(6)? {
        None => None,
        Some(id) => {
            let digest: &[u8] = row.try_get(7)?;
            let digest: [u8; 32] = digest
                .try_into()
                .map_err(|_| Failure::Invalid("code digest is not 32 bytes".into()))?;
            Some(ActivationCode::restore(
                CodeId::from_uuid(id),
                CodeDigest::from_bytes(digest),
                row.try_get(8)?,
                row.try_get(9)?,
                from_int(row.try_get(10)?, "wrong attempts")?,
                parse_state(row.try_get(11)?)?,
            ))
        }
    };
    let recent_issues: Vec<SystemTime> = row.try_get(12)?;
    Ok(Versioned {
        account: Account::restore(user, code, recent_issues),
        version,
    })
}

/// What a row of `LOGIN_STATE` or `REGISTRATION_STATE` says: the account's columns first (NULL
/// when none is read), then the end of the window that is closed, if one is.
pub(crate) fn lookup(row: &Row) -> Result<Lookup, Failure> {
    if let Some(until) = row.try_get::<_, Option<SystemTime>>(ACCOUNT_COLUMNS)? {
        return Ok(Lookup::Throttled(until));
    }
    let found = row
        .try_get::<_, Option<Uuid>>(0)?
        .map(|_| account(row))
        .transpose()?;
    Ok(Lookup::Open(found))
}

/// A claimed message from a row of `CLAIM_MAIL`; `None` for a message without its code (which
/// the schema rules out for pending mail, and which would have nothing to send anyway).
pub(crate) fn claimed_mail(row: &Row) -> Result<Option<ClaimedMail>, Failure> {
    let Some(code) = row.try_get::<_, Option<&str>>(4)? else {
        return Ok(None);
    };
    Ok(Some(ClaimedMail {
        id: row.try_get(0)?,
        claim: row.try_get(1)?,
        user_id: UserId::from_uuid(row.try_get(2)?),
        to: email(row.try_get(3)?)?,
        code: CodeDigits::parse(code)
            .map_err(|_| Failure::Invalid("stored code is not four digits".into()))?,
        code_id: CodeId::from_uuid(row.try_get(5)?),
        attempts: from_int(row.try_get(6)?, "attempts")?,
        queued_at: row.try_get(7)?,
        code_alive: row.try_get(8)?,
        // Telemetry only: a context that does not parse costs the delivery its link, not
        // its email.
        trace: row
            .try_get::<_, Option<&str>>(9)?
            .and_then(TraceContext::parse),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_state_round_trips_through_its_text() {
        for state in [
            CodeState::Live,
            CodeState::Used,
            CodeState::Dead(CodeDeath::Replaced),
            CodeState::Dead(CodeDeath::TooManyAttempts),
            CodeState::Dead(CodeDeath::Undeliverable),
        ] {
            assert_eq!(parse_state(state_text(state)).unwrap(), state);
        }
        assert!(parse_state("zombie").is_err());
    }
}
