'use strict';
// The wire format alone (frames, messages, msgpack), with no side effects on require.
module.exports = require('./lib/codec');
