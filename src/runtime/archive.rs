//! Docker archive (`docker cp`) on a running container: stat, tar out and tar in, all by exec of
//! busybox/coreutils tools in `main`.

use bytes::Bytes;
use serde::Serialize;

use super::{ContainerView, Result, Runtime, RuntimeError};

/// Docker's `X-Docker-Container-Path-Stat` payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go `os.FileMode`: permission bits plus type bits (dir = 1<<31, symlink = 1<<27).
    pub mode: u32,
    pub mtime: String,
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

/// Unix `st_mode` → Go `os.FileMode`.
pub fn go_file_mode(unix_mode: u32) -> u32 {
    let mut mode = unix_mode & 0o777;
    match unix_mode & 0o170000 {
        0o040000 => mode |= 1 << 31,
        0o120000 => mode |= 1 << 27,
        0o010000 => mode |= 1 << 25,
        0o140000 => mode |= 1 << 24,
        0o020000 => mode |= (1 << 26) | (1 << 21),
        0o060000 => mode |= 1 << 26,
        _ => {}
    }
    if unix_mode & 0o4000 != 0 {
        mode |= 1 << 23;
    }
    if unix_mode & 0o2000 != 0 {
        mode |= 1 << 22;
    }
    if unix_mode & 0o1000 != 0 {
        mode |= 1 << 20;
    }
    mode
}

fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return ("/".into(), ".".into());
    }
    match trimmed.rsplit_once('/') {
        Some(("", base)) => ("/".into(), base.into()),
        Some((dir, base)) => (dir.into(), base.into()),
        None => (".".into(), trimmed.into()),
    }
}

/// Directories every image is assumed to have when there is no filesystem to look at.
const WELL_KNOWN_DIRECTORIES: [&str; 16] = [
    "/",
    "/etc",
    "/tmp",
    "/opt",
    "/usr",
    "/usr/local",
    "/usr/share",
    "/var",
    "/var/lib",
    "/home",
    "/root",
    "/srv",
    "/mnt",
    "/bin",
    "/docker-entrypoint-initdb.d",
    "/app",
];

/// Without a running process there is no filesystem to look at: a path with a trailing `/` or a
/// well-known directory is reported as a directory; anything else is "not found", so `docker cp`
/// copies into its parent under the new name, as it does for a missing destination.
fn created_stat(view: &ContainerView, path: &str) -> Result<PathStat> {
    let (_, base) = split_path(path);
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    if path.ends_with('/') || WELL_KNOWN_DIRECTORIES.contains(&trimmed) {
        Ok(PathStat {
            name: base,
            size: 4096,
            mode: go_file_mode(0o040755),
            mtime: super::state::ZERO_TIME.into(),
            link_target: String::new(),
        })
    } else {
        Err(RuntimeError::NotFound(format!(
            "Could not find the file {path} in container {}",
            view.name
        )))
    }
}

impl Runtime {
    fn require_running(&self, view: &ContainerView) -> Result<()> {
        if view.state.running && view.pod.is_some() {
            Ok(())
        } else {
            Err(RuntimeError::Conflict(format!(
                "container {} is not running: podbridge copies files through the running container",
                view.short_id()
            )))
        }
    }

