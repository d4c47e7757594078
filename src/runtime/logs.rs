//! Container output: `pods/log` of `main`, line by line, with Docker's since/until/tail/timestamps.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::AsyncBufReadExt;
use futures::Stream;
use kube::api::LogParams;

use super::limits::MAX_LOG_LINE;
use super::state::{main_status, MAIN_CONTAINER};
use super::{ContainerView, Runtime};

const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Key of a container spec's data holding the end of its output, kept when podbridge deleted
/// its pod (`Runtime::keep_last_logs`), with Kubernetes' timestamps.
pub const KEPT_LOG_KEY: &str = "last-logs";
/// How much of that output is kept: the last lines, up to these bytes.
pub const KEPT_LOG_LINES: i64 = 2000;
pub const KEPT_LOG_BYTES: usize = 128 * 1024;
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
        let builtin = view.is_builtin_ryuk();
        async_stream::stream! {
            if builtin {
                for await line in super::ryuk::log_lines(runtime.clone(), id.clone(), options.clone()) {
                    yield line;
                }
                return;
            }
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
            let since = options.since.filter(|s| *s > 0.0);
            let until = options.until.filter(|u| *u > 0.0);
            if view.pod.is_none() {
                // A pod podbridge deleted (kill, stop past its grace): the output it kept.
                let kept = view.spec.data.as_ref().and_then(|d| d.get(KEPT_LOG_KEY)).cloned().unwrap_or_default();
                let lines: Vec<&str> = kept.split_inclusive('\n').collect();
                let skip = match options.tail.filter(|t| *t >= 0) {
                    Some(tail) => lines.len().saturating_sub(tail as usize),
                    None => 0,
                };
                for line in &lines[skip..] {
                    let (stamp, text) = split_timestamp(line.as_bytes());
                    let at = stamp.and_then(|s| s.parse::<jiff::Timestamp>().ok()).map(|t| t.as_nanosecond() as f64 / 1e9);
                    if matches!((at, since), (Some(at), Some(since)) if at < since) {
                        continue;
                    }
                    if matches!((at, until), (Some(at), Some(until)) if at > until) {
                        break;
                    }
                    yield if options.timestamps { Bytes::copy_from_slice(line.as_bytes()) } else { Bytes::copy_from_slice(text) };
                }
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
            let mut reader = Box::pin(reader);
            loop {
                let mut line = Vec::new();
                match read_line_capped(&mut reader, &mut line, MAX_LOG_LINE).await {
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

/// Reads up to and including the next `\n`, or `max` bytes of a longer line (the rest comes
/// with the next call), so a process that never ends its line cannot grow the buffer.
async fn read_line_capped<R: futures::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    let start = line.len();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(line.len() - start);
        }
        let room = max.saturating_sub(line.len() - start);
        let window = &available[..available.len().min(room)];
        let (taken, done) = match window.iter().position(|b| *b == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (window.len(), window.len() == room),
        };
        line.extend_from_slice(&window[..taken]);
        reader.consume_unpin(taken);
        if done {
            return Ok(line.len() - start);
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

    #[tokio::test]
    async fn long_lines_are_split_at_the_cap() {
        let mut data = vec![b'x'; 40];
        data.extend_from_slice(b"\nshort\n");
        let mut reader = futures::io::Cursor::new(data);
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            if read_line_capped(&mut reader, &mut line, 16).await.unwrap() == 0 {
                break;
            }
            lines.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(
            lines,
            [
                "x".repeat(16),
                "x".repeat(16),
                "x".repeat(8) + "\n",
                "short\n".into()
            ]
        );
    }

    #[test]
    fn splits_kubernetes_timestamp() {
        let (stamp, text) = split_timestamp(b"2026-01-01T00:00:00.123456789Z hello world\n");
        assert_eq!(stamp, Some("2026-01-01T00:00:00.123456789Z"));
        assert_eq!(text, b"hello world\n");
        assert_eq!(split_timestamp(b"plain\n"), (None, &b"plain\n"[..]));
    }
}
