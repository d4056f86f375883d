//! The harness: the real application and use cases over one in-memory store, with the fakes
//! from `registrar_application::testing`, and helpers that read like the steps of a test.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    rc::Rc,
    sync::{LazyLock, Mutex},
    time::{Duration, SystemTime},
};

use actix_web::{
    body::MessageBody,
    dev::{Payload, Service, ServiceResponse},
    http::{
        StatusCode,
        header::{self, HeaderMap},
    },
    test::{self, TestRequest},
    web::{Bytes, Data},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use futures_util::future::LocalBoxFuture;
use registrar_adapters_memory::MemoryStore;
use registrar_api::{MetricsSource, RefusalPacer, app};
use registrar_application::{
    AccountService, AccountSettings, Accounts, DeliveryPolicy, DeliveryReport, DispatchSignal,
    Dispatcher, NoTraces, RateLimits,
    testing::{FakeClock, FakeHasher, RecordingMailer, SeqEntropy},
};
use registrar_domain::{CodePolicy, CodeSecret, PasswordPolicy};
use serde_json::{Value, json};

pub(crate) const SECOND: Duration = Duration::from_secs(1);
pub(crate) const MINUTE: Duration = Duration::from_mins(1);

/// An address and passwords that pass the default policy (zxcvbn score 3 or more). No white
/// space: the fake hasher cannot store it (its tag would not be a valid PHC string).
pub(crate) const EMAIL: &str = "ada@example.com";
pub(crate) const PASSWORD: &str = "tangerine-Quokka-47-orbit";
pub(crate) const OTHER_PASSWORD: &str = "correct-horse-battery-staple";
pub(crate) const WRONG_PASSWORD: &str = "not-the-password-at-all";

/// What the metrics endpoint is wired to.
pub(crate) const METRICS_TEXT: &str = "registrar_test_metric 1\n";

/// The challenge every 401 carries.
pub(crate) const CHALLENGE: &str = r#"Basic realm="registrar", charset="UTF-8""#;

type TestDispatcher = Dispatcher<MemoryStore, RecordingMailer, FakeClock, SeqEntropy, NoTraces>;

/// Sends one request through the application, the way the server would: an error the
/// service itself returns becomes that error's response.
type Call = Rc<dyn Fn(TestRequest, Option<Payload>) -> LocalBoxFuture<'static, Reply>>;

/// The application over any [`Accounts`], as a function from request to [`Reply`].
pub(crate) async fn serve<A: Accounts>(
    accounts: A,
) -> impl Fn(TestRequest) -> LocalBoxFuture<'static, Reply> {
    let call = serve_raw(accounts, UNPACED).await;
    move |request| call(request, None)
}

/// No time between refusals: every refusal is answered at once.
const UNPACED: Duration = Duration::ZERO;

async fn serve_raw<A: Accounts>(accounts: A, refusal_interval: Duration) -> Call {
    let metrics = MetricsSource::new(|| METRICS_TEXT.to_string());
    let service = Rc::new(
        test::init_service(app(
            Data::new(accounts),
            Data::new(metrics),
            Data::new(RefusalPacer::new(move || refusal_interval)),
        ))
        .await,
    );
    Rc::new(move |request: TestRequest, payload: Option<Payload>| {
        let service = Rc::clone(&service);
        Box::pin(async move {
            let mut request = request.to_request();
            if let Some(payload) = payload {
                request.headers_mut().remove(header::CONTENT_LENGTH);
                *request.payload() = payload;
            }
            match service.call(request).await {
                Ok(response) => Reply::read(response).await,
                Err(error) => {
                    let response = error.as_response_error().error_response();
                    let (status, headers) = (response.status(), response.headers().clone());
                    let body = actix_web::body::to_bytes(response.into_body())
                        .await
                        .unwrap_or_default();
                    Reply {
                        status,
                        headers,
                        body,
                    }
                }
            }
        })
    })
}

/// One test's application and everything behind it.
pub(crate) struct TestApp {
    call: Call,
    pub(crate) store: MemoryStore,
    pub(crate) clock: FakeClock,
    pub(crate) entropy: SeqEntropy,
    pub(crate) hasher: FakeHasher,
    pub(crate) mailer: RecordingMailer,
    dispatcher: TestDispatcher,
}

