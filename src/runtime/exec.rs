//! Exec into `main` over the Kubernetes websocket exec: one-shot captured runs (signals, archive,
//! stat) and the records behind Docker's exec instances.

use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, AttachedProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::state::MAIN_CONTAINER;
use super::{ContainerView, Result, Runtime, RuntimeError};

/// How long connecting an exec may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a captured (internal) exec may run.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(120);

/// Output of a captured exec.
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i64,
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

/// Wraps `cmd` so Docker's `Env` and `WorkingDir` apply (Kubernetes exec has neither).
pub fn wrap_command(cmd: &[String], env: &[String], working_dir: &str) -> Vec<String> {
    let mut argv = Vec::new();
    if !working_dir.is_empty() {
        argv.extend(["/bin/sh", "-c", "cd -- \"$0\" && exec \"$@\""].map(String::from));
        argv.push(working_dir.to_string());
    }
    if !env.is_empty() {
        argv.push("env".into());
        argv.extend(env.iter().cloned());
    }
    argv.extend(cmd.iter().cloned());
    argv
}

impl Runtime {
    /// Opens an exec in `main` of `pod`.
    pub async fn exec_attach(
        &self,
        pod: &str,
        argv: Vec<String>,
        params: &AttachParams,
    ) -> Result<AttachedProcess> {
        let container = params
            .container
            .clone()
            .unwrap_or_else(|| MAIN_CONTAINER.into());
        let params = AttachParams {
            container: Some(container),
            ..clone_params(params)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, self.pods_api().exec(pod, argv, &params)).await
        {
            Ok(Ok(process)) => Ok(process),
            Ok(Err(source)) => Err(RuntimeError::Kube {
                operation: "exec",
                pod: pod.into(),
                source,
            }),
            Err(_) => Err(RuntimeError::Timeout {
                operation: "exec",
                pod: pod.into(),
                seconds: CONNECT_TIMEOUT.as_secs(),
            }),
        }
    }

    /// Runs `argv` in `main` to completion and captures its output. With `stdin`, the data is
    /// written and the stream kept open until the process exits (the v4 exec protocol cannot
    /// half-close), so commands reading stdin must stop on their own (`head -c N`).
    pub async fn exec_capture(
        &self,
        pod: &str,
        argv: Vec<String>,
        stdin: Option<Bytes>,
    ) -> Result<ExecOutput> {
        self.exec_capture_in(pod, MAIN_CONTAINER, argv, stdin).await
    }

    /// [`Runtime::exec_capture`] in any container of the pod (the bind-copy init container).
    pub async fn exec_capture_in(
        &self,
        pod: &str,
        container: &str,
        argv: Vec<String>,
        stdin: Option<Bytes>,
    ) -> Result<ExecOutput> {
        let params = AttachParams::default()
            .container(container)
            .stdin(stdin.is_some())
            .stdout(true)
            .stderr(true);
        let mut process = self.exec_attach(pod, argv, &params).await?;
        let run = async {
            let mut stdout = process.stdout();
            let mut stderr = process.stderr();
            let status = process.take_status();
            let mut writer = process.stdin();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let read_out = async {
                if let Some(s) = stdout.as_mut() {
                    let _ = s.read_to_end(&mut out).await;
                }
            };
            let read_err = async {
                if let Some(s) = stderr.as_mut() {
                    let _ = s.read_to_end(&mut err).await;
                }
            };
            let write_in = async {
                if let (Some(w), Some(data)) = (writer.as_mut(), stdin) {
                    let _ = w.write_all(&data).await;
                    let _ = w.flush().await;
                }
            };
            tokio::join!(read_out, read_err, write_in);
            let status = match status {
                Some(status) => status.await,
                None => None,
            };
            drop(writer);
            ExecOutput {
                stdout: out,
                stderr: err,
                exit_code: exit_code_of(status.as_ref()),
            }
        };
        tokio::time::timeout(CAPTURE_TIMEOUT, run)
            .await
            .map_err(|_| RuntimeError::Timeout {
                operation: "exec",
                pod: pod.into(),
                seconds: CAPTURE_TIMEOUT.as_secs(),
            })
    }

