//! `/openapi.json` and `/docs`: an OpenAPI 3 description of every route with its bodies, error
//! responses and Basic security, and Swagger UI on it.

use actix_web::{http::StatusCode, test::TestRequest};
use serde_json::Value;

use crate::helpers::TestApp;

/// Every operation of the contract: a route and a method.
const ROUTES: &[(&str, &str)] = &[
    ("/v1/users", "post"),
    ("/v1/users/me", "get"),
    ("/v1/users/me", "delete"),
    ("/v1/users/me/activation", "post"),
    ("/v1/users/me/activation-code", "post"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/openapi.json", "get"),
    ("/docs", "get"),
];

/// The routes that take Basic credentials.
const AUTHENTICATED: &[(&str, &str)] = &[
    ("/v1/users/me", "get"),
    ("/v1/users/me", "delete"),
    ("/v1/users/me/activation", "post"),
    ("/v1/users/me/activation-code", "post"),
];

/// The error statuses each operation can answer with, per the contract.
const ERRORS: &[(&str, &str, &[u16])] = &[
    ("/v1/users", "post", &[400, 409, 413, 415, 422, 429, 503]),
    ("/v1/users/me", "get", &[401, 429, 503]),
    ("/v1/users/me", "delete", &[401, 429, 503]),
    (
        "/v1/users/me/activation",
        "post",
        &[400, 401, 409, 410, 413, 415, 422, 429, 503],
    ),
    (
        "/v1/users/me/activation-code",
        "post",
        &[401, 409, 429, 503],
    ),
    ("/readyz", "get", &[503]),
];

async fn document(app: &TestApp) -> Value {
    app.send(TestRequest::get().uri("/openapi.json"))
        .await
        .json_with(StatusCode::OK)
}

/// Follows a local `$ref`, if `schema` is one.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("non-local $ref {reference}"));
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {reference}"))
        }
        None => schema,
    }
}

fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not described");
    operation
}

/// The schema of a response's (or request body's) content of `media_type`.
fn content_schema<'a>(doc: &'a Value, holder: &'a Value, media_type: &str) -> &'a Value {
    let schema = &holder["content"][media_type]["schema"];
    assert!(schema.is_object(), "no {media_type} schema in {holder}");
    resolve(doc, schema)
}

fn property_names(schema: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties in {schema}"))
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}

fn collect_refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                match (key.as_str(), member) {
                    ("$ref", Value::String(reference)) => found.push(reference),
                    _ => collect_refs(member, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, found)),
        _ => {}
    }
}

#[actix_web::test]
async fn openapi_json_is_an_openapi_3_document() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let doc = document(&app).await;

    // Assert
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());
    assert!(doc["info"]["version"].is_string());
    assert!(doc.get("swagger").is_none(), "a Swagger 2 leftover");
}

#[actix_web::test]
async fn openapi_describes_every_route_of_the_contract_with_its_method() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let doc = document(&app).await;

    // Assert
    for (path, method) in ROUTES {
        let operation = operation(&doc, path, method);
        assert!(operation["responses"].is_object(), "{method} {path}");
        let mut methods: Vec<&str> = doc["paths"][path]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected: Vec<&str> = ROUTES
            .iter()
            .filter(|(other, _)| other == path)
            .map(|(_, method)| *method)
            .collect();
        methods.sort_unstable();
        expected.sort_unstable();
        assert_eq!(methods, expected, "{path} lists other methods");
    }
}

#[actix_web::test]
async fn openapi_documents_the_error_responses_as_problem_json() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let doc = document(&app).await;

    // Assert
    for (path, method, statuses) in ERRORS {
        let responses = &operation(&doc, path, method)["responses"];
        for status in *statuses {
            let response = &responses[status.to_string()];
            assert!(
                response.is_object(),
                "{method} {path} does not document {status}"
            );
            let problem = content_schema(&doc, response, "application/problem+json");
            for member in ["type", "title", "status", "detail"] {
                assert!(
                    problem["properties"][member].is_object(),
                    "{member} in {problem}"
                );
            }
            assert_eq!(problem["properties"]["detail"]["type"], "string");
            if matches!(status, 429 | 503) {
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{method} {path} {status}: no Retry-After"
                );
            }
            if *status == 401 {
                assert!(
                    response["headers"]["WWW-Authenticate"].is_object(),
                    "{method} {path}: no WWW-Authenticate"
                );
            }
        }
    }
}

