//! The OpenAPI 3 document and Swagger UI. paperclip derives the paths, operations and body
//! schemas from the handlers; this module adds what it cannot express: the problem+json error
//! responses of each operation, Basic security, headers, and the documentation routes.

use actix_web::{HttpResponse, http::header, web};
use serde_json::{Value, json};

use registrar_domain::{Email, PasswordPolicy};

use crate::error::{PROBLEM_JSON, Problem};

/// The finished OpenAPI document, served at `/openapi.json`.
pub(crate) struct ApiDoc(String);

/// What can go wrong with any request that reaches a use case.
const USE_CASE: [Problem; 4] = [
    Problem::TooManyRequests,
    Problem::Overloaded,
    Problem::Unavailable,
    Problem::Internal,
];

/// What can go wrong with reading a JSON body.
const BODY: [Problem; 4] = [
    Problem::MalformedRequest,
    Problem::PayloadTooLarge,
    Problem::UnsupportedMediaType,
    Problem::ValidationFailed,
];

/// The error responses of each operation: (path, method, problems of its own, whether it reads a
/// body, whether it runs a use case).
const OPERATION_ERRORS: &[(&str, &str, &[Problem], bool, bool)] = &[
    ("/v1/users", "post", &[Problem::EmailTaken], true, true),
    ("/v1/users/me", "get", &[Problem::Unauthorized], false, true),
    (
        "/v1/users/me",
        "delete",
        &[Problem::Unauthorized],
        false,
        true,
    ),
    (
        "/v1/users/me/activation",
        "post",
        &[
            Problem::WrongActivationCode,
            Problem::Unauthorized,
            Problem::AlreadyActive,
            Problem::ActivationCodeExpired,
        ],
        true,
        true,
    ),
    (
        "/v1/users/me/activation-code",
        "post",
        &[Problem::Unauthorized, Problem::AlreadyActive],
        false,
        true,
    ),
    ("/readyz", "get", &[Problem::Unavailable], false, false),
];

/// Every problem an operation can answer with, each once, in [`Problem::ALL`] order.
fn operation_problems(own: &[Problem], body: bool, use_case: bool) -> Vec<Problem> {
    Problem::ALL
        .into_iter()
        .filter(|problem| {
            own.contains(problem)
                || (body && BODY.contains(problem))
                || (use_case && USE_CASE.contains(problem))
        })
        .collect()
}

const DESCRIPTION: &str = "Sign up with email and password, get a 4-digit code by email, \
activate within a minute. Errors are RFC 9457 problem details (`application/problem+json`) whose \
`type` ends with a stable slug. Every response carries `X-Request-Id`. Request bodies over 16 KiB \
are refused with 413; unknown routes answer 404 and wrong methods 405 with `Allow`. A 503 \
`overloaded` is sent at once while refusals are few; when they come faster than three per hash \
time per password-hashing thread (the time the pool measures, as it changes: 75 a second for one \
thread hashing in 40 ms, 200 at 15 ms), after a burst of two seconds' worth, each waits its turn, \
at most 1 s, so that clients resending without heeding `Retry-After` cannot take the CPU that \
admitted requests are hashed with.";

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details. `title` is fixed per `type`; `detail` explains this occurrence.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": { "type": "string", "description": "A URI reference ending with the problem's slug.", "example": "/problems/email-taken",
                "enum": Problem::ALL.iter().map(|problem| format!("/problems/{}", problem.slug())).collect::<Vec<_>>() },
            "title": { "type": "string" },
            "status": { "type": "integer", "format": "int32" },
            "detail": { "type": "string" },
            "errors": { "type": "array", "description": "validation-failed: one entry per problem.",
                "items": { "$ref": "#/components/schemas/FieldError" } },
            "attempts_remaining": { "type": "integer", "format": "int32", "description": "wrong-activation-code: wrong attempts left for this code." },
            "reason": { "type": "string", "enum": ["expired", "too_many_attempts"], "description": "activation-code-expired: why there is no usable code." },
            "retry_after_seconds": { "type": "integer", "format": "int64", "description": "429 and 503: the Retry-After value." }
        }
    })
}

fn field_error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["field", "code", "message"],
        "properties": {
            "field": { "type": "string", "example": "password" },
            "code": { "type": "string", "description": "required, invalid, too_long (email); required, too_short, too_long, too_weak, contains_email (password); required, invalid_format (code).", "example": "too_weak" },
            "message": { "type": "string" }
        }
    })
}

