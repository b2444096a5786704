//! The tokens that end generation: the end-of-sequence token and the
//! end-of-turn tokens of chat models (Gemma's `<end_of_turn>`, Llama 3's
//! `<|eot_id|>`, ChatML's `<|im_end|>`, ...), which a chat model emits at the
//! end of its turn and which are not its EOS.
//!
//! Derived from the token texts when the tokenizer is built, as llama.cpp does
//! for its `special_eog_ids` (`src/llama-vocab.cpp`, "maintain a list of tokens
//! that cause end-of-generation"). Deriving, rather than storing ids in the
//! model file, means files converted before this existed stop at turn ends
//! too, and the set cannot disagree with the vocabulary it names.
//!
//! llama.cpp also adds GGUF's `eot_token_id` / `eom_token_id` when a file
//! sets them; every model we know of that sets them names one of the texts
//! below, so they are not carried.

/// Texts of tokens that end a turn or a document, from llama.cpp's list (the
/// families gpt-fast can run, or whose vocabularies it may meet).
/// Left out on purpose: `</s>` (llama.cpp lists it for PaddleOCR; it is EOS
/// where it matters, and a plain user-defined token in Gemma 3, id 212) and
/// gpt-oss's `<|return|>`/`<|call|>` (there `<|end|>` ends a message, not a
/// turn, so that family needs more than a list of texts).
const END_OF_TURN_TEXTS: &[&str] = &[
    "<|eot_id|>",            // Llama 3
    "<|eom_id|>",            // Llama 3.1, end of a tool-call message
    "<|im_end|>",            // ChatML: Qwen, SmolLM2
    "<|end|>",               // Phi-3
    "<end_of_turn>",         // Gemma
    "<|endoftext|>",         // GPT-2 style end of document
    "<|end_of_text|>",       // Granite, Llama 3 base
    "<EOT>",                 // CodeLlama infill
    "_<EOT>",                // CodeLlama infill, SentencePiece spelling
    "<end_of_utterance>",    // SmolDocling
    "<｜end▁of▁sentence｜>", // DeepSeek
];

/// The ids that end generation, ascending and without repeats: `eos_id` and
/// every token whose text is in [`END_OF_TURN_TEXTS`].
pub(crate) fn ids(tokens: &[Vec<u8>], eos_id: Option<u32>) -> Vec<u32> {
    let mut ids: Vec<u32> = tokens
        .iter()
        .enumerate()
        .filter(|(_, text)| END_OF_TURN_TEXTS.iter().any(|t| t.as_bytes() == text.as_slice()))
        .map(|(id, _)| id as u32)
        .chain(eos_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::ids;

    fn vocab(texts: &[&str]) -> Vec<Vec<u8>> {
        texts.iter().map(|t| t.as_bytes().to_vec()).collect()
    }

    #[test]
    fn eos_and_turn_ends_are_collected_once() {
        let tokens = vocab(&["<pad>", "<eos>", "<bos>", "<end_of_turn>", "</s>", "end_of_turn"]);
        assert_eq!(ids(&tokens, Some(1)), [1, 3]);
        assert_eq!(ids(&tokens, Some(3)), [3]);
        assert_eq!(ids(&tokens, None), [3]);
        assert_eq!(ids(&vocab(&["a", "b"]), None), Vec::<u32>::new());
    }
}
