//! The loopback redirect of the authorization code flow (RFC 8252 section 7.3).
//!
//! The client listens on `127.0.0.1` on a port the kernel picks, names
//! `http://127.0.0.1:<port>/callback` as its redirect URI, and waits for the browser to arrive
//! there with the authorization code. Only that one path is answered; anything else the
//! browser asks for (a favicon, a preconnect) gets a 404 and the wait goes on.

use std::sync::Arc;
use std::time::Duration;

use openidconnect::url::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Path of the redirect URI.
pub const CALLBACK_PATH: &str = "/callback";

/// Largest request head read from the browser.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// How long one browser connection may take to send its request.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no authorization code arrived.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackError {
    /// The listening socket could not be opened.
    #[error("cannot listen for the login callback on 127.0.0.1")]
    Listen(#[source] std::io::Error),
    /// Nothing arrived in time.
    #[error("no login callback arrived within {}", jit_proto::format_duration(*.0))]
    TimedOut(Duration),
    /// The callback's `state` is not the one sent: it does not answer this login.
    #[error("the login callback carried the wrong state; login aborted")]
    StateMismatch,
    /// The callback names another issuer than the one logged in to (RFC 9207).
    #[error("the login callback came from another identity provider; login aborted")]
    IssuerMismatch,
    /// The provider redirected back with an error instead of a code.
    #[error("the identity provider refused the login: {error}{}", describe(.description))]
    Provider {
        /// The OAuth error code.
        error: String,
        /// The provider's explanation, if any.
        description: Option<String>,
    },
    /// The callback had neither a code nor an error.
    #[error("the login callback carried no authorization code")]
    MissingCode,
}

fn describe(description: &Option<String>) -> String {
    description
        .as_deref()
        .map(|text| format!(" ({})", crate::api::one_line(text)))
        .unwrap_or_default()
}

/// What one browser request turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Arrival {
    /// Not the callback path; answered with 404.
    Elsewhere,
    /// The callback with the expected state and a code.
    Code(String),
    /// The callback, but unusable.
    Refused(CallbackKind),
}

/// The ways a callback can be unusable, kept apart from [`CallbackError`] so the parser stays
/// comparable in tests.
#[derive(Debug, PartialEq, Eq)]
enum CallbackKind {
    StateMismatch,
    IssuerMismatch,
    Provider {
        error: String,
        description: Option<String>,
    },
    MissingCode,
}

impl From<CallbackKind> for CallbackError {
    fn from(kind: CallbackKind) -> Self {
        match kind {
            CallbackKind::StateMismatch => CallbackError::StateMismatch,
            CallbackKind::IssuerMismatch => CallbackError::IssuerMismatch,
            CallbackKind::Provider { error, description } => {
                CallbackError::Provider { error, description }
            }
            CallbackKind::MissingCode => CallbackError::MissingCode,
        }
    }
}

/// A bound loopback listener waiting for one callback.
pub struct CallbackListener {
    listener: TcpListener,
    redirect_uri: String,
}

impl CallbackListener {
    /// Binds `127.0.0.1:0`, so the kernel picks a free port.
    pub async fn bind() -> Result<Self, CallbackError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(CallbackError::Listen)?;
        let port = listener.local_addr().map_err(CallbackError::Listen)?.port();
        Ok(CallbackListener {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}{CALLBACK_PATH}"),
        })
    }

    /// The redirect URI to send in the authorization request.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits up to `timeout` for the callback and returns its authorization code.
    ///
    /// Fails on the first callback whose `state` differs from `expected_state` (RFC 6749
    /// section 10.12: a callback without our state may be forged), whose `iss` names another
    /// issuer than `expected_issuer`, or that carries an error.
    pub async fn wait_for_code(
        self,
        expected_state: &str,
        expected_issuer: &str,
        timeout: Duration,
    ) -> Result<String, CallbackError> {
        let expected = Arc::new(Expected {
            state: expected_state.to_owned(),
            issuer: expected_issuer.to_owned(),
        });
        let (arrivals, mut arrived) = mpsc::channel::<Result<String, CallbackKind>>(4);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);

        // Each connection gets its own task, so a browser that opens a connection and sends
        // nothing cannot hold up the one that carries the code.
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let Ok((stream, _peer)) = accepted else { continue };
                    let expected = Arc::clone(&expected);
                    let arrivals = arrivals.clone();
                    tokio::spawn(async move {
                        if let Some(outcome) = serve(stream, &expected).await {
                            let _ = arrivals.send(outcome).await;
                        }
                    });
                }
                Some(outcome) = arrived.recv() => {
                    return outcome.map_err(CallbackError::from);
                }
                () = &mut deadline => return Err(CallbackError::TimedOut(timeout)),
            }
        }
    }
}