/// An example document for one problem type, with the members that type carries.
fn problem_example(problem: Problem) -> Value {
    let mut value = json!({
        "type": format!("/problems/{}", problem.slug()),
        "title": problem.title(),
        "status": problem.status().as_u16(),
        "detail": "What went wrong with this request.",
    });
    match problem {
        Problem::ValidationFailed => {
            value["errors"] = json!([{ "field": "password", "code": "too_short",
                "message": "the password must be at least 8 characters long" }]);
        }
        Problem::WrongActivationCode => value["attempts_remaining"] = json!(3),
        Problem::ActivationCodeExpired => value["reason"] = json!("expired"),
        Problem::TooManyRequests | Problem::Overloaded | Problem::Unavailable => {
            value["retry_after_seconds"] = json!(30);
        }
        Problem::MalformedRequest
        | Problem::Unauthorized
        | Problem::NotFound
        | Problem::MethodNotAllowed
        | Problem::EmailTaken
        | Problem::AlreadyActive
        | Problem::PayloadTooLarge
        | Problem::UnsupportedMediaType
        | Problem::Internal => {}
    }
    json!({ "summary": problem.title(), "value": value })
}

/// The response of one status, listing the problems of that status.
fn error_response(problems: &[Problem]) -> Value {
    let titles: Vec<String> = problems
        .iter()
        .map(|problem| format!("`{}` ({})", problem.slug(), problem.title()))
        .collect();
    let examples: serde_json::Map<String, Value> = problems
        .iter()
        .map(|problem| (problem.slug().to_owned(), problem_example(*problem)))
        .collect();
    let mut response = json!({
        "description": titles.join("; "),
        "content": { PROBLEM_JSON: {
            "schema": { "$ref": "#/components/schemas/Problem" },
            "examples": examples,
        } }
    });
    let mut headers = serde_json::Map::new();
    if problems.iter().any(|problem| problem.retries()) {
        headers.insert("Retry-After".into(), json!({ "description": "Seconds to wait before retrying.", "schema": { "type": "integer" } }));
    }
    if problems.contains(&Problem::Unauthorized) {
        headers.insert(
            "WWW-Authenticate".into(),
            json!({ "schema": { "type": "string", "example": crate::error::BASIC_CHALLENGE } }),
        );
    }
    if !headers.is_empty() {
        response["headers"] = Value::Object(headers);
    }
    response
}

/// Adds what the Rust types cannot say: which members are required, their formats and limits.
fn refine_schemas(schemas: &mut Value) {
    let register = &mut schemas["RegisterUserBody"];
    register["required"] = json!(["email", "password"]);
    register["properties"]["email"]["format"] = json!("email");
    register["properties"]["email"]["maxLength"] = json!(Email::MAX_LEN);
    register["properties"]["email"]["example"] = json!("ada@example.com");
    register["properties"]["password"]["format"] = json!("password");
    register["properties"]["password"]["minLength"] = json!(PasswordPolicy::MIN_LEN);
    register["properties"]["password"]["maxLength"] = json!(PasswordPolicy::MAX_LEN);
    register["properties"]["password"]["example"] = json!("correct horse battery staple");
    let activation = &mut schemas["ActivationBody"];
    activation["required"] = json!(["code"]);
    activation["properties"]["code"]["pattern"] = json!("^[0-9]{4}$");
    activation["properties"]["code"]["example"] = json!("0421");
    let user = &mut schemas["UserBody"]["properties"];
    user["id"]["format"] = json!("uuid");
    user["email"]["format"] = json!("email");
    user["created_at"]["format"] = json!("date-time");
    user["activated_at"]["format"] = json!("date-time");
    user["activated_at"]["nullable"] = json!(true);
    schemas["UserBody"]["required"] =
        json!(["id", "email", "status", "created_at", "activated_at"]);
    schemas["UserBody"]["example"] = user_example(false);
    schemas["CodeIssuedBody"]["example"] =
        json!({ "expires_in_seconds": 60, "resend_after_seconds": 30 });
}

