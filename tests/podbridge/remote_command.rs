//! SPDY remotecommand against the real test cluster (namespace-scoped ServiceAccount): stdin EOF
//! reaches the process, a megabyte survives the round trip, exit codes come from the error
//! stream, and a resize reaches the terminal. Needs `tests/cluster/up.sh`; `tests/run.sh`
//! provides the namespace.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use podbridge::runtime::exec::exit_code_of;
use podbridge::runtime::remote_command::{self, Session, Streams, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support;

const POD: &str = "spdy-remote-command";

struct Cluster {
    kubeconfig: String,
    namespace: String,
    client: kube::Client,
}

async fn cluster() -> Cluster {
    let kubeconfig = std::env::var("PODBRIDGE_TEST_KUBECONFIG").expect(
        "PODBRIDGE_TEST_KUBECONFIG must name a namespaced kubeconfig (tests/run.sh sets it)",
    );
    let namespace =
        std::env::var("PODBRIDGE_TEST_NAMESPACE").expect("PODBRIDGE_TEST_NAMESPACE must be set");
    let file = Kubeconfig::read_from(&kubeconfig).expect("kubeconfig readable");
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig usable");
    let client = kube::Client::try_from(config).expect("client");
    Cluster {
        kubeconfig,
        namespace,
        client,
    }
}

fn kubectl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> support::Ran {
    support::run(
        "kubectl",
        args,
        stdin,
        &[("KUBECONFIG", cluster.kubeconfig.as_str())],
    )
}

async fn open(cluster: &Cluster, command: &[&str], streams: Streams) -> Session {
    let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
    let open = remote_command::open(
        &cluster.client,
        &cluster.namespace,
        POD,
        "main",
        Target::Exec(&command),
        streams,
    );
    tokio::time::timeout(Duration::from_secs(30), open)
        .await
        .expect("exec opens in time")
        .expect("exec opens")
}

/// Writes `input` (then EOF) and reads stdout and stderr to their end; returns them with the
/// Docker exit code.
async fn run(mut session: Session, input: &[u8]) -> (Vec<u8>, Vec<u8>, i64) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut out_pipe = session.stdout.take().unwrap();
    let mut err_pipe = session.stderr.take();
    let mut stdin = session.stdin.take().unwrap();
    let write = async {
        stdin.write_all(input).await.unwrap();
        stdin.shutdown().await.unwrap();
    };
    let read_out = out_pipe.read_to_end(&mut stdout);
    let read_err = async {
        if let Some(pipe) = err_pipe.as_mut() {
            pipe.read_to_end(&mut stderr).await.unwrap();
        }
    };
    let (_, out, _) = tokio::join!(write, read_out, read_err);
    out.unwrap();
    let status = session.status().await.expect("a status");
    (stdout, stderr, exit_code_of(status.as_ref()))
}

#[tokio::test]
#[ignore = "needs the test cluster"]
async fn exec_over_spdy_closes_stdin_resizes_and_reports_exit_codes() {
    let cluster = cluster().await;
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{POD}"}},
            "spec":{{"terminationGracePeriodSeconds":0,
            "containers":[{{"name":"main","image":"busybox","imagePullPolicy":"IfNotPresent",
            "command":["sleep","3600"]}}]}}}}"#
    );
    let applied = kubectl(&cluster, &["apply", "-f", "-"], Some(&pod));
    assert!(applied.ok(), "{}", applied.stderr);
    let ready = kubectl(
        &cluster,
        &[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{POD}"),
            "--timeout=90s",
        ],
        None,
    );
    assert!(ready.ok(), "{}", ready.stderr);

    let all = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let (out, _, code) = run(open(&cluster, &["cat"], all).await, b"hello\n").await;
    assert_eq!((out.as_slice(), code), (&b"hello\n"[..], 0));

    let big: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let (out, _, code) = run(open(&cluster, &["cat"], all).await, &big).await;
    assert_eq!(code, 0);
    assert!(out == big, "{} bytes came back of {}", out.len(), big.len());

    let script = ["sh", "-c", "wc -l; echo err >&2; exit 3"];
    let (out, err, code) = run(open(&cluster, &script, all).await, b"a\nb\n").await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), "2");
    assert_eq!((err.as_slice(), code), (&b"err\n"[..], 3));

    let tty = Streams {
        stdin: true,
        stdout: true,
        tty: true,
        initial_size: Some((80, 24)),
        ..Default::default()
    };
    let mut session = open(&cluster, &["sh", "-c", "sleep 1; stty size"], tty).await;
    let resize = session.resize.take().expect("a resize stream with a TTY");
    assert!(resize.resize(111, 33).await);
    let idle_stdin = session.stdin.take();
    let mut out = Vec::new();
    session
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    let status = session.status().await.expect("a status");
    drop(idle_stdin);
    assert_eq!(String::from_utf8_lossy(&out).trim(), "33 111");
    assert_eq!(exit_code_of(status.as_ref()), 0);

    let deleted = kubectl(&cluster, &["delete", "pod", POD, "--wait=false"], None);
    assert!(deleted.ok(), "{}", deleted.stderr);
}
