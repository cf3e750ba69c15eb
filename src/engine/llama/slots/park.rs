//! Idle slots' caches parked in RAM (llama-server's `--cache-idle-slots`).
//!
//! In a unified KV cache every decode attends over all cells up to the
//! highest one in use, other sequences' included (masked, but still read):
//! conversations that finished earlier would slow every running one. So
//! when a request starts, the other idle slots' caches are copied out of
//! the context (`state_seq_get`) and their cells freed (llama.cpp looks for
//! room from the first cell freed, so the running sequences stay low);
//! a request whose prompt continues a parked cache gets it copied back into
//! its slot (`state_seq_set`) and skips what it shares, as if it had stayed.
//!
//! The lot holds at most a context's worth of tokens (what the idle slots
//! could hold in the cells before), least recently used dropped first.

use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{LlamaStateSeqFlags, SeqState};

use super::{Batcher, common_prefix};

/// One parked cache: the tokens its state holds from position 0.
struct Parked<S> {
    tokens: Vec<LlamaToken>,
    state: S,
    last_used: u64,
}

/// Parked caches, at most `budget` tokens in all. Generic over the state so
/// that its bookkeeping is tested without a model.
pub(super) struct ParkingLot<S> {
    entries: Vec<Parked<S>>,
    budget: usize,
}

impl<S> ParkingLot<S> {
    pub(super) fn new(budget: usize) -> ParkingLot<S> {
        ParkingLot {
            entries: Vec::new(),
            budget,
        }
    }

    /// Keeps `state` for `tokens`: an entry it extends is replaced, one that
    /// extends it makes it needless; then the least recently used go until
    /// the lot is within its budget.
    pub(super) fn park(&mut self, tokens: Vec<LlamaToken>, state: S, last_used: u64) {
        if tokens.is_empty() || tokens.len() > self.budget {
            return;
        }
        if self.entries.iter().any(|e| e.tokens.starts_with(&tokens)) {
            return;
        }
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.entries.push(Parked {
            tokens,
            state,
            last_used,
        });
        let mut total: usize = self.entries.iter().map(|e| e.tokens.len()).sum();
        while total > self.budget {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            // The new entry fits the budget alone, so the loop ends with it.
            let Some(i) = oldest else { break };
            total -= self.entries.remove(i).tokens.len();
        }
    }

    /// Takes out the entry that `prompt` continues furthest, when it shares
    /// more than `better_than` tokens with it and at least half of it (the
    /// rule slots are chosen by).
    pub(super) fn take_best(
        &mut self,
        prompt: &[LlamaToken],
        better_than: usize,
    ) -> Option<(Vec<LlamaToken>, S)> {
        let (i, _) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt), e.tokens.len()))
            .filter(|&(_, shared, len)| shared > better_than && shared * 2 >= len)
            .map(|(i, shared, _)| (i, shared))
            .max_by_key(|&(_, shared)| shared)?;
        let entry = self.entries.swap_remove(i);
        Some((entry.tokens, entry.state))
    }
}

impl Batcher<'_, '_> {
    /// Copies idle slot `i`'s cache into the lot and frees its cells.
    pub(super) fn park(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if slot.task.is_some() || slot.cached.is_empty() {
            return;
        }
        let (seq, last_used) = (slot.seq, slot.last_used);
        let tokens = std::mem::take(&mut slot.cached);
        if let Ok(state) = self.context.state_seq_get(seq, LlamaStateSeqFlags::empty()) {
            self.parked.park(tokens, state, last_used);
        }
        self.clear_cache(i);
    }

    /// Parks every idle slot's cache but slot `kept`'s (a request is
    /// starting there).
    pub(super) fn park_idle_except(&mut self, kept: usize) {
        for i in (0..self.slots.len()).filter(|i| *i != kept) {
            self.park(i);
        }
    }

    /// Readies free slot `i` for `prompt`: a parked cache the prompt
    /// continues further than the slot's own comes back into it; a cache of
    /// the slot's that the prompt does not continue (another conversation's)
    /// is parked rather than overwritten.
    pub(super) fn unpark_for(&mut self, i: usize, prompt: &[LlamaToken]) {
        let own = common_prefix(&self.slots[i].cached, prompt);
        let Some((tokens, state)) = self.parked.take_best(prompt, own) else {
            if own * 2 < self.slots[i].cached.len() {
                self.park(i);
            }
            return;
        };
        self.park(i);
        let mut used: usize = self.slots.iter().map(|s| s.cached.len()).sum();
        let n_ctx = self.context.n_ctx() as usize;
        if !self.make_room(tokens.len(), &mut used, n_ctx) {
            // Running requests hold the cells: it waits in the lot.
            self.parked.park(tokens, state, self.step);
            return;
        }
        let seq = self.slots[i].seq;
        if self.context.state_seq_set(&state, seq).is_ok() {
            self.slots[i].cached = tokens;
        } else {
            // No run of free cells for it: the prompt is read anew.
            self.clear_cache(i);
        }
    }
}

/// The state kind the model's loop parks.
pub(super) type Lot = ParkingLot<SeqState>;

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(values: &[i32]) -> Vec<LlamaToken> {
        values.iter().map(|v| LlamaToken::new(*v)).collect()
    }

    #[test]
    fn a_longer_cache_of_the_same_conversation_replaces_the_shorter() {
        let mut lot = ParkingLot::new(100);
        lot.park(tokens(&[1, 2, 3]), "short", 1);
        lot.park(tokens(&[1, 2, 3, 4, 5]), "long", 2);
        lot.park(tokens(&[1, 2]), "needless", 3);
        assert_eq!(lot.entries.len(), 1);
        let (found, state) = lot.take_best(&tokens(&[1, 2, 3, 4, 5, 6]), 0).unwrap();
        assert_eq!((found.len(), state), (5, "long"));
        assert!(lot.entries.is_empty(), "taken out");
    }

    #[test]
    fn the_furthest_continued_cache_is_taken_when_it_beats_the_slot() {
        let mut lot = ParkingLot::new(100);
        lot.park(tokens(&[1, 2, 3, 4]), "a", 1);
        lot.park(tokens(&[1, 2, 7, 8]), "b", 2);
        lot.park(tokens(&[9, 9, 9, 9, 9, 9]), "c", 3);
        // Sharing only the start of a cache (under half) does not count.
        assert!(lot.take_best(&tokens(&[9, 1]), 0).is_none());
        // The slot's own cache already gives three tokens.
        assert!(lot.take_best(&tokens(&[1, 2, 3, 4]), 3).is_some());
        assert!(lot.take_best(&tokens(&[1, 2, 7, 8]), 4).is_none());
        let (_, state) = lot.take_best(&tokens(&[1, 2, 7, 8, 5]), 0).unwrap();
        assert_eq!(state, "b");
    }

    #[test]
    fn the_least_recently_used_go_when_over_budget() {
        let mut lot = ParkingLot::new(8);
        lot.park(tokens(&[1, 1, 1]), "old", 1);
        lot.park(tokens(&[2, 2, 2]), "mid", 2);
        lot.park(tokens(&[3, 3, 3]), "new", 3);
        assert!(lot.take_best(&tokens(&[1, 1, 1]), 0).is_none(), "dropped");
        assert!(lot.take_best(&tokens(&[2, 2, 2]), 0).is_some());
        assert!(lot.take_best(&tokens(&[3, 3, 3]), 0).is_some());
        lot.park(tokens(&[4; 9]), "too big", 4);
        assert!(lot.entries.is_empty());
    }
}
