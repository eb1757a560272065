//! The hygiene check: project files speak of the project alone.
//!
//! A newcomer reads the repository, not the notes, trackers and histories around it. This check
//! fails, with `path:line`, where a tracked project file points at something the reader cannot
//! open or date:
//!
//! | rule | what it flags | where |
//! | --- | --- | --- |
//! | `outside-file` | a `NAME.md` that no tracked file is called (`GPU.md`, `DESIGN.md`, `STYLE.md` always, unless tracked), a path into `../shared` or `/work/` | every text file |
//! | `issue-number` | `issue 7`, `issues 6, 8`, `issue #12`, `Issue 13's` (also split over two lines), `PR #3`, `pull request 3` | every text file |
//! | `private-phrase` | "the soundness issue", "the restructure issue", "the seed(s)", "seed-literal" | every text file |
//! | `commit-hash` | a whole word of 7–40 lowercase hex digits with at least one digit and one letter | Markdown outside fenced code; comments (`//`, `/* */`, and `#` in scripts, TOML, YAML, Python) |
//! | `measured-number` | a sentence with a time, bandwidth, percentage or × quantity (not a bound: `≤ 3 µs`, "within 1 s") *and* a sign that it was measured (`≈`/`~`/"about"/"roughly" before a number, a GPU model such as H100, "measured" but not "not measured") | Rust doc comments (`///`, `//!`) |
//!
//! Replace a hit with the fact itself: a measurement goes to `docs/hardware-facts.md` (with its
//! GPU kind and date) and a doc comment links there ("see `docs/hardware-facts.md` in the
//! repository"); an issue number becomes the target it set; a commit hash becomes the date of the
//! measurement (`git log -1 --format=%cs HASH`) or a description of the change. An RNG seed is
//! "the RNG seed", not "the seed"; a verb "issues" is not followed by a bare number.
//!
//! Skipped: `crates/cuda-sys/src/bindings.rs` (generated), anything under `target/`, generated
//! PTX, `Cargo.lock`, binary and non-UTF-8 files, and this file (it spells out what it looks for).
//!
//! Wiring (for `xtask/src/test.rs`): `step("hygiene", &mut || crate::hygiene::check(&util::root()));`

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// This file: it names every pattern it looks for, so it is not checked.
const SELF_PATH: &str = "xtask/src/hygiene.rs";

/// Generated or binary files, by path or suffix.
const SKIP_PATHS: &[&str] = &["crates/cuda-sys/src/bindings.rs", "Cargo.lock", SELF_PATH];
const SKIP_SUFFIXES: &[&str] = &[
    ".ptx", ".cubin", ".fatbin", ".o", ".a", ".so", ".png", ".jpg", ".jpeg", ".gif", ".svg",
    ".pdf", ".gz", ".zip", ".tar",
];

/// Notes that live outside the repository: flagged unless a tracked file has the name.
const OUTSIDE_NOTES: &[&str] = &["GPU.md", "DESIGN.md", "STYLE.md"];
/// Paths that lead out of the repository.
const OUTSIDE_PATHS: &[&str] = &["../shared", "/work/"];
/// Phrases that only mean something to the people who wrote them (matched case-insensitively,
/// as whole words).
const PRIVATE_PHRASES: &[&str] = &[
    "the soundness issue",
    "the restructure issue",
    "the seeds",
    "the seed",
    "seed-literal",
];
/// GPU models whose name next to a number says the number was measured.
const GPU_MODELS: &[&str] = &[
    "H100", "H200", "H800", "GH200", "A100", "B100", "B200", "L40", "V100",
];

/// One opaque reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub path: String,
    /// 1-based.
    pub line: usize,
    pub rule: &'static str,
    pub text: String,
}

impl std::fmt::Display for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path, self.line, self.rule, self.text
        )
    }
}

/// Checks every tracked project file under `root` (a git work tree).
pub fn check(root: &Path) -> Result<(), String> {
    let hits = scan(root)?;
    if hits.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "{} opaque reference(s): project files must speak of the project alone (a measurement goes \
         to docs/hardware-facts.md with its GPU kind and date, an issue number becomes its target, \
         a commit hash the date or the change):\n",
        hits.len()
    );
    for h in &hits {
        msg.push_str(&format!("  {h}\n"));
    }
    Err(msg)
}

