#!/usr/bin/env node
// The subset of the native `solc` CLI that py-solc-x (and so brownie) calls, served by solc-js:
//   solc --version
//   solc --standard-json [--allow-paths a,b] [--base-path p]   (input JSON on stdin)
// Imports the input does not carry are read from disk like native solc does: relative to the
// base path, then the allowed paths, then the working directory, and only from inside them.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require(process.env.PM_SOLCJS_MODULE || 'solc');

function fail(message) {
  process.stderr.write(`solc-adapter: ${message}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const options = { version: false, standardJson: false, allowPaths: [], basePath: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--version') options.version = true;
    else if (arg === '--standard-json') options.standardJson = true;
    else if (arg === '--allow-paths') options.allowPaths.push(...argv[++i].split(',').filter(Boolean));
    else if (arg === '--base-path') options.basePath = argv[++i];
    else if (arg === '-') continue;
    else fail(`unsupported option '${arg}' (this adapter serves --version and --standard-json only)`);
  }
  return options;
}

function importResolver(roots) {
  const resolvedRoots = roots.map((root) => path.resolve(root));
  const inside = (file) => resolvedRoots.some((root) => file === root || file.startsWith(root + path.sep));
  return (importPath) => {
    const candidates = path.isAbsolute(importPath)
      ? [importPath]
      : resolvedRoots.map((root) => path.join(root, importPath));
    for (const candidate of candidates) {
      const file = path.resolve(candidate);
      if (inside(file) && fs.existsSync(file) && fs.statSync(file).isFile()) {
        return { contents: fs.readFileSync(file, 'utf8') };
      }
    }
    return { error: `File not found inside the allowed paths: ${importPath}` };
  };
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  if (options.version) {
    process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return;
  }
  if (!options.standardJson) fail('nothing to do: pass --version or --standard-json');
  const input = fs.readFileSync(0, 'utf8');
  const roots = [options.basePath, ...options.allowPaths, process.cwd()].filter(Boolean);
  process.stdout.write(solc.compile(input, { import: importResolver(roots) }));
}

main();
