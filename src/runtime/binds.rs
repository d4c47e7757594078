//! Bind mounts: the client's paths live beside podbridge, not on any node, so rendering gives
//! each bind an emptyDir and an init container that waits; at start the runtime tars each source
//! into its emptyDir through the init container, then releases it with the ready marker.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use tracing::{info, warn};

use super::{Result, Runtime, RuntimeError};
use crate::labels;
use crate::render::{BIND_MOUNT_ROOT, INIT_CONTAINER, READY_MARKER};

/// One bind to copy: the client path and the emptyDir volume that serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct BindCopy {
    pub source: String,
    pub volume: String,
}

/// Binds recorded in the pod's mounts annotation.
pub fn bind_copies(pod: &Pod) -> Vec<BindCopy> {
    let Some(raw) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::ANNOTATION_MOUNTS))
    else {
        return Vec::new();
    };
    let records: Vec<serde_json::Value> = serde_json::from_str(raw).unwrap_or_default();
    records
        .iter()
        .filter(|r| r["type"] == "bind")
        .filter_map(|r| {
            Some(BindCopy {
                source: r["source"].as_str()?.to_string(),
                volume: r["volume"].as_str()?.to_string(),
            })
        })
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

/// A tar of a local path: a directory's contents, or a file under its own name.
async fn local_tar(source: &str) -> std::io::Result<Option<Vec<u8>>> {
    let path = Path::new(source);
    let Ok(metadata) = tokio::fs::metadata(path).await else {
        return Ok(None);
    };
    let mut command = tokio::process::Command::new("tar");
    command.arg("-cf").arg("-");
    if metadata.is_dir() {
        command.arg("-C").arg(path).arg(".");
    } else {
        let parent = path.parent().unwrap_or(Path::new("/"));
        let base = path
            .file_name()
            .map(|b| b.to_os_string())
            .unwrap_or_default();
        command.arg("-C").arg(parent).arg(base);
    }
    let output = command.output().await?;
    if !output.status.success() {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(Some(output.stdout))
}

/// Bind sources of the stored pod that are single files here, for the start's translation
/// (a file is mounted with `subPath`; an emptyDir at the target would be a directory).
pub fn file_bind_sources(pod: &Pod) -> std::collections::BTreeSet<String> {
    bind_copies(pod)
        .into_iter()
        .filter(|bind| Path::new(&bind.source).is_file())
        .map(|bind| bind.source)
        .collect()
}

impl Runtime {
    /// Fills the bind emptyDirs of a just-applied pod and releases its init container.
    pub async fn copy_binds(&self, id: &str, pod_name: &str, timeout: Duration) -> Result<()> {
        let id_owned = id.to_string();
        let ready = self
            .wait_until(timeout, |rt| {
                rt.find(&id_owned)
                    .ok()
                    .and_then(|v| v.pod.clone())
                    .is_some_and(|p| init_running(&p))
            })
            .await;
        let view = self.find(id)?;
        let Some(pod) = view.pod.clone().filter(|_| ready) else {
            return Err(RuntimeError::Timeout {
                operation: "waiting for the bind-copy init container",
                pod: pod_name.into(),
                seconds: timeout.as_secs(),
            });
        };
        for bind in bind_copies(&pod) {
            let tar = match local_tar(&bind.source).await {
                Ok(Some(tar)) => tar,
                Ok(None) => {
                    warn!(pod = %pod_name, source = %bind.source, "Bind source does not exist here; the mount stays empty");
                    continue;
                }
                Err(error) => {
                    return Err(RuntimeError::BadRequest(format!(
                        "cannot read bind source {}: {error}",
                        bind.source
                    )));
                }
            };
            let dir = format!("{BIND_MOUNT_ROOT}/{}", bind.volume);
            let output = self
                .exec_capture_in(
                    pod_name,
                    INIT_CONTAINER,
                    ["tar", "-xf", "-", "-C", dir.as_str()]
                        .map(String::from)
                        .to_vec(),
                    Some(Bytes::from(tar)),
                )
                .await?;
            if output.exit_code != 0 {
                return Err(RuntimeError::BadRequest(format!(
                    "copying bind {} into pod {pod_name} failed: {}",
                    bind.source,
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
            info!(pod = %pod_name, source = %bind.source, volume = %bind.volume, "Bind copied");
        }
        self.exec_capture_in(
            pod_name,
            INIT_CONTAINER,
            vec!["touch".into(), READY_MARKER.into()],
            None,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_from_annotation() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"annotations": {
            labels::ANNOTATION_MOUNTS: r#"[{"type":"bind","source":"/src","volume":"bind-0","target":"/dst"},{"type":"tmpfs","volume":"tmpfs-1"}]"#
        }}}))
        .unwrap();
        assert_eq!(
            bind_copies(&pod),
            vec![BindCopy {
                source: "/src".into(),
                volume: "bind-0".into()
            }]
        );
        assert!(!has_init_container(&pod));
    }

    #[tokio::test]
    async fn local_tar_of_missing_path_is_none() {
        assert!(local_tar("/definitely/not/here").await.unwrap().is_none());
    }
}
