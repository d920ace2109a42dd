//! What an owner node forwards to another node's sessions, one NATS message per node and
//! gathered batch instead of one per session (a fan-out to 300 sessions of one node is one
//! message, not 300).
//!
//! The node's link (`link`) turns what it drained into one numbered `Segment` per session
//! and message, so a lost message is still seen per session as a sequence jump. Each
//! message carries each distinct frame once: the channel actor pushes the same bytes to every subscriber, so the
//! segments of one fan-out share them (pointer-equal), and the message carries them once
//! with per-session index lists.
//!
//! Layout (big-endian; decoded defensively, a malformed message is dropped whole):
//!
//! ```text
//! u8  version (1)
//! u32 frame count, then per frame: u32 length, bytes
//! u32 segment count, then per segment:
//!     16 user, 16 session, u64 seq, u16 close (0: none), u32 frame count, u32 index × count,
//!     u32 move count, then per move: 16 channel, 8 epoch, u64 cseq, u8 released (0 or 1)
//! ```

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::protocol::{Epoch, Frame};

/// 2: segments carry moves (planned shard moves keep sessions attached).
const VERSION: u8 = 2;
/// Most bytes of frames one forwarded NATS message carries (the server's default
/// `max_payload` is 1 MiB; one frame may exceed this and then goes alone).
pub const FORWARD_BATCH_BYTES: usize = 256 * 1024;
/// Header naming the node that sent a forwarded message (numbering is per sending node).
pub const FROM_HEADER: &str = "Palaver-From";
/// Bytes a segment costs besides its frames and moves (ids, seq, close, counts).
const SEGMENT_OVERHEAD: usize = 16 + 16 + 8 + 2 + 4 + 4;
/// Bytes one move takes.
const MOVE_LEN: usize = 16 + 8 + 8 + 1;

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

/// One stand-in's drained batch: frames for one remote session, in order.
#[derive(Debug)]
pub struct Segment {
    pub user: Uuid,
    pub session: Uuid,
    /// Per stand-in, from 1: a jump on the receiving node means a batch was lost.
    pub seq: u64,
    /// A close code to apply after the frames and moves (0: none).
    pub close: u16,
    pub frames: Vec<Frame>,
    /// Applied after the frames.
    pub moves: Vec<Moved>,
}

/// A segment as gathered: user, session, seq, close, frame indexes, moves.
type GatheredSegment = (Uuid, Uuid, u64, u16, Vec<u32>, Vec<Moved>);

/// Gathers segments for one node, each distinct frame once.
#[derive(Default)]
pub struct NodeBatch {
    frames: Vec<Frame>,
    /// (address, length) of a frame's bytes → its index: pointer-equal frames are one.
    index: HashMap<(usize, usize), u32>,
    /// The frame added last and its index: a fan-out adds the same frame many times in a row.
    last: Option<((usize, usize), u32)>,
    segments: Vec<GatheredSegment>,
    encoded_len: usize,
}

impl NodeBatch {
    pub fn add(&mut self, segment: Segment) {
        let mut refs = Vec::with_capacity(segment.frames.len());
        for frame in segment.frames {
            let key = (frame.as_bytes().as_ptr() as usize, frame.len());
            if let Some((last, index)) = self.last
                && last == key
            {
                refs.push(index);
                continue;
            }
            let next = self.frames.len() as u32;
            let index = *self.index.entry(key).or_insert_with(|| {
                self.encoded_len += 4 + frame.len();
                self.frames.push(frame);
                next
            });
            self.last = Some((key, index));
            refs.push(index);
        }
        self.encoded_len += SEGMENT_OVERHEAD + 4 * refs.len() + MOVE_LEN * segment.moves.len();
        self.segments.push((segment.user, segment.session, segment.seq, segment.close, refs, segment.moves));
    }

