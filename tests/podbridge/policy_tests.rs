//! Every PolicyTest file under `tests/rules` passes, and a golden file that differs is caught.

use std::path::Path;

#[test]
fn all_policy_test_files_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules");
    let (report, failed) = podbridge::policy_test::run(&root, false).expect("policy tests load");
    assert_eq!(failed, 0, "{report}");
    let passed: usize = report.lines().filter(|l| l.starts_with("PASS")).count();
    assert!(passed >= 50, "expected the whole suite to run:\n{report}");
}

/// A test that expects a patched object and gets another must fail (Kyverno's silent-pass bug).
#[test]
fn a_changed_golden_object_is_reported_with_a_diff() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules");
    let copy = tempfile::tempdir().unwrap();
    copy_tree(&source, copy.path());
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    copy_tree(&policies, &copy.path().join("../policies-for-copy"));
    let test_file = copy.path().join("baseline/policy-test.yaml");
    let text = std::fs::read_to_string(&test_file).unwrap();
    let absolute = policies.join("baseline").display().to_string();
    std::fs::write(
        &test_file,
        text.replace("../../../policies/baseline", &absolute),
    )
    .unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let text = std::fs::read_to_string(&test_file).unwrap();
    std::fs::write(
        &test_file,
        text.replace("../../fixtures", &fixtures.display().to_string()),
    )
    .unwrap();
    let golden = copy
        .path()
        .join("baseline/expected/docker-run-busybox.yaml");
    let text = std::fs::read_to_string(&golden).unwrap();
    std::fs::write(&golden, text.replace("memory: 2Gi", "memory: 3Gi")).unwrap();

    let outcomes = podbridge::policy_test::run_file(&test_file, false).unwrap();
    let busybox = outcomes
        .iter()
        .find(|o| o.case == "docker-run-busybox")
        .unwrap();
    assert_eq!(busybox.failures.len(), 1, "{:?}", busybox.failures);
    assert!(
        busybox.failures[0].contains("-        memory: 3Gi"),
        "{}",
        busybox.failures[0]
    );
    assert!(
        busybox.failures[0].contains("+        memory: 2Gi"),
        "{}",
        busybox.failures[0]
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
