//! The driver's two sides: the runtime side (`src/runtime/`) never imports the api side.
//!
//! Runs on any machine (it reads the sources). A runtime module that needs something of the api
//! side takes a raw handle or a narrow trait the api side implements instead (see
//! `src/runtime/mod.rs`).

use std::path::{Path, PathBuf};

/// What a runtime module may name with a `crate::` path: the runtime side, the shared error
/// type, and the raw bindings.
const ALLOWED: &[&str] = &["runtime", "error", "Error", "Result", "DriverError", "sys"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("runtime sources are readable") {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The paths of `src` that leave the runtime side, as `line: crate::name`: `crate::name`, and
/// `super::…::name` climbing to the crate root from a module `depth` levels below it. Comments
/// are skipped (doc links may name api types); `{a, b}` groups are split.
fn api_imports(src: &str, depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in src.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut roots: Vec<&str> = Vec::new();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            roots.push(rest);
        }
        let mut rest = code;
        while let Some(i) = rest.find("super::") {
            let from_start = &rest[i..];
            let mut tail = from_start;
            let mut k = 0;
            while let Some(t) = tail.strip_prefix("super::") {
                tail = t;
                k += 1;
            }
            if k >= depth {
                roots.push(tail);
            }
            rest = tail;
        }
        for root in roots {
            let names: Vec<&str> = if let Some(group) = root.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').map(str::trim).collect()
            } else {
                vec![root]
            };
            for name in names {
                let head: String = name
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !head.is_empty() && !ALLOWED.contains(&head.as_str()) {
                    found.push(format!("{}: crate::{head}", n + 1));
                }
            }
        }
    }
    found
}

/// How many modules below the crate root `file` is (`src/runtime/mod.rs`: 1, `src/runtime/park.rs`
/// and `src/runtime/reclaim/mod.rs`: 2, `src/runtime/reclaim/fence.rs`: 3).
fn depth(src: &Path, file: &Path) -> usize {
    let rel = file.strip_prefix(src).expect("under src/");
    let parts = rel.components().count();
    if rel.file_name().is_some_and(|f| f == "mod.rs") {
        parts - 1
    } else {
        parts
    }
}

#[test]
fn the_import_check_sees_api_paths_and_groups() {
    let src = "use crate::runtime::raw;\nuse crate::{error::Result, flag::FlagInner};\n\
               // crate::device in a comment\nlet d = crate::Device::new(0);\n\
               use super::park;\nuse super::super::stream::X;\nuse super::super::{runtime, memory};\n";
    assert_eq!(
        api_imports(src, 2),
        [
            "2: crate::flag",
            "4: crate::Device",
            "6: crate::stream",
            "7: crate::memory"
        ]
    );
    // One level deeper, two climbs stay inside the runtime side.
    assert_eq!(
        api_imports("use super::super::park;", 3),
        Vec::<String>::new()
    );
}

#[test]
fn runtime_never_imports_the_api_side() {
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src_dir.join("runtime"), &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let mut bad = Vec::new();
    for f in files {
        let src = std::fs::read_to_string(&f).expect("a runtime source is readable");
        for hit in api_imports(&src, depth(&src_dir, &f)) {
            bad.push(format!("{}:{hit}", f.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "runtime modules import the api side (move the piece, or pass a raw handle or a \
         narrow trait instead):\n{}",
        bad.join("\n")
    );
}