/// Every hit under `root`, sorted by path and line.
pub fn scan(root: &Path) -> Result<Vec<Hit>, String> {
    let files = tracked_files(root)?;
    let names: BTreeSet<String> = files
        .iter()
        .map(|f| f.rsplit('/').next().unwrap_or(f).to_string())
        .collect();
    let mut hits = Vec::new();
    for f in &files {
        if skipped(f) {
            continue;
        }
        // Binary or not UTF-8: nothing a reader reads as prose.
        let Ok(text) = std::fs::read_to_string(root.join(f)) else {
            continue;
        };
        if text.contains('\0') {
            continue;
        }
        hits.extend(check_file(f, &text, &names));
    }
    hits.sort();
    Ok(hits)
}

/// `git ls-files` of `root`, `/`-separated, relative to it.
fn tracked_files(root: &Path) -> Result<Vec<String>, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output()
        .map_err(|e| format!("could not run `git ls-files` in {}: {e}", root.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`git ls-files` failed in {}: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect())
}

fn skipped(path: &str) -> bool {
    SKIP_PATHS.contains(&path)
        || path.starts_with("target/")
        || path.contains("/target/")
        || SKIP_SUFFIXES.iter().any(|s| path.ends_with(s))
}

/// How a file's comments are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Markdown,
    /// Rust: `//`, nested `/* */`, doc comments.
    Rust,
    /// C, C++, CUDA: `//`, `/* */`.
    C,
    /// `#` comments: shell, Python, TOML, YAML, scripts with a shebang.
    Hash,
    /// Anything else: only the rules that apply to every text file.
    Other,
}

fn kind(path: &str, text: &str) -> Kind {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "md" => Kind::Markdown,
        "rs" => Kind::Rust,
        "c" | "h" | "cc" | "cpp" | "hpp" | "cu" | "cuh" => Kind::C,
        "sh" | "bash" | "py" | "toml" | "yml" | "yaml" | "cfg" | "ini" => Kind::Hash,
        _ if name == ".gitignore" || text.starts_with("#!") => Kind::Hash,
        _ => Kind::Other,
    }
}

/// Every hit in one file. `names`: the file names (last path component) the repository tracks.
pub fn check_file(path: &str, text: &str, names: &BTreeSet<String>) -> Vec<Hit> {
    let mut hits = Vec::new();
    let mut hit = |line: usize, rule: &'static str, text: &str| {
        hits.push(Hit {
            path: path.to_string(),
            line,
            rule,
            text: text.trim().chars().take(160).collect(),
        });
    };
    let lines: Vec<&str> = text.lines().collect();

    // Rules for every line of every text file.
    for (i, l) in lines.iter().enumerate() {
        if let Some(what) = outside_file(l, names) {
            hit(i + 1, "outside-file", &format!("{what} — {l}"));
        }
        if issue_number(l) || issue_split(l, lines.get(i + 1).copied()) {
            hit(i + 1, "issue-number", l);
        }
        if let Some(p) = private_phrase(l) {
            hit(i + 1, "private-phrase", &format!("\"{p}\" — {l}"));
        }
    }

    // Commit hashes in prose and comments.
    let k = kind(path, text);
    let prose: Vec<(usize, String)> = match k {
        Kind::Markdown => markdown_prose(&lines),
        Kind::Rust => comments(text, true),
        Kind::C => comments(text, false),
        Kind::Hash => hash_comments(&lines),
        Kind::Other => Vec::new(),
    };
    for (line, t) in &prose {
        if let Some(h) = hex_word(t) {
            hit(*line, "commit-hash", &format!("{h} — {}", lines[line - 1]));
        }
    }

    // Measured numbers in Rust doc comments.
    if k == Kind::Rust {
        for line in measured_numbers(&lines) {
            hit(line, "measured-number", lines[line - 1]);
        }
    }
    hits
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `NAME.md` tokens naming no tracked file, and paths out of the repository.
fn outside_file(line: &str, names: &BTreeSet<String>) -> Option<String> {
    for p in OUTSIDE_PATHS {
        if line.contains(p) {
            return Some((*p).to_string());
        }
    }
    for note in OUTSIDE_NOTES {
        if contains_word(line, note) && !names.contains(*note) {
            return Some((*note).to_string());
        }
    }
    // Any other NAME.md: a file of the repository, or a link to a page elsewhere.
    let b = line.as_bytes();
    let mut from = 0;
    while let Some(pos) = line[from..].find(".md") {
        let at = from + pos;
        from = at + 3;
        if b.get(at + 3).is_some_and(|&c| is_word(c as char)) {
            continue; // `.mdx`, `.md5`...
        }
        let start = line[..at]
            .rfind(|c: char| !(is_word(c) || c == '-' || c == '.'))
            .map_or(0, |i| i + 1);
        let name = &line[start..at + 3];
        if name.len() <= 3 {
            continue; // `*.md`, `.md` alone
        }
        // Part of a URL: another site's page, not ours to check.
        let word_start = line[..start]
            .rfind(char::is_whitespace)
            .map_or(0, |i| i + 1);
        if line[word_start..start].contains("://") {
            continue;
        }
        if !names.contains(name) {
            return Some(name.to_string());
        }
    }
    None
}

