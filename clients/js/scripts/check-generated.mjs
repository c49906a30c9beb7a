// Fails when src/gen/ no longer matches what `npm run generate` makes from ../../proto
// (the .proto changed, or the generator's version changed). Generates into a temporary
// directory and compares file by file; src/gen/ itself is not touched.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const committed = join(root, "src", "gen");
const tmp = mkdtempSync(join(tmpdir(), "signalgate-gen-"));

function files(dir) {
  if (!existsSync(dir)) return [];
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else out.push(p);
  }
  return out;
}

try {
  const bin = join(root, "node_modules", ".bin");
  execFileSync(join(bin, "buf"), ["generate", "--template", "buf.gen.yaml", "--output", tmp], {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` },
  });
  const fresh = join(tmp, "src", "gen");
  const want = new Map(files(fresh).map((f) => [relative(fresh, f), f]));
  const have = new Map(files(committed).map((f) => [relative(committed, f), f]));
  const problems = [];
  for (const [rel, f] of want) {
    const mine = have.get(rel);
    if (!mine) problems.push(`missing: src/gen/${rel}`);
    else if (!readFileSync(mine).equals(readFileSync(f))) problems.push(`differs: src/gen/${rel}`);
  }
  for (const rel of have.keys()) if (!want.has(rel)) problems.push(`not generated any more: src/gen/${rel}`);
  if (want.size === 0) problems.push("the generator produced nothing");
  if (problems.length > 0) {
    console.error(
      `STALE: src/gen/ does not match ../../proto:\n  ${problems.join("\n  ")}\n` +
        `Run \`npm run generate\` in clients/js (then \`npm run build\`) and commit the result.`,
    );
    process.exit(1);
  }
  console.log(`src/gen/ is up to date (${want.size} file(s))`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
