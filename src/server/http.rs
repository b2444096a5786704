//! The HTTP layer (axum on tokio): OpenAI's routes, request checks that need
//! the model (template, token count against the context), the bounded queue
//! in front of the engine, and the responses, whole or as server-sent events.
//! The engine runs on its own thread; a handler only waits on its channel.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::engine::{self, EngineOptions, Event, FinishReason, Job, TokenLogprobs};
use super::metrics::Metrics;
use super::request::{self, ApiError, Endpoint, Prompt, Request};
use crate::chat::{self, ChatTemplate};
use crate::model::{Model, ModelOptions};

/// How `gpt-fast serve` is set up.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The gpt-fast model file to serve.
    pub model_file: PathBuf,
    /// The name `/v1/models` gives and responses carry.
    pub model_name: String,
    /// How the model is opened.
    pub model: ModelOptions,
    /// How the engine is sized.
    pub engine: EngineOptions,
    /// Address to listen on.
    pub host: String,
    /// Port to listen on.
    pub port: u16,
    /// Requests that may wait for a slot; one more is refused with 503.
    pub queue: usize,
    /// Largest request body, in bytes (413 above).
    pub body_limit: usize,
    /// How long SIGTERM waits for in-flight requests before exiting.
    pub shutdown_grace: Duration,
}

struct Loaded {
    model: Arc<Model>,
    template: ChatTemplate,
}

struct AppState {
    loaded: OnceLock<Loaded>,
    queue: SyncSender<Job>,
    metrics: Arc<Metrics>,
    options: ServeOptions,
}

/// Binds, loads the model on the engine's thread (`/health` says 503 until
/// it is ready), serves until SIGTERM or SIGINT, then lets in-flight
/// requests finish (at most `shutdown_grace`). A failure to bind or load is
/// an error line for the caller.
pub fn serve(options: ServeOptions) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the HTTP runtime: {e}"))?;
    runtime.block_on(serve_async(options))
}

