//! The bench report: its phases, and how they print as Markdown and JSON.

use super::*;

pub(super) struct Phase {
    pub(super) name: String,
    pub(super) fragment_bytes: u16,
    /// Payload bytes moved.
    pub(super) bytes: u64,
    pub(super) wall: f64,
    pub(super) ops: Option<u64>,
    pub(super) latencies: Option<Latencies>,
    pub(super) cpu: CpuDelta,
    /// Deltas of the kernel's UDP counters.
    pub(super) udp: BTreeMap<String, u64>,
    pub(super) notes: Vec<String>,
}

impl Phase {
    pub(super) fn gb_per_s(&self) -> f64 {
        self.bytes as f64 / self.wall.max(1e-9) / GB
    }

    pub(super) fn per_gb(&self, seconds: f64) -> f64 {
        seconds / (self.bytes as f64 / GB).max(1e-12)
    }

    pub(super) fn throughput(&self) -> String {
        match self.ops {
            Some(ops) => {
                format!("{} ops/s ({:.3} GB/s)", group_digits(ops as f64 / self.wall.max(1e-9)), self.gb_per_s())
            }
            None if self.name.starts_with("Baseline") => format!("{:.3} GB/s", self.gb_per_s()),
            None => format!(
                "{:.3} GB/s ({:.0} chunks/s)",
                self.gb_per_s(),
                self.bytes as f64 / self.wall.max(1e-9) / f64::from(CHUNK_BYTES)
            ),
        }
    }

    pub(super) fn latency(&self) -> String {
        match &self.latencies {
            Some(l) => format!(
                "{:.1} / {:.1} / {:.1} µs (max {:.1})",
                micros(l.p50),
                micros(l.p99),
                micros(l.p999),
                micros(l.max)
            ),
            None => "–".into(),
        }
    }

    pub(super) fn all_notes(&self) -> String {
        let mut notes = self.notes.clone();
        if let Some(ops) = self.ops {
            notes.push(format!("{:.1} µs process CPU per op", self.cpu.process / ops as f64 * 1e6));
        }
        if let Some(node) = self.cpu.node {
            notes.push(format!("node process {:.3} CPU s ({:.2} s/GB)", node, self.per_gb(node)));
        }
        let drops = self.udp.get("RcvbufErrors").copied().unwrap_or(0);
        if drops > 0 && !self.name.starts_with("Baseline") {
            notes.push(format!("kernel dropped {drops} datagrams (receive buffer full)"));
        }
        notes.join("; ")
    }
}

pub(super) struct Report {
    pub(super) date: String,
    pub(super) command: String,
    pub(super) machine: String,
    pub(super) load_average: String,
    pub(super) target: String,
    pub(super) settings: String,
    pub(super) phases: Vec<Phase>,
    pub(super) node_counters: Vec<(String, u64)>,
}

