//! Parsers and limits for the numbers on the command line, with llama.cpp's
//! conventions (`-n -1`, `--seed -1`, `--repeat-last-n -1`), so that a value
//! out of range is a usage error naming the range, never a panic or an
//! allocation the machine cannot make.

/// Largest `-c` (and bench length) accepted here; the model's trained length
/// is checked when the session is made.
pub const MAX_CONTEXT: usize = 1 << 24;
/// Largest `-n` other than -1: llama.cpp's (a C int).
pub const MAX_PREDICT: u64 = i32::MAX as u64;
/// Largest `-t`.
pub const MAX_THREADS: usize = 1024;
/// Largest prompt or text read with `-f` (or from standard input).
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// A value that may be "none" on the command line (`-1`). A newtype, since
/// clap's derive takes an `Option` field for an optional argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrNone<T>(pub Option<T>);

/// `-n`: a count of tokens, or -1 for no limit.
pub fn n_predict(s: &str) -> Result<OrNone<u64>, String> {
    if s.trim() == "-1" {
        return Ok(OrNone(None));
    }
    match s.trim().parse::<u64>() {
        Ok(n @ 1..=MAX_PREDICT) => Ok(OrNone(Some(n))),
        _ => Err(format!("takes -1 (until end of text or a full context) or 1 to {MAX_PREDICT}")),
    }
}

/// `--seed`: a number, or -1 for a random seed.
pub fn seed(s: &str) -> Result<OrNone<u64>, String> {
    match s.trim() {
        "-1" => Ok(OrNone(None)),
        t => t.parse::<u64>().map(|n| OrNone(Some(n))).map_err(|_| format!("takes -1 (random) or 0 to {}", u64::MAX)),
    }
}

/// `--repeat-last-n`: how many recent tokens the penalty looks at; 0 is
/// none, -1 the whole context.
pub fn repeat_last_n(s: &str) -> Result<OrNone<usize>, String> {
    match s.trim() {
        "-1" => Ok(OrNone(None)),
        t => match t.parse::<usize>() {
            Ok(n) if n <= MAX_CONTEXT => Ok(OrNone(Some(n))),
            _ => Err(format!("takes -1 (the whole context), 0 (off) or up to {MAX_CONTEXT}")),
        },
    }
}

/// `--temp`: 0 is greedy; a negative temperature means nothing.
pub fn temperature(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err("takes a number >= 0 (0: greedy, always the most likely token)".into()),
    }
}

/// `-c` for `run`: 0 is the model's own (at most 4096).
pub fn ctx_size(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= MAX_CONTEXT => Ok(n),
        _ => Err(format!("takes 0 (the model's trained length, at most 4096) or 2 to {MAX_CONTEXT}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_conventions_and_ranges() {
        assert_eq!(n_predict("-1"), Ok(OrNone(None)));
        assert_eq!(n_predict("32"), Ok(OrNone(Some(32))));
        assert!(n_predict("0").is_err() && n_predict("-2").is_err() && n_predict("18446744073709551615").is_err());
        assert_eq!(seed("-1"), Ok(OrNone(None)));
        assert_eq!(seed("7"), Ok(OrNone(Some(7))));
        assert!(seed("-7").is_err());
        assert_eq!(repeat_last_n("-1"), Ok(OrNone(None)));
        assert_eq!(repeat_last_n("0"), Ok(OrNone(Some(0))));
        assert!(temperature("-1").is_err() && temperature("nan").is_err());
        assert_eq!(temperature("0"), Ok(0.0));
        assert!(ctx_size("100000000").is_err());
    }
}
