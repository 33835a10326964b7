# raftq-operator image (no RocksDB inside). Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t raftq/raftq-operator .
FROM rust:1.91-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin raftq-operator \
    && objcopy --only-keep-debug target/release/raftq-operator /usr/local/lib/raftq-operator.debug \
    && objcopy --strip-debug --strip-unneeded --add-gnu-debuglink=/usr/local/lib/raftq-operator.debug \
         target/release/raftq-operator /usr/local/bin/raftq-operator
# The image ships the stripped binary (tens of MB, not hundreds); the debug
# info stays in this stage: `docker build --target build` and copy
# /usr/local/lib/raftq-operator.debug out to symbolise a core dump or profile.

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/raftq-operator /usr/local/bin/raftq-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["raftq-operator"]
CMD ["run"]
