//! Bind mounts: the client's paths live beside podbridge, not on any node, so rendering gives
//! each bind an emptyDir and an init container that waits; at start the runtime tars each source
//! into its emptyDir through the init container, then releases it with the ready marker.
//!
//! Only sources under the configured roots (`bind_roots`) are read. Create already refused the
//! others lexically (`model::binds`); here the source is resolved on the real filesystem, so a
//! symbolic link inside a root that leads out of it is refused too, and the tar is streamed with
//! a size cap (`bind_size_limit`) instead of being buffered.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::remote_command::{Streams, Target};
use super::{Result, Runtime, RuntimeError};
use crate::model::binds::{RefusalReason, RULE, SETTING};
pub use crate::model::BindCopy;
use crate::model::{BindRoots, ContainerRecord};
use crate::render::{
    BIND_KEEPER_CONTAINER, BIND_MOUNT_ROOT, INIT_CONTAINER, READY_MARKER, RELEASED_MARKER,
};

/// Default of the config key `bind_size_limit`.
pub const DEFAULT_SIZE_LIMIT_BYTES: u64 = 256 << 20;
/// How long copying one bind (tar here, exec there) may take.
const COPY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a released keeper may take to end (it polls its marker every 0.2 s).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunk size of the tar stream.
const CHUNK_BYTES: usize = 64 << 10;
/// How much of tar's standard error is kept for a message.
const STDERR_KEPT_BYTES: u64 = 16 << 10;

/// What the runtime needs to copy binds (config `bind_roots`, `bind_size_limit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSettings {
    pub roots: BindRoots,
    pub size_limit_bytes: u64,
}

impl Default for BindSettings {
    fn default() -> Self {
        BindSettings {
            roots: BindRoots::default(),
            size_limit_bytes: DEFAULT_SIZE_LIMIT_BYTES,
        }
    }
}

/// Why a bind cannot be copied. Refusals (the source is not allowed) answer 403; the others
/// fail the start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("bind source {requested:?} refused by rule {RULE}: {reason}; nothing was copied. Bind a path under a directory of the podbridge setting {SETTING} ({roots})")]
    Refused {
        requested: String,
        reason: String,
        roots: String,
    },
    #[error("bind source {requested:?} resolves to {resolved:?}, outside every directory of the podbridge setting {SETTING} ({roots}): a symbolic link leads out of the allowed roots, so rule {RULE} refuses it and nothing was copied. Bind the link's target only if it is itself under a root")]
    Escapes {
        requested: String,
        resolved: PathBuf,
        roots: String,
    },
    #[error("bind source {requested:?} changed while the container was starting (now {resolved:?}); nothing more was copied. Start the container again")]
    Changed {
        requested: String,
        resolved: PathBuf,
    },
    #[error("reading bind source {requested:?}: {message}")]
    ReadFailed { requested: String, message: String },
    #[error("bind source {requested:?} is larger than the podbridge setting bind_size_limit ({limit_bytes} bytes as a tar stream); the copy was stopped. Bind a smaller directory, or ask whoever runs podbridge to raise bind_size_limit")]
    TooLarge { requested: String, limit_bytes: u64 },
    #[error("copying bind {requested:?} into pod {pod} failed: {message}")]
    CopyFailed {
        requested: String,
        pod: String,
        message: String,
    },
}

impl BindError {
    /// The runtime error for container `id`: refusals are 403, the rest fail the start.
    pub fn for_container(self, id: &str) -> RuntimeError {
        match self {
            BindError::Refused { .. } | BindError::Escapes { .. } => {
                RuntimeError::Forbidden(self.to_string())
            }
            other => RuntimeError::StartFailed {
                id: id.to_owned(),
                reason: other.to_string(),
            },
        }
    }
}

