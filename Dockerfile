# Build stage: the host with a system libopus.
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libopus-dev cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mesastream

# Runtime: libopus, Python for yt-dlp, an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libopus0 ca-certificates python3 python3-pip curl \
    && python3 -m pip install --no-cache-dir --break-system-packages yt-dlp \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/mesastream mesastream
COPY --from=build /src/target/release/mesastream /usr/local/bin/mesastream
USER mesastream
ENV PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD curl -sf -H "Authorization: Bearer $AUTH_TOKEN" "http://127.0.0.1:$PORT/health" || exit 1
ENTRYPOINT ["/usr/local/bin/mesastream"]
