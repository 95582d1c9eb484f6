//! Router layer: the HTTP routes (declared once in [`router`]), admission control and the
//! streaming of engine responses.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mistralrs::Response as EngineResponse;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::api::{ChatCompletionRequest, CompletionRequest, KaitoChatRequest, OpenAiPlan};
use crate::engine::{Engine, Input, TokenClock, TokenTiming};
use crate::error::ApiError;
use crate::metrics::{Metrics, RequestLabels};

/// Limits of the HTTP layer.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Sequences generated at once; further requests wait.
    pub max_running: usize,
    /// Requests allowed to wait; beyond that the answer is 429.
    pub max_queued: usize,
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Longest wait for a slot; beyond it the answer is 503 with `Retry-After`.
    pub queue_timeout: Duration,
    /// Most new tokens one request may generate: asking for more is a 400, a default is capped.
    pub max_tokens: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_running: 16,
            max_queued: 64,
            max_body_bytes: 1 << 20,
            queue_timeout: Duration::from_secs(30),
            max_tokens: None,
        }
    }
}

/// Where model loading stands.
#[derive(Clone)]
pub enum LoadState {
    /// Downloading the weights.
    Downloading,
    /// Still loading.
    Loading,
    /// Ready to serve.
    Ready(Arc<Engine>),
    /// Loading failed; the server is about to exit.
    Failed(String),
}

/// State shared by all handlers.
pub struct AppState {
    served_name: String,
    load: RwLock<LoadState>,
    metrics: Metrics,
    limits: Limits,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    shutting_down: AtomicBool,
    next_id: AtomicU64,
}

/// Shared handle to the state.
pub type SharedState = Arc<AppState>;

impl AppState {
    /// New state: the model is still loading.
    pub fn new(served_name: impl Into<String>, limits: Limits) -> SharedState {
        Arc::new(Self {
            served_name: served_name.into(),
            load: RwLock::new(LoadState::Loading),
            metrics: Metrics::new(),
            slots: Arc::new(Semaphore::new(limits.max_running.max(1))),
            limits,
            queued: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        })
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Records the outcome of loading.
    pub fn set_load_state(&self, state: LoadState) {
        self.metrics
            .model_ready
            .set(i64::from(matches!(state, LoadState::Ready(_))));
        let mut guard = self.load.write().unwrap_or_else(|e| e.into_inner());
        *guard = state;
    }

    /// Marks the server as draining: `/health` answers 503 and new generations are refused.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    fn load_state(&self) -> LoadState {
        self.load.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::ShuttingDown);
        }
        match self.load_state() {
            LoadState::Ready(engine) => Ok(engine),
            LoadState::Downloading => Err(ApiError::NotReady(
                "the model's weights are still downloading".into(),
            )),
            LoadState::Loading => Err(ApiError::NotReady("the model is still loading".into())),
            LoadState::Failed(e) => {
                Err(ApiError::NotReady(format!("the model failed to load: {e}")))
            }
        }
    }

    fn new_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Waits for a generation slot, or refuses: 429 when too many requests already wait, 503
    /// when no slot frees up within the queue timeout.
    async fn admit(self: &Arc<Self>) -> Result<Slot, ApiError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = self.queued.fetch_add(1, Ordering::SeqCst);
                if waiting >= self.limits.max_queued {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    self.metrics.rejected.inc();
                    return Err(ApiError::Overloaded {
                        queued: waiting,
                        max: self.limits.max_queued,
                    });
                }
                // Released however the wait ends: a slot, the deadline, or the client gone
                // (this future dropped).
                let _guard = QueueGuard::enter(self.clone());
                let wait = self.slots.clone().acquire_owned();
                match tokio::time::timeout(self.limits.queue_timeout, wait).await {
                    Ok(permit) => permit.map_err(|_| ApiError::ShuttingDown)?,
                    Err(_) => {
                        self.metrics.rejected.inc();
                        return Err(ApiError::QueueTimeout {
                            seconds: self.limits.queue_timeout.as_secs_f64(),
                            running: self.limits.max_running,
                        });
                    }
                }
            }
        };
        self.metrics.running.inc();
        Ok(Slot {
            _permit: permit,
            state: self.clone(),
        })
    }
}

/// A request in the queue (already counted in `queued`): shows in the queued gauge, and leaves
/// both when it is admitted, times out or goes away.
struct QueueGuard(SharedState);