    /// `lstat` of `path` in the container; `NotFound` if it does not exist.
    pub async fn stat_path(&self, view: &ContainerView, path: &str) -> Result<PathStat> {
        view.require_process("copying files")?;
        if view.state.is_exited() {
            // Docker reads a stopped container's filesystem; here it went with the pod.
            return Err(RuntimeError::Conflict(format!(
                "cannot copy from container {}: it has exited, and a container's filesystem does not outlive its pod on Kubernetes; copy files out before the container exits, or keep them in a named volume and read it from another container",
                view.short_id()
            )));
        }
        if !view.state.running {
            return created_stat(view, path);
        }
        self.require_running(view)?;
        let script = "stat -c '%s %f %Y' -- \"$0\" && { readlink -- \"$0\" || true; }";
        let output = self
            .exec_capture(
                &view.pod_name,
                vec!["sh".into(), "-c".into(), script.into(), path.into()],
                None,
            )
            .await?;
        if output.exit_code != 0 {
            return Err(RuntimeError::NotFound(format!(
                "Could not find the file {path} in container {}",
                view.name
            )));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        let fields: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let size = fields.first().and_then(|s| s.parse().ok()).unwrap_or(0);
        let unix_mode = fields
            .get(1)
            .and_then(|m| u32::from_str_radix(m, 16).ok())
            .unwrap_or(0o100644);
        let mtime = fields
            .get(2)
            .and_then(|t| t.parse::<i64>().ok())
            .and_then(|t| jiff::Timestamp::from_second(t).ok())
            .map(|t| t.to_string())
            .unwrap_or_else(|| super::state::ZERO_TIME.into());
        let (_, name) = split_path(path);
        Ok(PathStat {
            name: if name == "." { "/".into() } else { name },
            size,
            mode: go_file_mode(unix_mode),
            mtime,
            link_target: lines.next().unwrap_or_default().to_string(),
        })
    }

    /// A tar of `path` (entries named from its basename), as `GET /archive` returns it.
    pub async fn archive_get(&self, view: &ContainerView, path: &str) -> Result<(PathStat, Bytes)> {
        view.require_process("copying files")?;
        let stat = self.stat_path(view, path).await?;
        let (dir, base) = split_path(path);
        let max = self.limits().max_archive_bytes;
        let output = self
            .exec_capture_in(
                &view.pod_name,
                super::state::MAIN_CONTAINER,
                vec![
                    "tar".into(),
                    "-cf".into(),
                    "-".into(),
                    "-C".into(),
                    dir,
                    base,
                ],
                None,
                max,
            )
            .await?;
        if output.truncated {
            return Err(RuntimeError::LimitReached {
                message: format!(
                    "the tar of {path} is larger than {max} bytes, the most podbridge copies out of a container (config max_archive_bytes)"
                ),
            });
        }
        if output.exit_code != 0 {
            return Err(RuntimeError::Conflict(format!(
                "tar of {path} failed in container {}: {}",
                view.short_id(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok((stat, Bytes::from(output.stdout)))
    }

    /// Extracts a tar into the directory `path` (which must exist), as `PUT /archive` does.
    pub async fn archive_put(&self, view: &ContainerView, path: &str, tar: Bytes) -> Result<()> {
        view.require_process("copying files")?;
        if !view.state.running {
            return self.store_prestart_archive(view, path, tar).await;
        }
        let stat = self.stat_path(view, path).await?;
        if stat.mode & (1 << 31) == 0 {
            return Err(RuntimeError::BadRequest(format!(
                "extraction point is not a directory: {path}"
            )));
        }
        // tar reads the archive until stdin closes.
        let output = self
            .exec_capture(
                &view.pod_name,
                ["tar", "-xf", "-", "-C", path].map(String::from).to_vec(),
                Some(tar),
            )
            .await?;
        if output.exit_code != 0 {
            return Err(RuntimeError::BadRequest(format!(
                "extracting into {path} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_modes_match_go() {
        assert_eq!(go_file_mode(0o100644), 0o644);
        assert_eq!(go_file_mode(0o040755), 2147484141);
        assert_eq!(go_file_mode(0o120777), (1 << 27) | 0o777);
    }

    #[test]
    fn paths_split_into_dir_and_base() {
        assert_eq!(
            split_path("/etc/hostname"),
            ("/etc".into(), "hostname".into())
        );
        assert_eq!(split_path("/data/"), ("/".into(), "data".into()));
        assert_eq!(split_path("/"), ("/".into(), ".".into()));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(crate::proptest_cases::config(512))]

            /// The `path` query of `/containers/{id}/archive`: split into the directory tar runs
            /// in and one name inside it.
            #[test]
            fn archive_paths_split_into_a_directory_and_one_name(
                path in prop_oneof![any::<String>(), "[/.a]{0,12}"],
            ) {
                let (dir, base) = split_path(&path);
                prop_assert!(!dir.is_empty() && !base.is_empty());
                prop_assert!(!base.contains('/'), "{:?}", base);
                if path.trim_end_matches('/').contains('/') || path.starts_with('/') {
                    prop_assert!(path.starts_with(&dir) || dir == "/", "{:?} {:?}", path, dir);
                }
            }
        }
    }
}
