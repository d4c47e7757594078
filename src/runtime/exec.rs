//! Exec into `main` over SPDY remotecommand (`remote_command.rs`): one-shot captured runs
//! (signals, archive, stat, top), the records behind Docker's exec instances with their TTY
//! size, and stdin of `docker run -i` through `pods/attach`.

use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::limits::{MAX_CAPTURED_OUTPUT, MAX_EXEC_RECORDS};
use super::remote_command::{self, Resizer, Session, Streams, Target};
use super::state::MAIN_CONTAINER;
use super::{ContainerView, Result, Runtime, RuntimeError};
use crate::model::{ConsoleSize, ExecRequest};

/// How long connecting an exec may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a captured (internal) exec may run.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long stdin of `docker run -i` waits for the attach session to end after closing it.
const ATTACH_LINGER: Duration = Duration::from_secs(2);

/// Output of a captured exec, each stream cut at the capture limit.
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i64,
    /// Some output went past the limit and was dropped.
    pub truncated: bool,
}

/// A Docker exec instance.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    pub id: String,
    pub container_id: String,
    pub pod_name: String,
    /// The command as the client gave it.
    pub cmd: Vec<String>,
    /// The command actually run (with the env/workdir wrapper).
    pub argv: Vec<String>,
    pub tty: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub started: bool,
    pub user: String,
    pub working_dir: String,
    /// The last size `exec resize` asked for (width, height).
    pub tty_size: Option<(u16, u16)>,
    /// Resizes the running TTY session.
    pub resizer: Option<Resizer>,
    /// When it was created: the oldest finished records are forgotten first.
    pub created: std::time::Instant,
}

/// Docker exit code from the exec's final status.
pub fn exit_code_of(status: Option<&Status>) -> i64 {
    let Some(status) = status else { return 0 };
    if status.status.as_deref() == Some("Success") {
        return 0;
    }
    let from_cause = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.parse().ok());
    from_cause.unwrap_or_else(|| {
        let message = status.message.as_deref().unwrap_or_default();
        if message.contains("not found") || message.contains("no such file") {
            127
        } else {
            126
        }
    })
}

/// The shell run inside the container when an exec names a `WorkingDir` or a `User`, which
/// Kubernetes exec lacks: `$1` the directory (made if missing, as runc does), `$2` the user
/// (`name`, `uid`, `name:group`, `uid:gid`), the command after. Values only ever arrive as
/// positional parameters, never inside the script. The user is switched with `setpriv` where
/// the image has one that can (util-linux), else with `su` (busybox, Alpine) when the user has a
/// passwd entry and no other group is asked for; otherwise it fails as Docker does, with 126.
/// (`--` before the user: busybox su would otherwise take a `-c` inside the command as its own.)
const EXEC_WRAPPER: &str = r#"dir=$1 user=$2; shift 2
if [ -n "$dir" ]; then mkdir -p -- "$dir" 2>/dev/null; cd -- "$dir" || exit 126; fi
[ -z "$user" ] && exec "$@"
name=${user%%:*} group=
case $user in *:*) group=${user#*:} ;; esac
case $name in
  -*) echo "invalid user $name" >&2; exit 126 ;;
  ''|*[!0-9]*) uid=$(id -u "$name" 2>/dev/null) || { echo "unable to find user $name: no matching entries in passwd file" >&2; exit 126; } ;;
  *) uid=$name ;;
esac
case $group in
  '') gid=$(id -g "$name" 2>/dev/null) || gid=0 ;;
  *[!0-9]*) gid=$(awk -F: -v g="$group" '$1 == g { print $3; exit }' /etc/group 2>/dev/null)
    [ -n "$gid" ] || { echo "unable to find group $group: no matching entries in group file" >&2; exit 126; } ;;
  *) gid=$group ;;
esac
[ "$(id -u)" = "$uid" ] && [ "$(id -g)" = "$gid" ] && exec "$@"
if [ "$(id -u)" != 0 ]; then
  echo "cannot run as user $user: the container runs as uid $(id -u), which cannot switch users" >&2; exit 126
fi
if setpriv --help 2>&1 | grep -q -e --reuid; then
  exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
fi
login=$(awk -F: -v u="$uid" '$3 == u { print $1; exit }' /etc/passwd 2>/dev/null)
if [ -n "$login" ] && { [ -z "$group" ] || [ "$gid" = "$(id -g "$login" 2>/dev/null)" ]; }; then
  exec su -s /bin/sh -c 'exec "$0" "$@"' -- "$login" "$@"
