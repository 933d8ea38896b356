//! mesastream: an audio streaming host for Discord bots.
//!
//! The data flow follows the modules: `api` → `player` → `audio` → `voice`.

pub mod api;
pub mod audio;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod egress;
pub mod events;
pub mod live;
pub mod model;
pub mod open_files;
pub mod player;
pub mod plugins;
pub mod scaffold;
pub mod store;
pub mod telemetry;
pub mod voice;
pub mod wall_clock;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::oneshot;

use crate::audio::PipelineConfig;
use crate::audio::encode::EncoderSettings;
use crate::audio::fetch::FetchOptions;
use crate::audio::workers::Workers;
use crate::config::Config;
use crate::events::{Event, EventBus};
use crate::player::{Context, Registry};
use crate::voice::{Scheduler, VoiceOptions};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start worker threads: {0}")]
    Threads(std::io::Error),
    #[error(transparent)]
    Tls(#[from] voice::tls::TlsConfigError),
    #[error("http client: {0}")]
    Http(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("plugins: {0}")]
    Plugins(#[from] plugins::PluginError),
}

/// A running server. The HTTP side runs on the caller's runtime; audio, fetches and voice on
/// their own threads and runtime.
pub struct Server {
    pub addr: SocketAddr,
    /// `INGEST_PORT`'s address, when set.
    pub ingest_addr: Option<SocketAddr>,
    pub registry: Arc<Registry>,
    pub events: EventBus,
    pub scheduler: Arc<Scheduler>,
    media: Option<tokio::runtime::Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let media = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            // Its blocking pool opens tracks (resolve, connect, probe); beyond this many at
            // once, openings wait their turn instead of adding threads.
            .max_blocking_threads(64)
            .thread_name("media")
            .enable_all()
            .build()
            .map_err(StartError::Threads)?;
        let extra: Vec<&Path> = config.extra_ca_file.as_deref().into_iter().collect();
        let tls = voice::tls::client_config(&extra)?;
        let egress = egress::Egress::new(egress::EgressSettings {
            allow: config.media_allow_hosts.clone(),
            dns_server: config.media_dns_server,
            ..Default::default()
        })
        .map_err(|e| StartError::Http(e.to_string()))?;
        // Programs plugins run reach the network through the same checks.
        let proxy_egress = egress.clone();
        let proxy = media
            .spawn(async move { egress::proxy::GuardProxy::start(proxy_egress).await })
            .await
            .map_err(|e| StartError::Threads(e.into()))?
            .map_err(StartError::Threads)?;
        let metrics = Arc::new(telemetry::Metrics::new());
        let mut store = match &config.redis_uri {
            Some(uri) => store::StateStore::redis(uri, &config.redis_prefix).await?,
            None => store::StateStore::embedded(&config.data_dir.join("state.redb"), &config.redis_prefix)?,
        };
        store.errors = metrics.store_errors.clone();
        tracing::info!(store = store.kind(), "state store configured");
        let cluster = match (&config.cluster, &config.redis_uri) {
            (Some(settings), Some(uri)) => {
                tracing::info!(node = %settings.node_id, url = %settings.url, "joining the cluster");
                Some(
                    cluster::Cluster::join(settings.clone(), uri, &config.redis_prefix, metrics.cluster.clone())
                        .await?,
                )
            }
            _ => None,
        };
        let clock_stats = voice::scheduler::ClockStats {
            ticks: metrics.clock_ticks.clone(),
            late_ticks: metrics.clock_late_ticks.clone(),
            skipped_ticks: metrics.clock_skipped_ticks.clone(),
        };
        open_files::raise_and_report(config.limits.players);
        let scheduler =
            Scheduler::start(config.clock_threads, config.clock_realtime, clock_stats).map_err(StartError::Threads)?;
        let events = EventBus::new(1024);
        let services = plugins::Services {
            runtime: media.handle().clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            egress: egress.clone(),
            proxy_environment: Arc::new(proxy.environment()),
            program_defaults: Arc::new(config.program_defaults()),
            process_runs: Arc::default(),
        };
        let plugins = start_plugins(&config, services, &events).await?;
        let cache_settings = cache::store::CacheSettings {
            dir: config.audio_cache_path.clone().unwrap_or_else(|| config.data_dir.join("audio-cache")),
            ttl: Duration::from_secs(config.audio_cache_ttl_secs),
            max_bytes: config.audio_cache_max_bytes,
            writer_buffer: config.cache_writer_buffer_bytes,
            reader_buffer: config.cache_reader_buffer_bytes,
        };
        let cache_metrics = metrics.clone();
        // Indexing reads the cache directory: off the async threads.
        let cache = tokio::task::spawn_blocking(move || cache::store::AudioCache::open(cache_settings, cache_metrics))
            .await
            .map_err(|e| StartError::Threads(e.into()))?;
        let pipeline = PipelineConfig {
            fetch: FetchOptions {
                egress: egress.clone(),
                runtime: media.handle().clone(),
                channel_capacity: config.source_channel_capacity,
                max_bytes: config.media_max_bytes,
                stalls: metrics.source_stalls.clone(),
            },
            encoder: EncoderSettings {
                bitrate_kbps: config.bitrate_kbps,
                complexity: config.encoding_complexity,
                encodes: metrics.opus_encodes.clone(),
            },
            frames_ahead: (config.frame_buffer_ms / 20) as usize,
            plugins,
            cache: Some(cache),
            workers: Workers::start(config.media_workers).map_err(StartError::Threads)?,
            decodes: metrics.opus_decodes.clone(),
        };
        let rewind_budget = audio::recording::RewindBudget::new(config.listen.rewind_max_bytes);
        let live = live::Mounts::open(
            store.clone(),
            scheduler.clone(),
            pipeline.clone(),
            live::LiveSettings {
                grace_ticks: config.live.grace_secs * 50,
                rewind_ticks: config.listen.rewind_seconds * 50,
                budget: rewind_budget.clone(),
            },
            metrics.clone(),
            events.clone(),
        )
        .await;
        let ctx = Arc::new(Context {
            events: events.clone(),
            pipeline,
            voice: VoiceOptions {
                tls,
                preferred_mode: config.voice_mode.clone(),
                step_timeout: Duration::from_secs(5),
                dave_ready_timeout: Duration::from_secs(3),
                resume_attempts: 5,
                gate: cluster.as_ref().map(|c| c.gate.clone()),
            },
            scheduler: scheduler.clone(),
            media: media.handle().clone(),
            egress: egress.clone(),
            store,
            output_counters: player::OutputCounters {
                frames_sent: metrics.frames_sent.clone(),
                underruns: metrics.underruns.clone(),
                skipped: metrics.player_skipped_ticks.clone(),
            },
            metrics: metrics.clone(),
            limits: config.limits,
            rewind_ticks: config.listen.rewind_seconds * 50,
            rewind_budget,
            live,
            cluster: cluster.clone(),
        });
        let ingest = Arc::new(api::ingest::source::Ingest::new(
            ctx.live.clone(),
            events.clone(),
            metrics.clone(),
            media.handle().clone(),
            config.live.clone(),
        ));
        let registry = Registry::new(ctx);
        tokio::spawn(player::tasks::positions::save_positions(Arc::downgrade(&registry)));
        let state = api::AppState {
            registry: registry.clone(),
            events: events.clone(),
            auth_token: config.auth_token.clone().into(),
            ws_auth: config.ws_auth,
            limits: Arc::new(api::limits::ApiLimits::new(config.limits)),
            listening: Arc::new(api::listen::Listening::start(
                &config.listen,
                scheduler.clone(),
                events.clone(),
                metrics,
            )),
            ingest: ingest.clone(),
            peers: match &cluster {
                Some(cluster) => Some(Arc::new(
                    api::cluster::Peers::new(cluster.clone()).map_err(|e| StartError::Http(e.to_string()))?,
                )),
                None => None,
            },
        };
        if let Some(cluster) = &cluster {
            cluster.spawn_relay(events.clone());
            let mut news = cluster.spawn_heartbeat();
            let registry = registry.clone();
            tokio::spawn(async move {
                while let Some(news) = news.recv().await {
                    match news {
                        cluster::News::Lost(id, done) => {
                            registry.let_go(id).await;
                            let _ = done.send(());
                        }
                        cluster::News::Adopt { player, from } => {
                            let registry = registry.clone();
                            tokio::spawn(async move {
                                if let Err(e) = registry.adopt(player, from).await {
                                    tracing::warn!(%player, error = %e, "could not adopt a player; its lease lapses");
                                }
                            });
                        }
                    }
                }
            });
        }
        let bind = |port: u16| async move {
            let addr = SocketAddr::new(config.bind, port);
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
            let local = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
            Ok::<_, StartError>((listener, local))
        };
        let (listener, addr) = bind(config.port).await?;
        let slots = api::ingest::split::AddressSlots::new(config.limits.connections_per_address);
        let header_timeout = Duration::from_secs(config.limits.header_timeout_secs);
        let listener =
            api::ingest::split::split(listener, ingest.clone(), api::ingest::split::Port::Api, slots.clone());
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let shutdown = shutdown_rx.shared();
        let ingest_server = match config.live.ingest_port {
            Some(port) => {
                let (listener, ingest_addr) = bind(port).await?;
                let listener =
                    api::ingest::split::split(listener, ingest.clone(), api::ingest::split::Port::Ingest, slots);
                let app = api::ingest::metadata_router().with_state(state.clone());
                let graceful = shutdown.clone();
                tokio::spawn(api::serve::serve(listener, app, header_timeout, async move {
                    let _ = graceful.await;
                }));
                Some(ingest_addr)
            }
            None => None,
        };
        let app = api::router(state, config.lavalink_password.clone());
        let served = tokio::spawn(api::serve::serve(listener, app, header_timeout, async move {
            let _ = shutdown.await;
        }));
        Ok(Self {
            addr,
            ingest_addr: ingest_server,
            registry,
            events,
            scheduler,
            media: Some(media),
            shutdown: Some(shutdown_tx),
            served: Some(served),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Says goodbye on the event stream, stops accepting requests and waits for them to end.
    pub async fn shut_down(mut self) {
        self.events.emit(Event::Goodbye);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), served).await;
        }
    }
}

