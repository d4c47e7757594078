//! Container output: `pods/log` of `main`, line by line, with Docker's since/until/tail/timestamps.

use std::time::Duration;

use bytes::Bytes;
use futures::AsyncBufReadExt;
use futures::Stream;
use kube::api::LogParams;

use super::state::{main_status, MAIN_CONTAINER};
use super::{ContainerView, Result, Runtime, RuntimeError};

const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a follower waits for a started container's process to appear.
const FOLLOW_START_TIMEOUT: Duration = Duration::from_secs(600);

/// Docker's log query, parsed.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub since: Option<f64>,
    pub until: Option<f64>,
    /// `None` is all lines.
    pub tail: Option<i64>,
    pub timestamps: bool,
}

impl Runtime {
    /// Output lines of the container's current (or last) process. With `follow`, the stream
    /// ends when the process ends; a container that has not started yet is waited for.
    pub async fn logs(
        &self,
        view: &ContainerView,
        options: LogOptions,
    ) -> Result<impl Stream<Item = Bytes> + Send + 'static> {
        let id = view.id.clone();
        if options.follow {
            let initial_key = view.state.exit_key.clone();
            let was_running = view.state.running;
            self.wait_until(FOLLOW_START_TIMEOUT, |rt| match rt.find(&id) {
                Ok(v) => {
                    let main_state = v
                        .pod
                        .as_deref()
                        .and_then(main_status)
                        .and_then(|s| s.state.clone());
                    let running = main_state.as_ref().is_some_and(|s| s.running.is_some());
                    let finished = main_state.as_ref().is_some_and(|s| s.terminated.is_some());
                    running
                        || (finished && (was_running || v.state.exit_key != initial_key))
                        || (v.pod.is_none()
                            && v.state.is_exited()
                            && !was_running
                            && initial_key.is_some())
                }
                Err(_) => true,
            })
            .await;
        }
        let Ok(view) = self.find(&id) else {
            return Ok(futures::stream::empty().boxed_send());
        };
        if view.pod.is_none() {
            return Ok(futures::stream::empty().boxed_send());
        }
        let params = LogParams {
            container: Some(MAIN_CONTAINER.into()),
            follow: options.follow,
            timestamps: true,
            tail_lines: options.tail.filter(|t| *t >= 0),
            since_time: options
                .since
                .filter(|s| *s > 0.0)
                .and_then(|s| jiff::Timestamp::from_second(s as i64).ok()),
            ..Default::default()
        };
        let pod = view.pod_name.clone();
        let reader =
            match tokio::time::timeout(OPEN_TIMEOUT, self.pods_api().log_stream(&pod, &params))
                .await
            {
                Ok(Ok(reader)) => reader,
                Ok(Err(kube::Error::Api(status))) if status.code == 400 => {
                    return Ok(futures::stream::empty().boxed_send());
                }
                Ok(Err(source)) => {
                    return Err(RuntimeError::Kube {
                        operation: "logs",
                        pod,
                        source,
                    })
                }
                Err(_) => {
                    return Err(RuntimeError::Timeout {
                        operation: "logs",
                        pod,
                        seconds: OPEN_TIMEOUT.as_secs(),
                    })
                }
            };
        let since = options.since.filter(|s| *s > 0.0);
        let until = options.until.filter(|u| *u > 0.0);
        let timestamps = options.timestamps;
        let stream = async_stream::stream! {
            let mut reader = Box::pin(reader);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let (stamp, text) = split_timestamp(&line);
                let at = stamp.and_then(|s| s.parse::<jiff::Timestamp>().ok()).map(|t| t.as_nanosecond() as f64 / 1e9);
                if let (Some(at), Some(since)) = (at, since) {
                    if at < since {
                        continue;
                    }
                }
                if let (Some(at), Some(until)) = (at, until) {
                    if at > until {
                        break;
                    }
                }
                yield if timestamps { Bytes::from(line) } else { Bytes::copy_from_slice(text) };
            }
        };
        Ok(stream.boxed_send())
    }
}

/// Splits the RFC 3339 timestamp Kubernetes puts before each line.
fn split_timestamp(line: &[u8]) -> (Option<&str>, &[u8]) {
    match line.iter().position(|b| *b == b' ') {
        Some(space)
            if space > 19
                && line[..space].iter().all(|b| b.is_ascii_graphic())
                && line[4] == b'-' =>
        {
            (std::str::from_utf8(&line[..space]).ok(), &line[space + 1..])
        }
        _ => (None, line),
    }
}

/// Boxing helper so every branch returns one type.
trait BoxedSend: Stream<Item = Bytes> + Send + Sized + 'static {
    fn boxed_send(self) -> std::pin::Pin<Box<dyn Stream<Item = Bytes> + Send>> {
        Box::pin(self)
    }
}

impl<S: Stream<Item = Bytes> + Send + 'static> BoxedSend for S {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_kubernetes_timestamp() {
        let (stamp, text) = split_timestamp(b"2026-01-01T00:00:00.123456789Z hello world\n");
        assert_eq!(stamp, Some("2026-01-01T00:00:00.123456789Z"));
        assert_eq!(text, b"hello world\n");
        assert_eq!(split_timestamp(b"plain\n"), (None, &b"plain\n"[..]));
    }
}
