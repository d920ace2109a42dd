//! What an owner node forwards to another node's sessions: one NATS message per node and
//! drained batch, not one per session.
//!
//! A message is the owner's link (`link`) replayed in order as a list of operations. Most of
//! a channel's traffic is one `Broadcast` per frame: the receiving node keeps, per owner and
//! channel, which of its sessions are subscribed there (told by `Join` and `Leave`, in order
//! with the frames), and fans the frame out to them itself, so the owner does one thing per
//! node and frame, not one per remote session. What one session alone gets (acks, replays,
//! errors, closes, moves) is addressed to it.
//!
//! Never a silent gap: every message carries its link's id and number (a jump, or a new
//! link, means broadcasts may be missing: every session subscribed through that owner is
//! told), and each session named in a message its own number (a jump: that session missed
//! something of its own).
//!
//! Layout (big-endian; decoded defensively, a malformed message is dropped whole):
//!
//! ```text
//! u8  version (3)
//! u64 link (the forwarder's random id), u64 number (per link, from 1)
//! u32 frame count, then per frame: u32 length, bytes          (each distinct frame once)
//! u32 session count, then per session: 16 user, 16 session, u64 seq
//! u32 op count, then per op a kind byte and:
//!     1 frame      u32 session, u32 frame
//!     2 close      u32 session, u16 code
//!     3 moved      u32 session, 16 channel, 8 epoch, u64 cseq, u8 released (0 or 1)
//!     4 join       u32 session, 16 channel
//!     5 leave      u32 session, 16 channel
//!     6 broadcast  16 channel, u32 frame, 16 except (nil: none), u8 ephemeral (0 or 1)
//! ```

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::protocol::{Epoch, Frame};

/// 3: channel broadcasts fanned out by the receiving node; operations in the owner's order.
const VERSION: u8 = 3;
/// Most bytes of frames one forwarded NATS message carries (the server's default
/// `max_payload` is 1 MiB; one frame may exceed this and then goes alone).
pub const FORWARD_BATCH_BYTES: usize = 256 * 1024;
/// Header naming the node that sent a forwarded message (numbering is per sending node).
pub const FROM_HEADER: &str = "Palaver-From";
/// Bytes a message costs besides its frames, sessions and operations.
const HEAD_LEN: usize = 1 + 8 + 8 + 4 + 4 + 4;
/// Bytes a session entry takes.
const SESSION_LEN: usize = 16 + 16 + 8;
/// Bytes one move takes.
const MOVE_LEN: usize = 16 + 8 + 8 + 1;
/// The fewest bytes an operation takes (a close).
const MIN_OP_LEN: usize = 1 + 4 + 2;

/// A channel the session was subscribed to moved to another owner in a planned handoff: its
/// stream continues there after `cseq` (same epoch), and the session's node re-attaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub channel_id: Uuid,
    pub epoch: Epoch,
    /// The last position the old owner gave the session (its frames come before this move).
    pub cseq: u64,
    /// The old owner holds nothing else of this session: a later death of that node cannot
    /// cost the session anything.
    pub released: bool,
}

/// A session named in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbered {
    pub user: Uuid,
    pub session: Uuid,
    /// Per stand-in, from 1, one per message naming the session: a jump on the receiving
    /// node means a message was lost.
    pub seq: u64,
}

/// One operation, in the owner's order. `session` indexes the message's sessions; `F` is a
/// frame as decoded (`Frame`) or, while a message is gathered, its index (`u32`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<F = Frame> {
    /// A frame for one session only.
    Frame {
        session: u32,
        frame: F,
    },
    /// Close the session with `code` (after everything before).
    Close {
        session: u32,
        code: u16,
    },
    Moved {
        session: u32,
        moved: Moved,
    },
    /// The session is now subscribed to `channel` on this owner: it gets its broadcasts.
    Join {
        session: u32,
        channel: Uuid,
    },
    /// It no longer is.
    Leave {
        session: u32,
        channel: Uuid,
    },
    /// A frame for every session subscribed to `channel` here, except `except`;
    /// `ephemeral`: of the droppable class (`Outbox::push_ephemeral`).
    Broadcast {
        channel: Uuid,
        frame: F,
        except: Option<Uuid>,
        ephemeral: bool,
    },
}