    /// Bytes the encoded message will have.
    pub fn len(&self) -> usize {
        1 + 4 + 4 + self.encoded_len
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Distinct frames carried (metrics, tests).
    pub fn distinct_frames(&self) -> usize {
        self.frames.len()
    }

    pub fn encode(self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len());
        out.put_u8(VERSION);
        out.put_u32(self.frames.len() as u32);
        for frame in &self.frames {
            out.put_u32(frame.len() as u32);
            out.put_slice(frame.as_bytes());
        }
        out.put_u32(self.segments.len() as u32);
        for (user, session, seq, close, refs, moves) in &self.segments {
            out.put_slice(user.as_bytes());
            out.put_slice(session.as_bytes());
            out.put_u64(*seq);
            out.put_u16(*close);
            out.put_u32(refs.len() as u32);
            for index in refs {
                out.put_u32(*index);
            }
            out.put_u32(moves.len() as u32);
            for moved in moves {
                out.put_slice(moved.channel_id.as_bytes());
                out.put_slice(&moved.epoch.to_bytes());
                out.put_u64(moved.cseq);
                out.put_u8(u8::from(moved.released));
            }
        }
        out.freeze()
    }
}

/// Why a forwarded message could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Reads a node message back into segments. Frames stay slices of `payload` (no copy; the
/// segments of one fan-out share them again).
pub fn decode(payload: Bytes) -> Result<Vec<Segment>, Malformed> {
    let mut input = payload.clone();
    if input.remaining() < 1 || input.get_u8() != VERSION {
        return Err(Malformed("unknown version"));
    }
    let count = read_u32(&mut input)? as usize;
    // Every frame takes at least its length prefix: a count beyond that is a lie.
    if count > input.remaining() / 4 {
        return Err(Malformed("frame count"));
    }
    let mut frames = Vec::with_capacity(count);
    for _ in 0..count {
        let len = read_u32(&mut input)? as usize;
        if input.remaining() < len {
            return Err(Malformed("frame length"));
        }
        let bytes = input.split_to(len);
        frames.push(Frame::try_from(bytes).map_err(|_| Malformed("frame is not UTF-8"))?);
    }
    let count = read_u32(&mut input)? as usize;
    if count > input.remaining() / SEGMENT_OVERHEAD {
        return Err(Malformed("segment count"));
    }
    let mut segments = Vec::with_capacity(count);
    for _ in 0..count {
        if input.remaining() < SEGMENT_OVERHEAD {
            return Err(Malformed("segment"));
        }
        let user = read_uuid(&mut input);
        let session = read_uuid(&mut input);
        let seq = input.get_u64();
        let close = input.get_u16();
        let refs = input.get_u32() as usize;
        if refs > input.remaining() / 4 {
            return Err(Malformed("segment frame count"));
        }
        let mut own = Vec::with_capacity(refs);
        for _ in 0..refs {
            let index = input.get_u32() as usize;
            own.push(frames.get(index).cloned().ok_or(Malformed("frame index"))?);
        }
        let count = read_u32(&mut input)? as usize;
        if count > input.remaining() / MOVE_LEN {
            return Err(Malformed("move count"));
        }
        let mut moves = Vec::with_capacity(count);
        for _ in 0..count {
            let channel_id = read_uuid(&mut input);
            let mut epoch = [0u8; 8];
            input.copy_to_slice(&mut epoch);
            let epoch = Epoch::from_bytes(epoch).ok_or(Malformed("epoch"))?;
            let cseq = input.get_u64();
            let released = match input.get_u8() {
                0 => false,
                1 => true,
                _ => return Err(Malformed("released")),
            };
            moves.push(Moved { channel_id, epoch, cseq, released });
        }
        segments.push(Segment { user, session, seq, close, frames: own, moves });
    }
    if input.has_remaining() {
        return Err(Malformed("trailing bytes"));
    }
    Ok(segments)
}

fn read_u32(input: &mut Bytes) -> Result<u32, Malformed> {
    if input.remaining() < 4 {
        return Err(Malformed("truncated"));
    }
    Ok(input.get_u32())
}

