//! `GET /media-stream`: the WebSocket a TwiML `<Connect><Stream>` opens, speaking Twilio's Media
//! Streams protocol. `connected`, then `start` (`streamSid`, `callSid`, `customParameters` with
//! the control plane's `call_id`, `establishment_id`, `agent_id`, `agent_version_id`,
//! `runtime_id`, and `mediaFormat`) starts a simulated call; `media` frames, `dtmf` and `mark`
//! are counted; `stop` (or the socket closing) hangs up. The agent's side goes back as `media`
//! (silence) and `mark` messages, and with `SIM_HANGUP=script` the runtime closes the stream
//! when its script ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::calls::{self, CallMeta, CallPlan, LiveCall};
use crate::config::Hangup;
use crate::state::SimState;

/// Twilio's messages are small (a media frame is ~300 bytes of JSON).
const MAX_MESSAGE: usize = 64 * 1024;

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/media-stream", get(upgrade))
        .with_state(state)
}

async fn upgrade(ws: WebSocketUpgrade, State(state): State<Arc<SimState>>) -> Response {
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| stream(socket, state))
}

/// A custom parameter of `start` (strings only, at most 256 characters).
fn param(params: &Value, name: &str) -> Option<String> {
    params
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .map(str::to_string)
}

/// Why a `start` is refused (the stream is closed with this reason).
fn check_start(state: &SimState, start: &Value) -> Result<CallMeta, String> {
    let call_sid = start["callSid"]
        .as_str()
        .filter(|s| calls::valid_call_sid(s))
        .ok_or("start.callSid is missing or not a CallSid")?
        .to_string();
    let params = &start["customParameters"];
    for (name, ours) in [
        ("runtime_id", &state.config.runtime_id),
        ("establishment_id", &state.config.establishment_id),
    ] {
        if let Some(v) = param(params, name) {
            if &v != ours {
                return Err(format!(
                    "the stream is for {name} {v}, this runtime is {ours}"
                ));
            }
        }
    }
    let direction = param(params, "direction")
        .map(|d| match d.as_str() {
            "inbound" | "trunking-terminating" => "inbound".to_string(),
            _ => "outbound".to_string(),
        })
        .unwrap_or_else(|| "inbound".into());
    Ok(CallMeta {
        call_sid,
        call_id: param(params, "call_id"),
        stream_sid: start["streamSid"].as_str().map(str::to_string),
        agent_id: param(params, "agent_id"),
        agent_version_id: param(params, "agent_version_id"),
        direction,
        // Twilio's stream does not carry the parties; TwiML may pass them as parameters.
        from: param(params, "from").unwrap_or_else(|| "unknown".into()),
        to: param(params, "to").unwrap_or_else(|| "unknown".into()),
    })
}

/// Resolves once the call's `call_ended` is queued; never without a call.
async fn call_done(done: &mut Option<watch::Receiver<bool>>) {
    match done {
        Some(rx) => {
            if rx.wait_for(|d| *d).await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending::<()>().await,
    }
}

async fn stream(mut socket: WebSocket, state: Arc<SimState>) {
    let mut call: Option<Arc<LiveCall>> = None;
    let mut done: Option<watch::Receiver<bool>> = None;
    let (to_twilio, mut outgoing) = mpsc::channel::<String>(256);
    let mut messages = 0u64;
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    // Pings are answered by the library; Twilio sends no binary frames.
                    Some(Ok(_)) => continue,
                };
                messages += 1;
                let Ok(msg) = serde_json::from_str::<Value>(text.as_str()) else {
                    tracing::warn!("media stream: a message that is not JSON; ignored");
                    continue;
                };
                match msg["event"].as_str().unwrap_or("") {
                    "connected" => tracing::debug!(protocol = ?msg["protocol"].as_str(), "media stream connected"),
                    "start" => {
                        if call.is_some() {
                            tracing::warn!("media stream: a second start; ignored");
                            continue;
                        }
                        let started = check_start(&state, &msg["start"]).and_then(|mut meta| {
                            meta.stream_sid = meta.stream_sid.or_else(|| msg["streamSid"].as_str().map(str::to_string));
                            let d = &state.config.calls;
                            let plan = CallPlan {
                                segments: d.segments,
                                pace: d.pace,
                                end_with_script: d.hangup == Hangup::Script,
                                tool_proxy: None,
                            };
                            calls::start(&state, meta, plan, Some(to_twilio.clone())).map_err(|e| e.to_string())
                        });
                        match started {
                            Ok(c) => {
                                tracing::info!(call_sid = %c.meta.call_sid, stream_sid = ?c.meta.stream_sid,
                                    media_format = %msg["start"]["mediaFormat"], "media stream started");
                                done = Some(c.done_watch());
                                call = Some(c);
                            }
                            Err(reason) => {
                                tracing::warn!(%reason, "media stream refused");
                                let _ = socket.send(Message::Close(Some(CloseFrame {
                                    code: 1008,
                                    reason: reason.chars().take(120).collect::<String>().into(),
                                }))).await;
                                return;
                            }
                        }
                    }
                    "media" => {
                        if let Some(c) = &call {
                            let payload = msg["media"]["payload"].as_str().unwrap_or("");
                            c.media_frames.fetch_add(1, Ordering::Relaxed);
                            c.media_bytes.fetch_add((payload.len() / 4 * 3) as u64, Ordering::Relaxed);
                        }
                    }
                    "dtmf" => {
                        if let Some(c) = &call {
                            c.dtmf.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(call_sid = %c.meta.call_sid, digit = ?msg["dtmf"]["digit"].as_str(), "dtmf");
                        }
                    }
                    "mark" => {
                        if let Some(c) = &call {
                            c.marks_received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    "stop" => {
                        if let Some(c) = &call {
                            c.hang_up("customer");
                        }
                    }
                    other => tracing::debug!(event = other, "media stream: unknown event; ignored"),
                }
            }
            Some(out) = outgoing.recv() => {
                if socket.send(Message::Text(out.into())).await.is_err() {
                    break;
                }
            }
            _ = call_done(&mut done) => {
                // The call is over (the agent hung up, or after `stop`): close the stream.
                let _ = socket.send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "call ended".into(),
                }))).await;
                break;
            }
        }
    }
    // The socket went away without `stop`: the call is over all the same.
    if let Some(c) = &call {
        c.hang_up("unknown");
    }
    tracing::debug!(messages, "media stream closed");
}
