import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

// dist/test/ → the package root.
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

test("the generated code matches the protos", () => {
  execFileSync(process.execPath, [join(root, "scripts", "generate.mjs"), "--check"], { stdio: "pipe" });
});