impl QueueGuard {
    fn enter(state: SharedState) -> Self {
        state.metrics.queued.inc();
        Self(state)
    }
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        self.0.metrics.queued.dec();
        self.0.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A generation slot; released when dropped (also when a client disconnects mid-stream).
struct Slot {
    _permit: OwnedSemaphorePermit,
    state: SharedState,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.metrics.running.dec();
    }
}

/// The runtime's routes, declared once.
pub fn router(state: SharedState) -> Router {
    let limit = state.limits.max_body_bytes;
    Router::new()
        .route("/chat", post(kaito_chat))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            status,
        })
        .inc();
    tracing::debug!(%method, route, status, "request");
    response
}

/// JSON body extractor whose failures are OpenAI-shaped 400/413 errors.
struct JsonBody<T>(T);

impl<T: DeserializeOwned> FromRequest<SharedState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: state.limits.max_body_bytes,
                }
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

async fn not_found() -> ApiError {
    ApiError::BadRequest("no such route; see /v1/models, /chat, /v1/chat/completions".into())
}

async fn health(State(state): State<SharedState>) -> Response {
    if state.shutting_down.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "ShuttingDown"})),
        )
            .into_response();
    }
    match state.load_state() {
        LoadState::Ready(_) => (StatusCode::OK, Json(json!({"status": "Healthy"}))).into_response(),
        LoadState::Downloading => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "Downloading"})),
        )
            .into_response(),
        LoadState::Loading => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "Loading"})),
        )
            .into_response(),
        LoadState::Failed(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "Unhealthy", "error": e})),
        )
            .into_response(),
    }
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "Alive"}))
}

async fn metrics(State(state): State<SharedState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::Engine(format!("encoding metrics: {e}")).into_response(),
    }
}

async fn models(State(state): State<SharedState>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": state.served_name, "object": "model", "created": unix_now(),
                  "owned_by": "kaito"}]
    }))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How many new tokens a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wanted {
    /// Set by the client (`max_tokens`, `max_new_tokens`): must fit, or the answer is 400.
    Exactly(usize),
    /// A default: capped to what fits.
    AtMost(usize),
    /// Nothing asked: up to the end of the context.
    Any,
}

/// Applies the server's cap on new tokens (`--max-tokens`): an explicit ask above it is a 400
/// naming `field`; a default, or no ask at all, is capped.
fn cap_tokens(wanted: Wanted, field: &'static str, cap: Option<usize>) -> Result<Wanted, ApiError> {
    let Some(cap) = cap else { return Ok(wanted) };
    match wanted {
        Wanted::Exactly(asked) if asked > cap => Err(ApiError::TooManyTokens { field, asked, cap }),
        Wanted::Exactly(n) => Ok(Wanted::Exactly(n)),
        Wanted::AtMost(n) => Ok(Wanted::AtMost(n.min(cap))),
        Wanted::Any => Ok(Wanted::AtMost(cap)),
    }
}

/// Rejects prompts that do not fit in the context limit (the model's own, or `--max-model-len`
/// when lower) and explicit token budgets that overrun it; caps the others to what remains.
fn fit_context(
    engine: &Engine,
    prompt_tokens: usize,
    wanted: Wanted,
) -> Result<Option<usize>, ApiError> {
    fit_context_limit(engine.max_seq_len(), prompt_tokens, wanted)
}

fn fit_context_limit(
    limit: Option<usize>,
    prompt_tokens: usize,
    wanted: Wanted,
) -> Result<Option<usize>, ApiError> {
    let Some(ctx) = limit else {
        return Ok(match wanted {
            Wanted::Exactly(n) | Wanted::AtMost(n) => Some(n),
            Wanted::Any => None,
        });
    };
    if prompt_tokens >= ctx {
        return Err(ApiError::PromptTooLong(format!(
            "the prompt has {prompt_tokens} tokens, but the context limit is {ctx} tokens; \
             shorten the prompt"
        )));
    }
    let room = ctx - prompt_tokens;
    match wanted {
        Wanted::Exactly(n) if n > room => Err(ApiError::PromptTooLong(format!(
            "the prompt has {prompt_tokens} tokens and {n} new tokens were asked for, {} in \
             all, beyond the context limit of {ctx} tokens; ask for at most {room} new tokens \
             or shorten the prompt",
            prompt_tokens + n
        ))),
        Wanted::Exactly(n) => Ok(Some(n)),
        Wanted::AtMost(n) => Ok(Some(n.min(room))),
        Wanted::Any => Ok(Some(room)),
    }
}

/// Outcome of a whole (non-streamed) generation.
struct Finished {
    text: String,
    finish_reason: String,
    prompt_tokens: usize,
    completion_tokens: usize,
}