impl TestApp {
    /// A fresh application with the contract's defaults.
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(RateLimits::default()).await
    }

    /// A fresh application with other rate limits (`REGISTRAR_RATE_LIMITS=off` turns
    /// `per_address` off).
    pub(crate) async fn spawn_with(limits: RateLimits) -> Self {
        Self::build(limits, UNPACED).await
    }

    /// A fresh application whose `overloaded` refusals are paced at one per `refusal_interval`.
    pub(crate) async fn spawn_paced(refusal_interval: Duration) -> Self {
        Self::build(RateLimits::default(), refusal_interval).await
    }

    async fn build(limits: RateLimits, refusal_interval: Duration) -> Self {
        let store = MemoryStore::new();
        let clock = FakeClock::default();
        let entropy = SeqEntropy::default();
        let hasher = FakeHasher::default();
        let mailer = RecordingMailer::default();
        let settings = AccountSettings {
            codes: CodePolicy::default(),
            passwords: PasswordPolicy::default(),
            secret: CodeSecret::new(vec![42_u8; 32]).unwrap(),
            limits,
        };
        let accounts = AccountService::new(
            store.clone(),
            hasher.clone(),
            clock.clone(),
            entropy.clone(),
            NoTraces,
            settings,
            DispatchSignal::default(),
        );
        let dispatcher = Dispatcher::new(
            store.clone(),
            mailer.clone(),
            clock.clone(),
            entropy.clone(),
            NoTraces,
            CodePolicy::default(),
            DeliveryPolicy::default(),
        );
        Self {
            call: serve_raw(accounts, refusal_interval).await,
            store,
            clock,
            entropy,
            hasher,
            mailer,
            dispatcher,
        }
    }

    /// Sends a request.
    pub(crate) async fn send(&self, request: TestRequest) -> Reply {
        (self.call)(request, None).await
    }

    /// Sends a request whose body is `payload`, streamed, without a `Content-Length`.
    pub(crate) async fn send_streamed(&self, request: TestRequest, payload: Payload) -> Reply {
        (self.call)(request, Some(payload)).await
    }

    /// `POST /v1/users` with a JSON body, from no particular address.
    pub(crate) async fn post_register(&self, body: &Value) -> Reply {
        self.send(json_post("/v1/users", body)).await
    }

    /// `POST /v1/users` with a JSON body, from `peer`.
    pub(crate) async fn post_register_from(&self, peer: SocketAddr, body: &Value) -> Reply {
        self.send(json_post("/v1/users", body).peer_addr(peer))
            .await
    }

    /// Registers `email` with `password`, which must succeed; the user resource.
    pub(crate) async fn register(&self, email: &str, password: &str) -> Value {
        let reply = self
            .post_register(&json!({ "email": email, "password": password }))
            .await;
        reply.json_with(StatusCode::CREATED)
    }

    /// Runs one dispatcher pass: the recording mailer "accepts" every due email, which makes
    /// its code usable from now.
    pub(crate) async fn deliver(&self) -> DeliveryReport {
        self.dispatcher.deliver_due().await.unwrap()
    }

    /// The code in the last email accepted for `email` (as stored: domain lower-cased).
    pub(crate) fn code_for(&self, email: &str) -> String {
        self.mailer
            .last_code_for(email)
            .unwrap_or_else(|| panic!("no email was sent to {email}"))
    }

    /// Registers `email`, delivers its email, and returns the code in it.
    pub(crate) async fn register_and_deliver(&self, email: &str, password: &str) -> String {
        self.register(email, password).await;
        assert_eq!(self.deliver().await.sent, 1);
        self.code_for(email)
    }

    /// A registered, delivered and activated account.
    pub(crate) async fn active_account(&self, email: &str, password: &str) -> Value {
        let code = self.register_and_deliver(email, password).await;
        self.activate(email, password, &code)
            .await
            .json_with(StatusCode::OK)
    }

    /// `POST /v1/users/me/activation` with `{"code": code}`.
    pub(crate) async fn activate(&self, email: &str, password: &str, code: &str) -> Reply {
        self.activate_with(email, password, &json!({ "code": code }))
            .await
    }

    /// `POST /v1/users/me/activation` with any JSON body.
    pub(crate) async fn activate_with(&self, email: &str, password: &str, body: &Value) -> Reply {
        let request =
            json_post("/v1/users/me/activation", body).insert_header(basic(email, password));
        self.send(request).await
    }

    /// `GET /v1/users/me`.
    pub(crate) async fn me(&self, email: &str, password: &str) -> Reply {
        self.send(
            TestRequest::get()
                .uri("/v1/users/me")
                .insert_header(basic(email, password)),
        )
        .await
    }

    /// `GET /v1/users/me` from `peer`.
    pub(crate) async fn me_from(&self, peer: SocketAddr, email: &str, password: &str) -> Reply {
        let request = TestRequest::get()
            .uri("/v1/users/me")
            .insert_header(basic(email, password))
            .peer_addr(peer);
        self.send(request).await
    }

    /// `POST /v1/users/me/activation-code`, without a body.
    pub(crate) async fn new_code(&self, email: &str, password: &str) -> Reply {
        let request = TestRequest::post()
            .uri("/v1/users/me/activation-code")
            .insert_header(basic(email, password));
        self.send(request).await
    }

    /// Moves the fake clock.
    pub(crate) fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// A `POST` of `body` as `application/json`.
pub(crate) fn json_post(uri: &str, body: &Value) -> TestRequest {
    TestRequest::post()
        .uri(uri)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.to_string())
}

