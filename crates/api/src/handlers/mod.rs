//! The route handlers. Each is three moves: parse the request, call the use case, map the result.

pub(crate) mod ops;
pub(crate) mod users;
