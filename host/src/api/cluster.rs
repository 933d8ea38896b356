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
    let Some(peers) = &app.peers else {
        return Err(ApiError::not_found("this node is not in a cluster (set NODE_ID and REDIS_URI)"));
    };
    Ok(Json(peers.cluster.nodes().await.map_err(ApiError::store_unavailable)?))
}
