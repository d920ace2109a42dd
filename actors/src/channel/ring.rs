//! The channel's stream: its epoch, the position of its last durable frame, and the ring of
//! recent durable frames a reconnecting client is replayed from (resume.md).
//!
//! The ring holds the very bytes fan-out sent (`Frame` is reference-counted), so keeping a
//! frame costs one slot here, not a copy per socket.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::{Epoch, Frame, ServerFrame};

/// Durable frames kept per channel.
pub const RING_FRAMES: usize = 512;
/// How long a durable frame is kept for replay.
pub const RING_AGE: Duration = Duration::from_secs(120);
/// Most frames one channel replays to one `subscribe`.
pub const MAX_REPLAY_FRAMES: usize = 300;
/// Most bytes one `subscribe` frame is replayed, all its channels together.
pub const MAX_REPLAY_BYTES: usize = 1024 * 1024;

/// One kept frame.
struct Kept {
    cseq: u64,
    /// When it was sent (frames older than `RING_AGE` are dropped).
    at: Instant,
    frame: Frame,
}

/// Why a replay cannot be served whole (then none of it is, and `recovered` is false).
#[derive(Debug, PartialEq, Eq)]
pub enum Unrecoverable {
    /// Another epoch, a position ahead of the stream, or frames already gone from the ring.
    Lost,
    /// More than the caps allow (`MAX_REPLAY_FRAMES`, the byte budget, the outbox's room).
    TooMuch,
}

/// A channel's stream of durable frames.
pub struct Stream {
    /// New each time the actor starts (positions of an earlier actor mean nothing here),
    /// except after a planned move between cluster nodes (`continuing`).
    pub epoch: Epoch,
    /// Position of the last durable event (0: none yet in this epoch).
    pub cseq: u64,
    ring: VecDeque<Kept>,
    /// Every durable frame with a position above this one is still in the ring.
    floor: u64,
}

impl Default for Stream {
    fn default() -> Self {
        Self { epoch: Epoch::random(), cseq: 0, ring: VecDeque::new(), floor: 0 }
    }
}

impl Stream {
    /// The stream another node's actor ended at a planned handoff: same epoch, positions
    /// going on from `cseq`, an empty ring (a `since` older than `cseq` is not recoverable
    /// here; `since == cseq` is, with nothing to replay).
    pub fn continuing(epoch: Epoch, cseq: u64) -> Self {
        Self { epoch, cseq, ring: VecDeque::new(), floor: cseq }
    }

    /// Serializes a frame for fan-out; a durable one takes the next position and is kept.
    pub fn stamp(&mut self, frame: &ServerFrame) -> (Frame, Option<u64>) {
        if !frame.is_durable() {
            return (frame.encode(), None);
        }
        self.cseq += 1;
        let bytes = frame.encode_at(self.cseq);
        self.keep(self.cseq, bytes.clone(), Instant::now());
        (bytes, Some(self.cseq))
    }

    fn keep(&mut self, cseq: u64, frame: Frame, at: Instant) {
        if self.ring.len() >= RING_FRAMES {
            self.drop_oldest();
        }
        self.ring.push_back(Kept { cseq, at, frame });
    }

    fn drop_oldest(&mut self) {
        if let Some(old) = self.ring.pop_front() {
            self.floor = old.cseq;
        }
    }

    /// Drops frames older than `RING_AGE`.
    pub fn expire(&mut self, now: Instant) {
        while self.ring.front().is_some_and(|k| now.duration_since(k.at) > RING_AGE) {
            self.drop_oldest();
        }
    }

    /// The frames after `since` up to `until` (inclusive), if all are still kept and they fit
    /// `max_frames` and `max_bytes`.
    pub fn replay(
        &mut self,
        since: u64,
        until: u64,
        max_frames: usize,
        max_bytes: usize,
    ) -> Result<Vec<Frame>, Unrecoverable> {
        self.expire(Instant::now());
        if since > self.cseq {
            return Err(Unrecoverable::Lost);
        }
        if since >= until {
            return Ok(Vec::new());
        }
        if since < self.floor {
            return Err(Unrecoverable::Lost);
        }
        let first = self.ring.partition_point(|k| k.cseq <= since);
        let frames: Vec<&Kept> = self.ring.range(first..).take_while(|k| k.cseq <= until).collect();
        if frames.len() > max_frames || frames.iter().map(|k| k.frame.len()).sum::<usize>() > max_bytes {
            return Err(Unrecoverable::TooMuch);
        }
        Ok(frames.into_iter().map(|k| k.frame.clone()).collect())
    }

