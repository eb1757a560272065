//! The GPU tests of this crate cannot hang the suite: every one runs under
//! `ferrocuda_test_support::deadline`, and none waits for the GPU without a bound. Checked on
//! their source, so that it holds on machines without a GPU (where they are not even compiled).

/// The GPU test files, by name.
const GPU_TESTS: &[(&str, &str)] = &[
    ("gpu_kernels.rs", include_str!("gpu_kernels.rs")),
    ("gpu_fused_gates.rs", include_str!("gpu_fused_gates.rs")),
];

/// The name and the first statement of every `#[test]` function in `source`.
fn tests(source: &str) -> Vec<(&str, &str)> {
    source
        .split("#[test]")
        .skip(1)
        .map(|chunk| {
            let after_fn = chunk
                .split_once("fn ")
                .expect("a #[test] attribute is followed by a function")
                .1;
            let name = after_fn.split('(').next().unwrap_or_default();
            let body = after_fn.split_once('{').map_or("", |(_, b)| b);
            (name, body.trim_start())
        })
        .collect()
}

#[test]
fn every_gpu_test_runs_under_a_deadline() {
    for (file, source) in GPU_TESTS {
        let found = tests(source);
        assert!(!found.is_empty(), "{file}: no tests found");
        for (name, body) in found {
            assert!(
                body.starts_with("deadline("),
                "{file}: `{name}` does not run its body under `deadline(..)`"
            );
        }
    }
}

#[test]
fn no_gpu_test_waits_without_a_bound() {
    for (file, source) in GPU_TESTS {
        for (line, text) in source.lines().enumerate() {
            assert!(
                !text.contains(".synchronize()"),
                "{file}:{}: an unbounded synchronize; use `synchronize_timeout`",
                line + 1
            );
        }
    }
}

#[test]
fn the_parser_sees_a_test_without_a_deadline() {
    let source = "#[test]\nfn bare() {\n    let g = gpu();\n}\n#[test]\nfn bounded() {\n    deadline(SEC, || {});\n}\n";
    assert_eq!(
        tests(source),
        [
            ("bare", "let g = gpu();\n}\n"),
            ("bounded", "deadline(SEC, || {});\n}\n")
        ]
    );
}