/// An `Authorization: Basic …` header for `email:password`.
pub(crate) fn basic(email: &str, password: &str) -> (header::HeaderName, String) {
    basic_raw(format!("{email}:{password}").as_bytes())
}

/// An `Authorization: Basic …` header for arbitrary bytes.
pub(crate) fn basic_raw(user_pass: &[u8]) -> (header::HeaderName, String) {
    (
        header::AUTHORIZATION,
        format!("Basic {}", STANDARD.encode(user_pass)),
    )
}

/// A client address, one per `n`.
pub(crate) fn peer(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, n)), 40_000)
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// The title seen for each problem type, so every test also checks that a type's title never
/// changes.
static TITLES: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Mutex::default);

impl Reply {
    async fn read<B: MessageBody>(response: ServiceResponse<B>) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let body = test::read_body(response).await;
        Self {
            status,
            headers,
            body,
        }
    }

    /// A header's value, as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    /// The media type, without parameters.
    pub(crate) fn media_type(&self) -> String {
        let value = self
            .header("content-type")
            .unwrap_or_else(|| panic!("no Content-Type: {self}"));
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// The body as text.
    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    /// The `X-Request-Id`, which every response must carry.
    pub(crate) fn request_id(&self) -> &str {
        self.header("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-Id: {self}"))
    }

    /// The body of a JSON success response with this status.
    pub(crate) fn json_with(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{self}");
        assert_eq!(self.media_type(), "application/json", "{self}");
        self.request_id();
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The body of a problem+json response with this status and slug, after checking every
    /// convention of the contract: media type, members, their types, a request id, and no
    /// internal text.
    pub(crate) fn problem(&self, status: u16, slug: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{self}");
        assert_eq!(self.media_type(), "application/problem+json", "{self}");
        self.request_id();
        let body: Value = serde_json::from_slice(&self.body).unwrap();
        let kind = body["type"]
            .as_str()
            .unwrap_or_else(|| panic!("no `type`: {self}"));
        assert!(
            kind.ends_with(&format!("/{slug}")),
            "type {kind:?} should end with {slug}"
        );
        let title = body["title"]
            .as_str()
            .unwrap_or_else(|| panic!("no `title`: {self}"));
        assert!(!title.is_empty(), "{self}");
        assert_eq!(body["status"], json!(status), "{self}");
        let detail = body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("`detail` is not a string: {self}"));
        assert!(!detail.is_empty(), "{self}");
        assert_no_internals(self.text());
        let seen = TITLES
            .lock()
            .unwrap()
            .entry(slug.to_string())
            .or_insert_with(|| title.to_string())
            .clone();
        assert_eq!(seen, title, "the title of {slug} changed");
        if status == 429 {
            assert_eq!(slug, "too-many-requests", "every 429 is too-many-requests");
        }
        if status == 429 || status == 503 {
            self.retry_after();
        }
        body
    }

    /// A 401 `unauthorized` with the Basic challenge.
    pub(crate) fn assert_unauthorized(&self) -> Value {
        let body = self.problem(401, "unauthorized");
        assert_eq!(self.header("www-authenticate"), Some(CHALLENGE), "{self}");
        body
    }

    /// A 422 `validation-failed`: its `(field, code)` pairs, after checking each entry's shape.
    pub(crate) fn validation_errors(&self) -> Vec<(String, String)> {
        let body = self.problem(422, "validation-failed");
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no `errors` array: {self}"));
        assert!(!errors.is_empty(), "{self}");
        errors
            .iter()
            .map(|error| {
                let message = error["message"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no message: {self}"));
                assert!(!message.is_empty(), "{self}");
                (
                    error["field"].as_str().unwrap().to_string(),
                    error["code"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The `Retry-After` seconds, which must be a positive integer.
    pub(crate) fn retry_after(&self) -> u64 {
        let value = self
            .header("retry-after")
            .unwrap_or_else(|| panic!("no Retry-After: {self}"));
        let seconds: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("Retry-After {value:?} is not delta-seconds"));
        assert!(seconds > 0, "{self}");
        seconds
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} {}",
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// Nothing that looks like a stack trace, a source location, SQL or an internal error message.
pub(crate) fn assert_no_internals(text: &str) {
    for marker in [
        "panicked",
        "backtrace",
        ".rs:",
        "src/",
        "SELECT ",
        "relation \"",
        "simulated outage",
        "caused by",
        "Internal(",
        "Unavailable(",
    ] {
        assert!(!text.contains(marker), "{marker:?} leaked: {text}");
    }
}

/// `time` as an RFC 3339 UTC string must parse back to a time; it must end in `Z`.
pub(crate) fn parse_rfc3339_utc(value: &Value) -> SystemTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"));
    assert!(text.ends_with('Z'), "{text} is not UTC");
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"))
}

/// The fake clock's time.
pub(crate) fn now(app: &TestApp) -> SystemTime {
    use registrar_application::ports::Clock;
    app.clock.now()
}
