//! The error-correcting code: a tail-biting convolutional code, constraint length 9, rate 1/3
//! (generators 557, 663, 711 octal, free distance 18), decoded with a soft-decision Viterbi.
//!
//! Tail-biting (the encoder starts in the state it will end in) costs no tail bits, and suits a
//! message that repeats cyclically: the decoder never needs to know where "the start" is in
//! time, only which coded bit each cell carries.

use crate::PAYLOAD_BITS;

/// Constraint length: the encoder remembers `K - 1` = 8 previous bits.
const K: usize = 9;
const STATES: usize = 1 << (K - 1);
const GENERATORS: [u32; 3] = [0o557, 0o663, 0o711];

/// Coded bits per payload.
pub(crate) const CODED_BITS: usize = PAYLOAD_BITS * GENERATORS.len();

/// The three output bits for shift-register contents `reg` (newest bit most significant).
fn outputs(reg: u32) -> [bool; 3] {
    GENERATORS.map(|g| (reg & g).count_ones() % 2 == 1)
}

/// For every shift-register content, its three output bits as a number (first generator in
/// bit 2): an index into one step's [`branch_metrics`]. A table, so the decoders' inner loops
/// look a branch up instead of recomputing parities.
const OUTPUT_CODES: [u8; 2 * STATES] = {
    let mut codes = [0u8; 2 * STATES];
    let mut reg = 0;
    while reg < 2 * STATES {
        let mut code = 0;
        let mut g = 0;
        while g < GENERATORS.len() {
            code = (code << 1) | ((reg as u32 & GENERATORS[g]).count_ones() % 2) as u8;
            g += 1;
        }
        codes[reg] = code;
        reg += 1;
    }
    codes
};

/// The correlation of each of the 8 output patterns with one step's three received values
/// (a coded one counts `+y`, a coded zero `−y`), summed in generator order.
fn branch_metrics(received: &[f32]) -> [f32; 8] {
    std::array::from_fn(|code| {
        (0..GENERATORS.len())
            .map(|g| {
                let one = (code >> (GENERATORS.len() - 1 - g)) & 1 == 1;
                if one {
                    received[g]
                } else {
                    -received[g]
                }
            })
            .sum()
    })
}

/// Branch metrics for each of the payload's steps.
fn step_metrics(soft: &[f32]) -> Vec<[f32; 8]> {
    soft.chunks_exact(GENERATORS.len())
        .map(branch_metrics)
        .collect()
}

fn payload_bit(payload: u64, i: usize) -> u32 {
    ((payload >> (PAYLOAD_BITS - 1 - i)) & 1) as u32
}

/// Encodes the 64-bit payload (most significant bit first) into `CODED_BITS` signs, +1 for a
/// coded one and −1 for a coded zero.
pub(crate) fn encode(payload: u64) -> Vec<i8> {
    // Tail-biting: preload the register with the last K-1 payload bits (newest in bit 7).
    let mut state = 0u32;
    for i in PAYLOAD_BITS - (K - 1)..PAYLOAD_BITS {
        state = (payload_bit(payload, i) << (K - 2)) | (state >> 1);
    }
    let mut coded = Vec::with_capacity(CODED_BITS);
    for i in 0..PAYLOAD_BITS {
        let bit = payload_bit(payload, i);
        let reg = (bit << (K - 1)) | state;
        coded.extend(outputs(reg).map(|b| if b { 1i8 } else { -1 }));
        state = reg >> 1;
    }
    coded
}

