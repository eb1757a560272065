//! What the process's threads did during a row, from `/proc/self/task` (Linux): for each thread,
//! its name, the context switches it made (voluntary: it blocked or yielded; involuntary: the
//! scheduler took its CPU away), the CPU time it used and the CPU it last ran on. A row whose
//! steps are slow for a reason outside the GPU shows here: a hot thread switched out, two spinning
//! threads on one CPU, a thread on the step's path that sleeps.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One thread's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
struct Counters {
    name: String,
    voluntary: u64,
    involuntary: u64,
    /// User + system time, in clock ticks.
    ticks: u64,
    cpu: i64,
}

/// The counters of every thread of the process, by thread id.
#[derive(Clone, Debug, Default)]
pub struct Threads(BTreeMap<u64, Counters>);

/// Parses a `/proc/.../status` text: the two context-switch counts.
fn switches(status: &str) -> (u64, u64) {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

/// Parses a `/proc/.../stat` line: (utime + stime ticks, last CPU). The name field may hold
/// spaces and parentheses, so the fields are counted after its last `)`.
fn stat_fields(stat: &str) -> (u64, i64) {
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // After ")": state is field 3 of the line, so field k is rest's index k - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |k: usize| {
        f.get(k - 3)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    let ticks = num(14).max(0) + num(15).max(0);
    (ticks as u64, num(39))
}

impl Threads {
    /// Reads every thread's counters now; empty where `/proc` cannot be read.
    pub fn snapshot() -> Threads {
        let mut out = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return Threads(out);
        };
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let p = entry.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
            let (voluntary, involuntary) = switches(&read("status"));
            let (ticks, cpu) = stat_fields(&read("stat"));
            out.insert(
                tid,
                Counters {
                    name: read("comm").trim().to_owned(),
                    voluntary,
                    involuntary,
                    ticks,
                    cpu,
                },
            );
        }
        Threads(out)
    }

    /// A JSON field, `"threads":[...]`, with what each thread did since `earlier`: name, thread
    /// id, voluntary and involuntary switches, CPU time in ms and its last CPU. Threads that used
    /// no CPU time and made no switch are left out.
    pub fn since(&self, earlier: &Threads) -> String {
        let tick_ms = 1000.0 / clock_ticks_per_second();
        let mut s = String::from("\"threads\":[");
        let mut first = true;
        for (tid, now) in &self.0 {
            let before = earlier.0.get(tid).cloned().unwrap_or_default();
            let (v, nv, t) = (
                now.voluntary.saturating_sub(before.voluntary),
                now.involuntary.saturating_sub(before.involuntary),
                now.ticks.saturating_sub(before.ticks),
            );
            if v == 0 && nv == 0 && t == 0 {
                continue;
            }
            if !first {
                s.push(',');
            }
            first = false;
            let name: String = now
                .name
                .chars()
                .filter(|c| !matches!(c, '"' | '\\') && !c.is_control())
                .collect();
            let _ = write!(
                s,
                "{{\"name\":\"{name}\",\"tid\":{tid},\"vcs\":{v},\"nvcs\":{nv},\"cpu_ms\":{:.0},\"cpu\":{}}}",
                t as f64 * tick_ms,
                now.cpu
            );
        }
        s.push(']');
        s
    }
}

/// The CPU the calling thread runs on now (`sched_getcpu`), -1 where it cannot be told.
pub fn current_cpu() -> i32 {
    // SAFETY: sched_getcpu takes no arguments and only reads the calling thread's state.
    unsafe { libc::sched_getcpu() }
}

/// `BENCH_PIN_MAIN_CPU=N`: pins the calling thread, and only it (threads started before keep
/// their CPUs, as the driver's own do), to CPU N ([`pin_to`]), to measure how the CPU of the
/// thread that launches and spins changes the rows. Exits with a message on a bad value.
pub fn pin_from_env() {
    let Ok(v) = std::env::var("BENCH_PIN_MAIN_CPU") else {
        return;
    };
    let pinned = v.parse().ok().filter(|&cpu| pin_to(cpu));
    if pinned.is_none() {
        crate::die(&format!(
            "BENCH_PIN_MAIN_CPU={v}: not a CPU this process may run on"
        ));
    }
}

/// Pins the calling thread to CPU `cpu`; false if the CPU is out of range or not allowed.
pub fn pin_to(cpu: usize) -> bool {
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return false;
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it (cpu is in range,
    // checked above); sched_setaffinity(0, ..) reads the set for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The clock tick rate of `/proc` times: USER_HZ, which Linux fixes at 100 on x86_64.
fn clock_ticks_per_second() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_a_stat_line_whose_name_holds_spaces_and_parentheses() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t17\nnonvoluntary_ctxt_switches:\t4\n";
        assert_eq!(switches(status), (17, 4));
        // Fields 3.. after the name: state, then 4..13, utime (14) = 7, stime (15) = 5, ...,
        // processor (39) = 11.
        let mut fields: Vec<String> = (3..=52).map(|k| format!("{}", k * 1000)).collect();
        fields[0] = "R".into();
        fields[14 - 3] = "7".into();
        fields[15 - 3] = "5".into();
        fields[39 - 3] = "11".into();
        let line = format!("1234 (a (b) c) {}", fields.join(" "));
        assert_eq!(stat_fields(&line), (12, 11));
        assert_eq!(stat_fields("garbage"), (0, -1));
    }

    #[test]
    fn reports_this_threads_work() {
        let before = Threads::snapshot();
        assert!(!before.0.is_empty(), "/proc/self/task is readable on Linux");
        // Busy for 60 ms of CPU time, then a voluntary switch.
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_millis(60) {
            std::hint::black_box(0u64);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        let after = Threads::snapshot();
        let json = after.since(&before);
        assert!(
            json.starts_with("\"threads\":[") && json.ends_with(']'),
            "{json}"
        );
        let me = this_tid();
        let mine = after.0.get(&me).expect("this thread is listed");
        assert!(mine.voluntary > before.0[&me].voluntary, "{json}");
        assert!(json.contains(&format!("\"tid\":{me},")), "{json}");
    }

    #[test]
    fn a_pinned_thread_runs_on_its_cpu_and_a_bad_cpu_is_refused() {
        std::thread::spawn(|| {
            // The highest CPU this process may use (the affinity mask may have holes).
            // SAFETY: sched_getaffinity(0, ..) fills the zeroed set for the calling thread.
            let allowed = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                assert_eq!(
                    libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
                    0
                );
                (0..libc::CPU_SETSIZE as usize)
                    .rev()
                    .find(|&c| libc::CPU_ISSET(c, &set))
                    .expect("some CPU is allowed")
            };
            assert!(pin_to(allowed));
            std::thread::yield_now();
            assert_eq!(current_cpu(), allowed as i32);
            assert!(!pin_to(1 << 20));
        })
        .join()
        .unwrap();
    }

    /// This thread's id, from `/proc/thread-self`.
    fn this_tid() -> u64 {
        std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok())
            .expect("/proc/thread-self names this thread")
    }
}
