//! Kubeconfig documents: a ServiceAccount token kubeconfig for a session namespace, and the
//! minified form of whatever kubeconfig podbridge itself runs with (for `/kubeconfig`).

use kube::config::Kubeconfig;

/// A kubeconfig with one cluster, one token user and one context whose default namespace is
/// `namespace`. `ca_pem` is the cluster CA as PEM (the token Secret's `ca.crt`).
pub fn token_kubeconfig(
    server: &str,
    ca_pem: &[u8],
    user: &str,
    token: &str,
    namespace: &str,
) -> String {
    // ByteString serializes as base64, the encoding `certificate-authority-data` wants.
    let ca = serde_json::to_value(k8s_openapi::ByteString(ca_pem.to_vec())).unwrap_or_default();
    let document = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "podbridge", "cluster": {
            "server": server,
            "certificate-authority-data": ca,
        }}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "podbridge", "context": {
            "cluster": "podbridge",
            "user": user,
            "namespace": namespace,
        }}],
        "current-context": "podbridge",
    });
    serde_yaml::to_string(&document).unwrap_or_default()
}

/// Keeps only the current context, its cluster and its user, with `namespace` as the context's
/// namespace; `None` when the current context is missing or dangling.
pub fn minify(mut config: Kubeconfig, namespace: Option<&str>) -> Option<Kubeconfig> {
    let current = config.current_context.clone()?;
    let mut context = config.contexts.into_iter().find(|c| c.name == current)?;
    let inner = context.context.as_mut()?;
    if let Some(namespace) = namespace {
        inner.namespace = Some(namespace.to_string());
    }
    let cluster_name = inner.cluster.clone();
    let user_name = inner.user.clone();
    config.clusters.retain(|c| c.name == cluster_name);
    config
        .auth_infos
        .retain(|a| Some(&a.name) == user_name.as_ref());
    config.contexts = vec![context];
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_kubeconfig_parses_back() {
        let yaml = token_kubeconfig(
            "https://127.0.0.1:6443",
            b"PEM",
            "podbridge@pb-x",
            "abc",
            "pb-x",
        );
        let config = Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(config.current_context.as_deref(), Some("podbridge"));
        let context = config.contexts[0].context.as_ref().unwrap();
        assert_eq!(context.namespace.as_deref(), Some("pb-x"));
        assert!(yaml.contains("token: abc"), "{yaml}");
    }

    #[test]
    fn minify_keeps_the_current_context_only() {
        let yaml = r#"
apiVersion: v1
kind: Config
current-context: b
clusters:
- {name: ca, cluster: {server: "https://a"}}
- {name: cb, cluster: {server: "https://b"}}
users:
- {name: ua, user: {token: x}}
- {name: ub, user: {token: y}}
contexts:
- {name: a, context: {cluster: ca, user: ua}}
- {name: b, context: {cluster: cb, user: ub}}
"#;
        let config = minify(Kubeconfig::from_yaml(yaml).unwrap(), Some("pb-1")).unwrap();
        assert_eq!(config.clusters.len(), 1);
        assert_eq!(config.clusters[0].name, "cb");
        assert_eq!(config.auth_infos[0].name, "ub");
        let context = config.contexts[0].context.as_ref().unwrap();
        assert_eq!(context.namespace.as_deref(), Some("pb-1"));
    }
}
