//! Docker's legacy container links (`docker run --link target:alias`): the link as the client
//! wrote it, and what the linking container learns about its target when it starts (the target's
//! address, exposed ports and environment), turned into Docker's link variables.
//!
//! Pure: the runtime looks the target up, rendering puts the result in the pod document.

use super::{ModelError, Protocol};

/// Key podbridge writes into a stored create request (not Docker's): each link alias → the full
/// ID of the container it named at create. Create overwrites whatever a client sent under it.
pub const LINK_TARGETS: &str = "PodbridgeLinkTargets";

/// One `HostConfig.Links` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// The target container's name or ID, without a leading slash.
    pub target: String,
    /// The name the linking container knows the target by.
    pub alias: String,
    /// The full ID of the container `target` named at create ([`LINK_TARGETS`]): a link follows
    /// it, as dockerd's link index does, so a renamed target keeps the link and another
    /// container created under the old name does not take it. `None` for a request stored
    /// without it: the target is then looked up by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
}

impl Link {
    /// Reads `target`, `target:alias` or the inspect form `/target:/self/alias` (dockerd accepts
    /// it too, so `inspect` output can be fed back into `create`), with dockerd's wording for a
    /// malformed entry.
    pub fn parse(entry: &str) -> Result<Link, ModelError> {
        if entry.is_empty() {
            return Err(ModelError::ParseLinkFailed {
                entry: entry.to_owned(),
                reason: "empty string specified for links".to_owned(),
            });
        }
        let parts: Vec<&str> = entry.split(':').collect();
        let bad = || ModelError::ParseLinkFailed {
            entry: entry.to_owned(),
            reason: format!("bad format for links: {entry}"),
        };
        let (target, alias) = match parts.as_slice() {
            [target] => (target.trim_start_matches('/'), last_segment(target)),
            [target, alias] => (target.trim_start_matches('/'), last_segment(alias)),
            _ => return Err(bad()),
        };
        if target.is_empty() || alias.is_empty() {
            return Err(bad());
        }
        Ok(Link {
            target: target.to_owned(),
            alias: alias.to_owned(),
            target_id: None,
        })
    }

    /// Docker's name of the link: `/{linking container}/{alias}`.
    pub fn name(&self, linking_container: &str) -> String {
        format!(
            "/{}/{}",
            linking_container.trim_start_matches('/'),
            self.alias
        )
    }
}

/// The part after the last `/` (`/self/db` → `db`), as dockerd reads an alias.
fn last_segment(value: &str) -> &str {
    value.rsplit('/').next().unwrap_or(value)
}

/// A link's target as it is when the linking container starts: Docker resolves links at start,
/// from the running target, and so does podbridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkedContainer {
    /// Docker's link name, `/self/alias`.
    pub link_name: String,
    /// The target's Docker name, without the leading slash.
    pub target_name: String,
    /// The target's hostname (Docker: its `Config.Hostname`, the short ID unless set).
    pub target_hostname: String,
    /// The target's address (its pod IP).
    pub ip: String,
    /// The target's exposed ports (`Config.ExposedPorts`).
    pub ports: Vec<(u16, Protocol)>,
    /// The target's configured environment (`Config.Env`: the image's, then the request's), in
    /// order, `NAME=value` entries only.
    pub env: Vec<(String, String)>,
}

impl LinkedContainer {
    /// The alias as it appears in variable names: the link name's last part, uppercased, `-` as
    /// `_` (`/web/my-db` → `MY_DB`).
    pub fn variable_prefix(&self) -> String {
        last_segment(&self.link_name)
            .to_uppercase()
            .replace('-', "_")
    }

    /// The names `/etc/hosts` maps to the target, as in Docker: the alias, the target's
    /// hostname, and its name when that differs from the alias.
    pub fn hostnames(&self) -> Vec<String> {
        let alias = last_segment(&self.link_name);
        let mut names: Vec<String> = Vec::new();
        for name in [alias, &self.target_hostname, &self.target_name] {
            if !name.is_empty() && !names.iter().any(|known| known == name) {
                names.push(name.to_owned());
            }
        }
        names
    }

