//! Pod Security Standards `baseline` and `restricted`, checked on the final pod document the way
//! the upstream pod-security-admission library checks them, so a pod podbridge lets through is
//! one a namespace with the same PSA level would admit too.

use serde_json::Value;

use super::file::PodSecurityLevel;
use super::pointer;

/// One violated control, naming the field so the Docker error can say what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The control name as the Pod Security Standards page writes it.
    pub control: &'static str,
    pub pointer: String,
    pub message: String,
}

const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

const SAFE_SYSCTLS: [&str; 13] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_notsent_lowat",
];

const RESTRICTED_VOLUME_TYPES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

struct Container<'a> {
    pointer: String,
    name: &'a str,
    value: &'a Value,
}

fn containers(pod: &Value) -> Vec<Container<'_>> {
    let mut all = Vec::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(items) = pointer::get(pod, &format!("/spec/{list}")).and_then(Value::as_array) {
            for (index, value) in items.iter().enumerate() {
                all.push(Container {
                    pointer: format!("/spec/{list}/{index}"),
                    name: value.get("name").and_then(Value::as_str).unwrap_or("?"),
                    value,
                });
            }
        }
    }
    all
}

fn is_true(value: Option<&Value>) -> bool {
    value.and_then(Value::as_bool) == Some(true)
}

fn text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

