//! Container stats read from inside the container: its cgroup (v1 or v2) for CPU, memory and
//! pids, `/proc/stat` for the node's CPU time (the base of Docker's CPU percentage) and
//! `/proc/net/dev` of the pod's network namespace. No metrics API is needed (a bare cluster has
//! none, and the kubelet's summary API needs node permissions podbridge must not have); the
//! price is an exec per sample and a shell in the image. Without one the sample stays empty.

use serde_json::{json, Value};

use super::{ContainerView, Result, Runtime};

/// Prints each file after a `==> path` line; missing files print nothing (v1 or v2 layout).
const SCRIPT: &str = "for f in \
/sys/fs/cgroup/cpu.stat /sys/fs/cgroup/memory.current /sys/fs/cgroup/memory.max \
/sys/fs/cgroup/memory.stat /sys/fs/cgroup/pids.current \
/sys/fs/cgroup/cpuacct/cpuacct.usage /sys/fs/cgroup/cpu,cpuacct/cpuacct.usage \
/sys/fs/cgroup/cpuacct/cpuacct.stat /sys/fs/cgroup/cpu,cpuacct/cpuacct.stat \
/sys/fs/cgroup/memory/memory.usage_in_bytes /sys/fs/cgroup/memory/memory.limit_in_bytes \
/sys/fs/cgroup/memory/memory.max_usage_in_bytes /sys/fs/cgroup/memory/memory.stat \
/sys/fs/cgroup/pids/pids.current /proc/stat /proc/net/dev /proc/meminfo; \
do [ -r \"$f\" ] && { echo \"==> $f\"; cat \"$f\"; }; done; true";

/// Jiffies per second in `/proc/stat` (USER_HZ is 100 on every Linux Kubernetes runs on).
const USER_HZ: u64 = 100;
/// Memory limits at or above this mean "no limit" in cgroup v1.
const V1_UNLIMITED: u64 = 1 << 62;

/// One reading, already in Docker's units (nanoseconds, bytes).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sample {
    pub cpu_total_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_kernel_ns: u64,
    pub system_cpu_ns: u64,
    pub online_cpus: u64,
    pub memory_usage: u64,
    pub memory_max_usage: Option<u64>,
    pub memory_limit: u64,
    /// `memory.stat` as read (v1 or v2 keys).
    pub memory_stat: Vec<(String, u64)>,
    pub pids: Option<u64>,
    /// Interface name → rx bytes, rx packets, rx errors, rx dropped, tx bytes, packets, errors, dropped.
    pub networks: Vec<(String, [u64; 8])>,
}

impl Runtime {
    /// A sample of a running container; `None` when the image has no shell to read it with.
    pub async fn stats_sample(&self, view: &ContainerView) -> Result<Option<Sample>> {
        view.require_process("stats")?;
        let argv = ["sh", "-c", SCRIPT].map(String::from).to_vec();
        let output = self.exec_capture(&view.pod_name, argv, None).await?;
        if output.exit_code != 0 {
            return Ok(None);
        }
        Ok(Some(parse(&String::from_utf8_lossy(&output.stdout))))
    }
}

/// Splits the script's output into `(path, content)` sections.
fn sections(text: &str) -> Vec<(&str, String)> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("==> ") {
            out.push((path.trim(), String::new()));
        } else if let Some((_, content)) = out.last_mut() {
            content.push_str(line);
            content.push('\n');
        }
    }
    out
}

fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `key value` lines.
fn pairs(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), number(value)?))
        })
        .collect()
}

fn lookup(pairs: &[(String, u64)], key: &str) -> Option<u64> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