/// An example user, pending or active.
fn user_example(active: bool) -> Value {
    json!({
        "id": "0193a1f2-7c4e-7d3a-9b1e-5f2c8d4e6a10",
        "email": "ada@example.com",
        "status": if active { "active" } else { "pending" },
        "created_at": "2026-11-21T15:40:00.123Z",
        "activated_at": if active { json!("2026-11-21T15:40:31.456Z") } else { Value::Null },
    })
}

/// Completes paperclip's generated document.
pub(crate) fn finish(mut spec: Value) -> ApiDoc {
    spec["openapi"] = json!("3.0.3");
    spec["info"] = json!({
        "title": "Registrar",
        "version": env!("CARGO_PKG_VERSION"),
        "description": DESCRIPTION,
    });
    spec["components"]["schemas"]["Problem"] = problem_schema();
    spec["components"]["schemas"]["FieldError"] = field_error_schema();
    spec["components"]["securitySchemes"]["basicAuth"] = json!({
        "type": "http", "scheme": "basic",
        "description": "email:password. Failures are throttled per account and per client address (429)."
    });
    for (path, method, own, body, use_case) in OPERATION_ERRORS {
        let operation = &mut spec["paths"][*path][*method];
        if own.contains(&Problem::Unauthorized) {
            operation["security"] = json!([{ "basicAuth": [] }]);
        }
        let problems = operation_problems(own, *body, *use_case);
        let mut statuses: Vec<_> = problems.iter().map(|problem| problem.status()).collect();
        statuses.dedup();
        for status in statuses {
            let of_status: Vec<Problem> = problems
                .iter()
                .copied()
                .filter(|problem| problem.status() == status)
                .collect();
            operation["responses"][status.as_str()] = error_response(&of_status);
        }
    }
    refine_schemas(&mut spec["components"]["schemas"]);
    spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"] = json!({
        "text/plain; version=0.0.4": { "schema": { "type": "string" },
            "example": "registrar_emails_sent_total 42\n" }
    });
    spec["paths"]["/v1/users/me/activation"]["post"]["responses"]["200"]["content"]["application/json"]
        ["example"] = user_example(true);
    spec["paths"]["/v1/users"]["post"]["responses"]["201"]["headers"] = json!({
        "Location": { "description": "The new account's resource.", "schema": { "type": "string", "example": "/v1/users/me" } }
    });
    spec["paths"]["/openapi.json"] = json!({ "get": {
        "operationId": "openapi", "tags": ["Documentation"], "summary": "This OpenAPI 3 document",
        "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } } }
    }});
    spec["paths"]["/docs"] = json!({ "get": {
        "operationId": "docs", "tags": ["Documentation"], "summary": "Swagger UI on this document",
        "responses": { "200": { "description": "OK", "content": { "text/html": { "schema": { "type": "string" } } } } }
    }});
    ApiDoc(spec.to_string())
}

pub(crate) async fn openapi_json(doc: web::Data<ApiDoc>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}

const DOCS_HTML: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Registrar API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script>window.ui = SwaggerUIBundle({ url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true });</script>
</body>
</html>
"##;

/// `/docs/` sends browsers to `/docs`, where the page's relative links resolve.
pub(crate) async fn docs_slash() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs"))
        .finish()
}

pub(crate) async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DOCS_HTML)
}

const ONE_DAY: (header::HeaderName, &str) = (header::CACHE_CONTROL, "public, max-age=86400");

pub(crate) async fn swagger_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(ONE_DAY)
        .body(&include_bytes!("../assets/swagger-ui/swagger-ui.css")[..])
}

pub(crate) async fn swagger_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(ONE_DAY)
        .body(&include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js")[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_documented_where_it_can_occur() {
        let schema = problem_schema();
        let types = &schema["properties"]["type"]["enum"];
        for problem in Problem::ALL {
            let uri = json!(format!("/problems/{}", problem.slug()));
            assert!(
                types.as_array().is_some_and(|types| types.contains(&uri)),
                "{problem:?}"
            );
            let on_an_operation = OPERATION_ERRORS.iter().any(|(_, _, own, body, use_case)| {
                operation_problems(own, *body, *use_case).contains(&problem)
            });
            // Routing answers these for any path, so no one operation lists them.
            let routing = matches!(problem, Problem::NotFound | Problem::MethodNotAllowed);
            assert_eq!(on_an_operation, !routing, "{problem:?}");
        }
    }
}
