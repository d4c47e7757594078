//! `podbridge policy test`: policy test cases as files (request, policies, expected per-rule
//! results, exact expected objects, or an expected refusal), run through the same translation
//! the bridge uses, in the spirit of `kyverno test` and `gator verify`. An expectation that is
//! written down is always compared: a patched object that differs fails with a diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use crate::api::translate::{objects_yaml, CreateRequest, TranslateError, Translator};
use crate::model::{ContainerId, ImageConfig};
use crate::render::{Identity, RenderContext};
use crate::{policy_store, rules};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: loading its policies: {source}")]
    Policies {
        path: PathBuf,
        source: Box<policy_store::Error>,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TestFile {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: TestMetadata,
    spec: TestSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestMetadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TestSpec {
    policies: Vec<String>,
    #[serde(default)]
    rules_dir: Option<String>,
    #[serde(default)]
    context: TestContext,
    cases: Vec<TestCase>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TestContext {
    project: Option<String>,
    namespace: Option<String>,
    instance: Option<String>,
    name_prefix: Option<String>,
    docker_host: Option<String>,
    /// `claim` (the default) or `emptyDir`, as the config key `named_volumes`.
    named_volumes: Option<crate::render::NamedVolumes>,
    /// Directories bind sources may come from, as the config key `bind_roots` (default none).
    #[serde(default)]
    bind_roots: Vec<String>,
    today: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TestCase {
    name: String,
    request: String,
    #[serde(default)]
    container_name: Option<String>,
    #[serde(default)]
    image_config: Option<String>,
    /// `Some(None)` (an explicit null) runs the case with no project at all.
    #[serde(default, deserialize_with = "explicit_null")]
    project: Option<Option<String>>,
    expect: Expect,
}

fn explicit_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    results: Vec<ExpectedResult>,
    #[serde(default)]
    objects: Option<String>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
    #[serde(default)]
    error: Option<ExpectedError>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedResult {
    policy: String,
    rule: String,
    result: rules::Outcome,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedError {
    status: u16,
    message: String,
}

/// One case's verdict.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub file: PathBuf,
    pub suite: String,
    pub case: String,
    /// Empty when the case passed; otherwise each mismatch, readable.
    pub failures: Vec<String>,
}

/// Finds `*.yaml` files of kind PolicyTest under `root` (or `root` itself), sorted.
pub fn discover(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    if root.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| Error::Read {
                    path: dir.clone(),
                    source,
                })?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                if text.lines().any(|l| l.trim() == "kind: PolicyTest") {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

fn schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(include_str!("../schemas/policy-test.schema.json"))
                .expect("embedded schema is JSON");
        jsonschema::validator_for(&schema).expect("embedded schema compiles")
    })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })
}

