//! `cargo xtask bindgen [--check]`: ferrocuda-sys's bindings from CUDA 13.0 `cuda.h`.
//!
//! The output is checked in and never edited by hand. bindgen writes the driver's functions as
//! fields of one struct (`Driver`) filled from `libcuda.so.1` at run time, so nothing links against
//! libcuda; every field is required, so a driver that lacks one is reported when it is loaded.

use crate::{setup, util};
use std::path::{Path, PathBuf};

/// The driver API the ferrocuda crates use, by family. Graphics interop (`cuGraphics*`) is left out.
const FUNCTIONS: &str = concat!(
    "cu(Init|DriverGetVersion|GetErrorName|GetErrorString|GetProcAddress_v2",
    "|Device(Get|GetCount|GetName|GetAttribute|GetUuid_v2|TotalMem_v2|CanAccessPeer|GetP2PAttribute)",
    "|DevicePrimaryCtx(Retain|Release_v2|Reset_v2|GetState|SetFlags_v2)",
    "|Ctx(GetCurrent|SetCurrent|PushCurrent_v2|PopCurrent_v2|GetDevice|Synchronize|GetApiVersion",
    "|EnablePeerAccess|DisablePeerAccess|GetLimit|SetLimit)",
    "|Stream[A-Z][A-Za-z0-9_]*",
    "|Event[A-Z][A-Za-z0-9_]*",
    "|Mem(Alloc|AllocAsync|AllocFromPoolAsync|Free|FreeAsync|HostAlloc|FreeHost|HostGetDevicePointer|HostGetFlags",
    "|HostRegister|HostUnregister|GetInfo|GetAddressRange|cpy|set|Pool|GetDefaultMemPool|GetMemPool)[A-Za-z0-9_]*",
    "|Module[A-Z][A-Za-z0-9_]*",
    "|Library[A-Z][A-Za-z0-9_]*",
    "|Kernel(GetFunction|GetAttribute|SetAttribute|GetName)",
    "|Func(GetAttribute|SetAttribute|GetName|SetCacheConfig|Load|IsLoaded)",
    "|Launch[A-Za-z0-9_]*",
    "|Occupancy[A-Za-z0-9_]*",
    "|Graph[A-Z][A-Za-z0-9_]*",
    "|UserObject(Create|Retain|Release)",
    "|TensorMap[A-Za-z0-9_]*",
    "|PointerGetAttribute[s]?)",
);

fn bindings_path() -> PathBuf {
    util::root().join("crates/cuda-sys/src/bindings.rs")
}

/// Folders searched for libclang, besides `/usr/lib/llvm-*/lib` and `LIBCLANG_PATH`. `.ci/run`
/// searches the same ones.
const LIBCLANG_DIRS: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

/// Whether libclang can be found (bindgen loads it at run time): `LIBCLANG_PATH` names it or a
/// folder holding it, or a file [`is_libclang`] accepts is in a system library folder or
/// `/usr/lib/llvm-*/lib`.
pub fn libclang_available() -> bool {
    let from_env = std::env::var_os("LIBCLANG_PATH").map(PathBuf::from);
    if from_env.as_ref().is_some_and(|p| p.is_file()) {
        return true;
    }
    let llvm = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
        .map(|e| e.path().join("lib"));
    LIBCLANG_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(llvm)
        .chain(from_env)
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .any(|e| is_libclang(&e.file_name().to_string_lossy()))
}

/// Whether a file name is libclang itself, by the names bindgen's loader (clang-sys) tries on
/// Linux: `libclang.so`, `libclang.so.*`, `libclang-*.so`, `libclang-*.so.*`. `libclang-cpp`
/// (clang's C++ library, installed without libclang by some packages) is not libclang, nor are
/// clang's component libraries (`libclangBasic.a`, `libclang_rt.*`). `.ci/run`'s `has_libclang`
/// applies the same rule.
pub fn is_libclang(name: &str) -> bool {
    if name == "libclang.so" || name.starts_with("libclang.so.") {
        return true;
    }
    let Some(rest) = name.strip_prefix("libclang-") else {
        return false;
    };
    // `libclang-*.so` or `libclang-*.so.*`: some `.so` ends the name or is followed by a dot.
    !rest.starts_with("cpp")
        && rest.match_indices(".so").any(|(i, _)| {
            let after = &rest[i + 3..];
            after.is_empty() || after.starts_with('.')
        })
}

