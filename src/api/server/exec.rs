//! Exec handlers: create, start (hijacked, streamed or detached), inspect, resize.

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kube::api::AttachParams;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::extract::DockerJson;
use super::stream::{frame, hijack, Output, STDERR, STDOUT};
use super::AppState;
use crate::api::error::Result;
use crate::runtime::exec::{exit_code_of, ExecRecord};
use crate::runtime::Runtime;

pub async fn exec_create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    DockerJson(config): DockerJson<Value>,
) -> Result<Response> {
    let view = state.runtime.find(&id)?;
    let exec_id = state.runtime.exec_create(&view, &config)?;
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
    let config: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
    let record = state.runtime.exec_mark_started(&record.id)?;
    let runtime = state.runtime.clone();
    if config["Detach"].as_bool().unwrap_or(false) {
        tokio::spawn(async move { run_exec(runtime, record, None, None).await });
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "",
        )
            .into_response());
    }
    let tty = config["Tty"].as_bool().unwrap_or(record.tty);
    let request = Request::from_parts(parts, axum::body::Body::empty());
    Ok(hijack(request, tty, move |session| async move {
        let input = session.input;
        let mut output = session.output;
        run_exec(runtime, record, Some(&mut output), input).await;
        output.close().await;
    }))
}

/// Runs one exec to completion, copying its output (framed unless TTY) and stdin.
async fn run_exec(
    runtime: std::sync::Arc<Runtime>,
    record: ExecRecord,
    mut output: Option<&mut Output>,
    input: Option<tokio::io::ReadHalf<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>>,
) {
    let params = AttachParams {
        // A TTY without stdin loses output on Kubernetes' side (the pty is torn down before it is
        // drained); with stdin attached (and simply never written) the output arrives.
        stdin: (record.attach_stdin && input.is_some()) || record.tty,
        stdout: true,
        stderr: !record.tty,
        tty: record.tty,
        ..Default::default()
    };
    let mut process = match runtime
        .exec_attach(&record.pod_name, record.argv.clone(), &params)
        .await
    {
        Ok(process) => process,
        Err(error) => {
            if let Some(out) = output.as_mut() {
                let message = format!("{error}\n");
                out.send(if record.tty {
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
    let status = process.take_status();
    let stdout = process.stdout();
    let stderr = process.stderr();
    let stdin_writer = process.stdin();
    // stdin: copied until the client half-closes; the writer is kept until the process ends
    // (closing it early would close the whole v4 exec stream).
    let (stdin_done_tx, stdin_done_rx) =
        tokio::sync::oneshot::channel::<tokio::io::WriteHalf<tokio::io::SimplexStream>>();
    // Held until the process ends when the client sends no stdin: dropping it would close the
    // whole v4 exec stream.
    let mut idle_stdin = None;
    match (input, stdin_writer) {
        (Some(mut input), Some(mut writer)) => {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                loop {
                    match input.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if writer.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stdin_done_tx.send(writer);
            });
        }
        (_, writer) => {
            idle_stdin = writer;
            drop(stdin_done_tx);
        }
    }
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(32);
    let tty = record.tty;
    for (reader, stream) in [(stdout, STDOUT), (stderr, STDERR)] {
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
    let status = match status {
        Some(status) => status.await,
        None => None,
    };
    drop(stdin_done_rx);
    drop(idle_stdin);
    runtime.exec_finish(&record.id, exit_code_of(status.as_ref()));
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

pub async fn exec_resize(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.runtime.exec_get(&id)?;
    Ok(StatusCode::OK)
}
