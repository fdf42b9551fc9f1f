// STUB of src/codecs.js: nothing.
export {};