/// Whether `word` occurs in `line` with no word character on either side.
fn contains_word(line: &str, word: &str) -> bool {
    let mut from = 0;
    while let Some(pos) = line[from..].find(word) {
        let at = from + pos;
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        if !before.is_some_and(is_word) && !after.is_some_and(is_word) {
            return true;
        }
        from = at + word.len();
    }
    false
}

/// `issue 7`, `issues 6, 8`, `issue #12`, `PR #3`, `pull request 3`: a tracker's number. A number
/// glued to a hyphen after it (`issue 16-byte copies`) is a verb's object, not a reference.
fn issue_number(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    for key in ["issues", "issue", "pr", "pull request", "pull requests"] {
        let mut from = 0;
        while let Some(pos) = lower[from..].find(key) {
            let at = from + pos;
            from = at + key.len();
            let before = lower[..at].chars().next_back();
            if before.is_some_and(is_word) {
                continue;
            }
            let rest = &lower[at + key.len()..];
            let Some(first) = rest.chars().next() else {
                continue;
            };
            if is_word(first) {
                continue; // "issued", "issuer", "prefix"...
            }
            let r = rest.trim_start_matches(' ');
            let hash = r.starts_with('#');
            let r = r.trim_start_matches('#');
            let digits = r.chars().take_while(char::is_ascii_digit).count();
            if digits == 0 || (key == "pr" && !hash) {
                continue;
            }
            let after = r[digits..].chars().next();
            if after == Some('-') || after.is_some_and(|c| c.is_ascii_alphabetic()) {
                continue; // "issue 16-byte", "issues 4x"
            }
            return true;
        }
    }
    false
}

/// "... issue" at the end of one line and a number starting the next (prose wrapped at a column).
fn issue_split(line: &str, next: Option<&str>) -> bool {
    let Some(next) = next else { return false };
    let t = line.trim_end().to_ascii_lowercase();
    let ends = ["issue", "issues", "issue #", "issues #"].iter().any(|e| {
        t.ends_with(e)
            && !t[..t.len() - e.len()]
                .chars()
                .next_back()
                .is_some_and(is_word)
    });
    if !ends {
        return false;
    }
    let n = next
        .trim_start()
        .trim_start_matches(['/', '!', '*', '#'])
        .trim_start();
    let digits = n.chars().take_while(char::is_ascii_digit).count();
    digits > 0
        && !matches!(n[digits..].chars().next(), Some(c) if c == '-' || c.is_ascii_alphabetic())
}

fn private_phrase(line: &str) -> Option<&'static str> {
    let lower = line.to_ascii_lowercase();
    PRIVATE_PHRASES
        .iter()
        .find(|p| contains_word(&lower, p))
        .copied()
}

