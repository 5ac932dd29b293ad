'use strict';
// The rules of who may send what, when, and for which id (SPEC.md section 2, "Who may
// send what, when"): the same state table as every other side's (schema.js, generated
// from protocol/schema.json), and the ids in flight.
//
// Both sides walk the same states: await_hello until hello goes by, await_ready until
// ready does, open for the work, stopping once stop went by. A side moves when it sends a
// state-changing message and the other when it receives it. A task or debug puts its id
// in flight (duplicate_id if it is there), a result or error takes it out (unknown_id if
// it is not); a cancel or a log may name any id, since they cross answers in the pipes.
// test/vectors.test.js replays the shared sequences on a bridge and a child connection.

const { ErrorKind, MESSAGES, SENDS, AFTER } = require('./schema');
const { ProtocolError } = require('./codec');

// How many answered ids a connection remembers, only so that an unknown_id can say
// "answered already": enough for the usual slip (a second answer soon after the first)
// without growing with the life of the process.
const RECENT_ANSWERS = 1024;
const OTHER = { bridge: 'child', child: 'bridge' };
const WHEN = { await_hello: 'before hello', await_ready: 'before ready', open: 'after ready', stopping: 'after stop' };

const article = (word) => ('aeiou'.includes(word[0]) ? 'an' : 'a');

class Connection {
  /** @param {'bridge' | 'child'} role */
  constructor(role) {
    if (!Object.hasOwn(OTHER, role)) throw new RangeError(`role must be bridge or child, got ${role}`);
    this.role = role;
    this.peer = OTHER[role];
    this.state = 'await_hello';
    this.offered = null; // hello.protocols, once hello went by
    this.inFlight = new Set();
    this.answered = new Map(); // id -> its answer's type, oldest first
  }

  /** Whether this side may send a message of that type now (ids aside). */
  maySend(type) {
    return SENDS[this.state][this.role].includes(type);
  }

  /** Check a message the peer sent and account for it; throws a ProtocolError. */
  receive(msg) {
    this.#step(this.peer, msg);
  }

  /** Check a message this side is about to send and account for it; on a throw nothing changed. */
  send(msg) {
    this.#step(this.role, msg);
  }

  #step(sender, msg) {
    const problem = this.#problem(sender, msg);
    if (problem !== null) throw new ProtocolError(problem[0], problem[1]);
    this.#apply(msg);
  }

  #problem(sender, msg) {
    const type = msg.type;
    const spec = MESSAGES[type];
    if (!SENDS[this.state][sender].includes(type)) return [ErrorKind.UNEXPECTED, this.#outOfTurn(sender, spec, type)];
    if (spec.inFlight < 0 && !this.inFlight.has(msg.id)) {
      const first = this.answered.get(msg.id);
      const why = first !== undefined
        ? `it was answered already (first ${first}, then ${type})`
        : 'it is not in flight (never sent, or answered long ago)';
      return [ErrorKind.UNKNOWN_ID, `the ${sender} answered id ${msg.id}: ${why}`];
    }
    if (spec.inFlight > 0 && this.inFlight.has(msg.id)) {
      return [ErrorKind.DUPLICATE_ID, `the ${sender} sent ${type} ${msg.id} while a request with that id is in flight`];
    }
    if (type === 'ready' && this.offered !== null && !this.offered.includes(msg.protocol)) {
      return [ErrorKind.BAD_FIELD,
        `the child chose protocol ${msg.protocol}, but the bridge offered [${this.offered.join(', ')}]`];
    }
    return null;
  }

  #outOfTurn(sender, spec, type) {
    if (spec.from !== sender) return `the ${sender} sent ${article(type)} ${type} message, which only the ${spec.from} sends`;
    if (Object.hasOwn(AFTER, type) && this.state !== 'await_hello') return `the ${sender} sent a second ${type} message`;
    return `the ${sender} sent ${article(type)} ${type} message ${WHEN[this.state]}`;
  }

  #apply(msg) {
    const type = msg.type;
    const spec = MESSAGES[type];
    if (spec.inFlight < 0) {
      this.inFlight.delete(msg.id);
      this.answered.delete(msg.id); // re-inserted last: the map keeps its order
      this.answered.set(msg.id, type);
      if (this.answered.size > RECENT_ANSWERS) this.answered.delete(this.answered.keys().next().value);
    } else if (spec.inFlight > 0) {
      this.inFlight.add(msg.id);
      this.answered.delete(msg.id); // an id may come back once it was answered
    }
    if (Object.hasOwn(AFTER, type)) {
      if (type === 'hello') this.offered = msg.protocols;
      this.state = AFTER[type];
    }
  }
}

module.exports = { Connection, RECENT_ANSWERS };