fn read_uuid(input: &mut Bytes) -> Uuid {
    let mut id = [0u8; 16];
    input.copy_to_slice(&mut id);
    Uuid::from_bytes(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(seq: u64, frames: &[&Frame]) -> Segment {
        Segment {
            user: Uuid::new_v4(),
            session: Uuid::new_v4(),
            seq,
            close: 0,
            frames: frames.iter().map(|f| (*f).clone()).collect(),
            moves: Vec::new(),
        }
    }

    #[test]
    fn one_fan_out_carries_each_frame_once() {
        let shared = Frame::from("{\"type\":\"new_message\"}");
        let other = Frame::from("{\"type\":\"typing\"}");
        let mut batch = NodeBatch::default();
        let mut sent = Vec::new();
        for seq in 1..=300 {
            let s = segment(seq, &[&shared, &other]);
            sent.push((s.user, s.session, s.seq));
            batch.add(s);
        }
        let mut closing = segment(7, &[&shared]);
        closing.close = 4008;
        batch.add(closing);
        assert_eq!(batch.distinct_frames(), 2);
        let expected_len = batch.len();
        let encoded = batch.encode();
        assert_eq!(encoded.len(), expected_len);
        // 300 sessions cost their ids and indexes, not 300 copies of the frames.
        assert!(encoded.len() < 301 * (SEGMENT_OVERHEAD + 8) + 200);

        let segments = decode(encoded).unwrap();
        assert_eq!(segments.len(), 301);
        for (segment, (user, session, seq)) in segments.iter().zip(&sent) {
            assert_eq!(
                (segment.user, segment.session, segment.seq, segment.close),
                (*user, *session, *seq, 0)
            );
            assert_eq!(segment.frames, vec![shared.clone(), other.clone()]);
        }
        assert_eq!(segments[300].close, 4008);
        assert_eq!(segments[300].frames, vec![shared]);
    }

    #[test]
    fn moves_travel_after_their_segments_frames() {
        let frame = Frame::from("{}");
        let mut with_move = segment(3, &[&frame]);
        let moved = Moved {
            channel_id: Uuid::new_v4(),
            epoch: Epoch::parse("Vt4nR2cL").unwrap(),
            cseq: 41,
            released: true,
        };
        with_move.moves = vec![moved, Moved { released: false, ..moved }];
        let mut batch = NodeBatch::default();
        batch.add(with_move);
        batch.add(segment(1, &[&frame]));
        let expected_len = batch.len();
        let encoded = batch.encode();
        assert_eq!(encoded.len(), expected_len);
        let segments = decode(encoded.clone()).unwrap();
        assert_eq!(segments[0].moves, vec![moved, Moved { released: false, ..moved }]);
        assert_eq!(segments[0].frames, vec![frame]);
        assert!(segments[1].moves.is_empty());
        // A move whose epoch is not [A-Za-z0-9]{8} is refused.
        let mut bad = BytesMut::from(&encoded[..]);
        // The first move of the first segment: before it, its second move and segment 2.
        let epoch_at = encoded.len() - (SEGMENT_OVERHEAD + 4) - 2 * MOVE_LEN + 16;
        bad[epoch_at] = b'!';
        assert_eq!(decode(bad.freeze()).unwrap_err(), Malformed("epoch"));
    }

    #[test]
    fn equal_text_in_different_buffers_is_still_delivered_to_each() {
        let a = Frame::from(String::from("same"));
        let b = Frame::from(String::from("same"));
        let mut batch = NodeBatch::default();
        batch.add(segment(1, &[&a, &b]));
        let segments = decode(batch.encode()).unwrap();
        assert_eq!(segments[0].frames.len(), 2);
    }

    #[test]
    fn damaged_messages_are_refused_not_trusted() {
        let frame = Frame::from("{}");
        let mut batch = NodeBatch::default();
        batch.add(segment(1, &[&frame]));
        let good = batch.encode();
        // Every truncation is refused.
        for cut in 0..good.len() {
            assert!(decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        // A frame index past the table (the segment's last index, before its move count).
        let mut bad = BytesMut::from(&good[..]);
        let last = bad.len() - 8;
        bad[last..last + 4].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(decode(bad.freeze()).unwrap_err(), Malformed("frame index"));
        // A huge count does not allocate.
        let mut lie = BytesMut::new();
        lie.put_u8(VERSION);
        lie.put_u32(u32::MAX);
        assert_eq!(decode(lie.freeze()).unwrap_err(), Malformed("frame count"));
        // Trailing bytes.
        let mut long = BytesMut::from(&good[..]);
        long.put_u8(0);
        assert!(decode(long.freeze()).is_err());
        // Another version.
        let mut other = BytesMut::from(&good[..]);
        other[0] = 1;
        assert_eq!(decode(other.freeze()).unwrap_err(), Malformed("unknown version"));
    }
}
