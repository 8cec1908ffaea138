//! Request bodies: one JSON object, at most `MAX_BODY_BYTES`, arriving within `BODY_TIMEOUT`,
//! with no unknown and no repeated field.

use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::server::{HttpError, BODY_TIMEOUT, MAX_BODY_BYTES};

/// A JSON request body: at most `MAX_BODY_BYTES`, within `BODY_TIMEOUT`, unknown fields refused
/// by the body types themselves. The content type is not checked, so `curl -d` works as is.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, HttpError> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Err(HttpError::too_large());
        }
        let read = Limited::new(req.into_body(), MAX_BODY_BYTES).collect();
        let collected = tokio::time::timeout(BODY_TIMEOUT, read)
            .await
            .map_err(|_| {
                HttpError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s",
                        BODY_TIMEOUT.as_secs()
                    ),
                )
            })?
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    HttpError::too_large()
                } else {
                    HttpError::new(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {e}"),
                    )
                }
            })?;
        parse_body(&collected.to_bytes()).map(JsonBody)
    }
}

/// Parses a body that must be one JSON object. The object is first read as a `Value` only to
/// refuse anything else (serde would read a JSON array as the struct's fields in order); the
/// struct is then read from the bytes themselves, so that a field given twice is refused (as
/// Firecracker refuses it) rather than the last one winning.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    let bad = |message: String| HttpError::new(StatusCode::BAD_REQUEST, message);
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid request body: {e}")))?;
    if !value.is_object() {
        return Err(bad(format!(
            "invalid request body: expected a JSON object, not {}",
            json_kind(&value)
        )));
    }
    // From the value first: its messages name the wrong type rather than a column.
    serde_json::from_value::<T>(value).map_err(|e| bad(format!("invalid request body: {e}")))?;
    serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid request body: {e}")))
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MemoryLimitUpdate, VmAction, VmActionBody};

    #[test]
    fn bodies_must_be_objects_with_known_fields() {
        let ok: VmActionBody = parse_body(br#"{"action_type": "Resume"}"#).unwrap();
        assert_eq!(ok.action_type, VmAction::Resume);
        for (body, why) in [
            (&br#"["Pause"]"#[..], "expected a JSON object, not an array"),
            (b"", "EOF while parsing"),
            (b"{", "EOF while parsing an object"),
            (
                br#"{"action_type": "Pause", "now": true}"#,
                "unknown field `now`",
            ),
            (br#"{"action_type": 1}"#, "invalid type: integer `1`"),
        ] {
            let err = parse_body::<VmActionBody>(body).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(err.message.contains(why), "{:?}: {}", body, err.message);
        }
        let err = parse_body::<MemoryLimitUpdate>(b"{}").unwrap_err();
        assert!(
            err.message.contains("missing field `limit_mib`"),
            "{}",
            err.message
        );
        let err =
            parse_body::<MemoryLimitUpdate>(br#"{"limit_mib": 8, "limit_mib": null}"#).unwrap_err();
        assert!(
            err.message.contains("duplicate field `limit_mib`"),
            "{}",
            err.message
        );
        let err =
            parse_body::<VmActionBody>(br#"{"action_type": "Pause", "action_type": "Pause"}"#)
                .unwrap_err();
        assert!(
            err.message.contains("duplicate field `action_type`"),
            "{}",
            err.message
        );
        let err = parse_body::<MemoryLimitUpdate>(b"{}").unwrap_err();
        assert!(
            err.message.contains("missing field `limit_mib`"),
            "{}",
            err.message
        );
    }
}
