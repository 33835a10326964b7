#!/usr/bin/env bash
# Generates raftqpb/ from the protos in api/proto with buf, protoc-gen-go
# and protoc-gen-go-grpc (pinned in tools/go.mod).
#
#   ./generate.sh          rewrite the generated files
#   ./generate.sh --check  exit 1 when they differ from the protos
set -euo pipefail
cd "$(dirname "$0")"
tools="go tool -modfile=tools/go.mod"
module=github.com/raftq/raftq/sdk/go
map="Mraftq/v1/queue.proto=$module/raftqpb;raftqpb,Mraftq/v1/cluster.proto=$module/raftqpb;raftqpb"

generate() {
  local out=$1
  rm -rf "$out/raftqpb"
  mkdir -p "$out"
  local template
  template=$(cat <<JSON
{"version":"v2","plugins":[
  {"local":["go","tool","-modfile=tools/go.mod","protoc-gen-go"],"out":"$out","opt":["module=$module","$map"]},
  {"local":["go","tool","-modfile=tools/go.mod","protoc-gen-go-grpc"],"out":"$out","opt":["module=$module","$map"]}
]}
JSON
)
  # Only raftq's own protos: api/proto also holds KEDA's, which the node serves.
  $tools buf generate ../../api/proto --path ../../api/proto/raftq --template "$template"
}

if [ "${1:-}" = "--check" ]; then
  fresh=$(mktemp -d)
  trap 'rm -rf "$fresh"' EXIT
  generate "$fresh"
  if ! diff -r "$fresh/raftqpb" raftqpb >/dev/null; then
    diff -r "$fresh/raftqpb" raftqpb | head -20 >&2 || true
    echo "generated code differs from api/proto: run sdk/go/generate.sh and commit the result" >&2
    exit 1
  fi
  echo "generated code matches api/proto"
else
  generate .
  echo "generated raftqpb/"
fi
