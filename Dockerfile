# The image is the product: the server, the first-party plugins built for wasm32-wasip2 with
# their default grants, yt-dlp and libopus. The install step is scripts/install.sh, the same
# script the test suite runs (tests/image.rs starts the installed binary as this image does).

# Build stage: the server and the plugins.
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libopus-dev cmake \
    && rm -rf /var/lib/apt/lists/* && rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN bash scripts/install.sh /opt/mesastream

# Runtime: libopus, Python for yt-dlp, an unprivileged user that cannot write its plugins.
FROM debian:bookworm-slim
# Pin yt-dlp with --build-arg YT_DLP_VERSION=…; unpinned, each build takes the newest
# (sites change, and yt-dlp's extractors follow them).
ARG YT_DLP_VERSION=
RUN apt-get update && apt-get install -y --no-install-recommends libopus0 ca-certificates python3 python3-pip curl \
    && python3 -m pip install --no-cache-dir --break-system-packages "yt-dlp${YT_DLP_VERSION:+==$YT_DLP_VERSION}" \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/mesastream mesastream \
    && mkdir -p /var/lib/mesastream /var/cache/mesastream/audio \
    && chown -R mesastream /var/lib/mesastream /var/cache/mesastream
# bin/mesastream finds share/mesastream/plugins beside it: no PLUGINS_DIR needed.
COPY --from=build /opt/mesastream/bin/mesastream /usr/local/bin/mesastream
COPY --from=build /opt/mesastream/share/mesastream /usr/local/share/mesastream
USER mesastream
ENV PORT=8080 DATA_DIR=/var/lib/mesastream AUDIO_CACHE_PATH=/var/cache/mesastream/audio
VOLUME ["/var/lib/mesastream", "/var/cache/mesastream"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD curl -sf -H "Authorization: Bearer $AUTH_TOKEN" "http://127.0.0.1:$PORT/health" || exit 1
ENTRYPOINT ["/usr/local/bin/mesastream"]
