package flowbridge

// The rules of who may send what, when, and for which id (SPEC section 2, "Who may
// send what, when"): the same state table as every other side's (schema_gen.go, written
// from protocol/schema.json), and the ids in flight.
//
// Both sides walk the same states: await_hello until hello goes by, await_ready until
// ready does, open for the work, stopping once stop went by. A side moves when it sends
// a state-changing message and the other when it receives it. A task or debug puts its
// id in flight (duplicate_id if it is there), a result or error takes it out (unknown_id
// if it is not); a cancel or log may name any id. The shared vectors' sequences replay
// these rules in vectors_test.go, as the bridge's, the Python, Rust and Node sides do.

import (
	"fmt"
	"slices"
)

// recentAnswers is how many answered ids a conn remembers, only so that an unknown_id
// can say "answered already": enough for the usual slip (a second answer soon after the
// first) without growing with the life of the process.
const recentAnswers = 1024

// conn is one side's view of the conversation. It is not safe for concurrent use; the
// server calls it under s.mu.
type conn struct {
	role     role
	state    connState
	offered  []uint64 // hello.protocols, once hello went by
	inFlight map[uint64]struct{}
	answered map[uint64]msgType // the last recentAnswers answered ids, and their answer's type
	ring     []uint64           // the same ids, oldest first from next
	next     int
}

func newConn(r role) *conn {
	return &conn{role: r, inFlight: make(map[uint64]struct{}), answered: make(map[uint64]msgType)}
}

// receive checks a message the peer sent and accounts for it.
func (c *conn) receive(m *message) error {
	if err := c.check(c.role^1, m.spec, m.id, m.protocol); err != nil {
		return err
	}
	c.apply(m.spec, m.id, m.protocols)
	return nil
}

// send checks a message this side is about to send and accounts for it; protocol is
// ready's, protocols hello's (zero values otherwise). On an error nothing changes.
func (c *conn) send(spec *msgSpec, id, protocol uint64, protocols []uint64) error {
	if err := c.check(c.role, spec, id, protocol); err != nil {
		return err
	}
	c.apply(spec, id, protocols)
	return nil
}

// mayLog reports whether this side may send a log frame now.
func (c *conn) mayLog() bool {
	return sends[c.state][c.role]&(1<<msgLog) != 0
}

func (c *conn) check(sender role, spec *msgSpec, id, protocol uint64) *ProtocolError {
	if sends[c.state][sender]&(1<<spec.typ) == 0 {
		return protoErr(KindUnexpected, "%s", c.outOfTurn(sender, spec))
	}
	switch {
	case spec.inFlight < 0:
		if _, ok := c.inFlight[id]; !ok {
			if first, ok := c.answered[id]; ok {
				return protoErr(KindUnknownID, "the %s answered id %d: it was answered already (first %s, then %s)",
					roleNames[sender], id, specs[first].name, spec.name)
			}
			return protoErr(KindUnknownID, "the %s answered id %d: it is not in flight (never sent, or answered long ago)",
				roleNames[sender], id)
		}
	case spec.inFlight > 0:
		if _, ok := c.inFlight[id]; ok {
			return protoErr(KindDuplicateID, "the %s sent %s %d while a request with that id is in flight",
				roleNames[sender], spec.name, id)
		}
	case spec.typ == msgReady && c.offered != nil && !slices.Contains(c.offered, protocol):
		return protoErr(KindBadField, "the child chose protocol %d, but the bridge offered %s", protocol,
			formatList(c.offered))
	}
	return nil
}

func (c *conn) outOfTurn(sender role, spec *msgSpec) string {
	switch {
	case spec.from != sender:
		return fmt.Sprintf("the %s sent %s %s message, which only the %s sends",
			roleNames[sender], article(spec.name), spec.name, roleNames[spec.from])
	case after[spec.typ] != numStates && c.state != stateAwaitHello:
		return fmt.Sprintf("the %s sent a second %s message", roleNames[sender], spec.name)
	}
	when := [numStates]string{"before hello", "before ready", "after ready", "after stop"}[c.state]
	return fmt.Sprintf("the %s sent %s %s message %s", roleNames[sender], article(spec.name), spec.name, when)
}

func (c *conn) apply(spec *msgSpec, id uint64, protocols []uint64) {
	switch {
	case spec.inFlight < 0:
		delete(c.inFlight, id)
		if len(c.ring) < recentAnswers {
			c.ring = append(c.ring, id)
		} else {
			delete(c.answered, c.ring[c.next])
			c.ring[c.next] = id
			c.next = (c.next + 1) % recentAnswers
		}
		c.answered[id] = spec.typ
	case spec.inFlight > 0:
		c.inFlight[id] = struct{}{}
		delete(c.answered, id) // an id may come back once it was answered
	}
	if next := after[spec.typ]; next != numStates {
		if spec.typ == msgHello {
			c.offered = protocols
		}
		c.state = next
	}
}

func article(word string) string {
	switch word[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an"
	}
	return "a"
}
