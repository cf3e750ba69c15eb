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
//! cache until the cells are needed (least recently used slot first) or
//! other requests start, when idle slots' caches are parked in RAM
//! (`park.rs`) and come back to the slot of a prompt that continues them.
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

mod admit;
mod cells;
mod park;
use crate::api::{FinishReason, SlotState, SlotStatus, TokenLogprob};
use crate::engine::text::{Generation, SamplingConfig, TextStream};
use crate::error::ApiError;

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
    /// Idle slots' caches, out of the context.
    parked: park::Lot,
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
        let context_size = context.n_ctx() as usize;
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
            parked: park::ParkingLot::new(context_size),
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
            // Told before the step too: a client that got its first token
            // from this step finds its slot busy, not the board of before.
            self.publish();
            self.run_step();
            self.publish();
        }
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.slots.iter().all(|s| s.task.is_none())
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
}

/// How many tokens two sequences share from the start.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
