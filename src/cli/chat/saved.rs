//! `/save FILE` and `/load FILE`: the conversation as JSON in the shape of
//! OpenAI's `messages` (`{"messages": [{"role": …, "content": …}, …]}`), so a
//! saved chat can be sent as it is to `gpt-fast serve` or any other chat
//! completions endpoint; beside it, `FILE.state`, the KV cache
//! (`Session::save`), so a loaded chat goes on without evaluating it again.

use std::path::{Path, PathBuf};

use gpt_fast::chat::Message;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    messages: Vec<SavedMessage>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedMessage {
    role: String,
    content: String,
}

/// Most bytes `/load` reads: more text than any context holds.
const MAX_BYTES: u64 = 64 << 20;

/// Where the KV cache of the conversation saved at `path` goes.
pub fn state_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".state");
    PathBuf::from(name)
}

/// Writes the conversation to `path` (a temporary file renamed into place).
pub fn save(path: &Path, messages: &[Message]) -> Result<(), String> {
    crate::cli::check_output_path(path)?;
    let saved = Saved {
        messages: messages.iter().map(|m| SavedMessage { role: m.role.clone(), content: m.content.clone() }).collect(),
    };
    let mut json = serde_json::to_string_pretty(&saved).map_err(|e| format!("{}: {e}", path.display()))?;
    json.push('\n');
    gpt_fast::format::write_replacing(path, json.as_bytes()).map_err(|e| e.to_string())
}

/// Reads a conversation written by [`save`] (or by hand in that shape).
pub fn load(path: &Path) -> Result<Vec<Message>, String> {
    use std::io::Read;
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{name}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{name} is not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("{name}: more than {} MiB, larger than any conversation", MAX_BYTES >> 20));
    }
    let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| {
        format!("{name}: not a saved conversation ({e}); expected {{\"messages\": [{{\"role\": …, \"content\": …}}]}}")
    })?;
    Ok(saved.messages.into_iter().map(|m| Message::new(&m.role, &m.content)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_conversations_load_back_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("gpt-fast-saved-chat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chat.json");
        let messages = vec![Message::new("system", "Be brief."), Message::new("user", "Hi \"there\"\n")];
        save(&path, &messages).unwrap();
        assert_eq!(load(&path).unwrap(), messages);
        std::fs::write(&path, r#"{"messages": [{"role": "user"}]}"#).unwrap();
        assert!(load(&path).unwrap_err().contains("missing field `content`"), "{}", load(&path).unwrap_err());
        std::fs::write(&path, r#"{"messages": [{"role": "user", "content": 3}]}"#).unwrap();
        assert!(load(&path).unwrap_err().contains("invalid type"));
        assert!(load(&dir).unwrap_err().contains("not a regular file"));
        assert!(save(&dir.join("missing/chat.json"), &messages).unwrap_err().contains("does not exist"));
        assert_eq!(state_path(&path), dir.join("chat.json.state"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
