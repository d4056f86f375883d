//! `/v1/users`: register, who am I, activate, new code, erase.

use paperclip::actix::{AcceptedJson, api_v2_operation, web::Data, web::Json};
use registrar_application::Accounts;

use crate::{
    ApiError,
    dto::{ActivationBody, CodeIssuedBody, RegisterUserBody, UserBody},
    extract::{BasicAuth, ClientIp, JsonBody},
    reply::{Created, NoContent},
};

/// Where the authenticated user's own resource lives.
const ME: &str = "/v1/users/me";

/// Register an account
#[api_v2_operation(
    operation_id = "register",
    tags(Users),
    summary = "Register an account",
    description = "Creates a pending account and queues an email with a 4-digit activation code. A pending account whose code has expired or died is taken over by the new registration (same id, new password, new code); new-code limits apply to takeovers too (429). When the password-hashing pool could not start the request's hash within the queue timeout (the work queued ahead of it, at the hash time the pool measures, spread over its threads), or its queue is at its hard cap, the request is refused with 503 `overloaded` and a `Retry-After` estimated from the queued work, before its body is validated, and without waiting for the queue (at the pace of refusals the API description gives).",
    consumes = "application/json",
    produces = "application/json"
)]
pub(crate) async fn register<A: Accounts>(
    accounts: Data<A>,
    client: ClientIp,
    body: JsonBody<RegisterUserBody>,
) -> Result<Created<UserBody>, ApiError> {
    // Under overload, turn the request away before the strength estimate. The estimate, half a
    // millisecond of CPU, runs on the hashing threads: on this worker a burst of registrations
    // would hold up every other request behind it, health probes included.
    accounts.check_capacity()?;
    let body = body.into_inner()?;
    let policy = *accounts.password_policy();
    let registration = accounts
        .parse_off_loop(move || body.try_into_domain(&policy))
        .await??;
    let user = accounts.register(registration, client.0).await?;
    Ok(Created::at(ME, UserBody::from(&user)))
}

/// Who am I
#[api_v2_operation(
    operation_id = "getMe",
    tags(Users),
    summary = "Who am I",
    description = "The authenticated account, pending or active.",
    produces = "application/json"
)]
pub(crate) async fn me<A: Accounts>(
    accounts: Data<A>,
    client: ClientIp,
    auth: BasicAuth,
) -> Result<Json<UserBody>, ApiError> {
    let who = accounts
        .authenticate(auth.into_credentials(), client.0)
        .await?;
    Ok(Json(UserBody::from(who.user())))
}

/// Activate the account
#[api_v2_operation(
    operation_id = "activate",
    tags(Users),
    summary = "Activate the account with the emailed code",
    description = "Checks, in order: credentials (401), code format (422), already active (409), a usable code (410, `reason`: `expired` or `too_many_attempts`), the code itself (400 with `attempts_remaining`). A code is usable from the moment the mail server accepted its email, for the configured TTL (60 s by default); while its email is being sent, the right code is accepted too (holding it proves the email arrived); a guess at a code whose email is not being sent yet counts as wrong. The 5th wrong attempt kills the code.",
    consumes = "application/json",
    produces = "application/json"
)]
pub(crate) async fn activate<A: Accounts>(
    accounts: Data<A>,
    client: ClientIp,
    auth: BasicAuth,
    body: JsonBody<ActivationBody>,
) -> Result<Json<UserBody>, ApiError> {
    let who = accounts
        .authenticate(auth.into_credentials(), client.0)
        .await?;
    let code = body.into_inner()?.try_into_code()?;
    let user = accounts.activate(&who, code).await?;
    Ok(Json(UserBody::from(&user)))
}

/// Issue a new activation code
#[api_v2_operation(
    operation_id = "issueActivationCode",
    tags(Users),
    summary = "Send a new activation code",
    description = "Issues a fresh code and queues its email; the previous code dies. Takes no body. At most one code per 30 s per account (the registration's own included) and 10 per 24 h (429 with Retry-After).",
    produces = "application/json"
)]
pub(crate) async fn issue_code<A: Accounts>(
    accounts: Data<A>,
    client: ClientIp,
    auth: BasicAuth,
) -> Result<AcceptedJson<CodeIssuedBody>, ApiError> {
    let who = accounts
        .authenticate(auth.into_credentials(), client.0)
        .await?;
    let issued = accounts.issue_code(&who).await?;
    Ok(AcceptedJson(CodeIssuedBody::from(issued)))
}

/// Erase the account
#[api_v2_operation(
    operation_id = "deleteMe",
    tags(Users),
    summary = "Erase the account",
    description = "Erases the authenticated account, pending or active, at once: its codes and its queued activation email go with it, and the address can be registered again. Afterwards the same credentials answer 401. An activation email already being handed to the mail server at that moment may still arrive; its code can no longer be used. Throttled like every authenticated route (429)."
)]
pub(crate) async fn delete_me<A: Accounts>(
    accounts: Data<A>,
    client: ClientIp,
    auth: BasicAuth,
) -> Result<NoContent, ApiError> {
    let who = accounts
        .authenticate(auth.into_credentials(), client.0)
        .await?;
    accounts.delete(&who).await?;
    Ok(NoContent)
}
