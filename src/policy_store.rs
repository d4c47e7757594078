//! The edge between policy files on disk and the pure `rules` engine: reads the configured
//! directories (or the built-in set), compiles them, and swaps in a new set atomically when the
//! files change. A set that fails to load is refused and the previous one stays in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::Watcher as _;

use crate::config::{Config, PolicyProfile};
use crate::rules::{self, PolicySet, SharedPolicySet, Source};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading policy directory {path}: {source}")]
    ReadDirectory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading policy file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(Box<rules::Error>),
    #[error("watching policy directories: {0}")]
    Watch(#[from] notify::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rules::Error> for Error {
    fn from(error: rules::Error) -> Self {
        Error::Invalid(Box::new(error))
    }
}

/// The shipped baseline policies and rule scripts, built into the binary so podbridge works with
/// no files at all. `embedded_files_match_the_tree` keeps this list in step with the folders.
pub const BUILTIN_POLICIES: &[(&str, &str)] = &[
    (
        "policies/baseline/10-images.yaml",
        include_str!("../policies/baseline/10-images.yaml"),
    ),
    (
        "policies/baseline/20-security-context.yaml",
        include_str!("../policies/baseline/20-security-context.yaml"),
    ),
    (
        "policies/baseline/30-resources.yaml",
        include_str!("../policies/baseline/30-resources.yaml"),
    ),
    (
        "policies/baseline/40-pod.yaml",
        include_str!("../policies/baseline/40-pod.yaml"),
    ),
    (
        "policies/baseline/50-mounts.yaml",
        include_str!("../policies/baseline/50-mounts.yaml"),
    ),
    (
        "policies/baseline/60-client-labels.yaml",
        include_str!("../policies/baseline/60-client-labels.yaml"),
    ),
    (
        "policies/baseline/65-volume-claims.yaml",
        include_str!("../policies/baseline/65-volume-claims.yaml"),
    ),
    (
        "policies/baseline/70-durations.yaml",
        include_str!("../policies/baseline/70-durations.yaml"),
    ),
    (
        "policies/baseline/80-builds.yaml",
        include_str!("../policies/baseline/80-builds.yaml"),
    ),
    (
        "policies/baseline/90-pod-security.yaml",
        include_str!("../policies/baseline/90-pod-security.yaml"),
    ),
];

pub const BUILTIN_SCRIPTS: &[(&str, &str)] = &[
    (
        "image-mirrors.rhai",
        include_str!("../rules/image-mirrors.rhai"),
    ),
    (
        "ignore-docker-memory.rhai",
        include_str!("../rules/ignore-docker-memory.rhai"),
    ),
];

/// The shipped `policies/restricted` overlay, built in beside the baseline: a file replaces the
/// baseline file of the same name, as overlaid directories do.
pub const BUILTIN_RESTRICTED_OVERLAY: &[(&str, &str)] = &[
    (
        "policies/restricted/20-security-context.yaml",
        include_str!("../policies/restricted/20-security-context.yaml"),
    ),
    (
        "policies/restricted/90-pod-security.yaml",
        include_str!("../policies/restricted/90-pod-security.yaml"),
    ),
];

/// Compiles the built-in policy set.
pub fn builtin(limits: rules::Limits) -> Result<PolicySet> {
    builtin_profile(PolicyProfile::Baseline, limits)
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Compiles the built-in set of one profile: the baseline, with the restricted overlay for
/// [`PolicyProfile::Restricted`].
pub fn builtin_profile(profile: PolicyProfile, limits: rules::Limits) -> Result<PolicySet> {
    let overlay: &[(&str, &str)] = match profile {
        PolicyProfile::Baseline => &[],
        PolicyProfile::Restricted => BUILTIN_RESTRICTED_OVERLAY,
    };
    let mut sources: Vec<Source> = BUILTIN_POLICIES
        .iter()
        .filter(|(path, _)| {
            !overlay
                .iter()
                .any(|(over, _)| file_name(over) == file_name(path))
        })
        .chain(overlay.iter())
        .map(|(path, text)| Source {
            path: format!("(built-in) {path}"),
            text: text.to_string(),
        })
        .collect();
    // In file-name order, as overlaid directories are read.
    sources.sort_by(|a, b| file_name(&a.path).cmp(file_name(&b.path)));
    Ok(rules::compile(&sources, &builtin_scripts(), limits)?)
}

fn builtin_scripts() -> BTreeMap<String, String> {
    BUILTIN_SCRIPTS
        .iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect()
}

/// Policy files of the given directories (or single files), overlaid: a file name seen again in
/// a later directory replaces the earlier one, then all are taken in lexical order of file name.
pub fn sources(paths: &[PathBuf]) -> Result<Vec<Source>> {
    sources_relative_to(paths, None)
}

/// Like [`sources`], naming files relative to `display_base` when given, so messages read the
/// same wherever the command runs (policy tests name files relative to the test file).
pub fn sources_relative_to(paths: &[PathBuf], display_base: Option<&Path>) -> Result<Vec<Source>> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in paths {
        if path.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            by_name.insert(name, path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|source| Error::ReadDirectory {
            path: path.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::ReadDirectory {
                path: path.clone(),
                source,
            })?;
            let file = entry.path();
            let is_yaml = matches!(
                file.extension().and_then(|e| e.to_str()),
                Some("yaml") | Some("yml")
            );
            if is_yaml && file.is_file() {
                by_name.insert(entry.file_name().to_string_lossy().to_string(), file);
            }
        }
    }
    by_name
        .into_values()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            Ok(Source {
                path: match display_base {
                    Some(base) => relative_path(&path, base),
                    None => display_path(&path),
                },
                text,
            })
        })
        .collect()
}