pub fn parse(text: &str) -> Sample {
    let mut sample = Sample::default();
    let mut mem_total = 0;
    for (path, content) in sections(text) {
        let name = path.rsplit('/').next().unwrap_or_default();
        match name {
            // v2: microseconds
            "cpu.stat" => {
                let stat = pairs(&content);
                // The container prints these: saturate rather than overflow.
                let ns = |usec: u64| usec.saturating_mul(1000);
                sample.cpu_total_ns = ns(lookup(&stat, "usage_usec").unwrap_or(0));
                sample.cpu_user_ns = ns(lookup(&stat, "user_usec").unwrap_or(0));
                sample.cpu_kernel_ns = ns(lookup(&stat, "system_usec").unwrap_or(0));
            }
            "memory.current" | "memory.usage_in_bytes" => {
                sample.memory_usage = number(&content).unwrap_or(0);
            }
            "memory.max" | "memory.limit_in_bytes" => {
                // "max" (v2) or a huge number (v1): no limit, reported as the node's memory.
                sample.memory_limit = number(&content)
                    .filter(|limit| *limit < V1_UNLIMITED)
                    .unwrap_or(0);
            }
            "memory.max_usage_in_bytes" => sample.memory_max_usage = number(&content),
            "memory.stat" => sample.memory_stat = pairs(&content),
            "pids.current" => sample.pids = number(&content),
            // v1: nanoseconds in total; user/system in USER_HZ ticks
            "cpuacct.usage" => sample.cpu_total_ns = number(&content).unwrap_or(0),
            "cpuacct.stat" => {
                let stat = pairs(&content);
                let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / USER_HZ);
                sample.cpu_user_ns = ns(lookup(&stat, "user").unwrap_or(0));
                sample.cpu_kernel_ns = ns(lookup(&stat, "system").unwrap_or(0));
            }
            "stat" if path == "/proc/stat" => {
                for line in content.lines() {
                    let mut fields = line.split_whitespace();
                    match fields.next() {
                        Some("cpu") => {
                            // user nice system idle iowait irq softirq steal (guest is in user)
                            let ticks = fields
                                .take(8)
                                .filter_map(|f| f.parse::<u64>().ok())
                                .fold(0u64, u64::saturating_add);
                            sample.system_cpu_ns = ticks.saturating_mul(1_000_000_000 / USER_HZ);
                        }
                        Some(cpu) if cpu.starts_with("cpu") => {
                            sample.online_cpus = sample.online_cpus.saturating_add(1)
                        }
                        _ => {}
                    }
                }
            }
            "dev" if path == "/proc/net/dev" => {
                for line in content.lines().skip(2) {
                    let Some((interface, counters)) = line.split_once(':') else {
                        continue;
                    };
                    let interface = interface.trim();
                    if interface == "lo" {
                        continue;
                    }
                    let values: Vec<u64> = counters
                        .split_whitespace()
                        .filter_map(|f| f.parse().ok())
                        .collect();
                    if values.len() >= 12 {
                        let counters = [
                            values[0], values[1], values[2], values[3], values[8], values[9],
                            values[10], values[11],
                        ];
                        sample.networks.push((interface.to_owned(), counters));
                    }
                }
            }
            "meminfo" => {
                mem_total = content
                    .lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|kb| kb.parse::<u64>().ok())
                    .map_or(0, |kb| kb.saturating_mul(1024));
            }
            _ => {}
        }
    }
    if sample.memory_limit == 0 {
        sample.memory_limit = mem_total;
    }
    sample
}

