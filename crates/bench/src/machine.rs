//! The machine the run measures: which CPUs it may use, what they are, how processes are pinned
//! to them (`taskset`, so no `unsafe` is needed for `sched_setaffinity`), a process's memory and
//! CPU time (in all and by thread), and the CPU time of the whole machine.

use std::{fs, process::Command, sync::OnceLock};

/// What is printed and written about the machine.
pub struct Machine {
    /// The CPUs this process may run on, in order.
    pub cpus: Vec<usize>,
    /// `lscpu`'s model name.
    pub model: String,
    /// `uname -r`.
    pub kernel: String,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// Whether `taskset` works here; without it nothing is pinned.
    pub taskset: bool,
}

impl Machine {
    /// Reads the machine as this process sees it.
    #[must_use]
    pub fn read() -> Self {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .and_then(|list| cpu_list(list.trim()))
            .unwrap_or_else(|| vec![0]);
        let model = command_output("lscpu", &[])
            .lines()
            .find_map(|line| line.strip_prefix("Model name:"))
            .map_or_else(|| "unknown CPU".to_owned(), |name| name.trim().to_owned());
        let kernel = command_output("uname", &["-r"]).trim().to_owned();
        let memory_mib = fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib / 1024);
        let taskset = Command::new("taskset")
            .args(["-c", &cpus[0].to_string(), "true"])
            .status()
            .is_ok_and(|status| status.success());
        Self {
            cpus,
            model,
            kernel,
            memory_mib,
            taskset,
        }
    }

    /// Whether the server, and PostgreSQL with the driver, can each have a CPU of their own.
    #[must_use]
    pub fn can_pin(&self) -> bool {
        self.taskset && self.cpus.len() >= 2
    }

    /// `AMD EPYC, 2 CPUs (0,1), 24105 MiB, Linux 6.1.0`, as the reports say it.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{}, {} CPUs ({}), {} MiB, Linux {}",
            self.model,
            self.cpus.len(),
            self.all_cpus(),
            self.memory_mib,
            self.kernel
        )
    }

    /// Every CPU, as `taskset -c` writes a list.
    #[must_use]
    pub fn all_cpus(&self) -> String {
        self.cpus
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `0-1,4` → `[0, 1, 4]`.
fn cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => cpus.extend(first.parse::<usize>().ok()?..=last.parse().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// The standard output of `program args`, or nothing.
fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

/// Moves every thread of process `pid` to the CPUs `cpus` (a `taskset -c` list). Threads and
/// processes it starts later inherit the setting.
pub fn pin(pid: u32, cpus: &str) -> Result<(), String> {
    let output = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|error| format!("cannot run taskset: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -a -p -c {cpus} {pid} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Re-runs this program with `args`, under `taskset -c cpu` when a CPU is given, and returns
/// what it printed; an exit status other than success is an error with what it said.
pub fn run_self_on(cpu: Option<usize>, args: &[&str]) -> Result<String, String> {
    let program = std::env::current_exe()
        .map_err(|error| format!("cannot find this program to re-run it: {error}"))?;
    let mut command = match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(&program);
            command
        }
        None => Command::new(&program),
    };
    let output = command.args(args).output().map_err(|error| {
        format!(
            "cannot re-run this program as `{}`: {error}",
            args.join(" ")
        )
    })?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "`{}` on CPU {cpu:?} failed: {text}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Resident memory of process `pid` now and at its highest, KiB (`VmRSS`, `VmHWM`).
#[must_use]
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time process `pid` and the children it has waited for have used, in clock ticks
/// (`utime`, `stime`, `cutime`, `cstime` of `/proc/<pid>/stat`); `None` once it is gone.
#[must_use]
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command name: state is the first, utime the 12th.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields
        .get(11..15)?
        .iter()
        .map(|field| field.parse::<u64>().ok())
        .sum()
}

/// CPU time each thread of process `pid` has run so far, seconds, by thread name (threads of one
/// name summed), from the first field of `/proc/<pid>/task/<tid>/schedstat`: nanoseconds the
/// scheduler counted, exact where the clock ticks of `stat` are samples. Empty once the process
/// is gone; a thread that ends between two readings takes its time with it.
#[must_use]
pub fn thread_cpu_seconds(pid: u32) -> Vec<(String, f64)> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads: Vec<(String, f64)> = Vec::new();
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(name), Ok(schedstat)) = (
            fs::read_to_string(path.join("comm")),
            fs::read_to_string(path.join("schedstat")),
        ) else {
            continue;
        };
        let Some(nanos) = schedstat
            .split_whitespace()
            .next()
            .and_then(|field| field.parse::<u64>().ok())
        else {
            continue;
        };
        #[allow(
            clippy::cast_precision_loss,
            reason = "nanoseconds of CPU time stay far below 2^52 (52 days)"
        )]
        let seconds = nanos as f64 / 1e9;
        let name = name.trim_end().to_owned();
        match threads.iter_mut().find(|(known, _)| *known == name) {
            Some((_, total)) => *total += seconds,
            None => threads.push((name, seconds)),
        }
    }
    threads
}

/// CPU time every process on the machine has used, in clock ticks: the busy fields (user, nice,
/// system, irq, softirq, steal) of the `cpu` line of `/proc/stat`.
#[must_use]
pub fn busy_ticks() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    Some(
        [0, 1, 2, 5, 6, 7]
            .iter()
            .filter_map(|&at| fields.get(at))
            .sum(),
    )
}

/// Clock ticks as seconds, at the kernel's `USER_HZ` (`getconf CLK_TCK`, 100 when unknown).
#[must_use]
pub fn ticks_to_seconds(ticks: u64) -> f64 {
    // Asked once: `getconf` is a process, and readings are taken around the rows.
    static PER_SECOND: OnceLock<u32> = OnceLock::new();
    let per_second = *PER_SECOND.get_or_init(|| {
        command_output("getconf", &["CLK_TCK"])
            .trim()
            .parse::<u32>()
            .unwrap_or(100)
    });
    #[allow(clippy::cast_precision_loss, reason = "ticks far below 2^52")]
    let ticks = ticks as f64;
    ticks / f64::from(per_second)
}

#[cfg(test)]
mod tests {
    use super::cpu_list;

    #[test]
    fn cpu_lists_expand_ranges_and_refuse_garbage() {
        assert_eq!(cpu_list("0-1,4"), Some(vec![0, 1, 4]));
        assert_eq!(cpu_list("3"), Some(vec![3]));
        assert_eq!(cpu_list("a-b"), None);
        assert_eq!(cpu_list(""), None);
    }
}
