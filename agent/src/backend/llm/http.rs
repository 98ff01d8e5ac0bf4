//! The HTTP side of one request: POST the body, read the whole answer
//! within request_timeout, and sort what came back by what must be done
//! about it. Reading the status and the body is all; the wording of a
//! server's message never decides anything.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use serde_json::Value;

/// How much of a server's error message a failure reason quotes.
const MESSAGE_CHARS: usize = 500;

/// A whole answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why no answer came.
#[derive(Debug)]
pub enum SendError {
    Timeout,
    /// Refused, reset, or cut off mid-answer.
    Connection(String),
}

/// How long a kept-alive connection may sit unused and still be taken for
/// the next request. Servers commonly close idle connections after 5 s
/// (uvicorn, so vLLM and LiteLLM; Node; Apache); a request sent on one just
/// as the server closes it would be a failed attempt, so one idle longer
/// than this is not reused but replaced.
const IDLE_CONNECTION: Duration = Duration::from_secs(4);

/// A client for one endpoint: its own connection pool and timeout. Every
/// client of the process shares one TLS configuration (`tls`): the
/// platform's root certificates are read once, not once per client (each
/// event loop has its own clients, see `super::clients`).
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(IDLE_CONNECTION)
        .tls_backend_preconfigured(tls()?)
        .build()
        .map_err(|e| e.to_string())
}

/// What reqwest would configure itself (its `rustls` feature): the
/// aws-lc-rs provider, TLS 1.2 and 1.3, the platform's verifier, HTTP/1.1
/// by ALPN — made once per process. The platform's root certificates are
/// read at the first TLS handshake, not at start (reading them is most of
/// an agent's start-up, and a local http:// server never needs them).
fn tls() -> Result<rustls::ClientConfig, String> {
    static TLS: OnceLock<Result<rustls::ClientConfig, String>> = OnceLock::new();
    TLS.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = LazyVerifier {
            provider: Arc::clone(&provider),
            platform: OnceLock::new(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    })
    .clone()
}

/// The platform's verifier, made when the first certificate is to be
/// verified; signatures are checked with the provider's algorithms, as the
/// platform verifier checks them.
#[derive(Debug)]
struct LazyVerifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
    platform: OnceLock<Result<rustls_platform_verifier::Verifier, String>>,
}

impl rustls::client::danger::ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let platform = self.platform.get_or_init(|| {
            rustls_platform_verifier::Verifier::new(Arc::clone(&self.provider))
                .map_err(|e| format!("cannot read the platform's root certificates: {e}"))
        });
        match platform {
            Ok(verifier) => verifier.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            Err(reason) => Err(rustls::Error::General(reason.clone())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub async fn post(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
) -> Result<Answer, SendError> {
    let request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    send(request, headers).await
}

/// Sends any request with these (key) headers and reads the whole answer.
pub async fn send(
    request: reqwest::RequestBuilder,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Result<Answer, SendError> {
    let response = open(request, headers).await?;
    read_whole(response).await
}

/// Sends a request with these (key) headers: the answer, its body unread
/// (a results file is read chunk by chunk).
pub async fn open(
    mut request: reqwest::RequestBuilder,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Result<reqwest::Response, SendError> {
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.map_err(send_error)
}

/// The next chunk of an answer's body (None at its end).
pub async fn chunk(response: &mut reqwest::Response) -> Result<Option<bytes::Bytes>, SendError> {
    response.chunk().await.map_err(send_error)
}

/// An answer read whole.
pub async fn read_whole(response: reqwest::Response) -> Result<Answer, SendError> {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(send_error)?;
    Ok(Answer {
        status,
        headers,
        body: body.to_vec(),
    })
}

fn send_error(error: reqwest::Error) -> SendError {
    if error.is_timeout() {
        return SendError::Timeout;
    }
    // The innermost cause says what happened ("connection refused"…);
    // reqwest's own text only says that sending failed.
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    SendError::Connection(reason)
}

/// What an answer's status says to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// 2xx with a JSON body.
    Answered(Value),
    RateLimited,
    KeyRejected,
    /// Another 4xx: the request is wrong.
    Refused(String),
    /// 5xx, or a status no API answers with.
    ServerError(String),
    /// 2xx whose body is not JSON.
    Unreadable(String),
}

/// Sorts an answer by its status. `secret` is the key in use: it is cut out
/// of any message quoted, in case a server echoes it.
pub fn verdict(status: StatusCode, body: &[u8], secret: Option<&str>) -> Verdict {
    if status.is_success() {
        return match serde_json::from_slice::<Value>(body) {
            Ok(value) => Verdict::Answered(value),
            Err(e) => Verdict::Unreadable(format!(
                "{e}; the body starts with {:?}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            )),
        };
    }
    match status.as_u16() {
        429 => Verdict::RateLimited,
        401 | 403 => Verdict::KeyRejected,
        400..=499 => Verdict::Refused(message(body, secret)),
        _ => Verdict::ServerError(message(body, secret)),
    }
}

/// The server's message: `error.message` (OpenAI, Anthropic, LiteLLM),
/// `error` as text, `message` or `detail`; else the body's text.
pub fn message(body: &[u8], secret: Option<&str>) -> String {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let from_json = parsed.as_ref().and_then(|value| {
        let error = value.get("error");
        error
            .and_then(|e| e.get("message"))
            .or(error.filter(|e| e.is_string()))
            .or_else(|| value.get("message"))
            .or_else(|| value.get("detail"))
            .map(|m| match m {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let text = match secret {
        Some(secret) if !secret.is_empty() => text.replace(secret, "[key]"),
        _ => text,
    };
    let mut short: String = text.chars().take(MESSAGE_CHARS).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    if short.is_empty() {
        "(no message)".to_owned()
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).expect("a status")
    }

    #[test]
    fn statuses_are_sorted() {
        assert_eq!(
            verdict(status(200), br#"{"a": 1}"#, None),
            Verdict::Answered(serde_json::json!({"a": 1}))
        );
        assert!(matches!(
            verdict(status(200), b"<html>", None),
            Verdict::Unreadable(_)
        ));
        assert_eq!(
            verdict(status(429), b"slow down", None),
            Verdict::RateLimited
        );
        assert_eq!(verdict(status(401), b"", None), Verdict::KeyRejected);
        assert_eq!(verdict(status(403), b"", None), Verdict::KeyRejected);
        assert_eq!(
            verdict(
                status(400),
                br#"{"error": {"message": "model not found", "type": "x"}}"#,
                None
            ),
            Verdict::Refused("model not found".into())
        );
        assert_eq!(
            verdict(status(503), b"overloaded\n", None),
            Verdict::ServerError("overloaded".into())
        );
        assert!(matches!(
            verdict(status(302), b"", None),
            Verdict::ServerError(_)
        ));
    }

    #[test]
    fn messages_come_from_any_usual_shape_and_never_hold_the_key() {
        assert_eq!(message(br#"{"error": "bad"}"#, None), "bad");
        assert_eq!(message(br#"{"detail": "nope"}"#, None), "nope");
        assert_eq!(message(br#"{"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: too big"}}"#, None), "max_tokens: too big");
        assert_eq!(message(b"", None), "(no message)");
        assert_eq!(
            message(
                br#"{"error": {"message": "bad key sk-123 given"}}"#,
                Some("sk-123")
            ),
            "bad key [key] given"
        );
        let long = "x".repeat(2000);
        assert_eq!(
            message(long.as_bytes(), None).chars().count(),
            MESSAGE_CHARS + 1
        );
    }
}
