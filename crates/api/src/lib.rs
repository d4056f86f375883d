//! Registrar's HTTP API: the actix-web application, its handlers and extractors, problem+json
//! errors, and the OpenAPI description with Swagger UI. This is the only crate that knows HTTP,
//! JSON and OpenAPI; handlers are generic over the [`Accounts`] use cases, so it never sees
//! an adapter.
#![forbid(unsafe_code)]

mod dto;
mod error;
mod extract;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handlers;
mod middleware;
mod openapi;
mod pacing;
mod proxies;
mod reply;
mod trace;

use actix_web::{
    Error, ResponseError,
    body::MessageBody,
    dev::{ServiceFactory, ServiceRequest, ServiceResponse},
    middleware::from_fn,
    web as aweb,
};
use paperclip::actix::{OpenApiExt, web};
use registrar_application::Accounts;

pub use error::{ApiError, BASIC_CHALLENGE, FieldError, PROBLEM_JSON};
pub use extract::BODY_LIMIT;
pub use middleware::REQUEST_ID;
pub use pacing::RefusalPacer;
pub use proxies::{TrustedProxies, TrustedProxiesError};
pub use trace::{TRACE_ID_FIELD, remote_span_context};

use handlers::{ops, users};

/// Renders the process's metrics in the Prometheus text format.
pub struct MetricsSource(Box<dyn Fn() -> String + Send + Sync>);

impl MetricsSource {
    /// Metrics from `render`, e.g. a Prometheus recorder's handle.
    pub fn new(render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self(Box::new(render))
    }

    fn render(&self) -> String {
        (self.0)()
    }
}

/// A handler for a route that exists but not with the request's method.
fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    aweb::to(move || async move { ApiError::MethodNotAllowed { allow }.error_response() })
}

/// A route described in the OpenAPI document; other methods get 405 with `Allow: allow`.
fn documented(path: &str, allow: &'static str, route: web::Route) -> web::Resource {
    web::resource(path)
        .route(route)
        .default_service(method_not_allowed(allow))
}

/// A GET-only route that is not part of the generated document (the documentation itself).
fn get(path: &str, route: actix_web::Route) -> actix_web::Resource {
    aweb::resource(path)
        .route(route)
        .default_service(method_not_allowed("GET, HEAD"))
}

/// The application: every route of the contract over the given use cases, its `overloaded`
/// refusals paced by `pacer` (shared by every worker of one server).
pub fn app<A: Accounts>(
    accounts: aweb::Data<A>,
    metrics: aweb::Data<MetricsSource>,
    pacer: aweb::Data<RefusalPacer>,
) -> actix_web::App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    let mut generated = None;
    let app = actix_web::App::new()
        .wrap_api()
        .app_data(accounts)
        .app_data(metrics)
        .app_data(pacer)
        .service(documented(
            "/v1/users",
            "POST",
            web::post().to(users::register::<A>),
        ))
        .service(
            documented(
                "/v1/users/me",
                "GET, HEAD, DELETE",
                web::get().to(users::me::<A>),
            )
            .route(web::delete().to(users::delete_me::<A>)),
        )
        .service(documented(
            "/v1/users/me/activation",
            "POST",
            web::post().to(users::activate::<A>),
        ))
        .service(documented(
            "/v1/users/me/activation-code",
            "POST",
            web::post().to(users::issue_code::<A>),
        ))
        .service(documented(
            "/healthz",
            "GET, HEAD",
            web::get().to(ops::healthz),
        ))
        .service(documented(
            "/readyz",
            "GET",
            web::get().to(ops::readyz::<A>),
        ))
        .service(documented(
            "/metrics",
            "GET, HEAD",
            web::get().to(ops::metrics),
        ))
        .with_raw_json_spec_v3(|app, spec| {
            generated = Some(spec);
            app
        })
        .build();
    let doc = openapi::finish(generated.unwrap_or_default());
    app.app_data(aweb::Data::new(doc))
        .service(get("/openapi.json", aweb::get().to(openapi::openapi_json)))
        .service(get("/docs", aweb::get().to(openapi::docs)))
        .service(get("/docs/", aweb::get().to(openapi::docs_slash)))
        .service(get(
            "/docs/swagger-ui.css",
            aweb::get().to(openapi::swagger_css),
        ))
        .service(get(
            "/docs/swagger-ui-bundle.js",
            aweb::get().to(openapi::swagger_js),
        ))
        .default_service(aweb::to(|| async { ApiError::NotFound.error_response() }))
        .wrap(from_fn(middleware::observe))
}