/// Generates the bindings text from `include/cuda.h`.
pub fn generate(include: &Path) -> Result<String, String> {
    let header = util::root().join("crates/cuda-sys/wrapper.h");
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function(FUNCTIONS)
        // Deprecated entry points nothing here uses: a driver may drop them.
        .blocklist_function("cu(ModuleGetTexRef|ModuleGetSurfRef|Launch|LaunchGrid|LaunchGridAsync|LaunchCooperativeKernelMultiDevice)")
        .allowlist_var("CU_[A-Z0-9_]+|CUDA_VERSION")
        .allowlist_type("CUtensorMap.*|CUstreamBatchMemOp.*|CUlaunchAttribute.*|CUgraphNodeType.*|CU[A-Za-z]*_flags(_enum)?|CUstreamCaptureMode.*|CUgraphExecUpdateResult.*")
        .default_enum_style(bindgen::EnumVariation::NewType { is_bitfield: false, is_global: false })
        .derive_default(true)
        .derive_eq(true)
        .derive_hash(true)
        .layout_tests(true)
        .generate_comments(true)
        .size_t_is_usize(true)
        .dynamic_library_name("Driver")
        .dynamic_link_require_all(true)
        .formatter(bindgen::Formatter::Rustfmt)
        .raw_line("// Generated by `cargo xtask bindgen` from CUDA 13.0 cuda.h. Do not edit.")
        .generate()
        .map_err(|e| format!("bindgen failed: {e}"))?;
    Ok(bindings.to_string())
}

pub fn run(check: bool) -> Result<(), String> {
    if !libclang_available() {
        return Err(
            "bindgen needs libclang: install Debian's `libclang-dev` (or set LIBCLANG_PATH)".into(),
        );
    }
    let tk = setup::run()?;
    let text = generate(&tk.include)?;
    let path = bindings_path();
    if check {
        let current =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if current != text {
            return Err(format!(
                "{} is stale: run `cargo xtask bindgen` and commit the result",
                path.display()
            ));
        }
        println!("bindings are fresh: {}", path.display());
    } else {
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// File names of Debian's and other distributions' LLVM packages, and whether each is
    /// libclang (what bindgen loads).
    const NAMES: &[(&str, bool)] = &[
        ("libclang.so", true),
        ("libclang.so.1", true),
        ("libclang.so.20.1.8", true),
        ("libclang-14.so", true),
        ("libclang-14.so.1", true),
        ("libclang-14.so.13", true),
        ("libclang-14.0.6.so", true),
        ("libclang-14.so.14.0.6", true),
        // libclang-cpp is clang's C++ library: bindgen cannot use it.
        ("libclang-cpp.so", false),
        ("libclang-cpp.so.14", false),
        ("libclang-cpp.so.20.1", false),
        ("libclangBasic.a", false),
        ("libclangBasic.so", false),
        ("libclang_rt.asan-x86_64.so", false),
        ("libclang.a", false),
        ("libclang-14.a", false),
        ("libclang.sox", false),
        ("libLLVM-14.so.1", false),
        ("clang", false),
    ];

    #[test]
    fn libclang_is_told_apart_from_libclang_cpp_and_clang_components() {
        for &(name, want) in NAMES {
            assert_eq!(is_libclang(name), want, "{name}");
        }
    }

    /// The `has_libclang` function of `.ci/run`, which decides whether CI installs libclang-dev.
    fn ci_has_libclang() -> String {
        let path = util::root().join(".ci/run");
        let script = std::fs::read_to_string(&path).unwrap();
        let start = script
            .find("has_libclang() {")
            .expect(".ci/run defines has_libclang");
        let len = script[start..].find("\n}\n").expect("has_libclang ends") + 3;
        script[start..start + len].to_owned()
    }

    /// `.ci/run` installs libclang-dev unless it finds libclang: it must count the same files as
    /// [`libclang_available`], or CI skips (or fails) the bindings check where it could run it.
    #[test]
    fn ci_script_counts_the_same_files_as_xtask() {
        let func = ci_has_libclang();
        let dir = std::env::temp_dir().join(format!("ferrocuda-libclang-{}", std::process::id()));
        for &(name, want) in NAMES {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), b"").unwrap();
            let found = Command::new("bash")
                .arg("-c")
                .arg(format!("{func}\nhas_libclang \"$1\""))
                .arg("bash")
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert_eq!(found, want, ".ci/run on a folder holding only {name}");
        }
        // An empty folder, and one that does not exist.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        for d in [dir.clone(), dir.join("missing")] {
            let found = Command::new("bash")
                .arg("-c")
                .arg(format!("{func}\nhas_libclang \"$1\""))
                .arg("bash")
                .arg(&d)
                .status()
                .unwrap()
                .success();
            assert!(!found, "{}", d.display());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `.ci/run` searches the folders [`libclang_available`] searches.
    #[test]
    fn ci_script_searches_the_same_folders_as_xtask() {
        let script = std::fs::read_to_string(util::root().join(".ci/run")).unwrap();
        let call = script
            .lines()
            .find(|l| l.trim_start().starts_with("has_libclang "))
            .expect(".ci/run calls has_libclang");
        for dir in LIBCLANG_DIRS.iter().chain(&["/usr/lib/llvm-*/lib"]) {
            assert!(
                call.split_whitespace()
                    .any(|w| w.trim_end_matches(';') == *dir),
                "{dir} is not searched: {call}"
            );
        }
        assert!(
            call.contains("\"$LIBCLANG_PATH\""),
            "LIBCLANG_PATH is not searched: {call}"
        );
    }
}
