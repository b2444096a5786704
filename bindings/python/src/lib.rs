//! The `gpt_fast` Python module: `Model(path)` with `generate` (whole text or
//! a stream of pieces), `tokenize`, `detokenize` and `logits`.
//!
//! Every computation runs without the GIL. A model owns one worker thread
//! that holds its session (a [`Generator`] borrowing the model, so no
//! self-referential struct is needed): Python threads send it requests and
//! wait for answers with the GIL released, and a stream's pieces arrive
//! through a channel while Python does other work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use engine::{Flow, GenerateParams, Generator, ModelOptions, SamplerParams, SessionOptions};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(gpt_fast, Error, PyException, "A gpt-fast error: a bad model file, prompt or setting.");

fn error(message: impl std::fmt::Display) -> PyErr {
    Error::new_err(message.to_string())
}

enum Request {
    Generate { prompt: String, params: GenerateParams, pieces: Sender<Piece>, cancel: Arc<AtomicBool> },
    Logits { tokens: Vec<u32>, reply: Sender<Result<Vec<f32>, String>> },
}

enum Piece {
    Text(String),
    /// The last message of a generation: `Err` says why it failed.
    Done(Result<(), String>),
}

/// The worker's loop: one conversation, started afresh by each request.
fn serve(
    model: Arc<engine::Model>,
    options: SessionOptions,
    ready: Sender<Result<(), String>>,
    requests: Receiver<Request>,
) {
    let mut generator = match Generator::new(&model, options) {
        Ok(g) => {
            let _ = ready.send(Ok(()));
            g
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    for request in requests {
        generator.reset();
        match request {
            Request::Generate { prompt, params, pieces, cancel } => {
                let result = generator.generate(&prompt, false, &params, |piece| {
                    // A closed channel means the stream was dropped: stop.
                    if cancel.load(Ordering::Relaxed) || pieces.send(Piece::Text(piece.to_string())).is_err() {
                        Flow::Stop
                    } else {
                        Flow::Continue
                    }
                });
                let _ = pieces.send(Piece::Done(result.map(|_| ()).map_err(|e| e.to_string())));
            }
            Request::Logits { tokens, reply } => {
                let _ = reply.send(generator.eval(&tokens).map(<[f32]>::to_vec).map_err(|e| e.to_string()));
            }
        }
    }
}

/// A model file opened for generation (memory-mapped, validated), with one
/// session of `context` positions on `threads` threads (0: one per core).
/// Each `generate` or `logits` call starts a new conversation.
#[pyclass(module = "gpt_fast", frozen)]
struct Model {
    model: Arc<engine::Model>,
    requests: Sender<Request>,
}

impl Model {
    fn send(&self, request: Request) -> PyResult<()> {
        self.requests.send(request).map_err(|_| error("the model's worker thread has stopped"))
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path, context = 2048, threads = 0))]
    fn new(py: Python<'_>, path: std::path::PathBuf, context: usize, threads: usize) -> PyResult<Self> {
        py.detach(|| {
            let model = Arc::new(engine::Model::open(&path, ModelOptions::default()).map_err(error)?);
            let (requests, inbox) = channel();
            let (ready, started) = channel();
            let shared = Arc::clone(&model);
            let options = SessionOptions { context, threads, ..Default::default() };
            std::thread::Builder::new()
                .name("gpt-fast-python".into())
                .spawn(move || serve(shared, options, ready, inbox))
                .map_err(error)?;
            started.recv().map_err(error)?.map_err(error)?;
            Ok(Self { model, requests })
        })
    }

    /// Tokens in the vocabulary (the length of `logits`).
    #[getter]
    fn n_vocab(&self) -> usize {
        self.model.tokenizer().n_vocab()
    }

    /// The token ids of `text` (BOS first if the model wants one and
    /// `add_bos`; special-token text such as `<|im_start|>` recognised if
    /// `parse_special`).
    #[pyo3(signature = (text, add_bos = true, parse_special = false))]
    fn tokenize(&self, py: Python<'_>, text: &str, add_bos: bool, parse_special: bool) -> Vec<u32> {
        let tokenizer = self.model.tokenizer();
        py.detach(|| {
            if add_bos {
                tokenizer.encode_prompt(text, parse_special)
            } else {
                tokenizer.encode(text, parse_special)
            }
        })
    }

    /// The text of `ids` (invalid UTF-8 replaced).
    fn detokenize(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<String> {
        let tokenizer = self.model.tokenizer();
        py.detach(|| tokenizer.decode(&ids)).map_err(error)
    }

    /// The logits after the last of `ids` (a new conversation of just them):
    /// a list of `n_vocab` floats.
    fn logits(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<Vec<f32>> {
        let (reply, answer) = channel();
        self.send(Request::Logits { tokens: ids, reply })?;
        py.detach(move || answer.recv()).map_err(error)?.map_err(error)
    }

    /// Generates up to `max_tokens` tokens after `prompt` (special-token text
    /// recognised, BOS first): the text, or with `stream=True` an iterator of
    /// its pieces, computed in the background. Sampling settings left as
    /// None are the library's defaults; `temperature=0` is greedy. Generation
    /// ends early at an end-of-generation token or any `stop` string.
    #[pyo3(signature = (
        prompt, max_tokens = 256, stream = false, *, temperature = None, top_k = None, top_p = None,
        min_p = None, repeat_penalty = None, seed = None, stop = None
    ))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn generate(
        &self,
        py: Python<'_>,
        prompt: String,
        max_tokens: usize,
        stream: bool,
        temperature: Option<f32>,
        top_k: Option<usize>,
        top_p: Option<f32>,
        min_p: Option<f32>,
        repeat_penalty: Option<f32>,
        seed: Option<u64>,
        stop: Option<Vec<String>>,
    ) -> PyResult<Py<PyAny>> {
        let defaults = SamplerParams::default();
        let sampler = SamplerParams {
            temperature: temperature.unwrap_or(defaults.temperature),
            top_k: top_k.unwrap_or(defaults.top_k),
            top_p: top_p.unwrap_or(defaults.top_p),
            min_p: min_p.unwrap_or(defaults.min_p),
            repeat_penalty: repeat_penalty.unwrap_or(defaults.repeat_penalty),
            seed: seed.unwrap_or(defaults.seed),
            ..defaults
        };
        let params = GenerateParams { max_tokens, sampler, stop: stop.unwrap_or_default(), ignore_eos: false };
        let (pieces, arriving) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        self.send(Request::Generate { prompt, params, pieces, cancel: Arc::clone(&cancel) })?;
        let pieces = Stream { pieces: Mutex::new(Some(arriving)), cancel };
        if stream {
            return Ok(Py::new(py, pieces)?.into_any());
        }
        let mut text = String::new();
        while let Some(piece) = pieces.next_piece(py)? {
            text.push_str(&piece);
        }
        Ok(text.into_pyobject(py)?.into_any().unbind())
    }
}