/// The path as a reader would write it: `a/b/../c` becomes `a/c` (lexically, no I/O).
fn display_path(path: &Path) -> String {
    let mut parts: Vec<std::path::Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir
                if matches!(parts.last(), Some(std::path::Component::Normal(_))) =>
            {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.iter().collect::<PathBuf>().display().to_string()
}

/// `path` as seen from directory `base`, e.g. `../../policies/baseline/90-pod-security.yaml`.
fn relative_path(path: &Path, base: &Path) -> String {
    let (Ok(path_abs), Ok(base_abs)) = (std::fs::canonicalize(path), std::fs::canonicalize(base))
    else {
        return display_path(path);
    };
    let path_parts: Vec<_> = path_abs.components().collect();
    let base_parts: Vec<_> = base_abs.components().collect();
    let common = path_parts
        .iter()
        .zip(&base_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut relative = PathBuf::new();
    for _ in common..base_parts.len() {
        relative.push("..");
    }
    for part in &path_parts[common..] {
        relative.push(part);
    }
    relative.display().to_string()
}

/// Rule scripts: the built-in ones, replaced by same-named files of `dir` when given.
pub fn scripts(dir: Option<&Path>) -> Result<BTreeMap<String, String>> {
    let mut scripts = builtin_scripts();
    if let Some(dir) = dir {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::ReadDirectory {
            path: dir.into(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::ReadDirectory {
                path: dir.into(),
                source,
            })?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("rhai") {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadFile {
                    path: path.clone(),
                    source,
                })?;
                scripts.insert(entry.file_name().to_string_lossy().to_string(), text);
            }
        }
    }
    Ok(scripts)
}

/// Loads the set the configuration names: its directories, or the built-in set.
pub fn load(config: &Config) -> Result<PolicySet> {
    if config.policies.is_empty() {
        return builtin_profile(
            config.policy_profile.unwrap_or_default(),
            config.script_limits(),
        );
    }
    load_paths(
        &config.policies,
        config.rules_dir.as_deref(),
        config.script_limits(),
    )
}

pub fn load_paths(
    paths: &[PathBuf],
    rules_dir: Option<&Path>,
    limits: rules::Limits,
) -> Result<PolicySet> {
    load_paths_relative_to(paths, rules_dir, limits, None)
}

/// Like [`load_paths`], naming files in messages relative to `display_base`.
pub fn load_paths_relative_to(
    paths: &[PathBuf],
    rules_dir: Option<&Path>,
    limits: rules::Limits,
    display_base: Option<&Path>,
) -> Result<PolicySet> {
    if paths.is_empty() {
        return builtin(limits);
    }
    let sources = sources_relative_to(paths, display_base)?;
    Ok(rules::compile(&sources, &scripts(rules_dir)?, limits)?)
}

/// Watches the configured directories and swaps in each new set that compiles. The returned
/// watcher must be kept alive; dropping it stops reloading.
pub fn watch(
    config: Config,
    shared: SharedPolicySet,
) -> Result<Option<notify::RecommendedWatcher>> {
    if config.policies.is_empty() {
        return Ok(None);
    }
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = changed.send(());
        }
    })?;
    for path in config.policies.iter().chain(config.rules_dir.iter()) {
        watcher.watch(path, notify::RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            // Editors write in several steps: wait for the burst to settle, then load once.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while changes.try_recv().is_ok() {}
            match load(&config) {
                Ok(set) => {
                    tracing::info!(
                        files = set.files().len(),
                        rules = set.rule_count(),
                        "Policies reloaded"
                    );
                    shared.store(Arc::new(set));
                }
                Err(error) => {
                    tracing::error!(%error, "Policy reload refused; the previous policies stay in force")
                }
            }
        }
    });
    Ok(Some(watcher))
}

