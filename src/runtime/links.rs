//! Docker's legacy links, read from the watch store: which container a link names, what the
//! linking container learns about it at start ([`LinkedContainer`]), and the names Docker shows
//! for links (`/target:/self/alias` in `inspect`, `/self/alias` among the target's `Names`).
//!
//! A link follows its target's ID, recorded at create ([`Link::target_id`]), as dockerd's link
//! index does: renaming the target keeps the link, and a target removed and created again under
//! the same name is another container (the link's start fails).

use std::collections::{BTreeMap, HashMap};

use super::{ContainerView, Result, Runtime, RuntimeError};
use crate::model::{EnvVar, ImageConfig, Link, LinkedContainer};

/// The target's `Config.Env`: the image's variables, replaced or extended by the request's (an
/// entry without `=` removes the image's variable), `NAME=value` entries only.
fn configured_env(image: Option<&ImageConfig>, request_env: &[EnvVar]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let image_env = image
        .and_then(|config| config.env.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (entry.as_str(), None),
        });
    let request_env = request_env
        .iter()
        .map(|var| (var.name.as_str(), var.value.as_deref()));
    for (name, value) in image_env.chain(request_env) {
        match value {
            Some(value) => match env.iter_mut().find(|(known, _)| known == name) {
                Some(existing) => existing.1 = value.to_owned(),
                None => env.push((name.to_owned(), value.to_owned())),
            },
            None => env.retain(|(known, _)| known != name),
        }
    }
    env
}

impl Runtime {
    /// The container a link of `linking` names: the one recorded at create, or (for a request
    /// stored without the record) the one with that name or ID now.
    pub fn link_target(&self, link: &Link) -> Option<ContainerView> {
        match &link.target_id {
            Some(id) => self.containers().into_iter().find(|c| &c.id == id),
            None => self.find(&link.target).ok(),
        }
    }

    /// What each link of `view` gives it at this start, by alias. Every target must be running,
    /// as dockerd requires (and answers with its message otherwise); a target that no longer
    /// exists is reported the same way, as dockerd does for a link to a removed container.
    pub fn resolve_links(&self, view: &ContainerView) -> Result<BTreeMap<String, LinkedContainer>> {
        let mut resolved = BTreeMap::new();
        if !view.record.settings.default_bridge {
            return Ok(resolved);
        }
        for link in &view.record.settings.links {
            let link_name = link.name(&view.name);
            let target = self.link_target(link);
            let running = target
                .as_ref()
                .filter(|target| target.state.running)
                .and_then(|target| Some((target, target.pod_ip()?)));
            let Some((target, ip)) = running else {
                let target_name = target.map_or(link.target.clone(), |target| target.name);
                return Err(RuntimeError::LinkTargetNotRunning {
                    target: format!("/{target_name}"),
                    link: link_name,
                });
            };
            let image = self.stored_image_config(target);
            let settings = &target.record.settings;
            let hostname = settings.hostname.as_deref().unwrap_or(target.short_id());
            resolved.insert(
                link.alias.clone(),
                LinkedContainer {
                    link_name,
                    target_name: target.name.clone(),
                    target_hostname: hostname.to_owned(),
                    ip,
                    ports: settings
                        .ports
                        .iter()
                        .map(|port| (port.port, port.protocol))
                        .collect(),
                    env: configured_env(image.as_ref(), &settings.env),
                },
            );
        }
        Ok(resolved)
    }

    /// `HostConfig.Links` as dockerd's `inspect` shows them: `/target:/self/alias`, sorted;
    /// `None` (JSON `null`) when the container has none.
    pub fn docker_links(&self, view: &ContainerView) -> Option<Vec<String>> {
        let mut links: Vec<String> = view
            .record
            .settings
            .links
            .iter()
            .map(|link| {
                let target = self
                    .link_target(link)
                    .map_or(link.target.clone(), |target| target.name);
                format!("/{target}:{}", link.name(&view.name))
            })
            .collect();
        links.sort();
        links.dedup();
        (!links.is_empty()).then_some(links)
    }

    /// Every link name (`/self/alias`) by the ID of the container it names: dockerd lists them
    /// among the target's `Names`.
    pub fn link_names(&self) -> HashMap<String, Vec<String>> {
        let containers = self.containers();
        let mut names: HashMap<String, Vec<String>> = HashMap::new();
        for linking in &containers {
            for link in &linking.record.settings.links {
                if let Some(target) = self.link_target(link) {
                    let entry = names.entry(target.id).or_default();
                    let name = link.name(&linking.name);
                    if !entry.contains(&name) {
                        entry.push(name);
                    }
                }
            }
        }
        for list in names.values_mut() {
            list.sort();
        }
        names
    }