/// A whole word of 7–40 lowercase hex digits holding at least one digit and one letter.
fn hex_word(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !(b[i] as char).is_ascii_hexdigit() || (b[i] as char).is_ascii_uppercase() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && matches!(b[i], b'0'..=b'9' | b'a'..=b'f') {
            i += 1;
        }
        let word = &text[start..i];
        let before = text[..start].chars().next_back();
        let after = text[i..].chars().next();
        if (7..=40).contains(&word.len())
            && word.bytes().any(|c| c.is_ascii_digit())
            && word.bytes().any(|c| c.is_ascii_lowercase())
            && !before.is_some_and(is_word)
            && !after.is_some_and(is_word)
        {
            return Some(word);
        }
        // Skip the rest of this word so that its tail is not taken for a word of its own.
        while i < b.len() && is_word(b[i] as char) {
            i += 1;
        }
        if i == start {
            i += 1;
        }
    }
    None
}

/// Markdown lines outside fenced code blocks, with their 1-based numbers.
fn markdown_prose(lines: &[&str]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let marker = if t.starts_with("```") {
            Some("```")
        } else if t.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((i + 1, (*l).to_string())),
            _ => {}
        }
    }
    out
}

/// The comment text of a Rust (`rust = true`) or C-family file, per line: `//` to the end of the
/// line, `/* */` (nested in Rust), skipping string and character literals (and Rust raw strings).
fn comments(text: &str, rust: bool) -> Vec<(usize, String)> {
    #[derive(PartialEq)]
    enum St {
        Code,
        Str,
        /// A raw string closed by `"` and this many `#`.
        Raw(usize),
        Block(usize),
    }
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut st = St::Code;
    for (n, line) in text.lines().enumerate() {
        let c: Vec<char> = line.chars().collect();
        let mut buf = String::new();
        let mut i = 0;
        while i < c.len() {
            match st {
                St::Code => {
                    if c[i] == '/' && c.get(i + 1) == Some(&'/') {
                        buf.extend(&c[i..]);
                        break;
                    } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        st = St::Block(1);
                        i += 2;
                    } else if c[i] == '"' {
                        st = St::Str;
                        i += 1;
                    } else if rust
                        && c[i] == 'r'
                        && !(i > 0 && is_word(c[i - 1]))
                        && matches!(c.get(i + 1), Some('"') | Some('#'))
                    {
                        let hashes = c[i + 1..].iter().take_while(|&&x| x == '#').count();
                        if c.get(i + 1 + hashes) == Some(&'"') {
                            st = St::Raw(hashes);
                            i += 2 + hashes;
                        } else {
                            i += 1;
                        }
                    } else if c[i] == '\'' {
                        // A character literal ('x', '\n', '\u{..}'), or (Rust) a lifetime.
                        if c.get(i + 1) == Some(&'\\') {
                            let close = c[i + 2..].iter().position(|&x| x == '\'');
                            i = close.map_or(i + 1, |p| i + 2 + p + 1);
                        } else if c.get(i + 2) == Some(&'\'') {
                            i += 3;
                        } else {
                            i += 1;
                        }
                    } else {
                        i += 1;
                    }
                }
                St::Str => {
                    if c[i] == '\\' {
                        i += 2;
                    } else {
                        if c[i] == '"' {
                            st = St::Code;
                        }
                        i += 1;
                    }
                }
                St::Raw(h) => {
                    if c[i] == '"' && c[i + 1..].iter().take(h).filter(|&&x| x == '#').count() == h
                    {
                        st = St::Code;
                        i += 1 + h;
                    } else {
                        i += 1;
                    }
                }
                St::Block(d) => {
                    if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        st = if d > 1 { St::Block(d - 1) } else { St::Code };
                        buf.push(' ');
                        i += 2;
                    } else if rust && c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        st = St::Block(d + 1);
                        i += 2;
                    } else {
                        buf.push(c[i]);
                        i += 1;
                    }
                }
            }
        }
        if !buf.trim().is_empty() {
            out.push((n + 1, buf));
        }
    }
    out
}

/// `#` comments: a `#` at the start of a line or after whitespace, outside quotes.
fn hash_comments(lines: &[&str]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for (i, ch) in line.char_indices() {
            match quote {
                Some(q) if ch == q && prev != '\\' => quote = None,
                Some(_) => {}
                None if ch == '"' || ch == '\'' => quote = Some(ch),
                None if ch == '#' && prev.is_whitespace() => {
                    out.push((n + 1, line[i..].to_string()));
                    break;
                }
                None => {}
            }
            prev = ch;
        }
    }
    out
}

