//! Extractors: Basic credentials (RFC 7617), the client address, and a JSON body that is read
//! with a size limit but parsed only when the handler asks, so that credentials are checked
//! before the body's problems are reported.

use std::{collections::BTreeMap, future::Future, net::IpAddr, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web::BytesMut};
use base64::{Engine, engine::general_purpose::STANDARD};
use futures_util::StreamExt;
use paperclip::{
    actix::OperationModifier,
    v2::{
        models::{DefaultOperationRaw, DefaultSchemaRaw, Either, Parameter, ParameterIn},
        schema::Apiv2Schema,
    },
};
use registrar_application::{Credentials, Error};
use registrar_domain::Password;
use serde::de::DeserializeOwned;

use crate::{ApiError, TrustedProxies};

/// Largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Credentials from an `Authorization: Basic …` header. Extraction fails with 401 when the
/// header is missing or malformed; the use case then checks them.
pub(crate) struct BasicAuth(Credentials);

impl BasicAuth {
    /// The credentials, for the use case to check.
    pub(crate) fn into_credentials(self) -> Credentials {
        self.0
    }

    /// Parses a header value: scheme `Basic` (any case), base64 of `user:password`, split at the
    /// first colon; the password is NFKC-normalised.
    pub(crate) fn parse(value: &[u8]) -> Option<Credentials> {
        let value = std::str::from_utf8(value).ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = STANDARD.decode(token.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some(Credentials::new(user.to_owned(), Password::new(password)))
    }
}

impl FromRequest for BasicAuth {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| Self::parse(value.as_bytes()));
        std::future::ready(parsed.map(Self).ok_or(ApiError::App(Error::Unauthorized)))
    }
}

impl Apiv2Schema for BasicAuth {}
impl OperationModifier for BasicAuth {}

/// The client's address: the TCP peer, or what trusted proxies say it is (see
/// [`TrustedProxies`]).
pub(crate) struct ClientIp(pub(crate) Option<IpAddr>);

impl FromRequest for ClientIp {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let client = req.peer_addr().map(|peer| {
            let Some(proxies) = req.app_data::<actix_web::web::Data<TrustedProxies>>() else {
                return peer.ip();
            };
            let forwarded: Vec<&str> = req
                .headers()
                .get_all("x-forwarded-for")
                .filter_map(|value| value.to_str().ok())
                .collect();
            proxies.client(peer.ip(), &forwarded)
        });
        std::future::ready(Ok(Self(client)))
    }
}

impl Apiv2Schema for ClientIp {}
impl OperationModifier for ClientIp {}

/// A JSON request body, read up to [`BODY_LIMIT`] bytes; its problems (415, 413, 400) are kept
/// until [`JsonBody::into_inner`].
pub(crate) struct JsonBody<T>(Result<T, ApiError>);

impl<T> JsonBody<T> {
    /// The parsed body, or why there is none.
    pub(crate) fn into_inner(self) -> Result<T, ApiError> {
        self.0
    }
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<mime::Mime>().ok())
        .is_some_and(|mime| {
            mime.type_() == mime::APPLICATION
                && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON))
        })
}

/// The body length the request declares, if it declares one that parses.
pub(crate) fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn read<T: DeserializeOwned>(
    json: bool,
    length: Option<usize>,
    mut payload: Payload,
) -> Result<T, ApiError> {
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    if length.is_some_and(|n| n > BODY_LIMIT) {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::Malformed("the request body could not be read".into()))?;
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    parse_json(&body)
}

/// Parses a request body as JSON into `T`, with the contract's answers: the body must be an
/// object (400), valid JSON (400) of the right types (400).
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde's derive also takes a JSON array of the fields in order; the contract takes objects.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(_) => return Err(ApiError::Malformed("the body must be a JSON object".into())),
    }
    serde_json::from_slice(body).map_err(|error| {
        use serde_json::error::Category;
        ApiError::Malformed(match error.classify() {
            Category::Data => format!("the body does not fit the schema: {error}"),
            Category::Eof if body.iter().all(u8::is_ascii_whitespace) => {
                "the request body is empty; a JSON object is required".into()
            }
            Category::Syntax | Category::Eof | Category::Io => {
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    error.line(),
                    error.column()
                )
            }
        })
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let length = declared_length(req);
        let payload = payload.take();
        Box::pin(async move { Ok(Self(read(json, length, payload).await)) })
    }
}

impl<T: Apiv2Schema> Apiv2Schema for JsonBody<T> {
    fn name() -> Option<String> {
        T::name()
    }

    fn raw_schema() -> DefaultSchemaRaw {
        T::raw_schema()
    }
}

impl<T: Apiv2Schema> OperationModifier for JsonBody<T> {
    fn update_parameter(op: &mut DefaultOperationRaw) {
        op.parameters.push(Either::Right(Parameter {
            in_: ParameterIn::Body,
            name: "body".into(),
            required: true,
            schema: Some({
                let mut schema = T::schema_with_ref();
                schema.retain_ref();
                schema
            }),
            ..Parameter::default()
        }));
    }

    fn update_definitions(map: &mut BTreeMap<String, DefaultSchemaRaw>) {
        let mut schema = T::schema_with_ref();
        if let Some(name) = schema.name.take() {
            schema.remove_refs();
            map.insert(name, schema);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn parse(header: &str) -> Option<(String, String)> {
        BasicAuth::parse(header.as_bytes()).map(|c| {
            let debug = format!("{c:?}");
            (debug, String::new())
        })
    }

    fn header(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon_and_accept_any_scheme_case() {
        assert!(BasicAuth::parse(header("ada@example.com:pa:ss").as_bytes()).is_some());
        let lower = format!("basic {}", STANDARD.encode("a@b.co:x"));
        assert!(BasicAuth::parse(lower.as_bytes()).is_some());
        let upper = format!("BASIC {}", STANDARD.encode("a@b.co:x"));
        assert!(BasicAuth::parse(upper.as_bytes()).is_some());
    }

    #[test]
    fn malformed_basic_headers_are_refused() {
        for bad in [
            String::new(),
            "Basic".into(),
            "Bearer abc".into(),
            "Basic !!!notbase64".into(),
            format!("Basic {}", STANDARD.encode("no-colon")),
            format!("Basic {}", STANDARD.encode([0xff, 0xfe, b':', b'x'])),
            format!("Digest {}", STANDARD.encode("a@b.co:x")),
        ] {
            assert!(parse(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_never_show_the_password_in_debug_output() {
        let (debug, _) = parse(&header("ada@example.com:hunter2-secret")).unwrap();
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
