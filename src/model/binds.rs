//! Bind roots: which bind sources podbridge may copy from its own filesystem. Like a remote
//! Docker daemon, podbridge serves a bind from where it runs, not from the client's machine, so
//! whoever runs podbridge declares the directories (config `bind_roots`) and every other source
//! is refused at create. This is the lexical half of the decision (no I/O); the runtime repeats
//! it on the resolved path before copying (`runtime::binds`).

use std::fmt;

use super::{Mount, MountSource};

/// The name a refusal gives the rule, so users and policy authors can search for it.
pub const RULE: &str = "bind-roots";
/// The configuration key that declares the roots.
pub const SETTING: &str = "bind_roots";

/// Absolute, normalised directories under which bind sources are allowed; empty refuses every
/// bind (the Docker socket is not a bind: podbridge serves it itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindRoots {
    roots: Vec<String>,
}

/// Why a root in the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{SETTING} entry {root:?}: {reason}")]
pub struct InvalidBindRoot {
    pub root: String,
    pub reason: PathProblem,
}

/// What is wrong with a path, lexically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("it is not an absolute path")]
    NotAbsolute,
    #[error("it contains a \"..\" component")]
    ParentComponent,
}

/// Why one bind source is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalReason {
    Path(PathProblem),
    /// Not under any root (the roots in force are in [`BindRefusal::roots`]).
    OutsideRoots,
}

/// One refused bind: the source as the client wrote it and where in the request it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindRefusal {
    pub source: String,
    /// JSON pointer into the create request, e.g. `/HostConfig/Binds/0`.
    pub field: String,
    pub reason: RefusalReason,
}

impl fmt::Display for BindRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bind source {:?} (at {}) ", self.source, self.field)?;
        match &self.reason {
            RefusalReason::Path(problem) => write!(f, "is refused: {problem}"),
            RefusalReason::OutsideRoots => write!(f, "is not under an allowed root"),
        }
    }
}

/// Lexical normalisation: an absolute path with `.` components, repeated and trailing slashes
/// removed. `..` is refused rather than resolved: on the real filesystem it depends on symlinks,
/// and a client has no reason to write it.
pub fn normalise(path: &str) -> Result<String, PathProblem> {
    if !path.starts_with('/') {
        return Err(PathProblem::NotAbsolute);
    }
    let mut normalised = String::with_capacity(path.len());
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(PathProblem::ParentComponent),
            name => {
                normalised.push('/');
                normalised.push_str(name);
            }
        }
    }
    if normalised.is_empty() {
        normalised.push('/');
    }
    Ok(normalised)
}

