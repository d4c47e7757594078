//! Container output: `pods/log` of `main`, line by line, with Docker's since/until/tail/timestamps.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::AsyncBufReadExt;
use futures::Stream;
use kube::api::LogParams;

use super::state::{main_status, MAIN_CONTAINER};
use super::{ContainerView, Runtime};

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
    /// Wait for the next run of the container (attach before start).
    pub next_run: bool,
}

impl Runtime {
    /// Output lines of the container's current (or last) process. The stream is returned at
    /// once (so response headers go out) and waits inside for a process to read from: with
    /// `follow` it waits for a not-yet-running container to start, with `next_run` for a new
    /// run (attach before start), and it ends when the followed process ends.
    pub fn logs(
        self: &Arc<Self>,
        view: &ContainerView,
        options: LogOptions,
    ) -> impl Stream<Item = Bytes> + Send + 'static {
        let runtime = self.clone();
        let id = view.id.clone();
        let initial_key = view.state.exit_key.clone();
        async_stream::stream! {
            if options.follow || options.next_run {
                runtime.wait_until(FOLLOW_START_TIMEOUT, |rt| match rt.find(&id) {
                    Ok(v) => {
                        let main_state = v.pod.as_deref().and_then(main_status).and_then(|s| s.state.clone());
                        let running = main_state.as_ref().is_some_and(|s| s.running.is_some());
                        let finished = main_state.as_ref().is_some_and(|s| s.terminated.is_some());
                        if options.next_run {
                            running || (finished && v.state.exit_key != initial_key)
                        } else {
                            running || finished || (v.pod.is_none() && v.state.is_exited())
                        }
                    }
                    Err(_) => true,
                })
                .await;
            }
            let Ok(view) = runtime.find(&id) else { return };
            if view.pod.is_none() {
                return;
            }
            let params = LogParams {
                container: Some(MAIN_CONTAINER.into()),
                follow: options.follow,
                timestamps: true,
                tail_lines: options.tail.filter(|t| *t >= 0),
                since_time: options.since.filter(|s| *s > 0.0).and_then(|s| jiff::Timestamp::from_second(s as i64).ok()),
                ..Default::default()
            };
            let pod = view.pod_name.clone();
            let reader = match tokio::time::timeout(OPEN_TIMEOUT, runtime.pods_api().log_stream(&pod, &params)).await {
                Ok(Ok(reader)) => reader,
                Ok(Err(error)) => {
                    tracing::warn!(%pod, %error, "Opening logs failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%pod, "Opening logs timed out");
                    return;
                }
            };
            let since = options.since.filter(|s| *s > 0.0);
            let until = options.until.filter(|u| *u > 0.0);
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
                yield if options.timestamps { Bytes::from(line) } else { Bytes::copy_from_slice(text) };
            }
        }
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
