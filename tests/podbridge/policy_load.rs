//! Broken policy files are refused at load with a message naming the file, the rule and the
//! field, never a panic and never a half-loaded set.

use std::collections::BTreeMap;

use podbridge::rules::{self, Limits, Source};

fn load(yaml: &str) -> Result<rules::PolicySet, rules::Error> {
    let mut scripts = BTreeMap::new();
    scripts.insert("ok.rhai".to_string(), "pod".to_string());
    rules::compile(
        &[Source {
            path: "team.yaml".into(),
            text: yaml.into(),
        }],
        &scripts,
        Limits::default(),
    )
}

fn error(yaml: &str) -> String {
    load(yaml).expect_err("must be refused").to_string()
}

const HEADER: &str =
    "apiVersion: podbridge.io/v1alpha1\nkind: Policy\nmetadata: {name: team}\nspec:\n  rules:\n";

#[test]
fn unknown_fields_name_the_rule_and_pointer() {
    let message = error(&format!("{HEADER}  - name: defaults\n    mutate: {{setDefaults: {{/spec/x: 1}}}}\n    priority: 3\n"));
    assert_eq!(
        message,
        "team.yaml, rule defaults: Additional properties are not allowed ('priority' was unexpected) (at /spec/rules/0)"
    );
}

#[test]
fn a_wrong_enum_value_is_named() {
    let message = error(&format!(
        "{HEADER}  - name: strict\n    validate: {{action: Deny, message: m, deny: 'true'}}\n"
    ));
    assert!(message.starts_with("team.yaml, rule strict: "), "{message}");
    assert!(message.contains("/spec/rules/0"), "{message}");
}

#[test]
fn a_script_that_does_not_compile_is_refused_with_its_position() {
    let message = error(&format!(
        "{HEADER}  - name: broken\n    mutate:\n      script: 'pod.spec.x = ;'\n"
    ));
    assert!(
        message.starts_with("team.yaml, policy team, rule broken: script does not compile: "),
        "{message}"
    );
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn a_missing_script_file_is_named() {
    let message = error(&format!(
        "{HEADER}  - name: external\n    mutate: {{scriptFile: nowhere.rhai}}\n"
    ));
    assert_eq!(
        message,
        "team.yaml, policy team, rule external: script file \"nowhere.rhai\" not found among the rule scripts ([\"ok.rhai\"]) (at /mutate/scriptFile)"
    );
}

#[test]
fn an_unknown_variable_in_a_deny_expression_is_refused() {
    let message = error(&format!(
        "{HEADER}  - name: check\n    validate: {{action: Enforce, message: m, deny: 'reqest.Image == \"x\"'}}\n"
    ));
    assert!(
        message.contains("rule check: expression does not compile") && message.contains("reqest"),
        "{message}"
    );
}

#[test]
fn invalid_yaml_names_the_file_and_line() {
    let message = error("apiVersion: podbridge.io/v1alpha1\nkind: Policy\nmetadata: {name: [\n");
    assert!(
        message.starts_with("team.yaml: not valid YAML: "),
        "{message}"
    );
    assert!(message.contains("line"), "{message}");
}

#[test]
fn an_unknown_kind_is_refused() {
    let message = error("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    assert_eq!(
        message,
        "team.yaml: kind \"ConfigMap\" is not a podbridge policy document (expected Policy or PolicyException)"
    );
}

#[test]
fn an_override_outside_the_podbridge_prefix_is_refused() {
    let message = error(&format!(
        "{HEADER}  - name: knobs\n    overrides: [{{label: com.joyrex2001.kubedock.request-cpu, path: /x, type: quantity}}]\n"
    ));
    assert!(
        message.contains("rule knobs") && message.contains("/spec/rules/0/overrides/0/label"),
        "{message}"
    );
}

#[test]
fn an_exception_for_an_unknown_rule_is_refused() {
    let policy = format!(
        "{HEADER}  - name: check\n    validate: {{action: Enforce, message: m, deny: 'false'}}\n"
    );
    let exception = "apiVersion: podbridge.io/v1alpha1\nkind: PolicyException\nmetadata: {name: broad}\nspec:\n  exceptions: [{policy: team, rules: [chek]}]\n  match: {any: [{projects: [a], images: [x]}]}\n  reason: typo\n  expires: '2030-01-01'\n";
    let message = error(&format!("{policy}---\n{exception}"));
    assert_eq!(
        message,
        "team.yaml: exception broad names team/chek, which is not a validation rule of any loaded policy"
    );
}

#[test]
fn a_broad_exception_is_refused_by_the_schema() {
    let policy = format!(
        "{HEADER}  - name: check\n    validate: {{action: Enforce, message: m, deny: 'false'}}\n"
    );
    let exception = "apiVersion: podbridge.io/v1alpha1\nkind: PolicyException\nmetadata: {name: everything}\nspec:\n  exceptions: [{policy: team, rules: [check]}]\n  match: {any: [{projects: ['*'], images: ['*']}]}\n  reason: lazy\n  expires: '2030-01-01'\n";
    let message = error(&format!("{policy}---\n{exception}"));
    assert!(message.starts_with("team.yaml: "), "{message}");
    assert!(message.contains("/spec/match/any/0/"), "{message}");
}
