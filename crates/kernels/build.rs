//! Provides the sm_90a cubins of `cuda/*.cu` in `OUT_DIR`, for `include_bytes!` in `src/cubins.rs`.
//!
//! 1. On docs.rs (`DOCS_RS` set): empty files; nothing is compiled.
//! 2. When `prebuilt/manifest.txt` records the fingerprint of the current `cuda/` sources (the
//!    published package, and any checkout whose kernels are unchanged): the prebuilt cubins, so no
//!    CUDA toolkit is needed. `FERROCUDA_BUILD_KERNELS=1` compiles anyway.
//! 3. Otherwise nvcc compiles them (`-gencode=arch=compute_90a,code=sm_90a -O3 --cubin -Xptxas -v`),
//!    writing ptxas's register/shared-memory/spill report next to each cubin
//!    (`OUT_DIR/<name>.ptxas.txt`). nvcc is looked for in `NVCC`, `CUDA_PATH/bin`, `PATH`,
//!    `/usr/local/cuda/bin`, then the `.cuda-venv/` that `cargo xtask setup` installs in a
//!    ferrocuda checkout. Without one the build fails and says how to get one.

#[path = "src/source_hash.rs"]
mod source_hash;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: ferrocuda-kernels build script: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    println!("cargo:rerun-if-changed=cuda");
    println!("cargo:rerun-if-changed=prebuilt");
    for var in ["DOCS_RS", "NVCC", "CUDA_PATH", "FERROCUDA_BUILD_KERNELS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env("OUT_DIR")?);

    if std::env::var_os("DOCS_RS").is_some() {
        for k in source_hash::KERNELS {
            write(&out.join(format!("{k}.cubin")), b"")?;
        }
        return Ok(());
    }

    let cuda = manifest_dir.join("cuda");
    let prebuilt = manifest_dir.join("prebuilt");
    let fingerprint = source_hash::fingerprint(&cuda)
        .map_err(|e| format!("reading the CUDA sources in {}: {e}", cuda.display()))?;
    let manifest = std::fs::read_to_string(prebuilt.join("manifest.txt")).unwrap_or_default();
    let fresh = manifest
        .lines()
        .any(|l| l == source_hash::manifest_line(fingerprint));
    let forced = std::env::var("FERROCUDA_BUILD_KERNELS").is_ok_and(|v| v == "1");
    if fresh && !forced {
        for k in source_hash::KERNELS {
            let from = prebuilt.join(format!("{k}.cubin"));
            std::fs::copy(&from, out.join(format!("{k}.cubin")))
                .map_err(|e| format!("{}: {e}", from.display()))?;
        }
        return Ok(());
    }
    if !manifest.is_empty() && !forced {
        println!(
            "cargo:warning=the CUDA sources changed since prebuilt/ was written; compiling them \
             with nvcc (run `cargo xtask kernels` to refresh the prebuilt cubins)"
        );
    }

    let nvcc = find_nvcc(&manifest_dir).ok_or(
        "no CUDA compiler found, and the prebuilt cubins do not match the CUDA sources. \
         Run `cargo xtask setup` in the ferrocuda repository (it installs nvcc 13.0 from pip into \
         .cuda-venv/, no root needed), or install a CUDA 13.0 toolkit and set NVCC or CUDA_PATH.",
    )?;
    for k in source_hash::KERNELS {
        let src = cuda.join(format!("{k}.cu"));
        let cubin = out.join(format!("{k}.cubin"));
        let output = Command::new(&nvcc)
            .args(source_hash::NVCC_FLAGS)
            .arg("-I")
            .arg(cuda.join("include"))
            .arg("-o")
            .arg(&cubin)
            .arg(&src)
            .output()
            .map_err(|e| format!("could not run {}: {e}", nvcc.display()))?;
        let report = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!(
                "{} failed on {} ({}):\n{report}",
                nvcc.display(),
                src.display(),
                output.status
            ));
        }
        write(&out.join(format!("{k}.ptxas.txt")), report.as_bytes())?;
        for line in report.lines().filter(|l| l.contains("bytes spill")) {
            if !line.contains(" 0 bytes spill stores, 0 bytes spill loads") {
                println!(
                    "cargo:warning={k}.cu: ptxas reports spills: {}",
                    line.trim()
                );
            }
        }
    }
    Ok(())
}

fn env(var: &str) -> Result<String, String> {
    std::env::var(var).map_err(|_| format!("cargo did not set {var}"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The first `nvcc` found in the documented order.
fn find_nvcc(manifest_dir: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(nvcc) = std::env::var_os("NVCC") {
        candidates.push(PathBuf::from(nvcc));
    }
    if let Some(root) = std::env::var_os("CUDA_PATH") {
        candidates.push(Path::new(&root).join("bin/nvcc"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/nvcc"));
    // A ferrocuda checkout: crates/kernels -> workspace root -> .cuda-venv (cargo xtask setup).
    if let Some(root) = manifest_dir.parent().and_then(Path::parent)
        && let Ok(libs) = std::fs::read_dir(root.join(".cuda-venv/lib"))
    {
        for lib in libs.flatten() {
            candidates.push(lib.path().join("site-packages/nvidia/cu13/bin/nvcc"));
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}