/// Answers one connection; returns the callback's outcome, or `None` for anything else.
async fn serve(mut stream: TcpStream, expected: &Expected) -> Option<Result<String, CallbackKind>> {
    let head = tokio::time::timeout(CONNECTION_TIMEOUT, read_head(&mut stream))
        .await
        .ok()??;
    let arrival = classify(&head, expected);

    let (status, body) = match &arrival {
        Arrival::Elsewhere => ("404 Not Found", "Not found."),
        Arrival::Code(_) => (
            "200 OK",
            "You are logged in to jit. You can close this tab and return to the terminal.",
        ),
        Arrival::Refused(_) => (
            "400 Bad Request",
            "The login did not complete. Return to the terminal for details.",
        ),
    };
    let page = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>jit login</title></head>\
         <body><p>{body}</p></body></html>"
    );
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{page}",
        page.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;

    match arrival {
        Arrival::Elsewhere => None,
        Arrival::Code(code) => Some(Ok(code)),
        Arrival::Refused(kind) => Some(Err(kind)),
    }
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 || head.len() + read > MAX_REQUEST_HEAD {
            return None;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8(head).ok()
}

/// What a genuine callback for this login carries.
struct Expected {
    state: String,
    issuer: String,
}

/// Decides what a request head is: the callback (usable or not) or something else.
fn classify(head: &str, expected: &Expected) -> Arrival {
    let request_line = head.lines().next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let (Some("GET"), Some(target)) = (words.next(), words.next()) else {
        return Arrival::Elsewhere;
    };
    let Ok(url) = Url::parse("http://127.0.0.1").and_then(|base| base.join(target)) else {
        return Arrival::Elsewhere;
    };
    if url.path() != CALLBACK_PATH {
        return Arrival::Elsewhere;
    }

    let parameter = |name: &str| {
        url.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };

    // RFC 6749 section 4.1.2.1: an error response carries the same state as a success.
    if parameter("state").as_deref() != Some(expected.state.as_str()) {
        return Arrival::Refused(CallbackKind::StateMismatch);
    }
    // RFC 9207 section 2.4: a provider that names itself must name the one we went to, which
    // defeats mix-up attacks between providers.
    if parameter("iss").is_some_and(|issuer| issuer != expected.issuer) {
        return Arrival::Refused(CallbackKind::IssuerMismatch);
    }
    if let Some(error) = parameter("error") {
        return Arrival::Refused(CallbackKind::Provider {
            error,
            description: parameter("error_description"),
        });
    }
    match parameter("code") {
        Some(code) if !code.is_empty() => Arrival::Code(code),
        _ => Arrival::Refused(CallbackKind::MissingCode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> Expected {
        Expected {
            state: "s1".into(),
            issuer: "https://idp.example.com".into(),
        }
    }

    fn head(target: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    }

    #[test]
    fn accepts_the_callback_with_our_state() {
        let arrival = classify(&head("/callback?code=abc%2F1&state=s1"), &ours());

        assert_eq!(arrival, Arrival::Code("abc/1".into()));
    }

    #[test]
    fn refuses_a_foreign_state() {
        assert_eq!(
            classify(&head("/callback?code=abc&state=other"), &ours()),
            Arrival::Refused(CallbackKind::StateMismatch)
        );
        assert_eq!(
            classify(&head("/callback?code=abc"), &ours()),
            Arrival::Refused(CallbackKind::StateMismatch)
        );
    }

    #[test]
    fn refuses_a_foreign_issuer() {
        let foreign = "/callback?code=abc&state=s1&iss=https%3A%2F%2Fevil.example.com";
        let same = "/callback?code=abc&state=s1&iss=https%3A%2F%2Fidp.example.com";

        assert_eq!(
            classify(&head(foreign), &ours()),
            Arrival::Refused(CallbackKind::IssuerMismatch)
        );
        assert_eq!(classify(&head(same), &ours()), Arrival::Code("abc".into()));
    }

    #[test]
    fn reports_provider_errors() {
        let arrival = classify(
            &head("/callback?error=access_denied&error_description=no+way&state=s1"),
            &ours(),
        );

        assert_eq!(
            arrival,
            Arrival::Refused(CallbackKind::Provider {
                error: "access_denied".into(),
                description: Some("no way".into()),
            })
        );
    }

    #[test]
    fn ignores_other_paths_and_methods() {
        assert_eq!(classify(&head("/favicon.ico"), &ours()), Arrival::Elsewhere);
        assert_eq!(
            classify("POST /callback?code=a&state=s1 HTTP/1.1\r\n\r\n", &ours()),
            Arrival::Elsewhere
        );
        assert_eq!(classify("garbage", &ours()), Arrival::Elsewhere);
    }

    #[tokio::test]
    async fn waits_past_stray_requests_for_the_code() {
        let listener = CallbackListener::bind().await.unwrap();
        let address = listener
            .redirect_uri()
            .trim_start_matches("http://")
            .trim_end_matches(CALLBACK_PATH)
            .to_owned();

        let browser = tokio::spawn(async move {
            for target in ["/favicon.ico", "/callback?code=c0de&state=st"] {
                let mut stream = TcpStream::connect(&address).await.unwrap();
                stream.write_all(head(target).as_bytes()).await.unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).await.unwrap();
            }
        });
        let code = listener
            .wait_for_code("st", "https://idp.example.com", Duration::from_secs(10))
            .await
            .unwrap();
        browser.await.unwrap();

        assert_eq!(code, "c0de");
    }
}
