//! The `podbridge` binary as a user runs it: translate a shipped example, explain, refusals.

use super::support;

fn podbridge(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let ran = support::podbridge(args, stdin);
    (ran.code, ran.stdout, ran.stderr)
}

#[test]
fn translate_prints_kubernetes_yaml_and_the_explain_table() {
    let (code, stdout, stderr) = podbridge(
        &[
            "translate",
            "examples/testcontainers-redis.json",
            "--explain",
            "--instance",
            "ci-1",
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Pod", "Service"]);
    assert_eq!(
        documents[0]["metadata"]["labels"]["podbridge.io/instance"].as_str(),
        Some("ci-1")
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("pod-security ") && l.contains(" standard ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("+ /spec/containers/0/imagePullPolicy: \"IfNotPresent\""),
        "{stderr}"
    );
    assert!(
        stderr
            .trim_end()
            .ends_with("applied: 5, pass: 7, fail: 0, warn: 0, skip: 3, error: 0"),
        "{stderr}"
    );
}

#[test]
fn translate_reads_standard_input_and_reports_refusals_like_docker() {
    let (code, stdout, stderr) = podbridge(
        &["translate", "-"],
        Some(r#"{"Image": "busybox", "HostConfig": {"Privileged": true}}"#),
    );
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.starts_with("Error response (403): container create blocked by policy:\n  pod-security/standard ((built-in) policies/baseline/90-pod-security.yaml)"),
        "{stderr}"
    );
    let (code, _, stderr) = podbridge(&["translate", "-"], Some("{not json"));
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("Error response (400): invalid JSON"),
        "{stderr}"
    );
}

#[test]
fn translate_refuses_binds_outside_the_configured_roots() {
    let body = r#"{"Image": "busybox", "HostConfig": {"Binds": ["/builds/app:/src"], "Mounts": [{"Type": "bind", "Source": "/root/.kube", "Target": "/k"}]}}"#;
    let (code, stdout, stderr) = podbridge(&["translate", "-"], Some(body));
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.starts_with(
            "Error response (403): container create blocked by rule bind-roots (bind_roots is empty, so no bind source is allowed):\n  \
             bind source \"/builds/app\" (at /HostConfig/Binds/0) is not under an allowed root\n  \
             bind source \"/root/.kube\" (at /HostConfig/Mounts/0) is not under an allowed root\n"
        ),
        "{stderr}"
    );
    let with_roots = |body: &str| {
        support::run(
            env!("CARGO_BIN_EXE_podbridge"),
            &["translate", "-"],
            Some(body),
            &[("PODBRIDGE_BIND_ROOTS", r#"["/builds"]"#)],
        )
    };
    let refused = with_roots(body);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.starts_with(
            "Error response (403): container create blocked by rule bind-roots (bind_roots = [\"/builds\"]):\n  \
             bind source \"/root/.kube\" (at /HostConfig/Mounts/0) is not under an allowed root\n"
        ),
        "{}",
        refused.stderr
    );
    let allowed =
        with_roots(r#"{"Image": "busybox", "HostConfig": {"Binds": ["/builds/app:/src"]}}"#);
    assert!(allowed.ok(), "{}", allowed.stderr);
    assert!(
        allowed.stdout.contains("podbridge-init"),
        "{}",
        allowed.stdout
    );
}

#[test]
fn restricted_profile_by_overlaying_directories() {
    let (code, stdout, stderr) = podbridge(
        &[
            "translate",
            "examples/testcontainers-redis.json",
            "--policies",
            "policies/baseline",
            "--policies",
            "policies/restricted",
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("runAsNonRoot: true") && stdout.contains("- ALL"),
        "{stdout}"
    );
}

#[test]
fn policy_check_accepts_the_shipped_directories_and_names_a_broken_file() {
    let (code, stdout, _) = podbridge(
        &[
            "policy",
            "check",
            "policies/baseline",
            "policies/restricted",
            "policies/optional",
        ],
        None,
    );
    assert_eq!(code, 0);
    assert!(stdout.ends_with("valid\n"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: podbridge.io/v1alpha1\nkind: Policy\nmetadata: {name: bad}\nspec:\n  rules:\n  - name: r\n    mutate: {patches: [{op: add, path: /spec/x}]}\n",
    )
    .unwrap();
    let (code, _, stderr) = podbridge(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bad.yaml, rule r:") && stderr.contains("/spec/rules/0/mutate/patches/0"),
        "{stderr}"
    );
}

#[test]
fn a_bad_configuration_value_names_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("podbridge.toml");
    std::fs::write(&file, "start_timeout_seconds = \"soon\"\n").unwrap();
    let (code, _, stderr) = podbridge(&["config", "--config", file.to_str().unwrap()], None);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("start_timeout_seconds") && stderr.contains("podbridge.toml"),
        "{stderr}"
    );
}

#[test]
fn policy_test_command_prints_a_closing_count() {
    let (code, stdout, _) = podbridge(&["policy", "test", "tests/rules/engine"], None);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.ends_with("8 passed, 0 failed\n"), "{stdout}");
}
