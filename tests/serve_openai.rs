//! `gpt-fast serve` against the real `openai` Python client
//! (tools/serve/openai_client_test.py, with a venv made by
//! tools/serve/venv.sh from PyPI), on SmolLM2-135M-Instruct converted to q8:
//! streaming and not, text completions with log-probabilities, error bodies,
//! a disconnect, 4 and 8 concurrent streams (8 slots, batched) bit-identical to the same requests
//! alone. Then SIGTERM: the server exits 0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gpt_fast::format::DType;

fn fetch_and_convert() -> PathBuf {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fetch-model.sh"))
        .output()
        .expect("run tools/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh: {}", String::from_utf8_lossy(&out.stderr));
    let gguf = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let source = gpt_fast::import::from_gguf::GgufSource::open(&gguf).unwrap();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-smollm2-q8-{}.bin", std::process::id()));
    gpt_fast::import::convert::convert(&source, &gguf, &path, DType::Q8, |_, _, _| {}).unwrap();
    path
}

#[test]
fn the_openai_client_streams_errors_disconnects_and_runs_concurrently() {
    let venv = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/serve/venv.sh"))
        .output()
        .expect("run tools/serve/venv.sh");
    assert!(venv.status.success(), "venv.sh: {}", String::from_utf8_lossy(&venv.stderr));
    let python = String::from_utf8(venv.stdout).unwrap().trim().to_string();
    let model = fetch_and_convert();
    // Port 0 is not offered by the CLI: pick a free one by binding and releasing it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_gpt-fast"))
        .args(["serve", model.to_str().unwrap(), "--port", &port.to_string(), "-np", "8", "-c", "1024", "-t", "2"])
        .args(["--queue", "16", "--body-limit", "65536"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "the server ended before it was ready");
        eprint!("server: {line}");
        if line.contains("ready") {
            break;
        }
    }
    let logger = std::thread::spawn(move || {
        let mut all = String::new();
        for line in log.lines() {
            all.push_str(&line.unwrap());
            all.push('\n');
        }
        all
    });
    let client = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/serve/openai_client_test.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .status()
        .unwrap();
    // SIGTERM: stop accepting, finish what runs, exit 0.
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let status = server.wait().unwrap();
    let server_log = logger.join().unwrap();
    eprint!("{server_log}");
    let _ = std::fs::remove_file(&model);
    assert!(client.success(), "the openai client checks failed");
    assert!(status.success(), "the server's exit after SIGTERM: {status}");
    assert!(!server_log.contains("panicked"), "{server_log}");
}
