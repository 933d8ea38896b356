//! One service to the client: in a cluster, a request for a player another node plays is
//! relayed to that node and its answer returned unchanged; a new player goes to the node with
//! the fewest players (or the one `?node=` names); `GET /players` lists every node's players
//! and `GET /nodes` the nodes themselves. A relayed request carries [`FORWARDED`], so it is
//! answered where it lands and never relayed twice.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::{AppState, BODY_LIMIT, error::ApiError};
use crate::cluster::{Cluster, NodeRecord};
use crate::model::{Id, PlayerSnapshot};

/// Set on a request one node relays to another: the node that relayed it.
pub const FORWARDED: &str = "x-mesastream-forwarded-by";

/// The headers a relayed request keeps.
const KEPT: [&str; 4] = ["authorization", "content-type", "accept", "range"];

/// This node's view of its peers.
pub struct Peers {
    pub cluster: Arc<Cluster>,
    client: reqwest::Client,
}

impl Peers {
    pub fn new(cluster: Arc<Cluster>) -> Result<Self, reqwest::Error> {
        // Voice connects inside a create: allow it the time it takes. No proxy: peers are
        // addressed directly.
        let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(3)).no_proxy().build()?;
        Ok(Self { cluster, client })
    }

    /// Sends a request to `node` and answers with its answer (status, type, body streamed).
    async fn relay(&self, node: &NodeRecord, method: Method, path: &str, headers: &HeaderMap, body: Body) -> Response {
        let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
            Ok(body) => body,
            Err(_) => return ApiError::payload_too_large("request body is larger than 2 MiB").into_response(),
        };
        let mut request = self.client.request(method, format!("{}{path}", node.url)).body(body);
        for name in KEPT {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        request = request.header(FORWARDED, self.cluster.node_id());
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => {
                let why = format!("node {} (which plays this) did not answer: {e}", node.id);
                return ApiError::service_unavailable(why).into_response();
            }
        };
        let mut response = Response::builder().status(answer.status().as_u16());
        for name in ["content-type", "cache-control", "www-authenticate", "icy-metaint", "icy-name"] {
            if let Some(value) = answer.headers().get(name).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
                response = response.header(name, value);
            }
        }
        response
            .body(Body::from_stream(answer.bytes_stream()))
            .unwrap_or_else(|e| ApiError::internal(e).into_response())
    }
}

fn relayed(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

/// The player a `/players/{id}…` path names.
fn player_in_path(path: &str) -> Option<Id> {
    let rest = path.strip_prefix("/players/")?;
    rest.split('/').next()?.parse().ok().map(Id)
}

/// Relays a request for a player this node does not play to the node that does.
pub async fn forward_to_owner(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let Some(peers) = app.peers.clone() else { return next.run(request).await };
    let Some(id) = player_in_path(request.uri().path()) else { return next.run(request).await };
    if relayed(request.headers()) || app.registry.get(id).is_ok() {
        return next.run(request).await;
    }
    let owner = match peers.cluster.owner(id).await {
        Ok(Some(owner)) if owner.id != peers.cluster.node_id() => owner,
        // Nobody else plays it: answered here (a 404 for an unknown player).
        Ok(_) => return next.run(request).await,
        Err(e) => return ApiError::store_unavailable(e).into_response(),
    };
    let path = request.uri().path_and_query().map_or_else(|| request.uri().path().to_string(), |p| p.to_string());
    let (parts, body) = request.into_parts();
    peers.relay(&owner, parts.method, &path, &parts.headers, body).await
}

/// Where `POST /players` should run: the node that plays the player already, else the one
/// `?node=` pins, else the least loaded. None: here.
pub async fn placement(
    app: &AppState,
    headers: &HeaderMap,
    id: Id,
    pinned: Option<&str>,
) -> Result<Option<NodeRecord>, ApiError> {
    let Some(peers) = &app.peers else { return Ok(None) };
    if relayed(headers) {
        return Ok(None);
    }
    let cluster = &peers.cluster;
    let target = match cluster.owner(id).await.map_err(ApiError::store_unavailable)? {
        Some(owner) => owner,
        None => match pinned {
            Some(node) => {
                let nodes = cluster.nodes().await.map_err(ApiError::store_unavailable)?;
                let found = nodes.into_iter().find(|n| n.id == node);
                found.ok_or_else(|| ApiError::bad_request(format!("no live node named {node:?}")))?
            }
            None => cluster.least_loaded().await.map_err(ApiError::store_unavailable)?,
        },
    };
    Ok((target.id != cluster.node_id()).then_some(target))
}

/// Relays a `POST /players` to the node chosen for it.
pub async fn create_on(
    app: &AppState,
    node: &NodeRecord,
    headers: &HeaderMap,
    body: &impl serde::Serialize,
) -> Response {
    let Some(peers) = &app.peers else { return ApiError::internal("not in a cluster").into_response() };
    let body = match serde_json::to_vec(body) {
        Ok(body) => body,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    peers.relay(node, Method::POST, "/players", headers, Body::from(body)).await
}

/// The players every other live node plays (for `GET /players`); a node that does not answer
/// is left out and logged.
pub async fn players_elsewhere(app: &AppState, headers: &HeaderMap) -> Vec<PlayerSnapshot> {
    let Some(peers) = &app.peers else { return Vec::new() };
    if relayed(headers) {
        return Vec::new();
    }
    let nodes = match peers.cluster.nodes().await {
        Ok(nodes) => nodes,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the cluster's nodes; listing this node's players only");
            return Vec::new();
        }
    };
    let mut all = Vec::new();
    for node in nodes.iter().filter(|n| n.id != peers.cluster.node_id()) {
        let answer = peers.relay(node, Method::GET, "/players", headers, Body::empty()).await;
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX).await.unwrap_or_default();
        match serde_json::from_slice::<Vec<PlayerSnapshot>>(&body) {
            Ok(players) => all.extend(players),
            Err(e) => tracing::warn!(node = %node.id, error = %e, "a node's players could not be listed"),
        }
    }
    all
}

