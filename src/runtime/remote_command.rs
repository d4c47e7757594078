//! Kubernetes remotecommand (`pods/exec`, `pods/attach`) over SPDY/3.1, protocol
//! `v4.channel.k8s.io`, the way kubectl speaks it: what exec, attach, archive and signals run on.
//!
//! One HTTP upgrade through the kube client (its auth and TLS), then one SPDY stream per channel
//! (`error`, `stdin`, `stdout`, `stderr`, `resize`). Unlike the v4 websocket protocol, stdin can
//! be closed on its own (a FIN data frame), so `cat` sees EOF and still delivers its output.
//! The final `metav1.Status` arrives on the error stream.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper_util::rt::TokioIo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::client::Body;
use kube::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::spdy::{Codec, Frame, SpdyError};

/// The only remotecommand protocol spoken: it has the error stream with a `metav1.Status`, and
/// (with a TTY) the resize stream.
pub const PROTOCOL: &str = "v4.channel.k8s.io";
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// Buffer between a stream and its reader or writer in the process.
const PIPE_BUFFER: usize = 64 * 1024;
/// Largest stdin chunk sent in one data frame.
const STDIN_CHUNK: usize = 32 * 1024;
/// RST_STREAM status for a stream the server tries to open.
const REFUSED_STREAM: u32 = 3;

pub type Result<T, E = RemoteCommandError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RemoteCommandError {
    #[error("building the {subresource} request: {source}")]
    BuildRequest {
        subresource: &'static str,
        source: hyper::http::Error,
    },
    #[error("sending the {subresource} request: {source}")]
    RequestFailed {
        subresource: &'static str,
        source: kube::Error,
    },
    #[error("{subresource} refused with HTTP {status}: {message}")]
    Refused {
        subresource: &'static str,
        status: u16,
        message: String,
    },
    #[error(
        "{subresource} answered stream protocol {answered:?}; podbridge speaks {PROTOCOL} only"
    )]
    ProtocolMismatch {
        subresource: &'static str,
        answered: String,
    },
    #[error("upgrading the {subresource} connection to SPDY: {source}")]
    UpgradeFailed {
        subresource: &'static str,
        source: hyper::Error,
    },
    #[error("the {subresource} connection closed before its streams were accepted")]
    StreamsNotAccepted { subresource: &'static str },
    #[error("the {subresource} connection closed before the exit status arrived")]
    ClosedWithoutStatus { subresource: &'static str },
    #[error("unreadable exit status on the {subresource} error stream: {source}")]
    UnreadableStatus {
        subresource: &'static str,
        source: serde_json::Error,
    },
    #[error("{subresource} connection: {source}")]
    Protocol {
        subresource: &'static str,
        source: SpdyError,
    },
}

/// What to run: a command (`pods/exec`) or the container's own process (`pods/attach`).
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Exec(&'a [String]),
    Attach,
}

impl Target<'_> {
    fn subresource(&self) -> &'static str {
        match self {
            Target::Exec(_) => "exec",
            Target::Attach => "attach",
        }
    }
}

/// Which channels to open. With `tty`, stderr is merged into stdout by the terminal, and a
/// resize stream is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// Terminal size (width, height) sent right behind the stream openings, so that it usually
    /// reaches the pty before the process looks at it (the server starts the process as soon
    /// as all streams exist, with a 0x0 terminal).
    pub initial_size: Option<(u16, u16)>,
}

/// Sends terminal sizes to a TTY session; clones share the session.
#[derive(Debug, Clone)]
pub struct Resizer {
    frames: mpsc::Sender<Frame>,
    stream_id: u32,
}

impl Resizer {
    /// Sends one size; false once the session has ended.
    pub async fn resize(&self, width: u16, height: u16) -> bool {
        let message = format!("{{\"Width\":{width},\"Height\":{height}}}");
        self.frames
            .send(Frame::Data {
                stream_id: self.stream_id,
                fin: false,
                data: Bytes::from(message),
            })
            .await
            .is_ok()
    }
}

