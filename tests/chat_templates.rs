//! gpt-fast's chat template renderer against Hugging Face transformers on
//! every template in llama.cpp's `models/templates/` (llama-cpp-python
//! 0.3.36 sdist, fetched once by tools/fetch-llamacpp-src.sh).
//!
//! tests/fixtures/chat-templates/expected.json holds what transformers'
//! `render_jinja_template` (jinja2) produced for each template and a few
//! conversations (tools/fixtures/chat_templates.py). For each pair:
//! - transformers rendered: gpt-fast must render the same bytes, or fail with
//!   a one-line error (a template using what minijinja lacks);
//! - the template refused the conversation itself (`raise_exception`):
//!   gpt-fast must refuse it too;
//! - jinja2 failed otherwise (a template bug, e.g. iterating `tools` when it
//!   is None): counted, either outcome accepted.
//!
//! The counts are printed (`cargo test --test chat_templates -- --nocapture`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use gpt_fast::chat::{ChatTemplate, SpecialTokens};
use minijinja::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn templates_dir() -> PathBuf {
    let out =
        Command::new(root().join("tools/fetch-llamacpp-src.sh")).output().expect("run tools/fetch-llamacpp-src.sh");
    assert!(out.status.success(), "fetch-llamacpp-src.sh: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("models/templates")
}

fn str_of(value: &Value, key: &str) -> String {
    value.get_attr(key).unwrap().as_str().unwrap_or_else(|| panic!("{key} is not a string")).to_string()
}

#[derive(Default)]
struct Counts {
    matched: usize,
    unsupported: Vec<String>,
    mismatched: Vec<String>,
    both_refused: usize,
    refusal_missed: Vec<String>,
    reference_failed: Vec<String>,
}

#[test]
fn every_llama_cpp_template_renders_as_transformers_does() {
    // minijinja's Value keeps the fixture's key order (preserve_order), which
    // tojson output depends on; serde_json's own Value would sort the keys.
    let text = std::fs::read_to_string(root().join("tests/fixtures/chat-templates/expected.json")).unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let now = chrono::NaiveDateTime::parse_from_str(&str_of(&fixture, "now"), "%Y-%m-%dT%H:%M:%S").unwrap();
    let tokens = SpecialTokens {
        bos: Some(str_of(&fixture, "bos_token")),
        eos: Some(str_of(&fixture, "eos_token")),
        ..Default::default()
    };
    let conversations = fixture.get_attr("conversations").unwrap();
    let templates = fixture.get_attr("templates").unwrap();
    let dir = templates_dir();

    let mut counts = Counts::default();
    let mut template_names = Vec::new();
    for name in templates.try_iter().unwrap() {
        let name = name.as_str().unwrap().to_string();
        let entry = templates.get_attr(&name).unwrap();
        let source = std::fs::read_to_string(dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let crc = entry.get_attr("crc32").unwrap().as_i64().unwrap() as u32;
        assert_eq!(crc32fast::hash(source.as_bytes()), crc, "{name}: not the template the fixture was made from");
        template_names.push(name.clone());

        let compiled = ChatTemplate::with_clock(&source, tokens.clone(), Arc::new(move || now));
        let renders = entry.get_attr("renders").unwrap();
        for conv_name in renders.try_iter().unwrap() {
            let conv_name = conv_name.as_str().unwrap().to_string();
            let conv = conversations.get_attr(&conv_name).unwrap();
            let want = renders.get_attr(&conv_name).unwrap();
            let tools = conv.get_attr("tools").ok().filter(|t| !t.is_undefined());
            let got = compiled.as_ref().map_err(Clone::clone).and_then(|t| {
                t.render_values(
                    conv.get_attr("messages").unwrap(),
                    tools,
                    conv.get_attr("add_generation_prompt").unwrap().is_true(),
                )
            });
            let case = format!("{name} / {conv_name}");
            if let Some(err) = &got.as_ref().err() {
                assert!(!err.to_string().contains('\n'), "{case}: error is not one line: {err}");
            }
            match (want.get_attr("ok").ok().filter(|v| !v.is_undefined()), got) {
                (Some(expected), Ok(got)) if got == expected.as_str().unwrap() => counts.matched += 1,
                (Some(expected), Ok(got)) => counts
                    .mismatched
                    .push(format!("{case}:\n--- transformers\n{}\n--- gpt-fast\n{got}", expected.as_str().unwrap())),
                (Some(_), Err(err)) => counts.unsupported.push(format!("{case}: {err}")),
                (None, got) => {
                    let reference = str_of(&want, "error");
                    match (reference.starts_with("TemplateError:"), got) {
                        (_, Err(_)) => counts.both_refused += 1,
                        (true, Ok(_)) => counts.refusal_missed.push(format!("{case}: transformers {reference}")),
                        (false, Ok(_)) => counts.reference_failed.push(format!("{case}: transformers {reference}")),
                    }
                }
            }
        }
    }
    let total: usize = counts.matched + counts.unsupported.len() + counts.mismatched.len();
    eprintln!(
        "{} templates: {} of {} renders that transformers produced are byte-identical, {} unsupported by minijinja, \
         {} differ; {} refused by both, {} refusals missed, {} failed in jinja2 only",
        template_names.len(),
        counts.matched,
        total,
        counts.unsupported.len(),
        counts.mismatched.len(),
        counts.both_refused,
        counts.refusal_missed.len(),
        counts.reference_failed.len()
    );
    for line in &counts.unsupported {
        eprintln!("unsupported: {line}");
    }
    for line in &counts.reference_failed {
        eprintln!("failed in jinja2 only: {line}");
    }
    assert!(
        counts.mismatched.is_empty(),
        "{} renders differ:\n{}",
        counts.mismatched.len(),
        counts.mismatched.join("\n")
    );
    assert!(counts.refusal_missed.is_empty(), "refusals missed: {:#?}", counts.refusal_missed);
    // A floor, so support cannot quietly regress into errors: 328 of the 329
    // renders matched when this test was written (the one left relies on
    // jinja2's Markup escaping; see `Markup` in src/chat/mod.rs).
    assert!(counts.matched >= 328, "only {} renders match (328 did)", counts.matched);
    // Every template in the directory is covered by the fixture.
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jinja"))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, template_names, "the fixture and the templates directory disagree");
}

/// The built-ins for model files without a template render every
/// conversation exactly as llama.cpp's built-in of the same name
/// (tests/fixtures/chat-templates/defaults.json, tools/fixtures/chat_defaults.py).
#[test]
fn built_in_defaults_render_as_llama_cpp_does() {
    let text = std::fs::read_to_string(root().join("tests/fixtures/chat-templates/defaults.json")).unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let conversations = fixture.get_attr("conversations").unwrap();
    let renders = fixture.get_attr("renders").unwrap();
    let mut checked = 0;
    for default in gpt_fast::chat::defaults::ALL {
        let template = ChatTemplate::new(default.source, SpecialTokens::default()).unwrap();
        let expected = renders.get_attr(default.name).unwrap();
        assert!(!expected.is_undefined(), "{}: not in the fixture", default.name);
        for conv_name in conversations.try_iter().unwrap() {
            let conv = conversations.get_attr(conv_name.as_str().unwrap()).unwrap();
            let got = template
                .render_values(
                    conv.get_attr("messages").unwrap(),
                    None,
                    conv.get_attr("add_generation_prompt").unwrap().is_true(),
                )
                .unwrap();
            let want = expected.get_attr(conv_name.as_str().unwrap()).unwrap();
            assert_eq!(got, want.as_str().unwrap(), "{} / {conv_name}", default.name);
            checked += 1;
        }
    }
    assert_eq!(checked, 16);
}
