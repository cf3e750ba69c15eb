//! A loaded model's own thread: N slots over one llama.cpp context and the
//! continuous-batching loop that serves them.
//!
//! Each slot is a llama.cpp sequence in a KV cache the slots share (unified:
//! one long conversation may use the whole context, and the cells are
//! shared out as needed). Every step packs one token of each generating slot
//! and the next prompt chunk of each slot reading a prompt into one batch
//! (at most `batch` tokens, so a long prompt holds the others for one chunk
//! at a time), decodes it once, then samples each slot that got logits with
//! its own sampler (its own grammar, penalties, biases). Requests join at the
//! next step, in the order they came: a request goes to the free slot whose
//! cache shares the longest prefix with its prompt, so that a conversation's
//! next turn skips what it shares even after other conversations ran. A
//! finished or stopped request frees its slot at once; its tokens stay in the
//! cache until the cells are needed (least recently used slot first).
//!
//! A request for several choices (`n`) takes that many slots at once: its
//! prompt is read once, in the first, and copied into the others' sequences
//! (`copy_kv_cache_seq`, cells shared) before each samples its first token
//! with its own sampler.
//!
//! Requests reach the thread as [`Submission`]s and get their tokens back as
//! [`Event`]s on their own channel: the caller's thread runs its callback, so
//! the loop never waits on a client. Requests beyond N wait here and are
//! dropped as soon as their caller stops them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::sampling::TokenSampler;
use crate::api::{FinishReason, SlotState, SlotStatus, TokenLogprob};
use crate::engine::text::{Generation, SamplingConfig, TextStream};
use crate::error::ApiError;
use crate::jobs::lock;

/// A generation handed to the model's thread.
pub struct Submission {
    /// The prompt's tokens: not empty, shorter than the context.
    pub tokens: Vec<LlamaToken>,
    /// How to sample each choice (at least one, at most the slots).
    pub choices: Vec<SamplingConfig>,
    /// Set by the caller to stop it (a cancel, or its client gone).
    pub stop: Arc<AtomicBool>,
    /// Where its tokens and its end go.
    pub events: Sender<Event>,
}

/// What the model's thread tells a generation's caller.
pub enum Event {
    /// One token of a choice: the text it makes visible ("" for none yet)
    /// and its logprob when asked; also the text held back at the end,
    /// without one.
    Token {
        /// Which choice.
        choice: usize,
        /// The visible text.
        text: String,
        /// Its log probability.
        logprob: Option<TokenLogprob>,
    },
    /// A choice's end: what it did, or why it failed.
    Done {
        /// Which choice.
        choice: usize,
        /// What it did.
        result: Result<Generation, ApiError>,
    },
}

/// The slots' states, shared with the model for ListLoadedModels and GetStats.
pub type Board = Arc<Mutex<Vec<SlotStatus>>>;

/// `n` idle, empty slots.
pub fn idle_board(n: usize) -> Vec<SlotStatus> {
    (0..n)
        .map(|slot| SlotStatus {
            slot: slot as u32,
            state: SlotState::Idle,
            job_id: None,
            prompt_tokens: 0,
            generated_tokens: 0,
            cached_tokens: 0,
        })
        .collect()
}

/// One sequence of the context.
struct Slot {
    seq: i32,
    /// The tokens its KV cells hold, from position 0.
    cached: Vec<LlamaToken>,
    /// The step it was last used at (eviction: least recent first).
    last_used: u64,
    task: Option<Task>,
    /// The last request's counts, shown while idle.
    prompt_tokens: u32,
    generated: u32,
}

/// A request's choice in a slot.
struct Task {
    choice: usize,
    /// The slot and start step of the first choice, whose prompt this one
    /// waits to copy (further choices of `n`).
    follows: Option<(usize, u64)>,
    prompt: Vec<LlamaToken>,
    reused: usize,
    /// Tokens kept at the start when the context shifts; Some once it has.
    shifted: Option<usize>,
    sampling: SamplingConfig,
    sampler: TokenSampler,
    stream: TextStream,
    completion: u32,
    /// The token sampled last, decoded in the next step.
    pending: Option<LlamaToken>,
    /// Where this slot's logits are in the batch just decoded.
    logits_at: Option<i32>,
    /// The step it started at (the newest gives way when cells run out).
    started: u64,
    stop: Arc<AtomicBool>,
    events: Sender<Event>,
}

/// What sampling one slot decided.
enum Next {
    Continue,
    Finish(FinishReason),
    Fail(ApiError),
}

/// The loop's state: the context, its slots and the requests waiting.
pub struct Batcher<'a, 'm> {
    model: &'m LlamaModel,
    context: &'a mut LlamaContext<'m>,
    eog: &'a [LlamaToken],
    slots: Vec<Slot>,
    waiting: VecDeque<Submission>,
    batch: LlamaBatch<'static>,
    /// Tokens one step decodes (the generating slots' and a prompt chunk).
    budget: usize,
    /// Whether a generation at the context's end shifts (else it stops).
    shift: bool,
    board: Board,
    step: u64,
    piece: Vec<u8>,
}