/// An open remotecommand session. Writing to `stdin` sends data; shutting it down or dropping
/// it closes the process's stdin. `stdout` and `stderr` end when the server closes them.
/// Dropping the session closes the connection.
#[derive(Debug)]
pub struct Session {
    pub stdin: Option<DuplexStream>,
    pub stdout: Option<DuplexStream>,
    pub stderr: Option<DuplexStream>,
    pub resize: Option<Resizer>,
    subresource: &'static str,
    status: oneshot::Receiver<Result<Option<Status>>>,
    _reader: AbortOnDrop,
}

impl Session {
    /// Waits for the end of the session and returns its final status (`None`: the error stream
    /// closed empty).
    pub async fn status(self) -> Result<Option<Status>> {
        let subresource = self.subresource;
        self.status
            .await
            .unwrap_or(Err(RemoteCommandError::ClosedWithoutStatus { subresource }))
    }
}

/// Aborts a task when dropped, so no task outlives the session that owns it.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens `target` in `container` of `pod` with the given channels.
pub async fn open(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: &str,
    target: Target<'_>,
    streams: Streams,
) -> Result<Session> {
    let subresource = target.subresource();
    let request = upgrade_request(namespace, pod, container, target, streams)?;
    let mut response =
        client
            .send(request)
            .await
            .map_err(|source| RemoteCommandError::RequestFailed {
                subresource,
                source,
            })?;
    if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<Status>(&body)
            .ok()
            .and_then(|s| s.message)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(RemoteCommandError::Refused {
            subresource,
            status,
            message,
        });
    }
    let answered = response
        .headers()
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if answered != PROTOCOL {
        return Err(RemoteCommandError::ProtocolMismatch {
            subresource,
            answered,
        });
    }
    let upgraded = hyper::upgrade::on(&mut response).await.map_err(|source| {
        RemoteCommandError::UpgradeFailed {
            subresource,
            source,
        }
    })?;
    let (read_half, write_half) = tokio::io::split(TokioIo::new(upgraded));
    start(read_half, write_half, subresource, streams).await
}

fn upgrade_request(
    namespace: &str,
    pod: &str,
    container: &str,
    target: Target<'_>,
    streams: Streams,
) -> Result<hyper::Request<Body>> {
    let subresource = target.subresource();
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("container", container);
    if let Target::Exec(command) = target {
        for arg in command {
            query.append_pair("command", arg);
        }
    }
    for (name, on) in [
        ("stdin", streams.stdin),
        ("stdout", streams.stdout),
        ("stderr", streams.stderr && !streams.tty),
        ("tty", streams.tty),
    ] {
        query.append_pair(name, if on { "true" } else { "false" });
    }
    let uri = format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}/{subresource}?{}",
        query.finish()
    );
    hyper::Request::post(uri)
        .header(CONNECTION, HeaderValue::from_static("Upgrade"))
        .header(UPGRADE, HeaderValue::from_static("SPDY/3.1"))
        .header(PROTOCOL_HEADER, HeaderValue::from_static(PROTOCOL))
        .body(Body::empty())
        .map_err(|source| RemoteCommandError::BuildRequest {
            subresource,
            source,
        })
}

/// Channel kinds in the order a v4 client opens them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

impl Channel {
    fn stream_type(self) -> &'static str {
        match self {
            Channel::Error => "error",
            Channel::Stdin => "stdin",
            Channel::Stdout => "stdout",
            Channel::Stderr => "stderr",
            Channel::Resize => "resize",
        }
    }
}

/// The channels of `streams`, with their client stream ids (odd, in opening order).
fn channels(streams: Streams) -> Vec<(Channel, u32)> {
    let wanted = [
        (Channel::Error, true),
        (Channel::Stdin, streams.stdin),
        (Channel::Stdout, streams.stdout),
        (Channel::Stderr, streams.stderr && !streams.tty),
        (Channel::Resize, streams.tty),
    ];
    wanted
        .into_iter()
        .filter(|(_, on)| *on)
        .enumerate()
        .map(|(index, (channel, _))| (channel, 2 * index as u32 + 1))
        .collect()
}