/// Docker's `ContainerStatsResponse` for `current`, with `previous` as `precpu_stats`.
pub fn stats_json(
    view: &ContainerView,
    read: &str,
    current: Option<&Sample>,
    previous: Option<(&str, &Sample)>,
) -> Value {
    let cpu = |sample: Option<&Sample>| match sample {
        Some(s) => json!({
            "cpu_usage": {"total_usage": s.cpu_total_ns, "usage_in_usermode": s.cpu_user_ns,
                          "usage_in_kernelmode": s.cpu_kernel_ns},
            "system_cpu_usage": s.system_cpu_ns, "online_cpus": s.online_cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}),
        None => json!({"cpu_usage": {"total_usage": 0}, "throttling_data": {}}),
    };
    let memory = match current {
        Some(s) => {
            let stats: serde_json::Map<String, Value> = s
                .memory_stat
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            let mut memory =
                json!({"usage": s.memory_usage, "limit": s.memory_limit, "stats": stats});
            if let Some(max) = s.memory_max_usage {
                memory["max_usage"] = json!(max);
            }
            memory
        }
        None => json!({}),
    };
    let networks: serde_json::Map<String, Value> = current
        .map(|s| {
            s.networks
                .iter()
                .map(|(name, c)| {
                    (
                        name.clone(),
                        json!({"rx_bytes": c[0], "rx_packets": c[1], "rx_errors": c[2], "rx_dropped": c[3],
                               "tx_bytes": c[4], "tx_packets": c[5], "tx_errors": c[6], "tx_dropped": c[7]}),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let pids = current
        .and_then(|s| s.pids)
        .map_or(json!({}), |current| json!({"current": current}));
    json!({
        "id": view.id, "name": format!("/{}", view.name),
        "read": read, "preread": previous.map_or("0001-01-01T00:00:00Z", |(at, _)| at),
        "num_procs": 0, "pids_stats": pids,
        "cpu_stats": cpu(current), "precpu_stats": cpu(previous.map(|(_, s)| s)),
        "memory_stats": memory, "networks": networks,
        "blkio_stats": {"io_service_bytes_recursive": null, "io_serviced_recursive": null,
                        "io_queue_recursive": null, "io_service_time_recursive": null,
                        "io_wait_time_recursive": null, "io_merged_recursive": null,
                        "io_time_recursive": null, "sectors_recursive": null},
        "storage_stats": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "==> /sys/fs/cgroup/cpuacct/cpuacct.usage
2500000000
==> /sys/fs/cgroup/cpuacct/cpuacct.stat
user 200
system 50
==> /sys/fs/cgroup/memory/memory.usage_in_bytes
10485760
==> /sys/fs/cgroup/memory/memory.limit_in_bytes
9223372036854771712
==> /sys/fs/cgroup/memory/memory.max_usage_in_bytes
20971520
==> /sys/fs/cgroup/memory/memory.stat
cache 4096
total_inactive_file 8192
==> /sys/fs/cgroup/pids/pids.current
3
==> /proc/stat
cpu  1000 0 500 8000 10 0 5 0 0 0
cpu0 500 0 250 4000 5 0 2 0 0 0
cpu1 500 0 250 4000 5 0 3 0 0 0
intr 1
==> /proc/net/dev
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    2000      20    1    2    0     0          0         0     3000      30    3    4    0     0       0          0
==> /proc/meminfo
MemTotal:       24000000 kB
MemFree:        1000 kB
";

    #[test]
    fn cgroup_v1_sample() {
        let s = parse(V1);
        assert_eq!(s.cpu_total_ns, 2_500_000_000);
        assert_eq!(s.cpu_user_ns, 2_000_000_000);
        assert_eq!(s.cpu_kernel_ns, 500_000_000);
        assert_eq!(s.system_cpu_ns, 9515 * 10_000_000);
        assert_eq!(s.online_cpus, 2);
        assert_eq!(s.memory_usage, 10_485_760);
        assert_eq!(s.memory_limit, 24_000_000 * 1024, "unlimited → node memory");
        assert_eq!(s.memory_max_usage, Some(20_971_520));
        assert_eq!(s.pids, Some(3));
        assert_eq!(
            s.networks,
            vec![("eth0".to_owned(), [2000, 20, 1, 2, 3000, 30, 3, 4])]
        );
    }

    #[test]
    fn cgroup_v2_sample() {
        let s = parse(
            "==> /sys/fs/cgroup/cpu.stat\nusage_usec 1500\nuser_usec 1000\nsystem_usec 500\n\
             ==> /sys/fs/cgroup/memory.current\n4096\n==> /sys/fs/cgroup/memory.max\n134217728\n\
             ==> /sys/fs/cgroup/memory.stat\ninactive_file 1024\n",
        );
        assert_eq!(
            (s.cpu_total_ns, s.cpu_user_ns, s.cpu_kernel_ns),
            (1_500_000, 1_000_000, 500_000)
        );
        assert_eq!((s.memory_usage, s.memory_limit), (4096, 134_217_728));
        assert_eq!(s.memory_stat, vec![("inactive_file".to_owned(), 1024)]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn section() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec![
                    "/sys/fs/cgroup/cpu.stat",
                    "/sys/fs/cgroup/cpuacct/cpuacct.stat",
                    "/sys/fs/cgroup/cpuacct/cpuacct.usage",
                    "/sys/fs/cgroup/memory.max",
                    "/sys/fs/cgroup/memory.stat",
                    "/proc/stat",
                    "/proc/net/dev",
                    "/proc/meminfo",
                ]),
                prop::collection::vec(
                    prop_oneof![
                        "[a-z_]{1,10} [0-9]{1,22}",
                        "cpu[0-9]?( [0-9]{1,20}){0,9}",
                        "MemTotal: [0-9]{1,22} kB",
                        " *[a-z0-9]{1,4}:( +[0-9]{1,21}){10,16}",
                        "\\PC{0,30}",
                    ],
                    0..6,
                ),
            )
                .prop_map(|(path, lines)| format!("==> {path}\n{}\n", lines.join("\n")))
        }

        proptest! {
            #![proptest_config(crate::proptest_cases::config(256))]

            /// What a container prints for its stats is its own to choose.
            #[test]
            fn container_output_never_panics(
                sections in prop::collection::vec(section(), 0..6),
                noise in any::<String>(),
            ) {
                let _ = parse(&sections.concat());
                let _ = parse(&noise);
            }
        }
    }
}
