//! Metrics, event-stream auth and the Goodbye on shutdown.

mod support;

use fake_voice::FakeVoiceConfig;
use futures_util::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use support::process::{command, free_port, spawn_server};
use support::{Harness, LIMIT, TOKEN, enqueued_track_id};

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_players_frames_and_requests() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let track = enqueued_track_id(&h.enqueue(guild, &h.media.url("tone-440.mp3")).await.body);
    session.wait(LIMIT, |c| c.packets >= 20).await.expect("playing");
    let text = h.get("/metrics").await.body.as_str().unwrap_or_default().to_string();
    assert_eq!(metric(&text, "mesastream_players"), 1.0);
    assert_eq!(metric(&text, "mesastream_players_playing"), 1.0);
    let sent = metric(&text, "mesastream_frames_sent_total");
    assert!(sent >= 20.0, "frames sent {sent} while the listener got 20:\n{text}");
    assert!(metric(&text, "mesastream_clock_ticks_total") > 0.0);
    assert!(text.contains("route=\"/players/{id}/queue\""), "{text}");
    events.track_ended(guild, &track).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_can_require_the_token() {
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.ws_auth = true).await;
    let url = format!("ws://{}/ws", h.addr);
    let refused = tokio_tungstenite::connect_async(url.clone()).await;
    assert!(refused.is_err(), "no token, no stream");
    let accepted = tokio_tungstenite::connect_async(format!("{url}?token={TOKEN}")).await;
    assert!(accepted.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_goodbye_on_the_event_stream() {
    let server = spawn_server(&[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", server.port)).await.expect("ws");
    let exit = tokio::task::spawn_blocking(move || server.terminate());
    let goodbye = tokio::time::timeout(LIMIT, async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Ok(text) = msg.to_text()
                && text.contains("Goodbye")
            {
                return text.to_string();
            }
        }
        String::new()
    })
    .await
    .expect("goodbye in time");
    assert_eq!(goodbye, r#"{"type":"Goodbye"}"#);
    assert!(exit.await.expect("joined").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_settings_are_checked_and_an_absent_collector_does_not_matter() {
    let endpoint = ("OTLP_ENDPOINT", "http://127.0.0.1:1".to_string());
    let (mut cmd, _data) = command(&[endpoint.clone(), ("OTLP_AUTH", "Bearer \u{7f}bad".to_string())]);
    let bad = cmd.output().expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("OTLP_AUTH is not a valid header value"));

    // A configured but unreachable collector: the server still serves.
    let server = spawn_server(&[endpoint, ("OTLP_AUTH", "Bearer abc".to_string())]).await;
    let health =
        reqwest::Client::new().get(format!("{}/health", server.base)).bearer_auth(TOKEN).send().await.expect("health");
    assert_eq!(health.status(), 200);
}

/// A minimal OTLP/gRPC collector that keeps what it receives.
#[derive(Default, Clone)]
struct Collector(std::sync::Arc<std::sync::Mutex<Vec<Batch>>>);

/// One export call: the `authorization` metadata it carried and its spans.
type Batch = (Option<String>, ExportTraceServiceRequest);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let auth = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push((auth, request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_the_collector_inside_the_callers_trace() {
    let collector = Collector::default();
    let collector_port = free_port();
    let service = collector.clone();
    tokio::spawn(async move {
        let addr = format!("127.0.0.1:{collector_port}").parse().expect("addr");
        let _ = tonic::transport::Server::builder().add_service(TraceServiceServer::new(service)).serve(addr).await;
    });
    let server = spawn_server(&[
        ("OTLP_ENDPOINT", format!("http://127.0.0.1:{collector_port}")),
        ("OTLP_AUTH", "Bearer collector-secret".to_string()),
    ])
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let listed = reqwest::Client::new()
        .get(format!("{}/players", server.base))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .expect("request");
    assert_eq!(listed.status(), 200);
    // SIGTERM: the server flushes its spans on the way out.
    assert!(tokio::task::spawn_blocking(move || server.terminate()).await.expect("joined").success());
    let batches = collector.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(!batches.is_empty(), "nothing was exported");
    assert!(batches.iter().all(|(auth, _)| auth.as_deref() == Some("Bearer collector-secret")), "OTLP_AUTH is sent");
    let received: Vec<ExportTraceServiceRequest> = batches.into_iter().map(|(_, r)| r).collect();
    let spans: Vec<_> = received
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter(|s| s.name == "http request")
        .collect();
    let wanted: Vec<u8> =
        (0..trace_id.len()).step_by(2).map(|i| u8::from_str_radix(&trace_id[i..i + 2], 16).unwrap_or(0)).collect();
    assert!(
        spans.iter().any(|s| s.trace_id == wanted),
        "no request span in the caller's trace among {} spans",
        spans.len()
    );
    let service_named = received.iter().flat_map(|r| &r.resource_spans).any(|rs| {
        rs.resource.as_ref().is_some_and(|res| {
            res.attributes.iter().any(|kv| kv.key == "service.name" && format!("{:?}", kv.value).contains("mesastream"))
        })
    });
    assert!(service_named);
}
