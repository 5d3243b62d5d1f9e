//! The HTTP surface: routes, auth, admission to decoding slots, JSON answers; the OpenAI objects
//! are shaped in [`answer`](crate::answer), event streams written in [`sse`](crate::sse).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::{EngineError, Generation};
use serde_json::{json, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::answer::{engine_error, timings, usage, Answer, Shape};
use crate::api;
use crate::config::ServeArgs;
use crate::conn;
use crate::error::ApiError;
use crate::metrics::{Metrics, Snapshot};
use crate::runner::{CancelOnDrop, Event, Plan, Runner};
use crate::sse::stream_answer;

/// Everything the handlers share.
pub struct AppState {
    runner: OnceLock<Arc<Runner>>,
    /// The metrics.
    pub metrics: Metrics,
    slots: Arc<Semaphore>,
    max_concurrency: usize,
    queue_size: usize,
    api_key: Option<String>,
    created: u64,
}

impl AppState {
    /// State for a server that is still loading its model.
    pub fn new(args: &ServeArgs) -> Arc<AppState> {
        Arc::new(AppState {
            runner: OnceLock::new(),
            metrics: Metrics::default(),
            slots: Arc::new(Semaphore::new(args.max_concurrency)),
            max_concurrency: args.max_concurrency,
            queue_size: args.queue_size,
            api_key: args.api_key.clone(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    /// Installs the loaded model: the server starts answering.
    pub fn set_ready(&self, runner: Runner) {
        let _ = self.runner.set(Arc::new(runner));
    }

    fn ready(&self) -> Result<&Arc<Runner>, ApiError> {
        self.runner.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "model_loading",
                "the model is still loading; retry shortly",
            )
        })
    }

    /// Waits for a decoding slot, or refuses when the queue is full.
    async fn admit(self: &Arc<Self>) -> Result<Slot, ApiError> {
        let t0 = Instant::now();
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let m = &self.metrics;
                if m.queue_depth.fetch_add(1, Ordering::SeqCst) >= self.queue_size as u64 {
                    m.queue_depth.fetch_sub(1, Ordering::SeqCst);
                    m.rejected.fetch_add(1, Ordering::Relaxed);
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limit_error",
                        "queue_full",
                        format!(
                            "the server is busy: {} requests decoding and {} waiting; retry later",
                            self.max_concurrency, self.queue_size
                        ),
                    ));
                }
                // Leaves the queue even if the client goes away while waiting.
                let _queued = QueueGuard(self.clone());
                self.slots.clone().acquire_owned().await.map_err(|_| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        "shutting_down",
                        "the server is shutting down",
                    )
                })?
            }
        };
        self.metrics.queue_wait.observe(t0.elapsed().as_secs_f64());
        self.metrics.slots_busy.fetch_add(1, Ordering::SeqCst);
        Ok(Slot {
            state: self.clone(),
            _permit: permit,
        })
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot {
            slots_total: self.max_concurrency,
            forward_passes: 0,
            sequence_forwards: 0,
            forward_positions: 0,
            busy_seconds: 0.0,
            live_sequences: 0,
            ready: false,
        };
        if let Some(r) = self.runner.get() {
            let s = r.scheduler.stats();
            snap.forward_passes = s.steps.load(Ordering::Relaxed);
            snap.sequence_forwards = s.requests.load(Ordering::Relaxed);
            snap.forward_positions = s.positions.load(Ordering::Relaxed);
            snap.busy_seconds = s.busy_micros.load(Ordering::Relaxed) as f64 / 1e6;
            snap.live_sequences = s.live.load(Ordering::Relaxed);
            snap.ready = true;
        }
        snap
    }
}

struct QueueGuard(Arc<AppState>);