/// `GET /nodes`: the cluster's live nodes, with how many players each plays.
pub async fn nodes(State(app): State<AppState>) -> Result<Json<Vec<NodeRecord>>, ApiError> {
    let peers = app.peers.as_ref().ok_or_else(not_clustered)?;
    Ok(Json(peers.cluster.nodes().await.map_err(ApiError::store_unavailable)?))
}

/// How far ahead a migration's switch is set: time for the taking node to connect voice
/// (DAVE ready) and open the track while the giving node still plays.
const SWITCH_LEAD_MS: u64 = 1500;
/// How long past the switch the giving node waits for the taking one to hold the lease and
/// for its own last frames to go out (in 20 ms steps).
const HANDOVER_WAIT_TICKS: u32 = 50;
/// Players a drain moves at once.
const DRAIN_AT_ONCE: usize = 16;

/// `POST /players/{id}/migrate`: an optional node to move to.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    node: Option<String>,
}

/// Where a player went, and when it switched.
#[derive(Debug, serde::Serialize)]
pub struct Moved {
    player_id: Id,
    node: String,
    switch_at_ms: u64,
}

/// What the giving node sends the taking one.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TakeRequest {
    snapshot: PlayerSnapshot,
    from: String,
    generation: u64,
    switch_at_ms: u64,
    position_ms: u64,
    playing: bool,
}

/// `POST /players/{id}/migrate` on the node that plays it (any other relays it here).
pub async fn migrate(
    State(app): State<AppState>,
    super::extract::PlayerId(id): super::extract::PlayerId,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Moved>, ApiError> {
    let peers = app.peers.clone().ok_or_else(not_clustered)?;
    let request: MigrateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MigrateRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(ApiError::bad_request)?
    };
    app.registry.get(id)?;
    let target = match request.node {
        Some(node) if node == peers.cluster.node_id() => {
            return Err(ApiError::bad_request(format!("player {id} already plays on {node}")));
        }
        Some(node) => {
            let nodes = peers.cluster.nodes().await.map_err(ApiError::store_unavailable)?;
            let found = nodes.into_iter().find(|n| n.id == node && !n.draining);
            found.ok_or_else(|| ApiError::bad_request(format!("no live node named {node:?} takes players")))?
        }
        None => peers
            .cluster
            .least_loaded_other()
            .await
            .map_err(ApiError::store_unavailable)?
            .ok_or_else(|| ApiError::service_unavailable("no other live node to move the player to"))?,
    };
    Ok(Json(move_player(&app, &peers, id, &target, &headers).await?))
}

/// Moves player `id` to `target`, make-before-break: the target connects and opens the
/// track at the position the player will have reached at the switch, then at the switch
/// (a wall-clock instant both nodes share) this node stops sending and the target starts.
async fn move_player(
    app: &AppState,
    peers: &Peers,
    id: Id,
    target: &NodeRecord,
    headers: &HeaderMap,
) -> Result<Moved, ApiError> {
    let cluster = &peers.cluster;
    let player = app.registry.get(id)?;
    let generation =
        cluster.generation_of(id).ok_or_else(|| ApiError::service_unavailable("this node does not hold the player"))?;
    let snapshot = player.snapshot().await;
    let playing = snapshot.status == crate::model::PlayerStatus::Playing;
    let switch_at_ms = crate::wall_clock::unix_ms() + SWITCH_LEAD_MS;
    let position_ms = snapshot.position_ms + if playing { SWITCH_LEAD_MS } else { 0 };
    let take =
        TakeRequest { snapshot, from: cluster.node_id().to_string(), generation, switch_at_ms, position_ms, playing };
    let body = serde_json::to_vec(&take).map_err(ApiError::internal)?;
    let path = format!("/cluster/players/{id}/take");
    let mut headers = headers.clone();
    headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let answer = peers.relay(target, Method::POST, &path, &headers, Body::from(body)).await;
    if !answer.status().is_success() {
        let body = axum::body::to_bytes(answer.into_body(), BODY_LIMIT).await.unwrap_or_default();
        let why = String::from_utf8_lossy(&body);
        return Err(ApiError::service_unavailable(format!("node {} did not take player {id}: {why}", target.id)));
    }
    // This node sends up to the frame the target starts from, and not one more.
    player.output.cut_at(Some(position_ms));
    let registry = app.registry.clone();
    let (giving, taking) = (cluster.clone(), target.id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(until_unix_ms(switch_at_ms)).await;
        // The target takes the lease at the switch too: wait (a little) until it has, and
        // for a player running late to send its last frames.
        for _ in 0..HANDOVER_WAIT_TICKS {
            let taken = matches!(giving.owner(id).await, Ok(Some(owner)) if owner.id != giving.node_id());
            if taken && player.output.cut_reached() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match giving.owner(id).await {
            Ok(Some(owner)) if owner.id == giving.node_id() => {
                tracing::warn!(player = %id, node = %taking, "the other node did not take the player; playing on here");
                player.output.cut_at(None);
            }
            _ => {
                giving.hand_off(id);
                registry.let_go(id).await;
            }
        }
    });
    Ok(Moved { player_id: id, node: target.id.clone(), switch_at_ms })
}

