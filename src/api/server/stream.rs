//! Docker's stream plumbing: stdout/stderr framing, and hijacked connections (`101 UPGRADED`
//! with `Upgrade: tcp`) or, for clients that do not upgrade, a streamed 200 body.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tracing::debug;

pub const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";
pub const RAW: &str = "application/vnd.docker.raw-stream";

/// Stream numbers of the multiplexed format.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// Docker's gap between the 101 and the first payload: docker-py loses bytes that arrive in
/// the same read as the upgrade response (docker-py#2042).
const FIRST_PAYLOAD_DELAY: Duration = Duration::from_millis(50);

/// One multiplexed frame: `[stream, 0, 0, 0, len u32 BE] payload`.
pub fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    Bytes::from(out)
}

/// Whether the client asked to hijack the connection.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).is_some()
        || headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
}

/// Where a hijacked stream writes.
pub enum Output {
    Upgraded(WriteHalf<TokioIo<Upgraded>>),
    Body(mpsc::Sender<Result<Bytes, Infallible>>),
}

impl Output {
    /// Writes; `false` once the client is gone.
    pub async fn send(&mut self, bytes: Bytes) -> bool {
        match self {
            Output::Upgraded(writer) => {
                writer.write_all(&bytes).await.is_ok() && writer.flush().await.is_ok()
            }
            Output::Body(sender) => sender.send(Ok(bytes)).await.is_ok(),
        }
    }

    pub async fn close(self) {
        if let Output::Upgraded(mut writer) = self {
            let _ = writer.shutdown().await;
        }
    }
}

/// The two directions of a hijacked connection.
pub struct Hijacked {
    pub output: Output,
    /// The client's stdin; only on upgraded connections.
    pub input: Option<ReadHalf<TokioIo<Upgraded>>>,
}

/// Answers the request with a hijack (or a streamed 200) and runs `session` on it in a task
/// that owns the connection, so the handler itself is cancellation-safe.
pub fn hijack<F, Fut>(request: Request, tty: bool, session: F) -> Response
where
    F: FnOnce(Hijacked) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let media = if tty { RAW } else { MULTIPLEXED };
    if wants_upgrade(request.headers()) {
        let on_upgrade = hyper::upgrade::on(request);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let (input, output) = tokio::io::split(TokioIo::new(upgraded));
                    tokio::time::sleep(FIRST_PAYLOAD_DELAY).await;
                    session(Hijacked {
                        output: Output::Upgraded(output),
                        input: Some(input),
                    })
                    .await;
                }
                Err(error) => debug!(%error, "Upgrade failed"),
            }
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
        response
    } else {
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(session(Hijacked {
            output: Output::Body(sender),
            input: None,
        }));
        let body = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        ([(header::CONTENT_TYPE, media)], Body::from_stream(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_docker_multiplexed() {
        assert_eq!(
            &frame(STDOUT, b"hi\n")[..],
            &[1, 0, 0, 0, 0, 0, 0, 3, b'h', b'i', b'\n']
        );
        assert_eq!(frame(STDERR, b"")[0], 2);
    }
}