pub fn shared(set: PolicySet) -> SharedPolicySet {
    Arc::new(ArcSwap::from_pointee(set))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_files_match_the_tree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut on_disk: Vec<String> = std::fs::read_dir(root.join("policies/baseline"))
            .unwrap()
            .map(|e| {
                format!(
                    "policies/baseline/{}",
                    e.unwrap().file_name().to_string_lossy()
                )
            })
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = BUILTIN_POLICIES
            .iter()
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(embedded, on_disk);
        let mut scripts: Vec<String> = std::fs::read_dir(root.join("rules"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        scripts.sort();
        let mut embedded: Vec<String> =
            BUILTIN_SCRIPTS.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, scripts);
    }

    #[test]
    fn the_builtin_restricted_profile_is_the_overlaid_directories() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let on_disk: Vec<String> = std::fs::read_dir(root.join("policies/restricted"))
            .unwrap()
            .map(|e| {
                format!(
                    "policies/restricted/{}",
                    e.unwrap().file_name().to_string_lossy()
                )
            })
            .collect();
        for path in &on_disk {
            assert!(
                BUILTIN_RESTRICTED_OVERLAY.iter().any(|(p, _)| p == path),
                "{path} is not built in"
            );
        }
        let built_in =
            builtin_profile(PolicyProfile::Restricted, rules::Limits::default()).unwrap();
        let from_directories = load_paths(
            &[
                root.join("policies/baseline"),
                root.join("policies/restricted"),
            ],
            None,
            rules::Limits::default(),
        )
        .unwrap();
        let names = |set: &PolicySet| -> Vec<String> {
            set.files()
                .iter()
                .map(|f| f.rsplit("policies/").next().unwrap_or(f).to_string())
                .collect()
        };
        assert_eq!(names(&built_in), names(&from_directories));
        assert_eq!(built_in.rule_count(), from_directories.rule_count());
        let config = Config {
            policy_profile: Some(PolicyProfile::Restricted),
            ..Config::default()
        };
        assert_eq!(names(&load(&config).unwrap()), names(&built_in));
    }

    #[test]
    fn the_builtin_set_compiles() {
        let set = builtin(rules::Limits::default()).unwrap();
        assert!(set.rule_count() > 5);
    }

    #[test]
    fn later_directories_replace_same_named_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let sources = sources(&[
            root.join("policies/baseline"),
            root.join("policies/restricted"),
        ])
        .unwrap();
        let security: Vec<&Source> = sources
            .iter()
            .filter(|s| s.path.ends_with("90-pod-security.yaml"))
            .collect();
        assert_eq!(security.len(), 1);
        assert!(security[0].path.contains("restricted"));
        let names: Vec<&str> = sources
            .iter()
            .map(|s| s.path.rsplit('/').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[tokio::test]
    async fn a_broken_reload_keeps_the_previous_set() {
        let dir = tempfile::tempdir().unwrap();
        let good = "apiVersion: podbridge.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules:\n  - name: r\n    mutate: {setDefaults: {/spec/x: 1}}\n";
        std::fs::write(dir.path().join("p.yaml"), good).unwrap();
        let config = Config {
            policies: vec![dir.path().to_path_buf()],
            ..Config::default()
        };
        let shared = shared(load(&config).unwrap());
        let _watcher = watch(config, shared.clone()).unwrap();
        std::fs::write(
            dir.path().join("p.yaml"),
            good.replace("setDefaults", "setDefault"),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            shared.load().rule_count(),
            1,
            "broken set must not replace the good one"
        );
        std::fs::write(dir.path().join("p.yaml"), good).unwrap();
        std::fs::write(
            dir.path().join("q.yaml"),
            good.replace("name: p", "name: q"),
        )
        .unwrap();
        let mut reloaded = false;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if shared.load().rule_count() == 2 {
                reloaded = true;
                break;
            }
        }
        assert!(reloaded, "a fixed set must be loaded");
    }
}
