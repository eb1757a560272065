//! Gate strategies (driver wait, polling kernel): later work never runs before the signal and
//! always after it; 10,000 gated steps; release by abort; a polling gate's time limit reported.
#![cfg(feature = "gpu-tests")]

mod common;

use common::{deadline, device, kernels, mark};
use ferrocuda_driver::{CompletionFlag, Error, GateStrategy, WaitCondition};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const STRATEGIES: [GateStrategy; 3] = [
    GateStrategy::DriverWait,
    GateStrategy::Polling { timeout: None },
    GateStrategy::Polling {
        timeout: Some(Duration::from_secs(10)),
    },
];

/// MAX's gate test, for every strategy and condition: the ack kernel behind the gate has not run
/// 30 ms after it was enqueued, nor after a non-matching value; it runs once the value is signalled.
#[test]
fn gated_work_runs_after_and_never_before_the_signal() {
    deadline(30 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let s = d.new_stream().unwrap();
        let ack = CompletionFlag::new(&d).unwrap();
        let mut round = 0u64;
        for strategy in STRATEGIES {
            for cond in [WaitCondition::Equal, WaitCondition::GreaterOrEqual] {
                round += 10;
                let flag = CompletionFlag::new(&d).unwrap();
                s.wait_value(flag.as_flag_ref(), round, cond, strategy)
                    .unwrap();
                k.launch_ack(&s, ack.as_flag_ref(), round);
                std::thread::sleep(Duration::from_millis(30));
                assert_ne!(
                    ack.load(),
                    round,
                    "{strategy:?} {cond:?}: ran before the signal"
                );
                flag.signal(round - 1); // below: releases neither condition
                std::thread::sleep(Duration::from_millis(10));
                assert_ne!(
                    ack.load(),
                    round,
                    "{strategy:?} {cond:?}: ran on a smaller value"
                );
                flag.signal(round);
                ack.wait(WaitCondition::Equal, round, 2 * SEC).unwrap();
                s.synchronize().unwrap();
            }
        }
    });
}

/// 10,000 gated steps per strategy: signal step i, the gate releases the ack of step i.
#[test]
fn ten_thousand_gated_steps() {
    deadline(60 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let s = d.new_stream().unwrap();
        for strategy in [
            GateStrategy::DriverWait,
            GateStrategy::Polling { timeout: None },
        ] {
            let flag = CompletionFlag::new(&d).unwrap();
            let ack = CompletionFlag::new(&d).unwrap();
            let t = Instant::now();
            for i in 1..=10_000u64 {
                mark("enqueue the gate", i);
                s.wait_value(
                    flag.as_flag_ref(),
                    i,
                    WaitCondition::GreaterOrEqual,
                    strategy,
                )
                .unwrap();
                mark("launch the ack", i);
                k.launch_ack(&s, ack.as_flag_ref(), i);
                mark("signal", i);
                flag.signal(i);
                mark("wait for the ack", i);
                assert_eq!(ack.wait(WaitCondition::Equal, i, 2 * SEC).unwrap(), i);
            }
            mark("synchronize after the last step", 10_000);
            s.synchronize().unwrap();
            println!("{strategy:?}: 10,000 gated steps in {:?}", t.elapsed());
        }
    });
}

/// `abort()` releases greater-or-equal waits of both strategies (and equality polling gates).
#[test]
fn abort_releases_waiting_gates() {
    deadline(30 * SEC, || {
        let d = device();
        let k = kernels(&d);
        for (strategy, cond) in [
            (GateStrategy::DriverWait, WaitCondition::GreaterOrEqual),
            (
                GateStrategy::Polling { timeout: None },
                WaitCondition::GreaterOrEqual,
            ),
            (
                GateStrategy::Polling { timeout: None },
                WaitCondition::Equal,
            ),
        ] {
            let s = d.new_stream().unwrap();
            let flag = CompletionFlag::new(&d).unwrap();
            let ack = CompletionFlag::new(&d).unwrap();
            s.wait_value(flag.as_flag_ref(), 5, cond, strategy).unwrap();
            k.launch_ack(&s, ack.as_flag_ref(), 1);
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(ack.load(), 0);
            flag.abort();
            ack.wait(WaitCondition::Equal, 1, 2 * SEC).unwrap();
            s.synchronize().unwrap();
            // Host waits report the abort, whatever the condition.
            assert!(matches!(
                flag.wait(WaitCondition::GreaterOrEqual, 5, SEC),
                Err(Error::Aborted)
            ));
            assert!(matches!(
                flag.wait(WaitCondition::Equal, 5, SEC),
                Err(Error::Aborted)
            ));
        }
    });
}

/// A polling gate with a 2 ms limit on a flag nobody signals: the work after it runs, and the
/// next synchronize reports the expiry once.
#[test]
fn expired_polling_gate_is_reported() {
    deadline(30 * SEC, || {
        let d = device();
        let k = kernels(&d);
        let s = d.new_stream().unwrap();
        let flag = CompletionFlag::new(&d).unwrap();
        let ack = CompletionFlag::new(&d).unwrap();
        let t = Instant::now();
        s.wait_value(
            &flag,
            1,
            WaitCondition::GreaterOrEqual,
            GateStrategy::Polling {
                timeout: Some(Duration::from_millis(2)),
            },
        )
        .unwrap();
        k.launch_ack(&s, ack.as_flag_ref(), 3);
        ack.wait(WaitCondition::Equal, 3, 5 * SEC).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(2),
            "the gate gave up too early"
        );
        match s.synchronize() {
            Err(Error::GateExpired { count: 1 }) => {}
            other => panic!("expected GateExpired, got {other:?}"),
        }
        s.synchronize().unwrap(); // reported once
        // A gate signalled in time does not count.
        s.wait_value(
            &flag,
            1,
            WaitCondition::GreaterOrEqual,
            GateStrategy::Polling {
                timeout: Some(Duration::from_secs(5)),
            },
        )
        .unwrap();
        flag.signal(1);
        s.synchronize_timeout(5 * SEC).unwrap();
    });
}