/// Waits for the final response of a non-streamed request and records metrics.
async fn finish(
    state: &AppState,
    mut rx: mpsc::UnboundedReceiver<EngineResponse>,
    clock: TokenClock,
) -> Result<Finished, ApiError> {
    while let Some(response) = rx.recv().await {
        let (text, finish_reason, usage) = match response {
            EngineResponse::Done(r) => {
                let choice = r.choices.into_iter().next();
                let reason = choice
                    .as_ref()
                    .map_or_else(|| "stop".into(), |c| c.finish_reason.clone());
                let text = choice.and_then(|c| c.message.content).unwrap_or_default();
                (text, reason, r.usage)
            }
            EngineResponse::CompletionDone(r) => {
                let choice = r.choices.into_iter().next();
                let reason = choice
                    .as_ref()
                    .map_or_else(|| "stop".into(), |c| c.finish_reason.clone());
                (choice.map(|c| c.text).unwrap_or_default(), reason, r.usage)
            }
            EngineResponse::ValidationError(e) => return Err(ApiError::BadRequest(e.to_string())),
            EngineResponse::InternalError(e) => return Err(ApiError::Engine(e.to_string())),
            EngineResponse::ModelError(e, _) | EngineResponse::CompletionModelError(e, _) => {
                return Err(ApiError::Engine(e));
            }
            _ => continue,
        };
        let m = &state.metrics;
        m.prompt_tokens.inc_by(usage.prompt_tokens as u64);
        m.generated_tokens.inc_by(usage.completion_tokens as u64);
        // Without per-token events, TTFT is queueing plus prefill and the inter-token latency is
        // the mean decode gap.
        let decode = f64::from(usage.total_completion_time_sec);
        let prefill = f64::from(usage.total_prompt_time_sec);
        let total = clock.elapsed().as_secs_f64();
        m.time_to_first_token
            .observe((total - decode).max(prefill).max(0.0));
        if usage.completion_tokens > 1 {
            let gap = decode / (usage.completion_tokens - 1) as f64;
            for _ in 1..usage.completion_tokens {
                m.inter_token_latency.observe(gap);
            }
        }
        m.request_duration.observe(total);
        return Ok(Finished {
            text,
            finish_reason,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        });
    }
    Err(ApiError::Engine(
        "the engine closed the response channel".into(),
    ))
}

async fn kaito_chat(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<KaitoChatRequest>,
) -> Result<Json<Value>, ApiError> {
    let kwargs = req.generate_kwargs.clone();
    let mut plan = req.plan()?;
    // An explicit ask above the cap is refused before it takes a slot.
    if let Some(n) = kwargs.max_new_tokens {
        cap_tokens(
            Wanted::Exactly(n),
            "max_new_tokens",
            state.limits.max_tokens,
        )?;
    }
    let engine = state.engine()?;
    // Admission first: tokenizing is work on the engine's thread too, so it waits for a slot
    // (or gets the 429) like generation does.
    let slot = state.admit().await?;
    let prompt_tokens = engine.count_prompt_tokens(&plan.input).await?;
    let n = KaitoChatRequest::max_new_tokens(&kwargs, prompt_tokens)?;
    let wanted = if kwargs.max_new_tokens.is_some() {
        Wanted::Exactly(n)
    } else {
        // `max_length` (or its default) minus the prompt: an upper bound, capped.
        Wanted::AtMost(n)
    };
    let wanted = cap_tokens(wanted, "max_new_tokens", state.limits.max_tokens)?;
    plan.sampling.max_len = fit_context(&engine, prompt_tokens, wanted)?;
    let clock = TokenClock::start();
    let rx = engine.generate(plan.input, plan.sampling, false).await?;
    let done = finish(&state, rx, clock).await?;
    drop(slot);
    Ok(Json(
        json!({"Result": format!("{}{}", plan.prefix, done.text)}),
    ))
}

async fn chat_completions(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let plan = req.plan(&state.served_name)?;
    openai(state, plan, Kind::Chat).await
}

