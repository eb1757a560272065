//! Keep-alive of device buffers used on a stream other than their home stream (the one they were
//! allocated on), checked by the fake driver's use-after-free detector: a buffer dropped while
//! another stream still has work on it queued must stay allocated until that work has run.
#![cfg(feature = "fake-tests")]

use ferrocuda_driver::CompletionFlag;
use ferrocuda_test_support::deadline;
use ferrocuda_tests::fake;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// `copy_dtod` records the use on the other stream, so the drop waits for it.
#[test]
fn buffer_dropped_while_a_dtod_copy_on_another_stream_waits_stays_alive() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let before = fake::violations();
        let (home, other) = (d.new_stream().unwrap(), d.new_stream().unwrap());
        let gate = CompletionFlag::new(&d).unwrap();
        let mut buf = home.alloc_zeroed::<u64>(512).unwrap();
        let src = other.clone_htod(&[7u64; 512]).unwrap();
        home.synchronize().unwrap();
        other.wait_for_host_value_ge(&gate, 1).unwrap();
        other.copy_dtod(&src, &mut buf).unwrap();
        drop(buf);
        gate.signal(1);
        other.synchronize().unwrap();
        assert_eq!(fake::violations(), before, "the copy touched freed memory");
    });
}

/// `copy_htod` on a stream other than the buffer's home records the use (through the use path),
/// so the drop does not free the buffer in the home stream's order before the copy has run. (On
/// code without that, the copy wrote freed memory and the fake reported a use after free.)
#[test]
fn buffer_dropped_while_an_htod_copy_on_another_stream_waits_stays_alive() {
    deadline(30 * SEC, || {
        let d = fake::device();
        let before = fake::violations();
        let (home, other) = (d.new_stream().unwrap(), d.new_stream().unwrap());
        let gate = CompletionFlag::new(&d).unwrap();
        let mut buf = home.alloc_zeroed::<u64>(512).unwrap();
        home.synchronize().unwrap();
        other.wait_for_host_value_ge(&gate, 1).unwrap();
        other.copy_htod(&[7u64; 512], &mut buf).unwrap();
        drop(buf);
        gate.signal(1);
        other.synchronize().unwrap();
        assert_eq!(fake::violations(), before, "the copy touched freed memory");
    });
}