/// Checks every control of `level`; an empty list means the pod is admitted.
pub fn check(pod: &Value, level: PodSecurityLevel) -> Vec<Violation> {
    let restricted = level == PodSecurityLevel::Restricted;
    let mut found = Vec::new();
    let mut violate = |control: &'static str, pointer: String, message: String| {
        found.push(Violation {
            control,
            pointer,
            message,
        })
    };
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let pod_security = spec.get("securityContext").unwrap_or(&Value::Null);
    let containers = containers(pod);

    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if is_true(spec.get(field)) {
            violate(
                "Host Namespaces",
                format!("/spec/{field}"),
                format!("{field}=true is not allowed"),
            );
        }
    }
    if is_true(pointer::get(pod_security, "/windowsOptions/hostProcess")) {
        violate(
            "HostProcess",
            "/spec/securityContext/windowsOptions/hostProcess".into(),
            "hostProcess pods are not allowed".into(),
        );
    }
    for (index, volume) in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = text(volume.get("name")).unwrap_or("?");
        if restricted {
            let allowed = volume.as_object().is_some_and(|map| {
                map.keys()
                    .all(|k| k == "name" || RESTRICTED_VOLUME_TYPES.contains(&k.as_str()))
            });
            if !allowed {
                violate(
                    "Volume Types",
                    format!("/spec/volumes/{index}"),
                    format!("volume {name:?} uses a type outside {RESTRICTED_VOLUME_TYPES:?}"),
                );
            }
        } else if volume.get("hostPath").is_some() {
            violate(
                "HostPath Volumes",
                format!("/spec/volumes/{index}/hostPath"),
                format!("volume {name:?} must not use hostPath"),
            );
        }
    }
    let pod_seccomp = text(pointer::get(pod_security, "/seccompProfile/type"));
    if pod_seccomp == Some("Unconfined") {
        violate(
            "Seccomp",
            "/spec/securityContext/seccompProfile/type".into(),
            "seccompProfile type Unconfined is not allowed".into(),
        );
    }
    if let Some(sysctls) = pod_security.get("sysctls").and_then(Value::as_array) {
        for (index, sysctl) in sysctls.iter().enumerate() {
            let name = text(sysctl.get("name")).unwrap_or("");
            if !SAFE_SYSCTLS.contains(&name) {
                violate(
                    "Sysctls",
                    format!("/spec/securityContext/sysctls/{index}/name"),
                    format!("sysctl {name:?} is not in the safe set"),
                );
            }
        }
    }
    check_selinux(pod_security, "/spec/securityContext", &mut violate);
    if let Some(annotations) = pointer::get(pod, "/metadata/annotations").and_then(Value::as_object)
    {
        for (key, value) in annotations {
            if key.starts_with("container.apparmor.security.beta.kubernetes.io/") {
                let value = value.as_str().unwrap_or("");
                if value != "runtime/default" && !value.starts_with("localhost/") {
                    violate(
                        "AppArmor",
                        format!("/metadata/annotations/{}", super::pointer::escape(key)),
                        format!("AppArmor profile {value:?} is not allowed"),
                    );
                }
            }
        }
    }
    if restricted {
        let pod_non_root = is_true(pod_security.get("runAsNonRoot"));
        if pod_security.get("runAsUser").and_then(Value::as_i64) == Some(0) {
            violate(
                "Running as Non-root user",
                "/spec/securityContext/runAsUser".into(),
                "runAsUser=0 is not allowed".into(),
            );
        }
        for container in &containers {
            let context = container
                .value
                .get("securityContext")
                .unwrap_or(&Value::Null);
            let at = |field: &str| format!("{}/securityContext/{field}", container.pointer);
            let name = container.name;
            match context.get("runAsNonRoot").and_then(Value::as_bool) {
                Some(false) => violate(
                    "Running as Non-root",
                    at("runAsNonRoot"),
                    format!("container {name:?} must not set runAsNonRoot=false"),
                ),
                None if !pod_non_root => violate(
                    "Running as Non-root",
                    at("runAsNonRoot"),
                    format!("container {name:?} must set runAsNonRoot=true (or the pod must)"),
                ),
                _ => {}
            }
            if context.get("runAsUser").and_then(Value::as_i64) == Some(0) {
                violate(
                    "Running as Non-root user",
                    at("runAsUser"),
                    format!("container {name:?} must not run as user 0"),
                );
            }
            if context
                .get("allowPrivilegeEscalation")
                .and_then(Value::as_bool)
                != Some(false)
            {
                violate(
                    "Privilege Escalation",
                    at("allowPrivilegeEscalation"),
                    format!("container {name:?} must set allowPrivilegeEscalation=false"),
                );
            }
            let seccomp = text(pointer::get(context, "/seccompProfile/type")).or(pod_seccomp);
            if !matches!(seccomp, Some("RuntimeDefault") | Some("Localhost")) {
                violate(
                    "Seccomp",
                    at("seccompProfile/type"),
                    format!("container {name:?} must set seccompProfile type RuntimeDefault or Localhost (or the pod must)"),
                );
            }
            let drops_all = pointer::get(context, "/capabilities/drop")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|c| c == "ALL"));
            if !drops_all {
                violate(
                    "Capabilities",
                    at("capabilities/drop"),
                    format!("container {name:?} must drop ALL capabilities"),
                );
            }
        }
    }
    for container in &containers {
        let context = container
            .value
            .get("securityContext")
            .unwrap_or(&Value::Null);
        let at = |field: &str| format!("{}/securityContext/{field}", container.pointer);
        let name = container.name;
        if is_true(context.get("privileged")) {
            violate(
                "Privileged Containers",
                at("privileged"),
                format!("container {name:?} must not be privileged"),
            );
        }
        if is_true(pointer::get(context, "/windowsOptions/hostProcess")) {
            violate(
                "HostProcess",
                at("windowsOptions/hostProcess"),
                format!("container {name:?} must not be hostProcess"),
            );
        }
        if let Some(added) = pointer::get(context, "/capabilities/add").and_then(Value::as_array) {
            for capability in added.iter().filter_map(Value::as_str) {
                let allowed = if restricted {
                    capability == "NET_BIND_SERVICE"
                } else {
                    BASELINE_CAPABILITIES.contains(&capability)
                };
                if !allowed {
                    violate(
                        "Capabilities",
                        at("capabilities/add"),
                        format!("container {name:?} must not add capability {capability}"),
                    );
                }
            }
        }
        if !restricted && text(pointer::get(context, "/seccompProfile/type")) == Some("Unconfined")
        {
            violate(
                "Seccomp",
                at("seccompProfile/type"),
                format!("container {name:?} must not be seccomp Unconfined"),
            );
        }
        if let Some(mount) = text(context.get("procMount")) {
            if mount != "Default" {
                violate(
                    "/proc Mount Type",
                    at("procMount"),
                    format!("container {name:?} must use the Default procMount"),
                );
            }
        }
        if let Some(profile) = text(pointer::get(context, "/appArmorProfile/type")) {
            if profile != "RuntimeDefault" && profile != "Localhost" {
                violate(
                    "AppArmor",
                    at("appArmorProfile/type"),
                    format!("container {name:?} must not be AppArmor {profile}"),
                );
            }
        }
        check_selinux(
            context,
            &format!("{}/securityContext", container.pointer),
            &mut violate,
        );
        for (index, port) in container
            .value
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if port.get("hostPort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                violate(
                    "Host Ports",
                    format!("{}/ports/{index}/hostPort", container.pointer),
                    format!("container {name:?} must not use hostPort"),
                );
            }
        }
    }
    found
}

