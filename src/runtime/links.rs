//! Docker's legacy links, read from the watch store: which container a link names, what the
//! linking container learns about it at start ([`LinkedContainer`]), and the names Docker shows
//! for links (`/target:/self/alias` in `inspect`, `/self/alias` among the target's `Names`).
//!
//! A link follows its target's ID, recorded at create under [`LINK_TARGETS`] in the stored
//! request, as dockerd's link index does: renaming the target keeps the link, and a target
//! removed and created again under the same name is another container (the link's start fails).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{ContainerView, Result, Runtime, RuntimeError};
use crate::model::{ImageConfig, Link, LinkedContainer, Protocol};

/// Key podbridge writes into a stored create request (not Docker's): each link alias → the full
/// ID of the container it named at create.
pub const LINK_TARGETS: &str = "PodbridgeLinkTargets";

/// The links of a stored create request, as dockerd registers them: `HostConfig.Links` unless
/// the container is on a user-defined network or shares another's (dockerd ignores them there).
/// Entries that do not parse are skipped (create refused them).
pub fn request_links(request: &Value) -> Vec<Link> {
    if !registers_links(request) {
        return Vec::new();
    }
    request["HostConfig"]["Links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|entry| Link::parse(entry).ok())
        .collect()
}

/// Whether dockerd registers `HostConfig.Links` for this network mode: the default bridge,
/// `host` and `none` (user-defined networks take links in `EndpointsConfig` instead).
pub fn registers_links(request: &Value) -> bool {
    matches!(
        request["HostConfig"]["NetworkMode"].as_str().unwrap_or(""),
        "" | "default" | "bridge" | "host" | "none"
    )
}

/// Whether links give the container anything at start: on the default bridge network only.
fn on_default_bridge(request: &Value) -> bool {
    matches!(
        request["HostConfig"]["NetworkMode"].as_str().unwrap_or(""),
        "" | "default" | "bridge"
    )
}

/// The target's `Config.Env`: the image's variables, replaced or extended by the request's (an
/// entry without `=` removes the image's variable), `NAME=value` entries only.
fn configured_env(image: Option<&ImageConfig>, request: &Value) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let image_env = image
        .and_then(|config| config.env.as_deref())
        .unwrap_or_default();
    let request_env = request["Env"].as_array().into_iter().flatten();
    let entries = image_env
        .iter()
        .map(String::as_str)
        .chain(request_env.filter_map(Value::as_str));
    for entry in entries {
        match entry.split_once('=') {
            Some((name, value)) => match env.iter_mut().find(|(known, _)| known == name) {
                Some(existing) => existing.1 = value.to_owned(),
                None => env.push((name.to_owned(), value.to_owned())),
            },
            None => env.retain(|(known, _)| known != entry),
        }
    }
    env
}

/// The target's `Config.ExposedPorts` (the image's are merged into the stored request).
fn exposed_ports(request: &Value) -> Vec<(u16, Protocol)> {
    let mut ports = Vec::new();
    for key in request["ExposedPorts"]
        .as_object()
        .into_iter()
        .flat_map(|map| map.keys())
    {
        let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
        let protocol = match protocol {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            _ => continue,
        };
        if let Ok(port) = port.parse::<u16>() {
            ports.push((port, protocol));
        }
    }
    ports
}

impl Runtime {
    /// The container a link of `linking` names: the one recorded at create, or (for a request
    /// stored without the record) the one with that name or ID now.
    pub fn link_target(&self, linking: &Value, link: &Link) -> Option<ContainerView> {
        match linking[LINK_TARGETS][&link.alias].as_str() {
            Some(id) => self.containers().into_iter().find(|c| c.id == id),
            None => self.find(&link.target).ok(),
        }
    }