fi
echo "cannot run as user $user: the container has no setpriv that can switch users, and su needs a passwd entry with that group" >&2
exit 126"#;

/// Wraps `cmd` so Docker's `Env`, `WorkingDir` and `User` apply (Kubernetes exec has none of
/// them). Without a directory or user no shell is needed, so images without one still exec.
pub fn wrap_command(cmd: &[String], env: &[String], working_dir: &str, user: &str) -> Vec<String> {
    let mut argv = Vec::new();
    if !working_dir.is_empty() || !user.is_empty() {
        argv.extend(["/bin/sh", "-c", EXEC_WRAPPER, "podbridge-exec"].map(String::from));
        argv.push(working_dir.to_string());
        argv.push(user.to_string());
    }
    if !env.is_empty() {
        argv.push("env".into());
        argv.extend(env.iter().cloned());
    }
    argv.extend(cmd.iter().cloned());
    argv
}

impl Runtime {
    /// Opens `target` in `container` of `pod` over SPDY remotecommand.
    pub async fn remote_command(
        &self,
        pod: &str,
        container: &str,
        target: Target<'_>,
        streams: Streams,
    ) -> Result<Session> {
        let operation = match target {
            Target::Exec(_) => "exec",
            Target::Attach => "attach",
        };
        let open = remote_command::open(
            &self.client,
            &self.namespace,
            pod,
            container,
            target,
            streams,
        );
        match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(source)) => Err(RuntimeError::RemoteCommand {
                operation,
                pod: pod.into(),
                source,
            }),
            Err(_) => Err(RuntimeError::Timeout {
                operation,
                pod: pod.into(),
                seconds: CONNECT_TIMEOUT.as_secs(),
            }),
        }
    }

    /// Opens an exec of `argv` in `main` of `pod`.
    pub async fn exec_open(&self, pod: &str, argv: &[String], streams: Streams) -> Result<Session> {
        self.remote_command(pod, MAIN_CONTAINER, Target::Exec(argv), streams)
            .await
    }

    /// Runs `argv` in `main` to completion and captures its output; `stdin`, if given, is
    /// written and then closed.
    pub async fn exec_capture(
        &self,
        pod: &str,
        argv: Vec<String>,
        stdin: Option<Bytes>,
    ) -> Result<ExecOutput> {
        self.exec_capture_in(pod, MAIN_CONTAINER, argv, stdin, MAX_CAPTURED_OUTPUT)
            .await
    }

    /// [`Runtime::exec_capture`] in any container of the pod (the bind-copy init container).
    pub async fn exec_capture_in(
        &self,
        pod: &str,
        container: &str,
        argv: Vec<String>,
        stdin: Option<Bytes>,
        max_output: usize,
    ) -> Result<ExecOutput> {
        let streams = Streams {
            stdin: stdin.is_some(),
            stdout: true,
            stderr: true,
            tty: false,
            initial_size: None,
        };
        let mut session = self
            .remote_command(pod, container, Target::Exec(&argv), streams)
            .await?;
        let run = async {
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            let read_out = read_all(session.stdout.take(), &mut stdout, max_output);
            let read_err = read_all(session.stderr.take(), &mut stderr, max_output);
            let writer = session.stdin.take();
            let write_in = async move {
                if let (Some(mut writer), Some(data)) = (writer, stdin) {
                    let _ = writer.write_all(&data).await;
                    let _ = writer.shutdown().await;
                }
            };
            let (out_cut, err_cut, ()) = tokio::join!(read_out, read_err, write_in);
            (stdout, stderr, out_cut || err_cut, session.status().await)
        };
        let (stdout, stderr, truncated, status) = tokio::time::timeout(CAPTURE_TIMEOUT, run)
            .await
            .map_err(|_| RuntimeError::Timeout {
                operation: "exec",
                pod: pod.into(),
                seconds: CAPTURE_TIMEOUT.as_secs(),
            })?;
        let status = status.map_err(|source| RuntimeError::RemoteCommand {
            operation: "exec",
            pod: pod.into(),
            source,
        })?;
        if truncated {
            tracing::warn!(%pod, ?argv, max_output, "Exec output beyond the capture limit dropped");
        }
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code: exit_code_of(status.as_ref()),
            truncated,
        })
    }

    /// Docker exec create: validates the container runs and stores the instance.
    pub fn exec_create(&self, view: &ContainerView, request: &ExecRequest) -> Result<String> {
        view.require_process("exec")?;
        if !view.state.running || view.pod.is_none() {
            return Err(RuntimeError::Conflict(format!(
                "Container {} is not running",
                view.id
            )));
        }
        if request.cmd.is_empty() {
            return Err(RuntimeError::BadRequest("No exec command specified".into()));
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        let record = ExecRecord {
            id: id.clone(),
            container_id: view.id.clone(),
            pod_name: view.pod_name.clone(),
            argv: wrap_command(
                &request.cmd,
                &request.env,
                &request.working_dir,
                &request.user,
            ),
            cmd: request.cmd.clone(),
            tty: request.tty,
            attach_stdin: request.attach_stdin,
            attach_stdout: request.attach_stdout,
            attach_stderr: request.attach_stderr,
            running: false,
            exit_code: None,
            started: false,
            user: request.user.clone(),
            working_dir: request.working_dir.clone(),
            tty_size: request.console_size.map(|size| (size.width, size.height)),
            resizer: None,
            created: std::time::Instant::now(),
        };
        let live: std::collections::HashSet<String> =
            self.containers().into_iter().map(|c| c.id).collect();
        let mut execs = self.execs.lock();
        make_room(&mut execs, &live, MAX_EXEC_RECORDS)?;
        execs.insert(id.clone(), record);
        Ok(id)
    }

    /// Forgets what is kept in memory for a container that is gone: its exec instances and
    /// terminal.
    pub fn forget_container(&self, id: &str) {
        self.execs
            .lock()
            .retain(|_, record| record.container_id != id);
        self.terminals.lock().remove(id);
    }

    pub fn exec_get(&self, id: &str) -> Result<ExecRecord> {
        let execs = self.execs.lock();
        execs
            .get(id)
            .cloned()
            .or_else(|| {
                let mut found = execs.values().filter(|e| e.id.starts_with(id));
                match (found.next(), found.next()) {
                    (Some(one), None) => Some(one.clone()),
                    _ => None,
                }
            })
            .ok_or_else(|| RuntimeError::NoSuchExec(id.to_string()))
    }

    /// Marks an exec started; a second start is a conflict, as in Docker. A `ConsoleSize` in the
    /// start request replaces the one of create.
    pub fn exec_mark_started(
        &self,
        id: &str,
        console_size: Option<ConsoleSize>,
    ) -> Result<ExecRecord> {
        let mut execs = self.execs.lock();
        let record = execs
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NoSuchExec(id.to_string()))?;
        if record.started {
            return Err(RuntimeError::Conflict(format!(
                "Error: Exec command {id} has already run"
            )));
        }
        record.started = true;
        record.running = true;
        if let Some(size) = console_size {
            record.tty_size = Some((size.width, size.height));
        }
        Ok(record.clone())
    }

    pub fn exec_finish(&self, id: &str, exit_code: i64) {
        if let Some(record) = self.execs.lock().get_mut(id) {
            record.running = false;
            record.exit_code = Some(exit_code);
            record.resizer = None;
        }
    }

    /// Docker exec resize: remembers the size (a TTY session opening later starts with it) and
    /// passes it to the running session.
    pub async fn exec_resize(&self, id: &str, width: u16, height: u16) -> Result<()> {
        let id = self.exec_get(id)?.id;
        let resizer = {
            let mut execs = self.execs.lock();
            let record = execs
                .get_mut(&id)
                .ok_or_else(|| RuntimeError::NoSuchExec(id.clone()))?;
            record.tty_size = Some((width, height));
            record.resizer.clone()
        };
        if let Some(resizer) = resizer {
            resizer.resize(width, height).await;
        }
        Ok(())
    }

    /// Keeps the resize handle of a started exec's TTY session; returns a size the client asked
    /// for before the session was open.
    pub fn exec_track_resizer(&self, id: &str, resizer: Resizer) -> Option<(u16, u16)> {
        let mut execs = self.execs.lock();
        let record = execs.get_mut(id)?;
        record.resizer = Some(resizer);
        record.tty_size
    }
}

