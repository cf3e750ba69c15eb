//! Getting requests into slots: waiting requests stopped meanwhile end
//! here, the oldest goes to the free slot whose cache its prompt continues
//! furthest, and the further choices of an `n` > 1 request take free slots
//! that will copy its prompt's cache. A request starting parks the other
//! idle slots' caches (`park.rs`) and gets back one its prompt continues.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use llama_cpp_2::token::LlamaToken;

use super::{Batcher, Event, Submission, Task, common_prefix};
use crate::api::FinishReason;
use crate::engine::llama::sampling::TokenSampler;
use crate::engine::text::{Generation, TextStream};
use crate::error::ApiError;

impl Batcher<'_, '_> {
    /// Ends the requests stopped while waiting, then gives free slots to the
    /// oldest waiting ones.
    pub(super) fn admit(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        for submission in waiting {
            if submission.stop.load(Ordering::Relaxed) {
                for choice in 0..submission.choices.len() {
                    let _ = submission.events.send(Event::Done {
                        choice,
                        result: Ok(Generation {
                            text: String::new(),
                            prompt_tokens: submission.tokens.len() as u32,
                            reused_tokens: 0,
                            completion_tokens: 0,
                            finish_reason: FinishReason::Cancelled,
                        }),
                    });
                }
            } else {
                self.waiting.push_back(submission);
            }
        }
        while let Some(next) = self.waiting.front() {
            let free = self.slots.iter().filter(|s| s.task.is_none()).count();
            if free < next.choices.len() {
                break;
            }
            let Some(slot) = self.choose_slot(&next.tokens) else {
                break;
            };
            // front() was Some just above.
            let submission = self.waiting.pop_front().expect("a waiting request");
            // The other idle caches leave first, so that the prompt's cells
            // (and a parked cache brought back) take the lowest free ones.
            self.park_idle_except(slot);
            self.unpark_for(slot, &submission.tokens);
            self.start(slot, submission);
        }
    }

    /// The free slot whose cache `tokens` continue furthest, when they
    /// continue at least half of it (as llama-server's slot similarity: a
    /// cache sharing only the template's opening is kept for its own
    /// conversation); else an empty slot, else the least recently used.
    pub(super) fn choose_slot(&self, tokens: &[LlamaToken]) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.task.is_none())
            .max_by_key(|(_, slot)| {
                let shared = common_prefix(&slot.cached, tokens);
                let continues = shared > 0 && shared * 2 >= slot.cached.len();
                (
                    continues.then_some(shared),
                    slot.cached.is_empty(),
                    std::cmp::Reverse(slot.last_used),
                )
            })
            .map(|(i, _)| i)
    }

    pub(super) fn start(&mut self, i: usize, submission: Submission) {
        let Submission {
            tokens,
            choices,
            stop,
            events,
        } = submission;
        let samplers: Result<Vec<TokenSampler>, ApiError> = choices
            .iter()
            .map(|sampling| TokenSampler::new(self.model, sampling, self.eog))
            .collect();
        let samplers = match samplers {
            Ok(samplers) => samplers,
            Err(error) => {
                let _ = events.send(Event::Done {
                    choice: 0,
                    result: Err(error),
                });
                return;
            }
        };
        let mut choices = choices.into_iter().zip(samplers).enumerate();
        // At least one choice: callers never submit none.
        let (_, (sampling, sampler)) = choices.next().expect("a first choice");
        // Further choices take the free slots least worth keeping.
        for (choice, (sampling, sampler)) in choices {
            let free = self
                .slots
                .iter()
                .enumerate()
                .filter(|(j, s)| *j != i && s.task.is_none())
                .max_by_key(|(_, s)| (s.cached.is_empty(), std::cmp::Reverse(s.last_used)))
                .map(|(j, _)| j);
            // admit() saw a free slot for every choice.
            let j = free.expect("a free slot per choice");
            self.park(j);
            let slot = &mut self.slots[j];
            slot.last_used = self.step;
            slot.prompt_tokens = tokens.len() as u32;
            slot.generated = 0;
            slot.task = Some(Task {
                choice,
                follows: Some((i, self.step)),
                stream: TextStream::new(&sampling.stop),
                prompt: tokens.clone(),
                reused: 0,
                shifted: None,
                sampling,
                sampler,
                completion: 0,
                pending: None,
                logits_at: None,
                started: self.step,
                stop: Arc::clone(&stop),
                events: events.clone(),
            });
        }
        let slot = &mut self.slots[i];
        // At least the last prompt token is decoded again, for its logits.
        let mut reused = common_prefix(&slot.cached, &tokens).min(tokens.len() - 1);
        if reused < slot.cached.len() {
            let removed = self
                .context
                .kv_cache_seq_rm(slot.seq, Some(reused as u32), None)
                .is_ok();
            if !removed {
                let _ = self
                    .context
                    .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                reused = 0;
            }
            slot.cached.truncate(reused);
        }
        slot.last_used = self.step;
        slot.prompt_tokens = tokens.len() as u32;
        slot.generated = 0;
        slot.task = Some(Task {
            choice: 0,
            follows: None,
            stream: TextStream::new(&sampling.stop),
            prompt: tokens,
            reused,
            shifted: None,
            sampling,
            sampler,
            completion: 0,
            pending: None,
            logits_at: None,
            started: self.step,
            stop,
            events,
        });
    }
}
