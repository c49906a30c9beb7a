// Bundles the SDK (dist/signalgate.js) and the demo page's script (dist/demo.js).
// Both are committed: the Rust gateway embeds them with include_bytes!.
//
//   node scripts/build.mjs           write dist/
//   node scripts/build.mjs --check   build in memory and fail if dist/ differs (stale)
import { build } from "esbuild";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const check = process.argv.includes("--check");

const targets = [
  { entry: "src/index.ts", out: "dist/signalgate.js" },
  { entry: "demo/demo.ts", out: "dist/demo.js" },
];

let stale = [];
for (const { entry, out } of targets) {
  const outfile = join(root, out);
  const result = await build({
    entryPoints: [join(root, entry)],
    outfile,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["es2022"],
    minify: true,
    legalComments: "none",
    charset: "utf8",
    write: false,
    logLevel: "warning",
  });
  const file = result.outputFiles.find((f) => f.path === outfile);
  if (!file) throw new Error(`esbuild produced no ${out}`);
  if (check) {
    const current = existsSync(outfile) ? readFileSync(outfile) : undefined;
    if (!current || Buffer.compare(current, Buffer.from(file.contents)) !== 0) stale.push(out);
  } else {
    mkdirSync(dirname(outfile), { recursive: true });
    writeFileSync(outfile, file.contents);
    console.log(`${relative(root, outfile)}  ${(file.contents.length / 1024).toFixed(1)} KiB`);
  }
}

if (check) {
  if (stale.length > 0) {
    console.error(
      `STALE: ${stale.join(", ")} no longer match(es) src/ and demo/.\n` +
        `Run \`npm run build\` in clients/js and commit dist/.`,
    );
    process.exit(1);
  }
  console.log("dist/ is up to date");
}
