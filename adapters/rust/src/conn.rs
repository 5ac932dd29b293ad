//! The rules of who may send what, when, and for which id (SPEC.md section 2, "Who may
//! send what, when"): the same state table as every other side's (`schema.rs`, generated
//! from protocol/schema.json), and the ids in flight.
//!
//! Both sides walk the same states: `await_hello` until hello goes by, `await_ready`
//! until ready does, `open` for the work, `stopping` once stop went by. A side moves when
//! it sends a state-changing message and the other when it receives it. A task or debug
//! puts its id in flight (`duplicate_id` if it is there), a result or error takes it out
//! (`unknown_id` if it is not); a cancel or a log may name any id, since they cross
//! answers in the pipes. `src/tests/vectors.rs` replays the shared sequences on a bridge
//! and a child `Conn`, as the bridge's, the Python, Go and Node sides do.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::protocol::{Message, ProtocolError};
use crate::schema::{ConnState, ErrorKind, MsgType, Role};

/// How many answered ids a `Conn` remembers, only so that an `unknown_id` can say
/// "answered already": enough for the usual slip (a second answer soon after the first)
/// without growing with the life of the process.
const RECENT_ANSWERS: usize = 1024;

/// One side's view of the conversation.
#[derive(Debug)]
pub(crate) struct Conn {
    role: Role,
    state: ConnState,
    offered: Option<Vec<u64>>,
    in_flight: HashSet<u64>,
    /// The last answered ids: the type of each one's answer and when (a count), and the
    /// same oldest first in `order`; an id answered again is dropped at its latest turn.
    answered: HashMap<u64, (MsgType, u64)>,
    order: VecDeque<(u64, u64)>,
    answers: u64,
}

fn other(role: Role) -> Role {
    match role {
        Role::Bridge => Role::Child,
        Role::Child => Role::Bridge,
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

impl Conn {
    pub(crate) fn new(role: Role) -> Conn {
        Conn {
            role,
            state: ConnState::AwaitHello,
            offered: None,
            in_flight: HashSet::new(),
            answered: HashMap::new(),
            order: VecDeque::new(),
            answers: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> ConnState {
        self.state
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> &HashSet<u64> {
        &self.in_flight
    }

    /// Whether this side may send a message of type `ty` now (ids aside).
    pub(crate) fn may_send(&self, ty: MsgType) -> bool {
        self.state.sends(self.role).contains(&ty)
    }

    /// Check a message the peer sent, and account for it.
    pub(crate) fn receive(&mut self, m: &Message) -> Result<(), ProtocolError> {
        let (ty, id, protocol, protocols) = parts(m);
        self.check(other(self.role), ty, id, protocol)?;
        self.apply(ty, id, protocols);
        Ok(())
    }

    /// Check a message this side is about to send, and account for it; on an error
    /// nothing changes.
    pub(crate) fn send(&mut self, m: &Message) -> Result<(), ProtocolError> {
        let (ty, id, protocol, protocols) = parts(m);
        self.send_parts(ty, id, protocol, protocols)
    }

    /// `send` without building the message: its type, id (or 0), ready's protocol (or 0)
    /// and hello's protocols.
    pub(crate) fn send_parts(
        &mut self,
        ty: MsgType,
        id: u64,
        protocol: u64,
        protocols: Option<&[u64]>,
    ) -> Result<(), ProtocolError> {
        self.check(self.role, ty, id, protocol)?;
        self.apply(ty, id, protocols);
        Ok(())
    }

    fn check(
        &self,
        sender: Role,
        ty: MsgType,
        id: u64,
        protocol: u64,
    ) -> Result<(), ProtocolError> {
        let who = sender.as_str();
        if !self.state.sends(sender).contains(&ty) {
            return Err(ProtocolError::new(
                ErrorKind::Unexpected,
                self.out_of_turn(sender, ty),
            ));
        }
        if ty.in_flight() < 0 && !self.in_flight.contains(&id) {
            let why = match self.answered.get(&id) {
                Some((first, _)) => format!(
                    "it was answered already (first {}, then {})",
                    first.as_str(),
                    ty.as_str()
                ),
                None => "it is not in flight (never sent, or answered long ago)".to_owned(),
            };
            return Err(ProtocolError::new(
                ErrorKind::UnknownId,
                format!("the {who} answered id {id}: {why}"),
            ));
        }
        if ty.in_flight() > 0 && self.in_flight.contains(&id) {
            return Err(ProtocolError::new(
                ErrorKind::DuplicateId,
                format!(
                    "the {who} sent {} {id} while a request with that id is in flight",
                    ty.as_str()
                ),
            ));
        }
        if ty == MsgType::Ready {
            if let Some(offered) = &self.offered {
                if !offered.contains(&protocol) {
                    return Err(ProtocolError::new(
                        ErrorKind::BadField,
                        format!("the child chose protocol {protocol}, but the bridge offered {offered:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn out_of_turn(&self, sender: Role, ty: MsgType) -> String {
        let (who, name) = (sender.as_str(), ty.as_str());
        if ty.sender() != sender {
            return format!(
                "the {who} sent {} {name} message, which only the {} sends",
                article(name),
                ty.sender().as_str()
            );
        }
        if ty.after().is_some() && self.state != ConnState::AwaitHello {
            return format!("the {who} sent a second {name} message");
        }
        let when = match self.state {
            ConnState::AwaitHello => "before hello",
            ConnState::AwaitReady => "before ready",
            ConnState::Open => "after ready",
            ConnState::Stopping => "after stop",
        };
        format!("the {who} sent {} {name} message {when}", article(name))
    }

    fn apply(&mut self, ty: MsgType, id: u64, protocols: Option<&[u64]>) {
        if ty.in_flight() < 0 {
            self.in_flight.remove(&id);
            self.answers += 1;
            self.answered.insert(id, (ty, self.answers));
            self.order.push_back((id, self.answers));
            if self.order.len() > RECENT_ANSWERS {
                if let Some((old, turn)) = self.order.pop_front() {
                    if self.answered.get(&old).is_some_and(|(_, t)| *t == turn) {
                        self.answered.remove(&old);
                    }
                }
            }
        } else if ty.in_flight() > 0 {
            self.in_flight.insert(id);
            self.answered.remove(&id); // an id may come back once it was answered
        }
        if let Some(next) = ty.after() {
            if ty == MsgType::Hello {
                self.offered = protocols.map(<[u64]>::to_vec);
            }
            self.state = next;
        }
    }
}

/// What the rules need of a message: its type, id, ready's protocol, hello's protocols.
fn parts(m: &Message) -> (MsgType, u64, u64, Option<&[u64]>) {
    match m {
        Message::Hello(h) => (MsgType::Hello, 0, 0, Some(&h.protocols)),
        Message::Ready(r) => (MsgType::Ready, 0, r.protocol, None),
        other => (other.msg_type(), other.request_id(), 0, None),
    }
}
