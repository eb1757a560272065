//! Helpers shared by ferrocuda's GPU tests (dev-dependency only).
//!
//! A GPU test can hang: a stream that waits on a host value nobody signals holds back every later
//! operation, and some driver calls do not return while it waits (docs/deadlocks.md). Every such
//! test body runs under [`deadline`], which fails the test instead of hanging the suite. When it
//! fires, it says where the body was: the last [`mark`] the body thread left, and the state of
//! every thread of the process (on Linux: the kernel function and the system call each one sleeps
//! in, so a wait inside the CUDA driver, `ioctl`, tells itself apart from one on a lock, `futex`).
//!
//! ```
//! use ferrocuda_test_support::{deadline, mark};
//! use std::time::Duration;
//! let sum = deadline(Duration::from_secs(5), || {
//!     let mut sum = 0u64;
//!     for step in 1..=100u64 {
//!         mark("adding", step);
//!         sum += step;
//!     }
//!     sum
//! });
//! assert_eq!(sum, 5050);
//! ```
#![deny(missing_docs)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

/// The last mark each thread left: what it was doing and at which step.
static MARKS: Mutex<Option<HashMap<ThreadId, (&'static str, u64)>>> = Mutex::new(None);

/// How much slower than normal the test runs: 20 under compute-sanitizer (the GPU bundle sets
/// `FERROCUDA_SANITIZER=1` there), else 1. [`deadline`] multiplies its limit by it.
pub fn slack() -> u32 {
    if std::env::var_os("FERROCUDA_SANITIZER").is_some() {
        20
    } else {
        1
    }
}

/// Notes what the calling thread is about to do (`what`, at step `step`). Cheap (one uncontended
/// lock): call it before each call that might block. [`deadline`] reports the body thread's last
/// mark when the body overruns.
pub fn mark(what: &'static str, step: u64) {
    let mut m = MARKS.lock().unwrap_or_else(PoisonError::into_inner);
    m.get_or_insert_with(HashMap::new)
        .insert(std::thread::current().id(), (what, step));
}

/// The last mark of thread `id`, as text.
fn last_mark(id: ThreadId) -> String {
    let m = MARKS.lock().unwrap_or_else(PoisonError::into_inner);
    match m.as_ref().and_then(|m| m.get(&id)) {
        Some((what, step)) => format!("{what} (step {step})"),
        None => "none (the body called mark() never)".to_string(),
    }
}

/// Runs `body` on its own thread and fails the test if it has not finished within `limit` times
/// [`slack`]. A panic of the body is the test's panic. On overrun the panic message names the
/// body's last [`mark`] and [`thread_report`] is printed to stderr; the body thread is left
/// behind (nothing can stop a thread stuck in a driver call).
///
/// # Panics
///
/// When the body panics or overruns.
pub fn deadline<T: Send + 'static>(
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let limit = limit * slack();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::Builder::new()
        .name("test-body".into())
        .spawn(move || {
            let _ = tx.send(body());
        })
        .expect("spawn the test body's thread");
    let id = h.thread().id();
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = h.join();
            // The body's thread is gone: forget its mark.
            if let Some(m) = MARKS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
            {
                m.remove(&id);
            }
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!("{}", thread_report());
            panic!(
                "test body did not finish within {limit:?} (hang?); its last mark: {}",
                last_mark(id)
            )
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("body returned without sending"),
        },
    }
}

/// One line per thread of this process: id, name, scheduler state, the kernel function it sleeps
/// in (`wchan`) and its current system call, from `/proc/self/task` (Linux; elsewhere a line
/// saying it is not available).
pub fn thread_report() -> String {
    let mut out = String::from("threads of this process (tid name state wchan syscall):\n");
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        out.push_str("  /proc/self/task is not available here\n");
        return out;
    };
    let mut tids: Vec<_> = tasks
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    tids.sort_unstable();
    for tid in tids {
        let read = |f: &str| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/{f}"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        // stat: "tid (comm) S ...": the state follows the last ')'.
        let stat = read("stat");
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        let syscall = read("syscall");
        let _ = writeln!(
            out,
            "  {tid} {} {state} {} {}",
            read("comm"),
            read("wchan"),
            syscall_name(&syscall)
        );
    }
    out
}