/// Soft-decision decoding: returns the payload whose codeword best matches `soft`
/// (positive values favour a coded one), found by the wrap-around Viterbi algorithm: the
/// received block is decoded three times in a row starting from every state at once, and the
/// middle copy's decisions are kept, by which point the path has forgotten its arbitrary start.
pub(crate) fn decode(soft: &[f32]) -> u64 {
    assert_eq!(soft.len(), CODED_BITS);
    let branches = step_metrics(soft);
    let steps = 3 * PAYLOAD_BITS;
    let mut metric = vec![0f32; STATES];
    let mut next = vec![0f32; STATES];
    // decisions[t][state] = the oldest bit of the predecessor chosen for `state` at step t.
    let mut decisions = vec![[0u8; STATES]; steps];
    for (t, step_decisions) in decisions.iter_mut().enumerate() {
        let branch = &branches[t % PAYLOAD_BITS];
        for (new_state, slot) in next.iter_mut().enumerate() {
            // The two predecessors differ in their oldest bit; the later one wins only if
            // strictly better. Written without a branch: which one wins is data, and
            // mispredicting it cost more than the arithmetic.
            let bit = new_state >> (K - 2);
            let old_state = (new_state << 1) & (STATES - 1);
            let reg = (bit << (K - 1)) | old_state;
            let zero = metric[old_state] + branch[OUTPUT_CODES[reg] as usize];
            let one = metric[old_state | 1] + branch[OUTPUT_CODES[reg | 1] as usize];
            let take_one = one > zero;
            step_decisions[new_state] = u8::from(take_one);
            *slot = if take_one { one } else { zero };
        }
        std::mem::swap(&mut metric, &mut next);
        // Keep the metrics bounded; only differences matter.
        let top = metric.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        metric.iter_mut().for_each(|m| *m -= top);
    }
    let mut state = (0..STATES)
        .max_by(|&a, &b| metric[a].total_cmp(&metric[b]))
        .unwrap_or(0);
    let mut payload = 0u64;
    for t in (0..steps).rev() {
        let bit = (state >> (K - 2)) as u64;
        if (PAYLOAD_BITS..2 * PAYLOAD_BITS).contains(&t) {
            payload |= bit << (PAYLOAD_BITS - 1 - (t - PAYLOAD_BITS));
        }
        state = ((state << 1) & (STATES - 1)) | decisions[t][state] as usize;
    }
    payload
}

/// Start states tried by [`decode_list`], and paths kept per state while decoding from each.
const LIST_STARTS: usize = 16;
const LIST_DEPTH: usize = 8;

/// The correlation of a payload's codeword with `soft`: what both decoders maximize.
fn correlation(payload: u64, soft: &[f32]) -> f32 {
    encode(payload)
        .iter()
        .zip(soft)
        .map(|(&c, &y)| c as f32 * y)
        .sum()
}

/// For every state, the metric of the best path that starts in it and returns to it after
/// one round of the block: the best tail-biting codeword with that start. All starts run
/// together, the start being the inner index, so that the additions vectorize.
fn best_tail_biting_metrics(branches: &[[f32; 8]]) -> Vec<f32> {
    let mut metric = vec![f32::NEG_INFINITY; STATES * STATES];
    for start in 0..STATES {
        metric[start * STATES + start] = 0.0;
    }
    let mut next = vec![0f32; STATES * STATES];
    for branch in branches {
        for new_state in 0..STATES {
            let bit = new_state >> (K - 2);
            let old_state = (new_state << 1) & (STATES - 1);
            let reg = (bit << (K - 1)) | old_state;
            let (b0, b1) = (
                branch[OUTPUT_CODES[reg] as usize],
                branch[OUTPUT_CODES[reg | 1] as usize],
            );
            let zero = &metric[old_state * STATES..(old_state + 1) * STATES];
            let one = &metric[(old_state | 1) * STATES..(old_state + 2) * STATES];
            let out = &mut next[new_state * STATES..(new_state + 1) * STATES];
            for ((slot, &z), &o) in out.iter_mut().zip(zero).zip(one) {
                *slot = (z + b0).max(o + b1);
            }
        }
        std::mem::swap(&mut metric, &mut next);
    }
    (0..STATES).map(|s| metric[s * STATES + s]).collect()
}

