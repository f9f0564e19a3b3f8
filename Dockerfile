# syntax=docker/dockerfile:1
#
# mirrorgate container image.
#
#   docker build -t mirrorgate .
#   docker run -p 8080:8080 -v mirrorgate-data:/var/lib/mirrorgate \
#       -e MIRRORGATE_JWT_SECRET="$(openssl rand -hex 32)" mirrorgate
#
# The image serves one site from /etc/mirrorgate/default.toml (config/docker.toml of this
# repository): listen 0.0.0.0:8080, data under /var/lib/mirrorgate. Use your own configuration by
# mounting it over that file, or with `docker run ... mirrorgate serve --config /path/in/container`.
# Auth is on (the listener is not loopback) and the image ships no token secret: it refuses to
# start until MIRRORGATE_JWT_SECRET holds 32 random bytes or more (the same on every site).

# ---- build ----------------------------------------------------------------------------------
FROM rust:1-slim-bookworm AS builder
WORKDIR /src
# The slim Rust image already has gcc and libc6-dev, which is all the C parts need (bundled
# SQLite, zstd, ring).
COPY . .
# The cache mounts keep the registry and the target directory between builds (BuildKit); the
# binary is copied out of the cached target directory in the same step. The release profile
# keeps line tables (debug = 1); they are stripped here, symbol names stay for backtraces.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/mirrorgate /usr/local/bin/mirrorgate \
    && strip --strip-debug /usr/local/bin/mirrorgate

# ---- run ------------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 mirrorgate \
    && useradd --system --uid 10001 --gid mirrorgate \
        --home-dir /var/lib/mirrorgate --no-create-home --shell /usr/sbin/nologin mirrorgate \
    && install -d -o mirrorgate -g mirrorgate -m 0750 /var/lib/mirrorgate
COPY --from=builder /usr/local/bin/mirrorgate /usr/local/bin/mirrorgate
# The example configurations, then the container's own default on top of the loopback one
# (a process listening on 127.0.0.1 inside a container cannot be reached from outside).
COPY config/ /etc/mirrorgate/
COPY config/docker.toml /etc/mirrorgate/default.toml
USER mirrorgate
# Relative data_dir values (as in the examples) resolve inside the data volume.
WORKDIR /var/lib/mirrorgate
VOLUME ["/var/lib/mirrorgate"]
EXPOSE 8080
# SIGTERM (docker stop) drains in-flight streams, up to limits.drain_timeout_secs (30 s by
# default); give `docker stop -t` at least that much.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mirrorgate"]
CMD ["serve", "--config", "/etc/mirrorgate/default.toml"]