impl Report {
    // Long on purpose: a report template, one table row per measurement.
    pub(super) fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("## beeline bench\n\n");
        out.push_str(&format!("- Date: {}\n", self.date));
        out.push_str(&format!("- Command: `{}`\n", self.command));
        out.push_str(&format!("- Machine: {}; load average at start {}\n", self.machine, self.load_average));
        out.push_str(&format!("- Target: {}\n", self.target));
        out.push_str(&format!("- Workload: {}\n\n", self.settings));
        out.push_str("GB = 10^9 bytes of chunk payload. CPU s/GB: CPU-seconds spent per GB moved, by this process (client + in-process node) and by the whole machine (`/proc/stat` user+nice+system+irq+softirq; includes anything else running).\n\n");
        out.push_str("| Measurement | Throughput | Latency p50 / p99 / p999 | Wall s | Process CPU s/GB | Machine CPU s/GB | Notes |\n");
        out.push_str("|---|---:|---|---:|---:|---:|---|\n");
        for phase in &self.phases {
            out.push_str(&format!(
                "| {} | {} | {} | {:.3} | {:.2} | {:.2} | {} |\n",
                phase.name,
                phase.throughput(),
                phase.latency(),
                phase.wall,
                phase.per_gb(phase.cpu.process),
                phase.per_gb(phase.cpu.machine_busy),
                phase.all_notes()
            ));
        }
        let roles: Vec<&str> = [
            "main thread (client, udp sender)",
            "node poll loop",
            "node group commit",
            "udp receiver",
            "other threads",
        ]
        .into_iter()
        .filter(|role| self.phases.iter().any(|phase| phase.cpu.threads.contains_key(*role)))
        .collect();
        out.push_str(
            "\nWhere the CPU went (CPU-seconds per phase; steal = time the hypervisor ran something else):\n\n",
        );
        out.push_str("| Phase | Wall s |");
        for role in &roles {
            out.push_str(&format!(" {role} |"));
        }
        out.push_str(" process | machine | steal |\n|---|---:|");
        out.push_str(&"---:|".repeat(roles.len() + 3));
        out.push('\n');
        for phase in &self.phases {
            out.push_str(&format!("| {} | {:.3} |", phase.name, phase.wall));
            for role in &roles {
                out.push_str(&format!(" {:.3} |", phase.cpu.threads.get(*role).copied().unwrap_or(0.0)));
            }
            out.push_str(&format!(
                " {:.3} | {:.3} | {:.3} |\n",
                phase.cpu.process, phase.cpu.machine_busy, phase.cpu.machine_steal
            ));
        }
        if !self.node_counters.is_empty() {
            let shown: Vec<String> = self
                .node_counters
                .iter()
                .filter(|(_, value)| *value > 0)
                .map(|(name, value)| format!("{name} {value}"))
                .collect();
            let copied = self
                .node_counters
                .iter()
                .find(|(name, _)| name == "data_bytes_copied")
                .map(|(_, value)| *value)
                .unwrap_or(0);
            out.push_str(&format!(
                "\nNode counters over the run (non-zero): {}. data_bytes_copied = {copied}.\n",
                shown.join(", ")
            ));
        }
        out
    }

    pub(super) fn json(&self) -> String {
        let mut phases = Vec::new();
        for phase in &self.phases {
            let mut fields = vec![
                format!("\"name\": {}", json_string(&phase.name)),
                format!("\"fragment_bytes\": {}", phase.fragment_bytes),
                format!("\"bytes\": {}", phase.bytes),
                format!("\"wall_seconds\": {:.6}", phase.wall),
                format!("\"gb_per_second\": {:.6}", phase.gb_per_s()),
                format!("\"process_cpu_seconds\": {:.6}", phase.cpu.process),
                format!("\"machine_cpu_seconds\": {:.6}", phase.cpu.machine_busy),
                format!("\"machine_steal_seconds\": {:.6}", phase.cpu.machine_steal),
                format!("\"process_cpu_seconds_per_gb\": {:.6}", phase.per_gb(phase.cpu.process)),
                format!("\"machine_cpu_seconds_per_gb\": {:.6}", phase.per_gb(phase.cpu.machine_busy)),
                format!(
                    "\"thread_cpu_seconds\": {{{}}}",
                    phase
                        .cpu
                        .threads
                        .iter()
                        .map(|(role, seconds)| format!("{}: {seconds:.6}", json_string(role)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!("\"notes\": {}", json_string(&phase.all_notes())),
            ];
            if let Some(node) = phase.cpu.node {
                fields.push(format!("\"node_cpu_seconds\": {node:.6}"));
                fields.push(format!("\"node_cpu_seconds_per_gb\": {:.6}", phase.per_gb(node)));
            }
            if let Some(ops) = phase.ops {
                fields.push(format!("\"ops\": {ops}"));
                fields.push(format!("\"ops_per_second\": {:.3}", ops as f64 / phase.wall.max(1e-9)));
            }
            if let Some(l) = &phase.latencies {
                fields.push(format!(
                    "\"latency_us\": {{\"p50\": {:.3}, \"p99\": {:.3}, \"p999\": {:.3}, \"max\": {:.3}}}",
                    micros(l.p50),
                    micros(l.p99),
                    micros(l.p999),
                    micros(l.max)
                ));
            }
            phases.push(format!("    {{{}}}", fields.join(", ")));
        }
        let counters = self
            .node_counters
            .iter()
            .map(|(name, value)| format!("{}: {value}", json_string(name)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{{\n  \"date\": {},\n  \"command\": {},\n  \"machine\": {},\n  \"load_average\": {},\n  \"target\": {},\n  \"workload\": {},\n  \"phases\": [\n{}\n  ],\n  \"node_counters\": {{{counters}}}\n}}\n",
            json_string(&self.date),
            json_string(&self.command),
            json_string(&self.machine),
            json_string(&self.load_average),
            json_string(&self.target),
            json_string(&self.settings),
            phases.join(",\n"),
        )
    }
}

pub(super) fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(super) fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

pub(super) fn group_digits(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (index, c) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// CPU model, cores, memory, kernel, architecture.
pub(super) fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix("MemTotal:")
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map(|kib| format!("{:.1} GiB RAM", kib as f64 / (1 << 20) as f64))
        .unwrap_or_default();
    let read = |path: &str| std::fs::read_to_string(path).map(|text| text.trim().to_owned()).unwrap_or_default();
    format!(
        "{model}, {cores} cores, {memory}, {} {} {}",
        read("/proc/sys/kernel/ostype"),
        read("/proc/sys/kernel/osrelease"),
        std::env::consts::ARCH
    )
}

pub(super) fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c)) {
                arg
            } else {
                format!("'{}'", arg.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