/// Up to `size` distinct payloads whose codewords match `soft` well, best first (a list
/// decoder). A tail-biting path starts and ends in the same state, so: the states most
/// likely to be the start are those with the best tail-biting paths; from each, a list
/// Viterbi decoder (each state keeping its best few paths)
/// runs once round the block, and the paths that return to their start are codewords.
pub(crate) fn decode_list(soft: &[f32], size: usize) -> Vec<u64> {
    assert_eq!(soft.len(), CODED_BITS);
    let branches = step_metrics(soft);
    let branch = |t: usize, new_state: usize, old_state: usize| -> f32 {
        let reg = ((new_state >> (K - 2)) << (K - 1)) | old_state;
        branches[t % PAYLOAD_BITS][OUTPUT_CODES[reg] as usize]
    };
    let predecessor = |new_state: usize, oldest: usize| ((new_state << 1) & (STATES - 1)) | oldest;

    // Likely start states: those whose best tail-biting path (from the state round the block
    // and back to it) matches best. The best path merely *ending* in a state is no guide:
    // at low signal-to-noise many states end nearly as well, and ranking by that once left
    // out the start of a codeword that matched almost as well as the best one.
    let tail_biting = best_tail_biting_metrics(&branches);
    let mut starts: Vec<usize> = (0..STATES).collect();
    starts.sort_by(|&a, &b| tail_biting[b].total_cmp(&tail_biting[a]));
    starts.truncate(LIST_STARTS);

    let mut found: Vec<(f32, u64)> = Vec::new();
    let depth = LIST_DEPTH;
    for &start in &starts {
        let mut metric = vec![f32::NEG_INFINITY; STATES * depth];
        metric[start * depth] = 0.0;
        let mut next = vec![f32::NEG_INFINITY; STATES * depth];
        // For each step, state and rank: the predecessor's oldest bit and rank.
        let mut back = vec![(0u8, 0u8); PAYLOAD_BITS * STATES * depth];
        for t in 0..PAYLOAD_BITS {
            for new_state in 0..STATES {
                let lists = [0, 1].map(|oldest| {
                    let old = predecessor(new_state, oldest);
                    (
                        &metric[old * depth..(old + 1) * depth],
                        branch(t, new_state, old),
                    )
                });
                // Merge the two predecessors' sorted lists.
                let (mut i, mut j) = (0, 0);
                for rank in 0..depth {
                    let a = lists[0]
                        .0
                        .get(i)
                        .map_or(f32::NEG_INFINITY, |m| m + lists[0].1);
                    let b = lists[1]
                        .0
                        .get(j)
                        .map_or(f32::NEG_INFINITY, |m| m + lists[1].1);
                    let slot = new_state * depth + rank;
                    let entry = &mut back[t * STATES * depth + slot];
                    if a >= b {
                        next[slot] = a;
                        *entry = (0, i as u8);
                        i += 1;
                    } else {
                        next[slot] = b;
                        *entry = (1, j as u8);
                        j += 1;
                    }
                }
            }
            std::mem::swap(&mut metric, &mut next);
        }
        for rank in 0..depth {
            if !metric[start * depth + rank].is_finite() {
                continue;
            }
            let (mut state, mut r) = (start, rank);
            let mut payload = 0u64;
            for t in (0..PAYLOAD_BITS).rev() {
                payload |= ((state >> (K - 2)) as u64) << (PAYLOAD_BITS - 1 - t);
                let (oldest, previous_rank) = back[(t * STATES + state) * depth + r];
                state = predecessor(state, oldest as usize);
                r = previous_rank as usize;
            }
            found.push((correlation(payload, soft), payload));
        }
    }
    let best = decode(soft);
    found.push((correlation(best, soft), best));
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut payloads: Vec<u64> = Vec::with_capacity(size);
    for (_, payload) in found {
        if !payloads.contains(&payload) {
            payloads.push(payload);
            if payloads.len() == size {
                break;
            }
        }
    }
    payloads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystream::Keystream;

    #[test]
    fn output_codes_match_the_generators() {
        for reg in 0..2 * STATES as u32 {
            let code = OUTPUT_CODES[reg as usize];
            let bits = outputs(reg).map(u8::from);
            assert_eq!(code, bits[0] << 2 | bits[1] << 1 | bits[2], "{reg:09b}");
        }
        let metrics = branch_metrics(&[0.5, -2.0, 0.25]);
        assert_eq!(metrics[0b101], 0.5 + 2.0 + 0.25);
        assert_eq!(metrics[0b010], -0.5 - 2.0 - 0.25);
    }

    #[test]
    fn clean_codewords_decode() {
        for payload in [0, u64::MAX, 0x0123_4567_89ab_cdef, 1, 1 << 63] {
            let soft: Vec<f32> = encode(payload).iter().map(|&c| c as f32).collect();
            assert_eq!(decode(&soft), payload, "{payload:016x}");
        }
    }

    #[test]
    fn corrects_errors_and_erasures() {
        let payload = 0xfeed_f00d_1234_5678;
        let mut soft: Vec<f32> = encode(payload).iter().map(|&c| c as f32).collect();
        // Erase a burst and flip scattered bits.
        for s in &mut soft[40..58] {
            *s = 0.0;
        }
        for i in [3, 70, 101, 150, 188] {
            soft[i] = -soft[i];
        }
        assert_eq!(decode(&soft), payload);
    }

    /// `payload`'s codeword at `amplitude` plus Gaussian-ish unit-variance noise (sums of 12
    /// uniform signs from `noise`).
    fn noisy_codeword(payload: u64, amplitude: f32, noise: &mut Keystream) -> Vec<f32> {
        encode(payload)
            .iter()
            .map(|&c| {
                let n: f32 = noise.signs(12).iter().map(|&s| s as f32).sum::<f32>() / 12f32.sqrt();
                c as f32 * amplitude + n
            })
            .collect()
    }

    #[test]
    fn decodes_noisy_soft_values() {
        // Per-bit SNR about 1 (0 dB).
        let mut noise = Keystream::new(b"noise", "test");
        let mut failures = 0;
        for trial in 0..20u64 {
            let payload = trial.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let soft = noisy_codeword(payload, 1.0, &mut noise);
            if decode(&soft) != payload {
                failures += 1;
            }
        }
        assert!(failures <= 1, "{failures} of 20 failed");
    }

    #[test]
    fn list_decoding_finds_the_runner_up() {
        let payload = 0x0bad_cafe_dead_beef;
        let soft: Vec<f32> = encode(payload).iter().map(|&c| c as f32).collect();
        let list = decode_list(&soft, 16);
        assert_eq!(list[0], payload);
        assert_eq!(list[0], decode(&soft));
        assert_eq!(list.len(), 16);
        // Blur the received codeword towards another one: both must be on the list.
        let other = payload ^ (1 << 40) ^ (1 << 3);
        let blurred: Vec<f32> = encode(payload)
            .iter()
            .zip(encode(other))
            .map(|(&a, b)| (a as f32 + b as f32 * 0.9) / 2.0)
            .collect();
        let list = decode_list(&blurred, 8);
        assert_eq!(list[0], payload);
        assert!(list.contains(&other), "{list:x?}");
    }

    #[test]
    fn list_decoding_keeps_close_runners_up_at_low_snr() {
        // Per-bit SNR about -4 dB, where the best codeword is often not the one sent. A sent
        // codeword that matches nearly as well as the best must be on the list, whatever its
        // start state. (Ranking starts by the best path *ending* in each state missed 4 of
        // these 10, at gaps from 0.3 to 1.04.)
        let mut noise = Keystream::new(b"noise", "low snr");
        let mut close = 0;
        for trial in 0..200u64 {
            let payload = trial.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
            let soft = noisy_codeword(payload, 0.63, &mut noise);
            let list = decode_list(&soft, LIST_STARTS * LIST_DEPTH);
            let gap = correlation(list[0], &soft) - correlation(payload, &soft);
            if list[0] != payload && gap < 2.0 {
                close += 1;
                assert!(
                    list.contains(&payload),
                    "trial {trial}: sent {payload:016x} trails the best by {gap:.2}"
                );
            }
        }
        assert!(
            close >= 8,
            "only {close} trials exercised a close runner-up"
        );
    }
}
