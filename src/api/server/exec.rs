//! Exec handlers: create, start (hijacked, streamed or detached), inspect, resize.

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::extract::{DockerJson, Query};
use super::stream::{frame, hijack, Output, STDERR, STDOUT};
use super::AppState;
use crate::api::error::{ApiError, Result};
use crate::runtime::exec::{exit_code_of, ExecRecord};
use crate::runtime::remote_command::Streams;
use crate::runtime::Runtime;

pub async fn exec_create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    DockerJson(config): DockerJson<Value>,
) -> Result<Response> {
    let view = state.runtime.find(&id)?;
    let exec_id = state
        .runtime
        .exec_create(&view, &crate::api::decode::decode_exec(&config))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": exec_id})).into_response(),
    )
        .into_response())
}

/// `POST /exec/{id}/start`: runs the command; the connection closes only after the exit code is
/// recorded, so the client's follow-up inspect sees it.
pub async fn exec_start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response> {
    let record = state.runtime.exec_get(&id)?;
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let start = crate::api::decode::decode_exec_start(&bytes);
    // Attached or detached, a running exec holds a connection to the kubelet: a stream slot.
    let permit = state.runtime.stream_permit()?;
    let record = state
        .runtime
        .exec_mark_started(&record.id, start.console_size)?;
    let runtime = state.runtime.clone();
    if start.detach {
        tokio::spawn(async move {
            let _permit = permit;
            let raw = record.tty;
            run_exec(runtime, record, raw, None, None).await
        });
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "",
        )
            .into_response());
    }
    // The start body's Tty decides the framing, as in Docker (the daemon multiplexes unless the
    // start asks for a raw stream, whatever the exec's own terminal); the media type and the
    // bytes must agree. Without it, the exec's own Tty.
    let tty = start.tty.unwrap_or(record.tty);
    let request = Request::from_parts(parts, axum::body::Body::empty());
    Ok(hijack(request, tty, move |session| async move {
        let _permit = permit;
        let input = session.input;
        let mut output = session.output;
        run_exec(runtime, record, tty, Some(&mut output), input).await;
        output.close().await;
    }))
}

/// Runs one exec to completion, copying its output (framed unless `raw`) and stdin; the client's
/// half-close reaches the process as EOF.
async fn run_exec(
    runtime: std::sync::Arc<Runtime>,
    record: ExecRecord,
    raw: bool,
    mut output: Option<&mut Output>,
    input: Option<tokio::io::ReadHalf<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>>,
) {
    let streams = Streams {
        // A TTY without stdin loses output on Kubernetes' side (the pty is torn down before it is
        // drained); with stdin attached (and simply never written) the output arrives.
        stdin: (record.attach_stdin && input.is_some()) || record.tty,
        stdout: true,
        stderr: !record.tty,
        tty: record.tty,
        initial_size: record.tty_size,
    };
    let mut session = match runtime
        .exec_open(&record.pod_name, &record.argv, streams)
        .await
    {
        Ok(session) => session,
        Err(error) => {
            if let Some(out) = output.as_mut() {
                let message = format!("{error}\n");
                out.send(if raw {
                    Bytes::from(message)
                } else {
                    frame(STDERR, message.as_bytes())
                })
                .await;
            }
            runtime.exec_finish(&record.id, 126);
            return;
        }
    };
    if let Some(resizer) = session.resize.take() {
        // A resize that came while the session was opening.
        let size = runtime.exec_track_resizer(&record.id, resizer.clone());
        if let Some((width, height)) = size.filter(|size| Some(*size) != record.tty_size) {
            resizer.resize(width, height).await;
        }
    }
    // Stdin the client does not feed stays open until the process ends: closing it would end a
    // TTY's input.
    let mut idle_stdin = None;
    let mut copy_stdin = None;
    match (input, session.stdin.take()) {
        (Some(mut input), Some(mut writer)) if record.attach_stdin => {
            copy_stdin = Some(tokio::spawn(async move {
                let _ = tokio::io::copy(&mut input, &mut writer).await;
                let _ = writer.shutdown().await;
            }));
        }
        (_, writer) => idle_stdin = writer,
    }
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(32);
    let tty = raw;
    for (reader, stream) in [
        (session.stdout.take(), STDOUT),
        (session.stderr.take(), STDERR),
    ] {
        if let Some(mut reader) = reader {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 32 * 1024];
                loop {
                    match reader.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let bytes = if tty {
                                Bytes::copy_from_slice(&buffer[..n])
                            } else {
                                frame(stream, &buffer[..n])
                            };
                            if sender.send(bytes).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    }
    drop(sender);
    while let Some(bytes) = receiver.recv().await {
        if let Some(out) = output.as_mut() {
            if !out.send(bytes).await {
                output = None;
            }
        }
    }
    let exit_code = match session.status().await {
        Ok(status) => exit_code_of(status.as_ref()),
        Err(error) => {
            tracing::warn!(exec = %record.id, %error, "Exec ended without an exit status");
            126
        }
    };
    drop(idle_stdin);
    if let Some(copy) = copy_stdin {
        copy.abort();
    }
    runtime.exec_finish(&record.id, exit_code);
}

pub async fn exec_inspect(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let record = state.runtime.exec_get(&id)?;
    Ok(Json(json!({
        "ID": record.id, "ContainerID": record.container_id, "Running": record.running,
        "ExitCode": record.exit_code, "OpenStdin": record.attach_stdin, "OpenStdout": record.attach_stdout,
        "OpenStderr": record.attach_stderr, "CanRemove": false, "DetachKeys": "", "Pid": if record.running { 1 } else { 0 },
        "ProcessConfig": {"tty": record.tty, "entrypoint": record.cmd.first(), "arguments": record.cmd.iter().skip(1).collect::<Vec<_>>(),
            "privileged": false, "user": record.user},
    })))
}

/// `POST /exec/{id}/resize?h=&w=`: sent on the session's resize stream when the exec has a TTY.
/// `h` or `w` of a resize request.
pub fn terminal_dimension(
    query: &std::collections::HashMap<String, String>,
    name: &str,
) -> Result<u16> {
    let value = query.get(name).map(String::as_str).unwrap_or_default();
    value.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid {name} {value:?}: expected a number from 0 to 65535"
        ))
    })
}

pub async fn exec_resize(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<StatusCode> {
    let (height, width) = (
        terminal_dimension(&query, "h")?,
        terminal_dimension(&query, "w")?,
    );
    state.runtime.exec_resize(&id, width, height).await?;
    Ok(StatusCode::OK)
}
