//! `gpt-fast chat` as a user drives it: under a pseudo-terminal (rexpect), on
//! the real SmolLM2-135M-Instruct GGUF (tools/fetch-model.sh) given as it is
//! (converted once into a cache private to this test binary), greedy.
//! Checks that a second turn evaluates only its new tokens and answers from
//! the first, /reset, /save and /load (with the KV cache), multi-line input,
//! Ctrl-C stopping a reply and the chat going on, Ctrl-C twice at the prompt
//! and Ctrl-D exiting with 0.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gpt_fast::chat::{self, ChatTemplate, Message};
use gpt_fast::model::{Model, ModelOptions};
use rexpect::session::{spawn_command, PtySession};

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chat-repl-{name}-{}", std::process::id()))
}

fn cache_home() -> PathBuf {
    tmp("cache")
}

/// The GGUF, and the gpt-fast file `chat` converts it to in the cache
/// (found by `gpt-fast info`, which goes through the same cache).
fn models() -> &'static (PathBuf, PathBuf) {
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS.get_or_init(|| {
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fetch-model.sh"))
            .output()
            .expect("run tools/fetch-model.sh");
        assert!(out.status.success(), "fetch-model.sh: {}", String::from_utf8_lossy(&out.stderr));
        let gguf = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let info = Command::new(env!("CARGO_BIN_EXE_gpt-fast"))
            .arg("info")
            .arg(&gguf)
            .env("XDG_CACHE_HOME", cache_home())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&info.stderr);
        assert!(info.status.success(), "{stderr}");
        let converted = stderr.split("into ").nth(1).expect("the cache path").lines().next().unwrap();
        (gguf, PathBuf::from(converted.trim()))
    })
}

fn spawn(args: &[&str]) -> PtySession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gpt-fast"));
    command.arg("chat").arg(&models().0).args(["--temp", "0", "-t", "2"]).args(args);
    command.env("XDG_CACHE_HOME", cache_home()).env("TERM", "xterm").env_remove("GPT_FAST_ISA");
    let mut session = spawn_command(command, Some(180_000)).expect("spawn gpt-fast chat");
    session.exp_string("chatting with").expect("the greeting");
    session.exp_string("> ").expect("the first prompt");
    session
}

struct Turn {
    reply: String,
    evaluated: usize,
    kept: usize,
    generated: usize,
    /// Whether -n ended the reply (else the model did, with a token the
    /// next turn evaluates first).
    n_reached: bool,
}

impl Turn {
    /// Tokens in the KV cache after the turn: the reply's last sampled
    /// token is evaluated with the next turn, the end-of-turn one too.
    fn cached_after(&self) -> usize {
        self.kept + self.evaluated + self.generated - usize::from(self.n_reached)
    }
}

/// Sends a user turn; the reply as printed and the costs line after it.
fn turn(session: &mut PtySession, text: &str) -> Turn {
    session.send_line(text).unwrap();
    let (before, line) =
        session.exp_regex(r"\[prompt: \d+ tokens evaluated, \d+ kept[^\]]*\]").expect("the turn's costs");
    let numbers: Vec<usize> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    session.exp_string("> ").expect("the prompt after a reply");
    let n_reached = line.contains("-n reached");
    Turn { reply: before, evaluated: numbers[0], kept: numbers[1], generated: numbers[2], n_reached }
}

fn command(session: &mut PtySession, line: &str, expect: &str) {
    session.send_line(line).unwrap();
    session.exp_string(expect).unwrap_or_else(|e| panic!("{line}: {e}"));
    session.exp_string("> ").unwrap();
}

fn exits_zero(session: &mut PtySession) {
    session.exp_eof().expect("the REPL exits");
    match session.process.wait().unwrap() {
        rexpect::process::wait::WaitStatus::Exited(_, 0) => {}
        other => panic!("exit status {other:?}"),
    }
}

fn tokens(model: &Model, text: &str) -> usize {
    model.tokenizer().encode(text, true).len()
}

fn saved_messages(path: &Path) -> Vec<Message> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let messages = json["messages"].as_array().unwrap().iter();
    messages.map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap())).collect()
}

