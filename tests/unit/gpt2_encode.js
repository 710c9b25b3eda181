// gpt2_encode.js: the reference for gpt2_tokenizer_test.cpp. Encodes each string of a JSON
// array with the npm package gpt-3-encoder's own encode() and writes the id arrays as JSON.
// Usage: node gpt2_encode.js PACKAGE_DIR IN.json OUT.json
'use strict';
const fs = require('fs');
const [pkg, input, output] = process.argv.slice(2);
if (!pkg || !input || !output) {
  console.error('usage: node gpt2_encode.js PACKAGE_DIR IN.json OUT.json');
  process.exit(2);
}
const { encode } = require(pkg);
const strings = JSON.parse(fs.readFileSync(input, 'utf-8'));
fs.writeFileSync(output, JSON.stringify(strings.map((s) => encode(s))));