    /// Docker exec create: validates the container runs and stores the instance.
    pub fn exec_create(&self, view: &ContainerView, config: &serde_json::Value) -> Result<String> {
        if !view.state.running || view.pod.is_none() {
            return Err(RuntimeError::Conflict(format!(
                "Container {} is not running",
                view.id
            )));
        }
        let strings = |v: &serde_json::Value| -> Vec<String> {
            match v {
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str().map(String::from))
                    .collect(),
                serde_json::Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            }
        };
        let cmd = strings(&config["Cmd"]);
        if cmd.is_empty() {
            return Err(RuntimeError::BadRequest("No exec command specified".into()));
        }
        let env = strings(&config["Env"]);
        let working_dir = config["WorkingDir"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let id = hex::encode(rand::random::<[u8; 32]>());
        let record = ExecRecord {
            id: id.clone(),
            container_id: view.id.clone(),
            pod_name: view.pod_name.clone(),
            argv: wrap_command(&cmd, &env, &working_dir),
            cmd,
            tty: config["Tty"].as_bool().unwrap_or(false),
            attach_stdin: config["AttachStdin"].as_bool().unwrap_or(false),
            attach_stdout: config["AttachStdout"].as_bool().unwrap_or(true),
            attach_stderr: config["AttachStderr"].as_bool().unwrap_or(true),
            running: false,
            exit_code: None,
            started: false,
            user: config["User"].as_str().unwrap_or_default().to_string(),
            working_dir,
        };
        self.execs.lock().unwrap().insert(id.clone(), record);
        Ok(id)
    }

    pub fn exec_get(&self, id: &str) -> Result<ExecRecord> {
        let execs = self.execs.lock().unwrap();
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

    /// Marks an exec started; a second start is a conflict, as in Docker.
    pub fn exec_mark_started(&self, id: &str) -> Result<ExecRecord> {
        let mut execs = self.execs.lock().unwrap();
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
        Ok(record.clone())
    }

    pub fn exec_finish(&self, id: &str, exit_code: i64) {
        if let Some(record) = self.execs.lock().unwrap().get_mut(id) {
            record.running = false;
            record.exit_code = Some(exit_code);
        }
    }
}

fn clone_params(params: &AttachParams) -> AttachParams {
    AttachParams {
        container: params.container.clone(),
        stdin: params.stdin,
        stdout: params.stdout,
        stderr: params.stderr,
        tty: params.tty,
        max_stdin_buf_size: params.max_stdin_buf_size,
        max_stdout_buf_size: params.max_stdout_buf_size,
        max_stderr_buf_size: params.max_stderr_buf_size,
    }
}

impl Runtime {
    /// Streams a client's stdin to a container started with `OpenStdin` through `pods/attach`,
    /// once `main` runs (until then it waits in the client's socket). At the client's EOF the
    /// attach session ends, which closes the container's stdin (`stdinOnce`).
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
        let params = AttachParams {
            container: Some(MAIN_CONTAINER.into()),
            stdin: true,
            stdout: false,
            stderr: false,
            tty: view.tty(),
            ..Default::default()
        };
        let Ok(Ok(mut process)) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.pods_api().attach(&view.pod_name, &params),
        )
        .await
        else {
            tracing::warn!(container = %view.short_id(), "Attaching stdin failed");
            return;
        };
        let mut copied = 0;
        if let Some(mut writer) = process.stdin() {
            copied = tokio::io::copy(&mut input, &mut writer).await.unwrap_or(0);
            let _ = writer.flush().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(writer);
        }
        tracing::info!(container = %view.short_id(), bytes = copied, "Stdin delivered");
        // Without the v5 protocol there is no stdin EOF; ending the session makes the runtime
        // close the container's stdin (`stdinOnce`).
        tokio::time::sleep(Duration::from_millis(500)).await;
        process.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_adds_env_and_workdir() {
        let cmd = vec!["pwd".to_string()];
        assert_eq!(wrap_command(&cmd, &[], ""), vec!["pwd"]);
        assert_eq!(
            wrap_command(&cmd, &["A=1".into()], ""),
            vec!["env", "A=1", "pwd"]
        );
        let wrapped = wrap_command(&cmd, &[], "/tmp");
        assert_eq!(wrapped[0], "/bin/sh");
        assert_eq!(&wrapped[3..], ["/tmp", "pwd"]);
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
}
