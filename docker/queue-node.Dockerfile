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
    && objcopy --only-keep-debug target/release/queue-node /usr/local/lib/queue-node.debug \
    && objcopy --strip-debug --strip-unneeded --add-gnu-debuglink=/usr/local/lib/queue-node.debug \
         target/release/queue-node /usr/local/bin/queue-node
# The image ships the stripped binary (tens of MB, not hundreds); the debug
# info stays in this stage: `docker build --target build` and copy
# /usr/local/lib/queue-node.debug out to symbolise a core dump or profile.

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
