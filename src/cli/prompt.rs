//! Reading prompt text from `-p` or `-f`, with clear errors.

use std::path::Path;

pub fn read_text(prompt: Option<&str>, file: Option<&Path>) -> Result<String, String> {
    match (prompt, file) {
        (Some(p), None) => Ok(p.to_string()),
        (None, Some(path)) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            String::from_utf8(bytes).map_err(|e| {
                format!("{}: not valid UTF-8 (invalid byte at offset {})", path.display(), e.utf8_error().valid_up_to())
            })
        }
        (None, None) => Err("no prompt: give -p TEXT or -f FILE".into()),
        (Some(_), Some(_)) => Err("give -p or -f, not both".into()),
    }
}
