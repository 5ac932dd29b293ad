'use strict';
// The wire format alone (frames, messages, msgpack) and the connection's rules, with no
// side effects on require.
const { Connection } = require('./lib/connection');

module.exports = { ...require('./lib/codec'), Connection };
