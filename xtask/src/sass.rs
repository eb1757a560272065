//! The kernels' machine-code checks and their prebuilt cubins.
//!
//! `cargo xtask kernels` compiles `crates/kernels/cuda/*.cu` with the flags `build.rs` uses,
//! checks the result ([`check_build`]), copies the cubins to `crates/kernels/prebuilt/` with a
//! manifest that records the sources' fingerprint, and rewrites the resource table in
//! `docs/kernels.md`. [`check`] (a step of `cargo xtask test`) does the same build into
//! `target/ferrocuda-kernels/` and fails if the checks fail or if `prebuilt/` or the table differ
//! from what it built.
//!
//! The checks: every TMA kernel's SASS contains `UTMALDG` (a tensor-copy load), every cp.async
//! kernel's `LDGSTS` (global-to-shared async copy), every gated kernel's `NANOSLEEP` (the fused
//! gate's poll loop) and no system-scope atomic (its expiry counter may be mapped host memory), and
//! ptxas reports 0 spill bytes and no stack frame for every kernel.

use crate::setup::Toolkit;
use crate::util;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernels crate's own file: the kernel list, the nvcc flags and the sources' fingerprint, the
/// same code that its `build.rs` and unit tests compile. It stays inside `crates/kernels` because
/// `cargo package` ships only files under the crate; xtask is never packaged, so it may reach in.
#[path = "../../crates/kernels/src/source_hash.rs"]
mod source_hash;

const TABLE_BEGIN: &str = "<!-- kernel-resources:begin (cargo xtask kernels) -->";
const TABLE_END: &str = "<!-- kernel-resources:end -->";
/// Kernels of `cuda/gated.cu`.
const GATED_KERNELS: usize = 1;

/// What ptxas said about one kernel.
#[derive(Debug, Default, Clone)]
pub struct Resources {
    registers: u32,
    static_smem: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// One compiled kernel: its cubin and what ptxas and the SASS say.
#[derive(Debug, Clone)]
pub struct Kernel {
    name: String,
    resources: Resources,
    sass_has: &'static str,
}

fn crate_dir() -> PathBuf {
    util::root().join("crates/kernels")
}

/// Compiles every kernel source into `out`; returns the cubins and ptxas's report per kernel.
fn compile(
    tk: &Toolkit,
    out: &Path,
) -> Result<(Vec<PathBuf>, BTreeMap<String, Resources>), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let cuda = crate_dir().join("cuda");
    let mut cubins = Vec::new();
    let mut report = BTreeMap::new();
    for k in source_hash::KERNELS {
        let cubin = out.join(format!("{k}.cubin"));
        let mut cmd = Command::new(&tk.nvcc);
        cmd.args(source_hash::NVCC_FLAGS)
            .arg("-I")
            .arg(cuda.join("include"))
            .arg("-o")
            .arg(&cubin)
            .arg(cuda.join(format!("{k}.cu")));
        eprintln!("$ {}", util::show(&cmd));
        let o = cmd
            .output()
            .map_err(|e| format!("could not run {}: {e}", tk.nvcc.display()))?;
        let text = String::from_utf8_lossy(&o.stderr).into_owned();
        if !o.status.success() {
            return Err(format!("nvcc failed on {k}.cu:\n{text}"));
        }
        std::fs::write(out.join(format!("{k}.ptxas.txt")), &text)
            .map_err(|e| format!("{}: {e}", out.display()))?;
        parse_ptxas(&text, &mut report)?;
        cubins.push(cubin);
    }
    Ok((cubins, report))
}

/// Reads `-Xptxas -v` output: per entry function, registers, static shared memory, stack, spills.
fn parse_ptxas(text: &str, out: &mut BTreeMap<String, Resources>) -> Result<(), String> {
    let mut current: Option<String> = None;
    let num = |line: &str, before: &str| -> Option<u32> {
        let head = line.split(before).next()?;
        head.split_whitespace().last()?.parse().ok()
    };
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_owned();
            out.insert(name.clone(), Resources::default());
            current = Some(name);
            continue;
        }
        let Some(r) = current.as_ref().and_then(|n| out.get_mut(n)) else {
            continue;
        };
        if line.contains("bytes stack frame") {
            r.stack = num(line, "bytes stack frame").ok_or(format!("ptxas line: {line}"))?;
            r.spill_stores =
                num(line, "bytes spill stores").ok_or(format!("ptxas line: {line}"))?;
            r.spill_loads = num(line, "bytes spill loads").ok_or(format!("ptxas line: {line}"))?;
        } else if line.contains("Used") && line.contains("registers") {
            r.registers = num(line, "registers").ok_or(format!("ptxas line: {line}"))?;
            r.static_smem = num(line, "bytes smem").unwrap_or(0);
        }
    }
    Ok(())
}