/// Runs every case of one test file. With `update`, expected object files are rewritten from
/// the actual output (review the diff before committing).
pub fn run_file(path: &Path, update: bool) -> Result<Vec<CaseOutcome>> {
    let invalid = |message: String| Error::Invalid {
        path: path.into(),
        message,
    };
    let text = read(path)?;
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let json: Value = serde_json::to_value(&yaml).map_err(|e| invalid(e.to_string()))?;
    if let Some(error) = schema().iter_errors(&json).next() {
        return Err(invalid(format!("{error} (at {})", error.instance_path())));
    }
    let file: TestFile = serde_json::from_value(json).map_err(|e| invalid(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let policy_paths: Vec<PathBuf> = file.spec.policies.iter().map(|p| base.join(p)).collect();
    let rules_dir = file.spec.rules_dir.as_ref().map(|d| base.join(d));
    let set = policy_store::load_paths_relative_to(
        &policy_paths,
        rules_dir.as_deref(),
        // The operation limit, not the clock, must stop runaway scripts in tests, so that the
        // expected message does not depend on how loaded the machine is.
        rules::Limits {
            deadline: std::time::Duration::from_secs(10),
            ..rules::Limits::default()
        },
        Some(base),
    )
    .map_err(|source| Error::Policies {
        path: path.into(),
        source: Box::new(source),
    })?;
    let shared = policy_store::shared(set);
    let context = &file.spec.context;
    let today = match &context.today {
        Some(day) => day
            .parse()
            .map_err(|e| invalid(format!("context.today: {e}")))?,
        None => jiff::civil::date(2026, 1, 1),
    };
    let bind_roots = crate::model::BindRoots::new(&context.bind_roots)
        .map_err(|e| invalid(format!("context.bindRoots: {e}")))?;
    let mut outcomes = Vec::new();
    for case in &file.spec.cases {
        let render_context = RenderContext {
            instance_id: context
                .instance
                .clone()
                .unwrap_or_else(|| "policy-test".into()),
            namespace: context
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            project: case
                .project
                .clone()
                .unwrap_or_else(|| context.project.clone()),
            name_prefix: context
                .name_prefix
                .clone()
                .unwrap_or_else(|| "podbridge".into()),
            init_image: "docker.io/library/busybox:latest".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            docker_host_for_pods: context.docker_host.clone(),
            volumes: crate::render::VolumeSettings {
                backing: context.named_volumes.unwrap_or_default(),
                ..Default::default()
            },
            bind_roots: bind_roots.clone(),
        };
        let translator = Translator::new(shared.clone(), render_context).with_today(today);
        let failures = run_case(base, case, &translator, update)?;
        outcomes.push(CaseOutcome {
            file: path.into(),
            suite: file.metadata.name.clone(),
            case: case.name.clone(),
            failures,
        });
    }
    Ok(outcomes)
}

fn run_case(
    base: &Path,
    case: &TestCase,
    translator: &Translator,
    update: bool,
) -> Result<Vec<String>> {
    let body = read(&base.join(&case.request))?;
    let image: Option<ImageConfig> = match &case.image_config {
        Some(file) => {
            let path = base.join(file);
            Some(
                serde_json::from_str(&read(&path)?).map_err(|e| Error::Invalid {
                    path,
                    message: e.to_string(),
                })?,
            )
        }
        None => None,
    };
    let request = CreateRequest {
        start: crate::render::StartInputs::default(),
        purpose: Default::default(),
        body: body.as_bytes(),
        name: case.container_name.as_deref(),
        image: image.as_ref(),
        identity: Identity {
            id: ContainerId::from_seed(case.name.as_bytes()),
            created: "2026-01-01T00:00:00Z".into(),
        },
    };
    let mut failures = Vec::new();
    let outcome = translator.translate(&request);
    let results = match &outcome {
        Ok(translation) => translation.results.clone(),
        Err(error) => error.results().to_vec(),
    };
    for expected in &case.expect.results {
        let actual = results
            .iter()
            .find(|r| r.policy == expected.policy && r.rule == expected.rule);
        match actual {
            None => failures.push(format!(
                "no result for rule {}/{}",
                expected.policy, expected.rule
            )),
            Some(actual) if actual.result != expected.result => failures.push(format!(
                "rule {}/{}: expected {}, got {} ({})",
                expected.policy, expected.rule, expected.result, actual.result, actual.reason
            )),
            Some(_) => {}
        }
    }
    match (&outcome, &case.expect.error) {
        (Ok(_), Some(expected)) => failures.push(format!(
            "expected refusal {} {:?}, but the request was accepted",
            expected.status, expected.message
        )),
        (Err(error), None) => {
            failures.push(format!("unexpected refusal {}: {error}", error.status()))
        }
        (Err(error), Some(expected)) => {
            if error.status() != expected.status {
                failures.push(format!(
                    "expected status {}, got {}",
                    expected.status,
                    error.status()
                ));
            }
            let message = error.to_string();
            if message.trim_end() != expected.message.trim_end() {
                failures.push(format!(
                    "error message differs:\n{}",
                    diff(&expected.message, &message)
                ));
            }
        }
        (Ok(_), None) => {}
    }
    if let Ok(translation) = &outcome {
        if let Some(expected_warnings) = &case.expect.warnings {
            if expected_warnings != &translation.warnings {
                failures.push(format!(
                    "warnings differ: expected {expected_warnings:?}, got {:?}",
                    translation.warnings
                ));
            }
        }
        if let Some(objects_file) = &case.expect.objects {
            let path = base.join(objects_file);
            let actual = objects_yaml(&translation.objects);
            if update {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                        path: parent.into(),
                        source,
                    })?;
                }
                std::fs::write(&path, &actual).map_err(|source| Error::Write {
                    path: path.clone(),
                    source,
                })?;
            } else {
                let expected = read(&path)?;
                if !same_documents(&expected, &actual) {
                    failures.push(format!(
                        "objects differ from {}:\n{}",
                        path.display(),
                        diff(&expected, &actual)
                    ));
                }
            }
        }
    }
    Ok(failures)
}

/// Compares YAML semantically (key order and formatting aside) so a golden file can be edited
/// by hand; a missing or extra field still fails.
fn same_documents(expected: &str, actual: &str) -> bool {
    let parse = |text: &str| -> Option<Vec<serde_yaml::Value>> {
        serde_yaml::Deserializer::from_str(text)
            .map(serde_yaml::Value::deserialize)
            .collect::<Result<Vec<_>, _>>()
            .ok()
    };
    match (parse(expected), parse(actual)) {
        (Some(expected), Some(actual)) => expected == actual,
        _ => false,
    }
}

fn diff(expected: &str, actual: &str) -> String {
    similar::TextDiff::from_lines(expected, actual)
        .unified_diff()
        .context_radius(3)
        .header("expected", "actual")
        .to_string()
}

/// Runs every test file under `root` and renders the report; returns it with the failure count.
pub fn run(root: &Path, update: bool) -> Result<(String, usize)> {
    let mut report = String::new();
    let mut passed = 0;
    let mut failed = 0;
    for file in discover(root)? {
        for outcome in run_file(&file, update)? {
            if outcome.failures.is_empty() {
                passed += 1;
                report.push_str(&format!("PASS  {} / {}\n", outcome.suite, outcome.case));
            } else {
                failed += 1;
                report.push_str(&format!(
                    "FAIL  {} / {}  ({})\n",
                    outcome.suite,
                    outcome.case,
                    outcome.file.display()
                ));
                for failure in &outcome.failures {
                    for line in failure.lines() {
                        report.push_str(&format!("      {line}\n"));
                    }
                }
            }
        }
    }
    report.push_str(&format!("{passed} passed, {failed} failed\n"));
    Ok((report, failed))
}

/// Lets callers tell a refusal from success when printing.
pub fn describe_refusal(error: &TranslateError) -> String {
    format!("{} {}", error.status(), error)
}
