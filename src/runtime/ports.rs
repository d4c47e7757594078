//! Published ports: for each running container with `PortBindings` (or `PublishAllPorts`), a
//! loopback listener that forwards every connection to the pod IP. The listener is kept open for
//! the container's whole run, so a kernel-chosen port (`HostPort: ""`) cannot be taken by anyone
//! else in between (kubedock #32).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{ContainerView, Runtime};

/// One forwarded port of one container run.
pub struct Forward {
    /// `80/tcp`
    pub container_port: String,
    pub host_port: u16,
    task: JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards of one container, tied to the pod IP they point at.
pub struct Published {
    pod_ip: String,
    pub forwards: Vec<Forward>,
}

/// Requested bindings: container port → requested host ports (`0` = any).
pub fn requested_bindings(request: &serde_json::Value) -> BTreeMap<String, Vec<u16>> {
    let mut wanted: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    if let Some(bindings) = request["HostConfig"]["PortBindings"].as_object() {
        for (port, list) in bindings {
            let ports: Vec<u16> = list
                .as_array()
                .map(|l| {
                    l.iter()
                        .map(|b| {
                            b["HostPort"]
                                .as_str()
                                .and_then(|p| p.parse().ok())
                                .unwrap_or(0)
                        })
                        .collect()
                })
                .unwrap_or_default();
            wanted.insert(port.clone(), if ports.is_empty() { vec![0] } else { ports });
        }
    }
    if request["HostConfig"]["PublishAllPorts"]
        .as_bool()
        .unwrap_or(false)
    {
        if let Some(exposed) = request["ExposedPorts"].as_object() {
            for port in exposed.keys() {
                wanted.entry(port.clone()).or_insert_with(|| vec![0]);
            }
        }
    }
    wanted.retain(|port, _| port.ends_with("/tcp") || !port.contains('/'));
    wanted
}

impl Runtime {
    /// Opens forwards for running containers and closes those of stopped or removed ones.
    pub fn sync_ports(&self, views: &[ContainerView]) {
        let mut published = self.published.lock().unwrap();
        let running: HashMap<&str, &ContainerView> = views
            .iter()
            .filter(|v| v.state.running && v.pod_ip().is_some())
            .map(|v| (v.id.as_str(), v))
            .collect();
        published.retain(|id, p| {
            running.get(id.as_str()).and_then(|v| v.pod_ip()).as_deref() == Some(p.pod_ip.as_str())
        });
        for (id, view) in running {
            if published.contains_key(id) {
                continue;
            }
            let wanted = requested_bindings(&view.request);
            if wanted.is_empty() {
                continue;
            }
            let pod_ip = view.pod_ip().unwrap_or_default();
            let mut forwards = Vec::new();
            for (container_port, host_ports) in wanted {
                let Ok(target_port) = container_port
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .parse::<u16>()
                else {
                    continue;
                };
                for host_port in host_ports {
                    match bind(host_port) {
                        Ok(listener) => {
                            let bound =
                                listener.local_addr().map(|a| a.port()).unwrap_or(host_port);
                            let target: SocketAddr = match format!("{pod_ip}:{target_port}").parse()
                            {
                                Ok(target) => target,
                                Err(_) => continue,
                            };
                            info!(container = %view.short_id(), %container_port, host_port = bound, %target, "Port published");
                            forwards.push(Forward {
                                container_port: container_port.clone(),
                                host_port: bound,
                                task: tokio::spawn(forward(listener, target)),
                            });
                        }
                        Err(error) => {
                            warn!(container = %view.short_id(), %container_port, host_port, %error, "Cannot publish port")
                        }
                    }
                }
            }
            published.insert(id.to_string(), Published { pod_ip, forwards });
        }
    }

    /// Host ports published for a container: container port → host ports.
    pub fn published_ports(&self, id: &str) -> BTreeMap<String, Vec<u16>> {
        let published = self.published.lock().unwrap();
        let mut ports: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        if let Some(p) = published.get(id) {
            for forward in &p.forwards {
                ports
                    .entry(forward.container_port.clone())
                    .or_default()
                    .push(forward.host_port);
            }
        }
        ports
    }
}

fn bind(port: u16) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

async fn forward(listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, peer)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                TcpStream::connect(target),
            )
            .await
            {
                Ok(Ok(mut outbound)) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Ok(Err(error)) => debug!(%peer, %target, %error, "Forward connect failed"),
                Err(_) => debug!(%peer, %target, "Forward connect timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_from_request() {
        let request = serde_json::json!({
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "9000/tcp": {}},
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "81/tcp": [{"HostPort": ""}]},
                           "PublishAllPorts": true}
        });
        let wanted = requested_bindings(&request);
        assert_eq!(wanted["80/tcp"], vec![8080]);
        assert_eq!(wanted["81/tcp"], vec![0]);
        assert_eq!(wanted["9000/tcp"], vec![0]);
        assert!(!wanted.contains_key("53/udp"));
    }
}