/// How long from now until the Unix time `at_ms`.
fn until_unix_ms(at_ms: u64) -> Duration {
    Duration::from_millis(at_ms.saturating_sub(crate::wall_clock::unix_ms()))
}

/// `POST /cluster/players/{id}/take` (from the node giving the player): prepares the player
/// here, answers once it is ready, and switches to it at the agreed instant.
pub async fn take(
    State(app): State<AppState>,
    super::extract::PlayerId(id): super::extract::PlayerId,
    super::extract::JsonBody(take): super::extract::JsonBody<TakeRequest>,
) -> Result<axum::http::StatusCode, ApiError> {
    let peers = app.peers.clone().ok_or_else(not_clustered)?;
    if take.snapshot.player_id != id {
        return Err(ApiError::bad_request("the snapshot is another player's"));
    }
    let player = app.registry.prepare_take_over(&take.snapshot, take.position_ms).await?;
    if crate::wall_clock::unix_ms() >= take.switch_at_ms {
        app.registry.abandon(player).await;
        return Err(ApiError::service_unavailable("the player was not ready here before the switch"));
    }
    let registry = app.registry.clone();
    tokio::spawn(async move {
        tokio::time::sleep(until_unix_ms(take.switch_at_ms)).await;
        match peers.cluster.take_over(id, &take.from, take.generation).await {
            Ok(true) => registry.commit_take_over(player, take.from, take.playing).await,
            Ok(false) => {
                tracing::warn!(player = %id, from = %take.from, "the player's lease changed before the switch; not taking it");
                registry.abandon(player).await;
            }
            Err(e) => {
                tracing::warn!(player = %id, error = %e, "could not take the player's lease at the switch");
                registry.abandon(player).await;
            }
        }
    });
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// What a drain did.
#[derive(Debug, serde::Serialize)]
pub struct Drained {
    node: String,
    moved: Vec<Moved>,
    failed: Vec<NotMoved>,
}

#[derive(Debug, serde::Serialize)]
pub struct NotMoved {
    player_id: Id,
    error: String,
}

/// `POST /nodes/{id}/drain`: the node stops taking players and moves each of its players to
/// the least loaded other node; it answers once every move is set. Sent to another node, it
/// is relayed there.
pub async fn drain(
    State(app): State<AppState>,
    axum::extract::Path(node): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(peers) = app.peers.clone() else { return not_clustered().into_response() };
    if node != peers.cluster.node_id() {
        let nodes = match peers.cluster.nodes().await {
            Ok(nodes) => nodes,
            Err(e) => return ApiError::store_unavailable(e).into_response(),
        };
        let Some(other) = nodes.into_iter().find(|n| n.id == node) else {
            return ApiError::not_found(format!("no live node named {node:?}")).into_response();
        };
        return peers.relay(&other, Method::POST, &format!("/nodes/{node}/drain"), &headers, Body::empty()).await;
    }
    peers.cluster.start_draining();
    let moves = app.registry.list().into_iter().map(|player| {
        let (app, peers, headers) = (app.clone(), peers.clone(), headers.clone());
        async move {
            let moved = match peers.cluster.least_loaded_other().await {
                Ok(Some(target)) => move_player(&app, &peers, player.id, &target, &headers).await,
                Ok(None) => Err(ApiError::service_unavailable("no other live node takes players")),
                Err(e) => Err(ApiError::store_unavailable(e)),
            };
            moved.map_err(|e| NotMoved { player_id: player.id, error: e.message })
        }
    });
    let results: Vec<Result<Moved, NotMoved>> =
        futures_util::stream::iter(moves).buffer_unordered(DRAIN_AT_ONCE).collect().await;
    let (moved, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    Json(Drained {
        node,
        moved: moved.into_iter().flatten().collect(),
        failed: failed.into_iter().filter_map(Result::err).collect(),
    })
    .into_response()
}

fn not_clustered() -> ApiError {
    ApiError::not_found("this node is not in a cluster (set NODE_ID and REDIS_URI)")
}