async fn serve_async(options: ServeOptions) -> Result<(), String> {
    let address = format!("{}:{}", options.host, options.port);
    let listener =
        tokio::net::TcpListener::bind(&address).await.map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let (queue, jobs) = sync_channel(options.queue);
    let metrics = Arc::new(Metrics::default());
    let state =
        Arc::new(AppState { loaded: OnceLock::new(), queue, metrics: metrics.clone(), options: options.clone() });
    let (failed_tx, failed) = tokio::sync::oneshot::channel::<String>();
    let engine_state = state.clone();
    std::thread::Builder::new()
        .name("gpt-fast-engine".into())
        .spawn(move || {
            let options = &engine_state.options;
            let started = (|| {
                let model = Arc::new(Model::open(&options.model_file, options.model).map_err(|e| e.to_string())?);
                let template = ChatTemplate::for_tokenizer(model.file().tokenizer()).map_err(|e| e.to_string())?;
                let ready = || {
                    let _ = engine_state.loaded.set(Loaded { model: model.clone(), template });
                    eprintln!("gpt-fast: model loaded; ready");
                };
                engine::run(model.clone(), options.engine, jobs, engine_state.metrics.clone(), ready)
            })();
            if let Err(message) = started {
                let _ = failed_tx.send(message);
            }
        })
        .map_err(|e| format!("starting the engine thread: {e}"))?;
    eprintln!("gpt-fast: listening on http://{address} (POST /v1/chat/completions, /v1/completions)");

    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(options.body_limit))
        .with_state(state.clone());
    let grace = options.shutdown_grace;
    let stop = async move {
        // The engine could not start: nothing to serve. (A closed channel
        // without a message is an engine that started and ended normally.)
        let failed = async {
            match failed.await {
                Ok(message) => message,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            message = failed => {
                eprintln!("gpt-fast: error: {message}");
                std::process::exit(1);
            }
            () = shutdown_signal() => {}
        }
        eprintln!(
            "gpt-fast: stopping: no new connections; finishing requests in flight (at most {} s)",
            grace.as_secs()
        );
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            eprintln!("gpt-fast: requests still running after {} s; exiting", grace.as_secs());
            std::process::exit(0);
        });
    };
    axum::serve(listener, app).with_graceful_shutdown(stop).await.map_err(|e| format!("serving: {e}"))?;
    eprintln!("gpt-fast: stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn json_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(state: &AppState, e: &ApiError) -> Response {
    state.metrics.count_response(e.status);
    let mut response = json_response(e.status, e.body());
    if e.status == 503 {
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

async fn not_found(State(state): State<Arc<AppState>>, uri: axum::http::Uri) -> Response {
    error_response(&state, &ApiError { status: 404, message: format!("no route {}", uri.path()), param: None })
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.loaded.get() {
        Some(_) => json_response(200, json!({"status": "ok"}).to_string()),
        None => json_response(503, json!({"status": "loading model"}).to_string()),
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let body = json!({"object": "list", "data": [{
        "id": state.options.model_name, "object": "model", "created": 0, "owned_by": "gpt-fast"
    }]});
    json_response(200, body.to_string())
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn chat_completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    completion(state, Endpoint::Chat, body).await
}

async fn completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    completion(state, Endpoint::Completions, body).await
}

async fn completion(state: Arc<AppState>, endpoint: Endpoint, body: Result<Bytes, BytesRejection>) -> Response {
    match start(&state, endpoint, body) {
        Ok((request, events)) => {
            state.metrics.count_response(200);
            let reply = Reply::new(&state, endpoint, &request);
            if request.stream {
                stream_response(reply, events)
            } else {
                whole_response(reply, events).await
            }
        }
        Err(e) => error_response(&state, &e),
    }
}

/// Checks the request, tokenizes its prompt and queues it.
fn start(
    state: &AppState,
    endpoint: Endpoint,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Request, UnboundedReceiver<Event>), ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status().as_u16();
        let message = if status == 413 {
            format!("the request body is larger than {} bytes", state.options.body_limit)
        } else {
            rejection.body_text()
        };
        ApiError { status, message, param: None }
    })?;
    let loaded = state.loaded.get().ok_or_else(|| ApiError {
        status: 503,
        message: "the model is still loading".into(),
        param: None,
    })?;
    let request = request::parse(endpoint, &body)?;
    let spec = loaded.model.file().tokenizer();
    let text = match &request.prompt {
        Prompt::Chat(messages) => {
            let rendered = loaded
                .template
                .render(messages, true)
                .map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
            chat::strip_leading_bos(&rendered, spec).to_string()
        }
        Prompt::Text(text) => text.clone(),
    };
    let prompt = loaded.model.tokenizer().encode_prompt(&text, true);
    let context = state.options.engine.context;
    if prompt.is_empty() {
        return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
    }
    if prompt.len() >= context {
        return Err(ApiError::invalid(
            format!(
                "the prompt has {} tokens but the context holds {context} (with room for one generated)",
                prompt.len()
            ),
            Some(if endpoint == Endpoint::Chat { "messages" } else { "prompt" }),
        ));
    }
    let prompt_tokens = prompt.len();
    let (events, receiver) = unbounded_channel();
    let job = Job {
        prompt,
        max_tokens: request.max_tokens,
        stop: request.stop.clone(),
        sampling: request.sampling.clone(),
        logprobs: request.logprobs,
        ignore_eos: request.ignore_eos,
        events,
        queued: Instant::now(),
    };
    state.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    match state.queue.try_send(job) {
        Ok(()) => {
            state.metrics.prompt_tokens.fetch_add(prompt_tokens as u64, Ordering::Relaxed);
            Ok((request, receiver))
        }
        Err(e) => {
            state.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            let message = match e {
                TrySendError::Full(_) => "the server is busy: every slot and the queue are taken; retry shortly",
                TrySendError::Disconnected(_) => "the server is stopping",
            };
            Err(ApiError { status: 503, message: message.into(), param: None })
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What every chunk or response of one request carries.
struct Reply {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    logprobs: bool,
}

impl Reply {
    fn new(state: &AppState, endpoint: Endpoint, request: &Request) -> Self {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let prefix = if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
        Self {
            endpoint,
            id: format!("{prefix}-{n}"),
            created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            model: state.options.model_name.clone(),
            include_usage: request.include_usage,
            logprobs: request.logprobs.is_some(),
        }
    }

    fn object(&self, stream: bool) -> &'static str {
        match (self.endpoint, stream) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        }
    }

    fn envelope(&self, stream: bool, choices: Value) -> Value {
        json!({"id": self.id, "object": self.object(stream), "created": self.created, "model": self.model, "choices": choices})
    }

    /// One choice: the text and log-probabilities of some tokens.
    fn choice(
        &self,
        stream: bool,
        text: &str,
        logprobs: &[TokenLogprobs],
        finish: Option<FinishReason>,
        first: bool,
    ) -> Value {
        let finish = finish.map(|f| match f {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        });
        let logprobs = self.logprobs.then(|| match self.endpoint {
            Endpoint::Chat => json!({"content": logprobs.iter().map(chat_logprob).collect::<Vec<_>>()}),
            Endpoint::Completions => completion_logprobs(logprobs),
        });
        match (self.endpoint, stream) {
            (Endpoint::Chat, false) => json!({"index": 0, "message": {"role": "assistant", "content": text},
                                                 "logprobs": logprobs, "finish_reason": finish}),
            (Endpoint::Chat, true) => {
                let delta = match (first, finish.is_some() && text.is_empty()) {
                    (true, _) => json!({"role": "assistant", "content": text}),
                    (false, true) => json!({}),
                    (false, false) => json!({"content": text}),
                };
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            (Endpoint::Completions, _) => {
                json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish})
            }
        }
    }
}