/// `cuobjdump -sass` of `cubin`, split per function.
fn sass_by_function(tk: &Toolkit, cubin: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = util::output(Command::new(&tk.cuobjdump).arg("-sass").arg(cubin))?;
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("Function : ") {
            current = Some(name.trim().to_owned());
            continue;
        }
        if let Some(name) = &current {
            let body = out.entry(name.clone()).or_default();
            body.push_str(line);
            body.push('\n');
        }
    }
    Ok(out)
}

/// Whether a SASS listing has a system-scope atomic or reduction (`REDG.E.ADD.64.STRONG.SYS`,
/// `ATOMG….SYS`); `BAR.RED` is a barrier, not one.
fn has_system_atomic(sass: &str) -> bool {
    mnemonics(sass).any(|m| {
        (m.starts_with("RED") || m.starts_with("ATOM")) && m.split('.').any(|p| p == "SYS")
    })
}

/// The mnemonic of every instruction line of a SASS listing: lines read
/// `/*0120*/ [@P0] MNEMONIC ... ;`.
fn mnemonics(sass: &str) -> impl Iterator<Item = &str> {
    sass.lines().filter_map(|line| {
        let (_, code) = line.split_once("*/")?;
        code.split_whitespace().find(|t| !t.starts_with('@'))
    })
}

/// Whether a SASS listing has an instruction whose mnemonic starts with `mnemonic`
/// (`LDGSTS.E.BYPASS.128`, not `ARRIVES.LDGSTSBAR`).
fn has_instruction(sass: &str, mnemonic: &str) -> bool {
    mnemonics(sass).any(|m| m.starts_with(mnemonic))
}

/// Compiles into `out` and checks every kernel; the kernels, sorted by name.
pub fn check_build(tk: &Toolkit, out: &Path) -> Result<Vec<Kernel>, String> {
    let (cubins, report) = compile(tk, out)?;
    let mut sass = BTreeMap::new();
    for c in &cubins {
        sass.extend(sass_by_function(tk, c)?);
    }
    let mut kernels = Vec::new();
    let mut problems = Vec::new();
    for (name, resources) in &report {
        let needle = if name.contains("_gated_") {
            // The fused gate's poll loop (ferrocuda/gate.cuh) sleeps between loads.
            "NANOSLEEP"
        } else if name.contains("_tma_") {
            "UTMALDG"
        } else if name.contains("_cpasync_") {
            "LDGSTS"
        } else {
            problems.push(format!(
                "{name}: neither a TMA, a cp.async nor a gated kernel"
            ));
            continue;
        };
        match sass.get(name) {
            None => problems.push(format!("{name}: no SASS found by cuobjdump")),
            Some(s) if !has_instruction(s, needle) => {
                problems.push(format!("{name}: SASS has no {needle}"))
            }
            Some(s) if has_system_atomic(s) => problems.push(format!(
                "{name}: a system-scope atomic (RED/ATOM ….SYS); the expiry counter may be mapped \
                 host memory, where only device-scope atomics are valid (docs/gates.md)"
            )),
            Some(_) => {}
        }
        if resources.spill_stores + resources.spill_loads != 0 || resources.stack != 0 {
            problems.push(format!(
                "{name}: ptxas reports {} bytes stack, {} bytes spill stores, {} bytes spill loads",
                resources.stack, resources.spill_stores, resources.spill_loads
            ));
        }
        kernels.push(Kernel {
            name: name.clone(),
            resources: resources.clone(),
            sass_has: needle,
        });
    }
    // 36 pipeline kernels (3 ops x 2 transfers x 2 types x 3 depths), 24 of them again under
    // dynamic item order (copy and transpose), and the gated ones.
    if kernels.len() != 36 + 24 + GATED_KERNELS {
        problems.push(format!(
            "expected {} kernels, ptxas compiled {}",
            36 + 24 + GATED_KERNELS,
            kernels.len()
        ));
    }
    if !problems.is_empty() {
        return Err(format!(
            "kernel checks failed:\n  {}",
            problems.join("\n  ")
        ));
    }
    eprintln!(
        "kernels: {} checked (UTMALDG in every TMA kernel, LDGSTS in every cp.async kernel, NANOSLEEP and no system-scope atomic in every gated kernel, no spills)",
        kernels.len()
    );
    Ok(kernels)
}

/// The resource table for docs/kernels.md.
fn table(kernels: &[Kernel]) -> String {
    let mut t = String::new();
    t.push_str(TABLE_BEGIN);
    t.push_str(
        "\n| kernel | registers | static smem (B) | dynamic smem (B) | stack (B) | spills (B) | SASS |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for k in kernels {
        // Every op's stage is a 16 KiB tile (`Op::tile` in crates/kernels/src/kernel.rs).
        let stages: u32 = k
            .name
            .rsplit("_s")
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let r = &k.resources;
        let _ = writeln!(
            t,
            "| `{}` | {} | {} | {} | {} | {} | {} |",
            k.name,
            r.registers,
            r.static_smem,
            stages * 16384,
            r.stack,
            r.spill_stores + r.spill_loads,
            k.sass_has
        );
    }
    t.push_str(TABLE_END);
    t
}