/// A decoded message.
#[derive(Debug)]
pub struct Message {
    /// The sending forwarder's random id and this message's number on it.
    pub link: (u64, u64),
    pub sessions: Vec<Numbered>,
    pub ops: Vec<Op>,
}

/// Gathers one message for one node, each distinct frame once.
#[derive(Default)]
pub struct NodeBatch {
    frames: Vec<Frame>,
    /// (address, length) of a frame's bytes → its index: pointer-equal frames are one.
    index: HashMap<(usize, usize), u32>,
    /// The frame added last and its index: a fan-out adds the same frame many times in a row.
    last: Option<((usize, usize), u32)>,
    sessions: Vec<Numbered>,
    ops: Vec<Op<u32>>,
    /// Bytes of frames, sessions and operations so far.
    encoded_len: usize,
}

impl NodeBatch {
    /// Adds a session to the message's table; answers its index.
    pub fn session(&mut self, numbered: Numbered) -> u32 {
        self.encoded_len += SESSION_LEN;
        self.sessions.push(numbered);
        (self.sessions.len() - 1) as u32
    }

    /// Adds a frame (once, however often it is used); answers its index.
    pub fn frame(&mut self, frame: Frame) -> u32 {
        let key = (frame.as_bytes().as_ptr() as usize, frame.len());
        if let Some((last, index)) = self.last
            && last == key
        {
            return index;
        }
        let next = self.frames.len() as u32;
        let index = *self.index.entry(key).or_insert_with(|| {
            self.encoded_len += 4 + frame.len();
            self.frames.push(frame);
            next
        });
        self.last = Some((key, index));
        index
    }

    pub fn op(&mut self, op: Op<u32>) {
        self.encoded_len += op_len(&op);
        self.ops.push(op);
    }

    /// Bytes the encoded message will have.
    pub fn len(&self) -> usize {
        HEAD_LEN + self.encoded_len
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Distinct frames carried (tests).
    pub fn distinct_frames(&self) -> usize {
        self.frames.len()
    }

    /// The message, as number `number` of link `link`.
    pub fn encode(self, link: u64, number: u64) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len());
        out.put_u8(VERSION);
        out.put_u64(link);
        out.put_u64(number);
        out.put_u32(self.frames.len() as u32);
        for frame in &self.frames {
            out.put_u32(frame.len() as u32);
            out.put_slice(frame.as_bytes());
        }
        out.put_u32(self.sessions.len() as u32);
        for numbered in &self.sessions {
            out.put_slice(numbered.user.as_bytes());
            out.put_slice(numbered.session.as_bytes());
            out.put_u64(numbered.seq);
        }
        out.put_u32(self.ops.len() as u32);
        for op in &self.ops {
            match op {
                Op::Frame { session, frame } => {
                    out.put_u8(1);
                    out.put_u32(*session);
                    out.put_u32(*frame);
                }
                Op::Close { session, code } => {
                    out.put_u8(2);
                    out.put_u32(*session);
                    out.put_u16(*code);
                }
                Op::Moved { session, moved } => {
                    out.put_u8(3);
                    out.put_u32(*session);
                    out.put_slice(moved.channel_id.as_bytes());
                    out.put_slice(&moved.epoch.to_bytes());
                    out.put_u64(moved.cseq);
                    out.put_u8(u8::from(moved.released));
                }
                Op::Join { session, channel } => {
                    out.put_u8(4);
                    out.put_u32(*session);
                    out.put_slice(channel.as_bytes());
                }
                Op::Leave { session, channel } => {
                    out.put_u8(5);
                    out.put_u32(*session);
                    out.put_slice(channel.as_bytes());
                }
                Op::Broadcast { channel, frame, except, ephemeral } => {
                    out.put_u8(6);
                    out.put_slice(channel.as_bytes());
                    out.put_u32(*frame);
                    out.put_slice(except.unwrap_or(Uuid::nil()).as_bytes());
                    out.put_u8(u8::from(*ephemeral));
                }
            }
        }
        out.freeze()
    }
}

fn op_len(op: &Op<u32>) -> usize {
    1 + match op {
        Op::Frame { .. } => 4 + 4,
        Op::Close { .. } => 4 + 2,
        Op::Moved { .. } => 4 + MOVE_LEN,
        Op::Join { .. } | Op::Leave { .. } => 4 + 16,
        Op::Broadcast { .. } => 16 + 4 + 16 + 1,
    }
}