/// Runs the SPDY session over an upgraded connection: opens the channels, waits until the
/// server accepted all of them, and hands out their ends.
async fn start<R, W>(
    read_half: R,
    write_half: W,
    subresource: &'static str,
    streams: Streams,
) -> Result<Session>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let channels = channels(streams);
    let id_of = |wanted: Channel| {
        channels
            .iter()
            .find(|(channel, _)| *channel == wanted)
            .map(|(_, id)| *id)
    };
    let (frames, outgoing) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(write_frames(write_half, outgoing, subresource));
    for (channel, stream_id) in &channels {
        let syn = Frame::SynStream {
            stream_id: *stream_id,
            fin: false,
            headers: vec![("streamtype".into(), channel.stream_type().into())],
        };
        // Cannot fail: the writer holds the receiver until every sender is gone.
        let _ = frames.send(syn).await;
    }

    let (mut stdout, mut stderr, mut outputs) = (None, None, Vec::new());
    for (channel, end) in [
        (Channel::Stdout, &mut stdout),
        (Channel::Stderr, &mut stderr),
    ] {
        if let Some(stream_id) = id_of(channel) {
            let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
            outputs.push((stream_id, Some(ours)));
            *end = Some(theirs);
        }
    }
    let (mut stdin, mut stdin_pump) = (None, None);
    if let Some(stream_id) = id_of(Channel::Stdin) {
        let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
        stdin = Some(theirs);
        stdin_pump = Some(AbortOnDrop(tokio::spawn(pump_stdin(
            ours,
            frames.clone(),
            stream_id,
        ))));
    }
    let resize = id_of(Channel::Resize).map(|stream_id| Resizer {
        frames: frames.clone(),
        stream_id,
    });
    if let (Some(resize), Some((width, height))) = (&resize, streams.initial_size) {
        resize.resize(width, height).await;
    }

    let (accepted_tx, accepted_rx) = oneshot::channel();
    let (status_tx, status) = oneshot::channel();
    let reader = Reader {
        subresource,
        frames,
        outputs,
        error_stream: id_of(Channel::Error).unwrap_or(1),
        error: Vec::new(),
        error_ended: false,
        awaiting_reply: channels.iter().map(|(_, id)| *id).collect(),
        accepted: Some(accepted_tx),
    };
    let tasks = [Some(AbortOnDrop(writer)), stdin_pump];
    let reader = AbortOnDrop(tokio::spawn(async move {
        let result = reader.run(read_half).await;
        // The connection is done: stop writing and release stdin.
        drop(tasks);
        let _ = status_tx.send(result);
    }));
    if accepted_rx.await.is_err() {
        // The reader has ended; its error says why.
        return Err(match status.await {
            Ok(Err(error)) => error,
            _ => RemoteCommandError::StreamsNotAccepted { subresource },
        });
    }
    Ok(Session {
        stdin,
        stdout,
        stderr,
        resize,
        subresource,
        status,
        _reader: reader,
    })
}

async fn write_frames<W>(write_half: W, mut outgoing: mpsc::Receiver<Frame>, subresource: &str)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut sink = FramedWrite::new(write_half, Codec::default());
    while let Some(frame) = outgoing.recv().await {
        if let Err(error) = sink.send(frame).await {
            tracing::debug!(%subresource, %error, "Writing to the SPDY connection failed");
            return;
        }
    }
}

/// Copies the process side of stdin into data frames; at EOF sends FIN.
async fn pump_stdin(mut pipe: DuplexStream, frames: mpsc::Sender<Frame>, stream_id: u32) {
    let mut buffer = vec![0u8; STDIN_CHUNK];
    loop {
        let (data, fin) = match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => (Bytes::new(), true),
            Ok(n) => (Bytes::copy_from_slice(&buffer[..n]), false),
        };
        let frame = Frame::Data {
            stream_id,
            fin,
            data,
        };
        if frames.send(frame).await.is_err() || fin {
            return;
        }
    }
}

/// The receiving half of a session.
struct Reader {
    subresource: &'static str,
    frames: mpsc::Sender<Frame>,
    /// stdout and stderr: stream id and the pipe to the process (None once closed).
    outputs: Vec<(u32, Option<DuplexStream>)>,
    error_stream: u32,
    error: Vec<u8>,
    error_ended: bool,
    awaiting_reply: Vec<u32>,
    accepted: Option<oneshot::Sender<()>>,
}