/// docs/kernels.md with its resource table replaced by `table`.
fn docs_with(table: &str) -> Result<(PathBuf, String, String), String> {
    let path = util::root().join("docs/kernels.md");
    let old = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (Some(a), Some(b)) = (old.find(TABLE_BEGIN), old.find(TABLE_END)) else {
        return Err(format!(
            "{} lacks the table markers {TABLE_BEGIN} ... {TABLE_END}",
            path.display()
        ));
    };
    let new = format!("{}{}{}", &old[..a], table, &old[b + TABLE_END.len()..]);
    Ok((path, old, new))
}

fn manifest(kernels_fingerprint: u64, nvcc_version: &str) -> String {
    format!(
        "# Written by `cargo xtask kernels`. build.rs embeds prebuilt/*.cubin when the next line\n\
         # matches the fingerprint of cuda/ (source_hash.rs); otherwise it compiles with nvcc.\n\
         {}\n\
         # nvcc: {}\n\
         # flags: {}\n",
        source_hash::manifest_line(kernels_fingerprint),
        nvcc_version,
        source_hash::NVCC_FLAGS.join(" ")
    )
}

fn nvcc_version(tk: &Toolkit) -> Result<String, String> {
    let v = util::output(Command::new(&tk.nvcc).arg("--version"))?;
    Ok(v.lines().last().unwrap_or_default().trim().to_owned())
}

/// `cargo xtask kernels`: rebuild, check, refresh `prebuilt/` and the docs table.
pub fn write(tk: &Toolkit) -> Result<(), String> {
    let out = util::root().join("target/ferrocuda-kernels");
    let kernels = check_build(tk, &out)?;
    let prebuilt = crate_dir().join("prebuilt");
    std::fs::create_dir_all(&prebuilt).map_err(|e| format!("{}: {e}", prebuilt.display()))?;
    for k in source_hash::KERNELS {
        let from = out.join(format!("{k}.cubin"));
        std::fs::copy(&from, prebuilt.join(format!("{k}.cubin")))
            .map_err(|e| format!("{}: {e}", from.display()))?;
    }
    let fp = source_hash::fingerprint(&crate_dir().join("cuda")).map_err(|e| e.to_string())?;
    let m = prebuilt.join("manifest.txt");
    std::fs::write(&m, manifest(fp, &nvcc_version(tk)?))
        .map_err(|e| format!("{}: {e}", m.display()))?;
    let (path, _, new) = docs_with(&table(&kernels))?;
    std::fs::write(&path, new).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "wrote {} cubins to {} and the resource table of {}",
        source_hash::KERNELS.len(),
        prebuilt.display(),
        path.display()
    );
    Ok(())
}

/// The `cargo xtask test` step: builds and checks the kernels, and fails if `prebuilt/` or the
/// docs table are not what this build produces.
pub fn check(toolkit: &Toolkit) -> Result<(), String> {
    let out = util::root().join("target/ferrocuda-kernels");
    let kernels = check_build(toolkit, &out)?;
    let prebuilt = crate_dir().join("prebuilt");
    let mut stale = Vec::new();
    for k in source_hash::KERNELS {
        let built = std::fs::read(out.join(format!("{k}.cubin"))).map_err(|e| e.to_string())?;
        if std::fs::read(prebuilt.join(format!("{k}.cubin"))).ok() != Some(built) {
            stale.push(format!("prebuilt/{k}.cubin"));
        }
    }
    let fp = source_hash::fingerprint(&crate_dir().join("cuda")).map_err(|e| e.to_string())?;
    let recorded = std::fs::read_to_string(prebuilt.join("manifest.txt")).unwrap_or_default();
    if !recorded
        .lines()
        .any(|l| l == source_hash::manifest_line(fp))
    {
        stale.push("prebuilt/manifest.txt".into());
    }
    let (_, old, new) = docs_with(&table(&kernels))?;
    if old != new {
        stale.push("the resource table in docs/kernels.md".into());
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "stale: {}; run `cargo xtask kernels` and commit the result",
            stale.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::has_system_atomic;

    #[test]
    fn system_scope_reductions_are_found_barriers_and_device_scope_ones_are_not() {
        // Lines as cuobjdump prints them for the gated kernel, before and after the fix.
        let sys = "        /*0480*/               @P0 REDG.E.ADD.64.STRONG.SYS desc[UR8][R2.64], R4 ;      /* 0x000000040200098e */";
        let gpu = "        /*0480*/               @P0 REDG.E.ADD.64.STRONG.GPU desc[UR8][R2.64], R4 ;      /* 0x000000040200098e */";
        let bar = "        /*04c0*/                   BAR.RED.OR.DEFER_BLOCKING 0x0, P0 ;                  /* 0x0000000000007b1d */";
        let atom = "        /*0100*/                   ATOMG.E.ADD.64.STRONG.SYS PT, R2, desc[UR4][R2.64], R4 ; /* 0x0 */";
        assert!(has_system_atomic(sys));
        assert!(has_system_atomic(atom));
        assert!(!has_system_atomic(&format!("{gpu}\n{bar}\n")));
    }
}
