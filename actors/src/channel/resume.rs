//! Stream positions as a session meets them (resume.md): attaching a subscriber, with the
//! replay of what it missed, and telling subscribers when a new epoch began.
//!
//! The actor handles a subscribe between two fan-outs, so "attach to live, read the ring,
//! merge by position" needs no buffer here: the replay is queued, then the session is
//! attached, and the next durable frame it gets is the one after `subscribed.cseq`.

use std::sync::atomic::Ordering;

use super::ring::{MAX_REPLAY_FRAMES, Unrecoverable};
use super::{ChannelState, Origin, Resume};
use crate::outbox::Outbox;
use crate::protocol::ServerFrame;

impl ChannelState {
    /// Attaches a member's session. With `resume`: `subscribed`, then the frames after the
    /// client's position that this socket did not already get live, all or none.
    pub(super) fn attach(&mut self, origin: &Origin, resume: Option<Resume>) {
        let outbox = &origin.outbox;
        if let Some(resume) = resume {
            if resume.answered.swap(true, Ordering::AcqRel) {
                // The session already refused it at its deadline: attach nothing.
                return;
            }
            let frames = self.replay_for(origin, &resume);
            let recovered = frames.is_ok();
            let frames = frames.unwrap_or_default();
            if !resume.quiet {
                origin.reply(&ServerFrame::Subscribed {
                    channel_id: self.id(),
                    epoch: self.stream.epoch,
                    cseq: self.stream.cseq,
                    recovered,
                    replayed: frames.len(),
                });
            } else if !recovered {
                self.moved_with_loss(outbox, &resume);
            }
            for frame in frames {
                outbox.push(frame);
            }
        }
        if self.subscribers.insert(outbox.clone(), self.stream.cseq) && !self.voice.is_empty() {
            origin.reply(&self.voice_frame());
        }
    }

    /// A subscription the server re-attached after a planned move (`Resume::quiet`) could not
    /// go on where the old owner left it: the session is told as for any loss.
    fn moved_with_loss(&self, outbox: &Outbox, resume: &Resume) {
        if outbox.is_resume_capable() {
            let same_epoch = resume.since.as_ref().is_some_and(|since| self.stream.epoch.is(&since.epoch));
            self.shared.metrics.resync_required.inc();
            outbox.push(
                ServerFrame::ResyncRequired {
                    channel_id: self.id(),
                    epoch: self.stream.epoch,
                    cseq: self.stream.cseq,
                    reason: if same_epoch { "gap" } else { "restarted" },
                }
                .encode(),
            );
        } else {
            outbox.close_out_of_sync(&ServerFrame::out_of_sync().encode());
        }
    }

    /// What a resuming session is replayed, or why nothing.
    fn replay_for(
        &mut self,
        origin: &Origin,
        resume: &Resume,
    ) -> Result<Vec<crate::protocol::Frame>, Unrecoverable> {
        let Some(since) = &resume.since else { return Err(Unrecoverable::Lost) };
        if !self.stream.epoch.is(&since.epoch) {
            return Err(Unrecoverable::Lost);
        }
        // Not from before the user (re)joined: they were not entitled to those frames.
        if self.joined_at.get(&origin.user_id).is_some_and(|joined| since.cseq < *joined) {
            return Err(Unrecoverable::Lost);
        }
        // What this socket already got live is not repeated: a subscriber got everything after
        // it was attached, a DM participant's socket everything from its first DM frame on.
        let session_id = origin.outbox.session_id;
        let live_from = match self.snapshot.dm_pair {
            Some(_) => origin.outbox.dm_first(self.id(), self.stream.epoch).map(|first| first - 1),
            None => self.subscribers.attached_at(session_id),
        };
        let until = live_from.unwrap_or(self.stream.cseq);
        // Never more than half the socket's free room (one slot is `subscribed` itself).
        let (free_frames, free_bytes) = origin.outbox.room();
        let max_frames = MAX_REPLAY_FRAMES.min((free_frames / 2).saturating_sub(1));
        let max_bytes = resume.budget.load(Ordering::Acquire).min(free_bytes / 2);
        let frames = self.stream.replay(since.cseq, until, max_frames, max_bytes)?;
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        resume.budget.fetch_sub(bytes, Ordering::AcqRel);
        Ok(frames)
    }

    /// A new epoch began: this actor replaced one that crashed (its subscribers are still
    /// attached) or one that stopped (DM participants' sockets may hold old positions).
    /// Resume-capable sockets get `resync_required`; others, only when messages may have
    /// been stored and never sent, an `out_of_sync` error and a 4008 close.
    pub(super) fn announce_epoch(&self) {
        let resync = ServerFrame::ResyncRequired {
            channel_id: self.id(),
            epoch: self.stream.epoch,
            cseq: 0,
            reason: "restarted",
        }
        .encode();
        let messages_lost = self.subscribers.unannounced();
        let out_of_sync = ServerFrame::out_of_sync().encode();
        let metrics = &self.shared.metrics;
        let tell = |outbox: &Outbox| {
            if outbox.is_resume_capable() {
                metrics.resync_required.inc();
                outbox.push(resync.clone());
            } else if messages_lost {
                outbox.close_out_of_sync(&out_of_sync);
            }
        };
        let subscribed = self.subscribers.outboxes();
        for outbox in &subscribed {
            tell(outbox);
        }
        if let Some((a, b)) = self.snapshot.dm_pair {
            let participants =
                self.shared.sessions.sessions_of(a).into_iter().chain(self.shared.sessions.sessions_of(b));
            for outbox in participants {
                let told = subscribed.iter().any(|s| s.session_id == outbox.session_id);
                if !told && outbox.dm_saw_other_epoch(self.id(), self.stream.epoch) {
                    tell(&outbox);
                }
            }
        }
        self.subscribers.reattach_all();
        self.subscribers.set_unannounced(false);
    }
}
