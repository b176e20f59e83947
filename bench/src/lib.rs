//! Benchmarks of the session crates: the app every variant serves, the raw
//! store handlers, per-variant setup, and small helpers the binaries share.
//!
//! See `BENCHMARKS.md` at the repository root for the commands and results.

pub mod app;
pub mod raw;
pub mod setup;
pub mod sys;

/// The error type of the harness: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Replaces the text between `<!-- {name}:begin -->` and `<!-- {name}:end -->`
/// in the file at `path` with `body` (appending the marked section when it
/// is missing, creating the file when needed), so each binary updates its
/// own section of `BENCHMARKS.md` and leaves the rest alone.
///
/// # Errors
///
/// Reading or writing the file.
pub fn write_section(path: &std::path::Path, name: &str, body: &str) -> std::io::Result<()> {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &old[..b], &old[e + end.len()..]),
        _ if old.is_empty() => format!("{section}\n"),
        _ => format!("{}\n\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new)
}
