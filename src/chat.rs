//! Wrapping a user message in the model's chat template.
//!
//! gpt-fast does not embed a Jinja engine: it recognises the template families
//! it supports from the template text and formats them directly. ChatML
//! (`<|im_start|>role\n…<|im_end|>\n`, SmolLM2-Instruct's) is one; a default
//! system message written into the template (SmolLM2's "You are a helpful AI
//! assistant named SmolLM…") is taken from it, as the template would insert it.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChatError {
    #[error("the model has no chat template")]
    NoTemplate,
    #[error("unsupported chat template (gpt-fast formats ChatML templates); use a plain prompt instead")]
    Unsupported,
}

const SYSTEM_OPEN: &str = "<|im_start|>system\n";
const END: &str = "<|im_end|>";

/// The prompt for one user turn, ready for generation (ends with the
/// assistant's turn opened).
pub fn user_turn(template: &str, message: &str) -> Result<String, ChatError> {
    if template.trim().is_empty() {
        return Err(ChatError::NoTemplate);
    }
    if !template.contains("<|im_start|>") {
        return Err(ChatError::Unsupported);
    }
    let mut out = String::new();
    if let Some(system) = default_system(template) {
        out.push_str(SYSTEM_OPEN);
        out.push_str(&system);
        out.push_str(END);
        out.push('\n');
    }
    out.push_str("<|im_start|>user\n");
    out.push_str(message);
    out.push_str(END);
    out.push_str("\n<|im_start|>assistant\n");
    Ok(out)
}

/// The default system message a ChatML template writes literally, if any.
/// Jinja string literals spell a newline as `\n` (two characters) or as a
/// real line break; both are accepted.
fn default_system(template: &str) -> Option<String> {
    let unescaped = template.replace("\\n", "\n");
    let start = unescaped.find(SYSTEM_OPEN)? + SYSTEM_OPEN.len();
    let len = unescaped[start..].find(END)?;
    let system = &unescaped[start..start + len];
    // A template that inserts a variable here has no literal default.
    (!system.contains("{{") && !system.contains('\'') && !system.is_empty()).then(|| system.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_user_turn_matches_its_template() {
        assert_eq!(
            user_turn(SMOLLM2, "Hi").unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn plain_chatml_and_unsupported_templates() {
        let plain = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}";
        assert_eq!(user_turn(plain, "x").unwrap(), "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(user_turn("", "x").unwrap_err(), ChatError::NoTemplate);
        assert_eq!(user_turn("[INST] {{ m }} [/INST]", "x").unwrap_err(), ChatError::Unsupported);
    }
}