    /// Docker's link variables, in dockerd's order: `<ALIAS>_PORT` (the lowest port, TCP first),
    /// the `_START`/`_END` variables of each run of three or more consecutive ports, the four
    /// variables of every port, `<ALIAS>_NAME`, then `<ALIAS>_ENV_<NAME>` for the target's
    /// environment except `HOME` and `PATH`.
    pub fn environment(&self) -> Vec<(String, String)> {
        let alias = self.variable_prefix();
        let ip = &self.ip;
        let mut ports = self.ports.clone();
        // By number, TCP before another protocol of the same number (dockerd's order).
        ports.sort_by_key(|(port, protocol)| (*port, *protocol != Protocol::Tcp, *protocol));
        ports.dedup();
        let url =
            |port: u16, protocol: Protocol| format!("{}://{ip}:{port}", protocol.docker_name());
        let key = |port: u16, protocol: Protocol| {
            format!(
                "{alias}_PORT_{port}_{}",
                protocol.docker_name().to_uppercase()
            )
        };
        let mut env = Vec::new();
        if let Some(&(port, protocol)) = ports.first() {
            env.push((format!("{alias}_PORT"), url(port, protocol)));
        }
        let mut index = 0;
        while index < ports.len() {
            let (first, protocol) = ports[index];
            let last = run_end(&ports, index);
            if last > index + 1 {
                let (end, end_protocol) = ports[last];
                let prefix = key(first, protocol);
                let end_key = key(first, end_protocol);
                env.push((format!("{prefix}_START"), url(first, protocol)));
                env.push((format!("{prefix}_ADDR"), ip.clone()));
                env.push((format!("{prefix}_PROTO"), protocol.docker_name().to_owned()));
                env.push((format!("{prefix}_PORT_START"), first.to_string()));
                env.push((format!("{end_key}_END"), url(end, end_protocol)));
                env.push((format!("{end_key}_PORT_END"), end.to_string()));
                index = last + 1;
            } else {
                index += 1;
            }
        }
        for &(port, protocol) in &ports {
            let prefix = key(port, protocol);
            env.push((prefix.clone(), url(port, protocol)));
            env.push((format!("{prefix}_ADDR"), ip.clone()));
            env.push((format!("{prefix}_PORT"), port.to_string()));
            env.push((format!("{prefix}_PROTO"), protocol.docker_name().to_owned()));
        }
        env.push((format!("{alias}_NAME"), self.link_name.clone()));
        for (name, value) in &self.env {
            if name != "HOME" && name != "PATH" {
                env.push((format!("{alias}_ENV_{name}"), value.clone()));
            }
        }
        env
    }
}

