//! The arithmetic around the ONNX graph: how texts are cut into batches,
//! how token vectors are pooled into one sentence vector, and normalisation.

use super::Pooling;

/// What one forward pass costs beyond its tokens, in tokens: measured on
/// MiniLM int8 with 2 threads, a pass takes about 1.5 ms plus 0.135 ms per
/// (padded) token (11 tokens' worth), more on a busy machine, where waking
/// ONNX Runtime's threads costs more; the total is flat around the best.
const PASS_COST_TOKENS: usize = 14;

/// Indices of `lengths` sorted by length, cut into batches of at most `size`
/// that each pad only to their own longest text. The cuts are the cheapest
/// under "a pass costs [`PASS_COST_TOKENS`] plus its padded tokens": with
/// one request's 32 texts of mixed lengths, one pass pads too much and one
/// pass per length runs too many passes; the greedy padding limit used
/// before cost ~10% more by this measure on the bench's requests.
pub fn batches(lengths: &[usize], size: usize) -> Vec<Vec<usize>> {
    let size = size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    // best[j]: cheapest cost of the first j sorted texts; start[j]: where the
    // last batch of that solution starts. Sorted ascending, a batch of
    // sorted[i..j] pads to sorted[j - 1], so the best cuts are contiguous.
    let n = order.len();
    let mut best = vec![0usize; n + 1];
    let mut start = vec![0usize; n + 1];
    for j in 1..=n {
        let width = lengths[order[j - 1]].max(1);
        (best[j], start[j]) = (j.saturating_sub(size)..j)
            .map(|i| (best[i] + PASS_COST_TOKENS + (j - i) * width, i))
            .min()
            // j >= 1, so the range j - size..j is never empty.
            .expect("at least one cut");
    }
    let mut out = Vec::new();
    let mut j = n;
    while j > 0 {
        out.push(order[start[j]..j].to_vec());
        j = start[j];
    }
    out.reverse();
    out
}

/// Pools `[rows, seq, dims]` token vectors (row-major) under `mask` (`[rows, seq]`).
pub fn pool(
    data: &[f32],
    mask: &[i64],
    rows: usize,
    seq: usize,
    dims: usize,
    pooling: Pooling,
) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|r| {
            let tokens = |t: usize| &data[(r * seq + t) * dims..(r * seq + t + 1) * dims];
            let kept = (0..seq).filter(|&t| mask[r * seq + t] != 0);
            match pooling {
                Pooling::Cls => tokens(0).to_vec(),
                Pooling::Mean => {
                    let mut sum = vec![0f32; dims];
                    let mut count = 0usize;
                    for t in kept {
                        for (s, v) in sum.iter_mut().zip(tokens(t)) {
                            *s += v;
                        }
                        count += 1;
                    }
                    let scale = 1.0 / count.max(1) as f32;
                    sum.iter_mut().for_each(|s| *s *= scale);
                    sum
                }
                Pooling::Max => {
                    let mut best = vec![f32::NEG_INFINITY; dims];
                    for t in kept {
                        for (b, v) in best.iter_mut().zip(tokens(t)) {
                            *b = b.max(*v);
                        }
                    }
                    best.iter_mut()
                        .filter(|b| b.is_infinite())
                        .for_each(|b| *b = 0.0);
                    best
                }
            }
        })
        .collect()
}

/// Scales `vector` to length 1 (a zero vector stays zero).
pub fn l2_normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_group_similar_lengths() {
        let lengths = [5, 1, 9, 2, 8, 3];
        assert_eq!(batches(&lengths, 2), [vec![1, 3], vec![5, 0], vec![4, 2]]);
        assert_eq!(batches(&[], 32), Vec::<Vec<usize>>::new());
        // Short and long texts never share a pass; three long ones of 100
        // run apart from 105 and 110: 5 tokens of padding each would cost
        // more than another pass.
        let lengths = [10, 100, 12, 110, 11, 105, 9, 100, 10, 100];
        assert_eq!(
            batches(&lengths, 32),
            [vec![6, 0, 8, 4, 2], vec![1, 7, 9], vec![5, 3]]
        );
        // Equal lengths fill whole batches.
        let cut = batches(&[7; 70], 32);
        assert_eq!(cut.iter().map(Vec::len).collect::<Vec<_>>(), [6, 32, 32]);
    }

    #[test]
    fn pooling_ignores_padding() {
        // 2 rows, seq 3, dims 2; the second row has one padding token.
        let data = [
            1., 2., 3., 4., 5., 6., /**/ 1., 1., 3., -1., 100., 100.,
        ];
        let mask = [1, 1, 1, 1, 1, 0];
        assert_eq!(
            pool(&data, &mask, 2, 3, 2, Pooling::Mean),
            [vec![3., 4.], vec![2., 0.]]
        );
        assert_eq!(
            pool(&data, &mask, 2, 3, 2, Pooling::Max),
            [vec![5., 6.], vec![3., 1.]]
        );
        assert_eq!(
            pool(&data, &mask, 2, 3, 2, Pooling::Cls),
            [vec![1., 2.], vec![1., 1.]]
        );
    }

    #[test]
    fn normalising_gives_unit_length() {
        let mut v = [3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = [0.0, 0.0];
        l2_normalize(&mut zero);
        assert_eq!(zero, [0.0, 0.0]);
    }
}