    /// What each link of `view` gives it at this start, by alias. Every target must be running,
    /// as dockerd requires (and answers with its message otherwise); a target that no longer
    /// exists is reported the same way, as dockerd does for a link to a removed container.
    pub fn resolve_links(&self, view: &ContainerView) -> Result<BTreeMap<String, LinkedContainer>> {
        let mut resolved = BTreeMap::new();
        if !on_default_bridge(&view.record.request) {
            return Ok(resolved);
        }
        for link in request_links(&view.record.request) {
            let link_name = link.name(&view.name);
            let target = self.link_target(&view.record.request, &link);
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
            let hostname = target.record.request["Hostname"]
                .as_str()
                .filter(|hostname| !hostname.is_empty())
                .unwrap_or(target.short_id());
            resolved.insert(
                link.alias.clone(),
                LinkedContainer {
                    link_name,
                    target_name: target.name.clone(),
                    target_hostname: hostname.to_owned(),
                    ip,
                    ports: exposed_ports(&target.record.request),
                    env: configured_env(image.as_ref(), &target.record.request),
                },
            );
        }
        Ok(resolved)
    }

    /// `HostConfig.Links` as dockerd's `inspect` shows them: `/target:/self/alias`, sorted;
    /// `None` (JSON `null`) when the container has none.
    pub fn docker_links(&self, view: &ContainerView) -> Option<Vec<String>> {
        let mut links: Vec<String> = request_links(&view.record.request)
            .iter()
            .map(|link| {
                let target = self
                    .link_target(&view.record.request, link)
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
            for link in request_links(&linking.record.request) {
                if let Some(target) = self.link_target(&linking.record.request, &link) {
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
        let link = request_links(&linking.record.request)
            .into_iter()
            .find(|link| link.alias == alias)?;
        Some((linking, link))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn links_count_on_the_default_bridge_host_and_none_only() {
        let links = |mode: &str| {
            request_links(
                &json!({"HostConfig": {"NetworkMode": mode, "Links": ["srv:db", "a:b:c"]}}),
            )
            .len()
        };
        assert_eq!(links(""), 1);
        assert_eq!(links("bridge"), 1);
        assert_eq!(links("host"), 1);
        assert_eq!(links("front"), 0);
        assert_eq!(links("container:x"), 0);
        assert!(on_default_bridge(&json!({})));
        assert!(!on_default_bridge(
            &json!({"HostConfig": {"NetworkMode": "host"}})
        ));
    }

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
        let request = json!({"Env": ["REDIS_VERSION=8", "GONE", "MODE=a=b"]});
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
        let spec = |id: &str, name: &str, request: Value| -> ConfigMap {
            serde_json::from_value(json!({"metadata": {
                "name": format!("pb-{name}"), "namespace": "test",
                "labels": {"podbridge.io/role": "container-spec", "podbridge.io/container-id": &id[..12]},
                "annotations": {"podbridge.io/container-id": id, "podbridge.io/name": name}},
                "data": {crate::runtime::record::RECORD_DATA_KEY: json!({"request": request}).to_string()}}))
            .unwrap()
        };
        config_maps.apply_watcher_event(&Event::Apply(spec(
            SRV,
            "cache",
            json!({"Image": "redis", "Env": ["MODE=x"], "ExposedPorts": {"6379/tcp": {}}}),
        )));
        config_maps.apply_watcher_event(&Event::Apply(spec(
            WEB,
            "web",
            json!({"Image": "busybox", "HostConfig": {"Links": ["srv:db"]}, LINK_TARGETS: {"db": SRV}}),
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

    #[test]
    fn exposed_ports_are_read_from_the_request() {
        let request =
            json!({"ExposedPorts": {"6379/tcp": {}, "53/udp": {}, "80": {}, "x/tcp": {}}});
        let mut ports = exposed_ports(&request);
        ports.sort();
        assert_eq!(
            ports,
            [
                (53, Protocol::Udp),
                (80, Protocol::Tcp),
                (6379, Protocol::Tcp)
            ]
        );
    }
}