fn usage(prompt: usize, completion: usize, cached: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn chat_logprob(t: &TokenLogprobs) -> Value {
    let top: Vec<Value> = t.top.iter().map(|(b, lp)| json!({"token": lossy(b), "logprob": lp, "bytes": b})).collect();
    json!({"token": lossy(&t.token), "logprob": t.logprob, "bytes": t.token, "top_logprobs": top})
}

fn completion_logprobs(tokens: &[TokenLogprobs]) -> Value {
    let mut offset = 0;
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(offset);
        offset += lossy(&t.token).len();
    }
    json!({
        "tokens": tokens.iter().map(|t| lossy(&t.token)).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|(b, lp)| (lossy(b), json!(lp))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

async fn whole_response(reply: Reply, mut events: UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Piece(piece) => {
                text.push_str(&piece.text);
                logprobs.extend(piece.logprobs);
            }
            Event::Done(done) => {
                let choice = reply.choice(false, &text, &logprobs, Some(done.reason), true);
                let mut body = reply.envelope(false, json!([choice]));
                body["usage"] = usage(done.prompt_tokens, done.completion_tokens, done.cached_tokens);
                return json_response(200, body.to_string());
            }
        }
    }
    json_response(500, ApiError { status: 500, message: "the engine stopped".into(), param: None }.body())
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Server-sent events: a chunk per generated token, the finish reason, the
/// usage if asked, then `data: [DONE]`. Dropping the body (a client gone)
/// drops the channel, which the engine notices at its next token.
fn stream_response(reply: Reply, events: UnboundedReceiver<Event>) -> Response {
    struct Stream {
        reply: Reply,
        events: UnboundedReceiver<Event>,
        first: bool,
        tail: Vec<Bytes>,
    }
    let state = Stream { reply, events, first: true, tail: Vec::new() };
    let body = futures_util::stream::unfold(state, |mut s| async move {
        if let Some(next) = s.tail.pop() {
            return Some((Ok::<_, Infallible>(next), s));
        }
        match s.events.recv().await? {
            Event::Piece(piece) => {
                let logprobs: Vec<TokenLogprobs> = piece.logprobs.into_iter().collect();
                let choice = s.reply.choice(true, &piece.text, &logprobs, None, s.first);
                s.first = false;
                let chunk = sse(&s.reply.envelope(true, json!([choice])));
                Some((Ok(chunk), s))
            }
            Event::Done(done) => {
                let choice = s.reply.choice(true, "", &[], Some(done.reason), s.first);
                let chunk = sse(&s.reply.envelope(true, json!([choice])));
                s.tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
                if s.reply.include_usage {
                    let mut last = s.reply.envelope(true, json!([]));
                    last["usage"] = usage(done.prompt_tokens, done.completion_tokens, done.cached_tokens);
                    s.tail.push(sse(&last));
                }
                Some((Ok(chunk), s))
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("static headers")
}
