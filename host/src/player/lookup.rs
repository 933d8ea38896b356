//! Finding what a query names, for every protocol: the resolver plugins when one claims the
//! query, else a direct media link checked at its source. Both run off the API's threads.

use std::sync::Arc;

use super::Registry;
use super::track::{self, TrackUrlError};
use crate::audio::{fetch, pipeline};
use crate::model::{Id, Track};
use crate::plugins::PluginHost;
use crate::plugins::resolver::{ResolveFailure, Resolved};

#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error(transparent)]
    Url(#[from] TrackUrlError),
    /// The link was refused or its source did not answer with media.
    #[error("{url}: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("{0}")]
    Internal(String),
}

impl Registry {
    /// The resolver plugins, when one of them takes `query`.
    pub fn resolvers_for(&self, query: &str) -> Option<Arc<PluginHost>> {
        self.ctx.pipeline.plugins.clone().filter(|h| h.has_resolvers() && h.claims(query))
    }

    /// Resolves `query` through the plugins.
    pub async fn resolve(
        &self,
        host: Arc<PluginHost>,
        query: &str,
        guild: Option<Id>,
    ) -> Result<Result<Resolved, ResolveFailure>, DirectError> {
        let q = query.to_string();
        let resolved = self.ctx.media.spawn_blocking(move || host.resolve(&q, guild.map(|g| g.to_string()), None, 0));
        resolved.await.map_err(|e| DirectError::Internal(e.to_string()))
    }

    /// A direct media link as a track, once its source answered (or at once when the cache
    /// already holds it).
    pub async fn direct_track(&self, raw: &str) -> Result<Track, DirectError> {
        let url = track::parse_url(raw)?;
        let cache = self.ctx.pipeline.cache.as_ref();
        if cache.is_some_and(|c| c.knows(&pipeline::direct_cache_key(raw.trim()))) {
            // Played before (or playing now): no need to ask the source again.
            return Ok(track::direct_track(&url, raw));
        }
        let egress = self.ctx.egress.clone();
        let target = url.to_string();
        let checked = self.ctx.media.spawn(async move { fetch::check(&egress, &target).await });
        checked
            .await
            .map_err(|e| DirectError::Internal(e.to_string()))?
            .map_err(|e| DirectError::Unavailable { url: url.to_string(), reason: e.to_string() })?;
        Ok(track::direct_track(&url, raw))
    }
}
