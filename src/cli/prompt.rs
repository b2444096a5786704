//! Reading prompt text from `-p` or `-f` (a regular file, or `-` for
//! standard input), bounded and with clear errors.

use std::io::Read;
use std::path::Path;

use super::values::MAX_TEXT_BYTES;

pub fn read_text(prompt: Option<&str>, file: Option<&Path>) -> Result<String, String> {
    match (prompt, file) {
        (Some(p), None) => Ok(p.to_string()),
        (None, Some(path)) => {
            let (name, bytes) = if path == Path::new("-") {
                ("standard input".to_string(), read_bounded(std::io::stdin().lock(), "standard input")?)
            } else {
                let name = path.display().to_string();
                // A device or FIFO could block or never end.
                let meta = std::fs::metadata(path).map_err(|e| format!("{name}: {e}"))?;
                if !meta.is_file() {
                    return Err(format!("{name}: not a regular file (-f takes a text file, or - for standard input)"));
                }
                let file = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
                let bytes = read_bounded(file, &name)?;
                (name, bytes)
            };
            String::from_utf8(bytes).map_err(|e| {
                format!("{name}: not valid UTF-8 (invalid byte at offset {})", e.utf8_error().valid_up_to())
            })
        }
        (None, None) => Err("no prompt: give -p TEXT or -f FILE".into()),
        (Some(_), Some(_)) => Err("give -p or -f, not both".into()),
    }
}

fn read_bounded(reader: impl Read, name: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    reader.take(MAX_TEXT_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(format!("{name}: more than {} MiB, the most -f reads", MAX_TEXT_BYTES >> 20));
    }
    Ok(bytes)
}