/// The writable directory binds the keeper container holds after `main` exits: the binds of the
/// container's record whose volume the keeper mounts.
pub fn copy_back_binds(record: &ContainerRecord, pod: &Pod) -> Vec<BindCopy> {
    let kept: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|spec| {
            spec.containers
                .iter()
                .find(|c| c.name == BIND_KEEPER_CONTAINER)
        })
        .and_then(|keeper| keeper.volume_mounts.as_ref())
        .map(|mounts| mounts.iter().map(|m| m.name.clone()).collect())
        .unwrap_or_default();
    record
        .bind_copies()
        .into_iter()
        .filter(|bind| kept.contains(&bind.volume))
        .collect()
}

/// Whether the pod waits in the init container for the runtime's copy.
pub fn has_init_container(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == INIT_CONTAINER))
}

fn init_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == INIT_CONTAINER))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
}

/// A bind source as found on podbridge's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBind {
    pub source: String,
    pub volume: String,
    /// The canonical path (no symbolic links), under a root; `None` when the source does not
    /// exist (the mount stays empty, as before).
    pub path: Option<PathBuf>,
    pub is_file: bool,
}

fn describe_roots(roots: &BindRoots) -> String {
    if roots.is_empty() {
        "none are set".into()
    } else {
        roots.describe()
    }
}

/// Whether a canonical path lies under one of the roots, themselves canonicalised (a root that
/// does not exist holds nothing).
fn under_canonical_root(path: &Path, roots: &BindRoots) -> bool {
    roots
        .roots()
        .iter()
        .filter_map(|root| std::fs::canonicalize(root).ok())
        .any(|root| path.starts_with(root))
}

/// Resolves one source: the lexical check again (the container's record is read back from the
/// cluster), then the canonical path, which must stay under a canonical root.
pub fn resolve(bind: &BindCopy, roots: &BindRoots) -> Result<ResolvedBind, BindError> {
    let source = bind.source.clone();
    let normalised = roots
        .check(&bind.source)
        .map_err(|reason| BindError::Refused {
            requested: source.clone(),
            reason: match reason {
                RefusalReason::Path(problem) => problem.to_string(),
                RefusalReason::OutsideRoots => "it is not under an allowed root".into(),
            },
            roots: describe_roots(roots),
        })?;
    let unresolved = |path| ResolvedBind {
        source: source.clone(),
        volume: bind.volume.clone(),
        path,
        is_file: false,
    };
    let canonical = match std::fs::canonicalize(&normalised) {
        Ok(path) => path,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(unresolved(None)),
        Err(error) => {
            return Err(BindError::ReadFailed {
                requested: source,
                message: error.to_string(),
            })
        }
    };
    if !under_canonical_root(&canonical, roots) {
        return Err(BindError::Escapes {
            requested: source,
            resolved: canonical,
            roots: describe_roots(roots),
        });
    }
    let is_file = std::fs::metadata(&canonical).is_ok_and(|m| m.is_file());
    Ok(ResolvedBind {
        is_file,
        ..unresolved(Some(canonical))
    })
}

/// Resolves every bind of the pod, before anything is applied, so a refused one fails the
/// start with nothing created.
pub fn resolve_binds(
    record: &ContainerRecord,
    roots: &BindRoots,
) -> Result<Vec<ResolvedBind>, BindError> {
    record
        .bind_copies()
        .iter()
        .map(|bind| resolve(bind, roots))
        .collect()
}

/// The bind sources that are single files, each with the name of the file in its volume (the
/// resolved name: a link inside a root is copied as its target), for the start's translation:
/// a file is mounted with `subPath`, as an emptyDir at the target would be a directory.
pub fn file_binds(binds: &[ResolvedBind]) -> BTreeMap<String, String> {
    binds
        .iter()
        .filter(|bind| bind.is_file)
        .filter_map(|bind| {
            let name = bind.path.as_ref()?.file_name()?.to_string_lossy();
            Some((bind.source.clone(), name.into_owned()))
        })
        .collect()
}

/// The directory tar runs in, held open so it cannot be swapped for a symbolic link between
/// the check and the copy, and what tar archives there (`.` or `./<file>`: never an operand
/// that starts with `-`).
struct PinnedSource {
    _directory: std::fs::File,
    working_directory: PathBuf,
    member: String,
}

