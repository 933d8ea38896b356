//! What the node says about itself: `/version`, `/v4/info`, `/v4/stats`, and the route
//! planner, answered as Lavalink answers without one configured.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::{Value, json};

use super::error::LavalinkError;
use super::player_update::FILTER_ORDER;
use super::{LavalinkState, Node};
use crate::plugins::PluginHost;
use crate::plugins::manifest::Kind;
use crate::telemetry::process;

/// The Lavalink release whose protocol this node speaks (clients gate features on it).
const PROTOCOL: (u64, u64, u64) = (4, 2, 2);

/// `4.2.2+mesastream.0.1.0`: the protocol's version, with this build as semver build data.
fn semver() -> String {
    let (major, minor, patch) = PROTOCOL;
    format!("{major}.{minor}.{patch}+{}", build())
}

fn build() -> String {
    format!("mesastream.{}", env!("CARGO_PKG_VERSION"))
}

pub async fn version() -> String {
    semver()
}

pub async fn info(State(state): State<LavalinkState>) -> Json<Value> {
    let (major, minor, patch) = PROTOCOL;
    let plugins = state.app.registry.ctx.pipeline.plugins.clone();
    Json(json!({
        "version": {
            "semver": semver(),
            "major": major,
            "minor": minor,
            "patch": patch,
            "preRelease": null,
            "build": build(),
        },
        "buildTime": 0,
        "git": { "branch": "main", "commit": "unknown", "commitTime": 0 },
        "jvm": "none (mesastream is a native binary)",
        "lavaplayer": "none (mesastream's own media engine)",
        "sourceManagers": source_managers(plugins.as_deref()),
        "filters": filters(plugins.as_deref()),
        "plugins": plugins.map_or_else(Vec::new, |h| h.info().into_iter().map(|p| json!({"name": p.id, "version": p.version})).collect()),
    }))
}

/// `http` (direct links need no plugin) and the sources the resolver plugins claim, by the
/// names Lavalink's source managers have, so clients accept their search prefixes.
fn source_managers(plugins: Option<&PluginHost>) -> Vec<String> {
    let mut names = vec!["http".to_string()];
    let patterns = plugins.map_or_else(Vec::new, |h| {
        h.plugins()
            .iter()
            .filter(|p| p.manifest.kind == Kind::Resolver)
            .flat_map(|p| p.manifest.patterns.clone())
            .collect::<Vec<_>>()
    });
    for pattern in patterns {
        let name = match pattern.as_str() {
            p if p.starts_with("ytsearch") || p.starts_with("ytmsearch") || p.contains("youtu") => "youtube",
            p if p.starts_with("scsearch") || p.contains("soundcloud.com") => "soundcloud",
            p if p.contains("bandcamp.com") => "bandcamp",
            p if p.contains("twitch.tv") => "twitch",
            p if p.contains("vimeo.com") => "vimeo",
            _ => continue,
        };
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

fn filters(plugins: Option<&PluginHost>) -> Vec<&'static str> {
    // `volume` is the player's own; the rest are listed when a loaded plugin provides them.
    FILTER_ORDER
        .into_iter()
        .filter(|name| *name == "volume" || plugins.is_some_and(|h| h.filter(name).is_some()))
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub players: usize,
    pub playing_players: usize,
    pub uptime: u64,
    pub memory: Memory,
    pub cpu: Cpu,
}

#[derive(Serialize)]
pub struct Memory {
    free: u64,
    used: u64,
    allocated: u64,
    reservable: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    cores: usize,
    system_load: f64,
    lavalink_load: f64,
}

/// The node's figures, for `/v4/stats` and the WebSocket's `stats` frames. Players are all
/// of this node's, whatever protocol made them, as Lavalink counts all sessions'.
pub async fn node_stats(state: &LavalinkState) -> Stats {
    let players = state.app.registry.all();
    let playing = crate::player::count_playing(&players).await;
    let node: &Node = &state.node;
    let rss = process::rss_bytes();
    let cores = process::cores();
    Stats {
        players: players.len(),
        playing_players: playing,
        uptime: node.started.elapsed().as_millis() as u64,
        memory: Memory {
            free: process::memory_available_bytes(),
            used: rss,
            allocated: rss,
            reservable: process::memory_limit_bytes(),
        },
        cpu: Cpu {
            cores,
            system_load: (process::load_average() / cores as f64).clamp(0.0, 1.0),
            lavalink_load: node.cpu.read(),
        },
    }
}

/// `GET /v4/stats`: the figures without `frameStats`, as Lavalink's REST answer.
pub async fn stats(State(state): State<LavalinkState>) -> Json<Stats> {
    Json(node_stats(&state).await)
}

/// No route planner is configured: 204, as Lavalink answers then.
pub async fn route_planner_status() -> impl IntoResponse {
    StatusCode::NO_CONTENT
}

pub async fn route_planner_disabled() -> LavalinkError {
    LavalinkError::internal("Can't access disabled route planner")
}