fn check_selinux(
    context: &Value,
    at: &str,
    violate: &mut impl FnMut(&'static str, String, String),
) {
    let Some(options) = context.get("seLinuxOptions") else {
        return;
    };
    if let Some(kind) = text(options.get("type")) {
        if !SELINUX_TYPES.contains(&kind) {
            violate(
                "SELinux",
                format!("{at}/seLinuxOptions/type"),
                format!("SELinux type {kind:?} is not allowed"),
            );
        }
    }
    for field in ["user", "role"] {
        if text(options.get(field)).is_some_and(|v| !v.is_empty()) {
            violate(
                "SELinux",
                format!("{at}/seLinuxOptions/{field}"),
                format!("SELinux {field} must not be set"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn controls(pod: &Value, level: PodSecurityLevel) -> Vec<&'static str> {
        check(pod, level).into_iter().map(|v| v.control).collect()
    }

    #[test]
    fn a_plain_pod_passes_baseline_but_not_restricted() {
        let pod = json!({"spec": {"containers": [{"name": "main", "image": "busybox"}]}});
        assert!(check(&pod, PodSecurityLevel::Baseline).is_empty());
        let restricted = controls(&pod, PodSecurityLevel::Restricted);
        for control in [
            "Running as Non-root",
            "Privilege Escalation",
            "Seccomp",
            "Capabilities",
        ] {
            assert!(
                restricted.contains(&control),
                "{control} missing from {restricted:?}"
            );
        }
    }

    #[test]
    fn a_hardened_pod_passes_restricted() {
        let pod = json!({"spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "main", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "data", "emptyDir": {}}]}});
        assert_eq!(check(&pod, PodSecurityLevel::Restricted), Vec::new());
    }

    #[test]
    fn baseline_catches_each_docker_escape_hatch() {
        let pod = json!({
            "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/main": "unconfined"}},
            "spec": {
            "hostNetwork": true, "hostPID": true,
            "volumes": [{"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}],
            "containers": [{"name": "main", "securityContext": {
                "privileged": true, "capabilities": {"add": ["SYS_ADMIN"]},
                "seccompProfile": {"type": "Unconfined"}, "procMount": "Unmasked"},
                "ports": [{"containerPort": 80, "hostPort": 8080}]}]}});
        let found = controls(&pod, PodSecurityLevel::Baseline);
        for control in [
            "Host Namespaces",
            "HostPath Volumes",
            "Privileged Containers",
            "Capabilities",
            "Seccomp",
            "/proc Mount Type",
            "Host Ports",
            "AppArmor",
        ] {
            assert!(found.contains(&control), "{control} missing from {found:?}");
        }
    }
}
