// Generates src/gen from the protos in api/proto with buf and ts-proto.
//
//   node scripts/generate.mjs          rewrite the generated files
//   node scripts/generate.mjs --check  exit 1 when they differ from the protos
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const protos = join(here, "..", "..", "api", "proto");
const out = join(here, "src", "gen");
const bin = join(here, "node_modules", ".bin");

function generate(dir) {
  rmSync(dir, { recursive: true, force: true });
  const template = {
    version: "v2",
    plugins: [
      {
        local: join(bin, "protoc-gen-ts_proto"),
        out: dir,
        opt: [
          "outputServices=grpc-js",
          "esModuleInterop=true",
          "env=node",
          "importSuffix=.js",
          "forceLong=number",
          "useDate=false",
          "outputPartialMethods=false",
        ],
      },
    ],
  };
  // Only raftq's own protos: api/proto also holds KEDA's, which the node serves.
  execFileSync(join(bin, "buf"), ["generate", protos, "--path", join(protos, "raftq"), "--template", JSON.stringify(template)], {
    stdio: "inherit",
  });
}

function files(root) {
  const found = {};
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else found[relative(root, path)] = readFileSync(path, "utf8");
    }
  };
  walk(root);
  return found;
}

if (process.argv.includes("--check")) {
  const fresh = mkdtempSync(join(tmpdir(), "raftq-gen-"));
  try {
    generate(fresh);
    const want = files(fresh);
    const have = files(out);
    const names = new Set([...Object.keys(want), ...Object.keys(have)]);
    const drift = [...names].filter((n) => want[n] !== have[n]).sort();
    if (drift.length > 0) {
      console.error(
        `generated code differs from api/proto in: ${drift.join(", ")}\nrun \`npm run generate\` in sdk/typescript and commit the result`,
      );
      process.exit(1);
    }
    console.log("generated code matches api/proto");
  } finally {
    rmSync(fresh, { recursive: true, force: true });
  }
} else {
  generate(out);
  console.log(`generated ${Object.keys(files(out)).length} files under src/gen`);
}
