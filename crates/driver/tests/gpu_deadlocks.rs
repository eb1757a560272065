//! No hidden deadlocks (docs/deadlocks.md): nothing the crate does on the user's thread waits
//! behind a stream that waits on a host value. Each test has a deadline that fails it.
#![cfg(feature = "gpu-tests")]

mod common;

use common::{TEST_PTX, deadline, device, kernels, slack};
use ferrocuda_driver::{
    CompletionFlag, DeviceEvent, Error, HostBuffer, LaunchArgs, LaunchConfig, Module,
};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

/// One thread: a stream waits on a flag; the same thread then drops a device buffer, a host
/// buffer, another flag, a module, an event and a stream, and loads a module through the crate;
/// then it signals. Everything returns at once and the wait passes, all within 1 s.
fn drop_everything_while_waiting(streams: usize) {
    let d = device();
    let k = kernels(&d);
    let waiting: Vec<_> = (0..streams).map(|_| d.new_stream().unwrap()).collect();
    let flags: Vec<_> = (0..streams)
        .map(|_| CompletionFlag::new(&d).unwrap())
        .collect();
    let acks: Vec<_> = (0..streams)
        .map(|_| CompletionFlag::new(&d).unwrap())
        .collect();
    // Resources made and used before the waits exist.
    let other = d.new_stream().unwrap();
    let buf = other.alloc_zeroed::<u32>(1 << 20).unwrap();
    let n = 1u32 << 20;
    // SAFETY: add_u32(u32*, u32, u32) over the buffer's 2^20 elements.
    unsafe {
        other.launch(
            &k.add_u32,
            LaunchConfig::for_num_elems(n, 256),
            LaunchArgs::new().arg(&buf).arg(&n).arg(&1u32),
        )
    }
    .unwrap();
    let host = HostBuffer::<u64>::new(&d, 1 << 16).unwrap();
    let spare_flag = CompletionFlag::new(&d).unwrap();
    let spare_module = Module::from_ptx(&d, TEST_PTX).unwrap();
    let event = DeviceEvent::new(&d, true).unwrap();
    other.record_event(&event).unwrap();

    let t = Instant::now();
    for ((s, f), a) in waiting.iter().zip(&flags).zip(&acks) {
        s.wait_for_host_value_ge(f, 1).unwrap();
        k.launch_ack(s, a.as_flag_ref(), 1);
    }
    drop(buf);
    drop(host);
    drop(spare_flag);
    drop(spare_module);
    drop(event);
    drop(other);
    let fresh = d.new_stream().unwrap();
    drop(fresh);
    // Loading code blocks in the driver while a wait is pending (measured on an H200): the
    // crate gives up in time instead of hanging, and unloads the late module once the wait has
    // passed.
    let load = Module::from_ptx_timeout(&d, TEST_PTX, Duration::from_millis(100));
    assert!(
        matches!(load, Err(Error::Timeout { .. })),
        "a module load behind a pending wait: {:?}",
        load.map(drop)
    );
    let before_signal = t.elapsed();
    assert!(
        before_signal < Duration::from_millis(500) * slack(),
        "drops took {before_signal:?}"
    );
    for f in &flags {
        f.signal(1);
    }
    for (s, a) in waiting.iter().zip(&acks) {
        a.wait(ferrocuda_driver::WaitCondition::Equal, 1, SEC * slack())
            .unwrap();
        s.synchronize_timeout(SEC * slack()).unwrap();
    }
    let total = t.elapsed();
    println!("{streams} stream(s): drops {before_signal:?}, all done {total:?}");
    assert!(total < SEC * slack(), "took {total:?}");
    ferrocuda_driver::wait_for_releases(5 * SEC).unwrap();
}

#[test]
fn one_thread_drops_everything_while_its_stream_waits() {
    deadline(20 * SEC, || drop_everything_while_waiting(1));
}

#[test]
fn ten_streams_waiting_on_ten_flags() {
    deadline(20 * SEC, || drop_everything_while_waiting(10));
}

