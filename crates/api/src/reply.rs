//! Success responses whose status or media type paperclip's own wrappers do not cover, each
//! describing itself in the OpenAPI document.

use actix_web::{
    HttpRequest, HttpResponse, Responder,
    body::BoxBody,
    http::{StatusCode, header},
};
use paperclip::{
    actix::OperationModifier,
    v2::{
        models::{DefaultOperationRaw, DefaultSchemaRaw, Either, Response},
        schema::Apiv2Schema,
    },
};
use serde::Serialize;

/// 201 Created with a JSON body and a `Location` header.
pub(crate) struct Created<T> {
    location: &'static str,
    body: T,
}

impl<T> Created<T> {
    /// The created resource's body, found at `location`.
    pub(crate) fn at(location: &'static str, body: T) -> Self {
        Self { location, body }
    }
}

impl<T: Serialize> Responder for Created<T> {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        HttpResponse::build(StatusCode::CREATED)
            .insert_header((header::LOCATION, self.location))
            .json(self.body)
    }
}

impl<T: Apiv2Schema> Apiv2Schema for Created<T> {
    fn name() -> Option<String> {
        T::name()
    }

    fn raw_schema() -> DefaultSchemaRaw {
        T::raw_schema()
    }
}

impl<T: Apiv2Schema> OperationModifier for Created<T> {
    fn update_response(op: &mut DefaultOperationRaw) {
        let mut schema = T::schema_with_ref();
        schema.retain_ref();
        op.responses.insert(
            "201".into(),
            Either::Right(Response {
                description: Some("Created".into()),
                schema: Some(schema),
                ..Response::default()
            }),
        );
    }
}

/// 204 No Content: no body, and so no `Content-Type` (paperclip's own `NoContent` sets one).
pub(crate) struct NoContent;

impl Responder for NoContent {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        HttpResponse::NoContent().finish()
    }
}

impl Apiv2Schema for NoContent {}

impl OperationModifier for NoContent {
    fn update_response(op: &mut DefaultOperationRaw) {
        op.responses.insert(
            "204".into(),
            Either::Right(Response {
                description: Some("No Content".into()),
                ..Response::default()
            }),
        );
    }
}

/// 200 with Prometheus' text exposition format.
pub(crate) struct PrometheusText(pub(crate) String);

impl Responder for PrometheusText {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(self.0)
    }
}

impl Apiv2Schema for PrometheusText {}

impl OperationModifier for PrometheusText {
    fn update_response(op: &mut DefaultOperationRaw) {
        op.responses.insert(
            "200".into(),
            Either::Right(Response {
                description: Some("Metrics in the Prometheus text format".into()),
                ..Response::default()
            }),
        );
    }
}