/// Whether normalised `path` is `root` or below it (component-wise: `/builds2` is not under
/// `/builds`).
fn is_under(path: &str, root: &str) -> bool {
    root == "/"
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl BindRoots {
    /// Validates and normalises the configured roots.
    pub fn new<S: AsRef<str>>(roots: impl IntoIterator<Item = S>) -> Result<Self, InvalidBindRoot> {
        let mut normalised: Vec<String> = Vec::new();
        for root in roots {
            let root = root.as_ref();
            let path = normalise(root).map_err(|reason| InvalidBindRoot {
                root: root.to_owned(),
                reason,
            })?;
            if !normalised.contains(&path) {
                normalised.push(path);
            }
        }
        Ok(BindRoots { roots: normalised })
    }

    pub fn roots(&self) -> &[String] {
        &self.roots
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The normalised source when it lies under a root.
    pub fn check(&self, source: &str) -> Result<String, RefusalReason> {
        let path = normalise(source).map_err(RefusalReason::Path)?;
        if self.roots.iter().any(|root| is_under(&path, root)) {
            Ok(path)
        } else {
            Err(RefusalReason::OutsideRoots)
        }
    }

    /// Every bind of the workload that is not allowed, in request order. Docker socket binds
    /// are not binds: podbridge answers them itself.
    pub fn refusals(&self, mounts: &[Mount]) -> Vec<BindRefusal> {
        mounts
            .iter()
            .filter_map(|mount| match &mount.source {
                MountSource::Bind { path } => self.check(path).err().map(|reason| BindRefusal {
                    source: path.clone(),
                    field: mount.field.clone(),
                    reason,
                }),
                _ => None,
            })
            .collect()
    }

    /// The setting as a user would write it, for messages: `bind_roots = ["/builds"]`.
    pub fn describe(&self) -> String {
        let quoted: Vec<String> = self.roots.iter().map(|r| format!("{r:?}")).collect();
        format!("{SETTING} = [{}]", quoted.join(", "))
    }
}

/// The create refusal for one or more binds: the rule, the setting in force, each source with
/// its field, and how to fix it.
pub fn refusal_message(roots: &BindRoots, refusals: &[BindRefusal]) -> String {
    let setting = if roots.is_empty() {
        format!("{SETTING} is empty, so no bind source is allowed")
    } else {
        roots.describe()
    };
    let lines: Vec<String> = refusals.iter().map(ToString::to_string).collect();
    format!(
        "container create blocked by rule {RULE} ({setting}):\n  {}\n\
         podbridge copies bind sources from its own filesystem, like a remote Docker daemon reads \
         them from its host, so only directories declared in its setting {SETTING} can be bound. \
         To fix: bind an absolute path under one of those directories, use a named volume or \
         `docker cp` instead, or ask whoever runs podbridge to add the directory to {SETTING}.",
        lines.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(path: &str, field: &str) -> Mount {
        Mount {
            target: "/x".into(),
            source: MountSource::Bind { path: path.into() },
            read_only: false,
            field: field.into(),
        }
    }

    #[test]
    fn normalisation_drops_dots_and_slashes_and_refuses_parents() {
        assert_eq!(normalise("/builds//a/./b/").unwrap(), "/builds/a/b");
        assert_eq!(normalise("/").unwrap(), "/");
        assert_eq!(normalise("//").unwrap(), "/");
        assert_eq!(normalise("/etc/../root"), Err(PathProblem::ParentComponent));
        assert_eq!(normalise("/builds/.."), Err(PathProblem::ParentComponent));
        assert_eq!(normalise("-rf"), Err(PathProblem::NotAbsolute));
        assert_eq!(normalise("builds/a"), Err(PathProblem::NotAbsolute));
        assert_eq!(normalise(""), Err(PathProblem::NotAbsolute));
    }

    #[test]
    fn roots_must_be_absolute_without_parents() {
        assert!(BindRoots::new(["relative"]).is_err());
        let error = BindRoots::new(["/builds/../etc"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "bind_roots entry \"/builds/../etc\": it contains a \"..\" component"
        );
        let roots = BindRoots::new(["/builds/", "/builds", "/cache"]).unwrap();
        assert_eq!(roots.roots(), ["/builds", "/cache"]);
    }

    #[test]
    fn only_paths_under_a_root_pass() {
        let roots = BindRoots::new(["/builds"]).unwrap();
        assert_eq!(roots.check("/builds").unwrap(), "/builds");
        assert_eq!(
            roots.check("/builds/group/app/./src/").unwrap(),
            "/builds/group/app/src"
        );
        assert_eq!(roots.check("/"), Err(RefusalReason::OutsideRoots));
        assert_eq!(roots.check("/builds2"), Err(RefusalReason::OutsideRoots));
        assert_eq!(
            roots.check("/builds/../root"),
            Err(RefusalReason::Path(PathProblem::ParentComponent))
        );
        assert_eq!(
            roots.check("/etc/../root"),
            Err(RefusalReason::Path(PathProblem::ParentComponent))
        );
        assert_eq!(
            roots.check("-rf"),
            Err(RefusalReason::Path(PathProblem::NotAbsolute))
        );
        assert_eq!(
            roots.check("/var/run/secrets/kubernetes.io/serviceaccount"),
            Err(RefusalReason::OutsideRoots)
        );
    }

    #[test]
    fn no_roots_refuse_every_bind_but_not_the_docker_socket() {
        let roots = BindRoots::default();
        let mounts = [
            bind("/builds/x", "/HostConfig/Binds/0"),
            Mount {
                target: "/var/run/docker.sock".into(),
                source: MountSource::DockerSocket {
                    path: "/var/run/docker.sock".into(),
                },
                read_only: false,
                field: "/HostConfig/Binds/1".into(),
            },
            bind("/root/.kube", "/HostConfig/Mounts/0"),
        ];
        let refusals = roots.refusals(&mounts);
        let fields: Vec<&str> = refusals.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(fields, ["/HostConfig/Binds/0", "/HostConfig/Mounts/0"]);
        let message = refusal_message(&roots, &refusals);
        assert!(
            message.starts_with(
                "container create blocked by rule bind-roots (bind_roots is empty, so no bind source is allowed):\n  \
                 bind source \"/builds/x\" (at /HostConfig/Binds/0) is not under an allowed root\n  \
                 bind source \"/root/.kube\" (at /HostConfig/Mounts/0) is not under an allowed root\n"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_root_of_slash_allows_everything_without_parents() {
        let roots = BindRoots::new(["/"]).unwrap();
        assert!(roots.check("/etc/passwd").is_ok());
        assert!(roots.check("/etc/../passwd").is_err());
        assert_eq!(roots.describe(), "bind_roots = [\"/\"]");
    }
}
