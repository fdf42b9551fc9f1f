// Empty stand-in for the Node built-ins (zlib, fs, path) that dicom-parser and the
// Emscripten codecs name but never use in a browser: the bundler aliases them here
// (esbuild --alias:zlib=./src/node-stub.js and the same for fs and path).
module.exports = {};