/// Loads the plugins directory (when configured) and starts watching it.
async fn start_plugins(
    config: &Config,
    services: plugins::Services,
    events: &EventBus,
) -> Result<Option<Arc<plugins::PluginHost>>, StartError> {
    let Some(dir) = config.plugins_dir.clone() else {
        tracing::info!("PLUGINS_DIR is not set; running without plugins");
        return Ok(None);
    };
    let settings = plugins::PluginSettings {
        dir: Some(dir),
        config: config.plugins_config.clone(),
        cache_dir: Some(config.data_dir.join("plugin-cache")),
        reload_interval: Duration::from_millis(config.plugins_reload_ms),
        pool_instances: config.plugin_instances,
    };
    let host = plugins::PluginHost::new(settings, services)?;
    let scanning = host.clone();
    tokio::task::spawn_blocking(move || scanning.scan()).await.map_err(|e| StartError::Threads(e.into()))?;
    let events = events.clone();
    plugins::spawn_watcher(&host, move |changes| {
        for change in changes {
            match change {
                plugins::Change::Loaded { id, version } => events.emit(Event::PluginLoaded { id, version }),
                plugins::Change::Unloaded { id } => events.emit(Event::PluginUnloaded { id }),
                plugins::Change::Failed { .. } => {}
            }
        }
    });
    Ok(Some(host))
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(media) = self.media.take() {
            media.shutdown_background();
        }
    }
}