/// Why a forwarded message could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Reads a node message back. Frames stay slices of `payload` (no copy; the operations of
/// one fan-out share them again).
pub fn decode(payload: Bytes) -> Result<Message, Malformed> {
    let mut input = payload;
    if input.remaining() < 1 || input.get_u8() != VERSION {
        return Err(Malformed("unknown version"));
    }
    if input.remaining() < 16 {
        return Err(Malformed("truncated"));
    }
    let link = (input.get_u64(), input.get_u64());
    let frames = read_chunks(&mut input, ("frame count", "frame length"))?
        .into_iter()
        .map(|bytes| Frame::try_from(bytes).map_err(|_| Malformed("frame is not UTF-8")))
        .collect::<Result<Vec<_>, _>>()?;
    let count = read_u32(&mut input)? as usize;
    if count > input.remaining() / SESSION_LEN {
        return Err(Malformed("session count"));
    }
    let mut sessions = Vec::with_capacity(count);
    for _ in 0..count {
        let user = read_uuid(&mut input)?;
        let session = read_uuid(&mut input)?;
        let seq = read_u64(&mut input)?;
        sessions.push(Numbered { user, session, seq });
    }
    let count = read_u32(&mut input)? as usize;
    if count > input.remaining() / MIN_OP_LEN {
        return Err(Malformed("op count"));
    }
    let session_at = |input: &mut Bytes| -> Result<u32, Malformed> {
        let index = read_u32(input)?;
        if index as usize >= sessions.len() {
            return Err(Malformed("session index"));
        }
        Ok(index)
    };
    let frame_at = |input: &mut Bytes| -> Result<Frame, Malformed> {
        frames.get(read_u32(input)? as usize).cloned().ok_or(Malformed("frame index"))
    };
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        if input.remaining() < 1 {
            return Err(Malformed("truncated"));
        }
        let op = match input.get_u8() {
            1 => Op::Frame { session: session_at(&mut input)?, frame: frame_at(&mut input)? },
            2 => Op::Close { session: session_at(&mut input)?, code: read_u16(&mut input)? },
            3 => {
                let session = session_at(&mut input)?;
                if input.remaining() < MOVE_LEN {
                    return Err(Malformed("truncated"));
                }
                let channel_id = read_uuid(&mut input)?;
                let mut epoch = [0u8; 8];
                input.copy_to_slice(&mut epoch);
                let epoch = Epoch::from_bytes(epoch).ok_or(Malformed("epoch"))?;
                let cseq = input.get_u64();
                let released = read_flag(&mut input)?;
                Op::Moved { session, moved: Moved { channel_id, epoch, cseq, released } }
            }
            4 => Op::Join { session: session_at(&mut input)?, channel: read_uuid(&mut input)? },
            5 => Op::Leave { session: session_at(&mut input)?, channel: read_uuid(&mut input)? },
            6 => {
                let channel = read_uuid(&mut input)?;
                let frame = frame_at(&mut input)?;
                let except = Some(read_uuid(&mut input)?).filter(|id| !id.is_nil());
                Op::Broadcast { channel, frame, except, ephemeral: read_flag(&mut input)? }
            }
            _ => return Err(Malformed("op kind")),
        };
        ops.push(op);
    }
    if input.has_remaining() {
        return Err(Malformed("trailing bytes"));
    }
    Ok(Message { link, sessions, ops })
}