/// Lines of Rust doc comments (`///`, `//!`) whose sentence holds a measured quantity.
fn measured_numbers(lines: &[&str]) -> Vec<usize> {
    let mut flagged = BTreeSet::new();
    // Paragraphs: runs of doc-comment lines of one kind, split at an empty doc line.
    let mut para: Vec<(usize, String)> = Vec::new();
    let mut kind = "";
    let flush = |para: &mut Vec<(usize, String)>, flagged: &mut BTreeSet<usize>| {
        for line in measured_in_paragraph(para) {
            flagged.insert(line);
        }
        para.clear();
    };
    for (n, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let k = if t.starts_with("//!") {
            "//!"
        } else if t.starts_with("///") && !t.starts_with("////") {
            "///"
        } else {
            ""
        };
        let body = if k.is_empty() { "" } else { t[3..].trim() };
        if k.is_empty() || k != kind || body.is_empty() {
            flush(&mut para, &mut flagged);
        }
        kind = k;
        if !body.is_empty() {
            para.push((n + 1, body.to_string()));
        }
    }
    flush(&mut para, &mut flagged);
    flagged.into_iter().collect()
}

/// Splits a paragraph into sentences (at `.` followed by a space or the end) and returns the line
/// of the first quantity of each sentence that also shows a sign of measurement.
fn measured_in_paragraph(para: &[(usize, String)]) -> Vec<usize> {
    // The paragraph as one string, with the source line of every character.
    let mut s: Vec<char> = Vec::new();
    let mut line_of: Vec<usize> = Vec::new();
    for (line, body) in para {
        for ch in body.chars().chain(std::iter::once(' ')) {
            s.push(ch);
            line_of.push(*line);
        }
    }
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..=s.len() {
        let end = i == s.len() || (s[i] == '.' && s.get(i + 1).is_none_or(|c| c.is_whitespace()));
        if !end {
            continue;
        }
        let sentence: String = s[start..i].iter().collect();
        if let Some(q) = first_quantity(&sentence)
            && measured(&sentence)
        {
            let offset = start + sentence[..q].chars().count();
            out.push(line_of[offset.min(line_of.len() - 1)]);
        }
        start = i + 1;
    }
    out
}

/// Byte offset of the first quantity: a number (with an optional range and decimals) followed by
/// a time, bandwidth, percentage or × unit, and not a bound (`≤ 3 µs`, "within 1 s": a target or
/// a limit, which is what a doc comment should state).
fn first_quantity(s: &str) -> Option<usize> {
    const UNITS: &[&str] = &[
        "µs", "us", "ns", "ms", "s", "GB/s", "TB/s", "MB/s", "%", "×",
    ];
    const BOUNDS: &[&str] = &[
        "≤", "≥", "<", ">", "<=", ">=", "within", "at most", "at least",
    ];
    let b: Vec<(usize, char)> = s.char_indices().collect();
    let mut k = 0;
    while k < b.len() {
        let (pos, ch) = b[k];
        if !ch.is_ascii_digit() || (k > 0 && (is_word(b[k - 1].1) || b[k - 1].1 == '.')) {
            k += 1;
            continue;
        }
        // The number, with decimals and a range ("12–27", "3-4", "0.6 → 1.8" is two numbers).
        let mut j = k;
        while j < b.len()
            && (b[j].1.is_ascii_digit()
                || b[j].1 == '.'
                || b[j].1 == ','
                || b[j].1 == '–'
                || b[j].1 == '-')
        {
            j += 1;
        }
        let rest = &s[b.get(j).map_or(s.len(), |x| x.0)..];
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let unit = UNITS.iter().find(|u| {
            rest.starts_with(**u)
                && !rest[u.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| is_word(c) && c != 's')
        });
        // "s" alone must end the word: "2 s" yes, "2 steps" no.
        let unit = unit.filter(|u| **u != "s" || !rest[1..].chars().next().is_some_and(is_word));
        let bound = BOUNDS.iter().any(|w| {
            let before = s[..pos].trim_end();
            before.ends_with(w)
                && !before[..before.len() - w.len()]
                    .chars()
                    .next_back()
                    .is_some_and(is_word)
        });
        if unit.is_some() && !bound {
            return Some(pos);
        }
        k = j.max(k + 1);
    }
    None
}