#[actix_web::test]
async fn openapi_puts_basic_auth_on_the_me_routes_only() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let doc = document(&app).await;

    // Assert
    let scheme = &doc["components"]["securitySchemes"]["basicAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(
        scheme["scheme"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("basic")
    );
    for (path, method) in ROUTES {
        let security = &operation(&doc, path, method)["security"];
        let basic = security
            .as_array()
            .is_some_and(|requirements| requirements.iter().any(|r| r.get("basicAuth").is_some()));
        assert_eq!(
            basic,
            AUTHENTICATED.contains(&(path, method)),
            "{method} {path}: {security}"
        );
    }
}

#[actix_web::test]
async fn openapi_has_schemas_for_the_request_bodies() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let doc = document(&app).await;

    // Assert
    let register = &operation(&doc, "/v1/users", "post")["requestBody"];
    let schema = content_schema(&doc, register, "application/json");
    assert_eq!(property_names(schema), vec!["email", "password"]);
    assert_eq!(schema["properties"]["email"]["type"], "string");
    assert_eq!(schema["properties"]["password"]["type"], "string");
    let activation = &operation(&doc, "/v1/users/me/activation", "post")["requestBody"];
    let schema = content_schema(&doc, activation, "application/json");
    assert_eq!(property_names(schema), vec!["code"]);
    assert_eq!(schema["properties"]["code"]["type"], "string");
    let new_code = operation(&doc, "/v1/users/me/activation-code", "post");
    assert!(
        new_code.get("requestBody").is_none(),
        "the new-code route takes no body"
    );
}

#[actix_web::test]
async fn openapi_has_schemas_for_the_success_bodies() {
    // Arrange
    let app = TestApp::spawn().await;
    let user = vec!["activated_at", "created_at", "email", "id", "status"];

    // Act
    let doc = document(&app).await;

    // Assert
    for (path, method, status) in [
        ("/v1/users", "post", "201"),
        ("/v1/users/me", "get", "200"),
        ("/v1/users/me/activation", "post", "200"),
    ] {
        let response = &operation(&doc, path, method)["responses"][status];
        let schema = content_schema(&doc, response, "application/json");
        assert_eq!(property_names(schema), user, "{method} {path}");
        assert_eq!(
            schema["properties"]["status"]["enum"],
            serde_json::json!(["pending", "active"])
        );
    }
    let created = &operation(&doc, "/v1/users", "post")["responses"]["201"];
    assert!(
        created["headers"]["Location"].is_object(),
        "201 does not document Location"
    );
    let accepted = &operation(&doc, "/v1/users/me/activation-code", "post")["responses"]["202"];
    let schema = content_schema(&doc, accepted, "application/json");
    assert_eq!(
        property_names(schema),
        vec!["expires_in_seconds", "resend_after_seconds"]
    );
}

#[actix_web::test]
async fn openapi_documents_metrics_as_plain_text() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let doc = document(&app).await;

    // Assert
    let response = &operation(&doc, "/metrics", "get")["responses"]["200"];
    let content = response["content"]
        .as_object()
        .unwrap_or_else(|| panic!("no content for GET /metrics 200: {response}"));
    assert!(
        content.keys().any(|media| media.starts_with("text/plain")),
        "{response}"
    );
}

#[actix_web::test]
async fn every_ref_in_the_openapi_document_resolves() {
    // Arrange
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let mut refs = Vec::new();

    // Act
    collect_refs(&doc, &mut refs);

    // Assert
    assert!(!refs.is_empty());
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {reference}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {reference}");
    }
}

#[actix_web::test]
async fn docs_serves_swagger_ui_on_the_openapi_document() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let reply = app.send(TestRequest::get().uri("/docs")).await;

    // Assert
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.media_type(), "text/html");
    let html = reply.text();
    assert!(
        html.contains(r#"src="docs/swagger-ui-bundle.js""#),
        "{html}"
    );
    assert!(html.contains("openapi.json"), "{html}");
}

#[actix_web::test]
async fn the_swagger_ui_bundle_the_docs_page_loads_is_served_as_javascript() {
    // Arrange: `docs/swagger-ui-bundle.js` relative to `/docs`
    let app = TestApp::spawn().await;

    // Act
    let script = app
        .send(TestRequest::get().uri("/docs/swagger-ui-bundle.js"))
        .await;
    let style = app
        .send(TestRequest::get().uri("/docs/swagger-ui.css"))
        .await;

    // Assert
    assert_eq!(script.status, StatusCode::OK);
    assert!(
        ["text/javascript", "application/javascript"].contains(&script.media_type().as_str()),
        "{}",
        script.media_type()
    );
    assert!(
        script.body.len() > 100_000,
        "the bundle is only {} bytes",
        script.body.len()
    );
    assert!(script.text().contains("SwaggerUIBundle"));
    assert_eq!(style.status, StatusCode::OK);
    assert_eq!(style.media_type(), "text/css");
}