/// Abandoned wait: a child process enqueues a wait nobody signals, drops the flag, the stream and
/// the last `Device` handle, and returns from main. It must exit on its own within 1 s of saying
/// so (device start-up before that is not measured).
#[test]
fn abandoned_wait_lets_the_process_exit() {
    if std::env::var_os("FERROCUDA_ABANDON_CHILD").is_some() {
        let d = device();
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let buf = s.alloc::<u8>(1 << 20).unwrap();
        s.wait_for_host_value_ge(&flag, 1).unwrap();
        drop(buf);
        drop(flag);
        drop(s);
        drop(d);
        println!("child: dropped everything");
        return;
    }
    deadline(30 * SEC, || {
        use std::io::BufRead;
        let exe = std::env::current_exe().unwrap();
        let mut child = std::process::Command::new(exe)
            .args([
                "--exact",
                "abandoned_wait_lets_the_process_exit",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FERROCUDA_ABANDON_CHILD", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait (device start-up included) until the child has dropped everything...
        let out = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        let start = Instant::now();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("child: dropped everything") => break,
                Some(_) => assert!(start.elapsed() < 20 * SEC, "the child never got there"),
                None => panic!("the child ended before dropping everything"),
            }
        }
        // ... then it must be gone within 1 s.
        let t = Instant::now();
        let limit = SEC * slack();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                println!(
                    "child exited with {status} {:?} after dropping",
                    t.elapsed()
                );
                assert!(status.success());
                break;
            }
            if t.elapsed() > limit {
                let _ = child.kill();
                panic!("the child with an abandoned wait did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

/// After a module load gave up behind a pending wait, the driver holds back other calls until
/// the load returns: the crate's operations fail with a typed error at once (within its 50 ms
/// grace) instead of blocking the thread that is to signal; the signal itself needs no driver
/// call; once the wait passed and the load returned, everything works again.
#[test]
fn operations_after_a_stuck_module_load_fail_fast_instead_of_blocking() {
    deadline(60 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let s = d.new_stream().unwrap();
        let gate = CompletionFlag::new(&d).unwrap();
        let ack = CompletionFlag::new(&d).unwrap();
        let buf = s.alloc::<u8>(1 << 20).unwrap();
        let event = DeviceEvent::new(&d, false).unwrap();
        s.wait_for_host_value_ge(&gate, 1).unwrap();
        k.launch_ack(&s, ack.as_flag_ref(), 1);
        let load = Module::from_ptx_timeout(&d, TEST_PTX, Duration::from_millis(200));
        assert!(
            matches!(load, Err(Error::Timeout { .. })),
            "{:?}",
            load.map(drop)
        );
        assert!(
            ferrocuda_driver::driver_held(),
            "the loader is still inside the driver"
        );
        let t = Instant::now();
        let r = HostBuffer::<u8>::new(&d, 4096);
        let took = t.elapsed();
        assert!(
            matches!(
                r,
                Err(Error::DriverHeld {
                    op: "HostBuffer::new"
                })
            ),
            "{:?}",
            r.map(drop)
        );
        assert!(
            took < Duration::from_millis(500) * slack(),
            "refused after {took:?}"
        );
        let r = d.new_stream();
        assert!(
            matches!(r, Err(Error::DriverHeld { .. })),
            "{:?}",
            r.map(drop)
        );
        // Drops during the hold hand their releases over instead of calling the driver.
        let t = Instant::now();
        drop(buf);
        drop(event);
        assert!(
            t.elapsed() < Duration::from_millis(100) * slack(),
            "a drop blocked"
        );
        gate.signal(1);
        ack.wait(
            ferrocuda_driver::WaitCondition::Equal,
            1,
            10 * SEC * slack(),
        )
        .unwrap();
        let t = Instant::now();
        while ferrocuda_driver::driver_held() {
            assert!(t.elapsed() < 10 * SEC * slack(), "the load never returned");
            std::thread::sleep(Duration::from_millis(1));
        }
        println!("the stuck load returned {:?} after the signal", t.elapsed());
        let hb = HostBuffer::<u8>::new(&d, 4096).unwrap();
        drop(hb);
        s.synchronize_timeout(10 * SEC * slack()).unwrap();
        ferrocuda_driver::wait_for_releases(10 * SEC * slack()).unwrap();
    });
}

/// 100,000 create/use/drop cycles of device buffers and flags with waits in between; device
/// memory in use and the crate's pinned allocations return to their starting level.
#[test]
fn create_use_drop_cycles_leak_nothing() {
    deadline(240 * SEC, || {
        let d = device();
        let s = d.new_stream().unwrap();
        let gate = CompletionFlag::new(&d).unwrap();
        // Warm up the pools so that the baseline includes them.
        drop(s.alloc::<u8>(4096).unwrap());
        ferrocuda_driver::wait_for_releases(5 * SEC).unwrap();
        s.synchronize().unwrap();
        d.trim_memory_pool(0).unwrap();
        let (free0, _) = d.memory_info().unwrap();
        let flags0 = CompletionFlag::live_count();
        let pinned0 = ferrocuda_driver::pinned_bytes() - CompletionFlag::pool_slabs() * 4096;
        let t = Instant::now();
        // Under compute-sanitizer (20x slower) fewer cycles prove the same.
        let cycles = if slack() > 1 { 2_000 } else { 100_000u64 };
        for i in 1..=cycles {
            let buf = s.alloc::<u32>(256).unwrap();
            let f = CompletionFlag::new(&d).unwrap();
            s.wait_for_host_value_ge(&gate, i).unwrap();
            s.write_host_value(&f, i).unwrap();
            gate.signal(i);
            drop(buf);
            drop(f);
            if i % 10 == 0 {
                let hb = HostBuffer::<u8>::new(&d, 4096).unwrap();
                drop(hb);
            }
            if i % 10_000 == 0 {
                s.synchronize_timeout(10 * SEC).unwrap();
            }
        }
        s.synchronize_timeout(10 * SEC).unwrap();
        ferrocuda_driver::wait_for_releases(30 * SEC).unwrap();
        s.synchronize().unwrap();
        d.trim_memory_pool(0).unwrap();
        let (free1, _) = d.memory_info().unwrap();
        let pinned1 = ferrocuda_driver::pinned_bytes() - CompletionFlag::pool_slabs() * 4096;
        println!(
            "{cycles} cycles in {:?}: free device memory {} -> {} MiB, live flags {} -> {}, flag slabs {}, pinned (non-pool) {} -> {}",
            t.elapsed(),
            free0 >> 20,
            free1 >> 20,
            flags0,
            CompletionFlag::live_count(),
            CompletionFlag::pool_slabs(),
            pinned0,
            pinned1
        );
        assert_eq!(CompletionFlag::live_count(), flags0);
        assert_eq!(pinned1, pinned0);
        // Slots come back once the reclaimer's fence passes (it polls every 20 µs to 1 ms), so a
        // tight loop holds a few hundred at most; 100k flags without reuse would be 1,563 slabs.
        assert!(
            CompletionFlag::pool_slabs() <= 32,
            "flag slots are not reused: {} slabs",
            CompletionFlag::pool_slabs()
        );
        assert!(
            free1 + (4 << 20) >= free0,
            "device memory leaked: {free0} -> {free1}"
        );
    });
}
