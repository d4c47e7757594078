//! Published ports: for each running container with `PortBindings` (or `PublishAllPorts`), a
//! TCP listener or UDP relay on podbridge's host that forwards to the pod IP. The socket is kept
//! open for the container's whole run, so a kernel-chosen port (`HostPort: ""`) cannot be taken by
//! anyone else in between (kubedock #32).
//!
//! Ports are bound on the host part of podbridge's `listen` address (the address Docker clients
//! already reach it on), or on an explicit `HostIp` that is an address of this host; never on
//! every interface unless a client asks for it by name.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{ContainerView, Runtime};
use crate::model::{PortSpec, Protocol as ModelProtocol};

/// A UDP client with no datagram in either direction for this long is forgotten (Docker's
/// userland proxy uses the same 90 seconds).
const UDP_IDLE: Duration = Duration::from_secs(90);
/// How often idle UDP clients are swept.
const UDP_SWEEP: Duration = Duration::from_secs(10);
/// Most UDP clients one published port relays for at a time; the least recently active one
/// makes room for a new one.
const UDP_MAX_CLIENTS: usize = 1024;
const UDP_MAX_DATAGRAM: usize = 65_535;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind {protocol} {address}: {source}")]
    BindFailed {
        protocol: Protocol,
        address: SocketAddr,
        source: std::io::Error,
    },
}

type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The protocol of a Docker port key (`80`, `80/tcp`, `53/udp`); `None` for others (`sctp`).
    fn of_port(port: &str) -> Option<Protocol> {
        match port.split_once('/').map(|(_, protocol)| protocol) {
            None | Some("tcp") => Some(Protocol::Tcp),
            Some("udp") => Some(Protocol::Udp),
            Some(_) => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One requested binding of a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// `HostIp`; `None` when empty or unspecified (`0.0.0.0`, `::`): podbridge's publish address.
    pub host_ip: Option<IpAddr>,
    /// `HostPort`; `0` = any.
    pub host_port: u16,
}

/// One forwarded port of one container run.
pub struct Forward {
    /// `80/tcp`, `53/udp`
    pub container_port: String,
    pub host: SocketAddr,
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
    /// Bindings whose recorded address could not be bound again after a restart: tried again on
    /// every watch change, never moved to another port (the client holds that one).
    pending: Vec<PendingBinding>,
}

/// A recorded host address not bound (yet) and why.
struct PendingBinding {
    container_port: String,
    protocol: Protocol,
    address: SocketAddr,
    target: SocketAddr,
    error: String,
}

/// The host addresses a pod's ports were published on, kept on the container's spec
/// ConfigMap (annotation [`crate::labels::ANNOTATION_PUBLISHED`]) so that a restarted podbridge
/// binds the same ones: clients hold their mapped ports. Tied to the pod's uid: a new run of the
/// container (a new pod) chooses anew, as Docker does for a restarted container.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordedPorts {
    pub pod: String,
    /// Container port → host addresses, in binding order.
    pub ports: BTreeMap<String, Vec<SocketAddr>>,
}

impl RecordedPorts {
    fn of(view: &ContainerView) -> Option<RecordedPorts> {
        let raw = view
            .spec
            .metadata
            .annotations
            .as_ref()?
            .get(crate::labels::ANNOTATION_PUBLISHED)?;
        serde_json::from_str(raw).ok()
    }
}