async fn completions(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    let plan = req.plan(&state.served_name)?;
    openai(state, plan, Kind::Completion).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

async fn openai(
    state: SharedState,
    mut plan: OpenAiPlan,
    kind: Kind,
) -> Result<Response, ApiError> {
    // What the client set must fit the cap (400 before it takes a slot); a default is capped.
    let wanted = match (plan.sampling.max_len, plan.max_tokens_field) {
        (Some(n), Some(_)) => Wanted::Exactly(n),
        (Some(n), None) => Wanted::AtMost(n),
        (None, _) => Wanted::Any,
    };
    let field = plan.max_tokens_field.unwrap_or("max_tokens");
    let wanted = cap_tokens(wanted, field, state.limits.max_tokens)?;
    let engine = state.engine()?;
    // Admission first (see kaito_chat).
    let slot = state.admit().await?;
    let prompt_tokens = engine.count_prompt_tokens(&plan.input).await?;
    plan.sampling.max_len = fit_context(&engine, prompt_tokens, wanted)?;
    let clock = TokenClock::start();
    let stream = plan.stream;
    let input_is_chat = matches!(plan.input, Input::Chat(_));
    let rx = engine.generate(plan.input, plan.sampling, stream).await?;
    let id = state.new_id(if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    });
    let created = unix_now();
    if !stream {
        let done = finish(&state, rx, clock).await?;
        drop(slot);
        let usage = json!({"prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens});
        let body = if input_is_chat {
            json!({"id": id, "object": "chat.completion", "created": created,
                "model": state.served_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                             "logprobs": null, "finish_reason": done.finish_reason}],
                "usage": usage})
        } else {
            json!({"id": id, "object": "text_completion", "created": created,
                "model": state.served_name,
                "choices": [{"index": 0, "text": format!("{}{}", plan.prefix, done.text),
                             "logprobs": null, "finish_reason": done.finish_reason}],
                "usage": usage})
        };
        return Ok(Json(body).into_response());
    }
    let streamer = Streamer {
        state: state.clone(),
        rx,
        clock,
        _slot: slot,
        id,
        created,
        kind,
        include_usage: plan.include_usage,
        prefix: Some(plan.prefix).filter(|p| !p.is_empty()),
        sent_role: false,
        prompt_tokens,
        chunks: 0,
        finished: false,
    };
    let events = futures::stream::unfold(streamer, |mut s| async move {
        let events = s.next_events().await?;
        Some((futures::stream::iter(events), s))
    });
    let events = futures::StreamExt::flatten(events);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Turns engine responses of one request into SSE events, keeping its slot until the end.
struct Streamer {
    state: SharedState,
    rx: mpsc::UnboundedReceiver<EngineResponse>,
    clock: TokenClock,
    _slot: Slot,
    id: String,
    created: u64,
    kind: Kind,
    include_usage: bool,
    prefix: Option<String>,
    sent_role: bool,
    prompt_tokens: usize,
    chunks: u64,
    finished: bool,
}

type EventResult = Result<Event, Infallible>;

impl Streamer {
    fn event(value: &Value) -> EventResult {
        Ok(Event::default().data(value.to_string()))
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        match self.kind {
            Kind::Chat => json!({"id": self.id, "object": "chat.completion.chunk",
                "created": self.created, "model": self.state.served_name,
                "choices": [{"index": 0, "delta": delta, "logprobs": null,
                             "finish_reason": finish_reason}]}),
            Kind::Completion => json!({"id": self.id, "object": "text_completion",
                "created": self.created, "model": self.state.served_name,
                "choices": [{"index": 0, "text": delta, "logprobs": null,
                             "finish_reason": finish_reason}]}),
        }
    }

    fn observe_token(&mut self) {
        self.chunks += 1;
        match self.clock.tick() {
            TokenTiming::First(d) => self
                .state
                .metrics
                .time_to_first_token
                .observe(d.as_secs_f64()),
            TokenTiming::Next(d) => self
                .state
                .metrics
                .inter_token_latency
                .observe(d.as_secs_f64()),
        }
    }

    fn end(&mut self, mut events: Vec<EventResult>) -> Option<Vec<EventResult>> {
        self.finished = true;
        self.state
            .metrics
            .request_duration
            .observe(self.clock.elapsed().as_secs_f64());
        events.push(Ok(Event::default().data("[DONE]")));
        Some(events)
    }

    async fn next_events(&mut self) -> Option<Vec<EventResult>> {
        if self.finished {
            return None;
        }
        let mut events = Vec::new();
        if let Some(prefix) = self.prefix.take() {
            events.push(Self::event(&self.chunk(Value::String(prefix), None)));
            return Some(events);
        }
        let Some(response) = self.rx.recv().await else {
            let err = ApiError::Engine("the engine closed the stream".into());
            events.push(Self::event(&err.body()));
            return self.end(events);
        };
        match response {
            EngineResponse::Chunk(chunk) => {
                let usage = chunk.usage.clone();
                let mut done = usage.is_some();
                for choice in chunk.choices {
                    done |= choice.finish_reason.is_some();
                    let content = choice.delta.content.unwrap_or_default();
                    if !content.is_empty() {
                        self.observe_token();
                    }
                    let mut delta = json!({"content": content});
                    if !self.sent_role {
                        delta["role"] = json!("assistant");
                        self.sent_role = true;
                    }
                    let reason = choice.finish_reason.as_deref();
                    events.push(Self::event(&self.chunk(delta, reason)));
                }
                if let Some(u) = usage {
                    let m = &self.state.metrics;
                    m.prompt_tokens.inc_by(u.prompt_tokens as u64);
                    m.generated_tokens.inc_by(u.completion_tokens as u64);
                    if self.include_usage {
                        let body = json!({"id": self.id, "object": "chat.completion.chunk",
                            "created": self.created, "model": self.state.served_name,
                            "choices": [],
                            "usage": {"prompt_tokens": u.prompt_tokens,
                                      "completion_tokens": u.completion_tokens,
                                      "total_tokens": u.prompt_tokens + u.completion_tokens}});
                        events.push(Self::event(&body));
                    }
                }
                if done {
                    return self.end(events);
                }
                Some(events)
            }
            EngineResponse::CompletionChunk(chunk) => {
                let mut done = false;
                for choice in chunk.choices {
                    if !choice.text.is_empty() {
                        self.observe_token();
                    }
                    done |= choice.finish_reason.is_some();
                    let reason = choice.finish_reason.as_deref();
                    events.push(Self::event(&self.chunk(Value::String(choice.text), reason)));
                }
                if done {
                    // Completion chunks carry no usage: count the streamed chunks.
                    let m = &self.state.metrics;
                    m.prompt_tokens.inc_by(self.prompt_tokens as u64);
                    m.generated_tokens.inc_by(self.chunks);
                    return self.end(events);
                }
                Some(events)
            }
            EngineResponse::Done(_) | EngineResponse::CompletionDone(_) => self.end(events),
            EngineResponse::ValidationError(e) => {
                events.push(Self::event(&ApiError::BadRequest(e.to_string()).body()));
                self.end(events)
            }
            EngineResponse::InternalError(e) => {
                events.push(Self::event(&ApiError::Engine(e.to_string()).body()));
                self.end(events)
            }
            EngineResponse::ModelError(e, _) | EngineResponse::CompletionModelError(e, _) => {
                events.push(Self::event(&ApiError::Engine(e).body()));
                self.end(events)
            }
            _ => Some(events),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_cap_refuses_explicit_asks_above_it_and_caps_the_rest() {
        let cap = Some(64);
        assert_eq!(
            cap_tokens(Wanted::Exactly(64), "max_tokens", cap).ok(),
            Some(Wanted::Exactly(64))
        );
        let err = cap_tokens(Wanted::Exactly(65), "max_completion_tokens", cap).expect_err("65");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            err.to_string(),
            "`max_completion_tokens` is 65, above this server's cap of 64 new tokens \
             (--max-tokens); ask for at most 64"
        );
        assert_eq!(
            cap_tokens(Wanted::AtMost(200), "max_new_tokens", cap).ok(),
            Some(Wanted::AtMost(64))
        );
        assert_eq!(
            cap_tokens(Wanted::Any, "max_tokens", cap).ok(),
            Some(Wanted::AtMost(64))
        );
        assert_eq!(
            cap_tokens(Wanted::Exactly(10_000), "max_tokens", None).ok(),
            Some(Wanted::Exactly(10_000)),
            "no cap: the context limit alone decides"
        );
    }

    #[test]
    fn context_limits_refuse_explicit_overruns_and_cap_defaults() {
        let fit = |p, w| fit_context_limit(Some(100), p, w);
        assert_eq!(fit(10, Wanted::Exactly(90)).ok(), Some(Some(90)));
        let err = fit(10, Wanted::Exactly(91)).expect_err("overrun");
        assert_eq!(
            err.to_string(),
            "the prompt has 10 tokens and 91 new tokens were asked for, 101 in all, beyond the \
             context limit of 100 tokens; ask for at most 90 new tokens or shorten the prompt"
        );
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(fit(10, Wanted::AtMost(200)).ok(), Some(Some(90)));
        assert_eq!(fit(10, Wanted::Any).ok(), Some(Some(90)));
        assert!(
            fit(100, Wanted::Any).is_err(),
            "the prompt alone fills the context"
        );
        assert_eq!(
            fit_context_limit(None, 10, Wanted::Any).ok(),
            Some(None),
            "no known limit: the engine decides"
        );
    }
}
