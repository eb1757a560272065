//! ferrocuda-graph reports its own argument errors as its own variants, not as driver failures:
//! a caller that matches `Error::Driver` to handle CUDA failures must not catch a misuse of the
//! builder there.
#![cfg(feature = "fake-tests")]

use ferrocuda_graph::{Error, Graph};
use ferrocuda_test_support::deadline;
use ferrocuda_tests::fake;
use std::time::Duration;

#[test]
fn memset_of_wide_elements_is_an_invalid_argument_of_the_graph() {
    deadline(Duration::from_secs(30), || {
        let d = fake::device();
        let s = d.new_stream().unwrap();
        let buf = s.alloc_zeroed::<u64>(16).unwrap();
        let mut g = Graph::new(&d).unwrap();
        let r = g.memset_u32(&buf, 7, &[]);
        assert!(
            matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("8-byte")),
            "{r:?}"
        );
    });
}

#[test]
fn a_copy_between_buffers_of_other_lengths_is_a_length_mismatch_of_the_graph() {
    deadline(Duration::from_secs(30), || {
        let d = fake::device();
        let s = d.new_stream().unwrap();
        let (a, b) = (
            s.alloc_zeroed::<u32>(16).unwrap(),
            s.alloc_zeroed::<u32>(17).unwrap(),
        );
        let mut g = Graph::new(&d).unwrap();
        let r = g.copy_dtod(&a, &b, &[]);
        assert!(
            matches!(
                r,
                Err(Error::LengthMismatch {
                    what: "copy_dtod",
                    expected: 17,
                    actual: 16
                })
            ),
            "{r:?}"
        );
    });
}