impl Drop for QueueGuard {
    fn drop(&mut self) {
        self.0.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A decoding slot, held until the sequence ends.
struct Slot {
    state: Arc<AppState>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.metrics.slots_busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The application's routes over `state`.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(v1)
        .merge(crate::playground::routes())
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Counts every answer by route and status.
async fn count(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let resp = next.run(req).await;
    st.metrics.request(&route, resp.status().as_u16());
    resp
}

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.map(str::trim) != Some(key.as_str()) {
            drain(req).await;
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                "Incorrect or missing API key: send `Authorization: Bearer <key>`",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Reads what is left of a refused request's body (up to 4 MiB; beyond that the connection is
/// closed). Answering with body bytes unread makes hyper close the keep-alive connection after
/// the answer, and a client that reuses it for its next request sees "server disconnected"
/// (python/tests/test_hostile.py).
async fn drain(req: Request) {
    let _ = axum::body::to_bytes(req.into_body(), 4 << 20).await;
}

async fn not_found(req: Request) -> ApiError {
    let message = format!("no route {} {}", req.method(), req.uri().path());
    drain(req).await;
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        message,
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    let message = format!("{} is not allowed on {}", req.method(), req.uri().path());
    drain(req).await;
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        message,
    )
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    match st.runner.get() {
        Some(_) => Json(json!({"status": "ok"})).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response(),
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(&st.snapshot()),
    )
        .into_response()
}

fn model_card(st: &AppState, r: &Runner) -> Value {
    json!({
        "id": r.alias,
        "object": "model",
        "created": st.created,
        "owned_by": "dlm",
        "dlm": {
            "architecture": r.model.config.arch,
            "context_length": r.context,
            "mask_token_id": r.mask_id,
            "block_size": r.block_size,
            "small_block_size": r.small_block_size,
            // The f32 as written (0.95, not 0.949999988079071).
            "threshold": r.threshold.to_string().parse::<f64>().unwrap_or(f64::from(r.threshold)),
            "mode": match r.mode { engine::DecodeMode::Ar => "ar", _ => "dlm" },
        },
    })
}

async fn models(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let r = st.ready()?;
    Ok(Json(
        json!({"object": "list", "data": [model_card(&st, r)]}),
    ))
}

async fn model(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let r = st.ready()?;
    if id != r.alias {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "The model `{id}` does not exist; this server serves `{}`",
                r.alias
            ),
        ));
    }
    Ok(Json(model_card(&st, r)))
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        if conn::is_body_timeout(&e) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
                format!("{e}; send the body faster or raise the server's --body-timeout"),
            )
        } else if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "invalid_request_error",
                "request_too_large",
                "the request body is larger than the server accepts (--max-body-bytes)",
            )
        } else {
            ApiError {
                status: if status.is_client_error() {
                    status
                } else {
                    StatusCode::BAD_REQUEST
                },
                ..ApiError::invalid(None, format!("cannot read the request body: {e}"))
            }
        }
    })
}