    /// Frames and bytes held.
    #[cfg(test)]
    pub fn held(&self) -> (usize, usize) {
        (self.ring.len(), self.ring.iter().map(|k| k.frame.len()).sum())
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn durable(n: u8) -> ServerFrame {
        ServerFrame::MessageDeleted { message_id: Uuid::from_bytes([n; 16]), channel_id: Uuid::nil() }
    }

    #[test]
    fn durable_frames_take_rising_positions_and_ephemeral_ones_none() {
        let mut stream = Stream::default();
        let (bytes, cseq) = stream.stamp(&durable(1));
        assert_eq!(cseq, Some(1));
        assert!(bytes.as_str().starts_with(r#"{"type":"message_deleted","cseq":1,"message_id":"#));
        let typing = ServerFrame::UserTyping { channel_id: Uuid::nil(), user_id: Uuid::nil() };
        let (bytes, cseq) = stream.stamp(&typing);
        assert_eq!(cseq, None);
        assert!(!bytes.as_str().contains("cseq"));
        assert_eq!(stream.stamp(&durable(2)).1, Some(2));
    }

    #[test]
    fn a_continued_stream_goes_on_from_the_handed_position_and_cannot_replay_before_it() {
        let epoch = Epoch::random();
        let mut stream = Stream::continuing(epoch, 41);
        assert_eq!(stream.epoch, epoch);
        assert_eq!(stream.replay(41, 41, 300, usize::MAX).map(|f| f.len()), Ok(0));
        assert_eq!(stream.stamp(&durable(1)).1, Some(42));
        assert_eq!(stream.replay(41, 42, 300, usize::MAX).map(|f| f.len()), Ok(1));
        // Frames of the earlier owner are not kept here: not recoverable, never a gap.
        assert_eq!(stream.replay(40, 42, 300, usize::MAX).map(|f| f.len()), Err(Unrecoverable::Lost));
    }

    #[test]
    fn epochs_round_trip_through_their_text_and_nothing_else_parses() {
        let epoch = Epoch::random();
        assert_eq!(Epoch::parse(epoch.as_str()), Some(epoch));
        for bad in ["", "abc", "abcdefghi", "abcd-fgh", "abcdéfg"] {
            assert_eq!(Epoch::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn replay_serves_exactly_the_missed_frames_or_nothing() {
        let mut stream = Stream::default();
        for n in 0..10 {
            stream.stamp(&durable(n));
        }
        let frames = stream.replay(7, 10, 300, usize::MAX).unwrap();
        assert_eq!(frames.len(), 3);
        assert!(frames[0].as_str().contains(r#""cseq":8,"#));
        assert!(stream.replay(10, 10, 300, usize::MAX).unwrap().is_empty());
        assert_eq!(stream.replay(11, 10, 300, usize::MAX), Err(Unrecoverable::Lost));
        assert_eq!(stream.replay(0, 10, 5, usize::MAX), Err(Unrecoverable::TooMuch));
        assert_eq!(stream.replay(0, 10, 300, 10), Err(Unrecoverable::TooMuch));
        // Bounded above too (frames a socket already got live are not repeated).
        assert_eq!(stream.replay(2, 5, 300, usize::MAX).unwrap().len(), 3);
    }

    #[test]
    fn the_ring_forgets_past_its_size_and_age() {
        let mut stream = Stream::default();
        for n in 0..(RING_FRAMES + 10) {
            stream.stamp(&durable(n as u8));
        }
        let last = stream.cseq;
        assert_eq!(stream.held().0, RING_FRAMES);
        assert_eq!(stream.replay(9, last, usize::MAX, usize::MAX), Err(Unrecoverable::Lost));
        assert_eq!(stream.replay(10, last, usize::MAX, usize::MAX).unwrap().len(), RING_FRAMES);
        // Age: everything older than RING_AGE goes.
        stream.expire(Instant::now() + RING_AGE + Duration::from_secs(1));
        assert_eq!(stream.held().0, 0);
        assert_eq!(stream.replay(last - 1, last, 300, usize::MAX), Err(Unrecoverable::Lost));
        assert!(stream.replay(last, last, 300, usize::MAX).unwrap().is_empty());
    }
}
