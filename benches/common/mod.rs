//! What every benchmark prints about the machine it ran on, and its peak memory; the workloads
//! more than one benchmark runs.

#![allow(dead_code)]

pub mod store;

/// Every benchmark process allocates as the `healstore` binary (the CLI and the server) does:
/// with mimalloc. glibc's malloc and free took about a quarter of the heal benchmark's CPU
/// time under 256 concurrent heals; a library user chooses the allocator of their own process.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The process's peak resident set (`VmHWM`), in KiB.
pub fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One line: CPU, cores, memory and kernel.
pub fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or("?".into(), |k| {
            format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0)
        });
    let os = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    println!("machine: {cpu}, {cores} cores, {mem} memory, Linux {os}; allocator mimalloc");
}

/// The upstream workload: `n` raw monitoring events, `heartbeat_failed`, `task_timeout`,
/// `resource_exhaustion` and `quorum_loss` in turn, spread over `agents` agents.
pub fn upstream_workload(
    n: usize,
    agents: usize,
    t0: chrono::DateTime<chrono::Utc>,
) -> Vec<healstore::heal::Failure> {
    (0..n)
        .filter_map(|i| {
            let agent = format!("agent-{}", (i * 7919) % agents);
            let at = healstore::time::format_time(t0 + chrono::Duration::milliseconds(i as i64));
            let raw = match i % 4 {
                0 => serde_json::json!({"type": "heartbeat_failed", "agent_id": agent, "timestamp": at}),
                1 => serde_json::json!({"type": "task_timeout", "task_id": format!("task-{i}"),
                            "agent_id": agent, "timestamp": at}),
                2 => serde_json::json!({"type": "resource_exhaustion", "agent_id": agent,
                            "resource_type": "memory", "current_usage": 0.8 + (i % 20) as f64 / 100.0,
                            "limit": 1.0, "timestamp": at}),
                _ => serde_json::json!({"type": "quorum_loss", "required_quorum": 3, "healthy_agents": 2,
                            "timestamp": at}),
            };
            healstore::heal::detect(&raw, t0).ok().flatten()
        })
        .collect()
}
