# queue-node image. Build from the repository root:
#   docker build -f docker/queue-node.Dockerfile -t raftq/queue-node .
FROM rust:1.91-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin queue-node \
    && cp target/release/queue-node /usr/local/bin/queue-node

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/raftq && chown 65532:65532 /var/lib/raftq
COPY --from=build /usr/local/bin/queue-node /usr/local/bin/queue-node
USER 65532:65532
EXPOSE 7400 9400
VOLUME /var/lib/raftq
ENTRYPOINT ["queue-node"]
CMD ["--config", "/etc/raftq/node.yaml"]
