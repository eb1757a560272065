//! (Copy of crates/kernels/src/source_hash.rs, see xtask/src/sass.rs.)
//!
//! How the cubins are built, and the fingerprint of the CUDA sources that
//! `prebuilt/manifest.txt` records.
//!
//! One implementation, compiled into three places: `build.rs` (to decide whether the prebuilt
//! cubins match the sources, and to run nvcc when they do not), `cargo xtask kernels` (which
//! writes `prebuilt/`) and this crate's unit tests (which fail when the manifest is stale).

use std::path::Path;

/// The kernel sources, `cuda/<name>.cu`, one cubin each (`prebuilt/<name>.cubin`).
pub const KERNELS: &[&str] = &["copy2d", "transpose", "row_sum", "gated"];

/// The nvcc flags for every cubin (plus `-I cuda/include -o <name>.cubin cuda/<name>.cu`).
/// `-Xptxas -v` makes ptxas report registers, shared memory, stack and spills per kernel.
pub const NVCC_FLAGS: &[&str] = &[
    "-gencode=arch=compute_90a,code=sm_90a",
    "-O3",
    "--cubin",
    "-std=c++17",
    "-Xptxas",
    "-v",
];

/// FNV-1a, 64 bits.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The `.cu`/`.cuh` files under `dir`, as sorted paths relative to it (`/`-separated).
fn sources(dir: &Path, rel: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel_name = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if entry.file_type()?.is_dir() {
            sources(&entry.path(), &rel_name, out)?;
        } else if name.ends_with(".cu") || name.ends_with(".cuh") {
            out.push(rel_name);
        }
    }
    Ok(())
}

/// FNV-1a over every source file's relative path and contents, in path order: any edit,
/// addition, removal or rename under `cuda_dir` changes it.
pub fn fingerprint(cuda_dir: &Path) -> std::io::Result<u64> {
    let mut files = Vec::new();
    sources(cuda_dir, "", &mut files)?;
    files.sort();
    let mut h = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        h = fnv1a(h, f.as_bytes());
        h = fnv1a(h, &[0]);
        h = fnv1a(h, &std::fs::read(cuda_dir.join(f))?);
        h = fnv1a(h, &[0]);
    }
    Ok(h)
}

/// The manifest line that records `fingerprint`.
pub fn manifest_line(fingerprint: u64) -> String {
    format!("sources fnv1a64:{fingerprint:016x}")
}