/// Whether a sentence says its number was measured.
fn measured(s: &str) -> bool {
    let approx = ["≈", "~"].iter().any(|m| {
        s.match_indices(m).any(|(i, _)| {
            s[i + m.len()..]
                .trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
    });
    let lower = s.to_ascii_lowercase();
    let words = ["about ", "roughly ", "approximately "].iter().any(|w| {
        lower.match_indices(w).any(|(i, _)| {
            !lower[..i].chars().next_back().is_some_and(is_word)
                && lower[i + w.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
        })
    });
    let measured_word = lower.match_indices("measured").any(|(i, _)| {
        !lower[..i].chars().next_back().is_some_and(is_word)
            && !lower[..i].trim_end().ends_with("not")
            && !lower[i + 8..].chars().next().is_some_and(is_word)
    });
    approx
        || words
        || GPU_MODELS
            .iter()
            .any(|g| contains_word(s, g) || s.contains(&format!("{g}/")))
        || measured_word
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> BTreeSet<String> {
        ["README.md", "hardware-facts.md", "gates.md"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn rules(path: &str, text: &str) -> Vec<(usize, &'static str)> {
        check_file(path, text, &names())
            .into_iter()
            .map(|h| (h.line, h.rule))
            .collect()
    }

    #[test]
    fn outside_notes_and_paths_are_flagged_repository_pages_are_not() {
        assert_eq!(rules("a.md", "as GPU.md says"), vec![(1, "outside-file")]);
        assert_eq!(rules("a.rs", "// see DESIGN.md"), vec![(1, "outside-file")]);
        assert_eq!(
            rules("a.md", "see `../shared/GPU.md`"),
            vec![(1, "outside-file")]
        );
        assert_eq!(
            rules("a.c", "/* ../../../shared/notes */"),
            vec![(1, "outside-file")]
        );
        assert_eq!(
            rules("a.md", "see [gates](gates.md) and docs/hardware-facts.md"),
            vec![]
        );
        assert_eq!(rules("a.md", "see METHOD.md"), vec![(1, "outside-file")]);
        assert_eq!(
            rules("a.md", "https://github.com/x/y/blob/main/CONTRIBUTING.md"),
            vec![]
        );
        assert_eq!(rules("a.md", "all docs/*.md pages"), vec![]);
        let mut with_style = names();
        with_style.insert("STYLE.md".into());
        assert!(check_file("a.md", "see STYLE.md", &with_style).is_empty());
    }

    #[test]
    fn issue_numbers_are_flagged_verbs_are_not() {
        for t in [
            "Summary (issue 7's target: ...)",
            "### Several GPUs (issue 13)",
            "(issues 6, 8, 11)",
            "Issue 8's target is 3 us",
            "fixed in issue #19",
            "see PR #4",
            "pull request 12 added it",
        ] {
            assert_eq!(rules("a.md", t), vec![(1, "issue-number")], "{t}");
        }
        for t in [
            "the 32 producer threads issue 16-byte copies",
            "thread 0 issues one load",
            "a known issue",
            "the issuer",
            "PR 4",
        ] {
            assert_eq!(rules("a.rs", &format!("// {t}")), vec![], "{t}");
        }
        assert_eq!(
            rules("a.md", "a line saying whether issue\n7's targets are met"),
            vec![(1, "issue-number")]
        );
        assert_eq!(
            rules("a.rs", "// the producer warp may issue\n// 16-byte copies"),
            vec![]
        );
    }

    #[test]
    fn private_phrases_are_flagged_an_rng_seed_is_not() {
        assert_eq!(
            rules("a.md", "as the soundness issue asks"),
            vec![(1, "private-phrase")]
        );
        assert_eq!(
            rules("a.rs", "/// Timing, as in the seed:"),
            vec![(1, "private-phrase")]
        );
        assert_eq!(
            rules("a.rs", "let seed = seed(); // print the RNG seed"),
            vec![]
        );
        assert_eq!(rules("a.rs", "/// A seed that differs per run"), vec![]);
    }

    #[test]
    fn commit_hashes_in_prose_and_comments_are_flagged_data_is_not() {
        assert_eq!(
            rules("a.md", "| commit | `040f1d4` (bench bundle) |"),
            vec![(1, "commit-hash")]
        );
        assert_eq!(
            rules("a.md", "the bundles reported `edc22ba-dirty`"),
            vec![(1, "commit-hash")]
        );
        assert_eq!(
            rules("a.rs", "let x = 1; // fixed in 0887eed"),
            vec![(1, "commit-hash")]
        );
        assert_eq!(
            rules("a.c", "/* since\n * e80a1ef0 */"),
            vec![(2, "commit-hash")]
        );
        assert_eq!(
            rules("run", "#!/bin/bash\n# at 27c1917\necho ok"),
            vec![(2, "commit-hash")]
        );
        // Data, not prose: code, hex literals, fingerprints outside comments, fenced blocks.
        assert_eq!(rules("a.rs", "const K: u64 = 0xd6e8feb86659fd93;"), vec![]);
        assert_eq!(rules("a.rs", "let s = \"// 268ee35aeafdcb05\";"), vec![]);
        assert_eq!(
            rules(
                "a.c",
                "u64 s = mix(v * 0xD6E8FEB86659FD93ull); // 0x1860 offsets"
            ),
            vec![]
        );
        assert_eq!(
            rules("manifest.txt", "sources fnv1a64:268ee35aeafdcb05"),
            vec![]
        );
        assert_eq!(rules("a.md", "```\ngit checkout 040f1d4\n```\n"), vec![]);
        // Not hashes: no digit, no letter, too short, part of a longer word.
        assert_eq!(
            rules("a.md", "deadbeef 1234567 abc123 fnv1a64 x040f1d4y"),
            vec![]
        );
        assert_eq!(
            rules("a.rs", "let r = r#\"// 040f1d4\"#; let c = '\"'; // ok"),
            vec![]
        );
    }

    #[test]
    fn measured_numbers_in_doc_comments_are_flagged_parameters_are_not() {
        assert_eq!(
            rules("a.rs", "/// the work starts ≈ 2 µs after the signal"),
            vec![(1, "measured-number")]
        );
        assert_eq!(
            rules("a.rs", "//! replays about 3 × faster\n//! on an H100."),
            vec![(1, "measured-number")]
        );
        assert_eq!(
            rules(
                "a.rs",
                "/// The host function runs\n/// 12–27 µs after it is reached on an H100."
            ),
            vec![(2, "measured-number")]
        );
        assert_eq!(
            rules("a.rs", "/// (≈ 1 % of copy bandwidth per poller)"),
            vec![(1, "measured-number")]
        );
        // Parameters and limits, and plain comments, are not measurements.
        assert_eq!(
            rules(
                "a.rs",
                "/// spins 100 µs by default, then sleeps 20–200 µs."
            ),
            vec![]
        );
        assert_eq!(
            rules(
                "a.rs",
                "/// 30 ms after launch its output is still poisoned."
            ),
            vec![]
        );
        assert_eq!(rules("a.rs", "// on 2 cores: ≈ 43 s one at a time"), vec![]);
        assert_eq!(
            rules("a.rs", "/// Needs an H100/H200.\n/// Within 1 s."),
            vec![]
        );
        assert_eq!(
            rules(
                "a.rs",
                "/// ≈ 2 µs\n///\n/// on an H100 (another paragraph)"
            ),
            vec![(1, "measured-number")]
        );
        assert_eq!(
            rules(
                "a.rs",
                "/// sooner; see docs/hardware-facts.md in the repository."
            ),
            vec![]
        );
        // Targets and limits are bounds, not measurements.
        assert_eq!(
            rules(
                "a.rs",
                "/// The target is ≤ 3 µs p50 on an H100; measured figures elsewhere."
            ),
            vec![]
        );
        assert_eq!(
            rules(
                "a.rs",
                "/// It must exit within 1 s (start-up is not measured)."
            ),
            vec![]
        );
        assert_eq!(
            rules("a.rs", "/// It took 4 µs, measured on one GPU."),
            vec![(1, "measured-number")]
        );
        assert_eq!(
            rules("a.rs", "//! rows copied about 15% slower in the benchmark."),
            vec![(1, "measured-number")]
        );
    }
}
