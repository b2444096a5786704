//! The template a model file without one gets (Gemma 3 270M's GGUF has
//! none), chosen by the turn markers its vocabulary holds: a model answers
//! only in the turn format it was tuned on, so ChatML is the default only
//! for vocabularies that have no other format's markers.
//!
//! Each renders exactly as llama.cpp's built-in template of the same name
//! (`llm_chat_apply_template` in `src/llama-chat.cpp`), checked by
//! tests/chat_templates.rs against llama.cpp itself
//! (tools/fixtures/chat_defaults.py). None writes BOS: the prompt encoder adds
//! it when the model says so.

/// A built-in template and the vocabulary markers that select it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultTemplate {
    /// llama.cpp's name for the same format (`--chat-template NAME`).
    pub name: &'static str,
    pub source: &'static str,
    /// Tokens the vocabulary must all hold for this format to be chosen.
    markers: &'static [&'static str],
}

/// Gemma: no system role (a system message is merged into the first user
/// turn), the assistant is `model`, contents trimmed.
const GEMMA: DefaultTemplate = DefaultTemplate {
    name: "gemma",
    source: "{% set ns = namespace(system='') %}\
{% for message in messages %}\
{% if message['role'] == 'system' %}{% set ns.system = ns.system + message['content'] | trim %}\
{% else %}\
{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}\
{{ '<start_of_turn>' + role + '\\n' }}\
{% if ns.system and role != 'model' %}{{ ns.system + '\\n\\n' }}{% set ns.system = '' %}{% endif %}\
{{ message['content'] | trim + '<end_of_turn>\\n' }}\
{% endif %}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}",
    markers: &["<start_of_turn>", "<end_of_turn>"],
};

/// Llama 3: headers around the role, contents trimmed.
const LLAMA3: DefaultTemplate = DefaultTemplate {
    name: "llama3",
    source: "{% for message in messages %}\
{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    markers: &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
};

/// Phi-3: `<|role|>` lines, `<|end|>` after each turn.
const PHI3: DefaultTemplate = DefaultTemplate {
    name: "phi3",
    source: "{% for message in messages %}\
{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}",
    markers: &["<|user|>", "<|assistant|>", "<|end|>"],
};

/// ChatML (`<|im_start|>role\n…<|im_end|>\n`): Qwen's and SmolLM's format,
/// and llama.cpp's fallback for any other model.
pub const CHATML: DefaultTemplate = DefaultTemplate {
    name: "chatml",
    source: "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    markers: &[],
};

/// Every built-in, in the order they are tried; ChatML, which needs no
/// marker, last.
pub const ALL: [DefaultTemplate; 4] = [GEMMA, LLAMA3, PHI3, CHATML];

/// The built-in for a vocabulary (token texts by id).
pub fn for_vocabulary(tokens: &[Vec<u8>]) -> DefaultTemplate {
    let has = |marker: &str| tokens.iter().any(|t| t == marker.as_bytes());
    ALL.into_iter().find(|d| d.markers.iter().all(|m| has(m))).unwrap_or(CHATML)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn chosen_by_markers() {
        assert_eq!(for_vocabulary(&vocab(&["<bos>", "<start_of_turn>", "<end_of_turn>"])).name, "gemma");
        assert_eq!(for_vocabulary(&vocab(&["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])).name, "llama3");
        assert_eq!(for_vocabulary(&vocab(&["<s>", "<|user|>", "<|assistant|>", "<|end|>"])).name, "phi3");
        assert_eq!(for_vocabulary(&vocab(&["<|im_start|>", "<|im_end|>"])).name, "chatml");
        // One marker of a format is not enough.
        assert_eq!(for_vocabulary(&vocab(&["<start_of_turn>", "<|user|>"])).name, "chatml");
        assert_eq!(for_vocabulary(&[]).name, "chatml");
    }
}
