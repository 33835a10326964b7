# raftq-operator image (no RocksDB inside). Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t raftq/raftq-operator .
FROM rust:1.91-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin raftq-operator \
    && cp target/release/raftq-operator /usr/local/bin/raftq-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/raftq-operator /usr/local/bin/raftq-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["raftq-operator"]
CMD ["run"]