fn pin(bind: &ResolvedBind, path: &Path, roots: &BindRoots) -> Result<PinnedSource, BindError> {
    let read_failed = |message: String| BindError::ReadFailed {
        requested: bind.source.clone(),
        message,
    };
    let (directory, member) = if bind.is_file {
        let name = path
            .file_name()
            .ok_or_else(|| read_failed("a file bind needs a file name".into()))?;
        (
            path.parent().unwrap_or(Path::new("/")),
            format!("./{}", name.to_string_lossy()),
        )
    } else {
        (path, ".".to_owned())
    };
    let opened = std::fs::File::open(directory).map_err(|e| read_failed(e.to_string()))?;
    // The child's own descriptor table still holds the (close-on-exec) descriptor when it
    // changes directory, so /proc/self there names this very directory.
    let by_descriptor = PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd()));
    let working_directory = match std::fs::read_link(&by_descriptor) {
        Ok(actual) if under_canonical_root(&actual, roots) => by_descriptor,
        Ok(actual) => {
            return Err(BindError::Escapes {
                requested: bind.source.clone(),
                resolved: actual,
                roots: describe_roots(roots),
            })
        }
        Err(error) => {
            debug!(%error, "No /proc/self/fd; tar runs in the checked path");
            directory.to_path_buf()
        }
    };
    Ok(PinnedSource {
        _directory: opened,
        working_directory,
        member,
    })
}

/// `tar` writing the pinned source to its standard output. No `-h`: symbolic links inside the
/// source are archived as links, never followed.
fn tar_command(pinned: &PinnedSource) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("tar");
    command
        .arg("-cf")
        .arg("-")
        .arg(&pinned.member)
        .current_dir(&pinned.working_directory)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// `tar` unpacking a stream from the container into the pinned directory. The container's
/// content is untrusted: GNU tar refuses members and hard links that climb out with `..`, and
/// extracts links that point out of the directory only after every file, so nothing is written
/// through them; owners and set-id modes are not taken over.
fn untar_command(pinned: &PinnedSource) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("tar");
    command
        .args([
            "-xf",
            "-",
            "--no-same-owner",
            "--no-same-permissions",
            "--no-overwrite-dir",
        ])
        .current_dir(&pinned.working_directory)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Copies `input` to `output` and closes it, failing once more than `limit` bytes went by.
async fn copy_capped<R, W>(mut input: R, mut output: W, limit: u64) -> std::io::Result<bool>
where
    R: AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut total: u64 = 0;
    loop {
        let read = input.read(&mut buffer).await?;
        if read == 0 {
            output.shutdown().await?;
            return Ok(true);
        }
        total += read as u64;
        if total > limit {
            return Ok(false);
        }
        output.write_all(&buffer[..read]).await?;
    }
}

async fn read_kept<R: AsyncRead + Unpin>(reader: Option<R>) -> Vec<u8> {
    let mut kept = Vec::new();
    if let Some(reader) = reader {
        let _ = reader.take(STDERR_KEPT_BYTES).read_to_end(&mut kept).await;
    }
    kept
}