/// Makes room for one more exec record below `max`: records of containers that are gone go
/// first, then finished (or never started) ones, oldest first. Running execs are never dropped;
/// if they fill the table, the create is refused.
fn make_room(
    execs: &mut std::collections::HashMap<String, ExecRecord>,
    live_containers: &std::collections::HashSet<String>,
    max: usize,
) -> Result<()> {
    if execs.len() < max {
        return Ok(());
    }
    execs.retain(|_, record| live_containers.contains(&record.container_id));
    while execs.len() >= max {
        let oldest = execs
            .values()
            .filter(|record| !record.running)
            .min_by_key(|record| record.created)
            .map(|record| record.id.clone());
        match oldest {
            Some(id) => execs.remove(&id),
            None => {
                return Err(RuntimeError::LimitReached {
                    message: format!(
                        "exec limit reached: {max} exec instances are running in this podbridge's containers"
                    ),
                })
            }
        };
    }
    Ok(())
}

/// A container's terminal as its attach session knows it.
#[derive(Debug, Clone, Default)]
pub struct Terminal {
    /// Last size a client asked for (also before the session opened).
    pub size: Option<(u16, u16)>,
    /// The open TTY session's resize channel.
    pub resizer: Option<Resizer>,
}

impl Runtime {
    /// Docker container resize: remembers the size (an attach session opening later starts
    /// with it) and passes it to the open session of a TTY container.
    pub async fn container_resize(&self, view: &ContainerView, width: u16, height: u16) {
        let resizer = {
            let mut terminals = self.terminals.lock();
            let terminal = terminals.entry(view.id.clone()).or_default();
            terminal.size = Some((width, height));
            terminal.resizer.clone()
        };
        tracing::debug!(container = %view.short_id(), width, height, open = resizer.is_some(), "Container resize");
        if let Some(resizer) = resizer {
            resizer.resize(width, height).await;
        }
    }
}