/// Messages of a link sent again (the answer to a resend request): each with its length.
/// An empty answer means they are not available any more.
pub fn encode_resent(messages: &[Bytes]) -> Bytes {
    let len = messages.iter().map(|m| 4 + m.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(4 + len);
    out.put_u32(messages.len() as u32);
    for message in messages {
        out.put_u32(message.len() as u32);
        out.put_slice(message);
    }
    out.freeze()
}

/// Reads `encode_resent`'s answer back: the messages, each still to be `decode`d; `None`
/// for an empty answer (not available).
pub fn decode_resent(payload: Bytes) -> Result<Option<Vec<Bytes>>, Malformed> {
    let mut input = payload;
    if !input.has_remaining() {
        return Ok(None);
    }
    let messages = read_chunks(&mut input, ("message count", "message length"))?;
    if input.has_remaining() {
        return Err(Malformed("trailing bytes"));
    }
    Ok(Some(messages))
}

/// A count, then that many length-prefixed byte strings (slices of `input`, no copy).
/// `errors` name a lying count and a lying length.
fn read_chunks(input: &mut Bytes, errors: (&'static str, &'static str)) -> Result<Vec<Bytes>, Malformed> {
    let count = read_u32(input)? as usize;
    // Every chunk takes at least its length prefix: a count beyond that is a lie.
    if count > input.remaining() / 4 {
        return Err(Malformed(errors.0));
    }
    let mut chunks = Vec::with_capacity(count);
    for _ in 0..count {
        let len = read_u32(input)? as usize;
        if input.remaining() < len {
            return Err(Malformed(errors.1));
        }
        chunks.push(input.split_to(len));
    }
    Ok(chunks)
}

fn read_u16(input: &mut Bytes) -> Result<u16, Malformed> {
    if input.remaining() < 2 {
        return Err(Malformed("truncated"));
    }
    Ok(input.get_u16())
}

fn read_u32(input: &mut Bytes) -> Result<u32, Malformed> {
    if input.remaining() < 4 {
        return Err(Malformed("truncated"));
    }
    Ok(input.get_u32())
}

fn read_u64(input: &mut Bytes) -> Result<u64, Malformed> {
    if input.remaining() < 8 {
        return Err(Malformed("truncated"));
    }
    Ok(input.get_u64())
}

fn read_flag(input: &mut Bytes) -> Result<bool, Malformed> {
    if input.remaining() < 1 {
        return Err(Malformed("truncated"));
    }
    match input.get_u8() {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Malformed("flag")),
    }
}

