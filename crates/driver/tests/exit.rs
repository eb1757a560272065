//! The crate's calls made while the process exits (its exit handler waits for releases in
//! progress): they must work after the main thread's thread-locals are gone, in debug builds too,
//! where the lock-order checks keep a thread-local record. Needs no GPU.
//!
//! A test without libtest's harness (`harness = false`): libtest runs tests on threads of its own,
//! and what is checked here happens on the main thread, during `exit`. The binary runs itself as a
//! child with [`CHILD`] set; the child uses the crate on the main thread, registers an exit handler
//! that calls it again, and returns from `main`.

use std::process::Command;
use std::time::Duration;

const CHILD: &str = "FERROCUDA_EXIT_TEST_CHILD";

extern "C" fn at_exit() {
    // What the crate's own exit handler does first.
    let _ = ferrocuda_driver::wait_for_releases(Duration::from_millis(50));
}

unsafe extern "C" {
    fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        // The main thread takes the crate's locks (and so fills its thread-local records) before
        // exit, as the main thread of a program that used a GPU has.
        ferrocuda_driver::wait_for_releases(Duration::from_millis(10)).unwrap();
        // SAFETY: `at_exit` is a plain extern "C" fn with no precondition.
        assert_eq!(unsafe { atexit(at_exit) }, 0);
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "the child exited with {:?}:\n{stderr}",
        out.status
    );
    println!("test waiting_for_releases_works_while_the_process_exits ... ok");
}