#[test]
fn a_second_turn_continues_the_cache_and_answers_from_the_first() {
    let saved = tmp("saved.json");
    let mut session = spawn(&["--system", "You are a helpful assistant.", "-n", "40"]);
    let first = turn(&mut session, "My cat is called Whiskerbottom. Please remember that.");
    assert_eq!(first.kept, 0, "nothing to keep on the first turn");
    let second = turn(&mut session, "What is my cat called?");
    assert!(second.reply.contains("Whiskerbottom"), "the second reply does not use the first: {}", second.reply);
    command(&mut session, &format!("/save {}", saved.display()), "5 messages saved");

    // Exactly what the first turn did not hold was evaluated: the library's
    // rendering of the conversation, less the first turn's prompt and reply
    // (the reply's last token was sampled, not evaluated: it comes first).
    let model = Model::open(&models().1, ModelOptions::default()).unwrap();
    let spec = model.file().tokenizer();
    let template = ChatTemplate::for_tokenizer(spec).unwrap();
    let messages = saved_messages(&saved);
    assert_eq!(messages[0], Message::new("system", "You are a helpful assistant."));
    let render = |n: usize| chat::strip_leading_bos(&template.render(&messages[..n], true).unwrap(), spec).to_string();
    assert_eq!(first.evaluated, model.tokenizer().encode_prompt(&render(2), true).len());
    let mut held = render(2) + &messages[2].content;
    if !first.n_reached {
        held.push_str(&String::from_utf8_lossy(model.tokenizer().token_bytes(spec.eos_id.unwrap()).unwrap()));
    }
    let new_text = render(4).strip_prefix(&held).expect("the second rendering extends the first").to_string();
    assert_eq!(second.kept, first.cached_after(), "the first turn kept whole");
    assert_eq!(second.evaluated, 1 + tokens(&model, &new_text), "only the new turn evaluated: {new_text:?}");

    command(&mut session, "/reset", "conversation reset");
    let forgotten = turn(&mut session, "What is my cat called?");
    assert_eq!(forgotten.kept, 0, "/reset empties the cache");
    assert!(!forgotten.reply.contains("Whiskerbottom"), "/reset forgets the conversation: {}", forgotten.reply);
    command(&mut session, "/system", "[system: You are a helpful assistant.]");
    command(&mut session, "/frobnicate", "unknown command /frobnicate");
    session.send_control('d').unwrap();
    exits_zero(&mut session);

    // A loaded conversation goes on from its saved KV cache; the next
    // message here spans two lines.
    let mut session = spawn(&["-n", "8"]);
    command(&mut session, "/load /nonexistent/chat.json", "/nonexistent/chat.json: No such file");
    command(&mut session, &format!("/load {}", saved.display()), "5 messages loaded");
    // rustyline drops what was typed ahead of its prompt, as a terminal
    // user never does: the second line waits for the continuation prompt.
    session.send_line("Thank you. \\").unwrap();
    session.exp_string(". ").expect("the continuation prompt");
    let after_load = turn(&mut session, "And goodbye.");
    assert_eq!(after_load.kept, second.cached_after(), "the saved cache loaded");
    command(&mut session, &format!("/save {}", saved.display()), "7 messages saved");
    assert_eq!(saved_messages(&saved)[5], Message::new("user", "Thank you. \nAnd goodbye."));
    session.send_line("/exit").unwrap();
    exits_zero(&mut session);
    let state = PathBuf::from(format!("{}.state", saved.display()));
    assert!(state.is_file(), "/save writes the KV cache beside the conversation");
    let _ = std::fs::remove_file(state);
    let _ = std::fs::remove_file(&saved);
}

#[test]
fn ctrl_c_stops_a_reply_and_the_chat_goes_on() {
    let mut session = spawn(&["-n", "4000"]);
    session.send_line("Count from 1 to 1000, one number per line.").unwrap();
    session.exp_string("12").expect("the reply streams");
    session.send_control('c').unwrap();
    session.exp_string("interrupted]").expect("the reply stops at Ctrl-C");
    session.exp_string("> ").expect("back at the prompt");
    // The stopped reply is part of the conversation, kept in the cache.
    let next = turn(&mut session, "Thanks.");
    assert!(next.kept > 0);
    session.send_control('c').unwrap();
    session.exp_string("Ctrl-C again").unwrap();
    session.send_control('c').unwrap();
    exits_zero(&mut session);
}