/// Starts one generation in a slot; the slot and the metrics are settled when it ends.
fn launch(
    st: &Arc<AppState>,
    runner: &Arc<Runner>,
    prompt: Vec<u32>,
    plan: Plan,
    trace: bool,
    slot: Slot,
) -> (mpsc::UnboundedReceiver<Event>, CancelOnDrop) {
    let cancel = Arc::new(AtomicBool::new(false));
    let state = st.clone();
    let rx = runner.start(prompt, plan, trace, cancel.clone(), move |result| {
        let m = &state.metrics;
        match result {
            Ok(g) => {
                m.prompt_tokens
                    .fetch_add(g.stats.prompt_tokens as u64, Ordering::Relaxed);
                m.generated_tokens
                    .fetch_add(g.tokens.len() as u64, Ordering::Relaxed);
                if g.stats.forward_passes > 0 && !g.tokens.is_empty() {
                    m.tokens_per_forward
                        .observe(g.tokens.len() as f64 / g.stats.forward_passes as f64);
                }
            }
            Err(EngineError::Cancelled) => {
                m.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        drop(slot);
    });
    (rx, CancelOnDrop(cancel))
}

async fn chat(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let runner = st.ready()?.clone();
    let body = api::parse_body(&body_bytes(body)?)?;
    let req = api::chat_request(&body)?;
    let prompt = runner.chat_prompt(&req.messages)?;
    let plan = runner.plan(&req.options, prompt.len())?;
    let answer = Answer::new(Shape::Chat, &runner.alias, plan.name());
    let slot = st.admit().await?;
    let trace = req.options.include_steps;
    let (rx, guard) = launch(&st, &runner, prompt, plan, trace, slot);
    if req.options.stream {
        Ok(stream_answer(
            st,
            answer,
            rx,
            guard,
            req.options.include_usage,
        ))
    } else {
        let g = collect(rx, guard).await?;
        Ok(single_answer(&st, &answer, &[(String::new(), g)]))
    }
}

async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let runner = st.ready()?.clone();
    let body = api::parse_body(&body_bytes(body)?)?;
    let req = api::completion_request(&body)?;
    let mut jobs = Vec::new();
    for text in &req.prompts {
        let prompt = runner.text_prompt(text)?;
        let plan = runner.plan(&req.options, prompt.len())?;
        jobs.push((prompt, plan));
    }
    let answer = Answer::new(Shape::Completion, &runner.alias, jobs[0].1.name());
    if req.options.stream {
        let (prompt, plan) = jobs.pop().expect("one prompt when streaming");
        let slot = st.admit().await?;
        let trace = req.options.include_steps;
        let (rx, guard) = launch(&st, &runner, prompt, plan, trace, slot);
        return Ok(stream_answer(
            st,
            answer,
            rx,
            guard,
            req.options.include_usage,
        ));
    }
    let mut running = Vec::new();
    for (prompt, plan) in jobs {
        let slot = st.admit().await?;
        running.push(launch(&st, &runner, prompt, plan, false, slot));
    }
    let mut done = Vec::new();
    for ((rx, guard), text) in running.into_iter().zip(&req.prompts) {
        let echo = if req.echo {
            text.clone()
        } else {
            String::new()
        };
        done.push((echo, collect(rx, guard).await?));
    }
    Ok(single_answer(&st, &answer, &done))
}

/// Waits for the end of a generation (dropping the guard cancels it if this future is dropped).
async fn collect(
    mut rx: mpsc::UnboundedReceiver<Event>,
    _guard: CancelOnDrop,
) -> Result<Generation, ApiError> {
    while let Some(event) = rx.recv().await {
        match event {
            Event::Text(_) | Event::Step(_) => {}
            Event::Done(g) => return Ok(g),
            Event::Failed(e) => return Err(engine_error(e)),
        }
    }
    Err(engine_error(EngineError::SchedulerStopped))
}

fn single_answer(st: &AppState, a: &Answer, done: &[(String, Generation)]) -> Response {
    let choices = done
        .iter()
        .enumerate()
        .map(|(i, (echo, g))| {
            a.choice(
                i,
                &format!("{echo}{}", g.text),
                Some(g.finish_reason),
                false,
            )
        })
        .collect();
    let gens: Vec<&Generation> = done.iter().map(|(_, g)| g).collect();
    let mut body = a.envelope(choices, false);
    body["usage"] = usage(&gens);
    body["timings"] = timings(a.mode, &gens);
    st.metrics
        .latency
        .observe(a.started.elapsed().as_secs_f64());
    Json(body).into_response()
}

/// Binds, loads the model in the background (`/health` answers 503 meanwhile), and serves until
/// Ctrl-C or SIGTERM. `threads` sizes the kernel pool (default: all cores).
pub fn serve(args: ServeArgs, threads: Option<usize>) -> Result<(), String> {
    args.validate()?;
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.unwrap_or(0))
            .thread_name(|i| format!("dlm-kernel-{i}"))
            .build()
            .map_err(|e| format!("cannot start the worker threads: {e}"))?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let nofile = conn::raise_open_file_limit();
    let limits = args.conn_limits(nofile)?;
    rt.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        let state = AppState::new(&args);
        let app = router(state.clone(), args.max_body_bytes);
        tracing::info!("listening on http://{local} (loading the model)");
        tracing::info!(
            "connections: at most {} open, header timeout {} s, body timeout {} s, idle timeout {} s",
            limits.max_connections,
            limits.header_timeout.as_secs_f64(),
            limits.body_timeout.as_secs_f64(),
            limits.idle_timeout.as_secs_f64()
        );
        let (fail_tx, mut fail_rx) = mpsc::channel::<String>(1);
        let loader_state = state.clone();
        let load_args = args.clone();
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            match Runner::load(&load_args, Some(pool)) {
                Ok((runner, lines)) => {
                    for line in lines {
                        tracing::info!("{line}");
                    }
                    loader_state.set_ready(runner);
                    tracing::info!(
                        "ready in {:.2} s: POST http://{local}/v1/chat/completions",
                        t0.elapsed().as_secs_f64()
                    );
                }
                Err(e) => {
                    let _ = fail_tx.blocking_send(e);
                }
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = shutdown_signal() => None,
                // A successful load drops the sender: only a failure ends the server here.
                Some(e) = fail_rx.recv() => Some(e),
            }
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Option<String>>();
        conn::serve_connections(
            listener,
            app,
            limits,
            state.metrics.conns.clone(),
            async move {
                let reason = shutdown.await;
                let _ = stop_tx.send(reason);
            },
        )
        .await;
        match stop_rx.await {
            Ok(Some(load_error)) => Err(load_error),
            _ => Ok(()),
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
