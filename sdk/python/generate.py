"""Generates the gRPC code under src/raftq/_proto from the protos in api/proto.

    python generate.py          # rewrite the generated files
    python generate.py --check  # exit 1 when they differ from the protos

The protos are the source of truth; the generated files are committed so the
package installs without grpcio-tools. Imports inside the generated code are
rewritten to live under ``raftq._proto``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "api" / "proto"
OUT = HERE / "src" / "raftq" / "_proto"
PROTOS = ["raftq/v1/queue.proto", "raftq/v1/cluster.proto"]


def _plugin(name: str) -> str:
    """A protoc plugin installed beside this Python (mypy-protobuf's typed
    gRPC stubs)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: pip install -e 'sdk/python[dev]'")
    return found


def generate(out: Path) -> None:
    """Writes the generated modules into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for proto in PROTOS:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
                f"--mypy_grpc_out={out}",
                proto,
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {proto} (exit {code})")
    for path in out.rglob("*.py*"):
        text = path.read_text()
        text = text.replace("from raftq.v1 import", "from raftq._proto.raftq.v1 import")
        path.write_text(text)
    for package in [out, out / "raftq", out / "raftq" / "v1"]:
        (package / "__init__.py").write_text("")


def files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    if not args.check:
        generate(OUT)
        print(f"generated {len(files(OUT))} files under {OUT.relative_to(HERE)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        want, have = files(fresh), files(OUT)
        drift = sorted(name for name in want.keys() | have.keys() if want.get(name) != have.get(name))
        if drift:
            print(
                "generated code differs from api/proto in: "
                + ", ".join(drift)
                + "\nrun `python sdk/python/generate.py` and commit the result",
                file=sys.stderr,
            )
            return 1
    print("generated code matches api/proto")
    return 0


if __name__ == "__main__":
    sys.exit(main())