/// The pieces of text of one generation, as they are produced. Dropping it
/// (or `close()`) stops the generation.
#[pyclass(module = "gpt_fast", frozen)]
struct Stream {
    /// `None` once the generation has ended.
    pieces: Mutex<Option<Receiver<Piece>>>,
    cancel: Arc<AtomicBool>,
}

impl Stream {
    fn next_piece(&self, py: Python<'_>) -> PyResult<Option<String>> {
        // The lock is taken without the GIL: a thread waiting for it while
        // holding the GIL would block the thread that has it from returning.
        py.detach(|| {
            let mut guard = self.pieces.lock().map_err(|_| "a stream's lock was poisoned".to_string())?;
            let Some(pieces) = guard.as_ref() else { return Ok(None) };
            match pieces.recv() {
                Ok(Piece::Text(text)) => Ok(Some(text)),
                Ok(Piece::Done(result)) => {
                    *guard = None;
                    result.map(|()| None)
                }
                Err(_) => {
                    *guard = None;
                    Err("the model's worker thread stopped during generation".to_string())
                }
            }
        })
        .map_err(error)
    }
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.next_piece(py)
    }

    /// Stops the generation; the stream then ends.
    fn close(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

#[pymodule]
fn gpt_fast(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Stream>()?;
    m.add("Error", m.py().get_type::<Error>())?;
    Ok(())
}
