//! The translation against the real test cluster: every object podbridge renders is accepted by
//! a real API server under the namespace-scoped ServiceAccount (not admin), and a translated
//! busybox pod really runs. Needs `tests/cluster/up.sh`; `tests/run.sh` provides the namespace.

use super::support;
use std::time::{Duration, Instant};

struct Cluster {
    kubeconfig: String,
    namespace: String,
}

fn cluster() -> Cluster {
    let kubeconfig = std::env::var("PODBRIDGE_TEST_KUBECONFIG").expect(
        "PODBRIDGE_TEST_KUBECONFIG must name a namespaced kubeconfig (tests/run.sh sets it)",
    );
    let namespace =
        std::env::var("PODBRIDGE_TEST_NAMESPACE").expect("PODBRIDGE_TEST_NAMESPACE must be set");
    Cluster {
        kubeconfig,
        namespace,
    }
}

fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    kubeconfig: Option<&str>,
) -> (bool, String, String) {
    let env: Vec<(&str, &str)> = kubeconfig.map(|k| ("KUBECONFIG", k)).into_iter().collect();
    let ran = support::run(program, args, stdin, &env);
    (ran.ok(), ran.stdout, ran.stderr)
}

fn translate(cluster: &Cluster, request: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "translate",
        request,
        "--namespace",
        &cluster.namespace,
        "--instance",
        "cluster-test",
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = run(env!("CARGO_BIN_EXE_podbridge"), &args, None, None);
    assert!(ok, "translate {request} failed: {stderr}");
    stdout
}

#[test]
#[ignore = "needs the test cluster"]
fn every_accepted_request_renders_objects_the_api_server_accepts() {
    let cluster = cluster();
    let mut checked = 0;
    let mut requests: Vec<_> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rules/requests"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    requests.extend(
        std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/create"
        ))
        .unwrap()
        .map(|e| e.unwrap().path()),
    );
    requests.sort();
    for request in requests {
        let path = request.to_str().unwrap();
        // The bind roots of the golden tests (tests/rules/baseline), so the fixtures that bind
        // a checkout and the CA certificates are rendered and checked too.
        let translated = support::run(
            env!("CARGO_BIN_EXE_podbridge"),
            &[
                "translate",
                path,
                "--namespace",
                &cluster.namespace,
                "--instance",
                "cluster-test",
            ],
            None,
            &[("PODBRIDGE_BIND_ROOTS", r#"["/home/ci", "/etc/ssl/certs"]"#)],
        );
        let (ok, yaml) = (translated.ok(), translated.stdout);
        if !ok {
            continue; // refused by policy: nothing to apply
        }
        let (ok, stdout, stderr) = run(
            "kubectl",
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&yaml),
            Some(&cluster.kubeconfig),
        );
        assert!(
            ok,
            "the API server refused the objects for {path}:\n{stderr}\n{stdout}\n{yaml}"
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} requests were checked");
}

#[test]
#[ignore = "needs the test cluster"]
fn a_translated_busybox_container_runs_and_is_found_by_its_labels() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.json");
    std::fs::write(
        &request,
        r#"{"Image": "busybox", "Cmd": ["sh", "-c", "echo hello-from-podbridge"]}"#,
    )
    .unwrap();
    let yaml = translate(
        &cluster,
        request.to_str().unwrap(),
        &["--name", "cluster-hello"],
    );
    let kubeconfig = Some(cluster.kubeconfig.as_str());
    let (ok, _, stderr) = run("kubectl", &["apply", "-f", "-"], Some(&yaml), kubeconfig);
    assert!(ok, "{stderr}");
    let selector = "app.kubernetes.io/managed-by=podbridge,podbridge.io/instance=cluster-test";
    let deadline = Instant::now() + Duration::from_secs(90);
    let phase = loop {
        let (_, phase, _) = run(
            "kubectl",
            &[
                "get",
                "pods",
                "-l",
                selector,
                "-o",
                "jsonpath={.items[0].status.phase}",
            ],
            None,
            kubeconfig,
        );
        if phase == "Succeeded" || phase == "Failed" || Instant::now() > deadline {
            break phase;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let (_, logs, _) = run(
        "kubectl",
        &["logs", "-l", selector, "-c", "main"],
        None,
        kubeconfig,
    );
    let (deleted, _, stderr) = run(
        "kubectl",
        &[
            "delete",
            "pods,services,configmaps",
            "-l",
            selector,
            "--wait=false",
        ],
        None,
        kubeconfig,
    );
    assert_eq!(phase, "Succeeded", "logs: {logs}");
    assert_eq!(logs.trim(), "hello-from-podbridge");
    assert!(deleted, "{stderr}");
}