impl<'a, 'm> Batcher<'a, 'm> {
    /// A loop over `context` (created with at least `parallel` sequences)
    /// with `parallel` slots and steps of at most `budget` tokens; `shift`:
    /// a generation reaching the context's end shifts instead of stopping.
    pub fn new(
        model: &'m LlamaModel,
        context: &'a mut LlamaContext<'m>,
        eog: &'a [LlamaToken],
        parallel: usize,
        budget: usize,
        shift: bool,
        board: Board,
    ) -> Batcher<'a, 'm> {
        let parallel = parallel.max(1);
        let budget = budget.max(1);
        context.clear_kv_cache();
        Batcher {
            model,
            context,
            eog,
            slots: (0..parallel)
                .map(|seq| Slot {
                    seq: seq as i32,
                    cached: Vec::new(),
                    last_used: 0,
                    task: None,
                    prompt_tokens: 0,
                    generated: 0,
                })
                .collect(),
            waiting: VecDeque::new(),
            // Room for a full prompt chunk besides one token per slot.
            batch: LlamaBatch::new(budget + parallel, 1),
            budget,
            shift,
            board,
            step: 0,
            piece: Vec::with_capacity(32),
        }
    }

    /// Runs until every sender of `inbox` is gone (the model was dropped).
    pub fn serve(mut self, inbox: Receiver<Submission>) {
        loop {
            if self.is_idle() {
                match inbox.recv() {
                    Ok(submission) => self.waiting.push_back(submission),
                    Err(_) => return,
                }
            }
            loop {
                match inbox.try_recv() {
                    Ok(submission) => self.waiting.push_back(submission),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            self.step += 1;
            self.admit();
            self.run_step();
            self.publish();
        }
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.slots.iter().all(|s| s.task.is_none())
    }

    /// Ends the requests stopped while waiting, then gives free slots to the
    /// oldest waiting ones.
    fn admit(&mut self) {
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
            self.start(slot, submission);
        }
    }

    /// The free slot whose cache `tokens` continue furthest, when they
    /// continue at least half of it (as llama-server's slot similarity: a
    /// cache sharing only the template's opening is kept for its own
    /// conversation); else an empty slot, else the least recently used.
    fn choose_slot(&self, tokens: &[LlamaToken]) -> Option<usize> {
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

    fn start(&mut self, i: usize, submission: Submission) {
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
            let slot = &mut self.slots[j];
            let _ = self
                .context
                .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
            slot.cached.clear();
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

    /// One step: build the batch, decode it, sample every slot with logits.
    fn run_step(&mut self) {
        for i in 0..self.slots.len() {
            let stopped = self.slots[i]
                .task
                .as_ref()
                .is_some_and(|t| t.stop.load(Ordering::Relaxed));
            if stopped {
                self.finish(i, FinishReason::Cancelled);
            }
        }
        let n_ctx = self.context.n_ctx() as usize;
        self.batch.clear();
        let mut used: usize = self.slots.iter().map(|s| s.cached.len()).sum();
        // One token of every generating slot.
        for i in 0..self.slots.len() {
            let Some(token) = self.slots[i].task.as_mut().and_then(|t| t.pending.take()) else {
                continue;
            };
            if !self.make_room(1, &mut used, n_ctx) {
                // Every cell holds a running conversation: this one ends here.
                self.finish(i, FinishReason::Length);
                continue;
            }
            let index = self.batch.n_tokens();
            let slot = &mut self.slots[i];
            // The batch has a place per slot besides the prompt budget.
            self.batch
                .add(token, slot.cached.len() as i32, &[slot.seq], true)
                .expect("batch has room");
            slot.cached.push(token);
            used += 1;
            if let Some(task) = slot.task.as_mut() {
                task.logits_at = Some(index);
            }
        }
        // Then prompt chunks, oldest request first, within the budget.
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|i| {
                let slot = &self.slots[*i];
                slot.task
                    .as_ref()
                    .is_some_and(|t| t.follows.is_none() && slot.cached.len() < t.prompt.len())
            })
            .collect();
        order.sort_by_key(|i| self.slots[*i].task.as_ref().map_or(0, |t| t.started));
        let mut room = self
            .budget
            .saturating_sub(self.batch.n_tokens() as usize)
            .max(1);
        for i in order {
            if room == 0 {
                break;
            }
            let (start, end) = {
                let slot = &self.slots[i];
                let task = slot.task.as_ref().expect("a prefilling slot has a task");
                (slot.cached.len(), task.prompt.len())
            };
            let take = (end - start).min(room);
            if !self.make_room(take, &mut used, n_ctx) {
                continue; // waits for cells to free
            }
            let slot = &mut self.slots[i];
            let task = slot.task.as_mut().expect("a prefilling slot has a task");
            for position in start..start + take {
                let last = position + 1 == end;
                if last {
                    task.logits_at = Some(self.batch.n_tokens());
                }
                self.batch
                    .add(task.prompt[position], position as i32, &[slot.seq], last)
                    .expect("batch has room");
            }
            slot.cached
                .extend_from_slice(&task.prompt[start..start + take]);
            used += take;
            room -= take;
        }
        if self.batch.n_tokens() == 0 {
            self.unstick();
            return;
        }
        if let Err(e) = self.context.decode(&mut self.batch) {
            self.fail_all(ApiError::internal(format!(
                "llama.cpp could not evaluate the batch: {e}"
            )));
            return;
        }
        self.fork();
        for i in 0..self.slots.len() {
            let at = self.slots[i].task.as_mut().and_then(|t| t.logits_at.take());
            if let Some(at) = at {
                match self.sample(i, at, n_ctx) {
                    Next::Continue => {}
                    Next::Finish(reason) => self.finish(i, reason),
                    Next::Fail(error) => self.fail(i, error),
                }
            }
        }
    }

    /// Further choices whose first choice has just read the prompt get its
    /// cache and its logits; those whose first choice is gone fail.
    fn fork(&mut self) {
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

    /// Samples slot `i` from the logits at batch entry `at` and hands the
    /// token to its caller.
    fn sample(&mut self, i: usize, at: i32, n_ctx: usize) -> Next {
        let slot = &mut self.slots[i];
        let Some(task) = slot.task.as_mut() else {
            return Next::Continue;
        };
        if task.completion >= task.sampling.max_tokens {
            return Next::Finish(FinishReason::Length);
        }
        let sampled = match task
            .sampler
            .sample(&*self.context, self.model, at, task.completion)
        {
            Ok(sampled) => sampled,
            Err(error) => return Next::Fail(error),
        };
        let token = sampled.token;
        let vocab = self.model.vocab();
        if vocab.is_eog(token) && !task.sampling.ignore_eos {
            return Next::Finish(FinishReason::Stop);
        }
        task.completion += 1;
        slot.generated = task.completion;
        self.piece.clear();
        vocab.token_to_piece_into(token, &mut self.piece, false, None);
        let text = task.stream.push(&self.piece).to_string();
        let event = Event::Token {
            choice: task.choice,
            text,
            logprob: sampled.logprob,
        };
        if task.events.send(event).is_err() {
            return Next::Finish(FinishReason::Cancelled);
        }
        if task.stream.stopped() {
            return Next::Finish(FinishReason::Stop);
        }
        if task.completion >= task.sampling.max_tokens {
            return Next::Finish(FinishReason::Length);
        }
        if slot.cached.len() + 1 >= n_ctx {
            if !self.shift {
                return Next::Finish(FinishReason::Length);
            }
            // llama-server's context shift: keep the start (the system
            // prompt, up to a quarter of the context), drop half of the rest
            // and move what follows down.
            let past = slot.cached.len();
            let keep = task.prompt.len().min(n_ctx / 4);
            let discard = (past - keep) / 2;
            let (keep32, end32) = (keep as u32, (keep + discard) as u32);
            let shifted = self
                .context
                .kv_cache_seq_rm(slot.seq, Some(keep32), Some(end32))
                .is_ok()
                && self
                    .context
                    .kv_cache_seq_add(slot.seq, Some(end32), None, -(discard as i32))
                    .is_ok();
            if !shifted || discard == 0 {
                return Next::Finish(FinishReason::Length);
            }
            slot.cached.drain(keep..keep + discard);
            task.shifted = Some(keep);
        }
        task.pending = Some(token);
        Next::Continue
    }

    /// Frees cells for `needed` more tokens, clearing idle slots' caches
    /// (least recently used first); false when running ones hold them all.
    fn make_room(&mut self, needed: usize, used: &mut usize, n_ctx: usize) -> bool {
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
            let slot = &mut self.slots[victim];
            let _ = self
                .context
                .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
            *used -= slot.cached.len();
            slot.cached.clear();
        }
        true
    }

    /// Nothing could be decoded: prompts being read hold all the cells. The
    /// newest gives way (503), which frees its cells for the others.
    fn unstick(&mut self) {
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
            let slot = &mut self.slots[i];
            let _ = self
                .context
                .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
            slot.cached.clear();
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
    fn finish(&mut self, i: usize, reason: FinishReason) {
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
        let _ = task.events.send(Event::Done {
            choice: task.choice,
            result: Ok(generation),
        });
    }

    fn fail(&mut self, i: usize, error: ApiError) {
        let slot = &mut self.slots[i];
        slot.last_used = self.step;
        if let Some(task) = slot.task.take() {
            let _ = task.events.send(Event::Done {
                choice: task.choice,
                result: Err(error),
            });
        }
    }

    /// A failed decode leaves the cache in doubt: every request in it fails
    /// and every cache is dropped.
    fn fail_all(&mut self, error: ApiError) {
        self.context.clear_kv_cache();
        for i in 0..self.slots.len() {
            self.slots[i].cached.clear();
            self.fail(i, error.clone());
        }
    }

    fn publish(&self) {
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

/// How many tokens two sequences share from the start.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
