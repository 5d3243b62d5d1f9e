//! Streaming answers: server-sent events in OpenAI's chunk format, and the opt-in step trace's
//! comment lines (docs/api.md).

use std::convert::Infallible;
use std::sync::Arc;

use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use engine::{EngineError, FinishReason, Generation};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::answer::{engine_error, timings, usage, Answer, Shape};
use crate::routes::AppState;
use crate::runner::{CancelOnDrop, Event};
use crate::trace::step_line;

/// Where a stream is.
enum Phase {
    Role,
    Body,
    Usage(Generation),
    Done,
    End,
}

struct StreamState {
    st: Arc<AppState>,
    answer: Answer,
    rx: mpsc::UnboundedReceiver<Event>,
    _guard: CancelOnDrop,
    include_usage: bool,
    phase: Phase,
    first_text: bool,
}

fn data(v: &Value) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(v.to_string()))
}

impl StreamState {
    fn chunk(&self, text: &str, finish: Option<FinishReason>) -> Value {
        let mut c = self
            .answer
            .envelope(vec![self.answer.choice(0, text, finish, true)], true);
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    /// The next event, or None at the end.
    async fn next(&mut self) -> Option<Result<SseEvent, Infallible>> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Body) {
                Phase::Role => {
                    if self.answer.shape != Shape::Chat {
                        continue; // completions start with text
                    }
                    let mut c = self.chunk("", None);
                    c["choices"][0]["delta"] = json!({"role": "assistant", "content": ""});
                    return Some(data(&c));
                }
                Phase::Body => match self.rx.recv().await {
                    Some(Event::Text(text)) => {
                        if !self.first_text {
                            self.first_text = true;
                            let elapsed = self.answer.started.elapsed().as_secs_f64();
                            self.st.metrics.ttft.observe(elapsed);
                        }
                        return Some(data(&self.chunk(&text, None)));
                    }
                    Some(Event::Step(record)) => {
                        let line = step_line(&self.answer.id, 0, &record);
                        return Some(Ok(SseEvent::default().comment(line)));
                    }
                    Some(Event::Done(g)) => {
                        let c = self.chunk("", Some(g.finish_reason));
                        self.st
                            .metrics
                            .latency
                            .observe(self.answer.started.elapsed().as_secs_f64());
                        self.phase = if self.include_usage {
                            Phase::Usage(g)
                        } else {
                            Phase::Done
                        };
                        return Some(data(&c));
                    }
                    Some(Event::Failed(e)) => {
                        self.phase = Phase::Done;
                        return Some(data(&engine_error(e).body()));
                    }
                    None => {
                        self.phase = Phase::Done;
                        return Some(data(&engine_error(EngineError::SchedulerStopped).body()));
                    }
                },
                Phase::Usage(g) => {
                    self.phase = Phase::Done;
                    let mut c = self.answer.envelope(Vec::new(), true);
                    c["usage"] = usage(&[&g]);
                    c["timings"] = timings(self.answer.mode, &[&g]);
                    return Some(data(&c));
                }
                Phase::Done => {
                    self.phase = Phase::End;
                    return Some(Ok(SseEvent::default().data("[DONE]")));
                }
                Phase::End => {
                    self.phase = Phase::End;
                    return None;
                }
            }
        }
    }
}

pub(crate) fn stream_answer(
    st: Arc<AppState>,
    answer: Answer,
    rx: mpsc::UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    include_usage: bool,
) -> Response {
    let state = StreamState {
        st,
        answer,
        rx,
        _guard: guard,
        include_usage,
        phase: Phase::Role,
        first_text: false,
    };
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        Box::pin(stream::unfold(state, |mut s| async move {
            s.next().await.map(|e| (e, s))
        }));
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-cache".parse().expect("valid header"),
    );
    resp
}