fn read_uuid(input: &mut Bytes) -> Result<Uuid, Malformed> {
    if input.remaining() < 16 {
        return Err(Malformed("truncated"));
    }
    let mut id = [0u8; 16];
    input.copy_to_slice(&mut id);
    Ok(Uuid::from_bytes(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resent_messages_round_trip_and_lies_are_refused() {
        let messages = [Bytes::from_static(b"first"), Bytes::new(), Bytes::from_static(b"third")];
        let encoded = encode_resent(&messages);
        assert_eq!(decode_resent(encoded.clone()).unwrap(), Some(messages.to_vec()));
        assert_eq!(decode_resent(Bytes::new()).unwrap(), None, "empty: not available");
        assert_eq!(decode_resent(encode_resent(&[])).unwrap(), Some(Vec::new()));
        assert!(decode_resent(encoded.slice(..encoded.len() - 1)).is_err(), "truncated");
        let mut trailing = encoded.to_vec();
        trailing.push(0);
        assert!(decode_resent(Bytes::from(trailing)).is_err(), "trailing bytes");
        let mut huge = BytesMut::new();
        huge.put_u32(u32::MAX);
        assert!(decode_resent(huge.freeze()).is_err(), "a count beyond the payload");
    }

    fn numbered(seq: u64) -> Numbered {
        Numbered { user: Uuid::new_v4(), session: Uuid::new_v4(), seq }
    }

    #[test]
    fn a_broadcast_costs_one_frame_and_one_op_whatever_the_audience() {
        let shared = Frame::from("{\"type\":\"new_message\"}");
        let channel = Uuid::new_v4();
        let mut batch = NodeBatch::default();
        let frame = batch.frame(shared.clone());
        batch.op(Op::Broadcast { channel, frame, except: None, ephemeral: false });
        let alone = batch.len();
        // The same bytes again, for 300 sessions one by one (a replay, say): still one frame.
        let mut sent = Vec::new();
        for seq in 1..=300 {
            let n = numbered(seq);
            sent.push(n);
            let session = batch.session(n);
            let frame = batch.frame(shared.clone());
            batch.op(Op::Frame { session, frame });
        }
        assert_eq!(batch.distinct_frames(), 1);
        assert!(alone < HEAD_LEN + 4 + shared.len() + 64);
        let expected_len = batch.len();
        let encoded = batch.encode(7, 42);
        assert_eq!(encoded.len(), expected_len);

        let message = decode(encoded).unwrap();
        assert_eq!(message.link, (7, 42));
        assert_eq!(message.sessions, sent);
        assert_eq!(message.ops.len(), 301);
        assert_eq!(
            message.ops[0],
            Op::Broadcast { channel, frame: shared.clone(), except: None, ephemeral: false }
        );
        assert_eq!(message.ops[300], Op::Frame { session: 299, frame: shared });
    }

    #[test]
    fn every_operation_comes_back_as_it_went_in_order() {
        let frame = Frame::from("{}");
        let (channel, except) = (Uuid::new_v4(), Uuid::new_v4());
        let moved = Moved {
            channel_id: Uuid::new_v4(),
            epoch: Epoch::parse("Vt4nR2cL").unwrap(),
            cseq: 41,
            released: true,
        };
        let mut batch = NodeBatch::default();
        let a = batch.session(numbered(3));
        let b = batch.session(numbered(1));
        let f = batch.frame(frame.clone());
        let ops = vec![
            Op::Join { session: a, channel },
            Op::Frame { session: a, frame: f },
            Op::Broadcast { channel, frame: f, except: Some(except), ephemeral: true },
            Op::Moved { session: b, moved },
            Op::Moved { session: b, moved: Moved { released: false, ..moved } },
            Op::Leave { session: a, channel },
            Op::Close { session: b, code: 4008 },
        ];
        for op in &ops {
            batch.op(op.clone());
        }
        let expected_len = batch.len();
        let encoded = batch.encode(1, 1);
        assert_eq!(encoded.len(), expected_len);
        let decoded = decode(encoded.clone()).unwrap().ops;
        let want: Vec<Op> = ops
            .into_iter()
            .map(|op| match op {
                Op::Frame { session, .. } => Op::Frame { session, frame: frame.clone() },
                Op::Broadcast { channel, except, ephemeral, .. } => {
                    Op::Broadcast { channel, frame: frame.clone(), except, ephemeral }
                }
                Op::Close { session, code } => Op::Close { session, code },
                Op::Moved { session, moved } => Op::Moved { session, moved },
                Op::Join { session, channel } => Op::Join { session, channel },
                Op::Leave { session, channel } => Op::Leave { session, channel },
            })
            .collect();
        assert_eq!(decoded, want);
        // A move whose epoch is not [A-Za-z0-9]{8} is refused.
        let mut bad = BytesMut::from(&encoded[..]);
        let first_move = encoded.len() - (1 + 4 + 2) - (1 + 4 + 16) - 2 * (1 + 4 + MOVE_LEN);
        bad[first_move + 1 + 4 + 16] = b'!';
        assert_eq!(decode(bad.freeze()).unwrap_err(), Malformed("epoch"));
    }

    #[test]
    fn equal_text_in_different_buffers_is_still_delivered_to_each() {
        let mut batch = NodeBatch::default();
        let a = batch.frame(Frame::from(String::from("same")));
        let b = batch.frame(Frame::from(String::from("same")));
        assert_ne!(a, b);
        assert_eq!(batch.distinct_frames(), 2);
    }

    #[test]
    fn damaged_messages_are_refused_not_trusted() {
        let mut batch = NodeBatch::default();
        let session = batch.session(numbered(1));
        let frame = batch.frame(Frame::from("{}"));
        batch.op(Op::Frame { session, frame });
        let good = batch.encode(1, 1);
        assert!(decode(good.clone()).is_ok());
        // Every truncation is refused.
        for cut in 0..good.len() {
            assert!(decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        // The op's frame index past the table, then its session index.
        let mut bad = BytesMut::from(&good[..]);
        let last = bad.len() - 4;
        bad[last..].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(decode(bad.freeze()).unwrap_err(), Malformed("frame index"));
        let mut bad = BytesMut::from(&good[..]);
        let last = bad.len() - 8;
        bad[last..last + 4].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(decode(bad.freeze()).unwrap_err(), Malformed("session index"));
        // An unknown op kind.
        let mut bad = BytesMut::from(&good[..]);
        let kind = bad.len() - 9;
        bad[kind] = 9;
        assert_eq!(decode(bad.freeze()).unwrap_err(), Malformed("op kind"));
        // A huge count does not allocate.
        let mut lie = BytesMut::new();
        lie.put_u8(VERSION);
        lie.put_u64(1);
        lie.put_u64(1);
        lie.put_u32(u32::MAX);
        assert_eq!(decode(lie.freeze()).unwrap_err(), Malformed("frame count"));
        // Trailing bytes.
        let mut long = BytesMut::from(&good[..]);
        long.put_u8(0);
        assert!(decode(long.freeze()).is_err());
        // Another version (an older node's message).
        let mut other = BytesMut::from(&good[..]);
        other[0] = 2;
        assert_eq!(decode(other.freeze()).unwrap_err(), Malformed("unknown version"));
    }
}
