# hoard in a container: a multi-stage build, a small Debian runtime with CA certificates
# (hoard verifies origins against the system's roots), running as an unprivileged user.
#
#   docker build -t hoard .
#   docker run -p 8080:8080 -v hoard-cache:/var/cache/hoard hoard
#   curl -x http://127.0.0.1:8080 http://example.org/
#
# Flags go after the image name (`docker run ... hoard --cache-disk 20GiB`); a config file
# can be mounted at /etc/hoard/hoard.toml and named with `--config`. The listener is on
# 0.0.0.0 inside the container and admits Docker's bridge networks (172.16.0.0/12), which
# is where clients on the host appear from; clients elsewhere keep their own addresses and
# need an `--allow` of their own (never 0.0.0.0/0 on a reachable port: an open proxy).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin hoard \
    && strip target/release/hoard

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/cache/hoard --create-home hoard
COPY --from=build /src/target/release/hoard /usr/local/bin/hoard
USER hoard
VOLUME /var/cache/hoard
EXPOSE 8080
# SIGTERM drains connections and saves the cache index.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/hoard", "--listen", "0.0.0.0:8080", "--allow", "172.16.0.0/12", "--cache-dir", "/var/cache/hoard"]