/// Where published ports are bound by default: the host part of the Docker API's `listen`
/// address, loopback when that is unspecified (`0.0.0.0`) or not an IP address.
pub fn publish_ip(listen: &str) -> IpAddr {
    match listen.parse::<SocketAddr>().map(|a| a.ip()) {
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Ok(IpAddr::V6(ip)) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Ok(ip) => ip,
        Err(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// Requested bindings: container port (`80/tcp`) → requested bindings, for TCP and UDP ports
/// that are published (`-p`, or `-P` for an exposed one).
pub fn requested_bindings(ports: &[PortSpec]) -> BTreeMap<String, Vec<Binding>> {
    ports
        .iter()
        .filter(|port| !port.bindings.is_empty())
        .filter(|port| matches!(port.protocol, ModelProtocol::Tcp | ModelProtocol::Udp))
        .map(|port| {
            let bindings = port
                .bindings
                .iter()
                .map(|binding| Binding {
                    host_ip: binding
                        .host_ip
                        .as_deref()
                        .and_then(|ip| ip.parse::<IpAddr>().ok())
                        .filter(|ip| !ip.is_unspecified()),
                    host_port: binding.host_port.unwrap_or(0),
                })
                .collect();
            (
                format!("{}/{}", port.port, port.protocol.docker_name()),
                bindings,
            )
        })
        .collect()
}

impl Runtime {
    /// Sets the address published ports bind on when a binding names none (see [`publish_ip`]).
    pub fn set_publish_ip(&self, ip: IpAddr) {
        *self.publish_ip.lock() = ip;
    }

    /// The address published ports bind on when a binding names none.
    pub fn publish_ip(&self) -> IpAddr {
        *self.publish_ip.lock()
    }

    /// Opens forwards for running containers and closes those of stopped or removed ones. A pod
    /// whose addresses were recorded (before a restart of podbridge) gets exactly those again;
    /// the addresses chosen for a new pod are recorded.
    pub fn sync_ports(&self, views: &[ContainerView]) {
        let default_ip = *self.publish_ip.lock();
        let mut published = self.published.lock();
        let running: HashMap<&str, &ContainerView> = views
            .iter()
            .filter(|v| v.state.running && v.pod_ip().is_some())
            .map(|v| (v.id.as_str(), v))
            .collect();
        published.retain(|id, p| {
            running.get(id.as_str()).and_then(|v| v.pod_ip()).as_deref() == Some(p.pod_ip.as_str())
        });
        for (id, view) in running {
            if let Some(existing) = published.get_mut(id) {
                if !existing.pending.is_empty() {
                    retry_pending(view, existing);
                }
                continue;
            }
            let wanted = requested_bindings(&view.record.settings.ports);
            if wanted.is_empty() {
                continue;
            }
            let pod_ip = view.pod_ip().unwrap_or_default();
            let Ok(pod_addr) = pod_ip.parse::<IpAddr>() else {
                warn!(container = %view.short_id(), %pod_ip, "Pod IP is not an address; ports not published");
                continue;
            };
            let pod_uid = view
                .pod
                .as_ref()
                .and_then(|p| p.metadata.uid.clone())
                .unwrap_or_default();
            let recorded =
                RecordedPorts::of(view).filter(|r| !pod_uid.is_empty() && r.pod == pod_uid);
            let mut entry = Published {
                pod_ip,
                forwards: Vec::new(),
                pending: Vec::new(),
            };
            for (container_port, bindings) in wanted {
                let (Some(protocol), Ok(target_port)) = (
                    Protocol::of_port(&container_port),
                    container_port
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .parse::<u16>(),
                ) else {
                    continue;
                };
                let target = SocketAddr::new(pod_addr, target_port);
                let kept = recorded.as_ref().and_then(|r| r.ports.get(&container_port));
                for (index, binding) in bindings.into_iter().enumerate() {
                    let result = match kept.and_then(|addresses| addresses.get(index)) {
                        Some(address) => {
                            bind_and_spawn(protocol, *address, target).inspect_err(|error| {
                                entry.pending.push(PendingBinding {
                                    container_port: container_port.clone(),
                                    protocol,
                                    address: *address,
                                    target,
                                    error: error.to_string(),
                                });
                            })
                        }
                        None => publish(view.short_id(), protocol, binding, default_ip, target),
                    };
                    match result {
                        Ok((host, task)) => {
                            info!(container = %view.short_id(), %container_port, %host, %target, "Port published");
                            entry.forwards.push(Forward {
                                container_port: container_port.clone(),
                                host,
                                task,
                            });
                        }
                        Err(error) => {
                            warn!(container = %view.short_id(), %container_port, %error, "Cannot publish port")
                        }
                    }
                }
            }
            let now = RecordedPorts {
                pod: pod_uid,
                ports: entry.forwards.iter().fold(BTreeMap::new(), |mut ports, f| {
                    ports
                        .entry(f.container_port.clone())
                        .or_insert_with(Vec::new)
                        .push(f.host);
                    ports
                }),
            };
            if recorded.is_none() && !now.pod.is_empty() {
                self.record_ports(view, &now);
            }
            published.insert(id.to_string(), entry);
        }
    }

    /// Writes the chosen addresses on the container's spec (in the background: the watch
    /// handler must not wait on the API; a lost write only means new ports after a restart).
    fn record_ports(&self, view: &ContainerView, ports: &RecordedPorts) {
        let mut metadata = serde_json::json!({"annotations": {
            crate::labels::ANNOTATION_PUBLISHED: serde_json::to_string(ports).unwrap_or_default()
        }});
        if let Some(uid) = view.spec.metadata.uid.as_deref() {
            metadata["uid"] = uid.into();
        }
        let patch = serde_json::json!({ "metadata": metadata });
        let api = self.applier.config_maps();
        let name = view.pod_name.clone();
        let container = view.short_id().to_string();
        tokio::spawn(async move {
            if let Err(error) = api
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
            {
                warn!(%container, %error, "Published ports not recorded; a restart will choose new ones");
            }
        });
    }

    /// Whether any recorded address waits to be bound again.
    pub fn has_pending_ports(&self) -> bool {
        self.published
            .lock()
            .values()
            .any(|p| !p.pending.is_empty())
    }

    /// Why recorded host addresses of a container are not bound (after a restart of
    /// podbridge, someone else took them), for `inspect`'s `State.Error`.
    pub fn port_errors(&self, id: &str) -> Vec<String> {
        self.published
            .lock()
            .get(id)
            .map(|p| {
                p.pending
                    .iter()
                    .map(|b| {
                        format!(
                            "published port {} for {} could not be bound again after a restart of podbridge: {}",
                            b.address, b.container_port, b.error
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Host addresses published for a container: container port → bound addresses.
    pub fn published_ports(&self, id: &str) -> BTreeMap<String, Vec<SocketAddr>> {
        let mut ports: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
        if let Some(address) = self.ryuk_ports(id) {
            ports.insert("8080/tcp".into(), vec![address]);
            return ports;
        }
        let published = self.published.lock();
        if let Some(p) = published.get(id) {
            for forward in &p.forwards {
                ports
                    .entry(forward.container_port.clone())
                    .or_default()
                    .push(forward.host);
            }
        }
        ports
    }
}

/// Binds recorded addresses that were taken when podbridge came back, once they are free.
fn retry_pending(view: &ContainerView, published: &mut Published) {
    let mut still = Vec::new();
    for binding in published.pending.drain(..) {
        match bind_and_spawn(binding.protocol, binding.address, binding.target) {
            Ok((host, task)) => {
                info!(container = %view.short_id(), container_port = %binding.container_port, %host, "Recorded port bound again");
                published.forwards.push(Forward {
                    container_port: binding.container_port,
                    host,
                    task,
                });
            }
            Err(_) => still.push(binding),
        }
    }
    published.pending = still;
}

/// Binds one binding and spawns its forwarder; returns the bound address. An explicit `HostIp`
/// that is not an address of this host falls back to `default_ip`.
fn publish(
    container: &str,
    protocol: Protocol,
    binding: Binding,
    default_ip: IpAddr,
    target: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let address = SocketAddr::new(binding.host_ip.unwrap_or(default_ip), binding.host_port);
    match bind_and_spawn(protocol, address, target) {
        Err(Error::BindFailed { source, .. })
            if binding.host_ip.is_some()
                && source.kind() == std::io::ErrorKind::AddrNotAvailable =>
        {
            let fallback = SocketAddr::new(default_ip, binding.host_port);
            warn!(%container, requested = %address, %fallback, "HostIp is not an address of this host; publishing on the default address");
            bind_and_spawn(protocol, fallback, target)
        }
        result => result,
    }
}

fn bind_and_spawn(
    protocol: Protocol,
    address: SocketAddr,
    target: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let failed = |source| Error::BindFailed {
        protocol,
        address,
        source,
    };
    match protocol {
        Protocol::Tcp => {
            let listener = std::net::TcpListener::bind(address).map_err(failed)?;
            listener.set_nonblocking(true).map_err(failed)?;
            let listener = TcpListener::from_std(listener).map_err(failed)?;
            let host = listener.local_addr().map_err(failed)?;
            Ok((host, tokio::spawn(forward_tcp(listener, target))))
        }
        Protocol::Udp => {
            let socket = std::net::UdpSocket::bind(address).map_err(failed)?;
            socket.set_nonblocking(true).map_err(failed)?;
            let socket = UdpSocket::from_std(socket).map_err(failed)?;
            let host = socket.local_addr().map_err(failed)?;
            Ok((host, tokio::spawn(relay_udp(socket, target))))
        }
    }
}

async fn forward_tcp(listener: TcpListener, target: SocketAddr) {
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // e.g. out of file descriptors: back off instead of spinning.
                debug!(%target, %error, "Accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target)).await {
                Ok(Ok(mut outbound)) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Ok(Err(error)) => debug!(%peer, %target, %error, "Forward connect failed"),
                Err(_) => debug!(%peer, %target, "Forward connect timed out"),
            }
        });
    }
}

/// Clients of one UDP relay: per client address a value (its upstream socket), with the time of
/// its last datagram in either direction. Bounded; idle clients expire. Times are durations
/// since the relay started, so the bookkeeping can be tested without a clock.
struct ClientTable<V> {
    clients: HashMap<SocketAddr, Client<V>>,
    capacity: usize,
    idle: Duration,
}

struct Client<V> {
    value: V,
    /// Milliseconds since the relay started; the reply task updates it too.
    last_active: Arc<AtomicU64>,
}

impl<V> ClientTable<V> {
    fn new(capacity: usize, idle: Duration) -> Self {
        ClientTable {
            clients: HashMap::new(),
            capacity: capacity.max(1),
            idle,
        }
    }

    /// The client's value, marking it active at `now`.
    fn get(&self, client: &SocketAddr, now: Duration) -> Option<&V> {
        let entry = self.clients.get(client)?;
        entry.last_active.store(millis(now), Ordering::Relaxed);
        Some(&entry.value)
    }

    /// Adds a client whose activity time `last_active` it shares with the client's reply task;
    /// returns the least recently active client it displaced when the table was full.
    fn insert(
        &mut self,
        client: SocketAddr,
        value: V,
        last_active: Arc<AtomicU64>,
    ) -> Option<(SocketAddr, V)> {
        let mut evicted = None;
        if !self.clients.contains_key(&client) && self.clients.len() >= self.capacity {
            let oldest = self
                .clients
                .iter()
                .min_by_key(|(_, c)| c.last_active.load(Ordering::Relaxed))
                .map(|(address, _)| *address);
            if let Some(oldest) = oldest {
                evicted = self.clients.remove(&oldest).map(|c| (oldest, c.value));
            }
        }
        self.clients.insert(client, Client { value, last_active });
        evicted
    }

    /// Removes and returns the clients idle for longer than the timeout at `now`.
    fn expire(&mut self, now: Duration) -> Vec<(SocketAddr, V)> {
        let deadline = millis(now).saturating_sub(millis(self.idle));
        let idle: Vec<SocketAddr> = self
            .clients
            .iter()
            .filter(|(_, c)| c.last_active.load(Ordering::Relaxed) < deadline)
            .map(|(address, _)| *address)
            .collect();
        idle.into_iter()
            .filter_map(|address| self.clients.remove(&address).map(|c| (address, c.value)))
            .collect()
    }

    fn len(&self) -> usize {
        self.clients.len()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The socket that relays one client's datagrams to the pod, and the task that sends the pod's
/// replies back to that client.
struct Upstream {
    socket: Arc<UdpSocket>,
    replies: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

async fn relay_udp(listener: UdpSocket, target: SocketAddr) {
    let listener = Arc::new(listener);
    let started = Instant::now();
    let mut clients: ClientTable<Upstream> = ClientTable::new(UDP_MAX_CLIENTS, UDP_IDLE);
    let mut sweep = tokio::time::interval(UDP_SWEEP);
    let mut buffer = vec![0u8; UDP_MAX_DATAGRAM];
    loop {
        tokio::select! {
            received = listener.recv_from(&mut buffer) => {
                let (length, client) = match received {
                    Ok(received) => received,
                    Err(error) => {
                        debug!(%target, %error, "UDP receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let now = started.elapsed();
                if clients.get(&client, now).is_none() {
                    let socket = match connect_upstream(target).await {
                        Ok(socket) => Arc::new(socket),
                        Err(error) => {
                            debug!(%client, %target, %error, "UDP upstream socket failed");
                            continue;
                        }
                    };
                    let last_active = Arc::new(AtomicU64::new(millis(now)));
                    let replies = tokio::spawn(relay_replies(
                        socket.clone(),
                        listener.clone(),
                        client,
                        last_active.clone(),
                        started,
                    ));
                    if let Some((evicted, _)) = clients.insert(client, Upstream { socket, replies }, last_active) {
                        debug!(%evicted, %target, "UDP client table full; dropped the least recently active client");
                    }
                    debug!(%client, %target, clients = clients.len(), "UDP client added");
                }
                if let Some(upstream) = clients.get(&client, now) {
                    if let Err(error) = upstream.socket.send(&buffer[..length]).await {
                        debug!(%client, %target, %error, "UDP send to pod failed");
                    }
                }
            }
            _ = sweep.tick() => {
                let expired = clients.expire(started.elapsed());
                if !expired.is_empty() {
                    debug!(%target, expired = expired.len(), clients = clients.len(), "UDP clients expired");
                }
            }
        }
    }
}

/// A socket connected to the pod, so only the pod's replies arrive on it.
async fn connect_upstream(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

async fn relay_replies(
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    last_active: Arc<AtomicU64>,
    started: Instant,
) {
    let mut buffer = vec![0u8; UDP_MAX_DATAGRAM];
    loop {
        match upstream.recv(&mut buffer).await {
            Ok(length) => {
                last_active.store(millis(started.elapsed()), Ordering::Relaxed);
                if let Err(error) = listener.send_to(&buffer[..length], client).await {
                    debug!(%client, %error, "UDP reply to client failed");
                }
            }
            Err(error) => {
                // A connected socket reports the pod's ICMP "port unreachable" here.
                debug!(%client, %error, "UDP receive from pod failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn at(seconds: u64) -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(seconds * 1000))
    }

    #[test]
    fn bindings_from_request() {
        let port = |port, protocol, bindings: &[(Option<&str>, Option<u16>)]| PortSpec {
            port,
            protocol,
            bindings: bindings
                .iter()
                .map(|(ip, port)| crate::model::HostBinding {
                    host_ip: ip.map(str::to_owned),
                    host_port: *port,
                })
                .collect(),
        };
        let request = [
            port(80, ModelProtocol::Tcp, &[(None, Some(8080))]),
            port(81, ModelProtocol::Tcp, &[(None, None)]),
            port(
                82,
                ModelProtocol::Tcp,
                &[(Some("0.0.0.0"), Some(1)), (Some("10.1.2.3"), Some(2))],
            ),
            port(9000, ModelProtocol::Tcp, &[(None, None)]),
            port(53, ModelProtocol::Udp, &[(None, None)]),
            port(7, ModelProtocol::Sctp, &[(None, None)]),
            port(8000, ModelProtocol::Tcp, &[]),
        ];
        let wanted = requested_bindings(&request);
        let any = |host_port| Binding {
            host_ip: None,
            host_port,
        };
        assert_eq!(wanted["80/tcp"], vec![any(8080)]);
        assert_eq!(wanted["81/tcp"], vec![any(0)]);
        assert_eq!(wanted["9000/tcp"], vec![any(0)]);
        assert_eq!(wanted["53/udp"], vec![any(0)]);
        assert_eq!(
            wanted["82/tcp"],
            vec![
                any(1),
                Binding {
                    host_ip: Some("10.1.2.3".parse().unwrap()),
                    host_port: 2
                }
            ]
        );
        assert!(!wanted.contains_key("7/sctp"));
        assert!(
            !wanted.contains_key("8000/tcp"),
            "exposed only: not published"
        );
    }

    #[test]
    fn publish_ip_follows_listen() {
        assert_eq!(publish_ip("127.0.0.1:2475"), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(publish_ip("10.244.0.1:2475"), IpAddr::from([10, 244, 0, 1]));
        assert_eq!(publish_ip("0.0.0.0:2475"), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(publish_ip("[::]:2475"), IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(publish_ip("[::1]:2475"), IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(publish_ip("localhost:2475"), IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn client_table_touches_and_expires() {
        let idle = Duration::from_secs(90);
        let mut table = ClientTable::new(8, idle);
        table.insert(address(1), "a", at(0));
        table.insert(address(2), "b", at(50));
        assert_eq!(table.get(&address(1), Duration::from_secs(60)), Some(&"a"));
        assert!(table.expire(Duration::from_secs(140)).is_empty());
        let expired = table.expire(Duration::from_secs(141));
        assert_eq!(expired, vec![(address(2), "b")]);
        assert_eq!(table.len(), 1);
        assert!(table.get(&address(2), Duration::from_secs(141)).is_none());
    }

    #[test]
    fn reply_activity_keeps_a_client() {
        let mut table = ClientTable::new(8, Duration::from_secs(90));
        let activity = at(0);
        table.insert(address(1), (), activity.clone());
        activity.store(millis(Duration::from_secs(100)), Ordering::Relaxed);
        assert!(table.expire(Duration::from_secs(150)).is_empty());
        assert_eq!(table.expire(Duration::from_secs(191)).len(), 1);
    }

    #[test]
    fn full_table_drops_least_recently_active() {
        let mut table = ClientTable::new(2, Duration::from_secs(90));
        table.insert(address(1), 1, at(0));
        table.insert(address(2), 2, at(1));
        table.get(&address(1), Duration::from_secs(2));
        let evicted = table.insert(address(3), 3, at(3));
        assert_eq!(evicted, Some((address(2), 2)));
        assert_eq!(table.len(), 2);
        let evicted = table.insert(address(3), 33, at(4));
        assert_eq!(evicted, None, "replacing a known client evicts nobody");
        assert_eq!(table.get(&address(3), Duration::from_secs(4)), Some(&33));
    }
}