/// Reads `reader` to its end keeping at most `max` bytes (the rest is read and dropped, so the
/// process is never stalled); true if something was dropped.
async fn read_all<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<R>,
    into: &mut Vec<u8>,
    max: usize,
) -> bool {
    let Some(mut reader) = reader else {
        return false;
    };
    let mut buffer = vec![0u8; 16 * 1024];
    let mut truncated = false;
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return truncated,
            Ok(n) => {
                let room = max.saturating_sub(into.len()).min(n);
                into.extend_from_slice(&buffer[..room]);
                truncated |= room < n;
            }
        }
    }
}

impl Runtime {
    /// Streams a client's stdin to a container started with `OpenStdin` through `pods/attach`,
    /// once `main` runs (until then it waits in the client's socket). The client's EOF closes the
    /// stream, and with it the container's stdin (`stdinOnce`).
    pub async fn attach_stdin<R: tokio::io::AsyncRead + Unpin>(
        &self,
        view: &ContainerView,
        mut input: R,
    ) {
        let id = view.id.clone();
        let running = self
            .wait_until(Duration::from_secs(300), |rt| {
                rt.find(&id)
                    .ok()
                    .and_then(|v| v.pod.clone())
                    .as_deref()
                    .and_then(super::state::main_status)
                    .and_then(|s| s.state.clone())
                    .is_some_and(|s| s.running.is_some())
            })
            .await;
        let Ok(view) = self.find(&id) else { return };
        if !running {
            return;
        }
        let streams = Streams {
            stdin: true,
            tty: view.tty(),
            initial_size: self.terminals.lock().get(&view.id).and_then(|t| t.size),
            ..Default::default()
        };
        let mut session = match self
            .remote_command(&view.pod_name, MAIN_CONTAINER, Target::Attach, streams)
            .await
        {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(container = %view.short_id(), %error, "Attaching stdin failed");
                return;
            }
        };
        if let Some(resizer) = session.resize.clone() {
            // A resize that arrived while the session was opening found no resizer: send the
            // latest size now (both sides hold the lock, so none is lost).
            let latest = {
                let mut terminals = self.terminals.lock();
                let terminal = terminals.entry(view.id.clone()).or_default();
                terminal.resizer = Some(resizer.clone());
                terminal.size
            };
            if let Some((width, height)) = latest.filter(|size| Some(*size) != streams.initial_size)
            {
                resizer.resize(width, height).await;
            }
        }
        let mut copied = 0;
        if let Some(mut writer) = session.stdin.take() {
            copied = tokio::io::copy(&mut input, &mut writer).await.unwrap_or(0);
            let _ = writer.shutdown().await;
        }
        tracing::info!(container = %view.short_id(), bytes = copied, "Stdin delivered");
        // The FIN is queued; the session ends by itself when the process exits on EOF, and a
        // process that keeps running has its stdin closed all the same (`stdinOnce`).
        let _ = tokio::time::timeout(ATTACH_LINGER, session.status()).await;
        self.terminals.lock().remove(&view.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_adds_env_and_workdir() {
        let cmd = vec!["pwd".to_string()];
        assert_eq!(wrap_command(&cmd, &[], "", ""), vec!["pwd"]);
        assert_eq!(
            wrap_command(&cmd, &["A=1".into()], "", ""),
            vec!["env", "A=1", "pwd"]
        );
        let wrapped = wrap_command(&cmd, &["A=1".into()], "/tmp", "nobody");
        assert_eq!(wrapped[..2], ["/bin/sh", "-c"]);
        assert_eq!(
            &wrapped[3..],
            ["podbridge-exec", "/tmp", "nobody", "env", "A=1", "pwd"]
        );
    }

    /// The wrapper run by the host's /bin/sh: hostile values stay data, a missing directory is
    /// made, an unknown user fails with Docker's message and 126.
    #[test]
    fn the_wrapper_runs_in_a_real_shell() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("made/by exec");
        let run = |working_dir: &str, user: &str, cmd: &[&str]| {
            let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
            let argv = wrap_command(&cmd, &[], working_dir, user);
            std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .unwrap()
        };
        let out = run(target.to_str().unwrap(), "", &["pwd"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            target.to_str().unwrap()
        );
        let hostile = "$(touch /tmp/podbridge-pwned);`id`";
        let out = run("", "", &["echo", hostile]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hostile);
        let out = run("", "no-such-user-podbridge", &["true"]);
        assert_eq!(out.status.code(), Some(126));
        assert!(String::from_utf8_lossy(&out.stderr).contains(
            "unable to find user no-such-user-podbridge: no matching entries in passwd file"
        ));
        let out = run("", "-x", &["true"]);
        assert_eq!(out.status.code(), Some(126));
        // the current user: no switch needed
        let me = String::from_utf8_lossy(
            &std::process::Command::new("id")
                .arg("-u")
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .to_string();
        let out = run("", &me, &["id", "-u"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), me);
    }

    #[test]
    fn exit_code_from_status_cause() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
        }))
        .unwrap();
        assert_eq!(exit_code_of(Some(&status)), 3);
        let ok: Status = serde_json::from_value(serde_json::json!({"status": "Success"})).unwrap();
        assert_eq!(exit_code_of(Some(&ok)), 0);
    }

    fn record(id: &str, container: &str, running: bool) -> ExecRecord {
        ExecRecord {
            id: id.into(),
            container_id: container.into(),
            pod_name: String::new(),
            cmd: Vec::new(),
            argv: Vec::new(),
            tty: false,
            attach_stdin: false,
            attach_stdout: true,
            attach_stderr: true,
            running,
            exit_code: None,
            started: running,
            user: String::new(),
            working_dir: String::new(),
            tty_size: None,
            resizer: None,
            created: std::time::Instant::now(),
        }
    }

    #[test]
    fn exec_records_are_bounded() {
        let live: std::collections::HashSet<String> = ["c".to_string()].into();
        let mut execs = std::collections::HashMap::new();
        for (id, container, running) in
            [("gone", "x", true), ("old", "c", false), ("run", "c", true)]
        {
            execs.insert(id.to_string(), record(id, container, running));
        }
        make_room(&mut execs, &live, 3).unwrap();
        assert!(
            !execs.contains_key("gone"),
            "records of removed containers go first"
        );
        execs.insert("new".into(), record("new", "c", false));
        make_room(&mut execs, &live, 3).unwrap();
        assert!(!execs.contains_key("old") && execs.contains_key("new"));
        execs.insert("run2".into(), record("run2", "c", true));
        execs.remove("new");
        execs.insert("run3".into(), record("run3", "c", true));
        let error = make_room(&mut execs, &live, 3).unwrap_err();
        assert!(matches!(error, RuntimeError::LimitReached { .. }));
    }

    #[tokio::test]
    async fn captured_output_is_cut_at_the_limit() {
        let data = vec![7u8; 100_000];
        let mut into = Vec::new();
        assert!(read_all(Some(&data[..]), &mut into, 1000).await);
        assert_eq!(into.len(), 1000);
        let mut small = Vec::new();
        assert!(!read_all(Some(&b"ok"[..]), &mut small, 1000).await);
        assert_eq!(small, b"ok");
    }
}