    /// The linking container and its link named by a link name (`/self/alias` or `self/alias`),
    /// if there is one.
    pub fn find_link(&self, reference: &str) -> Option<(ContainerView, Link)> {
        let (parent, alias) = reference.trim_start_matches('/').rsplit_once('/')?;
        let parent = parent.trim_start_matches('/');
        let linking = self.containers().into_iter().find(|c| c.name == parent)?;
        let link = linking
            .record
            .settings
            .links
            .iter()
            .find(|link| link.alias == alias)
            .cloned()?;
        Some((linking, link))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::model::Protocol;

    use super::*;

    #[test]
    fn the_targets_env_is_the_images_replaced_by_the_requests() {
        let image = ImageConfig {
            env: Some(vec![
                "PATH=/bin".into(),
                "REDIS_VERSION=7".into(),
                "GONE=x".into(),
            ]),
            ..ImageConfig::default()
        };
        let var = |name: &str, value: Option<&str>| EnvVar {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        };
        let request = [
            var("REDIS_VERSION", Some("8")),
            var("GONE", None),
            var("MODE", Some("a=b")),
        ];
        assert_eq!(
            configured_env(Some(&image), &request),
            [
                ("PATH".to_owned(), "/bin".to_owned()),
                ("REDIS_VERSION".to_owned(), "8".to_owned()),
                ("MODE".to_owned(), "a=b".to_owned()),
            ]
        );
    }

    const SRV: &str = "5555555555555555555555555555555555555555555555555555555555555555";
    const WEB: &str = "7777777777777777777777777777777777777777777777777777777777777777";

    /// A runtime whose watch stores hold a running `srv` (renamed since `web` linked to it) and a
    /// created `web` linking to it as `db`.
    fn linked_runtime(srv_running: bool) -> std::sync::Arc<Runtime> {
        use k8s_openapi::api::core::v1::{ConfigMap, Pod};
        use kube::runtime::watcher::Event;
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let runtime = Runtime::new(kube::Client::try_from(config).unwrap(), "test", "unit");
        let (mut pods, mut config_maps, _, _) = runtime.writers.lock().take().unwrap();
        let spec = |id: &str, name: &str, settings: Value| -> ConfigMap {
            serde_json::from_value(json!({"metadata": {
                "name": format!("pb-{name}"), "namespace": "test",
                "labels": {"podbridge.io/role": "container-spec", "podbridge.io/container-id": &id[..12]},
                "annotations": {"podbridge.io/container-id": id, "podbridge.io/name": name}},
                "data": {crate::runtime::record::RECORD_DATA_KEY: json!({"request": {}, "settings": settings}).to_string()}}))
            .unwrap()
        };
        config_maps.apply_watcher_event(&Event::Apply(spec(
            SRV,
            "cache",
            json!({"env": [{"name": "MODE", "value": "x"}], "ports": [{"port": 6379, "protocol": "tcp"}]}),
        )));
        config_maps.apply_watcher_event(&Event::Apply(spec(
            WEB,
            "web",
            json!({"defaultBridge": true, "links": [{"target": "srv", "alias": "db", "targetId": SRV}]}),
        )));
        if srv_running {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": "pb-cache", "namespace": "test", "uid": "u1",
                    "labels": {"podbridge.io/container-id": &SRV[..12]}},
                "status": {"phase": "Running", "podIP": "10.244.0.9", "containerStatuses": [{
                    "name": "main", "image": "redis", "imageID": "", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]}
            }))
            .unwrap();
            pods.apply_watcher_event(&Event::Apply(pod));
        }
        runtime
    }

    #[tokio::test]
    async fn links_follow_the_recorded_target_through_a_rename() {
        let runtime = linked_runtime(true);
        let web = runtime.find("web").unwrap();
        assert_eq!(
            runtime.docker_links(&web),
            Some(vec!["/cache:/web/db".to_owned()])
        );
        assert_eq!(runtime.link_names()[SRV], ["/web/db"]);
        assert_eq!(runtime.find("/web/db").unwrap().id, SRV);
        assert_eq!(runtime.find("web/db").unwrap().id, SRV);
        assert!(runtime.find("web/nope").is_err());
        let resolved = runtime.resolve_links(&web).unwrap();
        let db = &resolved["db"];
        assert_eq!(
            (
                db.link_name.as_str(),
                db.target_name.as_str(),
                db.ip.as_str()
            ),
            ("/web/db", "cache", "10.244.0.9")
        );
        assert_eq!(db.target_hostname, &SRV[..12]);
        assert_eq!(db.ports, [(6379, Protocol::Tcp)]);
        assert_eq!(db.env, [("MODE".to_owned(), "x".to_owned())]);
        let srv = runtime.find("cache").unwrap();
        assert_eq!(runtime.docker_links(&srv), None);
    }

    #[tokio::test]
    async fn a_target_that_is_not_running_refuses_the_start_with_dockerds_message() {
        let runtime = linked_runtime(false);
        let web = runtime.find("web").unwrap();
        let error = runtime.resolve_links(&web).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Cannot link to a non running container: /cache AS /web/db"
        );
        assert_eq!(
            crate::api::error::ApiError::from(error).status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
