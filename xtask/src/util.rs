//! Small helpers shared by the xtask commands: paths, running commands, building release
//! binaries and putting them into bundles.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root") // invariant of the layout
        .to_path_buf()
}

/// Runs `cmd`, echoing it first; an error names the command and its exit status.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("$ {}", show(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{}`: {e}", show(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", show(cmd)))
    }
}

/// Runs `cmd` and returns its standard output.
pub fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("could not start `{}`: {e}", show(cmd)))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}):\n{}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A printable form of a command line.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `cargo`, as the one that runs xtask.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Maps an I/O error on `path` to a message that names the path.
pub fn io(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// `cargo build --release -p PACKAGE --bin BIN`; the executable's path.
pub fn build_release(package: &str, bin: &str) -> Result<PathBuf, String> {
    let json = output(cargo().args([
        "build",
        "--release",
        "--message-format=json-render-diagnostics",
        "-p",
        package,
        "--bin",
        bin,
    ]))?;
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo built no executable for {package} --bin {bin}"))
}

/// `git describe`-like id of the working tree: short hash, `-dirty` if it has changes.
pub fn commit() -> String {
    let hash =
        output(
            Command::new("git")
                .current_dir(root())
                .args(["rev-parse", "--short=12", "HEAD"]),
        )
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let dirty = output(Command::new("git").current_dir(root()).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_ok_and(|s| !s.trim().is_empty());
    if dirty { format!("{hash}-dirty") } else { hash }
}

/// Copies `exe` to `dst` and strips it: a bundle's binaries need no symbols to run, and stripped
/// they keep a bundle far below the device tool's 64 MiB carry limit.
pub fn copy_stripped(exe: &Path, dst: &Path) -> Result<(), String> {
    std::fs::copy(exe, dst).map_err(io(exe))?;
    run(Command::new("strip").arg("--strip-unneeded").arg(dst))
}
