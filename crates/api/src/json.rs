//! Responses. JSON bodies are written the way Python's `json.dumps` writes them (`", "` and
//! `": "` separators, non-ASCII escaped), so checks that match on body text
//! (`http-check expect string "role": "master"`) keep working after a switch from Patroni.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};
use std::io::{self, Write};

const APPLICATION_JSON: &str = "application/json";

/// Serializes `value` with Python's default `json.dumps` layout.
pub(crate) fn to_python_json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    value.serialize(&mut Serializer::with_formatter(&mut out, PythonFormatter))?;
    Ok(out)
}

/// A JSON response. Serializing our own types cannot fail in practice; if it ever does, the
/// client gets a 500 with a JSON error rather than a dropped connection.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match to_python_json(value) {
        Ok(body) => with_content_type(status, Body::from(body), APPLICATION_JSON),
        Err(err) => {
            tracing::error!(error = %err, "could not serialize a REST API response");
            with_content_type(
                StatusCode::INTERNAL_SERVER_ERROR,
                Body::from(r#"{"error": "internal error"}"#),
                APPLICATION_JSON,
            )
        }
    }
}

/// A path no rule recognises: `{"error": "not found", "path": ...}` (Patroni would answer its
/// 503 status page; docs/compat.md#rest-differences).
pub(crate) fn not_found(path: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": "not found", "path": path}),
    )
}

/// Patroni's `_write_response`: a message as the body, `Content-Type: text/html` (what
/// Patroni sends for every plain message; clients print or match the text).
pub(crate) fn text_response(status: StatusCode, message: &str) -> Response {
    with_content_type(status, Body::from(message.to_string()), "text/html")
}

/// Python's `BaseHTTPRequestHandler.send_error(code[, message])`, which Patroni uses for
/// missing or malformed bodies, absent keys and lost compare-and-set races: its HTML page,
/// byte for byte. `message` replaces the status phrase (Python's `Unsupported method (...)`).
pub(crate) fn error_page(status: StatusCode, message: Option<&str>) -> Response {
    let (phrase, explain) = python_status_text(status);
    let message = message.unwrap_or(phrase);
    // `html.escape(message, quote=False)`.
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let code = status.as_u16();
    let body = format!(
        "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        \
         <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        \
         <p>Error code: {code}</p>\n        <p>Message: {}.</p>\n        \
         <p>Error code explanation: {code} - {explain}.</p>\n    </body>\n</html>\n",
        escape(message)
    );
    let mut response = with_content_type(status, Body::from(body), "text/html;charset=utf-8");
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Python's `http.server` status phrases and explanations.
fn python_status_text(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("Bad Request", "Bad request syntax or unsupported method"),
        401 => ("Unauthorized", "No permission -- see authorization schemes"),
        403 => (
            "Forbidden",
            "Request forbidden -- authorization will not help",
        ),
        404 => ("Not Found", "Nothing matches the given URI"),
        409 => ("Conflict", "Request conflict"),
        411 => ("Length Required", "Client must specify Content-Length"),
        413 => ("Request Entity Too Large", "Entity is too large"),
        415 => (
            "Unsupported Media Type",
            "Entity body in unsupported format",
        ),
        501 => ("Not Implemented", "Server does not support this operation"),
        502 => ("Bad Gateway", "Invalid responses from another server/proxy"),
        503 => (
            "Service Unavailable",
            "The server cannot process the request due to a high load",
        ),
        _ => ("Internal Server Error", "Server got itself in trouble"),
    }
}

/// A status line without a body, as Patroni answers HEAD/OPTIONS and `/liveness`.
pub(crate) fn status_only(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

pub(crate) fn with_content_type(
    status: StatusCode,
    body: Body,
    content_type: &'static str,
) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `json.dumps` defaults: `separators=(", ", ": ")`, `ensure_ascii=True`.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for (i, ch) in fragment.char_indices() {
            if ch.is_ascii() {
                writer.write_all(&fragment.as_bytes()[i..i + 1])?;
            } else {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::to_python_json;
    use serde_json::json;

    #[test]
    fn python_layout() {
        let v = json!({"a": [1, 2], "b": {"c": "é😀"}, "d": []});
        let text = String::from_utf8(to_python_json(&v).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"a": [1, 2], "b": {"c": "\u00e9\ud83d\ude00"}, "d": []}"#
        );
    }
}
