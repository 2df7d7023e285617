// Builds admin_ui/static/portal.js from src/portal.js and the pinned packages in
// package-lock.json, and admin_ui/static/portal.LICENSES.txt from the licences of every
// package the bundle contains. The same lock gives the same bytes (tests/unit/admin_ui/
// test_portal_bundle.py rebuilds and compares).
import { build } from "esbuild";
import { readFileSync, writeFileSync } from "node:fs";

// The output folder: admin_ui/static, or the one given (the test's rebuild).
const out = process.argv[2] || "../static";

const result = await build({
  entryPoints: ["src/portal.js"], bundle: true, format: "iife", target: "es2022",
  minify: true, legalComments: "eof", charset: "utf8", metafile: true,
  outfile: `${out}/portal.js`, logLevel: "warning",
});

const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match) {
    packages.add(match[1]);
  }
}
const lock = JSON.parse(readFileSync("package-lock.json", "utf8")).packages;
let text = "Third-party code bundled into portal.js, with its licence.\n";
for (const name of [...packages].sort()) {
  const entry = lock["node_modules/" + name];
  text += `\n==== ${name} ${entry.version} (${entry.license}) ${entry.integrity}\n\n`;
  text += readFileSync(`node_modules/${name}/LICENSE`, "utf8").trim() + "\n";
}
writeFileSync(`${out}/portal.LICENSES.txt`, text);