impl Reader {
    async fn run<R>(mut self, read_half: R) -> Result<Option<Status>>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        let subresource = self.subresource;
        let mut incoming = FramedRead::new(read_half, Codec::default());
        while !self.finished() {
            let frame = match incoming.next().await {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(source)) => {
                    return Err(RemoteCommandError::Protocol {
                        subresource,
                        source,
                    })
                }
            };
            self.handle(frame).await;
        }
        // Whatever is still open ends with the connection.
        self.outputs.clear();
        if self.accepted.is_some() {
            return Err(RemoteCommandError::StreamsNotAccepted { subresource });
        }
        if self.error.is_empty() {
            return if self.error_ended {
                Ok(None)
            } else {
                Err(RemoteCommandError::ClosedWithoutStatus { subresource })
            };
        }
        serde_json::from_slice(&self.error)
            .map(Some)
            .map_err(|source| RemoteCommandError::UnreadableStatus {
                subresource,
                source,
            })
    }

    fn finished(&self) -> bool {
        self.error_ended && self.outputs.iter().all(|(_, pipe)| pipe.is_none())
    }

    async fn handle(&mut self, frame: Frame) {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if stream_id == self.error_stream {
                    self.error.extend_from_slice(&data);
                } else if let Some((_, slot)) =
                    self.outputs.iter_mut().find(|(id, _)| *id == stream_id)
                {
                    if let Some(pipe) = slot.as_mut() {
                        // A reader that went away no longer gets data; the stream is drained.
                        if !data.is_empty() && pipe.write_all(&data).await.is_err() {
                            *slot = None;
                        }
                    }
                }
                if fin {
                    self.end_stream(stream_id);
                }
            }
            Frame::SynReply { stream_id, fin } => {
                self.awaiting_reply.retain(|id| *id != stream_id);
                if self.awaiting_reply.is_empty() {
                    if let Some(accepted) = self.accepted.take() {
                        let _ = accepted.send(());
                    }
                }
                if fin {
                    self.end_stream(stream_id);
                }
            }
            Frame::Headers { stream_id, fin } if fin => self.end_stream(stream_id),
            Frame::RstStream { stream_id, status } => {
                tracing::debug!(subresource = %self.subresource, stream_id, status, "SPDY stream reset");
                self.end_stream(stream_id);
            }
            Frame::Ping { id } => {
                let _ = self.frames.send(Frame::Ping { id }).await;
            }
            Frame::SynStream { stream_id, .. } => {
                let reset = Frame::RstStream {
                    stream_id,
                    status: REFUSED_STREAM,
                };
                let _ = self.frames.send(reset).await;
            }
            Frame::GoAway { .. }
            | Frame::Settings
            | Frame::Headers { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }

    fn end_stream(&mut self, stream_id: u32) {
        if stream_id == self.error_stream {
            self.error_ended = true;
        }
        for (id, pipe) in &mut self.outputs {
            if *id == stream_id {
                *pipe = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_follow_v4_order() {
        let all = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
            initial_size: None,
        };
        assert_eq!(
            channels(all),
            vec![
                (Channel::Error, 1),
                (Channel::Stdin, 3),
                (Channel::Stdout, 5),
                (Channel::Stderr, 7)
            ]
        );
        let tty = Streams { tty: true, ..all };
        assert_eq!(
            channels(tty),
            vec![
                (Channel::Error, 1),
                (Channel::Stdin, 3),
                (Channel::Stdout, 5),
                (Channel::Resize, 7)
            ]
        );
    }

    #[test]
    fn upgrade_request_names_command_and_protocol() {
        let command = vec!["sh".to_string(), "-c".to_string(), "echo a b&c".to_string()];
        let streams = Streams {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let request =
            upgrade_request("ns", "pod", "main", Target::Exec(&command), streams).unwrap();
        assert_eq!(request.method(), hyper::Method::POST);
        assert_eq!(
            request.uri().to_string(),
            "/api/v1/namespaces/ns/pods/pod/exec?container=main&command=sh&command=-c\
             &command=echo+a+b%26c&stdin=false&stdout=true&stderr=true&tty=false"
        );
        assert_eq!(request.headers()[UPGRADE], "SPDY/3.1");
        assert_eq!(request.headers()[PROTOCOL_HEADER], PROTOCOL);
    }

    /// A scripted server on an in-memory pipe: accepts the streams, echoes stdin to stdout,
    /// and ends with a status once stdin is closed.
    async fn echo_server(io: DuplexStream, status: &'static str) -> Vec<Frame> {
        let (read, write) = tokio::io::split(io);
        let mut incoming = FramedRead::new(read, Codec::default());
        let mut outgoing = FramedWrite::new(write, Codec::default());
        let mut seen = Vec::new();
        while let Some(Ok(frame)) = incoming.next().await {
            seen.push(frame.clone());
            match frame {
                Frame::SynStream { stream_id, .. } => {
                    let reply = Frame::SynReply {
                        stream_id,
                        fin: false,
                    };
                    outgoing.send(reply).await.unwrap();
                    if stream_id == 7 {
                        outgoing.send(Frame::Ping { id: 2 }).await.unwrap();
                    }
                }
                Frame::Data {
                    stream_id: 3,
                    fin,
                    data,
                } => {
                    if !data.is_empty() {
                        let echo = Frame::Data {
                            stream_id: 5,
                            fin: false,
                            data,
                        };
                        outgoing.send(echo).await.unwrap();
                    }
                    if fin {
                        for frame in [
                            Frame::Data {
                                stream_id: 7,
                                fin: true,
                                data: Bytes::from_static(b"bye\n"),
                            },
                            Frame::Data {
                                stream_id: 5,
                                fin: true,
                                data: Bytes::new(),
                            },
                            Frame::Data {
                                stream_id: 1,
                                fin: false,
                                data: Bytes::from_static(status.as_bytes()),
                            },
                            Frame::RstStream {
                                stream_id: 1,
                                status: 5,
                            },
                        ] {
                            outgoing.send(frame).await.unwrap();
                        }
                    }
                }
                _ => {}
            }
        }
        seen
    }

    #[tokio::test]
    async fn stdin_eof_reaches_the_server_and_status_comes_back() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let status = r#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        let server = tokio::spawn(echo_server(server, status));
        let (read, write) = tokio::io::split(client);
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
            initial_size: None,
        };
        let mut session = start(read, write, "exec", streams).await.unwrap();
        let mut stdin = session.stdin.take().unwrap();
        let mut stdout = session.stdout.take().unwrap();
        let mut stderr = session.stderr.take().unwrap();
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let write = async {
            stdin.write_all(&payload).await.unwrap();
            stdin.shutdown().await.unwrap();
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = stdout.read_to_end(&mut out);
        let read_err = stderr.read_to_end(&mut err);
        let (_, out_result, err_result) = tokio::join!(write, read_out, read_err);
        out_result.unwrap();
        err_result.unwrap();
        assert_eq!(out, payload);
        assert_eq!(err, b"bye\n");
        let status = session.status().await.unwrap().unwrap();
        assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
        drop(stdin);
        let seen = server.await.unwrap();
        assert!(seen.contains(&Frame::Ping { id: 2 }), "ping echoed");
        assert!(seen.contains(&Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::new()
        }));
    }

    #[tokio::test]
    async fn resize_is_json_on_the_resize_stream() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(client);
        let server = tokio::spawn(async move {
            let (read, write) = tokio::io::split(server);
            let mut incoming = FramedRead::new(read, Codec::default());
            let mut outgoing = FramedWrite::new(write, Codec::default());
            let mut sizes = Vec::new();
            while let Some(Ok(frame)) = incoming.next().await {
                match frame {
                    Frame::SynStream { stream_id, .. } => outgoing
                        .send(Frame::SynReply {
                            stream_id,
                            fin: false,
                        })
                        .await
                        .unwrap(),
                    Frame::Data {
                        stream_id: 7, data, ..
                    } => {
                        sizes.push(data);
                        if sizes.len() == 2 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            sizes
        });
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: true,
            initial_size: Some((80, 24)),
        };
        let session = start(read, write, "exec", streams).await.unwrap();
        assert!(session.stderr.is_none());
        assert!(session.resize.as_ref().unwrap().resize(120, 40).await);
        assert_eq!(
            server.await.unwrap(),
            [
                &br#"{"Width":80,"Height":24}"#[..],
                &br#"{"Width":120,"Height":40}"#[..]
            ]
        );
    }
}