/// The index of the last port of the run of consecutive numbers starting at `start` (dockerd
/// compares numbers only, whatever the protocol).
fn run_end(ports: &[(u16, Protocol)], start: usize) -> usize {
    let first = usize::from(ports[start].0);
    ports
        .iter()
        .enumerate()
        .skip(start + 1)
        .find(|(index, (port, _))| usize::from(*port) > first + (index - start))
        .map_or(ports.len() - 1, |(index, _)| index - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(entry: &str) -> (String, String) {
        let link = Link::parse(entry).unwrap();
        (link.target, link.alias)
    }

    #[test]
    fn links_parse_as_dockerd_reads_them() {
        assert_eq!(link("srv:db"), ("srv".into(), "db".into()));
        assert_eq!(link("srv"), ("srv".into(), "srv".into()));
        assert_eq!(link("/srv:/web/db"), ("srv".into(), "db".into()));
        assert_eq!(link("/srv"), ("srv".into(), "srv".into()));
    }

    #[test]
    fn malformed_links_get_dockerds_message() {
        let message = |entry: &str| Link::parse(entry).unwrap_err().to_string();
        assert_eq!(message(""), "empty string specified for links");
        assert_eq!(message("a:b:c"), "bad format for links: a:b:c");
        assert_eq!(message(":db"), "bad format for links: :db");
        assert_eq!(message("srv:"), "bad format for links: srv:");
    }

    fn redis() -> LinkedContainer {
        LinkedContainer {
            link_name: "/web/my-db".into(),
            target_name: "srv".into(),
            target_hostname: "0123456789ab".into(),
            ip: "10.244.0.7".into(),
            ports: vec![(6379, Protocol::Tcp)],
            env: vec![
                ("PATH".into(), "/usr/bin".into()),
                ("REDIS_VERSION".into(), "7.2".into()),
                ("HOME".into(), "/root".into()),
                ("EMPTY".into(), String::new()),
            ],
        }
    }

    #[test]
    fn one_port_gives_dockers_variables() {
        let env: Vec<String> = redis()
            .environment()
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        assert_eq!(
            env,
            [
                "MY_DB_PORT=tcp://10.244.0.7:6379",
                "MY_DB_PORT_6379_TCP=tcp://10.244.0.7:6379",
                "MY_DB_PORT_6379_TCP_ADDR=10.244.0.7",
                "MY_DB_PORT_6379_TCP_PORT=6379",
                "MY_DB_PORT_6379_TCP_PROTO=tcp",
                "MY_DB_NAME=/web/my-db",
                "MY_DB_ENV_REDIS_VERSION=7.2",
                "MY_DB_ENV_EMPTY=",
            ]
        );
    }

    #[test]
    fn the_default_port_is_the_lowest_tcp_first_and_runs_get_start_and_end() {
        let target = LinkedContainer {
            link_name: "/web/db".into(),
            ip: "10.0.0.2".into(),
            ports: vec![
                (8002, Protocol::Tcp),
                (53, Protocol::Udp),
                (8000, Protocol::Tcp),
                (53, Protocol::Tcp),
                (8001, Protocol::Tcp),
            ],
            ..LinkedContainer::default()
        };
        let env = target.environment();
        let get = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(get("DB_PORT"), Some("tcp://10.0.0.2:53"));
        assert_eq!(get("DB_PORT_8000_TCP_START"), Some("tcp://10.0.0.2:8000"));
        assert_eq!(get("DB_PORT_8000_TCP_END"), Some("tcp://10.0.0.2:8002"));
        assert_eq!(get("DB_PORT_8000_TCP_PORT_START"), Some("8000"));
        assert_eq!(get("DB_PORT_8000_TCP_PORT_END"), Some("8002"));
        assert_eq!(get("DB_PORT_53_UDP"), Some("udp://10.0.0.2:53"));
        assert_eq!(get("DB_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("DB_PORT_8001_TCP_ADDR"), Some("10.0.0.2"));
        // 53/tcp and 53/udp are one number: no run of three.
        assert_eq!(get("DB_PORT_53_TCP_START"), None);
        assert_eq!(get("DB_NAME"), Some("/web/db"));
    }

    #[test]
    fn no_ports_gives_the_name_only() {
        let target = LinkedContainer {
            link_name: "/web/db".into(),
            ..LinkedContainer::default()
        };
        assert_eq!(
            target.environment(),
            [("DB_NAME".to_owned(), "/web/db".to_owned())]
        );
    }

    #[test]
    fn hosts_entry_names_the_alias_hostname_and_name() {
        assert_eq!(redis().hostnames(), ["my-db", "0123456789ab", "srv"]);
        let same = LinkedContainer {
            link_name: "/web/srv".into(),
            target_name: "srv".into(),
            target_hostname: "abc".into(),
            ..LinkedContainer::default()
        };
        assert_eq!(same.hostnames(), ["srv", "abc"]);
    }
}