fn trimmed(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

impl Runtime {
    /// Sets what `start` copies binds with (config `bind_roots`, `bind_size_limit`).
    pub fn set_bind_settings(&self, settings: BindSettings) {
        *self.bind_settings.lock() = settings;
    }

    pub fn bind_settings(&self) -> BindSettings {
        self.bind_settings.lock().clone()
    }

    /// Fills the bind emptyDirs of a just-applied pod and releases its init container.
    pub async fn copy_binds(
        &self,
        id: &str,
        pod_name: &str,
        binds: &[ResolvedBind],
        timeout: Duration,
    ) -> Result<()> {
        let id_owned = id.to_string();
        let ready = self
            .wait_until(timeout, |rt| {
                rt.find(&id_owned)
                    .ok()
                    .and_then(|v| v.pod.clone())
                    .is_some_and(|p| init_running(&p))
            })
            .await;
        if !ready || self.find(id)?.pod.is_none() {
            return Err(RuntimeError::Timeout {
                operation: "waiting for the bind-copy init container",
                pod: pod_name.into(),
                seconds: timeout.as_secs(),
            });
        }
        let settings = self.bind_settings();
        for bind in binds {
            let copied =
                tokio::time::timeout(COPY_TIMEOUT, self.copy_bind(pod_name, bind, &settings))
                    .await
                    .map_err(|_| RuntimeError::Timeout {
                        operation: "copying a bind",
                        pod: pod_name.into(),
                        seconds: COPY_TIMEOUT.as_secs(),
                    })?;
            copied.map_err(|error| error.for_container(id))?;
        }
        self.exec_capture_in(
            pod_name,
            INIT_CONTAINER,
            vec!["touch".into(), READY_MARKER.into()],
            None,
            super::limits::MAX_CAPTURED_OUTPUT,
        )
        .await?;
        Ok(())
    }

    /// Streams one source's tar into its emptyDir, re-checked right before reading.
    async fn copy_bind(
        &self,
        pod_name: &str,
        bind: &ResolvedBind,
        settings: &BindSettings,
    ) -> Result<(), BindError> {
        let fresh = resolve(
            &BindCopy {
                source: bind.source.clone(),
                volume: bind.volume.clone(),
            },
            &settings.roots,
        )?;
        if fresh.path != bind.path || fresh.is_file != bind.is_file {
            return Err(BindError::Changed {
                requested: bind.source.clone(),
                resolved: fresh.path.unwrap_or_default(),
            });
        }
        let Some(path) = &bind.path else {
            warn!(pod = %pod_name, source = %bind.source, "Bind source does not exist here; the mount stays empty");
            return Ok(());
        };
        let pinned = pin(bind, path, &settings.roots)?;
        let dir = format!("{BIND_MOUNT_ROOT}/{}", bind.volume);
        let argv: Vec<String> = ["tar", "-xf", "-", "-C", dir.as_str()]
            .map(String::from)
            .to_vec();
        let copy = TarCopy {
            pod: pod_name,
            container: INIT_CONTAINER,
            source: &bind.source,
            limit_bytes: settings.size_limit_bytes,
        };
        self.stream_tar(&copy, tar_command(&pinned), &argv, Direction::In)
            .await?;
        info!(pod = %pod_name, source = %bind.source, volume = %bind.volume, "Bind copied");
        Ok(())
    }
}

impl Runtime {
    /// Docker's binds are two-way: what `main` wrote to a writable directory bind is copied
    /// back to the client's side once it exited, then the keeper container is released and the
    /// pod ends. A bind that cannot be copied back is logged and skipped, so the container still
    /// reaches its exit.
    pub async fn copy_binds_back(&self, id: &str, record: &ContainerRecord, pod: &Pod) {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let settings = self.bind_settings();
        for bind in copy_back_binds(record, pod) {
            let copied = tokio::time::timeout(
                COPY_TIMEOUT,
                self.copy_bind_back(&pod_name, &bind, &settings),
            )
            .await;
            match copied {
                Ok(Ok(())) => {
                    info!(pod = %pod_name, source = %bind.source, "Bind copied back")
                }
                Ok(Err(error)) => {
                    warn!(pod = %pod_name, source = %bind.source, %error, "Bind not copied back")
                }
                Err(_) => {
                    warn!(pod = %pod_name, source = %bind.source, "Bind not copied back in time")
                }
            }
        }
        let released = self
            .exec_capture_in(
                &pod_name,
                BIND_KEEPER_CONTAINER,
                vec!["touch".into(), RELEASED_MARKER.into()],
                None,
                super::limits::MAX_CAPTURED_OUTPUT,
            )
            .await;
        if let Err(error) = released {
            warn!(pod = %pod_name, %error, "Bind keeper not released");
            return;
        }
        // Until the watch shows the keeper gone, the pod still looks as if it waited for a copy.
        self.wait_until(RELEASE_TIMEOUT, |rt| {
            rt.find(id)
                .ok()
                .and_then(|view| view.pod.clone())
                .is_none_or(|pod| !super::state::copy_back_pending(&pod))
        })
        .await;
    }

    /// Streams one emptyDir from the keeper into the client's directory (made if missing, as
    /// Docker makes a missing bind source), re-resolved and pinned under the roots first.
    async fn copy_bind_back(
        &self,
        pod_name: &str,
        bind: &BindCopy,
        settings: &BindSettings,
    ) -> Result<(), BindError> {
        let mut resolved = resolve(bind, &settings.roots)?;
        if resolved.path.is_none() {
            let normalised =
                settings
                    .roots
                    .check(&bind.source)
                    .map_err(|_| BindError::Refused {
                        requested: bind.source.clone(),
                        reason: "it is not under an allowed root".into(),
                        roots: describe_roots(&settings.roots),
                    })?;
            std::fs::create_dir_all(&normalised).map_err(|e| BindError::ReadFailed {
                requested: bind.source.clone(),
                message: e.to_string(),
            })?;
            resolved = resolve(bind, &settings.roots)?;
        }
        let (Some(path), false) = (&resolved.path, resolved.is_file) else {
            return Ok(());
        };
        let pinned = pin(&resolved, path, &settings.roots)?;
        let dir = format!("{BIND_MOUNT_ROOT}/{}", bind.volume);
        let argv: Vec<String> = ["tar", "-cf", "-", "-C", dir.as_str(), "."]
            .map(String::from)
            .to_vec();
        let copy = TarCopy {
            pod: pod_name,
            container: BIND_KEEPER_CONTAINER,
            source: &bind.source,
            limit_bytes: settings.size_limit_bytes,
        };
        self.stream_tar(&copy, untar_command(&pinned), &argv, Direction::Back)
            .await?;
        Ok(())
    }
}

/// Which way a bind's tar stream runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// podbridge's tar archives the source, the pod's tar unpacks it (at start).
    In,
    /// The pod's tar archives the emptyDir, podbridge's tar unpacks it (after the exit).
    Back,
}

