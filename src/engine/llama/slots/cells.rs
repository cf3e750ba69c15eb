//! The cells of the shared KV cache and the ends of requests: evicting idle
//! slots' caches when room is needed, giving way when prompts hold every
//! cell, copying a prompt's cache to further choices, finishing or failing
//! a slot's request, and telling the slots' states.

use super::{Batcher, Event, SlotState, SlotStatus};
use crate::api::FinishReason;
use crate::engine::text::Generation;
use crate::error::ApiError;
use crate::jobs::lock;

impl Batcher<'_, '_> {
    /// Further choices whose first choice has just read the prompt get its
    /// cache and its logits; those whose first choice is gone fail.
    pub(super) fn fork(&mut self) {
        for j in 0..self.slots.len() {
            let Some((i, started)) = self.slots[j].task.as_ref().and_then(|t| t.follows) else {
                continue;
            };
            let first = self.slots[i].task.as_ref().filter(|t| t.started == started);
            let Some(first) = first else {
                self.fail(j, ApiError::internal("the request's first choice failed"));
                continue;
            };
            let Some(at) = first.logits_at.filter(|_| first.completion == 0) else {
                continue;
            };
            let (from, to) = (self.slots[i].seq, self.slots[j].seq);
            if self
                .context
                .copy_kv_cache_seq(from, to, None, None)
                .is_err()
            {
                self.fail(j, ApiError::internal("cannot copy the prompt's cache"));
                continue;
            }
            let cached = self.slots[i].cached.clone();
            let slot = &mut self.slots[j];
            slot.cached = cached;
            if let Some(task) = slot.task.as_mut() {
                task.follows = None;
                task.logits_at = Some(at);
            }
        }
    }

    /// Frees cells for `needed` more tokens, clearing idle slots' caches
    /// (least recently used first); false when running ones hold them all.
    pub(super) fn make_room(&mut self, needed: usize, used: &mut usize, n_ctx: usize) -> bool {
        while *used + needed > n_ctx {
            let victim = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.task.is_none() && !s.cached.is_empty())
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, _)| i);
            let Some(victim) = victim else {
                return false;
            };
            *used -= self.slots[victim].cached.len();
            self.clear_cache(victim);
        }
        true
    }

    /// Frees slot `i`'s cells and forgets what they held.
    pub(super) fn clear_cache(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let _ = self
            .context
            .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
        slot.cached.clear();
    }

    /// Nothing could be decoded: prompts being read hold all the cells. The
    /// newest gives way (503), which frees its cells for the others.
    pub(super) fn unstick(&mut self) {
        let newest = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.task
                    .as_ref()
                    .filter(|t| t.follows.is_none())
                    .map(|t| (i, t.started))
            })
            .max_by_key(|(_, started)| *started)
            .map(|(i, _)| i);
        if let Some(i) = newest {
            self.clear_cache(i);
            self.fail(
                i,
                ApiError::busy(
                    "the context is full with other conversations; try again shortly",
                    1,
                ),
            );
        }
    }

    /// Ends slot `i`'s request with `reason`; the slot is free at once.
    pub(super) fn finish(&mut self, i: usize, reason: FinishReason) {
        let slot = &mut self.slots[i];
        let Some(mut task) = slot.task.take() else {
            return;
        };
        slot.last_used = self.step;
        if let Some(keep) = task.shifted {
            // Past `keep` the cells were computed before the shift: a later
            // prompt must not take them for its own.
            if self
                .context
                .kv_cache_seq_rm(slot.seq, Some(keep as u32), None)
                .is_err()
            {
                let _ = self
                    .context
                    .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                slot.cached.clear();
            }
            slot.cached.truncate(keep);
        }
        if reason != FinishReason::Cancelled {
            let rest = task.stream.finish().to_string();
            if !rest.is_empty() {
                let _ = task.events.send(Event::Token {
                    choice: task.choice,
                    text: rest,
                    logprob: None,
                });
            }
        }
        let generation = Generation {
            prompt_tokens: task.prompt.len() as u32,
            reused_tokens: task.reused as u32,
            completion_tokens: task.completion,
            finish_reason: reason,
            text: task.stream.into_text(),
        };
        // The board first: a client that has its final reply finds the
        // slot idle (the step's own publish may come after it asks).
        self.publish();
        let _ = task.events.send(Event::Done {
            choice: task.choice,
            result: Ok(generation),
        });
    }

    pub(super) fn fail(&mut self, i: usize, error: ApiError) {
        let slot = &mut self.slots[i];
        slot.last_used = self.step;
        if let Some(task) = slot.task.take() {
            self.publish();
            let _ = task.events.send(Event::Done {
                choice: task.choice,
                result: Err(error),
            });
        }
    }

    /// A failed decode leaves the cache in doubt: every request in it fails
    /// and every cache is dropped.
    pub(super) fn fail_all(&mut self, error: ApiError) {
        self.context.clear_kv_cache();
        for i in 0..self.slots.len() {
            self.slots[i].cached.clear();
            self.fail(i, error.clone());
        }
    }

    pub(super) fn publish(&self) {
        let states = self
            .slots
            .iter()
            .map(|slot| {
                let state = match &slot.task {
                    None => SlotState::Idle,
                    Some(task) if slot.cached.len() < task.prompt.len() => SlotState::Prefill,
                    Some(_) => SlotState::Generating,
                };
                SlotStatus {
                    slot: slot.seq as u32,
                    state,
                    job_id: slot.task.as_ref().and_then(|t| t.sampling.job),
                    prompt_tokens: slot.prompt_tokens,
                    generated_tokens: slot.generated,
                    cached_tokens: slot.cached.len() as u32,
                }
            })
            .collect();
        *lock(&self.board) = states;
    }
}
