//! `cargo xtask setup`: a CUDA 13.0 compiler, headers and cuobjdump, without root.
//!
//! An installed toolkit is used when it has nvcc >= 13.0, `cuda.h` and cuobjdump. Otherwise the
//! pinned pip packages below go into `.cuda-venv/` (git ignores it). The pins matter: an unpinned
//! `nvidia-nvvm` pulls 13.5, whose PTX the 13.0 ptxas rejects, and there is no 13.0 cuobjdump on
//! PyPI (13.2.51 disassembles 13.0 sm_90a cubins).

use crate::util;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pip packages, exact versions.
pub const PACKAGES: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cuobjdump==13.2.51",
    "nvidia-cuda-nvdisasm==13.2.51",
];

/// A CUDA toolkit that can build and inspect ferrocuda's kernels.
#[derive(Debug, Clone)]
pub struct Toolkit {
    /// The `nvcc` executable.
    pub nvcc: PathBuf,
    /// The directory holding `cuda.h`.
    pub include: PathBuf,
    /// The `cuobjdump` executable.
    pub cuobjdump: PathBuf,
}

/// Finds a usable toolkit, installing the pip one when none is found.
pub fn run() -> Result<Toolkit, String> {
    if let Some(tk) = find() {
        return Ok(tk);
    }
    install()?;
    find_in(
        &venv_toolkit_root()
            .ok_or("pip installed the CUDA packages but no nvidia/cu13 directory appeared")?,
    )
    .ok_or_else(|| {
        "the pip-installed toolkit is incomplete (nvcc, cuda.h or cuobjdump missing)".into()
    })
}

/// The toolkit, if one is already available (no installation).
pub fn find() -> Option<Toolkit> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(nvcc) = std::env::var_os("NVCC") {
        candidates.extend(
            Path::new(&nvcc)
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf),
        );
    }
    if let Some(p) = std::env::var_os("CUDA_PATH") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("nvcc").is_file() {
                candidates.extend(dir.parent().map(Path::to_path_buf));
            }
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda"));
    candidates.extend(venv_toolkit_root());
    candidates.iter().find_map(|root| find_in(root))
}

/// `root/bin/nvcc` (>= 13.0), `root/include/cuda.h` and a cuobjdump, or nothing.
fn find_in(root: &Path) -> Option<Toolkit> {
    let nvcc = root.join("bin/nvcc");
    let include = root.join("include");
    let cuobjdump = root.join("bin/cuobjdump");
    if !(nvcc.is_file() && include.join("cuda.h").is_file() && cuobjdump.is_file()) {
        return None;
    }
    let version = util::output(Command::new(&nvcc).arg("--version")).ok()?;
    let release = version.split("release ").nth(1)?;
    let major: u32 = release.split('.').next()?.parse().ok()?;
    (major >= 13).then_some(Toolkit {
        nvcc,
        include,
        cuobjdump,
    })
}

fn venv_dir() -> PathBuf {
    util::root().join(".cuda-venv")
}

/// `.cuda-venv/lib/python3.*/site-packages/nvidia/cu13`, if present.
fn venv_toolkit_root() -> Option<PathBuf> {
    let lib = venv_dir().join("lib");
    std::fs::read_dir(lib).ok()?.flatten().find_map(|e| {
        let p = e.path().join("site-packages/nvidia/cu13");
        p.join("bin/nvcc").is_file().then_some(p)
    })
}

fn install() -> Result<(), String> {
    let venv = venv_dir();
    eprintln!(
        "xtask setup: no nvcc >= 13.0 found; installing the CUDA 13.0 compiler into {}",
        venv.display()
    );
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
        .ok_or("xtask setup needs Python 3 with pip (or install a CUDA 13.0 toolkit and set CUDA_PATH)")?;
    if !venv.join("bin/pip").is_file() {
        util::run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
    }
    util::run(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-cache-dir",
            ])
            .args(PACKAGES),
    )
}