/// `/proc/.../syscall`'s first field (a number, `running` or `-1`) as a name where it is one of
/// the calls a hung GPU test sleeps in (x86_64 numbering).
fn syscall_name(syscall: &str) -> String {
    let first = syscall.split_whitespace().next().unwrap_or("?");
    let name = match (cfg!(target_arch = "x86_64"), first) {
        (true, "0") => "read",
        (true, "7") => "poll",
        (true, "16") => "ioctl",
        (true, "23") => "select",
        (true, "35") => "nanosleep",
        (true, "202") => "futex",
        (true, "230") => "clock_nanosleep",
        (true, "232") => "epoll_wait",
        (true, "270") => "pselect6",
        (true, "271") => "ppoll",
        (true, "281") => "epoll_pwait",
        _ => return first.to_string(),
    };
    name.to_string()
}

/// CPU time (user + system) of this process's threads whose name starts with `prefix`, in clock
/// ticks of 10 ms, read from `/proc/self/task/*/stat` (0 where there is no `/proc`). Thread names
/// are cut to 15 bytes there: the crate's waiter is `ferrocuda-waite`, its workers
/// `ferrocuda-worke`.
pub fn thread_cpu_ticks(prefix: &str) -> u64 {
    let mut ticks = 0;
    for e in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime and stime are the 12th
        // and 13th.
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn deadline_returns_the_body_value() {
        assert_eq!(deadline(Duration::from_secs(5), || 7), 7);
    }

    #[test]
    fn deadline_passes_the_body_panic_on() {
        let r = std::panic::catch_unwind(|| deadline(Duration::from_secs(5), || panic!("boom")));
        let p = r.expect_err("the body panicked");
        assert_eq!(p.downcast_ref::<&str>(), Some(&"boom"));
    }

    #[test]
    fn overrun_names_the_last_mark() {
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| {
            deadline(Duration::from_millis(100), || {
                mark("waiting for a signal that never comes", 41);
                std::thread::sleep(Duration::from_secs(2));
            })
        });
        let p = r.expect_err("the body overran");
        let msg = p.downcast_ref::<String>().expect("a formatted message");
        assert!(
            msg.contains("waiting for a signal that never comes (step 41)"),
            "{msg}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "did not wait for the body"
        );
    }

    #[test]
    fn overrun_without_a_mark_says_so() {
        let r = std::panic::catch_unwind(|| {
            deadline(Duration::from_millis(50), || {
                std::thread::sleep(Duration::from_millis(500))
            })
        });
        let msg = r.expect_err("overran").downcast_ref::<String>().cloned();
        assert!(msg.expect("a message").contains("never"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn thread_report_lists_a_sleeping_thread_in_its_system_call() {
        let (tx, rx) = mpsc::channel::<()>();
        let h = std::thread::Builder::new()
            .name("sleeper".into())
            .spawn(move || {
                let _ = rx.recv(); // sleeps in futex
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let report = thread_report();
        let line = report
            .lines()
            .find(|l| l.contains(" sleeper "))
            .unwrap_or_else(|| panic!("no sleeper in\n{report}"));
        assert!(line.contains(" S "), "{line}");
        if cfg!(target_arch = "x86_64") {
            assert!(line.ends_with("futex"), "{line}");
        }
        drop(tx);
        h.join().unwrap();
    }

    #[test]
    fn syscall_names() {
        assert_eq!(syscall_name("running"), "running");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(syscall_name("16 0x3 0xc0 0x7ffd"), "ioctl");
            assert_eq!(syscall_name("202 0x7f 0x80 0x0"), "futex");
        }
    }
}