/// One tar stream between podbridge and a container of the pod.
struct TarCopy<'a> {
    pod: &'a str,
    container: &'a str,
    /// The bind source, for messages.
    source: &'a str,
    limit_bytes: u64,
}

impl Runtime {
    /// Runs the local `tar` and streams between it and `argv` run in the pod, capped at the
    /// copy's limit. When the stream stops early the local tar is killed, so its standard error
    /// is read to the end either way. Either side's failure is the copy's.
    async fn stream_tar(
        &self,
        copy: &TarCopy<'_>,
        mut local: tokio::process::Command,
        argv: &[String],
        direction: Direction,
    ) -> Result<(), BindError> {
        let local_failed = |message: String| BindError::ReadFailed {
            requested: copy.source.to_string(),
            message,
        };
        let mut local = local
            .spawn()
            .map_err(|e| local_failed(format!("running tar: {e}")))?;
        let copy_failed = |message: String| BindError::CopyFailed {
            requested: copy.source.to_string(),
            pod: copy.pod.into(),
            message,
        };
        let streams = Streams {
            stdin: direction == Direction::In,
            stdout: true,
            stderr: true,
            tty: false,
            initial_size: None,
        };
        let mut session = self
            .remote_command(copy.pod, copy.container, Target::Exec(argv), streams)
            .await
            .map_err(|e| copy_failed(e.to_string()))?;
        let no_stream = || copy_failed("no stream to copy through".into());
        let (reader, writer, remote_rest): (
            Box<dyn AsyncRead + Unpin + Send>,
            Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
            _,
        ) = match direction {
            Direction::In => (
                Box::new(local.stdout.take().ok_or_else(no_stream)?),
                Box::new(session.stdin.take().ok_or_else(no_stream)?),
                session.stdout.take(),
            ),
            Direction::Back => (
                Box::new(session.stdout.take().ok_or_else(no_stream)?),
                Box::new(local.stdin.take().ok_or_else(no_stream)?),
                None,
            ),
        };
        let (local_err, remote_err) = (local.stderr.take(), session.stderr.take());
        let pump = async {
            let pumped = copy_capped(reader, writer, copy.limit_bytes).await;
            if !matches!(pumped, Ok(true)) {
                let _ = local.start_kill();
            }
            pumped
        };
        let (pumped, local_stderr, _, remote_stderr) = tokio::join!(
            pump,
            read_kept(local_err),
            read_kept(remote_rest),
            read_kept(remote_err),
        );
        match pumped {
            Ok(true) => {}
            Ok(false) => {
                return Err(BindError::TooLarge {
                    requested: copy.source.to_string(),
                    limit_bytes: copy.limit_bytes,
                })
            }
            Err(error) => return Err(copy_failed(error.to_string())),
        }
        let status = local
            .wait()
            .await
            .map_err(|e| local_failed(format!("waiting for tar: {e}")))?;
        if !status.success() {
            return Err(local_failed(format!("tar: {}", trimmed(&local_stderr))));
        }
        let status = session
            .status()
            .await
            .map_err(|e| copy_failed(e.to_string()))?;
        if super::exec::exit_code_of(status.as_ref()) != 0 {
            return Err(copy_failed(trimmed(&remote_stderr)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_from_the_record() {
        let record: ContainerRecord = serde_json::from_value(serde_json::json!({
            "request": {},
            "mounts": [{"type":"bind","source":"/src","volume":"bind-0","target":"/dst"},
                       {"type":"tmpfs","volume":"tmpfs-1","target":"/run"}],
        }))
        .unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "main", "image": "busybox"},
                {"name": BIND_KEEPER_CONTAINER, "image": "busybox",
                 "volumeMounts": [{"name": "bind-0", "mountPath": "/podbridge/binds/bind-0"}]},
            ]},
        }))
        .unwrap();
        let expected = vec![BindCopy {
            source: "/src".into(),
            volume: "bind-0".into(),
        }];
        assert_eq!(record.bind_copies(), expected);
        assert_eq!(copy_back_binds(&record, &pod), expected);
        assert!(!has_init_container(&pod));
    }

    /// A root with a file, a directory, a file named like a tar option, and links leading
    /// inside and outside; `outside` holds a secret.
    fn scene() -> (tempfile::TempDir, BindRoots, PathBuf) {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("builds");
        let outside = temp.path().join("outside");
        std::fs::create_dir_all(root.join("app/src")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "secret").unwrap();
        std::fs::write(root.join("app/config.yaml"), "config").unwrap();
        std::fs::write(root.join("app/src/main.c"), "int main;").unwrap();
        std::fs::write(root.join("app/--remove-files"), "kept").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("app/secret-link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("app/outside-link")).unwrap();
        std::os::unix::fs::symlink(root.join("app/config.yaml"), root.join("app/config-link"))
            .unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("app/src/escape")).unwrap();
        let roots = BindRoots::new([root.to_string_lossy()]).unwrap();
        (temp, roots, root)
    }

    fn copy(source: &Path) -> BindCopy {
        BindCopy {
            source: source.to_string_lossy().into_owned(),
            volume: "bind-0".into(),
        }
    }

    #[test]
    fn files_and_directories_under_a_root_resolve() {
        let (_temp, roots, root) = scene();
        let file = resolve(&copy(&root.join("app/config.yaml")), &roots).unwrap();
        assert!(file.is_file);
        let dir = resolve(&copy(&root.join("app/src")), &roots).unwrap();
        assert!(!dir.is_file && dir.path.is_some());
        let link = resolve(&copy(&root.join("app/config-link")), &roots).unwrap();
        assert_eq!(
            link.path, file.path,
            "a link inside the root resolves to its target"
        );
        let missing = resolve(&copy(&root.join("app/none")), &roots).unwrap();
        assert_eq!(missing.path, None);
    }

    #[test]
    fn symbolic_links_out_of_the_root_are_refused() {
        let (_temp, roots, root) = scene();
        for link in [
            "app/secret-link",
            "app/outside-link",
            "app/outside-link/secret",
        ] {
            let error = resolve(&copy(&root.join(link)), &roots).unwrap_err();
            assert!(
                matches!(error, BindError::Escapes { .. }),
                "{link}: {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains("a symbolic link leads out of the allowed roots")
                    && message.contains("bind_roots = ["),
                "{message}"
            );
            assert!(matches!(
                error.for_container("c1"),
                RuntimeError::Forbidden(_)
            ));
        }
    }

    #[test]
    fn lexical_refusals_are_repeated_at_copy_time() {
        let (_temp, roots, root) = scene();
        for source in ["/", "/etc/../root", "-rf"] {
            let error = resolve(&copy(Path::new(source)), &roots).unwrap_err();
            assert!(matches!(error, BindError::Refused { .. }), "{source}");
        }
        let dotdot = format!("{}/app/../../outside/secret", root.display());
        let error = resolve(&copy(Path::new(&dotdot)), &roots).unwrap_err();
        assert!(error.to_string().contains("\"..\" component"), "{error}");
        let error = resolve(&copy(&root.join("app/src")), &BindRoots::default()).unwrap_err();
        assert!(error.to_string().contains("(none are set)"), "{error}");
    }

    async fn archive_members(bind: &ResolvedBind, roots: &BindRoots) -> Vec<String> {
        let pinned = pin(bind, bind.path.as_ref().unwrap(), roots).unwrap();
        let output = tar_command(&pinned).output().await.unwrap();
        assert!(output.status.success(), "{}", trimmed(&output.stderr));
        let mut list = std::process::Command::new("tar")
            .args(["-tvf", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        list.stdin
            .take()
            .unwrap()
            .write_all(&output.stdout)
            .unwrap();
        let listed = list.wait_with_output().unwrap();
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn tar_keeps_links_as_links_and_option_like_names_as_names() {
        let (_temp, roots, root) = scene();
        let dir = resolve(&copy(&root.join("app/src")), &roots).unwrap();
        let members = archive_members(&dir, &roots).await;
        let escape = members.iter().find(|m| m.contains("escape")).unwrap();
        assert!(
            escape.starts_with('l') && escape.contains("-> "),
            "{escape}"
        );
        let option_like = resolve(&copy(&root.join("app/--remove-files")), &roots).unwrap();
        assert!(option_like.is_file);
        let members = archive_members(&option_like, &roots).await;
        assert_eq!(members.len(), 1);
        assert!(members[0].ends_with("./--remove-files"), "{members:?}");
        assert!(root.join("app/--remove-files").exists());
    }

    #[tokio::test]
    async fn the_copy_stops_past_the_size_limit() {
        let data = vec![7u8; 3 * CHUNK_BYTES];
        let mut sink = Vec::new();
        assert!(copy_capped(&data[..], &mut sink, data.len() as u64)
            .await
            .unwrap());
        assert_eq!(sink.len(), data.len());
        let mut sink = Vec::new();
        assert!(!copy_capped(&data[..], &mut sink, CHUNK_BYTES as u64 + 1)
            .await
            .unwrap());
        assert!(sink.len() <= CHUNK_BYTES + 1);
        let error = BindError::TooLarge {
            requested: "/builds/big".into(),
            limit_bytes: 1024,
        };
        assert!(error.to_string().contains("bind_size_limit (1024 bytes"));
    }

    #[test]
    fn file_binds_are_named_after_the_resolved_file() {
        let binds = [
            ResolvedBind {
                source: "/builds/app/config-link".into(),
                volume: "bind-0".into(),
                path: Some("/builds/app/config.yaml".into()),
                is_file: true,
            },
            ResolvedBind {
                source: "/builds/app/src".into(),
                volume: "bind-1".into(),
                path: Some("/builds/app/src".into()),
                is_file: false,
            },
            ResolvedBind {
                source: "/builds/app/missing".into(),
                volume: "bind-2".into(),
                path: None,
                is_file: false,
            },
        ];
        assert_eq!(
            file_binds(&binds),
            BTreeMap::from([(
                "/builds/app/config-link".to_owned(),
                "config.yaml".to_owned()
            )])
        );
    }
}
